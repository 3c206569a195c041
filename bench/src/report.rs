//! The Markdown output: number formatting, `median (min–max)` cells, ratios
//! to nginx and HAProxy, the per-scenario tables and the section header. Pure
//! functions of the samples, so the tables are unit-tested.

use crate::cli::Scenario;
use crate::load::Sample;
use crate::proxies::Row;
use crate::stats::{summarize, Summary};
use std::collections::HashMap;
use std::fmt::Write as _;

/// What a scenario hands back: its Markdown tables and, for the HTTP load
/// scenarios, the figures the chart draws.
pub struct Report {
    pub md: String,
    /// For the chart: (row, p50, p99, p99.9 medians in ms, CPU µs/req median).
    pub chart: Vec<ChartRow>,
}

/// (row name, p50, p99, p99.9 medians in ms, CPU µs/request median).
pub type ChartRow = (String, f64, f64, f64, Option<f64>);

/// Formats a figure with a sensible number of digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `median (min–max)`, or `—` when there is nothing.
pub fn fmt_summary(s: Option<Summary>) -> String {
    match s {
        None => "—".to_string(),
        Some(s) if s.min == s.max => fmt_num(s.median),
        Some(s) => format!(
            "{} ({}–{})",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        ),
    }
}

/// `a / b` of two medians as `0.73×`, or `—`.
pub fn fmt_ratio(a: Option<Summary>, b: Option<Summary>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median != 0.0 => format!("{:.2}×", a.median / b.median),
        _ => "—".to_string(),
    }
}

/// A Markdown table.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}", " --- |".repeat(header.len()));
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

