# Options of services.tfgateway (one per flag of the agent's CLI, plus the data plane and
# the host integration) and the assertions that reject contradictory settings.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types literalExpression;
  cfg = config.services.tfgateway;
  tfgwPkgs = import ../nix/packages { inherit (pkgs) callPackage; };
  tomlFormat = pkgs.formats.toml { };

  mkPackage =
    name: description:
    mkOption {
      type = types.package;
      default = tfgwPkgs.${name};
      defaultText = literalExpression "tfgateway.packages.\${system}.${name}";
      inherit description;
    };

  inherit (import ./lib.nix { inherit lib; }) endpointPort;

  router = cfg.router.settings.server;
  tcpPorts = {
    "services.tfgateway.dns.port" = cfg.dns.port;
    "services.tfgateway.router.settings.server.port" = router.port;
    "services.tfgateway.router.settings.server.httpport" = router.httpport;
    "services.tfgateway.router.settings.server.clientsport" = router.clientsport;
    "services.tfgateway.redis.port" = cfg.redis.port;
  }
  // lib.filterAttrs (_: port: port != null) {
    "services.tfgateway.metricsListen" = listenPort cfg.metricsListen;
    "services.tfgateway.router.metricsListen" = listenPort cfg.router.metricsListen;
    "services.tfgateway.dns.metricsListen" = listenPort cfg.dns.metricsListen;
    "services.tfgateway.dns.healthListen" = listenPort cfg.dns.healthListen;
    "services.tfgateway.dns.readyListen" = listenPort cfg.dns.readyListen;
  };
  listenPort = address: if address == null then null else endpointPort address;
  wireguardPort = if cfg.endpoint == null then null else endpointPort cfg.endpoint;
  duplicatePorts = lib.filterAttrs (_: names: lib.length names > 1) (
    lib.groupBy (name: toString tcpPorts.${name}) (lib.attrNames tcpPorts)
  );
