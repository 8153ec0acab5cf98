# The reference gateway whose rendering is kept in this folder (Corefile, router.toml,
# agent.cmdline, redis.json, fourtosix.nft). The end-to-end test tests/e2e/test_rendered.py
# runs redis, CoreDNS, the router and the agent from exactly those files in network
# namespaces, substituting only paths and addresses; scripts/eval-nix-offline.sh and the
# flake's `rendered-files` check fail when the module renders something else.
# Addresses are those of the test harness (tests/support/gateway.py).
{
  services.tfgateway = {
    enable = true;
    openFirewall = true;
    explorer = "http://explorer.test:8080/api/v1";
    farm = 1;
    domains = [ "gw.example" ];
    nameservers = [ "ns1.gw.example" ];
    gatewayAddresses = [
      "10.71.1.1"
      "10.71.2.1"
      "10.71.3.1"
    ];
    # The harness's backends live in private ranges.
    allowPrivateBackends = true;
    # Never ask a geoip service.
    location = "50.85,4.35";
    pollInterval = 1;
    # Recursion for one network only (the harness's NATed home): everyone else is refused.
    dns.upstreams = [ "192.0.2.53" ];
    dns.recursionAllowedFrom = [ "10.71.3.0/24" ];
    # Proofs of control are looked up here; the harness puts its world DNS in its place.
    nameProof.resolvers = [ "192.0.2.54" ];
  };
}
