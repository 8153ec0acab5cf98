# The whole gateway in VMs (modelled on nixpkgs' rathole and wireguard tests). Run by
# `nix flake check` as checks.x86_64-linux.gateway; services.tfgateway comes from `defaults`.
#
#   vlan 1 ("internet"): explorer (development explorer), gateway, backend (web server on IPv4
#                        and IPv6), client (resolves through the gateway, IPv4 only) and router
#   vlan 2 (private):    natted, behind router's NAT, exposes its web page with trc
#
# The client also reaches the backend's IPv6 address through the gateway's 4to6 WireGuard
# tunnel: it has no IPv6 of its own, and the backend has no route back to the tunnel's
# fd00::/8 prefix, so an answer proves the gateway forwards and masquerades (NAT66).
#
# standalone (vlan 1) is a second gateway with no explorer, served entirely from
# services.tfgateway.workloads (issue 14): a name, a proxy to the backend, a delegated zone, a
# tunnel from natted and a 4to6 peer. Its `changed` specialisation adds an entry: switching to it
# must reload the agent (same process), not restart it.
{ lib, ... }:

let
  wgPort = 51820;
  # The standalone gateway's tunnel secret (`0:` is the operator's owner id) and 4to6 peer;
  # test values, written to a file outside the store at boot.
  standaloneSecret = "0:tfgateway-vm-test-tunnel-secret";
  standalonePeer = "hKKe2UioDjndsvvD4a89sMvDlNmLD718Mgu1VTJFazc=";
  # The page each web server serves; the test checks the right one arrives on each path.
  page = name: "tfgateway VM test: ${name}";
  webRoot =
    pkgs: name:
    pkgs.writeTextDir "index.html" ''
      ${page name}
    '';
  # A self-signed certificate for the TLS-SNI route (passthrough: the backend terminates TLS).
  cert =
    pkgs:
    pkgs.runCommand "web.gw.test-cert" { nativeBuildInputs = [ pkgs.openssl ]; } ''
      mkdir $out
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj /CN=web.gw.test -addext subjectAltName=DNS:web.gw.test \
        -keyout $out/key.pem -out $out/cert.pem
    '';
  ipOf = node: node.networking.primaryIPAddress;