/// Median (min–max) of one figure over a row's repeats.
pub fn sm(v: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<Summary> {
    let xs: Vec<f64> = v.iter().filter_map(f).collect();
    summarize(&xs)
}

/// The tables of a load scenario (tcp: MB/s and CPU per GB; otherwise req/s,
/// latency, errors, CPU per request, peak RSS), each followed by the ratios of
/// the medians to nginx's and HAProxy's.
pub fn load_report(sc: Scenario, rows: &[Row], samples: &HashMap<Row, Vec<Sample>>) -> Report {
    let get = |row: Row| samples.get(&row).cloned().unwrap_or_default();
    let mut md = String::new();
    let mut chart = vec![];
    if sc == Scenario::Tcp {
        let header = ["proxy", "MB/s", "CPU s/GB", "peak RSS MB", "errors"];
        let mut t = vec![];
        for &row in rows {
            let v = get(row);
            t.push(vec![
                row.name().to_string(),
                fmt_summary(sm(&v, |s| Some(s.mb_per_s))),
                fmt_summary(sm(&v, |s| s.cpu_s_per_gb)),
                fmt_summary(sm(&v, |s| s.peak_rss_mb)),
                fmt_summary(sm(&v, |s| Some(s.errors))),
            ]);
        }
        md.push_str(&markdown_table(&header, &t));
        md.push('\n');
        let header = [
            "proxy",
            "MB/s ÷ nginx",
            "÷ HAProxy",
            "CPU/GB ÷ nginx",
            "÷ HAProxy",
        ];
        let mut t = vec![];
        let ng = get(Row::Nginx);
        let hp = get(Row::Haproxy);
        for &row in rows {
            let v = get(row);
            t.push(vec![
                row.name().to_string(),
                fmt_ratio(sm(&v, |s| Some(s.mb_per_s)), sm(&ng, |s| Some(s.mb_per_s))),
                fmt_ratio(sm(&v, |s| Some(s.mb_per_s)), sm(&hp, |s| Some(s.mb_per_s))),
                fmt_ratio(sm(&v, |s| s.cpu_s_per_gb), sm(&ng, |s| s.cpu_s_per_gb)),
                fmt_ratio(sm(&v, |s| s.cpu_s_per_gb), sm(&hp, |s| s.cpu_s_per_gb)),
            ]);
        }
        md.push_str(&markdown_table(&header, &t));
    } else {
        let header = [
            "proxy",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "CPU µs/req",
            "peak RSS MB",
        ];
        let mut t = vec![];
        for &row in rows {
            let v = get(row);
            t.push(vec![
                row.name().to_string(),
                fmt_summary(sm(&v, |s| Some(s.rps))),
                fmt_summary(sm(&v, |s| Some(s.p50_ms))),
                fmt_summary(sm(&v, |s| Some(s.p99_ms))),
                fmt_summary(sm(&v, |s| s.p999_ms)),
                fmt_summary(sm(&v, |s| Some(s.errors))),
                fmt_summary(sm(&v, |s| s.cpu_us_per_req)),
                fmt_summary(sm(&v, |s| s.peak_rss_mb)),
            ]);
            chart.push((
                row.name().to_string(),
                sm(&v, |s| Some(s.p50_ms)).map(|s| s.median).unwrap_or(0.0),
                sm(&v, |s| Some(s.p99_ms)).map(|s| s.median).unwrap_or(0.0),
                sm(&v, |s| s.p999_ms).map(|s| s.median).unwrap_or(0.0),
                sm(&v, |s| s.cpu_us_per_req).map(|s| s.median),
            ));
        }
        md.push_str(&markdown_table(&header, &t));
        md.push_str(
            "\nRatios of medians (req/s: higher is better; CPU, p99, RSS: lower is better):\n\n",
        );
        let header = [
            "proxy",
            "req/s ÷ nginx",
            "÷ HAProxy",
            "CPU/req ÷ nginx",
            "÷ HAProxy",
            "p99 ÷ nginx",
            "÷ HAProxy",
            "peak RSS ÷ nginx",
            "÷ HAProxy",
        ];
        let ng = get(Row::Nginx);
        let hp = get(Row::Haproxy);
        let mut t = vec![];
        for &row in rows {
            let v = get(row);
            let mut cells = vec![row.name().to_string()];
            type F = fn(&Sample) -> Option<f64>;
            let fs: [F; 4] = [
                |s| Some(s.rps),
                |s| s.cpu_us_per_req,
                |s| Some(s.p99_ms),
                |s| s.peak_rss_mb,
            ];
            for f in fs {
                cells.push(fmt_ratio(sm(&v, f), sm(&ng, f)));
                cells.push(fmt_ratio(sm(&v, f), sm(&hp, f)));
            }
            t.push(cells);
        }
        md.push_str(&markdown_table(&header, &t));
    }
    Report { md, chart }
}

/// The heading and provenance lines above every scenario's tables.
#[allow(clippy::too_many_arguments)]
pub fn section_header(
    sc: Scenario,
    describe: &str,
    stamp: &str,
    machine: &str,
    versions: &str,
    cmdline: &str,
    repeats: usize,
    duration: u64,
) -> String {
    format!(
        "### {} — {}\n\n- date: {stamp}\n- machine: {machine}\n- tools: {versions}\n- command: `{}`\n- method: upstream and load generator pinned to CPU 1, each proxy 1 worker pinned to CPU 0 (memory: 2 workers on CPUs 0,1); {} repeat(s) of {} s, interleaved; median (min–max)\n\n",
        sc.name(),
        describe,
        cmdline,
        repeats,
        duration
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        let s = summarize(&[3.0, 1.0, 2.0]);
        assert_eq!(fmt_summary(s), "2 (1–3)");
        assert_eq!(fmt_summary(summarize(&[0.5, 1.25])), "0.875 (0.500–1.250)");
        assert_eq!(fmt_summary(summarize(&[7.0, 7.0])), "7");
        assert_eq!(fmt_summary(None), "—");
        assert_eq!(fmt_ratio(s, summarize(&[4.0])), "0.50×");
        assert_eq!(fmt_ratio(None, s), "—");
        assert_eq!(fmt_ratio(s, summarize(&[0.0])), "—");
        assert_eq!(fmt_num(51048.3), "51048");
        assert_eq!(fmt_num(123.45), "123.5");
        assert_eq!(fmt_num(17.219), "17.22");
        assert_eq!(fmt_num(0.4812), "0.481");
        let t = markdown_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
    }

    fn sample(rps: f64, p99_ms: f64, cpu: Option<f64>) -> Sample {
        Sample {
            rps,
            p50_ms: 0.5,
            p99_ms,
            p999_ms: Some(p99_ms * 2.0),
            cpu_us_per_req: cpu,
            peak_rss_mb: cpu.map(|_| 5.0),
            ..Sample::default()
        }
    }

    #[test]
    fn http_tables_and_ratios() {
        let rows = [Row::Uring, Row::Nginx, Row::Haproxy, Row::Direct];
        let mut m = HashMap::new();
        m.insert(
            Row::Uring,
            vec![sample(110.0, 1.0, Some(8.0)), sample(130.0, 3.0, Some(9.0))],
        );
        m.insert(Row::Nginx, vec![sample(100.0, 2.0, Some(10.0))]);
        m.insert(Row::Haproxy, vec![sample(200.0, 4.0, Some(16.0))]);
        m.insert(Row::Direct, vec![sample(400.0, 0.5, None)]);
        let r = load_report(Scenario::Http1, &rows, &m);
        assert!(r.md.contains(
            "| ringmesh io_uring | 120 (110–130) | 0.500 | 2 (1–3) | 4 (2–6) | 0 | 8.500 (8–9) | 5 |"
        ), "{}", r.md);
        assert!(
            r.md.contains("| direct (no proxy) | 400 | 0.500 | 0.500 | 1 | 0 | — | — |"),
            "{}",
            r.md
        );
        assert!(r.md.contains(
            "| ringmesh io_uring | 1.20× | 0.60× | 0.85× | 0.53× | 1.00× | 0.50× | 1.00× | 1.00× |"
        ), "{}", r.md);
        assert_eq!(r.chart.len(), 4);
        assert_eq!(
            r.chart[0],
            ("ringmesh io_uring".to_string(), 0.5, 2.0, 4.0, Some(8.5))
        );
        assert_eq!(r.chart[3].4, None);
    }

    #[test]
    fn tcp_tables() {
        let mut m = HashMap::new();
        let s = |mb: f64, gb: f64| Sample {
            mb_per_s: mb,
            cpu_s_per_gb: Some(gb),
            ..Sample::default()
        };
        m.insert(Row::Epoll, vec![s(1300.0, 0.75)]);
        m.insert(Row::Nginx, vec![s(850.0, 1.5)]);
        let r = load_report(Scenario::Tcp, &[Row::Epoll, Row::Nginx, Row::Haproxy], &m);
        assert!(r
            .md
            .starts_with("| proxy | MB/s | CPU s/GB | peak RSS MB | errors |"));
        assert!(
            r.md.contains("| ringmesh epoll | 1300 | 0.750 | — | 0 |"),
            "{}",
            r.md
        );
        assert!(
            r.md.contains("| ringmesh epoll | 1.53× | — | 0.50× | — |"),
            "{}",
            r.md
        );
        assert!(r.chart.is_empty());
    }

    #[test]
    fn header() {
        let h = section_header(
            Scenario::Rate,
            "d",
            "2026-01-01T00:00:00Z",
            "m",
            "v",
            "cmd",
            3,
            5,
        );
        assert!(h.starts_with("### rate — d\n\n- date: 2026-01-01T00:00:00Z\n- machine: m\n- tools: v\n- command: `cmd`\n"));
        assert!(h.ends_with("3 repeat(s) of 5 s, interleaved; median (min–max)\n\n"));
    }
}
