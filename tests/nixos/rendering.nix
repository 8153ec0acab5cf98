# What the kept renderings (tests/nixos/rendered/) are made of, taken from evaluated
# reference configurations (rendered/gateway.nix; rendered/standalone.nix for the standalone-*
# files): by the offline evaluation (offline-eval.nix, router.toml and the workloads file as
# their settings) and by the real one (rendered-check.nix, router.toml and the workloads file
# as the files nixpkgs wrote, found by tests/nixos/render.py in the store).
{ lib }:

{
  reference,
  with4to6,
  standalone,
  routerSettings ? null,
  workloadsSettings ? null,
}:

let
  units = reference.systemd.services;
  redis = reference.services.redis.servers.tfgateway;
  standaloneAgent = standalone.systemd.services.tfgateway;
in
{
  inherit routerSettings workloadsSettings;
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
  standaloneAgentCommand = standaloneAgent.serviceConfig.ExecStart;
  standaloneAgentUnit = {
    inherit (standaloneAgent.serviceConfig) ExecReload LoadCredential;
    reloadTriggers = map toString standaloneAgent.reloadTriggers;
    etc = toString standalone.environment.etc."tfgateway/workloads.toml".source;
  };
  workloadsFile = toString standalone.services.tfgateway.workloadsFile;
  nftables = lib.mapAttrs (_: t: { inherit (t) family content; }) with4to6.networking.nftables.tables;
}
