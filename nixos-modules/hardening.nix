# systemd service settings shared by the gateway's daemons: the sandbox (modelled on nixpkgs'
# rathole and redis modules) and the restart policy.
rec {
  # Every daemon. Units add their capabilities and address families.
  common = {
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
  };

  # The Go data plane (CoreDNS, router): public ports below 1024, many connections, no JIT.
  dataPlane = common // {
    AmbientCapabilities = "CAP_NET_BIND_SERVICE";
    CapabilityBoundingSet = "CAP_NET_BIND_SERVICE";
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
    MemoryDenyWriteExecute = true;
    ProcSubset = "pid";
    LimitNOFILE = 1048576;
  };
}
