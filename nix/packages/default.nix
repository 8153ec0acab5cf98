# The project's packages for one package set; used by flake.nix and by the NixOS module's
# package defaults.
{ callPackage }:

{
  agent = callPackage ./agent.nix { };
  coredns = callPackage ./coredns.nix { };
  router = callPackage ./router.nix { };
  trc = callPackage ./trc.nix { };
}
