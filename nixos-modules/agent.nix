# The agent unit: polls the explorer and/or reads the operator's workloads file
# (workloads.nix), writes DNS zones and routes into redis, and (4to6) owns the WireGuard
# interface through netlink. Not root; CAP_NET_ADMIN only when 4to6 is on.
{
  config,
  lib,
  utils,
  ...
}:

let
  cfg = config.services.tfgateway;
  fourToSix = cfg.endpoint != null;
  stateDir = "/var/lib/tfgateway";
  # %d is systemd's credentials directory (LoadCredential below).
  seed = if cfg.seedFile != null then "%d/identity.seed" else "${stateDir}/identity.seed";
  repeat = flag: lib.concatMap (value: [
    flag
    value
  ]);

  explorer = cfg.explorer != null;

  # Without an explorer (a standalone gateway) nothing is registered, polled or reported.
  args =
    lib.optionals explorer [
      "--explorer"
      cfg.explorer
    ]
    ++ [
      "--redis"
      "tcp://127.0.0.1:${toString cfg.redis.port}"
    ]
    ++ lib.optionals explorer [
      "--farm"
      (toString cfg.farm)
    ]
  ++ [
    "--tcp-client-port"
    (toString cfg.router.settings.server.clientsport)
  ]
  ++ lib.optionals (cfg.workloadsFile != null) [
    "--workloads"
    "/etc/tfgateway/workloads.toml"
  ]
  ++ repeat "--domains" cfg.domains
  ++ repeat "--nameservers" cfg.nameservers
  ++ repeat "--gateway-address" cfg.gatewayAddresses
  ++ repeat "--terminate-tls" cfg.tls.terminate
  ++ lib.optional cfg.tls.redirect "--terminate-tls-redirect"
  ++ lib.optionals fourToSix [
    "--endpoint"
    cfg.endpoint
    "--wg-iface"
    cfg.wireguardInterface
  ]
  ++ lib.optional (explorer && cfg.free) "--free"
  ++ lib.optional cfg.allowPrivateBackends "--allow-private-backends"
  ++ lib.optionals (explorer && cfg.location != null) [
    "--location"
    cfg.location
  ]
  ++ lib.optionals (cfg.metricsListen != null) [
    "--metrics-listen"
    cfg.metricsListen
  ]
  ++ lib.optional cfg.debug "--debug"
  ++ lib.optionals explorer [
    "--poll-interval"
    (toString cfg.pollInterval)
  ]
  ++ [
    "--log-format"
    cfg.logFormat
  ]
  ++ lib.optionals explorer [
    "--explorer-timeout"
    (toString cfg.explorerTimeout)
  ]
  ++ [
    "--name-proof"
    cfg.nameProof.mode
    "--proof-timeout"
    (toString cfg.nameProof.timeout)
    "--proof-recheck-interval"
    (toString cfg.nameProof.recheckInterval)
    "--proof-grace"
    (toString cfg.nameProof.grace)
  ]
  ++ repeat "--proof-resolver" cfg.nameProof.resolvers
  ++ cfg.extraArgs;

  # "" is an empty set: without 4to6 the agent has no capability at all.
  capabilities = if fourToSix then "CAP_NET_ADMIN" else "";
in
{
  config = lib.mkIf cfg.enable {
    systemd.services.tfgateway = {
      description = "ThreeFold Grid gateway agent";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      requires = [ "redis-tfgateway.service" ];
      after = [
        "network-online.target"
        "redis-tfgateway.service"
      ];

      serviceConfig = (import ./hardening.nix).common // {
        # The seed and password arguments are added unescaped so that systemd expands %d, its
        # credentials directory (LoadCredential here and in redis.nix).
        ExecStart = "${utils.escapeSystemdExecArgs ([ (lib.getExe cfg.package) ] ++ args)} --seed ${seed} --redis-password-file %d/redis-password";
        StateDirectory = "tfgateway";
        StateDirectoryMode = "0700";
        LoadCredential = lib.optional (cfg.seedFile != null) "identity.seed:${cfg.seedFile}";
        AmbientCapabilities = capabilities;
        CapabilityBoundingSet = capabilities;
        # AF_NETLINK: pyroute2 (WireGuard interface, peers, addresses).
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
        ];
      };
    };
  };
}
