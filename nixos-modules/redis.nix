# The gateway's redis: loopback only, persistent (the agent's reservation cache and outbox live
# here), with keyspace notifications, which CoreDNS's plugin and the router follow.
{ config, lib, ... }:

let
  cfg = config.services.tfgateway;
in
{
  config = lib.mkIf cfg.enable {
    services.redis.servers.tfgateway = {
      enable = true;
      # A named server listens on TCP only when given a port; the router speaks TCP only.
      inherit (cfg.redis) port;
      bind = "127.0.0.1";
      appendOnly = true;
      settings.notify-keyspace-events = "KEA";
    };
  };
}
