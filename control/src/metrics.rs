//! The control plane's Prometheus metrics: counters kept in atomics by the
//! stream tasks and the config reloader, gauges read from the registry and
//! the world at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::snapshot::{type_name, TYPES};

/// Upper bounds (seconds) of the push latency histogram (send -> ACK).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    pushes: [AtomicU64; TYPES.len()],
    acks: [AtomicU64; TYPES.len()],
    nacks: [AtomicU64; TYPES.len()],
    /// Not cumulative; the last slot is +Inf.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_rejected: AtomicU64,
    certificates_issued: AtomicU64,
    csr_refused_identity: AtomicU64,
    csr_refused_invalid: AtomicU64,
    ca_reloads_ok: AtomicU64,
    ca_reloads_failed: AtomicU64,
}

/// Values read at scrape time.
pub struct Gauges {
    pub connected_proxies: usize,
    /// (service key, endpoints) for every declared service.
    pub endpoints: Vec<(String, usize)>,
    /// Roots in the trust bundle handed to proxies.
    pub trust_bundle_roots: usize,
}

impl Metrics {
    pub fn pushed(&self, type_index: usize) {
        self.pushes[type_index].fetch_add(1, Relaxed);
    }

    pub fn acked(&self, type_index: usize, latency: Option<Duration>) {
        self.acks[type_index].fetch_add(1, Relaxed);
        if let Some(d) = latency {
            let secs = d.as_secs_f64();
            let slot = LATENCY_BUCKETS
                .iter()
                .position(|&b| secs <= b)
                .unwrap_or(LATENCY_BUCKETS.len());
            self.latency[slot].fetch_add(1, Relaxed);
            self.latency_sum_micros
                .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
        }
    }

    pub fn nacked(&self, type_index: usize) {
        self.nacks[type_index].fetch_add(1, Relaxed);
    }

    pub fn reloaded(&self, ok: bool) {
        if ok {
            self.reloads_ok.fetch_add(1, Relaxed);
        } else {
            self.reloads_rejected.fetch_add(1, Relaxed);
        }
    }

    pub fn issued(&self) {
        self.certificates_issued.fetch_add(1, Relaxed);
    }

    /// `reason`: "identity" or "invalid".
    pub fn csr_refused(&self, reason: &str) {
        if reason == "identity" {
            self.csr_refused_identity.fetch_add(1, Relaxed);
        } else {
            self.csr_refused_invalid.fetch_add(1, Relaxed);
        }
    }

