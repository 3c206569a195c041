//! The tables of a `grpc` run: gRPC unary through each target (with the
//! ringmesh ÷ nginx CPU-per-request ratio and the ≤ 0.7× target), and the
//! plain-HTTP pair (HTTP/1.1 vs h2c through ringmesh and nginx). Pure
//! functions of the samples, unit-tested.

use super::GRow;
use crate::report::{fmt_num, fmt_ratio, fmt_summary, markdown_table};
use crate::stats::{summarize, Summary};
use std::collections::HashMap;

/// One measured run of one row.
#[derive(Clone, Default, Debug)]
pub struct GSample {
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: f64,
    /// Proxy CPU (utime+stime) per successful request, µs.
    pub cpu_us: Option<f64>,
    /// Of that, kernel time (stime) per request, µs.
    pub sys_us: Option<f64>,
    /// Proxy CPU over the run, % of one core.
    pub cpu_pct: Option<f64>,
    /// The upstream's (tonic server or nginx) CPU per request, µs.
    pub up_cpu_us: Option<f64>,
}

fn sm(v: &[GSample], f: impl Fn(&GSample) -> Option<f64>) -> Option<Summary> {
    let xs: Vec<f64> = v.iter().filter_map(f).collect();
    summarize(&xs)
}

/// The target: ringmesh's CPU per gRPC request ≤ 0.7× nginx's.
pub const GRPC_TARGET: f64 = 0.7;

const HEADER: [&str; 9] = [
    "target",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "proxy CPU %",
    "proxy CPU µs/req",
    "of which kernel",
    "upstream CPU µs/req",
];

fn row_cells(r: GRow, v: &[GSample]) -> Vec<String> {
    vec![
        r.name().to_string(),
        fmt_summary(sm(v, |s| Some(s.rps))),
        fmt_summary(sm(v, |s| s.p50_ms)),
        fmt_summary(sm(v, |s| s.p99_ms)),
        fmt_summary(sm(v, |s| Some(s.errors))),
        fmt_summary(sm(v, |s| s.cpu_pct)),
        fmt_summary(sm(v, |s| s.cpu_us)),
        fmt_summary(sm(v, |s| s.sys_us)),
        fmt_summary(sm(v, |s| s.up_cpu_us)),
    ]
}

