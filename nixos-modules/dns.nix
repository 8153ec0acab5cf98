# CoreDNS with the gateway's `gatewaydns` plugin: answers for the managed and delegated zones
# from memory, fed from redis by push; optionally forwards other names to upstream resolvers,
# for allowed client networks only. Health, readiness and Prometheus metrics on loopback.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  cfg = config.services.tfgateway;
  dns = cfg.dns;
  fqdn = name: if lib.hasSuffix "." name then name else "${name}.";
  listenOption =
    default: what:
    mkOption {
      type = types.nullOr types.str;
      inherit default;
      description = "`host:port` of CoreDNS's ${what}; loopback by default, `null`: off.";
    };

  block = name: lines: [ "${name} {" ] ++ map (line: "    ${line}") lines ++ [ "}" ];

  gatewaydns = [
    "address 127.0.0.1:${toString cfg.redis.port}"
    # The systemd credential (nixos-modules/redis.nix); CoreDNS expands {$VAR}.
    "password_file {$CREDENTIALS_DIRECTORY}/redis-password"
  ]
  ++ lib.optional (
    cfg.nameservers != [ ]
  ) "nameservers ${lib.concatMapStringsSep " " fqdn cfg.nameservers}"
  ++ lib.optional (dns.hostmaster != null) "hostmaster ${fqdn dns.hostmaster}";

  server =
    lib.optional (dns.healthListen != null) "health ${dns.healthListen}"
    ++ lib.optional (dns.readyListen != null) "ready ${dns.readyListen}"
    ++ lib.optional (dns.metricsListen != null) "prometheus ${dns.metricsListen}"
    ++ [ "errors" ]
    ++ block "gatewaydns" gatewaydns
    # acl runs after gatewaydns (coredns-tfgw's plugin order): it sees only names outside the
    # gateway's zones, so only allowed clients get recursion and everyone gets the zones.
    ++ lib.optionals (dns.upstreams != [ ]) (
      block "acl" (map (net: "allow net ${net}") dns.recursionAllowedFrom ++ [ "block" ])
      ++ [ "forward . ${lib.concatStringsSep " " dns.upstreams}" ]
    )
    ++ lib.optional (dns.extraConfig != "") dns.extraConfig;

  corefile = pkgs.writeText "Corefile" ''
    .:${toString dns.port} {
    ${lib.concatMapStrings (line: "    ${line}\n") server}}
  '';
in
{
  options.services.tfgateway.dns = {
    recursionAllowedFrom = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "10.0.0.0/8"
        "2001:db8::/32"
      ];
      description = ''
        Client networks (CIDR) that may use the gateway as a recursive resolver when
        {option}`services.tfgateway.dns.upstreams` is set; everyone else gets REFUSED for
        names outside the gateway's zones (which stay answered for all). Required with
        upstreams: an open resolver is abused for amplification attacks within hours. Only
        `[ "0.0.0.0/0" "::/0" ]` makes one, on purpose.
      '';
    };
    healthListen = listenOption "127.0.0.1:8080" "`health` plugin (`/health`: the process is alive)";
    readyListen = listenOption "127.0.0.1:8181" "`ready` plugin (`/ready`: 200 once the zones are loaded from redis)";
    metricsListen = listenOption "127.0.0.1:9153" "`prometheus` plugin (`/metrics`)";
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = dns.upstreams != [ ] -> dns.recursionAllowedFrom != [ ];
        message = "services.tfgateway.dns.upstreams makes port 53 a recursive resolver: set services.tfgateway.dns.recursionAllowedFrom to the client networks allowed to use it (only [ \"0.0.0.0/0\" \"::/0\" ] makes it open to the whole Internet).";
      }
    ];

    # resolved's stub listener holds 127.0.0.53:53 and would stop CoreDNS binding port 53.
    services.resolved.settings.Resolve.DNSStubListener = lib.mkIf (dns.port == 53) "no";

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
        ExecStart = "${lib.getExe dns.package} -conf ${corefile}";
        ExecReload = "${pkgs.coreutils}/bin/kill -SIGUSR1 $MAINPID";
      };
    };
  };
}
