#!/usr/bin/env bash
# Quick side-by-side: ringmesh (io_uring and epoll), nginx and HAProxy as HTTP/1.1
# keep-alive reverse proxies, each with 1 worker pinned to CPU 0, in front of
# the same nginx upstream (small fixed body) pinned to CPU 1, with wrk also on
# CPU 1. Rounds are interleaved so drift hits every proxy alike. Reports the
# proxy's CPU time per request (utime+stime from /proc over the run / requests).
#
#   bash bench/scripts/compare.sh [ROUNDS] [SECONDS]
#
# Installs nginx-light, haproxy and wrk from Debian if missing. Loopback only.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-5}
cd "$(dirname "$0")/../.."
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v bc >/dev/null || need+=(bc)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p ringmesh-engine
BIN=$PWD/target/release/ringmesh-proxy
D=$(mktemp -d /tmp/ringmesh-compare.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$D/hap.pid" ] && kill "$(cat "$D/hap.pid")" 2>/dev/null; true; }
trap cleanup EXIT

cat > "$D/up.conf" <<EOC
worker_processes 1; worker_cpu_affinity 10; daemon off; pid $D/up.pid; error_log $D/up.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19900; location / { return 200 "hello world\n"; } } }
EOC
cat > "$D/nginx.conf" <<EOC
worker_processes 1; worker_cpu_affinity 01; daemon off; pid $D/nginx.pid; error_log $D/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:19900; keepalive 64; }
  server { listen 127.0.0.1:19901; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOC
cat > "$D/haproxy.cfg" <<EOC
global
  nbthread 1
  cpu-map auto:1/1-1 0
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:19902
  default_backend b
backend b
  server s1 127.0.0.1:19900
EOC
for drv in uring epoll; do
  port=$([ $drv = uring ] && echo 19903 || echo 19904)
  admin=$([ $drv = uring ] && echo 19913 || echo 19914)
  cat > "$D/rm-$drv.yaml" <<EOC
admin: { address: 127.0.0.1:$admin }
listeners:
  - name: web
    address: 127.0.0.1:$port
    virtual_hosts:
      - name: v
        domains: ["*"]
        routes:
          - match: { path: { prefix: / } }
            route: { cluster: up }
clusters:
  - { name: up, endpoints: ["127.0.0.1:19900"] }
EOC
done

nginx -c "$D/up.conf" & pids+=($!)
nginx -c "$D/nginx.conf" & pids+=($!)
haproxy -f "$D/haproxy.cfg" -D -p "$D/hap.pid"
"$BIN" -c "$D/rm-uring.yaml" --workers 1 --cpu-list 0 --io-driver uring >"$D/rm-uring.log" 2>&1 & pids+=($!); RMU=$!
"$BIN" -c "$D/rm-epoll.yaml" --workers 1 --cpu-list 0 --io-driver epoll >"$D/rm-epoll.log" 2>&1 & pids+=($!); RME=$!
sleep 1
worker_of() { # the nginx worker whose master was started with $1
  for p in $(pgrep -f "nginx: worker"); do
    m=$(awk '{print $4}' /proc/$p/stat)
    if grep -q "$1" /proc/$m/cmdline; then echo $p; fi
  done
}
NGX=$(worker_of "$D/nginx.conf"); HAP=$(cat "$D/hap.pid")

measure() { # name port pid
  local name=$1 port=$2 pid=$3 u0 s0 u1 s1 out reqs tck
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
  out=$(taskset -c 1 wrk -t1 -c32 -d"${SECS}"s --latency "http://127.0.0.1:$port/" 2>&1)
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  tck=$(getconf CLK_TCK)
  printf "| %s | %s | %s | %s | %s | %s |\n" "$name" \
    "$(echo "$out" | awk '/Requests\/sec/{printf "%.0f", $2}')" \
    "$(echo "scale=2; ($u1+$s1-$u0-$s0)*1000000/$tck/$reqs" | bc)" \
    "$(echo "$out" | awk '$1=="50%"{print $2}')" "$(echo "$out" | awk '$1=="99%"{print $2}')" \
    "$(echo "$out" | awk '/Non-2xx|Socket errors/{printf "%s ", $0}')"
}
echo "| proxy | req/s | CPU µs/req | p50 | p99 | errors |"
echo "| --- | --- | --- | --- | --- | --- |"
for r in $(seq "$ROUNDS"); do
  measure ringmesh-io_uring 19903 "$RMU"
  measure ringmesh-epoll 19904 "$RME"
  measure nginx 19901 "$NGX"
  measure haproxy 19902 "$HAP"
done
