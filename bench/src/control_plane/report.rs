//! The control-plane bench's figures and their Markdown and JSON renderings.
//! Pure functions of [`ControlResult`], so the tables are unit-tested.

use crate::report::{fmt_num, markdown_table};
use crate::stats::percentile_sorted;
use std::fmt::Write as _;
use std::time::Duration;

/// The targets.
pub const TARGET_P99: Duration = Duration::from_secs(1);
pub const TARGET_BYTES_PER_PROXY: f64 = 50_000.0;

/// p50/p99/max of a set of latencies (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lat {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// `None` for no samples.
pub fn lat(samples: &[Duration]) -> Option<Lat> {
    if samples.is_empty() {
        return None;
    }
    let mut us: Vec<u64> = samples.iter().map(|d| d.as_micros() as u64).collect();
    us.sort_unstable();
    let d = |p: f64| Duration::from_micros(percentile_sorted(&us, p));
    Some(Lat {
        n: us.len(),
        p50: d(50.0),
        p99: d(99.0),
        max: Duration::from_micros(*us.last().unwrap()),
    })
}

/// One measured event: a config change, the join or the leave.
#[derive(Debug, Clone, Default)]
pub struct PhaseRow {
    pub name: String,
    /// Nodes that must see the change.
    pub expected: usize,
    /// Of those, the nodes that ACKed a response carrying it in time.
    pub reached: usize,
    /// Nodes not expected to see it that did (should be 0).
    pub unexpected: usize,
    /// Responses (all types, all nodes) during the phase.
    pub responses: u64,
    /// Nodes that received at least one response during the phase.
    pub nodes_pushed: usize,
    /// Time to ACK per reached node (for the leave: after the grace period).
    pub latencies: Vec<Duration>,
    /// CPU seconds of the control plane and of this process over the phase.
    pub server_cpu_s: f64,
    pub client_cpu_s: f64,
}

