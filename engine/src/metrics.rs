//! Per-worker counters and their Prometheus rendering. Each worker owns a
//! `Registry`; only that worker writes its series (plain load+store, no locked
//! read-modify-write on the hot path); the admin thread sums all workers when
//! scraped. The registry's lock is taken only to create a series (cold path).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustc_hash::FxHashMap;

/// A counter with exactly one writer thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer: load+store is exact and avoids a `lock xadd`.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge with exactly one writer thread.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.store(self.0.load(Relaxed) + 1, Relaxed);
    }
    #[inline]
    pub fn dec(&self) {
        self.0.store(self.0.load(Relaxed) - 1, Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds in seconds, Prometheus-style; the +Inf bucket is `count`.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; cumulated when rendered.
    buckets: [Counter; 14],
    sum_us: Counter,
    count: Counter,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].inc();
        }
        self.sum_us.add(us);
        self.count.inc();
    }
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

/// One worker's series, keyed by (family, rendered label set).
#[derive(Debug, Default)]
pub struct Registry {
    series: Mutex<FxHashMap<(&'static str, String), Metric>>,
}

impl Registry {
    fn get_or(
        &self,
        family: &'static str,
        labels: String,
        make: impl FnOnce() -> Metric,
    ) -> Metric {
        // A poisoned lock only means another thread panicked while inserting;
        // the map itself is still consistent.
        let mut m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((family, labels)).or_insert_with(make).clone()
    }

    pub fn counter(&self, family: &'static str, labels: String) -> Arc<Counter> {
        match self.get_or(family, labels, || Metric::Counter(Arc::default())) {
            Metric::Counter(c) => c,
            _ => Arc::default(),
        }
    }

    pub fn gauge(&self, family: &'static str, labels: String) -> Arc<Gauge> {
        match self.get_or(family, labels, || Metric::Gauge(Arc::default())) {
            Metric::Gauge(g) => g,
            _ => Arc::default(),
        }
    }

    pub fn histogram(&self, family: &'static str, labels: String) -> Arc<Histogram> {
        match self.get_or(family, labels, || Metric::Histogram(Arc::default())) {
            Metric::Histogram(h) => h,
            _ => Arc::default(),
        }
    }
}

/// Help text and type of every family we export, in output order.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "ringmesh_downstream_connections_total",
        "counter",
        "Downstream connections accepted.",
    ),
    (
        "ringmesh_downstream_connections_active",
        "gauge",
        "Downstream connections open now.",
    ),
    (
        "ringmesh_downstream_send_timeouts_total",
        "counter",
        "Downstream connections closed because a write to the client made no progress for limits.downstream_send_timeout.",
    ),
    (
        "ringmesh_downstream_accept_paused_total",
        "counter",
        "Times a worker stopped accepting on a listener because it serves limits.max_connections_per_worker connections.",
    ),
    (
        "ringmesh_downstream_accept_errors_total",
        "counter",
        "Failed accepts (e.g. EMFILE: out of file descriptors); the worker backs off and retries.",
    ),
    (
        "ringmesh_downstream_bytes_received_total",
        "counter",
        "Bytes read from downstream.",
    ),
    (
        "ringmesh_downstream_bytes_sent_total",
        "counter",
        "Bytes written to downstream.",
    ),
    (
        "ringmesh_requests_total",
        "counter",
        "HTTP requests answered, by listener, route, cluster and status class.",
    ),
    (
        "ringmesh_grpc_responses_total",
        "counter",
        "gRPC calls answered, by listener, route, cluster and grpc-status (from the trailers, or the proxy's own answer).",
    ),
    (
        "ringmesh_http2_goaway_abuse_total",
        "counter",
        "Downstream HTTP/2 connections closed with GOAWAY(ENHANCE_YOUR_CALM), by listener and abuse (rapid_reset, control_flood).",
    ),
    (
        "ringmesh_authz_allowed_total",
        "counter",
        "Requests (HTTP) or connections (TCP) an ALLOW policy admitted, per listener and policy.",
    ),
    (
        "ringmesh_authz_denied_total",
        "counter",
        "Requests or connections denied, per listener and the DENY policy that matched (policy=\"\": no ALLOW policy matched).",
    ),
    (
        "ringmesh_tls_handshakes_total",
        "counter",
        "TLS handshakes completed, per listener (downstream) or cluster (upstream).",
    ),
    (
        "ringmesh_downstream_tls_failures_total",
        "counter",
        "Downstream TLS handshakes that failed (certificate refused, protocol, timeout).",
    ),
    (
        "ringmesh_upstream_tls_failures_total",
        "counter",
        "Upstream mTLS handshakes that failed (peer identity, chain, protocol, timeout).",
    ),
    (
        "ringmesh_upstream_connect_failures_total",
        "counter",
        "Upstream connection attempts that failed.",
    ),
    (
        "ringmesh_upstream_connect_timeouts_total",
        "counter",
        "Upstream connection attempts that timed out.",
    ),
    (
        "ringmesh_upstream_pool_hits_total",
        "counter",
        "Requests sent on a pooled upstream connection.",
    ),
    (
        "ringmesh_upstream_pool_misses_total",
        "counter",
        "Requests that needed a new upstream connection.",
    ),
    (
        "ringmesh_upstream_response_body_errors_total",
        "counter",
        "Upstream response bodies cut short, mis-framed or stalled after the head went to the client.",
    ),
    (
        "ringmesh_upstream_request_duration_seconds",
        "histogram",
        "Time from request start to the end of the upstream response.",
    ),
    (
        "ringmesh_tcp_connections_total",
        "counter",
        "L4 connections proxied, by listener and outcome.",
    ),
    (
        "ringmesh_access_log_dropped_total",
        "counter",
        "Access log lines dropped because the writer fell behind.",
    ),
    ("ringmesh_config_epoch", "gauge", "Config epoch in force."),
    (
        "ringmesh_config_reloads_total",
        "counter",
        "Config reloads by result.",
    ),
    (
        "ringmesh_worker_io_driver",
        "gauge",
        "The I/O driver each worker runs (value 1).",
    ),
    (
        "ringmesh_control_connected",
        "gauge",
        "1 while the stream to the control plane is up (control mode only).",
    ),
    (
        "ringmesh_ktls_enabled",
        "gauge",
        "1 when mesh TLS connections move to kernel TLS after the handshake (--ktls and the start-up probe).",
    ),
    (
        "ringmesh_ktls_offloads_total",
        "counter",
        "TLS sessions handed to kernel TLS.",
    ),
    (
        "ringmesh_ktls_offload_failures_total",
        "counter",
        "kTLS hand-offs that failed after the session was committed to the kernel (connection closed).",
    ),
    (
        "ringmesh_ktls_offload_declined_total",
        "counter",
        "TLS sessions not handed to kernel TLS (TLS 1.2, a suite the kernel lacks, no kTLS): they continue in user-space rustls.",
    ),
    (
        "ringmesh_control_updates_total",
        "counter",
        "Control-plane responses applied (ack) or refused (nack), by resource type.",
    ),
    (
        "ringmesh_identity_expiry_timestamp_seconds",
        "gauge",
        "When the mesh certificate in force expires (unix seconds; control mode only).",
    ),
    (
        "ringmesh_identity_renewals_total",
        "counter",
        "Mesh certificates put in force in place of an earlier one.",
    ),
    (
        "ringmesh_identity_csr_sent_total",
        "counter",
        "Certificate signing requests sent to the control plane.",
    ),
];

