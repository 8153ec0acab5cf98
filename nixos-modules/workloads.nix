# Workloads declared by the operator (docs/workloads.md): services.tfgateway.workloads, one
# attribute set per kind keyed by the entry's name, written with nixpkgs' TOML generator to the
# file the agent reads (`--workloads`). The file sits at a fixed path in /etc, so a change of
# its content changes no command line: the unit's reload trigger makes `nixos-rebuild switch`
# send SIGHUP (ExecReload) instead of restarting the agent. Tunnel secrets stay outside the
# store: each is a systemd credential of the agent and the file names only its path.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types literalExpression;
  cfg = config.services.tfgateway;
  w = cfg.workloads;
  tomlFormat = pkgs.formats.toml { };

  # Where the agent reads the file (a symlink NixOS points at the generated one).
  path = "/etc/tfgateway/workloads.toml";
  # Where systemd hands the agent the tunnel secret of reverse proxy NAME (LoadCredential).
  credential = name: "${name}-tunnel";
  credentialPath = name: "/run/credentials/tfgateway.service/${credential name}";

  domainOption = example: description: mkOption {
    type = types.str;
    inherit example description;
  };
  terminateTls = mkOption {
    type = types.bool;
    default = false;
    description = ''
      The router terminates TLS for this name with a certificate of its own (ACME or
      {option}`services.tfgateway.tls.certificates`) and forwards plain HTTP; `false`: TLS
      passes through to the backend untouched.
    '';
  };
  proxyProtocol = mkOption {
    type = types.enum [
      0
      1
      2
    ];
    default = 0;
    description = "PROXY protocol header version the router sends to the backend; 0: none.";
  };
  kind =
    description: options:
    mkOption {
      type = types.attrsOf (types.submodule { inherit options; });
      default = { };
      inherit description;
    };

  # Attribute set of entries -> TOML array of tables, the entry's name first.
  entries = lib.mapAttrsToList (name: fields: { inherit name; } // fields);
  document = lib.filterAttrs (_: list: list != [ ]) {
    subdomain = entries (lib.mapAttrs (_: e: { inherit (e) domain addresses; }) w.subdomains);
    delegation = entries (lib.mapAttrs (_: e: { inherit (e) domain; }) w.delegations);
    proxy = entries (
      lib.mapAttrs (_: e: {
        inherit (e) domain address port;
        port_tls = e.portTls;
        terminate_tls = e.terminateTls;
        proxy_protocol = e.proxyProtocol;
      }) w.proxies
    );
    reverse_proxy = entries (
      lib.mapAttrs (name: e: {
        inherit (e) domain;
        secret_file = credentialPath name;
        terminate_tls = e.terminateTls;
        proxy_protocol = e.proxyProtocol;
      }) w.reverseProxies
    );
    fourtosix = entries (lib.mapAttrs (_: e: { public_key = e.publicKey; }) w.fourtosix);
  };
  file = tomlFormat.generate "tfgateway-workloads.toml" document;

  kinds = {
    subdomains = "subdomain";
    delegations = "delegation";
    proxies = "proxy";
    reverseProxies = "reverse_proxy";
    fourtosix = "fourtosix";
  };
  # "name" -> [ "proxies" "subdomains" ] for names declared more than once.
  names = lib.concatLists (lib.mapAttrsToList (option: _: map (n: { inherit n option; }) (lib.attrNames w.${option})) kinds);
  duplicates = lib.filterAttrs (_: l: lib.length l > 1) (
    lib.mapAttrs (_: map (x: x.option)) (lib.groupBy (x: x.n) names)
  );
  badNames = lib.filter (x: builtins.match "[a-z0-9][a-z0-9-]{0,62}" x.n == null) names;
  secretsInStore = lib.filterAttrs (
    _: e: !(lib.hasPrefix "/" e.secretFile) || lib.hasPrefix builtins.storeDir e.secretFile
  ) w.reverseProxies;
in
{
  options.services.tfgateway = {
    workloads = {
      subdomains = kind "Names in a managed (or delegated) domain: A/AAAA records (`[[subdomain]]`)." {
        domain = domainOption "blog.gw.example.com" "The full name.";
        addresses = mkOption {
          type = types.nonEmptyListOf types.str;
          example = [
            "203.0.113.7"
            "2001:db8::7"
          ];
          description = "IPv4 and IPv6 addresses the name resolves to.";
        };
      };

      delegations = kind "Domains whose NS records their owner points at this gateway (`[[delegation]]`)." {
        domain = domainOption "acme.org" "The delegated domain.";
      };

      proxies = kind "TCP proxies to a public backend, by TLS SNI (port 443) and HTTP Host (port 80) (`[[proxy]]`)." {
        domain = domainOption "shop.gw.example.com" "The name clients connect to.";
        address = mkOption {
          type = types.str;
          example = "203.0.113.8";
          description = "The backend's address.";
        };
        port = mkOption {
          type = types.port;
          default = 80;
          description = "The backend's plain HTTP port.";
        };
        portTls = mkOption {
          type = types.port;
          default = 443;
          description = "The backend's TLS port.";
        };
        inherit terminateTls proxyProtocol;
      };

      reverseProxies = kind "Names served through a tunnel the user's client (`tftunnel`, `trc`) opens to the router's clients port (`[[reverse_proxy]]`)." {
        domain = domainOption "home.gw.example.com" "The name clients connect to.";
        secretFile = mkOption {
          type = types.str;
          example = "/var/lib/secrets/tfgateway/home-tunnel";
          description = ''
            Absolute path, outside the Nix store, of the file holding the tunnel's secret (the
            client's `--secret`). Handed to the agent as the systemd credential `<name>-tunnel`
            (it may stay readable by root only); the generated file names only
            {file}`/run/credentials/tfgateway.service/<name>-tunnel`. systemd hands credentials
            over when the agent starts: adding or removing a reverse proxy, or changing its
            secret, restarts the agent (the data plane keeps serving); every other change of
            the workloads reloads it.
          '';
        };
        inherit terminateTls proxyProtocol;
      };

      fourtosix = kind "WireGuard peers of the 4to6 gateway (`[[fourtosix]]`); needs {option}`services.tfgateway.endpoint`." {
        publicKey = mkOption {
          type = types.str;
          example = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
          description = "The peer's WireGuard public key (base64).";
        };
      };
    };

    workloadsFile = mkOption {
      type = types.nullOr types.package;
      readOnly = true;
      default = if cfg.explorer == null || document != { } then file else null;
      defaultText = literalExpression "the TOML file generated from services.tfgateway.workloads";
      description = ''
        The workloads file generated from {option}`services.tfgateway.workloads` (read only),
        linked to {file}`${path}` and given to the agent (`--workloads`); `null` when the
        gateway serves the explorer only.
      '';
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = badNames == [ ];
            message = "services.tfgateway.workloads: entry names must match [a-z0-9][a-z0-9-]{0,62} (they are stable ids in the file and in redis); invalid: ${
              lib.concatMapStringsSep ", " (x: "${x.option}.\"${x.n}\"") badNames
            }.";
          }
          {
            assertion = duplicates == { };
            message = "services.tfgateway.workloads: an entry name is unique across all kinds (docs/workloads.md); declared more than once: ${
              lib.concatStringsSep "; " (lib.mapAttrsToList (n: o: "\"${n}\" in ${lib.concatStringsSep " and " o}") duplicates)
            }.";
          }
          {
            assertion = secretsInStore == { };
            message = "services.tfgateway.workloads.reverseProxies.<name>.secretFile must be an absolute path outside the Nix store (the store is world-readable); not: ${lib.concatStringsSep ", " (lib.attrNames secretsInStore)}.";
          }
          {
            assertion = w.fourtosix == { } || cfg.endpoint != null;
            message = "services.tfgateway.workloads.fourtosix needs services.tfgateway.endpoint: 4to6 is off without it.";
          }
        ];
      }
      (lib.mkIf (cfg.workloadsFile != null) {
        environment.etc."tfgateway/workloads.toml".source = cfg.workloadsFile;

        systemd.services.tfgateway = {
          # A new file only reloads the agent (X-Reload-Triggers); it applies the difference.
          reloadTriggers = [ cfg.workloadsFile ];
          serviceConfig = {
            ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
            LoadCredential = lib.mapAttrsToList (name: e: "${credential name}:${e.secretFile}") w.reverseProxies;
          };
        };
      })
    ]
  );
}
