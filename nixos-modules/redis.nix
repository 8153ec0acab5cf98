# The gateway's redis: loopback only, persistent (the agent's reservation cache and outbox live
# here), with keyspace notifications, which CoreDNS's plugin and the router follow, and a
# password. The password never enters the Nix store or a command line: it is generated on the
# machine at first start (or given as a file), handed to redis by nixpkgs' requirePassFile
# (read as root before redis starts) and to the agent, CoreDNS and the router as the systemd
# credential `redis-password`; each of them refuses to run when redis refuses it.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.tfgateway;
  generated = cfg.redis.passwordFile == null;
  passwordFile = if generated then "/var/lib/tfgateway-secrets/redis-password" else cfg.redis.passwordFile;
  # The units that talk to redis; each reads $CREDENTIALS_DIRECTORY/redis-password.
  clients = [
    "tfgateway"
    "tfgateway-dns"
    "tfgateway-router"
  ];
  passwordUnit = lib.optional generated "tfgateway-redis-password.service";
in
{
  options.services.tfgateway.redis.passwordFile = lib.mkOption {
    type = lib.types.nullOr lib.types.str;
    default = null;
    example = "/var/lib/secrets/tfgateway/redis-password";
    description = ''
      Absolute path, outside the Nix store, of a file holding the password of the gateway's
      redis (one line; it may stay readable by root only). `null`: a random password is
      generated at first start in {file}`/var/lib/tfgateway-secrets/redis-password` and kept
      there. Either way redis requires it and the agent, CoreDNS and the router get it as
      the systemd credential `redis-password`.
    '';
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.hasPrefix "/" passwordFile && !lib.hasPrefix builtins.storeDir passwordFile;
        message = "services.tfgateway.redis.passwordFile must be an absolute path outside the Nix store (the store is world-readable), got ${passwordFile}.";
      }
    ];

    environment.systemPackages = [
      # `tfgateway status` against this gateway's redis (root: the password is root-only):
      # what is served, declared workloads' states, 4to6 peers' WireGuard configs, tunnels'
      # tftunnel command lines.
      (pkgs.writeShellApplication {
        name = "tfgateway-status";
        text = ''
          exec ${lib.getExe cfg.package} status --redis tcp://127.0.0.1:${toString cfg.redis.port} \
            --redis-password-file ${passwordFile} "$@"
        '';
      })
      # Loads an old gateway's dump.rdb (docs/operators.md, "Moving an Ubuntu gateway").
      (pkgs.writeShellApplication {
        name = "tfgateway-redis-import";
        runtimeInputs = [
          config.services.redis.package
          pkgs.coreutils
          pkgs.gnugrep
          pkgs.psmisc
        ];
        text = builtins.readFile ./tfgateway-redis-import.sh;
      })
    ];

    services.redis.servers.tfgateway = {
      enable = true;
      # A named server listens on TCP only when given a port; the router speaks TCP only.
      inherit (cfg.redis) port;
      bind = "127.0.0.1";
      appendOnly = true;
      requirePassFile = passwordFile;
      settings.notify-keyspace-events = "KEA";
    };

    systemd.services = lib.mkMerge [
      (lib.genAttrs clients (_: {
        wants = passwordUnit;
        after = passwordUnit;
        serviceConfig.LoadCredential = [ "redis-password:${passwordFile}" ];
      }))
      {
        redis-tfgateway = {
          requires = passwordUnit;
          after = passwordUnit;
        };
      }
      (lib.mkIf generated {
        tfgateway-redis-password = {
          description = "Generate the tfgateway's redis password (once)";
          unitConfig.ConditionPathExists = "!${passwordFile}";
          path = [ pkgs.coreutils ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            UMask = "0077";
          };
          script = ''
            install -d -m 0700 ${dirOf passwordFile}
            head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > ${passwordFile}.new
            mv ${passwordFile}.new ${passwordFile}
          '';
        };
      })
    ];
  };
}
