# services.tfgateway: a ThreeFold Grid gateway node. The options live in options.nix; each
# other file declares one part of the appliance.
{
  imports = [
    ./options.nix
    ./redis.nix
    ./dns.nix
    ./router.nix
    ./agent.nix
    ./workloads.nix
    ./network.nix
  ];
}
