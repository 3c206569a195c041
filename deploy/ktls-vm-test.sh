#!/usr/bin/env bash
# Kernel TLS end to end in a VM: the build machines' kernel has no CONFIG_TLS,
# so boot Debian's cloud kernel (CONFIG_TLS=m) under qemu TCG with a busybox
# initramfs holding static test binaries, tls.ko and the crypto modules.
#
# Steps in the guest:
#   1. before `modprobe tls`: ktls_selftest --expect-unsupported (probe refuses,
#      the hand-off gives the session back, user-space rustls carries on)
#   2. modprobe tls; ktls_selftest (mTLS handshake, offload both ends, 1 MiB
#      each way through KtlsStream under io_uring and epoll, close_notify EOF)
#   3. extra steps (KTLS_VM_STEPS), then /proc/net/tls_stat
# The host checks every step passed and that TlsTxSw/TlsRxSw rose.
#
# Environment (all optional):
#   KTLS_VM_CACHE      downloaded .debs and extracted kernel
#                      [${XDG_CACHE_HOME:-~/.cache}/ringmesh-ktls-vm]
#   KTLS_VM_KERNEL     kernel package [the one linux-image-cloud-amd64 depends on]
#   KTLS_VM_PROFILE    cargo profile for the guest binaries [dev]
#   KTLS_VM_BINS       extra cargo binaries to build static and put in /bin, as
#                      "package:bin" words, e.g. "ringmesh-engine:ringmesh-proxy
#                      ringmesh-control:ringmesh-control"
#   KTLS_VM_FILES      extra host files to put in /bin (already static)
#   KTLS_VM_STEPS      extra guest steps: shell files, each run with busybox sh
#                      after step 2 (cwd /tmp); exit status 0 = PASS
#   KTLS_VM_TIMEOUT    seconds for the whole boot [300]
#   KTLS_VM_KEEP       keep the work dir (initramfs, console log)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${KTLS_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringmesh-ktls-vm}
profile=${KTLS_VM_PROFILE:-dev}
timeout_s=${KTLS_VM_TIMEOUT:-300}
target=x86_64-unknown-linux-gnu
work=$(mktemp -d "${TMPDIR:-/tmp}/ktls-vm.XXXXXX")
if [ -z "${KTLS_VM_KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; fi
mkdir -p "$cache"
t0=$(date +%s)
say() { echo "== $*"; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- host tools ----------------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null; then
    say "installing qemu-system-x86"
    sudo_ apt-get install -y --no-install-recommends qemu-system-x86 \
        || { sudo_ apt-get update && sudo_ apt-get install -y --no-install-recommends qemu-system-x86; }
fi

# --- kernel and busybox (cached .debs) ------------------------------------
fetch() { # fetch PKG: download PKG's .deb into the cache unless present
    if ! ls "$cache/$1"_*.deb >/dev/null 2>&1; then
        say "apt-get download $1"
        (cd "$cache" && { apt-get download "$1" || { sudo_ apt-get update && apt-get download "$1"; }; })
    fi
}
kpkg=${KTLS_VM_KERNEL:-}
if [ -z "$kpkg" ]; then
    kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
if [ -z "$kpkg" ]; then # offline: whatever kernel the cache holds
    kpkg=$(cd "$cache" && ls linux-image-[0-9]*-cloud-amd64_*.deb 2>/dev/null | head -1 | cut -d_ -f1)
fi
[ -n "$kpkg" ] || { echo "cannot find a linux-image-*-cloud-amd64 package" >&2; exit 2; }
kver=${kpkg#linux-image-}
fetch "$kpkg"
fetch busybox-static
kdir=$cache/$kpkg
if [ ! -d "$kdir/boot" ]; then
    dpkg-deb -x "$(ls "$cache/$kpkg"_*.deb | head -1)" "$kdir.tmp" && mv "$kdir.tmp" "$kdir"
fi
if [ ! -x "$cache/busybox" ]; then
    dpkg-deb -x "$(ls "$cache"/busybox-static_*.deb | head -1)" "$work/bb"
    cp "$work/bb/bin/busybox" "$cache/busybox"
fi
bb=$cache/busybox

# --- guest binaries (static glibc) ----------------------------------------
say "building static guest binaries ($profile)"
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
tdir=${CARGO_TARGET_DIR:-$here/target}/$target/$([ "$profile" = dev ] && echo debug || echo "$profile")
(cd "$here" && cargo build -j"${KTLS_VM_JOBS:-2}" --profile "$profile" --target "$target" \
    -p ringmesh-engine --example ktls_selftest)
bins=("$tdir/examples/ktls_selftest")
for pb in ${KTLS_VM_BINS:-}; do
    (cd "$here" && cargo build -j"${KTLS_VM_JOBS:-2}" --profile "$profile" --target "$target" \
        -p "${pb%%:*}" --bin "${pb#*:}")
    bins+=("$tdir/${pb#*:}")
done
for f in ${KTLS_VM_FILES:-}; do bins+=("$f"); done

# --- initramfs ------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,steps,lib/modules/"$kver"/kernel}
cp "$bb" "$root/bin/busybox"
for b in "${bins[@]}"; do cp "$b" "$root/bin/"; done
i=0
for s in ${KTLS_VM_STEPS:-}; do i=$((i + 1)); cp "$s" "$root/steps/$(printf %02d "$i")-$(basename "$s")"; done
mods=$kdir/lib/modules/$kver
for d in net/tls crypto arch/x86/crypto lib/crypto lib; do
    mkdir -p "$root/lib/modules/$kver/kernel/$(dirname "$d")"
    cp -r "$mods/kernel/$d" "$root/lib/modules/$kver/kernel/$(dirname "$d")/"
done
cp "$mods"/modules.builtin "$mods"/modules.order "$root/lib/modules/$kver/"
cp "$mods"/modules.builtin.modinfo "$root/lib/modules/$kver/" 2>/dev/null || true
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
# The kernel loads gcm(aes) etc. through /sbin/modprobe when TLS_TX is set.
for a in modprobe insmod depmod; do ln -s /bin/busybox /sbin/$a; done
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
ip link set lo up
echo "== guest kernel $(uname -r)"
fail=0
step() { # step NAME CMD...: run, report PASS/FAIL
    name=$1; shift
    echo "== step $name"
    if "$@"; then echo "STEP $name PASS"; else echo "STEP $name FAIL"; fail=1; fi
}
step fallback-without-tls-module /bin/ktls_selftest --expect-unsupported
depmod
step modprobe-tls modprobe tls
step ktls /bin/ktls_selftest
for s in /steps/*; do
    [ -f "$s" ] || continue
    step "$(basename "$s")" sh -c "cd /tmp && sh $s"
done
echo "== /proc/net/tls_stat"
cat /proc/net/tls_stat
echo "== lsmod"; lsmod | cut -d' ' -f1 | tr '\n' ' '; echo
if [ $fail = 0 ]; then echo "KTLS-VM RESULT PASS"; else echo "KTLS-VM RESULT FAIL"; fi
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | "$bb" cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initramfs.gz")
say "initramfs $(du -h "$work/initramfs.gz" | cut -f1), kernel $kver"

# --- boot -----------------------------------------------------------------
# TCG, not KVM: on nested hosts (a VM without nested virt) KVM aborts or hangs.
log=$work/console.log
say "booting under qemu TCG"
tb=$(date +%s)
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp "${KTLS_VM_SMP:-1}" \
    -nographic -no-reboot -net none \
    -kernel "$kdir/boot/vmlinuz-$kver" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 panic=-1 edd=off quiet" </dev/null 2>&1 | tr -d '\r' | tee "$log" || true
te=$(date +%s)

# --- verdict --------------------------------------------------------------
ok=1
grep -q "^KTLS-VM RESULT PASS" "$log" || { echo "FAIL: guest did not report PASS"; ok=0; }
[ "$(grep -c '^KTLS-SELFTEST PASS' "$log")" -ge 2 ] || { echo "FAIL: a selftest did not pass"; ok=0; }
stat() { awk -v k="$1" '$1 == k {print $2}' "$log" | tail -1; }
tx=$(stat TlsTxSw); rx=$(stat TlsRxSw)
if [ "${tx:-0}" -gt 0 ] && [ "${rx:-0}" -gt 0 ]; then
    echo "tls_stat: TlsTxSw=$tx TlsRxSw=$rx TlsCurrTxSw=$(stat TlsCurrTxSw) TlsCurrRxSw=$(stat TlsCurrRxSw) TlsDecryptError=$(stat TlsDecryptError)"
else
    echo "FAIL: kTLS counters did not rise (TlsTxSw=${tx:-?} TlsRxSw=${rx:-?})"; ok=0
fi
echo "time: total $((te - t0)) s, boot+tests $((te - tb)) s"
if [ $ok = 1 ]; then echo "ktls-vm-test: PASS"; exit 0; fi
echo "ktls-vm-test: FAIL (console log: $log)"; [ -n "${KTLS_VM_KEEP:-}" ] || cp "$log" "${TMPDIR:-/tmp}/ktls-vm-console.log"
exit 1