#[derive(Default)]
struct Sum {
    value: f64,
    buckets: [u64; 14],
    sum_us: u64,
    count: u64,
    hist: bool,
}

/// Prometheus text exposition of all workers' registries plus `extra` lines
/// (process-wide series owned by the control thread).
pub fn render(workers: &[&Registry], extra: &[(&str, String, f64)]) -> String {
    let mut all: BTreeMap<(&str, String), Sum> = BTreeMap::new();
    for reg in workers {
        let m = reg.series.lock().unwrap_or_else(|p| p.into_inner());
        for ((family, labels), metric) in m.iter() {
            let s = all.entry((family, labels.clone())).or_default();
            match metric {
                Metric::Counter(c) => s.value += c.get() as f64,
                Metric::Gauge(g) => s.value += g.get() as f64,
                Metric::Histogram(h) => {
                    s.hist = true;
                    for (i, b) in h.buckets.iter().enumerate() {
                        s.buckets[i] += b.get();
                    }
                    s.sum_us += h.sum_us.get();
                    s.count += h.count.get();
                }
            }
        }
    }
    for (family, labels, v) in extra {
        all.entry((family, labels.clone())).or_default().value += v;
    }
    let mut out = String::with_capacity(4096);
    for (family, kind, help) in FAMILIES {
        let mut header = false;
        for ((_, labels), s) in all.iter().filter(|((f, _), _)| f == family) {
            if !header {
                let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
                header = true;
            }
            if s.hist {
                let mut cum = 0;
                let sep = if labels.is_empty() { "" } else { "," };
                for (i, b) in s.buckets.iter().enumerate() {
                    cum += b;
                    let _ = writeln!(
                        out,
                        "{family}_bucket{{{labels}{sep}le=\"{}\"}} {cum}",
                        BUCKETS[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{family}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
                    s.count
                );
                let _ = writeln!(out, "{family}_sum{{{labels}}} {}", s.sum_us as f64 / 1e6);
                let _ = writeln!(out, "{family}_count{{{labels}}} {}", s.count);
            } else if labels.is_empty() {
                let _ = writeln!(out, "{family} {}", s.value);
            } else {
                let _ = writeln!(out, "{family}{{{labels}}} {}", s.value);
            }
        }
    }
    out
}

/// Escape a label value per the Prometheus text format.
pub fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_workers_and_renders_exact_lines() {
        let a = Registry::default();
        let b = Registry::default();
        a.counter("ringmesh_requests_total", "route=\"x\"".into())
            .add(2);
        b.counter("ringmesh_requests_total", "route=\"x\"".into())
            .add(3);
        a.histogram(
            "ringmesh_upstream_request_duration_seconds",
            "cluster=\"c\"".into(),
        )
        .observe(Duration::from_millis(3));
        let out = render(&[&a, &b], &[("ringmesh_config_epoch", String::new(), 4.0)]);
        assert!(
            out.contains("ringmesh_requests_total{route=\"x\"} 5\n"),
            "{out}"
        );
        assert!(out.contains(
            "ringmesh_upstream_request_duration_seconds_bucket{cluster=\"c\",le=\"0.0025\"} 0\n"
        ));
        assert!(out.contains(
            "ringmesh_upstream_request_duration_seconds_bucket{cluster=\"c\",le=\"0.005\"} 1\n"
        ));
        assert!(out.contains("ringmesh_upstream_request_duration_seconds_count{cluster=\"c\"} 1\n"));
        assert!(out.contains("ringmesh_config_epoch 4\n"));
        assert_eq!(
            out.matches("# TYPE ringmesh_requests_total counter")
                .count(),
            1
        );
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(label("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
