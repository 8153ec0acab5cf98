# The kept renderings (tests/nixos/rendered/) must equal what the module renders with the
# real nixpkgs: exposed as checks.x86_64-linux.rendered-files. The offline evaluation
# (scripts/eval-nix-offline.sh) makes the same comparison with stub NixOS options; this one
# also reads the router.toml and the workloads file that nixpkgs' TOML generator wrote.
{
  lib,
  pkgs,
  module,
}:

let
  host =
    base: extra:
    (lib.nixosSystem {
      inherit (pkgs.stdenv.hostPlatform) system;
      modules = [
        module
        base
        extra
        {
          boot.isContainer = true;
          system.stateVersion = "26.05";
        }
      ];
    }).config;
  reference = host ./rendered/gateway.nix { };
  standalone = host ./rendered/standalone.nix { };
  with4to6 = host ./rendered/gateway.nix { services.tfgateway.endpoint = "203.0.113.10:51820"; };
  rendering = import ./rendering.nix { inherit lib; } { inherit reference standalone with4to6; };
in
pkgs.runCommand "tfgateway-rendered-files"
  {
    nativeBuildInputs = [ pkgs.python3 ];
    rendering = builtins.toJSON rendering;
    passAsFile = [ "rendering" ];
  }
  ''
    python3 ${./render.py} check "$renderingPath" ${./rendered}
    touch $out
  ''
