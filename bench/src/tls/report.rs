//! The tables of a `tls` run: the mesh hop (plaintext vs mTLS, 12-byte and
//! 16 KiB bodies, with the mTLS ÷ plaintext ratios and the ≤ 1.3× target), handshakes per second per
//! core, and the HTTPS edge (keep-alive and connection per request) against
//! nginx. Pure functions of the samples, unit-tested.

use super::TRow;
use crate::report::{fmt_ratio, fmt_summary, markdown_table};
use crate::stats::{summarize, Summary};
use std::collections::HashMap;

/// One measured run of one row.
#[derive(Clone, Default, Debug)]
pub struct TSample {
    /// Requests (or, handshake rows, connections) per second.
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: f64,
    /// CPU µs per request (per handshake) of every process of the row.
    pub cpu_us: Option<f64>,
    /// The same split per process (mesh rows: A, then B).
    pub cpu_us_parts: Vec<f64>,
    /// CPU the row's processes used over the run, in % of one core.
    pub cpu_pct: Option<f64>,
}

fn sm(v: &[TSample], f: impl Fn(&TSample) -> Option<f64>) -> Option<Summary> {
    let xs: Vec<f64> = v.iter().filter_map(f).collect();
    summarize(&xs)
}

/// The mesh hop's target: CPU per request with mTLS ≤ 1.3× plaintext.
pub const MESH_TARGET: f64 = 1.3;

/// One mesh-hop table (plaintext and mTLS rows of one body size) and, when
/// both ran, the mTLS ÷ plaintext line with the verdict against [`MESH_TARGET`].
fn mesh_table(
    rows: &[TRow],
    samples: &HashMap<TRow, Vec<TSample>>,
    plain: TRow,
    mtls: TRow,
) -> String {
    let get = |r: TRow| samples.get(&r).cloned().unwrap_or_default();
    let has = |r: TRow| rows.contains(&r);
    let header = [
        "hop A → B",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU µs/req A+B",
        "A",
        "B",
        "CPU % (A+B)",
    ];
    let mut t = vec![];
    for r in [plain, mtls] {
        if !has(r) {
            continue;
        }
        let v = get(r);
        t.push(vec![
            r.name().to_string(),
            fmt_summary(sm(&v, |s| Some(s.rps))),
            fmt_summary(sm(&v, |s| Some(s.p50_ms))),
            fmt_summary(sm(&v, |s| Some(s.p99_ms))),
            fmt_summary(sm(&v, |s| Some(s.errors))),
            fmt_summary(sm(&v, |s| s.cpu_us)),
            fmt_summary(sm(&v, |s| s.cpu_us_parts.first().copied())),
            fmt_summary(sm(&v, |s| s.cpu_us_parts.get(1).copied())),
            fmt_summary(sm(&v, |s| s.cpu_pct)),
        ]);
    }
    let mut md = markdown_table(&header, &t);
    if !(has(plain) && has(mtls)) {
        md.push('\n');
        return md;
    }
    let (p, m) = (get(plain), get(mtls));
    let cpu = |v: &[TSample]| sm(v, |s| s.cpu_us);
    let verdict = match (cpu(&m), cpu(&p)) {
        (Some(a), Some(b)) if b.median > 0.0 => {
            if a.median / b.median <= MESH_TARGET {
                "**met**"
            } else {
                "**not met**"
            }
        }
        _ => "—",
    };
    // Per round too: the rows of a round ran back to back.
    let per_round: Vec<String> = m
        .iter()
        .zip(&p)
        .filter_map(|(a, b)| match (a.cpu_us, b.cpu_us) {
            (Some(x), Some(y)) if y > 0.0 => Some(format!("{:.2}×", x / y)),
            _ => None,
        })
        .collect();
    md.push_str(&format!(
        "\nmTLS ÷ plaintext (medians): CPU per request (A+B) **{}** (target ≤ {MESH_TARGET}×: {verdict}); A {}, B {}; req/s {}; p99 {}; per round {}.\n\n",
        fmt_ratio(cpu(&m), cpu(&p)),
        fmt_ratio(
            sm(&m, |s| s.cpu_us_parts.first().copied()),
            sm(&p, |s| s.cpu_us_parts.first().copied())
        ),
        fmt_ratio(
            sm(&m, |s| s.cpu_us_parts.get(1).copied()),
            sm(&p, |s| s.cpu_us_parts.get(1).copied())
        ),
        fmt_ratio(sm(&m, |s| Some(s.rps)), sm(&p, |s| Some(s.rps))),
        fmt_ratio(sm(&m, |s| Some(s.p99_ms)), sm(&p, |s| Some(s.p99_ms))),
        if per_round.is_empty() { "—".to_string() } else { per_round.join(", ") },
    ));
    md
}

