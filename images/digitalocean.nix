# A gateway droplet. Build the image with
#   nix build .#digitalocean-image
# (nixpkgs' `digital-ocean` image variant: a gzip-compressed qcow2), upload it as a custom image,
# then update droplets with nixos-rebuild switch --flake .#digitalocean --target-host root@<ip>.
{ modulesPath, pkgs, ... }:

{
  # Kept by every later switch: without it a rebuild would drop the droplet's file systems,
  # boot loader and metadata services.
  imports = [
    (modulesPath + "/virtualisation/digital-ocean-config.nix")
    ./common.nix
  ];

  # The flake is the only source of the configuration: never rebuild from droplet user data.
  virtualisation.digitalOcean.rebuildFromUserData = false;

  # The image's /etc/nixos/configuration.nix: a plain `nixos-rebuild switch` (without --flake)
  # would otherwise switch to a generic droplet without the gateway.
  image.modules.digital-ocean.virtualisation.digitalOceanImage.configFile = pkgs.writeText "configuration.nix" ''
    throw "This droplet is a tfgateway appliance managed by its flake: nixos-rebuild switch --flake <checkout>#digitalocean"
  '';

  # nixpkgs' droplet module configures IPv4 (DHCP) but not the droplet's public IPv6, which
  # 4to6 needs as its uplink: take it from the metadata the droplet module already fetched.
  systemd.services.digitalocean-ipv6 = {
    description = "Configure the droplet's public IPv6 from DigitalOcean metadata";
    wantedBy = [ "multi-user.target" ];
    wants = [ "digitalocean-metadata.service" ];
    after = [ "digitalocean-metadata.service" ];
    before = [ "tfgateway.service" ];
    path = [
      pkgs.iproute2
      pkgs.jq
    ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
    };
    script = ''
      set -eu
      meta=/run/do-metadata/v1.json
      v6=$(jq -r '.interfaces.public[0].ipv6 // empty | "\(.ip_address)/\(.cidr) \(.gateway)"' "$meta")
      if [ -z "$v6" ]; then
        echo "droplet has no public IPv6 (enable it in the DigitalOcean panel)"
        exit 0
      fi
      mac=$(jq -r '.interfaces.public[0].mac' "$meta")
      dev=$(ip -o link | awk -v mac="$mac" '$0 ~ mac { sub(":", "", $2); print $2; exit }')
      [ -n "$dev" ] || { echo "no interface with MAC $mac"; exit 1; }
      read -r addr gateway <<<"$v6"
      ip -6 address replace "$addr" dev "$dev"
      ip -6 route replace default via "$gateway" dev "$dev"
      echo "$dev: $addr via $gateway"
    '';
  };
}
