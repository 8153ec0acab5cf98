# Contradictory settings must fail evaluation with a clear message. Each case evaluates a small
# container configuration and checks that the expected assertion fails (no VM, no build), and
# that a valid configuration fails none. Exposed as checks.x86_64-linux.module-assertions.
{
  lib,
  pkgs,
  module,
}:

let
  failedAssertions =
    settings:
    let
      host = lib.nixosSystem {
        inherit (pkgs.stdenv.hostPlatform) system;
        modules = [
          module
          settings
          {
            boot.isContainer = true;
            system.stateVersion = "26.05";
            services.tfgateway = {
              enable = true;
              farm = lib.mkDefault 1;
            };
          }
        ];
      };
    in
    map (a: a.message) (lib.filter (a: !a.assertion) host.config.assertions);

  cases = import ./assertion-cases.nix { inherit (builtins) storeDir; };

  problems =
    lib.concatLists (
      lib.mapAttrsToList (
        name: case:
        let
          failed = failedAssertions case.settings;
        in
        lib.optional (!lib.any (lib.hasInfix case.expect) failed)
          "${name}: no failed assertion mentions \"${case.expect}\"; failed: ${builtins.toJSON failed}"
      ) cases.invalid
    )
    ++ (
      let
        failed = failedAssertions cases.valid;
      in
      lib.optional (failed != [ ]) "a valid configuration failed: ${builtins.toJSON failed}"
    );
in
if problems != [ ] then
  throw "module assertions:\n${lib.concatStringsSep "\n" problems}"
else
  pkgs.runCommand "tfgateway-module-assertions" { } ''
    echo "${toString (lib.length (lib.attrNames cases.invalid))} contradictory configurations rejected" > $out
  ''