in
{
  name = "tfgateway";

  defaults.documentation.enable = false;

  nodes = {
    explorer =
      { config, pkgs, ... }:
      let
        # A test double, never part of the appliance: built from the repository here.
        devexplorer = pkgs.callPackage ../../nix/packages/devexplorer.nix {
          tfgateway-agent = config.services.tfgateway.package;
        };
      in
      {
        virtualisation.vlans = [ 1 ];
        networking.firewall.allowedTCPPorts = [ 8080 ];
        systemd.services.devexplorer = {
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          serviceConfig = {
            ExecStart = "${lib.getExe devexplorer} --host 0.0.0.0 --port 8080";
            DynamicUser = true;
          };
        };
        environment.systemPackages = [
          pkgs.jq
          # The dev explorer's admin client as a library, for workloads.py.
          (pkgs.python3.withPackages (ps: [ (ps.toPythonModule devexplorer) ]))
        ];
        environment.etc."tfgw-test/workloads.py".source = ./workloads.py;
      };

    gateway =
      { config, pkgs, ... }:
      {
        virtualisation.vlans = [ 1 ];
        environment.systemPackages = [ pkgs.curl ];
        virtualisation.memorySize = 1536;
        services.tfgateway = {
          enable = true;
          openFirewall = true;
          explorer = "http://explorer:8080/api/v1";
          farm = 1;
          domains = [ "gw.test" ];
          nameservers = [ "ns1.gw.test" ];
          endpoint = "${config.networking.primaryIPAddress}:${toString wgPort}";
          # The test's backends live in private ranges.
          allowPrivateBackends = true;
          gatewayAddresses = [
            config.networking.primaryIPAddress
            config.networking.primaryIPv6Address
          ];
          # No internet in the test: no geoip lookup.
          location = "50.85,4.35";
          debug = true;
          logFormat = "json";
          pollInterval = 1;
        };
      };

    standalone =
      { config, nodes, ... }:
      let
        ip = config.networking.primaryIPAddress;
      in
      {
        virtualisation.vlans = [ 1 ];
        virtualisation.memorySize = 1536;
        # The tunnel secret, outside the store as an operator keeps it.
        systemd.services.tfgateway-test-secret = {
          wantedBy = [ "tfgateway.service" ];
          before = [ "tfgateway.service" ];
          serviceConfig.Type = "oneshot";
          script = ''
            install -d -m 0700 /var/lib/tfgw-test
            printf '%s' '${standaloneSecret}' > /var/lib/tfgw-test/home-tunnel
            chmod 0400 /var/lib/tfgw-test/home-tunnel
          '';
        };
        services.tfgateway = {
          enable = true;
          openFirewall = true;
          explorer = null;
          domains = [ "sa.test" ];
          nameservers = [ "ns1.sa.test" ];
          endpoint = "${ip}:${toString wgPort}";
          allowPrivateBackends = true;
          gatewayAddresses = [ ip ];
          nameProof.resolvers = [ ];
          workloads = {
            subdomains = {
              web-dns = {
                domain = "web.sa.test";
                addresses = [ ip ];
              };
              home-dns = {
                domain = "home.sa.test";
                addresses = [ ip ];
              };
            };
            proxies.web = {
              domain = "web.sa.test";
              address = ipOf nodes.backend;
              port = 80;
              portTls = 443;
            };
            delegations.zone.domain = "zone.test";
            reverseProxies.home = {
              domain = "home.sa.test";
              secretFile = "/var/lib/tfgw-test/home-tunnel";
            };
            fourtosix.laptop.publicKey = standalonePeer;
          };
        };
        # `nixos-rebuild switch` to a configuration with one more entry.
        specialisation.changed.configuration.services.tfgateway.workloads.subdomains.added = {
          domain = "added.sa.test";
          addresses = [ "198.51.100.7" ];
        };
      };

    backend =
      { pkgs, ... }:
      {
        virtualisation.vlans = [ 1 ];
        networking.firewall.allowedTCPPorts = [
          80
          443
        ];
        services.nginx = {
          enable = true;
          virtualHosts."web.gw.test" = {
            default = true;
            root = webRoot pkgs "backend";
            addSSL = true;
            sslCertificate = "${cert pkgs}/cert.pem";
            sslCertificateKey = "${cert pkgs}/key.pem";
          };
        };
      };

    client =
      { nodes, pkgs, ... }:
      {
        virtualisation.vlans = [ 1 ];
        # IPv4 only: its IPv6 traffic can only go through the 4to6 tunnel.
        networking.interfaces.eth1.ipv6.addresses = lib.mkForce [ ];
        # Resolve through the gateway's DNS.
        networking.nameservers = [ (ipOf nodes.gateway) ];
        boot.kernelModules = [ "wireguard" ];
        environment.systemPackages = [
          pkgs.curl
          pkgs.dnsutils
          pkgs.wireguard-tools
        ];
        environment.etc."tfgw-test/ca.pem".source = "${cert pkgs}/cert.pem";
      };

    router =
      { ... }:
      {
        virtualisation.vlans = [
          1
          2
        ];
        networking.nat = {
          enable = true;
          internalInterfaces = [ "eth2" ];
          externalInterface = "eth1";
        };
      };

    natted =
      { nodes, pkgs, ... }:
      let
        tfgwPkgs = import ../../nix/packages { inherit (pkgs) callPackage; };
      in
      {
        virtualisation.vlans = [ 2 ];
        networking.defaultGateway = (lib.head nodes.router.networking.interfaces.eth2.ipv4.addresses).address;
        services.nginx = {
          enable = true;
          virtualHosts.localhost = {
            default = true;
            listen = [
              {
                addr = "127.0.0.1";
                port = 8000;
              }
            ];
            root = webRoot pkgs "natted";
          };
        };
        environment.systemPackages = [
          pkgs.curl
          tfgwPkgs.trc
        ];
      };
  };

  testScript =
    { nodes, ... }:
    let
      gatewayIp = ipOf nodes.gateway;
      backendV6 = nodes.backend.networking.primaryIPv6Address;
      standaloneIp = ipOf nodes.standalone;
      changed = "${nodes.standalone.system.build.toplevel}/specialisation/changed";
    in
    ''
      import json

      start_all()

      with subtest("the gateway's services start, hardened"):
          gateway.wait_for_unit("redis-tfgateway.service")
          gateway.wait_for_unit("tfgateway-dns.service")
          gateway.wait_for_unit("tfgateway-router.service")
          gateway.wait_for_unit("tfgateway.service")
          for port in (53, 80, 443, 18000):
              gateway.wait_for_open_port(port)
          # redis stays on loopback; the agent is not root and may only administer the network
          gateway.succeed("ss -Hltn 'sport = :6379' | grep -q '127.0.0.1:6379'")
          gateway.fail("ss -Hltn 'sport = :6379' | grep -v '127.0.0.1:6379' | grep -q .")
          pid = gateway.succeed("systemctl show -p MainPID --value tfgateway.service").strip()
          gateway.succeed(f"test $(stat -c %u /proc/{pid}) -ne 0")
          caps = gateway.succeed(f"grep CapEff /proc/{pid}/status")
          assert caps.split()[1] == "0000000000001000", f"agent capabilities: {caps}"  # CAP_NET_ADMIN only
          # redis wants the password generated at first start; it is on no command line
          pw = gateway.succeed("cat /var/lib/tfgateway-secrets/redis-password").strip()
          assert len(pw) == 64, "a 256-bit password"
          gateway.succeed("redis-cli -p 6379 get x | grep -q NOAUTH")
          gateway.succeed(
              f"REDISCLI_AUTH={pw} redis-cli -p 6379 config get notify-keyspace-events | grep -q K"
          )
          gateway.fail(f"grep -l {pw} /proc/[0-9]*/cmdline")
          gateway.succeed("stat -c %a /var/lib/tfgateway-secrets | grep -qx 700")

      with subtest("health, readiness and the data plane's metrics, on loopback only"):
          gateway.wait_until_succeeds("curl -sf http://127.0.0.1:8181/ready", timeout=60)
          gateway.succeed("curl -sf http://127.0.0.1:8080/health | grep -q OK")
          for port, metric in ((9153, "coredns_"), (9111, "tfrouter_"), (9110, "tfgateway_")):
              gateway.succeed(f"curl -sf http://127.0.0.1:{port}/metrics | grep -q '{metric}'")
              gateway.fail(f"ss -Hltn 'sport = :{port}' | grep -v '127.0.0.1:{port}' | grep -q .")

      with subtest("the gateway registers with the explorer"):
          explorer.wait_for_unit("devexplorer.service")
          explorer.wait_for_open_port(8080)
          explorer.wait_until_succeeds(
              "curl -sf http://localhost:8080/dev/state | jq -e '.gateways | length == 1'", timeout=180
          )

      with subtest("workloads are provisioned"):
          client.wait_for_unit("multi-user.target")
          client.succeed("umask 077; wg genkey > /root/wg.key")
          wg_public = client.succeed("wg pubkey < /root/wg.key").strip()
          out = explorer.succeed(
              "python3 /etc/tfgw-test/workloads.py http://localhost:8080 ${gatewayIp} "
              + "${ipOf nodes.backend} " + wg_public
          )
          deployed = json.loads(out.strip().splitlines()[-1])

      with subtest("DNS: the client resolves the gateway's names through the gateway"):
          client.wait_until_succeeds("dig +short web.gw.test A | grep -qx ${gatewayIp}", timeout=60)
          # logFormat = "json": each job is a JSON line with its fields as keys.
          job = gateway.succeed(
              "journalctl -u tfgateway.service -o cat | grep -m1 '\"outcome\": *\"ok\"'"
          )
          assert json.loads(job)["event"] == "job", job
          client.succeed("dig +short @${gatewayIp} gw.test SOA | grep -q .")
          client.succeed("dig +short @${gatewayIp} gw.test NS | grep -q ns1.gw.test")
          client.succeed("dig @${gatewayIp} tcp-check.gw.test A +tcp | grep -q 'status: NXDOMAIN'")

      with subtest("proxy: HTTP by Host and TLS by SNI reach the backend"):
          client.wait_until_succeeds("curl -sf http://web.gw.test/ | grep -q '${page "backend"}'", timeout=60)
          client.succeed(
              "curl -sf --cacert /etc/tfgw-test/ca.pem https://web.gw.test/ | grep -q '${page "backend"}'"
          )

      with subtest("reverse proxy: the NATed node's page through trc"):
          natted.wait_for_unit("nginx.service")
          # behind NAT: the gateway cannot reach it, it can reach the gateway
          gateway.fail("ping -c1 -W2 ${ipOf nodes.natted}")
          natted.succeed("ping -c1 -W2 ${gatewayIp}")
          natted.succeed(
              "systemd-run --unit trc $(command -v trc) --remote ${gatewayIp}:18000 --local 127.0.0.1:8000 "
              + "--secret " + deployed["trc_secret"]
          )
          client.wait_until_succeeds("curl -sf http://tunnel.gw.test/ | grep -q '${page "natted"}'", timeout=90)

      with subtest("4to6: the IPv4-only client reaches an IPv6 host through WireGuard"):
          gateway.wait_until_succeeds("wg show ${nodes.gateway.services.tfgateway.wireguardInterface} listen-port | grep -qx ${toString wgPort}")
          peer = deployed["fourtosix"]["peers"][0]
          client_ip = deployed["fourtosix"]["ips"][0]
          assert peer["endpoint"] == "${gatewayIp}:${toString wgPort}", peer
          client.succeed(
              "ip link add wg0 type wireguard",
              "wg set wg0 private-key /root/wg.key peer " + peer["public_key"]
              + " endpoint " + peer["endpoint"] + " allowed-ips ::/0 persistent-keepalive 25",
              "ip -6 address add " + client_ip + "/128 dev wg0",
              "ip link set wg0 up",
              "ip -6 route add default dev wg0",
          )
          client.wait_until_succeeds("ping -6 -c1 -W2 ${backendV6}", timeout=60)
          client.succeed("curl -sf -g 'http://[${backendV6}]/' | grep -q '${page "backend"}'")
          gateway.succeed("nft list table ip6 tfgateway-nat66 | grep -q masquerade")
          # users' tunnels never lead into each other (tests/kernel checks it with traffic)
          gateway.succeed("nft list table inet tfgateway-4to6 | grep -q drop")

      with subtest("standalone: a gateway served entirely from services.tfgateway.workloads"):
          standalone.wait_for_unit("tfgateway.service")
          standalone.fail("systemctl show -p ExecStart --value tfgateway.service | grep -q -- --explorer")
          client.wait_until_succeeds("dig +short @${standaloneIp} web.sa.test A | grep -qx ${standaloneIp}", timeout=60)
          client.succeed("dig +short @${standaloneIp} zone.test SOA | grep -q .")
          client.wait_until_succeeds(
              "curl -sf --resolve web.sa.test:80:${standaloneIp} http://web.sa.test/ | grep -q '${page "backend"}'",
              timeout=60,
          )
          natted.succeed(
              "systemd-run --unit trc-standalone $(command -v trc) --remote ${standaloneIp}:18000 "
              + "--local 127.0.0.1:8000 --secret '${standaloneSecret}'"
          )
          client.wait_until_succeeds(
              "curl -sf --resolve home.sa.test:80:${standaloneIp} http://home.sa.test/ | grep -q '${page "natted"}'",
              timeout=90,
          )
          standalone.wait_until_succeeds("wg show wg-tfgateway peers | grep -qx '${standalonePeer}'", timeout=60)
          # the operator's view: every entry ok, the peer's WireGuard config, the tunnel's command
          standalone.wait_until_succeeds("tfgateway-status | grep -q '6 ok, 0 error, 0 pending'", timeout=60)
          standalone.succeed("tfgateway-status | grep -q 'tftunnel --remote'")
          standalone.succeed("tfgateway-status | grep -q 'fourtosix laptop: WireGuard config for the client'")
          standalone.succeed("tfgateway-status | grep -q '${standalonePeer}'")
          standalone.fail("tfgateway-status | grep -q '${standaloneSecret}'")
          # the secret is a credential: on no command line and not in the store's file
          standalone.fail("grep -l '${standaloneSecret}' /proc/[0-9]*/cmdline")
          standalone.fail("grep -q '${standaloneSecret}' $(readlink -f /etc/tfgateway/workloads.toml)")

      with subtest("standalone: switching to a changed workloads list reloads the agent"):
          pid = standalone.succeed("systemctl show -p MainPID --value tfgateway.service").strip()
          client.fail("dig +short @${standaloneIp} added.sa.test A | grep -q .")
          standalone.succeed("${changed}/bin/switch-to-configuration test")
          client.wait_until_succeeds("dig +short @${standaloneIp} added.sa.test A | grep -qx 198.51.100.7", timeout=30)
          after = standalone.succeed("systemctl show -p MainPID --value tfgateway.service").strip()
          assert pid == after, f"the agent was restarted ({pid} -> {after}), not reloaded"
          standalone.succeed("tfgateway-status | grep -q '7 ok, 0 error, 0 pending'")
          # and the rest is still served
          client.succeed("dig +short @${standaloneIp} web.sa.test A | grep -qx ${standaloneIp}")
    '';
}
