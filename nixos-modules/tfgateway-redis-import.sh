# tfgateway-redis-import DUMP.rdb: load a redis dump (an old gateway's dump.rdb) into the
# gateway's redis data directory, for redis with the append-only file on. redis 7 with
# `appendonly yes` ignores a dump.rdb when no append-only file exists and starts empty, so
# copying the dump in place is not enough. Run it with the gateway's redis stopped.
#
# What it does: moves the existing appendonlydir aside (kept, never deleted), loads the dump
# into a temporary redis on a private unix socket (append-only off), turns the append-only file
# on there (redis writes it from memory), waits until it is written, stops that redis and gives
# the files to the redis user. Prints the number of keys imported.
#
# Environment: REDIS_DIR (default /var/lib/redis-tfgateway), REDIS_USER (default
# redis-tfgateway; empty: leave ownership alone).
set -euo pipefail

dump=${1:-}
dir=${REDIS_DIR:-/var/lib/redis-tfgateway}
user=${REDIS_USER-redis-tfgateway}
if [ -z "$dump" ] || [ ! -f "$dump" ]; then
  echo "usage: tfgateway-redis-import DUMP.rdb   (with the gateway's redis stopped)" >&2
  exit 2
fi
[ -d "$dir" ] || { echo "tfgateway-redis-import: $dir does not exist" >&2; exit 1; }

tmp=$(mktemp -d)
sock=$tmp/redis.sock
cleanup() {
  redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
cli() { redis-cli -s "$sock" "$@"; }

# A redis still running on this directory would overwrite what we write.
if [ -f "$dir/appendonlydir/appendonly.aof.manifest" ] && fuser "$dir/appendonlydir"/* >/dev/null 2>&1; then
  echo "tfgateway-redis-import: a redis is using $dir; stop it first (systemctl stop redis-tfgateway)" >&2
  exit 1
fi

if [ -e "$dir/appendonlydir" ]; then
  aside="$dir/appendonlydir.before-import.$(date +%Y%m%dT%H%M%S)"
  mv "$dir/appendonlydir" "$aside"
  echo "kept the previous append-only files in $aside"
fi
if [ "$(realpath "$dump")" != "$(realpath -m "$dir/dump.rdb")" ]; then
  cp "$dump" "$dir/dump.rdb"
fi

redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$dir" \
  --dbfilename dump.rdb --appendonly no --save "" --daemonize no >"$tmp/log" 2>&1 &
for _ in $(seq 300); do
  [ "$(cli ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
[ "$(cli ping 2>/dev/null)" = PONG ] || { cat "$tmp/log" >&2; echo "tfgateway-redis-import: redis did not load $dump" >&2; exit 1; }
keys=$(cli dbsize)

cli config set appendonly yes >/dev/null
for _ in $(seq 600); do
  info=$(cli info persistence)
  if grep -q '^aof_enabled:1' <<<"$info" && grep -q '^aof_rewrite_in_progress:0' <<<"$info" \
    && grep -q '^aof_rewrite_scheduled:0' <<<"$info" && [ -f "$dir/appendonlydir/appendonly.aof.manifest" ]; then
    break
  fi
  sleep 0.1
done
grep -q '^aof_last_bgrewrite_status:ok' <<<"$(cli info persistence)" \
  || { echo "tfgateway-redis-import: writing the append-only file failed" >&2; exit 1; }
cli shutdown >/dev/null 2>&1 || true
wait
if [ -n "$user" ]; then
  chown -R "$user:$user" "$dir/appendonlydir" "$dir/dump.rdb"
fi
echo "imported $keys keys into $dir (append-only file written); start redis-tfgateway now"
