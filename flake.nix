{
  description = "tfgateway: a ThreeFold Grid gateway node as a NixOS appliance";

  # nixpkgs only: every other dependency comes from it or from the Go module proxy (vendorHash).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      inherit (nixpkgs) lib;
      tfgwPkgs = import ./nix/packages { inherit (pkgs) callPackage; };

      gatewayHost =
        hostModule:
        lib.nixosSystem {
          inherit system;
          modules = [
            self.nixosModules.default
            hostModule
          ];
        };
    in
    {
      packages.${system} = tfgwPkgs // {
        default = tfgwPkgs.agent;
        digitalocean-image = self.nixosConfigurations.digitalocean.config.system.build.images.digital-ocean;
        qcow2-image = self.nixosConfigurations.qemu.config.system.build.images.qemu;
      };

      nixosModules = {
        # An attribute set, as `nix flake check` wants (nixos-modules/default.nix imports the parts).
        tfgateway = import ./nixos-modules;
        default = self.nixosModules.tfgateway;
      };

      nixosConfigurations = {
        digitalocean = gatewayHost ./images/digitalocean.nix;
        qemu = gatewayHost ./images/qcow2.nix;
      };

      checks.${system} = {
        # The whole gateway in VMs: explorer, gateway, backend, NATed trc node, client, 4to6.
        gateway = pkgs.testers.runNixOSTest {
          imports = [ ./tests/nixos/gateway.nix ];
          defaults.imports = [ self.nixosModules.default ];
        };
        # An image boots serving nothing until its operator deploys settings.
        first-boot = pkgs.testers.runNixOSTest {
          imports = [ ./tests/nixos/first-boot.nix ];
          defaults.imports = [ self.nixosModules.default ];
        };
        # What the module renders is what the end-to-end test runs (tests/nixos/rendered/).
        rendered-files = import ./tests/nixos/rendered-check.nix {
          inherit lib pkgs;
          module = self.nixosModules.default;
        };
        # Contradictory settings fail evaluation with the intended message.
        module-assertions = import ./tests/nixos/assertions.nix {
          inherit lib pkgs;
          module = self.nixosModules.default;
        };
        # The agent's and the dev explorer's packages run their unit tests in their check phase.
        inherit (self.packages.${system}) agent devexplorer coredns router trc;
        # Both hosts evaluate and build.
        host-digitalocean = self.nixosConfigurations.digitalocean.config.system.build.toplevel;
        host-qemu = self.nixosConfigurations.qemu.config.system.build.toplevel;
      };

      devShells.${system}.default = pkgs.mkShell {
        inputsFrom = [
          tfgwPkgs.agent
          tfgwPkgs.coredns
        ];
        packages = [
          pkgs.go_1_26 # the Go of the packages (buildGo126Module) and of the vendor hashes
          pkgs.redis
          pkgs.nixfmt-tree
          pkgs.deadnix
        ];
      };

      formatter.${system} = pkgs.nixfmt-tree;
    };
}
