# The settings that turn a machine booted from this repository's image into a gateway: copy
# this into your own flake, fill in your values and deploy it with
#   nixos-rebuild switch --flake .#gw --target-host root@<droplet>
# (docs/operators.md, "First boot"). Nothing here is used by the images themselves.
{
  services.tfgateway = {
    enable = true;
    openFirewall = true;
    # Your explorer (or, once available, the operator's own workloads file).
    explorer = "https://explorer.example.org/api/v1";
    farm = 1;
    domains = [ "gw1.example.org" ];
    nameservers = [ "ns1.gw1.example.org" ];
    # Public IPv4 of the droplet and the WireGuard port: turns on 4to6.
    endpoint = "203.0.113.10:3443";
    gatewayAddresses = [
      "203.0.113.10"
      "2001:db8::10"
    ];
    # An identity moved from an old gateway; leave out to have a new one created.
    # seedFile = "/var/lib/secrets/tfgateway/identity.seed";
  };
}
