# What every gateway host of this repository shares: the gateway itself with its public ports
# open, SSH with keys only, and flakes (hosts are updated with nixos-rebuild switch --flake).
{ pkgs, ... }:

{
  imports = [ ./site.nix ];

  services.tfgateway = {
    enable = true;
    openFirewall = true;
  };

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