/// Every table for the rows that ran, in the order mesh, handshakes, edge,
/// edge-close.
pub fn tls_report(rows: &[TRow], samples: &HashMap<TRow, Vec<TSample>>) -> String {
    let get = |r: TRow| samples.get(&r).cloned().unwrap_or_default();
    let has = |r: TRow| rows.contains(&r);
    let mut md = String::new();

    for (title, plain, mtls) in [
        (
            "Mesh hop: wrk → ringmesh A → ringmesh B → nginx, keep-alive",
            TRow::MeshPlain,
            TRow::MeshMtls,
        ),
        (
            "Mesh hop, 16 KiB response body: wrk → ringmesh A → ringmesh B → nginx, keep-alive",
            TRow::MeshPlain16k,
            TRow::MeshMtls16k,
        ),
    ] {
        if has(plain) || has(mtls) {
            md.push_str(&format!("#### {title}\n\n"));
            md.push_str(&mesh_table(rows, samples, plain, mtls));
        }
    }

    if has(TRow::HsRingmesh) || has(TRow::HsNginx) {
        md.push_str(
            "#### mTLS handshakes: new connection → TLS 1.3 mTLS handshake → 1 request → close\n\n",
        );
        let header = [
            "server",
            "handshakes/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "server CPU %",
            "CPU µs/handshake",
            "handshakes/s per core",
        ];
        let mut t = vec![];
        for r in [TRow::HsRingmesh, TRow::HsNginx] {
            if !has(r) {
                continue;
            }
            let v = get(r);
            t.push(vec![
                r.name().to_string(),
                fmt_summary(sm(&v, |s| Some(s.rps))),
                fmt_summary(sm(&v, |s| Some(s.p50_ms))),
                fmt_summary(sm(&v, |s| Some(s.p99_ms))),
                fmt_summary(sm(&v, |s| Some(s.errors))),
                fmt_summary(sm(&v, |s| s.cpu_pct)),
                fmt_summary(sm(&v, |s| s.cpu_us)),
                fmt_summary(sm(&v, |s| s.cpu_us.filter(|c| *c > 0.0).map(|c| 1e6 / c))),
            ]);
        }
        md.push_str(&markdown_table(&header, &t));
        if has(TRow::HsRingmesh) && has(TRow::HsNginx) {
            let (r, n) = (get(TRow::HsRingmesh), get(TRow::HsNginx));
            md.push_str(&format!(
                "\nringmesh ÷ nginx (medians): CPU per handshake {}; handshakes/s {}.\n",
                fmt_ratio(sm(&r, |s| s.cpu_us), sm(&n, |s| s.cpu_us)),
                fmt_ratio(sm(&r, |s| Some(s.rps)), sm(&n, |s| Some(s.rps))),
            ));
        }
        md.push('\n');
    }

    for (title, ring, ngx) in [
        (
            "HTTPS edge, keep-alive: wrk https:// → proxy → nginx",
            TRow::EdgeRingmesh,
            TRow::EdgeNginx,
        ),
        (
            "HTTPS edge, connection per request (`Connection: close`, a full handshake each)",
            TRow::CloseRingmesh,
            TRow::CloseNginx,
        ),
    ] {
        if !has(ring) && !has(ngx) {
            continue;
        }
        md.push_str(&format!("#### {title}\n\n"));
        let header = [
            "proxy",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "proxy CPU %",
            "CPU µs/req",
        ];
        let mut t = vec![];
        for r in [ring, ngx] {
            if !has(r) {
                continue;
            }
            let v = get(r);
            t.push(vec![
                r.name().to_string(),
                fmt_summary(sm(&v, |s| Some(s.rps))),
                fmt_summary(sm(&v, |s| Some(s.p50_ms))),
                fmt_summary(sm(&v, |s| Some(s.p99_ms))),
                fmt_summary(sm(&v, |s| Some(s.errors))),
                fmt_summary(sm(&v, |s| s.cpu_pct)),
                fmt_summary(sm(&v, |s| s.cpu_us)),
            ]);
        }
        md.push_str(&markdown_table(&header, &t));
        if has(ring) && has(ngx) {
            let (r, n) = (get(ring), get(ngx));
            md.push_str(&format!(
                "\nringmesh ÷ nginx (medians): req/s {}; CPU per request {}; p99 {}.\n",
                fmt_ratio(sm(&r, |s| Some(s.rps)), sm(&n, |s| Some(s.rps))),
                fmt_ratio(sm(&r, |s| s.cpu_us), sm(&n, |s| s.cpu_us)),
                fmt_ratio(sm(&r, |s| Some(s.p99_ms)), sm(&n, |s| Some(s.p99_ms))),
            ));
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rps: f64, cpu: f64, parts: &[f64]) -> TSample {
        TSample {
            rps,
            p50_ms: 0.5,
            p99_ms: 2.0,
            errors: 0.0,
            cpu_us: Some(cpu),
            cpu_us_parts: parts.to_vec(),
            cpu_pct: Some(99.0),
        }
    }

    #[test]
    fn tables() {
        let mut m = HashMap::new();
        m.insert(TRow::MeshPlain, vec![s(30000.0, 30.0, &[14.0, 16.0])]);
        m.insert(
            TRow::MeshMtls,
            vec![
                s(25000.0, 36.0, &[17.0, 19.0]),
                s(24000.0, 40.0, &[19.0, 21.0]),
            ],
        );
        m.insert(TRow::HsRingmesh, vec![s(2000.0, 400.0, &[400.0])]);
        m.insert(TRow::HsNginx, vec![s(2500.0, 320.0, &[320.0])]);
        m.insert(TRow::EdgeRingmesh, vec![s(40000.0, 20.0, &[20.0])]);
        let rows = [
            TRow::MeshPlain,
            TRow::MeshMtls,
            TRow::HsRingmesh,
            TRow::HsNginx,
            TRow::EdgeRingmesh,
        ];
        let md = tls_report(&rows, &m);
        assert!(
            md.contains("| mTLS | 24500 (24000–25000) | 0.500 | 2 | 0 | 38 (36–40) | 18 (17–19) | 20 (19–21) | 99 |"),
            "{md}"
        );
        assert!(
            md.contains("CPU per request (A+B) **1.27×** (target ≤ 1.3×: **met**); A 1.29×, B 1.25×; req/s 0.82×; p99 1.00×; per round 1.20×."),
            "{md}"
        );
        assert!(
            md.contains(
                "| ringmesh B inbound (mTLS strict) | 2000 | 0.500 | 2 | 0 | 99 | 400 | 2500 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("CPU per handshake 1.25×; handshakes/s 0.80×."),
            "{md}"
        );
        assert!(md.contains("#### HTTPS edge, keep-alive"), "{md}");
        assert!(!md.contains("connection per request"), "{md}");
        assert!(!md.contains("ringmesh ÷ nginx (medians): req/s"), "{md}");
        assert!(!md.contains("16 KiB"), "{md}");
        m.insert(TRow::MeshPlain16k, vec![s(10000.0, 50.0, &[24.0, 26.0])]);
        m.insert(TRow::MeshMtls16k, vec![s(9000.0, 70.0, &[34.0, 36.0])]);
        let both = [
            TRow::MeshPlain,
            TRow::MeshMtls,
            TRow::MeshPlain16k,
            TRow::MeshMtls16k,
        ];
        let md = tls_report(&both, &m);
        let big = &md[md.find("#### Mesh hop, 16 KiB response body").expect(&md)..];
        assert!(
            big.contains("CPU per request (A+B) **1.40×** (target ≤ 1.3×: **not met**); A 1.42×, B 1.38×; req/s 0.90×; p99 1.00×; per round 1.40×."),
            "{md}"
        );
        assert!(
            md.find("**met**").unwrap() < md.find("16 KiB").unwrap(),
            "{md}"
        );
        m.insert(TRow::MeshMtls, vec![s(20000.0, 45.0, &[20.0, 25.0])]);
        assert!(tls_report(&rows, &m).contains("**1.50×** (target ≤ 1.3×: **not met**)"));
    }
}
