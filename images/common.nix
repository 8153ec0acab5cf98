# What every gateway host of this repository shares: SSH with keys only and flakes (hosts are
# updated with nixos-rebuild switch --flake). The gateway itself is NOT enabled here: an image
# built from this boots serving nothing and registering nowhere, until its operator deploys
# their own settings (images/example-gateway.nix, docs/operators.md "First boot").
{ pkgs, ... }:

{
  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };

  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];

  environment.systemPackages = [
    pkgs.dnsutils
    pkgs.wireguard-tools
  ];

  time.timeZone = "UTC";
  # The release the hosts were first installed with; keep it when updating nixpkgs.
  system.stateVersion = "26.05";
}
