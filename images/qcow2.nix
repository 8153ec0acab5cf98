# A gateway as a plain qcow2 VM (QEMU/KVM, Proxmox, OpenStack, ...), legacy BIOS boot with GRUB.
# Build the image with
#   nix build .#qcow2-image
# (nixpkgs' `qemu` image variant) and update a running VM with
#   nixos-rebuild switch --flake .#qemu --target-host root@<ip>
{ modulesPath, ... }:

{
  imports = [
    (modulesPath + "/profiles/qemu-guest.nix")
    ./common.nix
  ];

  # The layout the `qemu` image variant creates, so a switch on a VM booted from the image
  # keeps its root file system and boot loader.
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
    autoResize = true;
  };
  boot.growPartition = true;
  # Normal priority: replaces the image variant's mkDefault instead of adding a second entry.
  boot.loader.grub.devices = [ "/dev/vda" ];
}
