# Guest step for deploy/ktls-vm-test.sh (busybox sh, cwd /tmp): the real
# binaries with kTLS. ringmesh-control serve (front -> reviews, mTLS strict),
# two ringmesh-proxy --ktls on, busybox httpd behind reviews, busybox wget
# through front's outbound listener. Checks the bodies, both proxies'
# ringmesh_ktls_enabled 1 and ringmesh_ktls_offloads_total > 0, and that
# /proc/net/tls_stat TlsTxSw/TlsRxSw rose.
# Run with: KTLS_VM_BINS="ringmesh-engine:ringmesh-proxy
#   ringmesh-control:ringmesh-control" KTLS_VM_STEPS=deploy/ktls-vm/mesh.sh
set -u
L=127.0.0.1
CTL_GRPC=15010 CTL_ADMIN=15011
FRONT_ADMIN=15100 FRONT_IN=15101 FRONT_OUT=15102 FRONT_APP=15103
REV_ADMIN=15200 REV_IN=15201 REV_OUT=15202 REV_APP=15203
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT
fail() {
    echo "mesh: FAIL: $*"
    for f in control front reviews httpd; do
        [ -f /tmp/$f.log ] && { echo "--- $f.log (tail)"; tail -n 30 /tmp/$f.log; }
    done
    exit 1
}
stat_() { awk -v k="$1" '$1 == k {print $2}' /proc/net/tls_stat; }
metric() { # metric ADMIN NAME: the value of an unlabelled series
    wget -q -O - "http://$L:$1/stats/prometheus" | awk -v k="$2" '$1 == k {print $2}'
}
wait_for() { # wait_for SECONDS CMD...
    n=$1; shift
    while [ "$n" -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 1; n=$((n - 1)); done
    return 1
}

tx0=$(stat_ TlsTxSw); rx0=$(stat_ TlsRxSw)
echo "mesh: tls_stat before: TlsTxSw=$tx0 TlsRxSw=$rx0"

mkdir -p /tmp/mesh /tmp/data /tmp/www
cat > /tmp/mesh/services.yaml <<YAML
services:
  - name: front
    mtls: strict
    ports: [{ name: http, port: 8080, protocol: http }]
    calls: [reviews]
  - name: reviews
    mtls: strict
    ports: [{ name: http, port: 9080, protocol: http }]
YAML
echo "reviews says hello over kernel TLS" > /tmp/www/hello.txt
dd if=/dev/urandom of=/tmp/www/big.bin bs=1024 count=512 2>/dev/null
httpd -f -p "$L:$REV_APP" -h /tmp/www > /tmp/httpd.log 2>&1 &
pids="$pids $!"

ringmesh-control serve --config-dir /tmp/mesh --data-dir /tmp/data \
    --listen "$L:$CTL_GRPC" --admin "$L:$CTL_ADMIN" > /tmp/control.log 2>&1 &
pids="$pids $!"
wait_for 60 wget -q -O /dev/null "http://$L:$CTL_ADMIN/healthz" || fail "control plane not up"

proxy() { # proxy NAME ADMIN IN OUT APP
    ringmesh-proxy --control "http://$L:$CTL_GRPC" --node-id "$1-1" --service "$1" \
        --address "$L" --inbound-port "$3" --outbound-port "$4" --app-port "$5" \
        --admin "$L:$2" --workers 1 --ktls on > "/tmp/$1.log" 2>&1 &
    pids="$pids $!"
}
proxy reviews $REV_ADMIN $REV_IN $REV_OUT $REV_APP
proxy front $FRONT_ADMIN $FRONT_IN $FRONT_OUT $FRONT_APP
wait_for 90 wget -q -O /dev/null "http://$L:$REV_ADMIN/ready" || fail "reviews proxy not ready"
wait_for 90 wget -q -O /dev/null "http://$L:$FRONT_ADMIN/ready" || fail "front proxy not ready"
echo "mesh: control plane and both proxies ready"

get() { wget -q -O "$2" --header "Host: reviews" "http://$L:$FRONT_OUT/$1"; }
# The route to reviews may land a moment after readiness: retry the first call.
wait_for 30 get hello.txt /tmp/got.txt || fail "GET hello.txt through front failed"
body=$(cat /tmp/got.txt)
[ "$body" = "reviews says hello over kernel TLS" ] || fail "unexpected body: $body"
echo "mesh: body OK: $body"
i=0
while [ $i -lt 5 ]; do
    get big.bin /tmp/got.bin || fail "GET big.bin #$i failed"
    [ "$(md5sum < /tmp/got.bin)" = "$(md5sum < /tmp/www/big.bin)" ] || fail "big.bin #$i differs"
    i=$((i + 1))
done
echo "mesh: 5 x 512 KiB bodies OK"

for p in front:$FRONT_ADMIN reviews:$REV_ADMIN; do
    name=${p%%:*} admin=${p#*:}
    en=$(metric "$admin" ringmesh_ktls_enabled)
    off=$(metric "$admin" ringmesh_ktls_offloads_total)
    fl=$(metric "$admin" ringmesh_ktls_offload_failures_total)
    dc=$(metric "$admin" ringmesh_ktls_offload_declined_total)
    echo "mesh: $name ringmesh_ktls_enabled=$en offloads=$off failures=$fl declined=$dc"
    [ "$en" = 1 ] || fail "$name: ringmesh_ktls_enabled is $en"
    [ "${off:-0}" -gt 0 ] 2>/dev/null || fail "$name: no kTLS offloads ($off)"
    [ "${fl:-0}" = 0 ] || fail "$name: $fl kTLS offload failures"
done

tx1=$(stat_ TlsTxSw); rx1=$(stat_ TlsRxSw)
echo "mesh: tls_stat after: TlsTxSw=$tx1 TlsRxSw=$rx1 TlsCurrTxSw=$(stat_ TlsCurrTxSw) TlsCurrRxSw=$(stat_ TlsCurrRxSw)"
[ "$tx1" -gt "$tx0" ] && [ "$rx1" -gt "$rx0" ] || fail "kTLS counters did not rise"
grep -h "kTLS" /tmp/front.log /tmp/reviews.log | head -4
echo "mesh: PASS"
