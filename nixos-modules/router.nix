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
      };
    };
  };
}
