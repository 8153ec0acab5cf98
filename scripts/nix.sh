#!/usr/bin/env bash
# Nix 2.26 for the project's Nix checks, from Debian 13 (trixie) packages, without installing
# anything system-wide: nixpkgs 26.05 refuses evaluators older than 2.18 (lib/minfeatures.nix)
# and Debian 12's nix-bin is 2.8. The packages are downloaded with a private apt configuration
# (trixie, on the system's own Debian mirror), unpacked into $TFGW_CACHE/nix and run through
# that root's own loader; nothing outside the cache is touched.
#
#   scripts/nix.sh install          download and unpack (idempotent; scripts/setup.sh runs it)
#   scripts/nix.sh bin              print the folder of the wrappers (nix, nix-instantiate)
#   scripts/nix.sh <nix args...>    run `nix` (e.g. scripts/nix.sh --version)
source "$(dirname "$0")/lib.sh"
NIX_HOME=$TFGW_CACHE/nix
ROOT=$NIX_HOME/root
BIN=$NIX_HOME/bin
SUITE=trixie
MIN_VERSION=2.18

version_ok() {
  local v
  v=$("$BIN/nix" --version 2>/dev/null | awk '{print $NF}') || return 1
  [ "$(printf '%s\n%s\n' "$MIN_VERSION" "$v" | sort -V | head -1)" = "$MIN_VERSION" ]
}

# The system's Debian mirror (not the security one), for the trixie line.
mirror() {
  local uri
  uri=$(grep -hoE '(URIs:[[:space:]]*|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -oE 'https?://[^[:space:]]+' | grep -v security | head -1)
  echo "${uri:-http://deb.debian.org/debian}"
}

install() {
  if [ -x "$BIN/nix" ] && version_ok; then
    return 0
  fi
  command -v apt-get >/dev/null || die "apt-get missing: Nix $MIN_VERSION+ comes from Debian $SUITE packages"
  local apt=$NIX_HOME/apt debs=$NIX_HOME/debs
  rm -rf "$ROOT" "$debs"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$debs" "$ROOT" "$BIN"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror) $SUITE main" >"$apt/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  echo "nix: reading the Debian $SUITE package lists (private apt configuration in $apt)"
  apt-get "${opts[@]}" -qq update || die "apt-get update for Debian $SUITE failed"
  # nix-bin and the shared libraries it links; perl, PAM, debconf & co. are not needed to run it.
  local pkgs
  pkgs=$(apt-cache "${opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances --no-pre-depends nix-bin | grep -v '^[ <]' | sort -u \
    | grep -E '^(lib|nix-bin$)' \
    | grep -vE 'perl|pam|semanage|sepol|debian-installer|newt|slang|textwrap|debconf|audit|selinux|cap-ng|libdb5|gdbm|libcrypt1|libbsd|libmd0')
  (cd "$debs" && apt-get "${opts[@]}" -qq download $pkgs) || die "downloading nix-bin from Debian $SUITE failed"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
  local libs="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu"
  for prog in nix nix-instantiate nix-hash; do
    cat >"$BIN/$prog" <<WRAP
#!/bin/sh
# Nix from Debian $SUITE, run through its own loader (scripts/nix.sh).
exec "$ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$libs" --argv0 $prog "$ROOT/usr/bin/nix" "\$@"
WRAP
    chmod +x "$BIN/$prog"
  done
  rm -rf "$debs"
  version_ok || die "Nix from Debian $SUITE is older than $MIN_VERSION: $("$BIN/nix" --version 2>&1)"
  echo "nix: $("$BIN/nix" --version) in $BIN"
}

case ${1:-} in
  install) install ;;
  bin) echo "$BIN" ;;
  *) [ -x "$BIN/nix" ] || install; exec "$BIN/nix" "$@" ;;
esac
