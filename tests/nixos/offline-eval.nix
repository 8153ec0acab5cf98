# Evaluates services.tfgateway with the real module system of nixpkgs' lib, but without
# nixpkgs itself: every NixOS option the module sets is declared with the type nixpkgs 26.05
# gives it (nixos-options.nix), so a misspelt option path or a wrong type fails here as in a
# real evaluation; the few packages it uses are fake derivations. Checks every case of
# assertion-cases.nix and returns what the module renders for the reference gateway
# (rendered/gateway.nix: kept in rendered/ and compared by scripts/eval-nix-offline.sh), what
# an image boots with (images/common.nix: nothing served), and the VM test's script for a
# linter. `nix flake check` does the real thing with nixpkgs.
{
  lib,
  # Extra modules (the typo checks of scripts/eval-nix-offline.sh add one).
  extraModules ? [ ],
  # The module under test (the typo checks pass a copy with a deliberate mistake).
  module ? ../../nixos-modules,
}:

let
  # The real packages' main programs, so rendered command lines read as on a real host.
  mainPrograms = {
    agent = "tfgateway";
    coredns = "coredns-tfgw";
    router = "tfrouter";
  };
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = mainPrograms.${name} or name;
  };
  pkgs = {
    callPackage = path: _: fakePackage (lib.removeSuffix ".nix" (baseNameOf (toString path)));
    formats.toml = _: {
      type = lib.types.attrsOf lib.types.anything;
      generate = name: value: fakePackage name // { inherit value; };
    };
    writeText = name: text: fakePackage name // { inherit text; };
    writeShellApplication = args: fakePackage args.name;
    coreutils = fakePackage "coreutils";
    gnugrep = fakePackage "gnugrep";
    psmisc = fakePackage "psmisc";
    dnsutils = fakePackage "dnsutils";
    wireguard-tools = fakePackage "wireguard-tools";
  };
  # nixos/lib/utils.nix's escaping, as far as these modules need it.
  utils = rec {
    escapeSystemdExecArg = arg: lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON (toString arg));
    escapeSystemdExecArgs = lib.concatMapStringsSep " " escapeSystemdExecArg;
  };

  evalHost =
    modules:
    (lib.evalModules {
      specialArgs = { inherit pkgs utils; };
      modules = [ ./nixos-options.nix ] ++ extraModules ++ modules;
    }).config;
  evaluate =
    settings:
    evalHost [
      module
      settings
      {
        services.tfgateway = {
          enable = true;
          farm = lib.mkDefault 1;
        };
      }
    ];
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
    ++ lib.concatLists (
      lib.mapAttrsToList (
        name: config:
        let
          failed = failedAssertions config;
        in
        lib.optional (failed != [ ]) "${name} failed assertions: ${builtins.toJSON failed}"
      ) valid
    );

  valid = {
    "assertion-cases.nix valid" = evaluate cases.valid;
    "rendered/gateway.nix" = reference;
    "images/example-gateway.nix" = evaluate ../../images/example-gateway.nix;
    "rendered/standalone.nix" = standalone;
  };
  reference = evaluate ./rendered/gateway.nix;
  standalone = evaluate ./rendered/standalone.nix;
  # The reference with 4to6 on: the nftables tables the kernel test loads.
  reference4to6 = evaluate {
    imports = [ ./rendered/gateway.nix ];
    services.tfgateway.endpoint = "203.0.113.10:51820";
  };
  units = reference.systemd.services;

  # What a machine booted from the image runs: the module is there, nothing enabled.
  image = evalHost [
    module
    ../../images/common.nix
  ];
in
if problems != [ ] then
  throw "assertion cases:\n${lib.concatStringsSep "\n" problems}"
else
  {
    assertionCases = lib.length (lib.attrNames cases.invalid);

    # Kept in tests/nixos/rendered/ (scripts/eval-nix-offline.sh --update writes them).
    rendered = import ./rendering.nix { inherit lib; } {
      inherit reference standalone;
      with4to6 = reference4to6;
      routerSettings = reference.services.tfgateway.router.settings;
      workloadsSettings = standalone.services.tfgateway.workloadsFile.value;
    };

    # For a person to read: the units as the module writes them.
    units = lib.mapAttrs (_: u: {
      inherit (u)
        after
        requires
        wants
        serviceConfig
        ;
    }) units;
    firewall = reference.networking.firewall;

    firstBoot = {
      tfgateway = image.services.tfgateway.enable;
      units = lib.attrNames image.systemd.services;
      inherit (image.networking.firewall) allowedTCPPorts allowedUDPPorts;
      redis = lib.attrNames image.services.redis.servers;
    };

    # The VM test's Python, rendered with made-up node addresses, for a linter to read.
    vmTestScript =
      let
        node = address: {
          networking.primaryIPAddress = address;
          networking.primaryIPv6Address = "2001:db8:1::99";
          services.tfgateway.wireguardInterface = "wg-tfgateway";
          system.build.toplevel = "/nix/store/00000000000000000000000000000000-nixos-system";
        };
      in
      (import ./gateway.nix { inherit lib; }).testScript {
        nodes = {
          gateway = node "192.168.1.4";
          backend = node "192.168.1.1";
          natted = node "192.168.2.5";
          standalone = node "192.168.1.6";
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
