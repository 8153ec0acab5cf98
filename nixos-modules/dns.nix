# CoreDNS with the gateway's `gatewaydns` plugin: answers for the managed and delegated zones
# from memory, fed from redis by push; optionally forwards other names to upstream resolvers.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.tfgateway;
  fqdn = name: if lib.hasSuffix "." name then name else "${name}.";

  gatewaydns = [
    "address 127.0.0.1:${toString cfg.redis.port}"
  ]
  ++ lib.optional (
    cfg.nameservers != [ ]
  ) "nameservers ${lib.concatMapStringsSep " " fqdn cfg.nameservers}"
  ++ lib.optional (cfg.dns.hostmaster != null) "hostmaster ${fqdn cfg.dns.hostmaster}";

  server = [
    "errors"
    "gatewaydns {"
  ]
  ++ map (line: "    ${line}") gatewaydns
  ++ [ "}" ]
  ++ lib.optional (
    cfg.dns.upstreams != [ ]
  ) "forward . ${lib.concatStringsSep " " cfg.dns.upstreams}"
  ++ lib.optional (cfg.dns.extraConfig != "") cfg.dns.extraConfig;

  corefile = pkgs.writeText "Corefile" ''
    .:${toString cfg.dns.port} {
    ${lib.concatMapStrings (line: "    ${line}\n") server}}
  '';
in
{
  config = lib.mkIf cfg.enable {
    # resolved's stub listener holds 127.0.0.53:53 and would stop CoreDNS binding port 53.
    services.resolved.settings.Resolve.DNSStubListener = lib.mkIf (cfg.dns.port == 53) "no";

    systemd.services.tfgateway-dns = {
      description = "CoreDNS for the tfgateway (gatewaydns plugin)";
      wantedBy = [ "multi-user.target" ];
      # Keeps answering from memory while redis restarts, so only ordered after it.
      wants = [ "redis-tfgateway.service" ];
      after = [
        "network.target"
        "redis-tfgateway.service"
      ];
      restartTriggers = [ corefile ];

      serviceConfig = (import ./hardening.nix).dataPlane // {
        ExecStart = "${lib.getExe cfg.dns.package} -conf ${corefile}";
        ExecReload = "${pkgs.coreutils}/bin/kill -SIGUSR1 $MAINPID";
      };
    };
  };
}
