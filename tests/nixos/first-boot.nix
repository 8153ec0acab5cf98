# A machine booted from this repository's images (images/common.nix, with the module
# imported as every host imports it) serves nothing and registers nowhere: no gateway unit,
# no redis, nothing listening but SSH. Run by `nix flake check` as checks.x86_64-linux.first-boot.
{
  name = "tfgateway-first-boot";

  nodes.machine = {
    imports = [ ../../images/common.nix ];
    documentation.enable = false;
  };

  testScript = ''
    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("sshd.service")
    for unit in ("tfgateway", "tfgateway-dns", "tfgateway-router", "redis-tfgateway"):
        machine.fail(f"systemctl cat {unit}.service")
    listening = machine.succeed("ss -Hlntu | awk '{print $5}' | sed 's/.*://' | sort -u").split()
    assert listening == ["22"], f"a fresh image must listen on SSH only, got {listening}"
  '';
}
