# The reference standalone gateway (no explorer: every workload declared in
# services.tfgateway.workloads), whose rendering is kept in this folder as standalone-*.
# Same addresses as gateway.nix (the test harness's, tests/support/gateway.py);
# scripts/eval-nix-offline.sh and the flake's `rendered-files` check fail when the module
# renders something else.
{
  services.tfgateway = {
    enable = true;
    openFirewall = true;
    explorer = null;
    domains = [ "gw.example" ];
    nameservers = [ "ns1.gw.example" ];
    gatewayAddresses = [
      "10.71.1.1"
      "10.71.2.1"
      "10.71.3.1"
    ];
    endpoint = "10.71.1.1:51820";
    # The harness's backends live in private ranges.
    allowPrivateBackends = true;
    nameProof.resolvers = [ "192.0.2.54" ];

    workloads = {
      subdomains = {
        web-dns = {
          domain = "web.gw.example";
          addresses = [
            "10.71.1.1"
            "2001:db8::80"
          ];
        };
        home-dns = {
          domain = "home.gw.example";
          addresses = [ "10.71.1.1" ];
        };
        shop-dns = {
          domain = "shop.gw.example";
          addresses = [ "10.71.1.1" ];
        };
        demo-www = {
          domain = "www.demo.example";
          addresses = [ "198.51.100.80" ];
        };
      };
      delegations.demo.domain = "demo.example";
      proxies = {
        web = {
          domain = "web.gw.example";
          address = "10.71.2.2";
          port = 8080;
          portTls = 8443;
        };
        shop = {
          domain = "shop.gw.example";
          address = "10.71.2.2";
          port = 8080;
          portTls = 8443;
          terminateTls = true;
        };
      };
      reverseProxies.home = {
        domain = "home.gw.example";
        secretFile = "/var/lib/secrets/tfgateway/home-tunnel";
      };
      fourtosix.laptop.publicKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    };
  };
}
