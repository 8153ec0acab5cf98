# Host networking of the gateway: firewall, and for 4to6 the WireGuard kernel module, IPv6
# forwarding and NAT66. The agent creates the WireGuard interface itself; its /64 prefix is
# derived from the seed at run time, so NAT66 matches the interface, not a prefix.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.tfgateway;
  inherit (import ./lib.nix { inherit lib; }) endpointPort;
  fourToSix = cfg.endpoint != null;
  wgPort = endpointPort cfg.endpoint;
  wg = cfg.wireguardInterface;
  router = cfg.router.settings.server;
in
{
  options.services.tfgateway.allowPeerToPeer = lib.mkOption {
    type = lib.types.bool;
    default = false;
    description = ''
      Let 4to6 users reach each other through the gateway (from one WireGuard peer to
      another). Off: the gateway drops traffic that enters and leaves the WireGuard interface
      (nftables table `inet tfgateway-4to6`), so a user's tunnel only leads to the Internet.
    '';
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        networking.firewall = lib.mkIf cfg.openFirewall {
          allowedTCPPorts = [
            cfg.dns.port
            router.httpport
            router.port
            router.clientsport
          ];
          allowedUDPPorts = [ cfg.dns.port ] ++ lib.optional (fourToSix && wgPort != null) wgPort;
        };
      }

      (lib.mkIf fourToSix {
        # Loaded at boot: the agent runs with ProtectKernelModules and cannot load it.
        boot.kernelModules = [ "wireguard" ];
        environment.systemPackages = [ pkgs.wireguard-tools ];

        # Forward users' IPv6 (set here because the agent's /proc/sys is read-only; it only
        # checks); keep accepting router advertisements on the uplink (2 = even when
        # forwarding), as nixpkgs' NAT module does.
        boot.kernel.sysctl = {
          "net.ipv6.conf.all.forwarding" = 1;
          "net.ipv6.conf.default.forwarding" = 1;
          "net.ipv6.conf.all.accept_ra" = 2;
          "net.ipv6.conf.default.accept_ra" = 2;
        };

        networking.nftables.enable = lib.mkDefault true;
        networking.nftables.tables.tfgateway-nat66 = {
          family = "ip6";
          content = ''
            chain postrouting {
              type nat hook postrouting priority srcnat; policy accept;
              iifname "${wg}" masquerade comment "4to6 users (NAT66)"
            }
          '';
        };
        # Users' tunnels lead to the Internet, never into each other's (whatever the rest of
        # the firewall forwards: a drop in any base chain is final).
        networking.nftables.tables.tfgateway-4to6 = lib.mkIf (!cfg.allowPeerToPeer) {
          family = "inet";
          content = ''
            chain forward {
              type filter hook forward priority filter; policy accept;
              iifname "${wg}" oifname "${wg}" drop comment "4to6 users never reach each other"
            }
          '';
        };
        # Only used when the firewall filters forwarded traffic (networking.firewall.filterForward).
        networking.firewall.extraForwardRules = ''
          iifname "${wg}" accept comment "4to6 users out"
          oifname "${wg}" ct state established,related accept comment "4to6 replies"
        '';

        # The interface belongs to the agent; no DHCP client may touch it.
        networking.dhcpcd.denyInterfaces = [ wg ];
      })
    ]
  );
}
