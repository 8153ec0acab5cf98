# The gateway's TCP router: HTTP Host and TLS SNI routing to users' backends, and the
# listener for their tunnel clients, configured by a trs-compatible router.toml.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.services.tfgateway;
  tls = cfg.tls;
  stateDir = "/var/lib/tfgateway-router";
  credentials = "/run/credentials/tfgateway-router.service";
  certNames = lib.attrNames tls.certificates;
  # The [tls] table: certificates for routes that ask for termination (dataplane/router README).
  tlsTable = {
    storage = "${stateDir}/certificates";
    dns_resolver = "127.0.0.1:${toString cfg.dns.port}";
    certificates = lib.imap0 (i: _: {
      cert = "${credentials}/cert-${toString i}.pem";
      key = "${credentials}/key-${toString i}.pem";
    }) certNames;
  }
  // lib.optionalAttrs tls.acme.enable (
    {
      acme_ca =
        if tls.acme.staging then "https://acme-staging-v02.api.letsencrypt.org/directory" else tls.acme.directory;
      inherit (tls.acme) wildcards challenges;
    }
    // lib.optionalAttrs (tls.acme.email != null) { acme_email = tls.acme.email; }
  );
  declared = cfg.workloads;
  terminates =
    tls.terminate != [ ]
    || tls.certificates != { }
    || lib.any (e: e.terminateTls) (lib.attrValues declared.proxies ++ lib.attrValues declared.reverseProxies);
  routerToml = (pkgs.formats.toml { }).generate "router.toml" cfg.router.settings;
  args = [
    (lib.getExe cfg.router.package)
    "--config"
    routerToml
  ]
  ++ lib.optionals (cfg.router.metricsListen != null) [
    "--metrics"
    cfg.router.metricsListen
  ];
in
{
  config = lib.mkIf cfg.enable {
    # Defaults: router.settings.tls.<key> set by the operator wins.
    services.tfgateway.router.settings.tls = lib.mkIf terminates (lib.mapAttrs (_: lib.mkDefault) tlsTable);
    # Tunnel protocols (dataplane/router README, "Tunnels"): the key of authenticated tunnels
    # is created in the state directory at the first start; its pin is in the router's log,
    # in `tfgateway status` and printed by `tfrouter -config ... -tunnel-pin`.
    services.tfgateway.router.settings.tunnels = {
      legacy = cfg.router.legacyTunnels;
      key = lib.mkDefault "\${STATE_DIRECTORY}/tunnel-key.pem";
    };

    systemd.services.tfgateway-router = {
      description = "tfgateway TCP router (tcprouter-compatible)";
      wantedBy = [ "multi-user.target" ];
      # Keeps routing from memory while redis restarts, so only ordered after it.
      wants = [ "redis-tfgateway.service" ];
      after = [
        "network.target"
        "redis-tfgateway.service"
      ];

      serviceConfig = (import ./hardening.nix).dataPlane // {
        ExecStart = utils.escapeSystemdExecArgs args;
        # Certificates and the ACME account survive restarts here.
        StateDirectory = "tfgateway-router";
        StateDirectoryMode = "0700";
        LoadCredential = lib.concatLists (
          lib.imap0 (i: name: [
            "cert-${toString i}.pem:${tls.certificates.${name}.certFile}"
            "key-${toString i}.pem:${tls.certificates.${name}.keyFile}"
          ]) certNames
        );
      };
    };
  };
}
