# The source of a Go wrapper module for buildGoModule: the module's directory without a
# vendor/ a developer may have left there (`go mod vendor`): buildGoModule vendors itself
# (vendorHash) and refuses a src that already has vendor/, and a stale one must never be built.
# `files` is the file set (checked by scripts/eval-nix-offline.sh), `src` the store copy.
{ lib }:

rec {
  files = dir: lib.fileset.difference dir (lib.fileset.maybeMissing (dir + "/vendor"));
  src =
    dir:
    lib.fileset.toSource {
      root = dir;
      fileset = files dir;
    };
}
