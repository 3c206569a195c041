//! The memory scenario: 2 workers per proxy; idle RSS/PSS, then RSS growth while
//! `--idle-conns` keep-alive connections (one request each) are held open,
//! giving bytes per idle connection.

use crate::cli::Opts;
use crate::load::{http_get, GET};
use crate::process::{pss_sum, rss_sum};
use crate::proxies::{setup, Mode, Row, SetupCfg};
use crate::report::{markdown_table, Report};
use crate::Res;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// Measures each proxy row in turn (no repeats: RSS moves in whole pages).
pub fn memory_scenario(o: &Opts, bin: &Path) -> Res<Report> {
    let rows: Vec<Row> = o
        .rows
        .iter()
        .copied()
        .filter(|r| *r != Row::Direct)
        .collect();
    let cfg = SetupCfg {
        mode: Mode::Http,
        workers: 2,
        maxconn: 8000,
        under_valgrind: false,
    };
    let env = setup(bin, &rows, &cfg)?;
    std::thread::sleep(Duration::from_secs(1));
    let mut t = vec![];
    for &row in &rows {
        let pids = env.mem_pids.get(&row).cloned().unwrap_or_default();
        let idle_rss = rss_sum(&pids, "VmRSS");
        let idle_pss = pss_sum(&pids);
        // Warm: one connection, a few requests, so per-process lazy setup is paid.
        {
            let mut s = TcpStream::connect(("127.0.0.1", row.port())).map_err(|e| e.to_string())?;
            let mut buf = vec![];
            for _ in 0..20 {
                http_get(&mut s, &mut buf, GET).map_err(|e| format!("{}: {e}", row.name()))?;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let base = rss_sum(&pids, "VmRSS");
        let mut conns = Vec::with_capacity(o.idle_conns);
        let mut buf = vec![];
        let mut failed = 0;
        for _ in 0..o.idle_conns {
            match TcpStream::connect(("127.0.0.1", row.port())) {
                Ok(mut s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    match http_get(&mut s, &mut buf, GET) {
                        Ok(200) => conns.push(s),
                        _ => failed += 1,
                    }
                }
                Err(_) => failed += 1,
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let held = rss_sum(&pids, "VmRSS");
        let held_pss = pss_sum(&pids);
        let n = conns.len().max(1);
        let per_conn = (held as f64 - base as f64) / n as f64;
        eprintln!(
            "[bench] memory {:<18} idle RSS {:.2} MB, with {} conns {:.2} MB → {:.0} B/conn ({} failed)",
            row.name(),
            idle_rss as f64 / 1e6,
            conns.len(),
            held as f64 / 1e6,
            per_conn,
            failed
        );
        t.push(vec![
            row.name().to_string(),
            pids.len().to_string(),
            format!("{:.2}", idle_rss as f64 / 1e6),
            format!("{:.2}", idle_pss as f64 / 1e6),
            format!("{:.2}", base as f64 / 1e6),
            format!("{}", conns.len()),
            format!("{:.2}", held as f64 / 1e6),
            format!("{:.2}", held_pss as f64 / 1e6),
            format!("{per_conn:.0}"),
            failed.to_string(),
        ]);
        drop(conns);
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(env);
    let md = markdown_table(
        &[
            "proxy (2 workers)",
            "processes",
            "idle RSS MB",
            "idle PSS MB",
            "RSS after 20 req MB",
            "idle conns held",
            "RSS with conns MB",
            "PSS with conns MB",
            "bytes per idle conn",
            "conns failed",
        ],
        &t,
    );
    Ok(Report { md, chart: vec![] })
}
