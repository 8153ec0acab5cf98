# The project's packages for one package set; used by flake.nix and by the NixOS module's
# package defaults.
{ callPackage }:

let
  agent = callPackage ./agent.nix { };
in
{
  inherit agent;
  coredns = callPackage ./coredns.nix { };
  # Its tests cross-check signatures and secrets with the agent's own code.
  devexplorer = callPackage ./devexplorer.nix { tfgateway-agent = agent; };
  router = callPackage ./router.nix { };
  trc = callPackage ./trc.nix { };
}
