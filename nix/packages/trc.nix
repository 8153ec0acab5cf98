# Upstream tcprouter's client `trc` v0.1.0, which users run next to their service to expose it
# through the gateway (reverse tunnel). Built from the wrapper module
# dataplane/tcprouter-upstream, which pins v0.1.0 with the dependencies it shipped with.
{
  lib,
  buildGoModule,
  fetchFromGitHub,
}:

let
  hashes = lib.importJSON ../vendor-hashes.json;
  # The Go module proxy does not serve github.com/threefoldtech/tcprouter, so go.mod replaces it
  # with a local export (dataplane/tcprouter-upstream/get-source.sh); here the same tree comes
  # from GitHub.
  tcprouterSrc = fetchFromGitHub {
    owner = "threefoldtech";
    repo = "tcprouter";
    rev = "34099b835549056fae682a5c6e6ad9502ad0316f"; # tag v0.1.0
    hash = hashes.tcprouter-source;
  };
in
buildGoModule {
  pname = "trc";
  version = "0.1.0";

  src = ../../dataplane/tcprouter-upstream;
  vendorHash = hashes.trc;

  # Point the replace at a copy inside the build tree. postPatch also runs in the goModules
  # derivation, so the vendor tree (and vendorHash) records the relative path `./tcprouter-src`;
  # scripts/update-vendor-hashes.sh performs the same edit.
  postPatch = ''
    cp -r ${tcprouterSrc} tcprouter-src
    chmod -R u+w tcprouter-src
    sed -i 's|^replace github.com/threefoldtech/tcprouter v0.1.0 => .*$|replace github.com/threefoldtech/tcprouter v0.1.0 => ./tcprouter-src|' go.mod
    grep -q '=> ./tcprouter-src$' go.mod
  '';

  # The program is a package of a dependency, which `subPackages` cannot name.
  buildPhase = ''
    runHook preBuild
    go build -ldflags="-s -w" -o "$GOPATH/bin/trc" github.com/threefoldtech/tcprouter/cmds/client
    runHook postBuild
  '';
  # Upstream's tests need a network and redis; the NixOS VM test runs this binary against the gateway.
  doCheck = false;

  meta = {
    description = "tcprouter v0.1.0 reverse-tunnel client (trc) for services exposed through a tfgateway";
    homepage = "https://github.com/threefoldtech/tcprouter";
    license = lib.licenses.bsd3;
    mainProgram = "trc";
    platforms = lib.platforms.linux;
  };
}