in
{
  options.services.tfgateway = {
    enable = lib.mkEnableOption ''
      the ThreeFold Grid gateway: redis, CoreDNS with the gateway's DNS plugin, the TCP router
      and the agent that turns explorer reservations and the operator's declared workloads
      into their configuration
    '';

    package = mkPackage "agent" "The agent package (provides `tfgateway`).";

    seedFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/secrets/tfgateway/identity.seed";
      description = ''
        Absolute path, outside the Nix store, of an existing identity seed file (`"1.0.0"` raw
        or `"1.1.0"` mnemonic JSON, as written by the Go tfgateway). It is handed to the agent
        with systemd's `LoadCredential`, so it can stay readable by root only.

        `null`: the agent creates a new identity on first start in
        {file}`/var/lib/tfgateway/identity.seed` (never in an image: every node gets its own).
        The seed is also the WireGuard private key of the 4to6 gateway; keep a backup.
      '';
    };

    explorer = mkOption {
      type = types.nullOr types.str;
      default = "https://explorer.grid.tf/api/v1";
      example = "https://explorer.testnet.grid.tf/api/v1";
      description = ''
        URL of the explorer API the gateway registers with and polls (`--explorer`).

        `null`: a standalone gateway, serving only the workloads its operator declares in
        {option}`services.tfgateway.workloads`: no registration, no polling, no uptime reports
        (the explorer-only options `farm`, `free`, `location`, `pollInterval` and
        `explorerTimeout` are then unused). With both, both are served, and a name the
        workloads hold can never be taken by an explorer user.
      '';
    };

    farm = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = null;
      example = 1;
      description = "Farm ID the gateway registers in (`--farm`); required with an explorer.";
    };

    domains = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "tfgw1.gateway.tf" ];
      description = ''
        Managed domains: users can reserve sub-domains of these (`--domains`). Their NS records
        in the parent zone must point at {option}`services.tfgateway.nameservers`.
      '';
    };

    nameservers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "ns1.gateway.tf" ];
      description = ''
        DNS names of this gateway's name servers (`--nameservers`): users delegate their domains
        to them, and they are the NS records of every zone the gateway serves.
      '';
    };

    endpoint = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "203.0.113.10:3443";
      description = ''
        Public `host:port` of the WireGuard endpoint users of the 4to6 gateway connect to
        (`--endpoint`). Setting it turns 4to6 on: the agent creates
        {option}`services.tfgateway.wireguardInterface` listening on this port, and the host
        forwards and masquerades (NAT66) the users' IPv6 traffic. `null`: 4to6 is off.
      '';
    };

    wireguardInterface = mkOption {
      type = types.str;
      default = "wg-tfgateway";
      description = "Name of the WireGuard interface the agent creates for 4to6 (`--wg-iface`).";
    };

    free = mkOption {
      type = types.bool;
      default = false;
      description = "Offer the gateway's capacity for free (`--free`).";
    };

    allowPrivateBackends = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Accept proxy targets in private address ranges (`--allow-private-backends`); for test
        networks. Loopback, link-local and the gateway's own addresses are always refused.
      '';
    };

    gatewayAddresses = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "203.0.113.10"
        "2001:db8::10"
      ];
      description = ''
        The gateway's own public addresses (`--gateway-address`); proxy targets pointing at them
        are refused.
      '';
    };

    nameProof = {
      mode = mkOption {
        type = types.enum [
          "required"
          "first-come"
        ];
        default = "required";
        description = ''
          Who may claim a name outside `domains` (`--name-proof`). `required`: a proxy, reverse
          proxy or delegation needs a TXT record at `_tfgateway.<name>` holding the user's id
          (names inside a zone the same user delegated are covered by that zone's proof); a
          proof that disappears suspends the name until it is back. `first-come`: the Go
          daemon's behaviour, where any user may claim a name its owner has not pointed at the
          gateway yet. Public suffixes can never be delegated in either mode.
        '';
      };

      resolvers = mkOption {
        type = types.listOf types.str;
        default = [
          "9.9.9.9"
          "149.112.112.112"
          "[2620:fe::fe]:53"
        ];
        description = ''
          Resolvers proofs are looked up with (`--proof-resolver`, `IP` or `IP:PORT`; Quad9 by
          default, which validates DNSSEC). Never this gateway's own CoreDNS: it answers for the
          zones it serves, so every proof of a zone delegated here would pass. `[ ]`: the
          host's /etc/resolv.conf (on this appliance that may be CoreDNS itself).
        '';
      };

      timeout = mkOption {
        type = types.ints.positive;
        default = 5;
        description = "Seconds one proof lookup may take (`--proof-timeout`).";
      };

      recheckInterval = mkOption {
        type = types.ints.positive;
        default = 3600;
        description = ''
          Seconds between two lookups of a proven name (`--proof-recheck-interval`); a name
          whose proof is gone is suspended (no longer served) and restored when it is back.
        '';
      };

      grace = mkOption {
        type = types.ints.unsigned;
        default = 604800;
        description = ''
          Seconds names served without proof before proofs were first enforced (an upgrade
          from the Go daemon or from `first-come`) are kept before their first check
          (`--proof-grace`).
        '';
      };
    };

    location = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "50.85,4.35";
      description = "Location reported to the explorer (`--location`); `null` lets the agent decide.";
    };

    metricsListen = mkOption {
      type = types.nullOr types.str;
      default = "127.0.0.1:9110";
      description = "Address of the agent's Prometheus metrics endpoint (`--metrics-listen`); `null`: off.";
    };

    debug = mkOption {
      type = types.bool;
      default = false;
      description = "Verbose logging of the agent (`--debug`).";
    };

    logFormat = mkOption {
      type = types.enum [
        "text"
        "json"
      ];
      default = "text";
      description = ''
        Log line format of the agent (`--log-format`): `key=value` text, or one JSON object per
        line (with the fields of each job as keys) for log shippers.
      '';
    };

    pollInterval = mkOption {
      type = types.ints.positive;
      default = 10;
      example = 1;
      description = ''
        Seconds between two polls of the explorer when there is nothing more to fetch
        (`--poll-interval`; the Go daemon's fixed 10 s). A workload is served about half of it
        after its creation on average; 1 costs the explorer one small request a second.
      '';
    };

    explorerTimeout = mkOption {
      type = types.ints.positive;
      default = 15;
      description = "Seconds one explorer request may take, answer included (`--explorer-timeout`).";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Further command-line arguments of the agent.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open the gateway's public ports: DNS (TCP and UDP), the router's HTTP, TLS and clients
        ports, and the WireGuard UDP port when 4to6 is on.
      '';
    };

    redis.port = mkOption {
      type = types.port;
      default = 6379;
      description = "TCP port of the gateway's redis on 127.0.0.1 (never reachable from outside).";
    };

    dns = {
      package = mkPackage "coredns" "CoreDNS built with the gateway's `gatewaydns` plugin.";

      port = mkOption {
        type = types.port;
        default = 53;
        description = "Port CoreDNS answers on (UDP and TCP, all addresses).";
      };

      upstreams = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "1.1.1.1"
          "2606:4700:4700::1111"
        ];
        description = ''
          Resolvers CoreDNS forwards names outside the gateway's zones to. Empty: the gateway
          answers only for its own zones, as an authoritative server should. Setting it makes
          port 53 a recursive resolver, so it requires
          {option}`services.tfgateway.dns.recursionAllowedFrom`.
        '';
      };

      hostmaster = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "hostmaster.gateway.tf";
        description = "Mailbox of the SOA records of the gateway's zones; `null`: the plugin's default.";
      };

      extraConfig = mkOption {
        type = types.lines;
        default = "";
        example = "log";
        description = "Extra Corefile directives for the gateway's server block (e.g. `log`).";
      };
    };

    tls = {
      terminate = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "gw.example.com" ];
        description = ''
          Domains whose explorer proxies and reverse proxies the router serves with TLS
          terminated: the domain and every name under it (the agent's `--terminate-tls`).
          The router answers the TLS handshake with a certificate of its own (from the ACME CA
          below, or {option}`services.tfgateway.tls.certificates`) and forwards plain HTTP with
          X-Forwarded-For/-Proto/-Host to the backend's plain port or the tunnel client's
          `--local`. Other names stay passthrough, as with tcprouter.
        '';
      };
      redirect = mkOption {
        type = types.bool;
        default = false;
        description = "Plain HTTP requests for terminated names get a redirect to HTTPS (`--terminate-tls-redirect`).";
      };
      acme = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Obtain certificates from an ACME CA, at the first handshake of a terminated name
            (only names the gateway routes; spaced per name and limited per hour), kept in the
            router's state directory and renewed before expiry.
          '';
        };
        email = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "hostmaster@gw.example.com";
          description = "Contact address of the ACME account.";
        };
        directory = mkOption {
          type = types.str;
          default = "https://acme-v02.api.letsencrypt.org/directory";
          description = "ACME directory URL (Let's Encrypt production by default).";
        };
        staging = mkOption {
          type = types.bool;
          default = false;
          description = ''
            Use Let's Encrypt's staging directory instead of
            {option}`services.tfgateway.tls.acme.directory`: untrusted certificates, generous
            rate limits; for trying a gateway out.
          '';
        };
        wildcards = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = literalExpression "config.services.tfgateway.domains";
          description = ''
            Managed domains D whose names one label below are served by one certificate for
            `*.D`, obtained by DNS-01 through the gateway's own DNS (the router writes the
            `_acme-challenge` TXT record into redis and CoreDNS serves it), so the CA's per-domain
            limits are not spent on every subdomain. Each must be in
            {option}`services.tfgateway.domains`.
          '';
        };
        challenges = mkOption {
          type = types.listOf (types.enum [ "http-01" "tls-alpn-01" ]);
          default = [ "http-01" "tls-alpn-01" ];
          description = "Challenges for names outside the wildcard domains, answered by the router on ports 80 and 443.";
        };
      };
      certificates = mkOption {
        type = types.attrsOf (
          types.submodule {
            options = {
              certFile = mkOption {
                type = types.str;
                description = "PEM certificate chain, outside the Nix store.";
              };
              keyFile = mkOption {
                type = types.str;
                description = "PEM private key, outside the Nix store (passed as a systemd credential).";
              };
            };
          }
        );
        default = { };
        example = literalExpression ''{ "www.example.com" = { certFile = "/var/lib/secrets/www.pem"; keyFile = "/var/lib/secrets/www.key"; }; }'';
        description = "Operator-provided certificates, served for the names they cover instead of ACME ones.";
      };
    };

    router = {
      package = mkPackage "router" "The gateway's tcprouter-compatible router (provides `tfrouter`).";

      legacyTunnels = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Accept tunnel clients speaking `trc` v0.1.0's clear-text handshake on the clients
          port (the drop-in promise). Its secret crosses the network in clear text and the
          last registration wins, so anyone who sees a secret once can take its route;
          `false` accepts only `tftunnel --pin` (TLS to the router's pinned key and a proof
          of the secret bound to the TLS session, SECURITY.md). Rendered as
          `[tunnels] legacy` in router.toml.
        '';
      };

      metricsListen = mkOption {
        type = types.nullOr types.str;
        default = "127.0.0.1:9111";
        description = "Address of the router's Prometheus metrics endpoint (`-metrics`); `null`: off.";
      };

      settings = mkOption {
        description = ''
          Contents of `router.toml`, with the keys of tcprouter's `trs`, so an existing file
          carries over: `settings = builtins.fromTOML (builtins.readFile ./router.toml);`.
          Static services go to `server.services."<name>"` (`addr`, `tlsport`, `httpport`,
          `clientsecret`); tfrouter's per-source shares on ports 80/443 to `limits`
          (`pending_per_source`, `connections_per_source`, `max_pending`,
          `ipv6_source_prefix`; see the router's README); its tunnel limits to `tunnels`
          (`max_streams`, `memory_mib` per tunnel, `max_tunnels`, `total_streams`,
          `total_memory_mib` over all tunnels, `pending_per_source`, `max_pending`; see the
          router's README). The file is in the Nix store: do not put secrets in it.
        '';
        default = { };
        type = types.submodule {
          freeformType = tomlFormat.type;
          options.server = mkOption {
            default = { };
            description = "The `[server]` table.";
            type = types.submodule {
              freeformType = tomlFormat.type;
              options = {
                addr = mkOption {
                  type = types.str;
                  default = "::";
                  description = ''
                    Address the router listens on; `"::"` is every IPv4 and IPv6 address
                    (trs's own default was `"0.0.0.0"`, IPv4 only).
                  '';
                };
                port = mkOption {
                  type = types.port;
                  default = 443;
                  description = "TLS listener: connections are routed by their SNI name, unterminated.";
                };
                httpport = mkOption {
                  type = types.port;
                  default = 80;
                  description = "Plain HTTP listener: requests are routed by their Host header.";
                };
                clientsport = mkOption {
                  type = types.port;
                  default = 18000;
                  description = ''
                    Listener for users' tunnel clients (`trc`) of reverse-proxy reservations;
                    also announced to the explorer by the agent (`--tcp-client-port`).
                  '';
                };
                dbbackend = mkOption {
                  default = { };
                  description = "The `[server.dbbackend]` table: where the routes are read from.";
                  type = types.submodule {
                    freeformType = tomlFormat.type;
                    options = {
                      type = mkOption {
                        type = types.enum [ "redis" ];
                        default = "redis";
                        description = "Route store; only redis is supported.";
                      };
                      addr = mkOption {
                        type = types.str;
                        default = "127.0.0.1";
                        description = "Address of the gateway's redis.";
                      };
                      port = mkOption {
                        type = types.port;
                        default = cfg.redis.port;
                        defaultText = literalExpression "config.services.tfgateway.redis.port";
                        description = "Port of the gateway's redis.";
                      };
                      refresh = mkOption {
                        type = types.ints.positive;
                        default = 10;
                        description = "Seconds between full resyncs of the route table from redis.";
                      };
                      passwordfile = mkOption {
                        type = types.str;
                        default = "\${CREDENTIALS_DIRECTORY}/redis-password";
                        description = ''
                          File the router reads the redis password from: the systemd credential
                          of {option}`services.tfgateway.redis.passwordFile`. Never set `password`
                          here: this file is in the world-readable Nix store.
                        '';
                      };
                    };
                  };
                };
              };
            };
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.seedFile == null || (lib.hasPrefix "/" cfg.seedFile && !lib.hasPrefix builtins.storeDir cfg.seedFile);
        message = "services.tfgateway.seedFile must be an absolute path outside the Nix store (the seed is the gateway's private key), got ${toString cfg.seedFile}.";
      }
      {
        assertion = cfg.endpoint == null || wireguardPort != null;
        message = "services.tfgateway.endpoint must be host:port (the WireGuard listen port is its port), got ${toString cfg.endpoint}.";
      }
      {
        assertion = cfg.endpoint == null || builtins.match "[A-Za-z0-9_.-]{1,15}" cfg.wireguardInterface != null;
        message = "services.tfgateway.endpoint turns 4to6 on, which needs services.tfgateway.wireguardInterface to be a Linux interface name (1-15 of A-Z a-z 0-9 _ . -), got \"${cfg.wireguardInterface}\".";
      }
      {
        assertion = wireguardPort != cfg.dns.port;
        message = "services.tfgateway: the WireGuard port of services.tfgateway.endpoint and services.tfgateway.dns.port are both UDP ${toString cfg.dns.port}.";
      }
      {
        assertion = cfg.endpoint == null || config.networking.nftables.enable;
        message = "services.tfgateway.endpoint (4to6) masquerades IPv6 with nftables: do not set networking.nftables.enable = false.";
      }
      {
        assertion = cfg.endpoint == null || config.networking.enableIPv6;
        message = "services.tfgateway.endpoint (4to6) forwards IPv6: networking.enableIPv6 must stay true.";
      }
      {
        assertion = duplicatePorts == { };
        message = "services.tfgateway: TCP ports clash: ${
          lib.concatStringsSep "; " (
            lib.mapAttrsToList (port: names: "${lib.concatStringsSep " and " names} are all ${port}") duplicatePorts
          )
        }.";
      }
      {
        assertion = router.dbbackend.addr == "127.0.0.1" && router.dbbackend.port == cfg.redis.port;
        message = "services.tfgateway.router.settings.server.dbbackend must be the gateway's redis (127.0.0.1:${toString cfg.redis.port}), where the agent writes the routes; got ${router.dbbackend.addr}:${toString router.dbbackend.port}.";
      }
      {
        assertion = lib.all (d: lib.elem d cfg.domains) cfg.tls.acme.wildcards;
        message = "services.tfgateway.tls.acme.wildcards must be managed domains (services.tfgateway.domains): DNS-01 goes through the gateway's own zones; not managed: ${lib.concatStringsSep ", " (lib.subtractLists cfg.domains cfg.tls.acme.wildcards)}.";
      }
      {
        assertion = lib.all (c: lib.hasPrefix "/" c.keyFile && !lib.hasPrefix builtins.storeDir c.keyFile) (lib.attrValues cfg.tls.certificates);
        message = "services.tfgateway.tls.certificates.<name>.keyFile must be absolute paths outside the Nix store.";
      }
      {
        assertion = !(router.dbbackend ? password);
        message = "services.tfgateway.router.settings.server.dbbackend.password would put the redis password in the world-readable Nix store; the router reads it from the systemd credential (passwordfile, services.tfgateway.redis.passwordFile).";
      }
      {
        assertion = cfg.explorer != null -> cfg.farm != null;
        message = "services.tfgateway.farm is required with an explorer (the gateway registers in a farm); set services.tfgateway.explorer = null for a standalone gateway.";
      }
      {
        assertion = cfg.domains != [ ] -> cfg.nameservers != [ ];
        message = "services.tfgateway.domains needs services.tfgateway.nameservers: the managed zones' NS records name them.";
      }
    ];
  };
}