impl PhaseRow {
    pub fn missing(&self) -> usize {
        self.expected - self.reached
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct ControlResult {
    pub proxies: usize,
    pub services: usize,
    pub grace: Duration,
    /// Control-plane VmRSS in bytes: loaded, no proxy; all synced and quiet;
    /// at the end.
    pub rss_idle: u64,
    pub rss_synced: u64,
    pub rss_end: u64,
    /// This process's VmRSS before the proxies connected and after.
    pub client_rss_idle: u64,
    pub client_rss_synced: u64,
    /// From the first connect to the last node's fourth ACK.
    pub connect_wall: Duration,
    /// Per node: connect attempt to fourth ACK.
    pub sync_times: Vec<Duration>,
    pub connect_server_cpu_s: f64,
    pub connect_client_cpu_s: f64,
    /// `ringmesh_control_connected_proxies` once synced, if the scrape worked.
    pub metrics_connected: Option<u64>,
    pub changes: Vec<PhaseRow>,
    pub join: Option<PhaseRow>,
    pub leave: Option<PhaseRow>,
    pub errors: Vec<String>,
}

impl ControlResult {
    /// Control-plane RSS growth per connected proxy, in bytes.
    pub fn bytes_per_proxy(&self) -> f64 {
        (self.rss_synced as f64 - self.rss_idle as f64) / self.proxies.max(1) as f64
    }
    pub fn client_bytes_per_proxy(&self) -> f64 {
        (self.client_rss_synced as f64 - self.client_rss_idle as f64) / self.proxies.max(1) as f64
    }
    /// Every change's latencies pooled.
    pub fn all_changes(&self) -> Vec<Duration> {
        self.changes
            .iter()
            .flat_map(|c| c.latencies.iter().copied())
            .collect()
    }
    /// Nodes that should have seen a change and did not, over every phase.
    pub fn missing(&self) -> usize {
        self.changes
            .iter()
            .chain(self.join.iter())
            .chain(self.leave.iter())
            .map(|p| p.missing())
            .sum()
    }
}

fn ms(d: Duration) -> String {
    fmt_num(d.as_secs_f64() * 1000.0)
}

fn lat_cells(l: Option<Lat>) -> [String; 3] {
    match l {
        Some(l) => [ms(l.p50), ms(l.p99), ms(l.max)],
        None => ["—".into(), "—".into(), "—".into()],
    }
}

fn phase_cells(p: &PhaseRow) -> Vec<String> {
    let [p50, p99, max] = lat_cells(lat(&p.latencies));
    vec![
        p.name.clone(),
        p.expected.to_string(),
        p.reached.to_string(),
        p.missing().to_string(),
        p.unexpected.to_string(),
        p50,
        p99,
        max,
        p.responses.to_string(),
        p.nodes_pushed.to_string(),
        format!("{:.2}", p.server_cpu_s),
        format!("{:.2}", p.client_cpu_s),
    ]
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// The tables (no heading): targets, memory, connect, and one row per event.
pub fn markdown(r: &ControlResult) -> String {
    let mut md = String::new();
    let pooled = lat(&r.all_changes());
    let bpp = r.bytes_per_proxy();
    let p99_ok = pooled.is_some_and(|l| l.p99 <= TARGET_P99) && r.missing() == 0;
    md.push_str(&markdown_table(
        &["figure", "value", "target", ""],
        &[
            vec![
                format!("config change → ACK, p99 over {} changes", r.changes.len()),
                pooled
                    .map(|l| format!("{} ms", ms(l.p99)))
                    .unwrap_or("—".into()),
                format!("≤ {} ms for {} proxies", TARGET_P99.as_millis(), r.proxies),
                met(p99_ok).into(),
            ],
            vec![
                "control-plane RSS per connected proxy".into(),
                format!("{:.1} KB", bpp / 1000.0),
                format!("≤ {} KB", TARGET_BYTES_PER_PROXY / 1000.0),
                met(bpp <= TARGET_BYTES_PER_PROXY).into(),
            ],
        ],
    ));
    md.push('\n');
    md.push_str(&markdown_table(
        &[
            "memory",
            "control plane",
            "bench process (the simulated proxies)",
        ],
        &[
            vec![
                "VmRSS, mesh loaded, no proxy".into(),
                format!("{:.2} MB", r.rss_idle as f64 / 1e6),
                format!("{:.2} MB", r.client_rss_idle as f64 / 1e6),
            ],
            vec![
                format!("VmRSS, {} proxies synced", r.proxies),
                format!("{:.2} MB", r.rss_synced as f64 / 1e6),
                format!("{:.2} MB", r.client_rss_synced as f64 / 1e6),
            ],
            vec![
                "per connected proxy".into(),
                format!("{:.1} KB", bpp / 1000.0),
                format!("{:.1} KB", r.client_bytes_per_proxy() / 1000.0),
            ],
            vec![
                "VmRSS at the end".into(),
                format!("{:.2} MB", r.rss_end as f64 / 1e6),
                "".into(),
            ],
        ],
    ));
    md.push('\n');
    let [s50, s99, smax] = lat_cells(lat(&r.sync_times));
    let _ = writeln!(
        md,
        "Connect: {} proxies synced (all four types ACKed) in {:.2} s; per node, connect → fourth ACK p50 {s50} / p99 {s99} / max {smax} ms; CPU {:.2} s control plane, {:.2} s bench.{}\n",
        r.sync_times.len(),
        r.connect_wall.as_secs_f64(),
        r.connect_server_cpu_s,
        r.connect_client_cpu_s,
        match r.metrics_connected {
            Some(n) => format!(" `ringmesh_control_connected_proxies` then: {n}."),
            None => String::new(),
        }
    );
    let mut rows: Vec<Vec<String>> = r.changes.iter().map(phase_cells).collect();
    if r.changes.len() > 1 {
        let [p50, p99, max] = lat_cells(pooled);
        let sum = |f: fn(&PhaseRow) -> usize| r.changes.iter().map(f).sum::<usize>().to_string();
        rows.push(vec![
            "all changes".into(),
            sum(|p| p.expected),
            sum(|p| p.reached),
            sum(|p| p.missing()),
            sum(|p| p.unexpected),
            p50,
            p99,
            max,
            r.changes
                .iter()
                .map(|p| p.responses)
                .sum::<u64>()
                .to_string(),
            "".into(),
            format!(
                "{:.2}",
                r.changes.iter().map(|p| p.server_cpu_s).sum::<f64>()
            ),
            format!(
                "{:.2}",
                r.changes.iter().map(|p| p.client_cpu_s).sum::<f64>()
            ),
        ]);
    }
    rows.extend(r.join.iter().map(phase_cells));
    rows.extend(r.leave.iter().map(phase_cells));
    md.push_str(&markdown_table(
        &[
            "event",
            "nodes expected",
            "reached",
            "missing",
            "unexpected",
            "p50 ms",
            "p99 ms",
            "max ms",
            "responses",
            "nodes pushed",
            "CPU s control",
            "CPU s bench",
        ],
        &rows,
    ));
    let _ = writeln!(
        md,
        "\nLatency = from the moment the change is visible (rename of the traffic file; the join's connect; the leave's stream drop) to the node's ACK of the first response carrying it; the leave's figures are after the {} ms grace period. `responses` counts every response of every type to every node during the event; `nodes pushed` the nodes that got at least one.",
        r.grace.as_millis()
    );
    if !r.errors.is_empty() {
        let _ = writeln!(md, "\nErrors ({}):\n", r.errors.len());
        for e in r.errors.iter().take(20) {
            let _ = writeln!(md, "- {e}");
        }
    }
    md
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_lat(l: Option<Lat>) -> String {
    match l {
        Some(l) => format!(
            "{{\"n\": {}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
            l.n,
            l.p50.as_secs_f64() * 1e3,
            l.p99.as_secs_f64() * 1e3,
            l.max.as_secs_f64() * 1e3
        ),
        None => "null".into(),
    }
}

fn json_phase(p: &PhaseRow) -> String {
    format!(
        "{{\"name\": {}, \"expected\": {}, \"reached\": {}, \"missing\": {}, \"unexpected\": {}, \"responses\": {}, \"nodes_pushed\": {}, \"latency\": {}, \"server_cpu_s\": {:.3}, \"client_cpu_s\": {:.3}}}",
        json_str(&p.name),
        p.expected,
        p.reached,
        p.missing(),
        p.unexpected,
        p.responses,
        p.nodes_pushed,
        json_lat(lat(&p.latencies)),
        p.server_cpu_s,
        p.client_cpu_s
    )
}

/// The run as one JSON object (hand-written: the crate has no serde).
pub fn json(r: &ControlResult, date: &str, command: &str) -> String {
    let phases: Vec<String> = r.changes.iter().map(json_phase).collect();
    let opt = |p: &Option<PhaseRow>| p.as_ref().map(json_phase).unwrap_or("null".into());
    let errors: Vec<String> = r.errors.iter().map(|e| json_str(e)).collect();
    format!(
        "{{\n  \"date\": {},\n  \"command\": {},\n  \"proxies\": {},\n  \"services\": {},\n  \"grace_ms\": {},\n  \"rss_idle_bytes\": {},\n  \"rss_synced_bytes\": {},\n  \"rss_end_bytes\": {},\n  \"bytes_per_proxy\": {:.0},\n  \"client_bytes_per_proxy\": {:.0},\n  \"connect_s\": {:.3},\n  \"sync\": {},\n  \"metrics_connected\": {},\n  \"changes\": [{}],\n  \"changes_pooled\": {},\n  \"join\": {},\n  \"leave\": {},\n  \"errors\": [{}]\n}}\n",
        json_str(date),
        json_str(command),
        r.proxies,
        r.services,
        r.grace.as_millis(),
        r.rss_idle,
        r.rss_synced,
        r.rss_end,
        r.bytes_per_proxy(),
        r.client_bytes_per_proxy(),
        r.connect_wall.as_secs_f64(),
        json_lat(lat(&r.sync_times)),
        r.metrics_connected.map(|n| n.to_string()).unwrap_or("null".into()),
        phases.join(", "),
        json_lat(lat(&r.all_changes())),
        opt(&r.join),
        opt(&r.leave),
        errors.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn latency_percentiles() {
        assert_eq!(lat(&[]), None);
        let one = lat(&[ms_(7)]).unwrap();
        assert_eq!(
            (one.n, one.p50, one.p99, one.max),
            (1, ms_(7), ms_(7), ms_(7))
        );
        // 1..=1000 ms, shuffled order: nearest rank.
        let mut v: Vec<Duration> = (1..=1000).map(ms_).collect();
        v.reverse();
        let l = lat(&v).unwrap();
        assert_eq!((l.p50, l.p99, l.max), (ms_(500), ms_(990), ms_(1000)));
        // 980 fast nodes and 20 slow ones: the slow tail shows at p99.
        let mut v = vec![ms_(150); 980];
        v.extend(vec![ms_(2000); 20]);
        let l = lat(&v).unwrap();
        assert_eq!((l.p50, l.p99, l.max), (ms_(150), ms_(2000), ms_(2000)));
    }

    fn result() -> ControlResult {
        let change = |name: &str, lats: Vec<u64>| PhaseRow {
            name: name.into(),
            expected: 3,
            reached: lats.len(),
            responses: 9,
            nodes_pushed: 3,
            latencies: lats.into_iter().map(ms_).collect(),
            server_cpu_s: 0.5,
            client_cpu_s: 0.25,
            ..PhaseRow::default()
        };
        ControlResult {
            proxies: 4,
            services: 2,
            grace: ms_(1000),
            rss_idle: 10_000_000,
            rss_synced: 10_200_000,
            rss_end: 10_300_000,
            client_rss_idle: 1_000_000,
            client_rss_synced: 1_400_000,
            connect_wall: ms_(1500),
            sync_times: vec![ms_(10), ms_(20), ms_(30), ms_(40)],
            metrics_connected: Some(4),
            changes: vec![
                change("change 1", vec![100, 120, 140]),
                change("change 2", vec![110, 900]),
            ],
            join: Some(change("join", vec![5, 6, 7])),
            leave: None,
            ..ControlResult::default()
        }
    }

    #[test]
    fn tables() {
        let r = result();
        assert_eq!(r.bytes_per_proxy(), 50_000.0);
        assert_eq!(r.client_bytes_per_proxy(), 100_000.0);
        assert_eq!(r.missing(), 1);
        let md = markdown(&r);
        // Missing a node fails the latency target even with a good p99.
        assert!(md.contains("| config change → ACK, p99 over 2 changes | 900 ms | ≤ 1000 ms for 4 proxies | **not met** |"), "{md}");
        assert!(
            md.contains("| control-plane RSS per connected proxy | 50.0 KB | ≤ 50 KB | met |"),
            "{md}"
        );
        assert!(
            md.contains("| change 2 | 3 | 2 | 1 | 0 | 110 | 900 | 900 | 9 | 3 | 0.50 | 0.25 |"),
            "{md}"
        );
        assert!(
            md.contains("| all changes | 6 | 5 | 1 | 0 | 120 | 900 | 900 | 18 |  | 1.00 | 0.50 |"),
            "{md}"
        );
        assert!(md.contains("| join | 3 | 3 | 0 | 0 | 6 | 7 | 7 |"), "{md}");
        assert!(
            md.contains("`ringmesh_control_connected_proxies` then: 4."),
            "{md}"
        );
        assert!(md.contains("p50 20 / p99 40 / max 40 ms"), "{md}");
    }

    #[test]
    fn json_shape() {
        let mut r = result();
        r.errors.push("sim-3: stream: \"closed\"\n".into());
        let j = json(&r, "2026-11-23", "cmd");
        assert!(j.starts_with(
            "{\n  \"date\": \"2026-11-23\",\n  \"command\": \"cmd\",\n  \"proxies\": 4,"
        ));
        assert!(j.contains("\"bytes_per_proxy\": 50000,"), "{j}");
        assert!(j.contains("\"changes_pooled\": {\"n\": 5, \"p50_ms\": 120.000, \"p99_ms\": 900.000, \"max_ms\": 900.000},"), "{j}");
        assert!(j.contains("\"leave\": null,"), "{j}");
        assert!(
            j.contains("\"errors\": [\"sim-3: stream: \\\"closed\\\"\\u000a\"]"),
            "{j}"
        );
        // Balanced braces and brackets (a cheap well-formedness check).
        assert_eq!(j.matches('{').count(), j.matches('}').count());
        assert_eq!(j.matches('[').count(), j.matches(']').count());
    }
}