    pub fn ca_reloaded(&self, ok: bool) {
        if ok {
            self.ca_reloads_ok.fetch_add(1, Relaxed);
        } else {
            self.ca_reloads_failed.fetch_add(1, Relaxed);
        }
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "connected_proxies",
            "gauge",
            "Proxies with a live discovery stream.",
        );
        let _ = writeln!(
            out,
            "ringmesh_control_connected_proxies {}",
            g.connected_proxies
        );
        for (name, help, values) in [
            (
                "pushes_total",
                "Discovery responses sent, by resource type.",
                &self.pushes,
            ),
            (
                "acks_total",
                "Responses ACKed by proxies, by resource type.",
                &self.acks,
            ),
            (
                "nacks_total",
                "Responses NACKed by proxies, by resource type.",
                &self.nacks,
            ),
        ] {
            header(&mut out, name, "counter", help);
            for (i, t) in TYPES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ringmesh_control_{name}{{type=\"{}\"}} {}",
                    type_name(*t),
                    values[i].load(Relaxed)
                );
            }
        }
        header(
            &mut out,
            "push_latency_seconds",
            "histogram",
            "Time from sending a response to its ACK.",
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency[i].load(Relaxed);
            let _ = writeln!(
                out,
                "ringmesh_control_push_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.latency[LATENCY_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "ringmesh_control_push_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency_sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "ringmesh_control_push_latency_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "ringmesh_control_push_latency_seconds_count {cumulative}"
        );
        header(
            &mut out,
            "config_reloads_total",
            "counter",
            "Changes of the config directory, by result.",
        );
        let _ = writeln!(
            out,
            "ringmesh_control_config_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "ringmesh_control_config_reloads_total{{result=\"rejected\"}} {}",
            self.reloads_rejected.load(Relaxed)
        );
        header(
            &mut out,
            "certificates_issued_total",
            "counter",
            "Certificates signed from proxies' CSRs.",
        );
        let _ = writeln!(
            out,
            "ringmesh_control_certificates_issued_total {}",
            self.certificates_issued.load(Relaxed)
        );
        header(
            &mut out,
            "csr_refused_total",
            "counter",
            "CSRs refused: for an identity the node may not have, or invalid.",
        );
        let _ = writeln!(
            out,
            "ringmesh_control_csr_refused_total{{reason=\"identity\"}} {}",
            self.csr_refused_identity.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "ringmesh_control_csr_refused_total{{reason=\"invalid\"}} {}",
            self.csr_refused_invalid.load(Relaxed)
        );
        header(
            &mut out,
            "ca_reloads_total",
            "counter",
            "Reloads of the CA files on SIGHUP, by result.",
        );
        let _ = writeln!(
            out,
            "ringmesh_control_ca_reloads_total{{result=\"ok\"}} {}",
            self.ca_reloads_ok.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "ringmesh_control_ca_reloads_total{{result=\"failed\"}} {}",
            self.ca_reloads_failed.load(Relaxed)
        );
        header(
            &mut out,
            "trust_bundle_roots",
            "gauge",
            "Roots in the trust bundle pushed to proxies.",
        );
        let _ = writeln!(
            out,
            "ringmesh_control_trust_bundle_roots {}",
            g.trust_bundle_roots
        );
        header(
            &mut out,
            "endpoints",
            "gauge",
            "Endpoints of each declared service: registered instances plus static ones.",
        );
        for (svc, n) in &g.endpoints {
            let _ = writeln!(
                out,
                "ringmesh_control_endpoints{{service=\"{}\"}} {n}",
                escape(svc)
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP ringmesh_control_{name} {help}");
    let _ = writeln!(out, "# TYPE ringmesh_control_{name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_exact_lines_a_scraper_sees() {
        let m = Metrics::default();
        m.pushed(0);
        m.pushed(0);
        m.acked(0, Some(Duration::from_millis(3)));
        m.acked(1, Some(Duration::from_secs(20)));
        m.nacked(3);
        m.reloaded(true);
        m.reloaded(false);
        m.issued();
        m.csr_refused("identity");
        m.csr_refused("invalid");
        m.csr_refused("invalid");
        m.ca_reloaded(false);
        let text = m.render(&Gauges {
            connected_proxies: 2,
            endpoints: vec![("b.default".into(), 3)],
            trust_bundle_roots: 2,
        });
        for line in [
            "ringmesh_control_connected_proxies 2",
            "ringmesh_control_pushes_total{type=\"cluster\"} 2",
            "ringmesh_control_pushes_total{type=\"route_table\"} 0",
            "ringmesh_control_acks_total{type=\"cluster\"} 1",
            "ringmesh_control_nacks_total{type=\"route_table\"} 1",
            "ringmesh_control_push_latency_seconds_bucket{le=\"0.001\"} 0",
            "ringmesh_control_push_latency_seconds_bucket{le=\"0.005\"} 1",
            "ringmesh_control_push_latency_seconds_bucket{le=\"10\"} 1",
            "ringmesh_control_push_latency_seconds_bucket{le=\"+Inf\"} 2",
            "ringmesh_control_push_latency_seconds_sum 20.003",
            "ringmesh_control_push_latency_seconds_count 2",
            "ringmesh_control_config_reloads_total{result=\"ok\"} 1",
            "ringmesh_control_config_reloads_total{result=\"rejected\"} 1",
            "ringmesh_control_endpoints{service=\"b.default\"} 3",
            "# TYPE ringmesh_control_push_latency_seconds histogram",
            "ringmesh_control_certificates_issued_total 1",
            "ringmesh_control_csr_refused_total{reason=\"identity\"} 1",
            "ringmesh_control_csr_refused_total{reason=\"invalid\"} 2",
            "ringmesh_control_ca_reloads_total{result=\"ok\"} 0",
            "ringmesh_control_ca_reloads_total{result=\"failed\"} 1",
            "ringmesh_control_trust_bundle_roots 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
