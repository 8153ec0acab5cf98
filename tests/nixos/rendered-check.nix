# The kept renderings (tests/nixos/rendered/) must equal what the module renders with the
# real nixpkgs: exposed as checks.x86_64-linux.rendered-files. The offline evaluation
# (scripts/eval-nix-offline.sh) makes the same comparison with stub NixOS options; this one
# also reads the router.toml that nixpkgs' TOML generator wrote.
{
  lib,
  pkgs,
  module,
}:

let
  host =
    extra:
    (lib.nixosSystem {
      inherit (pkgs.stdenv.hostPlatform) system;
      modules = [
        module
        ./rendered/gateway.nix
        extra
        {
          boot.isContainer = true;
          system.stateVersion = "26.05";
        }
      ];
    }).config;
  reference = host { };
  with4to6 = host { services.tfgateway.endpoint = "203.0.113.10:51820"; };
  units = reference.systemd.services;
  redis = reference.services.redis.servers.tfgateway;
  rendering = {
    corefile = (lib.head units.tfgateway-dns.restartTriggers).text;
    routerSettings = null; # render.py reads the generated router.toml named in the command
    agentCommand = units.tfgateway.serviceConfig.ExecStart;
    routerCommand = units.tfgateway-router.serviceConfig.ExecStart;
    dnsCommand = units.tfgateway-dns.serviceConfig.ExecStart;
    redis = {
      inherit (redis)
        port
        bind
        appendOnly
        appendFsync
        save
        requirePassFile
        ;
      settings = { inherit (redis.settings) notify-keyspace-events; };
    };
    nftables = lib.mapAttrs (_: t: { inherit (t) family content; }) with4to6.networking.nftables.tables;
  };
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
