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
              farm = 1;
            };
          }
        ];
      };
    in
    map (a: a.message) (lib.filter (a: !a.assertion) host.config.assertions);

  # name = { settings; expect = a piece of the message that must be among the failures; }
  cases = {
    seed-in-store = {
      settings.services.tfgateway.seedFile = "${builtins.storeDir}/0000-identity.seed";
      expect = "seedFile must be an absolute path outside the Nix store";
    };
    endpoint-without-port = {
      settings.services.tfgateway.endpoint = "gw.example.com";
      expect = "endpoint must be host:port";
    };
    endpoint-without-interface = {
      settings.services.tfgateway = {
        endpoint = "203.0.113.10:3443";
        wireguardInterface = "";
      };
      expect = "needs services.tfgateway.wireguardInterface";
    };
    interface-name-too-long = {
      settings.services.tfgateway.wireguardInterface = "wg-tfgateway-too-long";
      expect = "must be a Linux interface name";
    };
    clients-port-on-tls-port = {
      settings.services.tfgateway.router.settings.server.clientsport = 443;
      expect = "TCP ports clash";
    };
    dns-port-on-redis = {
      settings.services.tfgateway.dns.port = 6379;
      expect = "TCP ports clash";
    };
    router-reads-other-redis = {
      settings.services.tfgateway.router.settings.server.dbbackend.port = 6380;
      expect = "dbbackend must be the gateway's redis";
    };
    fourtosix-without-nftables = {
      settings = {
        services.tfgateway.endpoint = "203.0.113.10:3443";
        networking.nftables.enable = false;
      };
      expect = "masquerades IPv6 with nftables";
    };
    domains-without-nameservers = {
      settings.services.tfgateway.domains = [ "gw.example.com" ];
      expect = "domains needs services.tfgateway.nameservers";
    };
  };

  problems =
    lib.concatLists (
      lib.mapAttrsToList (
        name: case:
        let
          failed = failedAssertions case.settings;
        in
        lib.optional (!lib.any (lib.hasInfix case.expect) failed)
          "${name}: no failed assertion mentions \"${case.expect}\"; failed: ${builtins.toJSON failed}"
      ) cases
    )
    ++ (
      let
        failed = failedAssertions {
          services.tfgateway = {
            domains = [ "gw.example.com" ];
            nameservers = [ "ns1.gw.example.com" ];
            endpoint = "203.0.113.10:3443";
          };
        };
      in
      lib.optional (failed != [ ]) "a valid configuration failed: ${builtins.toJSON failed}"
    );
in
if problems != [ ] then
  throw "module assertions:\n${lib.concatStringsSep "\n" problems}"
else
  pkgs.runCommand "tfgateway-module-assertions" { } ''
    echo "${toString (lib.length (lib.attrNames cases))} contradictory configurations rejected" > $out
  ''
