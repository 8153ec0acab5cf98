# Evaluates services.tfgateway with the real module system of nixpkgs' lib, but without
# nixpkgs itself: the NixOS options the module sets are declared as free-form stubs and the
# few packages it uses are fake derivations. Checks every case of assertion-cases.nix and
# returns what the module renders (unit command lines, Corefile, router.toml, host settings)
# for a person to read, and the VM test's script for a linter. Run by scripts/eval-nix-offline.sh; `nix flake check` does the real thing.
{ lib }:

let
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };
  pkgs = {
    callPackage = path: _: fakePackage (lib.removeSuffix ".nix" (baseNameOf (toString path)));
    formats.toml = _: {
      type = lib.types.attrsOf lib.types.anything;
      generate = name: value: fakePackage name // { inherit value; };
    };
    writeText = name: text: fakePackage name // { inherit text; };
    coreutils = fakePackage "coreutils";
    wireguard-tools = fakePackage "wireguard-tools";
  };
  # nixos/lib/utils.nix's escaping, as far as these tests need it.
  utils = rec {
    escapeSystemdExecArg = arg: lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON (toString arg));
    escapeSystemdExecArgs = lib.concatMapStringsSep " " escapeSystemdExecArg;
  };
  stub = lib.mkOption {
    type = lib.types.anything;
    default = { };
  };

  evaluate =
    settings:
    (lib.evalModules {
      specialArgs = { inherit pkgs utils; };
      modules = [
        ../../nixos-modules
        settings
        {
          options = {
            assertions = lib.mkOption {
              type = lib.types.listOf lib.types.unspecified;
              default = [ ];
            };
            boot = stub;
            environment = stub;
            networking = stub;
            services.redis = stub;
            services.resolved = stub;
            systemd = stub;
          };
          # NixOS defaults the assertions read.
          config.networking = {
            nftables.enable = lib.mkOverride 1500 false;
            enableIPv6 = lib.mkOverride 1500 true;
          };
          config.services.tfgateway = {
            enable = true;
            farm = 1;
          };
        }
      ];
    }).config;
  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  cases = import ./assertion-cases.nix { storeDir = "/nix/store"; };
  problems =
    lib.concatLists (
      lib.mapAttrsToList (
        name: case:
        let
          failed = failedAssertions (evaluate case.settings);
        in
        lib.optional (!lib.any (lib.hasInfix case.expect) failed) "${name}: expected \"${case.expect}\", failed: ${builtins.toJSON failed}"
      ) cases.invalid
    )
    ++ (
      let
        failed = failedAssertions valid;
      in
      lib.optional (failed != [ ]) "valid configuration failed: ${builtins.toJSON failed}"
    );

  valid = evaluate cases.valid;
  units = valid.systemd.services;
in
if problems != [ ] then
  throw "assertion cases:\n${lib.concatStringsSep "\n" problems}"
else
  {
    assertionCases = lib.length (lib.attrNames cases.invalid);
    agent = units.tfgateway.serviceConfig;
    agentOrdering = {
      inherit (units.tfgateway) after requires wants;
    };
    dns = units.tfgateway-dns.serviceConfig;
    corefile = (lib.head units.tfgateway-dns.restartTriggers).text;
    router = units.tfgateway-router.serviceConfig;
    routerToml = valid.services.tfgateway.router.settings;
    inherit (valid) boot environment networking;
    redis = valid.services.redis;
    resolved = valid.services.resolved;
    # The VM test's Python, rendered with made-up node addresses, for a linter to read.
    vmTestScript =
      let
        node = address: {
          networking.primaryIPAddress = address;
          networking.primaryIPv6Address = "2001:db8:1::99";
          services.tfgateway.wireguardInterface = "wg-tfgateway";
        };
      in
      (import ./gateway.nix { inherit lib; }).testScript {
        nodes = {
          gateway = node "192.168.1.4";
          backend = node "192.168.1.1";
          natted = node "192.168.2.5";
        };
      };
    # Without 4to6 the agent keeps no capability and the host no forwarding.
    without4to6 =
      let
        c = evaluate { };
      in
      {
        inherit (c.systemd.services.tfgateway.serviceConfig) AmbientCapabilities CapabilityBoundingSet;
        inherit (c) boot;
      };
  }
