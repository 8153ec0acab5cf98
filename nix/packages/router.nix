# The gateway's tcprouter-compatible TCP router `tfrouter` (HTTP Host and TLS SNI routing,
# reverse tunnels for trc clients): the wrapper Go module dataplane/router.
{ lib, buildGo126Module }:

# Go 1.26 explicitly: the go.mod says `go 1.26.0` and nixpkgs builds with GOTOOLCHAIN=local
# (docs/nixos.md, "Go toolchain"); scripts/update-vendor-hashes.sh --check keeps the two in step.
buildGo126Module {
  pname = "tfrouter";
  version = "2.0.0";

  src = (import ./go-source.nix { inherit lib; }).src ../../dataplane/router;
  # Recompute with scripts/update-vendor-hashes.sh after any go.mod/go.sum change.
  vendorHash = (lib.importJSON ../vendor-hashes.json).router;

  subPackages = [ "cmd/tfrouter" ];
  ldflags = [
    "-s"
    "-w"
  ];
  # The Go tests run with the race detector in scripts/test.sh; the NixOS VM test runs this binary.
  doCheck = false;

  meta = {
    description = "tcprouter-compatible TCP router of the tfgateway (Host/SNI routing, reverse tunnels)";
    license = lib.licenses.asl20;
    mainProgram = "tfrouter";
    platforms = lib.platforms.linux;
  };
}
