# Service settings shared by the gateway's daemons: the sandbox (modelled on nixpkgs' rathole
# and redis modules) and the restart policy. Each unit adds its capabilities and address families.
{
  DynamicUser = true;
  NoNewPrivileges = true;
  LockPersonality = true;
  PrivateDevices = true;
  PrivateMounts = true;
  PrivateTmp = true;
  ProtectClock = true;
  ProtectControlGroups = true;
  ProtectHome = true;
  ProtectHostname = true;
  ProtectKernelLogs = true;
  ProtectKernelModules = true;
  ProtectKernelTunables = true;
  ProtectProc = "invisible";
  ProtectSystem = "strict";
  RemoveIPC = true;
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  SystemCallArchitectures = "native";
  SystemCallFilter = [
    "@system-service"
    "~@privileged"
  ];
  UMask = "0077";
  Restart = "on-failure";
  RestartSec = 5;
}
