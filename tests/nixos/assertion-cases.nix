# Contradictory settings of services.tfgateway and a piece of the assertion message each must
# produce. Used by assertions.nix (nix flake check) and offline-eval.nix (no nixpkgs needed).
{ storeDir }:

{
  # A configuration that must fail no assertion.
  valid.services.tfgateway = {
    # Both sources: the explorer's users and the operator's own workloads.
    workloads = {
      subdomains.blog = {
        domain = "blog.gw.example.com";
        addresses = [ "203.0.113.7" ];
      };
      reverseProxies.home = {
        domain = "home.gw.example.com";
        secretFile = "/var/lib/secrets/tfgateway/home-tunnel";
        terminateTls = true;
      };
      fourtosix.laptop.publicKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    };
    domains = [ "gw.example.com" ];
    nameservers = [ "ns1.gw.example.com" ];
    endpoint = "203.0.113.10:3443";
    tls = {
      terminate = [ "gw.example.com" ];
      redirect = true;
      acme.email = "hostmaster@gw.example.com";
      acme.wildcards = [ "gw.example.com" ];
      certificates."www.example.org" = {
        certFile = "/var/lib/secrets/www.pem";
        keyFile = "/var/lib/secrets/www.key";
      };
    };
  };

  # name = { settings; expect = a piece of the message that must be among the failures; }
  invalid = {
    wildcard-of-unmanaged-domain = {
      settings.services.tfgateway = {
        domains = [ "gw.example.com" ];
        nameservers = [ "ns1.gw.example.com" ];
        tls.acme.wildcards = [ "other.example.com" ];
      };
      expect = "tls.acme.wildcards must be managed domains";
    };
    certificate-key-in-store = {
      settings.services.tfgateway.tls.certificates."a.example".certFile = "/var/lib/a.pem";
      settings.services.tfgateway.tls.certificates."a.example".keyFile = "${storeDir}/0000-a.key";
      expect = "keyFile must be absolute paths outside the Nix store";
    };
    seed-in-store = {
      settings.services.tfgateway.seedFile = "${storeDir}/0000-identity.seed";
      expect = "seedFile must be an absolute path outside the Nix store";
    };
    endpoint-without-port = {
      settings.services.tfgateway.endpoint = "gw.example.com";
      expect = "endpoint must be host:port";
    };
    endpoint-without-interface = {
      settings.services.tfgateway = {
        endpoint = "203.0.113.10:3443";
        wireguardInterface = "";
      };
      expect = "needs services.tfgateway.wireguardInterface to be a Linux interface name";
    };
    interface-name-too-long = {
      settings.services.tfgateway = {
        endpoint = "203.0.113.10:3443";
        wireguardInterface = "wg-tfgateway-too-long";
      };
      expect = "needs services.tfgateway.wireguardInterface to be a Linux interface name";
    };
    wireguard-port-on-dns-port = {
      settings.services.tfgateway.endpoint = "203.0.113.10:53";
      expect = "are both UDP 53";
    };
    clients-port-on-tls-port = {
      settings.services.tfgateway.router.settings.server.clientsport = 443;
      expect = "TCP ports clash";
    };
    dns-port-on-redis = {
      settings.services.tfgateway.dns.port = 6379;
      expect = "TCP ports clash";
    };
    router-reads-other-redis = {
      settings.services.tfgateway.router.settings.server.dbbackend.port = 6380;
      expect = "dbbackend must be the gateway's redis";
    };
    fourtosix-without-nftables = {
      settings = {
        services.tfgateway.endpoint = "203.0.113.10:3443";
        networking.nftables.enable = false;
      };
      expect = "masquerades IPv6 with nftables";
    };
    open-resolver = {
      settings.services.tfgateway.dns.upstreams = [ "192.0.2.53" ];
      expect = "dns.upstreams makes port 53 a recursive resolver";
    };
    redis-password-in-store = {
      settings.services.tfgateway.redis.passwordFile = "${storeDir}/0000-redis-password";
      expect = "redis.passwordFile must be an absolute path outside the Nix store";
    };
    router-password-in-store = {
      settings.services.tfgateway.router.settings.server.dbbackend.password = "hunter2";
      expect = "would put the redis password in the world-readable Nix store";
    };
    metrics-on-redis-port = {
      settings.services.tfgateway.metricsListen = "127.0.0.1:6379";
      expect = "TCP ports clash";
    };
    explorer-without-farm = {
      settings.services.tfgateway.farm = null;
      expect = "farm is required with an explorer";
    };
    workload-name-invalid = {
      settings.services.tfgateway.workloads.delegations."Acme_Org".domain = "acme.org";
      expect = "entry names must match";
    };
    workload-name-twice = {
      settings.services.tfgateway.workloads = {
        subdomains.shop = {
          domain = "shop.gw.example.com";
          addresses = [ "203.0.113.8" ];
        };
        proxies.shop = {
          domain = "shop.gw.example.com";
          address = "203.0.113.8";
        };
      };
      expect = "\"shop\" in proxies and subdomains";
    };
    tunnel-secret-in-store = {
      settings.services.tfgateway.workloads.reverseProxies.home = {
        domain = "home.gw.example.com";
        secretFile = "${storeDir}/0000-home-tunnel";
      };
      expect = "(the store is world-readable); not: home.";
    };
    fourtosix-peer-without-endpoint = {
      settings.services.tfgateway.workloads.fourtosix.laptop.publicKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
      expect = "workloads.fourtosix needs services.tfgateway.endpoint";
    };
    domains-without-nameservers = {
      settings.services.tfgateway.domains = [ "gw.example.com" ];
      expect = "domains needs services.tfgateway.nameservers";
    };
  };
}
