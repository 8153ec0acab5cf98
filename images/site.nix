# The gateway settings of this repository's own hosts (nixosConfigurations.digitalocean and
# .qemu, and the images built from them). Edit these for your grid, or override them from your
# own flake (see docs/nixos.md): they are defaults, so any definition there replaces them.
# Nothing secret belongs here: the identity seed is created on the machine, or given with
# services.tfgateway.seedFile.
{ lib, ... }:

{
  services.tfgateway = {
    explorer = lib.mkDefault "https://explorer.grid.tf/api/v1";
    farm = lib.mkDefault 1;
    domains = lib.mkDefault [ "tfgw-example.gateway.tf" ];
    nameservers = lib.mkDefault [ "ns-example.gateway.tf" ];
    # Public IPv4 of the droplet and the WireGuard port: turns on 4to6. Per machine, so it is
    # unset in the shared image.
    # endpoint = "203.0.113.10:3443";
  };

  # Keys for root's SSH login on the qcow2 image (DigitalOcean droplets get theirs from the
  # droplet's metadata).
  # users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA... you@example" ];
}
