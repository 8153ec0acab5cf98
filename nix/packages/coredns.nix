# CoreDNS v1.14.7 with the gateway's `gatewaydns` plugin: the wrapper Go module
# dataplane/coredns, the same one scripts/build-go.sh builds for the tests.
{ lib, buildGoModule }:

buildGoModule {
  pname = "coredns-tfgw";
  version = "1.14.7";

  src = ../../dataplane/coredns;
  # Recompute with scripts/update-vendor-hashes.sh after any go.mod/go.sum change.
  vendorHash = (lib.importJSON ../vendor-hashes.json).coredns;

  subPackages = [ "." ];
  ldflags = [
    "-s"
    "-w"
  ];
  # The Go tests run with the race detector against a real redis-server in scripts/test.sh;
  # the NixOS VM test (tests/nixos/gateway.nix) runs this binary.
  doCheck = false;

  # `go install` names the program after the module directory; use the project's name
  # (dataplane/coredns/binaries) so it is never mistaken for a stock CoreDNS.
  postInstall = ''
    mv $out/bin/coredns $out/bin/coredns-tfgw
  '';

  meta = {
    description = "CoreDNS with the tfgateway DNS plugin (zones pushed from redis)";
    license = lib.licenses.asl20;
    mainProgram = "coredns-tfgw";
    platforms = lib.platforms.linux;
  };
}
