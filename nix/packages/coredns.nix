# CoreDNS v1.14.7 with the gateway's `gatewaydns` plugin: the wrapper Go module
# dataplane/coredns, the same one scripts/build-go.sh builds for the tests.
{ lib, buildGo126Module }:

# Go 1.26 explicitly: the go.mod says `go 1.26.0` and nixpkgs builds with GOTOOLCHAIN=local
# (docs/nixos.md, "Go toolchain"); scripts/update-vendor-hashes.sh --check keeps the two in step.
buildGo126Module {
  pname = "coredns-tfgw";
  version = "1.14.7";

  src = (import ./go-source.nix { inherit lib; }).src ../../dataplane/coredns;
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
