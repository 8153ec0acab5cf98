# The reverse-tunnel client users run next to their service to expose it through the gateway:
# `tftunnel` (dataplane/tftunnel), a drop-in for tcprouter's `trc` v0.1.0 (same flags,
# environment variables and wire protocol), also installed under the name `trc`.
{ lib, buildGo126Module }:

# Go 1.26 explicitly: the go.mod says `go 1.26.0` and nixpkgs builds with GOTOOLCHAIN=local
# (docs/nixos.md, "Go toolchain"); scripts/update-vendor-hashes.sh --check keeps the two in step.
buildGo126Module {
  pname = "tftunnel";
  version = "2.0.0";

  src = (import ./go-source.nix { inherit lib; }).src ../../dataplane/tftunnel;
  # Recompute with scripts/update-vendor-hashes.sh after any go.mod/go.sum change.
  vendorHash = (lib.importJSON ../vendor-hashes.json).trc;

  subPackages = [ "." ];
  ldflags = [
    "-s"
    "-w"
    "-X main.version=2.0.0"
  ];
  # The Go tests run with the race detector in scripts/test.sh; the NixOS VM test runs this binary.
  doCheck = false;

  postInstall = ''
    ln -s tftunnel $out/bin/trc
  '';

  meta = {
    description = "Reverse-tunnel client for services exposed through a tfgateway (drop-in for tcprouter's trc)";
    license = lib.licenses.asl20;
    mainProgram = "tftunnel";
    platforms = lib.platforms.linux;
  };
}
