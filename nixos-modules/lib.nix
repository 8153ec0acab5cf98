# Small helpers shared by the module's files.
{ lib }:

{
  # The port of a "host:port" or "[v6]:port" endpoint; null when it has none.
  endpointPort =
    endpoint:
    let
      m = builtins.match "(.+):([0-9]+)" endpoint;
    in
    if m == null then null else lib.toInt (builtins.elemAt m 1);
}