/// `a ÷ b` of CPU per request, round by round (rounds ran seconds apart).
fn per_round(a: &[GSample], b: &[GSample]) -> String {
    a.iter()
        .zip(b)
        .filter_map(|(x, y)| match (x.cpu_us, y.cpu_us) {
            (Some(x), Some(y)) if y > 0.0 => Some(format!("{:.2}×", x / y)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verdict line of ringmesh against nginx's CPU per request.
pub fn verdict(ratio: f64) -> &'static str {
    if ratio <= GRPC_TARGET {
        "met"
    } else {
        "not met"
    }
}

/// The Markdown of the run.
pub fn grpc_report(rows: &[GRow], samples: &HashMap<GRow, Vec<GSample>>) -> String {
    let get = |r: GRow| samples.get(&r).cloned().unwrap_or_default();
    let has = |r: GRow| rows.contains(&r) && samples.contains_key(&r);
    let mut md = String::new();
    let grpc: Vec<GRow> = rows.iter().copied().filter(|r| r.is_grpc()).collect();
    if !grpc.is_empty() {
        md.push_str("#### gRPC unary: h2load (h2c) → proxy → tonic Echo server\n\n");
        let t: Vec<Vec<String>> = grpc.iter().map(|&r| row_cells(r, &get(r))).collect();
        md.push_str(&markdown_table(&HEADER, &t));
        md.push('\n');
        let (rm, ng, hp) = (GRow::GrpcRingmesh, GRow::GrpcNginx, GRow::GrpcHaproxy);
        let cpu = |v: &[GSample]| sm(v, |s| s.cpu_us);
        let rps = |v: &[GSample]| sm(v, |s| Some(s.rps));
        if has(rm) && has(ng) {
            let (a, b) = (get(rm), get(ng));
            if let (Some(x), Some(y)) = (cpu(&a), cpu(&b)) {
                let ratio = x.median / y.median;
                md.push_str(&format!(
                    "ringmesh ÷ nginx (medians): CPU per request **{:.2}×** (target ≤ {GRPC_TARGET}×: **{}**; {} vs {} µs); req/s {}; per round {}.\n",
                    ratio,
                    verdict(ratio),
                    fmt_num(x.median),
                    fmt_num(y.median),
                    fmt_ratio(rps(&a), rps(&b)),
                    per_round(&a, &b)
                ));
            }
        }
        if has(rm) && has(hp) {
            let (a, b) = (get(rm), get(hp));
            md.push_str(&format!(
                "ringmesh ÷ HAProxy (medians): CPU per request {}; req/s {}; per round {}.\n",
                fmt_ratio(cpu(&a), cpu(&b)),
                fmt_ratio(rps(&a), rps(&b)),
                per_round(&a, &b)
            ));
        }
        if has(ng) && has(hp) {
            let (a, b) = (get(hp), get(ng));
            md.push_str(&format!(
                "HAProxy ÷ nginx (medians): CPU per request {}; req/s {}.\n",
                fmt_ratio(cpu(&a), cpu(&b)),
                fmt_ratio(rps(&a), rps(&b)),
            ));
        }
        md.push('\n');
    }
    let http: Vec<GRow> = rows.iter().copied().filter(|r| !r.is_grpc()).collect();
    if !http.is_empty() {
        md.push_str(
            "#### Plain HTTP, HTTP/1.1 vs h2c: h2load → proxy → nginx `return 200` (upstream HTTP/1.1 keep-alive unless the row says h2c upstream)\n\n",
        );
        let t: Vec<Vec<String>> = http.iter().map(|&r| row_cells(r, &get(r))).collect();
        md.push_str(&markdown_table(&HEADER, &t));
        md.push('\n');
        let cpu = |v: &[GSample]| sm(v, |s| s.cpu_us);
        let pairs = [
            (
                "ringmesh h2c ÷ HTTP/1.1",
                GRow::H2cRingmesh,
                GRow::H1Ringmesh,
            ),
            ("nginx h2c ÷ HTTP/1.1", GRow::H2cNginx, GRow::H1Nginx),
            ("HTTP/1.1 ringmesh ÷ nginx", GRow::H1Ringmesh, GRow::H1Nginx),
            ("h2c ringmesh ÷ nginx", GRow::H2cRingmesh, GRow::H2cNginx),
            (
                "ringmesh bridge HTTP/1.1 → h2c upstream ÷ HTTP/1.1 → HTTP/1.1",
                GRow::H1H2Ringmesh,
                GRow::H1Ringmesh,
            ),
            (
                "ringmesh bridge h2c → HTTP/1.1 upstream ÷ h2c → h2c",
                GRow::H2cRingmesh,
                GRow::H2cH2Ringmesh,
            ),
            (
                "ringmesh h2c → h2c ÷ HTTP/1.1 → HTTP/1.1",
                GRow::H2cH2Ringmesh,
                GRow::H1Ringmesh,
            ),
        ];
        for (label, a, b) in pairs {
            if has(a) && has(b) {
                md.push_str(&format!(
                    "{label} (medians): CPU per request {}; req/s {}.\n",
                    fmt_ratio(cpu(&get(a)), cpu(&get(b))),
                    fmt_ratio(sm(&get(a), |s| Some(s.rps)), sm(&get(b), |s| Some(s.rps)))
                ));
            }
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rps: f64, cpu: f64) -> GSample {
        GSample {
            rps,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            cpu_us: Some(cpu),
            cpu_pct: Some(99.0),
            up_cpu_us: Some(10.0),
            ..GSample::default()
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(0.7), "met");
        assert_eq!(verdict(0.71), "not met");
    }

    #[test]
    fn tables_and_ratios() {
        let rows = vec![
            GRow::GrpcDirect,
            GRow::GrpcRingmesh,
            GRow::GrpcNginx,
            GRow::H1Nginx,
            GRow::H2cNginx,
        ];
        let mut m = HashMap::new();
        m.insert(
            GRow::GrpcDirect,
            vec![GSample {
                rps: 50000.0,
                ..GSample::default()
            }],
        );
        m.insert(GRow::GrpcRingmesh, vec![s(40000.0, 12.0), s(41000.0, 13.0)]);
        m.insert(GRow::GrpcNginx, vec![s(30000.0, 20.0), s(31000.0, 20.0)]);
        m.insert(GRow::H1Nginx, vec![s(30000.0, 20.0)]);
        m.insert(GRow::H2cNginx, vec![s(30000.0, 10.0)]);
        let md = grpc_report(&rows, &m);
        assert!(md.contains("| direct (no proxy) | 50000 | — | — | 0 | — | — | — | — |"));
        assert!(md.contains("CPU per request **0.62×** (target ≤ 0.7×: **met**; 12.50 vs 20 µs); req/s 1.33×; per round 0.60×, 0.65×."));
        assert!(!md.contains("HAProxy ÷"));
        assert!(md.contains("nginx h2c ÷ HTTP/1.1 (medians): CPU per request 0.50×; req/s 1.00×."));
        assert!(!md.contains("ringmesh h2c ÷"));
    }
}
