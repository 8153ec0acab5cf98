#!/usr/bin/env bash
# Kernel WireGuard tests in a QEMU guest (the host kernel has no WireGuard; see
# shared notes kernel-vm.md). Software emulation only: KVM guests hang on these machines.
#
#   scripts/kernel.sh fetch   download the current Debian kernel package (no install), extract it
#                             into $TFGW_CACHE/kernel (cached), link its modules into /lib/modules,
#                             check qemu, busybox and virtme-ng
#   scripts/kernel.sh test [pytest args]
#                             boot the kernel with virtme-ng (host root fs shared read-only) and run
#                             `pytest tests/kernel` inside; the verdict comes from the exit-code and
#                             junit files the guest writes into a shared rw directory, because vng's
#                             own exit status is unreliable
source "$(dirname "$0")/lib.sh"

KERNEL_DIR=$TFGW_CACHE/kernel
VNG=$TFGW_VENV/bin/vng

# Name of the versioned kernel package the metapackage currently points at.
kernel_package() {
  local name
  name=$(apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
  if [ -z "$name" ]; then
    apt-get update -qq || die "apt-get update failed"
    name=$(apt-cache depends linux-image-amd64 2>/dev/null |
      sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
  fi
  [ -n "$name" ] || die "cannot resolve the kernel package behind linux-image-amd64 (apt-cache depends)"
  echo "$name"
}

# Kernel release (the /lib/modules directory name) of the extracted kernel, or nothing.
kernel_release() {
  local d
  for d in "$KERNEL_DIR"/lib/modules/*/; do
    [ -d "$d" ] || continue
    basename "$d"
    return
  done
}

check_tools() {
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
  [ -x /bin/busybox ] || die "/bin/busybox missing (apt-get install busybox-static)"
  command -v modprobe >/dev/null || die "modprobe missing (apt-get install kmod)"
  [ -x "$VNG" ] || die "virtme-ng missing: $VNG (scripts/setup.sh installs it into the venv)"
}

link_modules() {
  local rel=$1
  if [ -e "/lib/modules/$rel" ] && [ ! -L "/lib/modules/$rel" ]; then
    # A real installed kernel of the same release: virtme-ng can use it as is.
    return
  fi
  mkdir -p /lib/modules
  ln -sfn "$KERNEL_DIR/lib/modules/$rel" "/lib/modules/$rel"
}

cmd_fetch() {
  check_tools
  local pkg rel
  pkg=$(kernel_package)
  if [ -f "$KERNEL_DIR/.package" ] && [ "$(cat "$KERNEL_DIR/.package")" = "$pkg" ] &&
    [ -n "$(kernel_release)" ]; then
    echo "kernel $pkg cached in $KERNEL_DIR"
  else
    step "downloading $pkg (apt-get download, nothing installed)"
    local tmp
    tmp=$(mktemp -d)
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -q "$pkg") || die "apt-get download $pkg failed"
    rm -rf "$KERNEL_DIR.new"
    mkdir -p "$KERNEL_DIR.new"
    dpkg -x "$tmp"/"$pkg"_*.deb "$KERNEL_DIR.new" || die "dpkg -x failed"
    rm -rf "$tmp"
    echo "$pkg" >"$KERNEL_DIR.new/.package"
    rm -rf "$KERNEL_DIR"
    mv "$KERNEL_DIR.new" "$KERNEL_DIR"
  fi
  rel=$(kernel_release)
  [ -n "$rel" ] || die "no lib/modules/<release> in $KERNEL_DIR"
  [ -f "$KERNEL_DIR/boot/vmlinuz-$rel" ] || die "no $KERNEL_DIR/boot/vmlinuz-$rel"
  find "$KERNEL_DIR/lib/modules/$rel" -name 'wireguard.ko*' | grep -q . ||
    die "the kernel $rel has no wireguard module"
  link_modules "$rel"
  [ -f "/lib/modules/$rel/modules.dep" ] || depmod -b "$KERNEL_DIR" "$rel" ||
    die "depmod failed for $rel"
  echo "kernel $rel ready: $KERNEL_DIR/boot/vmlinuz-$rel"
}

cmd_test() {
  check_tools
  local rel
  rel=$(kernel_release)
  [ -n "$rel" ] || die "no kernel in $KERNEL_DIR: run scripts/kernel.sh fetch (scripts/setup.sh does)"
  [ -f "$KERNEL_DIR/boot/vmlinuz-$rel" ] || die "no $KERNEL_DIR/boot/vmlinuz-$rel"
  link_modules "$rel"
  local results
  results=$(mktemp -d /tmp/tfgw-kernel-results.XXXXXX)
  # Started inside the guest: the root fs (with the venv, redis-server, this checkout) is the
  # host's, read-only; /tmp is an overlay whose writes stay in the guest; $results is shared
  # read-write. /var/cache is a tmpfs in the guest, so the kernel cache (where /lib/modules/<rel>
  # points) is shared read-only explicitly.
  # The guest sees this checkout read-only and compiles every module it imports, in every
  # Python process it starts (pytest, each agent start), under TCG: compiled here first,
  # the imports read the bytecode instead (__pycache__ is ignored by git).
  "$TFGW_VENV/bin/python" -m compileall -q "$TFGW_ROOT/agent/src" "$TFGW_ROOT/devexplorer/src" \
    "$TFGW_ROOT/tests" >/dev/null || die "compileall failed"
  # The root fs reaches the guest over 9p without a page cache (virtme-ng's mount options):
  # every Python start reads its thousands of files through the virtio channel again (85 s for
  # `tfgateway --help` at load 5, more than the tests' patience). The trees the tests' Python
  # processes read (the interpreter's prefix, the venv, this checkout) are shared a second time,
  # read-only, and mounted over themselves in the guest with cache=loose: read once per boot
  # (`tfgateway --help` 23 s at the same load from the second start on).
  local qemu_opts="" mounts="" dir tag n=0
  for dir in "$("$TFGW_VENV/bin/python" -c 'import sys; print(sys.base_prefix)')" \
    "$TFGW_ROOT" "$TFGW_VENV"; do
    dir=$(cd "$dir" && pwd -P)
    if printf '%s' "$mounts" | awk -v d="$dir" '{ if (d == $2 || index(d, $2 "/") == 1) f = 1 } END { exit !f }'; then
      continue  # already shared, or inside a shared tree
    fi
    tag=tfgw$n
    n=$((n + 1))
    qemu_opts+=" -virtfs local,path=$dir,mount_tag=$tag,security_model=none,readonly=on"
    mounts+="$tag $dir"$'\n'
  done
  printf '%s' "$mounts" >"$results/mounts"
  local guest_cmd
  guest_cmd="exec '$TFGW_ROOT/scripts/kernel.sh' guest '$results'"
  [ $# -eq 0 ] || guest_cmd+=$(printf ' %q' "$@")
  step "booting $rel under QEMU (TCG) and running tests/kernel"
  export PATH="$TFGW_VENV/bin:$PATH"  # vng runs virtme-run from the venv
  local start=$SECONDS attempt vng_status=0
  # A TCG guest occasionally hangs early in boot (seen once: no console output after 1 s of
  # kernel time for 13 minutes). Boot is watched: if the guest has not started its script
  # within BOOT_DEADLINE seconds, it is killed and booted again.
  for attempt in 1 2 3; do
    : >"$results/console.log"
    set +e
    # 1,800 s: the suite takes 9-11 min of guest time under TCG on a 2-core machine (13 min
    # seen while another QEMU guest ran); a hung guest is caught by the boot watch below.
    timeout 1800 "$VNG" --run "$KERNEL_DIR/boot/vmlinuz-$rel" --disable-kvm --force-9p \
      --busybox /bin/busybox --memory 1G --cpus 2 --rwdir "$results" \
      --rodir "$KERNEL_DIR" "--qemu-opts=${qemu_opts# }" \
      --verbose --exec "$guest_cmd" >"$results/console.log" 2>&1 &
    local vng_pid=$! booted=0 waited=0
    while kill -0 "$vng_pid" 2>/dev/null; do
      if grep -q "virtme-ng-init: starting script" "$results/console.log"; then
        booted=1
        break
      fi
      if [ "$waited" -ge "${BOOT_DEADLINE:-240}" ]; then
        break
      fi
      sleep 2
      waited=$((waited + 2))
    done
    if [ "$booted" = 1 ] || ! kill -0 "$vng_pid" 2>/dev/null; then
      wait "$vng_pid"
      vng_status=$?
      set -e
      break
    fi
    echo "guest did not start its script within ${BOOT_DEADLINE:-240} s (attempt $attempt); rebooting"
    # vng and its qemu both carry the unique results directory in their arguments.
    pkill -KILL -f -- "$results" 2>/dev/null
    wait "$vng_pid" 2>/dev/null
    set -e
  done
  echo "guest finished in $((SECONDS - start)) s (vng exit status $vng_status, not trusted)"
  if [ -f "$results/pytest.out" ]; then
    # The guest's pytest summary, for the host's log.
    cat "$results/pytest.out"
  fi
  if [ ! -f "$results/exit-code" ]; then
    echo "--- guest console (last 80 lines) ---"
    tail -n 80 "$results/console.log"
    die "the guest wrote no exit code: tests/kernel did not run (results in $results)"
  fi
  local code
  code=$(cat "$results/exit-code")
  [ -f "$results/junit.xml" ] || die "the guest wrote no junit.xml (exit code $code)"
  if [ "$code" != 0 ]; then
    die "tests/kernel failed in the guest (pytest exit code $code; results in $results)"
  fi
  grep -q '<testcase' "$results/junit.xml" || die "junit.xml lists no test case"
  if grep -q -E '<(failure|error|skipped)' "$results/junit.xml"; then
    die "junit.xml reports failures, errors or skips (results in $results)"
  fi
  rm -rf "$results"
  echo "kernel tests passed"
}

# Inside the guest (started by cmd_test): run the suite in a fresh network namespace "gw" (the
# gateway's side; the tests add "client" and "inet" next to it) and leave the verdict in $1.
cmd_guest() {
  local results=${1:?results directory}
  shift
  export PATH="$TFGW_VENV/bin:/usr/sbin:/sbin:$PATH" PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
  export TFGW_KERNEL_GUEST=1
  local code=0 tag dir
  {
    while read -r tag dir; do  # the cached shares of cmd_test
      mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=loose,ro "$tag" "$dir" ||
        echo "mounting $tag on $dir failed: it is read uncached (slower)"
    done <"$results/mounts"
    cd "$TFGW_ROOT"
    echo "guest kernel $(uname -r), $(nproc) cpus"
    modprobe wireguard || echo "modprobe wireguard failed: the tests will fail"
    ip netns add gw && ip -n gw link set lo up
    # Only the plugins the suite uses: every import is slow over 9p under TCG.
    PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 ip netns exec gw "$TFGW_VENV/bin/python" -m pytest \
      tests/kernel -p pytest_asyncio.plugin -p pytest_timeout -p no:cacheprovider \
      --junitxml="$results/junit.xml" -o junit_family=xunit2 --basetemp=/tmp/pytest -ra \
      --durations=0 "$@" ||
      code=$?
  } >"$results/pytest.out" 2>&1 || code=$?
  echo "$code" >"$results/exit-code"
  sync
}

case ${1:-} in
  fetch) cmd_fetch ;;
  test) shift; cmd_test "$@" ;;
  guest) shift; cmd_guest "$@" ;;
  *) die "usage: scripts/kernel.sh fetch|test" ;;
esac
