# The NixOS options that services.tfgateway and images/common.nix set, declared with the types
# nixpkgs 26.05 gives them, for the offline evaluation (offline-eval.nix): with these a
# misspelt option path ("does not exist") or a wrong type ("is not of type") fails there as it
# would in a real NixOS evaluation. Written from the nixpkgs sources (file per block), not
# copied; only what the project's modules set is declared. An option a module starts to set
# must be added here, or the offline evaluation fails on it: that is the point.
{ lib, ... }:

let
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  list = type: opt (types.listOf type) [ ];

  # nixos/lib/systemd-unit-options.nix: unitOption concatenates list definitions (so two
  # modules can each add a LoadCredential) and wants all other definitions equal.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (def: lib.isList def.value) defs' then
        lib.concatMap (def: lib.toList def.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };
  # nixos/lib/systemd-unit-options.nix (serviceOptions, unitOptions, commonUnitOptions).
  service = types.submodule {
    options = {
      enable = opt types.bool true;
      description = opt types.str "";
      wantedBy = list types.str;
      requiredBy = list types.str;
      wants = list types.str;
      requires = list types.str;
      after = list types.str;
      before = list types.str;
      restartTriggers = list types.unspecified;
      reloadTriggers = list types.unspecified;
      restartIfChanged = opt types.bool true;
      reloadIfChanged = opt types.bool false;
      stopIfChanged = opt types.bool true;
      environment = opt (types.attrsOf (
        types.nullOr (
          types.oneOf [
            types.str
            types.path
            types.package
          ]
        )
      )) { };
      path = list (types.either types.package types.str);
      serviceConfig = opt (types.attrsOf unitOption) { };
      unitConfig = opt (types.attrsOf unitOption) { };
      script = opt types.lines "";
      preStart = opt types.lines "";
    };
  };

  # nixos/modules/services/networking/nftables.nix: tables.<name>.
  nftTable = types.submodule (
    { name, ... }:
    {
      options = {
        enable = opt types.bool true;
        name = opt types.str name;
        family = mkOption {
          type = types.enum [
            "ip"
            "ip6"
            "inet"
            "arp"
            "bridge"
            "netdev"
          ];
        };
        content = opt types.lines "";
      };
    }
  );

  # nixos/modules/services/databases/redis.nix: servers.<name> (the options the module sets,
  # and those the rendered settings read).
  redisServer = types.submodule {
    options = {
      enable = opt types.bool false;
      port = opt types.port 0;
      bind = opt (types.nullOr types.str) "127.0.0.1";
      appendOnly = opt types.bool false;
      appendFsync = opt types.str "everysec";
      save = opt (types.listOf (types.listOf types.int)) [
        [
          900
          1
        ]
        [
          300
          10
        ]
        [
          60
          10000
        ]
      ];
      requirePass = opt (types.nullOr types.str) null;
      requirePassFile = opt (types.nullOr types.path) null;
      settings = opt (types.attrsOf (
        types.oneOf [
          types.bool
          types.int
          types.str
          (types.listOf types.str)
        ]
      )) { };
    };
  };

  # pkgs.formats.ini { listsAsDuplicateKeys = true; }.type, as resolved.nix uses it.
  iniAtom = types.nullOr (
    types.oneOf [
      types.bool
      types.int
      types.float
      types.str
    ]
  );
  iniSections = types.attrsOf (types.attrsOf (types.either iniAtom (types.listOf iniAtom)));
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = list types.unspecified;
    warnings = list types.str;

    boot = {
      # nixos/modules/system/boot/kernel.nix
      kernelModules = list types.str;
      # nixos/modules/config/sysctl.nix (a freeform submodule of sysctl values)
      kernel.sysctl = opt (types.attrsOf (
        types.nullOr (
          types.oneOf [
            types.bool
            types.str
            types.int
          ]
        )
      )) { };
    };

    environment = {
      # nixos/modules/config/system-path.nix
      systemPackages = list types.package;
      # nixos/modules/system/etc/etc.nix: environment.etc.<name>
      etc = opt (types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              enable = opt types.bool true;
              target = opt types.str name;
              text = opt (types.nullOr types.lines) null;
              source = mkOption { type = types.path; };
              mode = opt types.str "symlink";
              user = opt types.str "+0";
              group = opt types.str "+0";
            };
          }
        )
      )) { };
    };

    networking = {
      # nixos/modules/tasks/network-interfaces.nix
      enableIPv6 = opt types.bool true;
      # nixos/modules/services/networking/firewall.nix
      firewall = {
        allowedTCPPorts = list types.port;
        allowedUDPPorts = list types.port;
        extraForwardRules = opt types.lines "";
        extraInputRules = opt types.lines "";
      };
      # nixos/modules/services/networking/nftables.nix
      nftables = {
        enable = opt types.bool false;
        tables = opt (types.attrsOf nftTable) { };
      };
      # nixos/modules/services/networking/dhcpcd.nix
      dhcpcd.denyInterfaces = list types.str;
    };

    services = {
      redis = {
        # mkPackageOption pkgs "redis" { }
        package = opt types.package {
          type = "derivation";
          name = "redis";
          outPath = "/nix/store/00000000000000000000000000000000-redis";
        };
        servers = opt (types.attrsOf redisServer) { };
      };
      # nixos/modules/system/boot/resolved.nix
      resolved.settings = opt (types.submodule { freeformType = iniSections; }) { };
      # nixos/modules/services/networking/ssh/sshd.nix (images/common.nix)
      openssh = {
        enable = opt types.bool false;
        settings = opt (types.submodule {
          freeformType = iniSections;
          options = {
            PasswordAuthentication = opt (types.nullOr types.bool) true;
            PermitRootLogin = opt (types.enum [
              "yes"
              "without-password"
              "prohibit-password"
              "forced-commands-only"
              "no"
            ]) "prohibit-password";
          };
        }) { };
      };
    };

    # nixos/modules/system/boot/systemd.nix
    systemd.services = opt (types.attrsOf service) { };

    # nixos/modules/config/nix.nix (images/common.nix)
    nix.settings = opt (types.submodule {
      freeformType = types.attrsOf types.anything;
      options.experimental-features = list types.str;
    }) { };
    # nixos/modules/config/locale.nix
    time.timeZone = opt (types.nullOr types.str) null;
    # nixos/modules/misc/version.nix
    system.stateVersion = opt types.str "26.05";
  };
}
