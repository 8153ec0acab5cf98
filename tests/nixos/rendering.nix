# What the kept renderings (tests/nixos/rendered/) are made of, taken from an evaluated
# reference configuration: by the offline evaluation (offline-eval.nix, router.toml as its
# settings) and by the real one (rendered-check.nix, router.toml as the file nixpkgs wrote,
# found by tests/nixos/render.py in the router's command line).
{ lib }:

{
  reference,
  with4to6,
  routerSettings ? null,
}:

let
  units = reference.systemd.services;
  redis = reference.services.redis.servers.tfgateway;
in
{
  inherit routerSettings;
  corefile = (lib.head units.tfgateway-dns.restartTriggers).text;
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
}
