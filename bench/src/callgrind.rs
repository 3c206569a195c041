//! The callgrind scenario: ringmesh under `valgrind --tool=callgrind`, one
//! keep-alive connection; user-space instructions per request from the Ir of
//! 1,100 minus 100 requests (`callgrind_control -z` / `-d`), per driver.

use crate::cli::Opts;
use crate::load::{http_get, GET};
use crate::parse::parse_callgrind_total;
use crate::process::run_bounded;
use crate::proxies::{setup, Mode, Row, SetupCfg};
use crate::report::{fmt_summary, markdown_table, Report};
use crate::stats::summarize;
use crate::Res;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The newest dump named `prefix*` that was not in `before`.
fn newest_dump(dir: &Path, prefix: &str, before: &[PathBuf]) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .filter(|p| !before.contains(p))
        .collect();
    v.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    v.pop()
}

/// Every dump named `prefix*` so far.
fn dumps(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `callgrind_control -z` (zero) or `-d` (dump) for the process `pid`.
fn callgrind_ctl(flag: &str, pid: u32) -> Res<()> {
    run_bounded(
        Command::new("callgrind_control")
            .arg(flag)
            .arg(pid.to_string()),
        Duration::from_secs(60),
    )
    .map(|_| ())
}

/// Ir per request for each ringmesh driver in `o.rows` (at most 3 repeats).
pub fn callgrind_scenario(o: &Opts, bin: &Path) -> Res<Report> {
    let mut t = vec![];
    let (small, big) = (100u64, 1100u64);
    for row in [Row::Uring, Row::Epoll] {
        if !o.rows.contains(&row) {
            continue;
        }
        let cfg = SetupCfg {
            mode: Mode::Http,
            workers: 1,
            maxconn: 4096,
            under_valgrind: true,
        };
        let env = setup(bin, &[row], &cfg)?;
        let pid = env.cpu_pids[&row][0];
        let prefix = format!("cg-{}", if row == Row::Uring { "uring" } else { "epoll" });
        let mut s = TcpStream::connect(("127.0.0.1", row.port())).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![];
        for _ in 0..200 {
            http_get(&mut s, &mut buf, GET).map_err(|e| format!("warm-up: {e}"))?;
        }
        let mut per_req = vec![];
        let mut cells = vec![];
        for _rep in 0..o.repeats.min(3) {
            let mut ir = [0u64; 2];
            for (i, n) in [small, big].into_iter().enumerate() {
                callgrind_ctl("-z", pid)?;
                for _ in 0..n {
                    http_get(&mut s, &mut buf, GET).map_err(|e| format!("request: {e}"))?;
                }
                let before = dumps(&env.dir, &prefix);
                callgrind_ctl("-d", pid)?;
                let deadline = Instant::now() + Duration::from_secs(30);
                let file = loop {
                    if let Some(f) = newest_dump(&env.dir, &prefix, &before) {
                        std::thread::sleep(Duration::from_millis(200));
                        break f;
                    }
                    if Instant::now() > deadline {
                        return Err("callgrind wrote no dump".into());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                };
                let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
                ir[i] = parse_callgrind_total(&text).ok_or("no totals in the callgrind dump")?;
            }
            let v = (ir[1] as f64 - ir[0] as f64) / (big - small) as f64;
            eprintln!(
                "[bench] callgrind {}: Ir({big}) {} Ir({small}) {} → {v:.0} Ir/request",
                row.name(),
                ir[1],
                ir[0]
            );
            cells.push(format!("{}/{}", ir[1], ir[0]));
            per_req.push(v);
        }
        drop(s);
        drop(env); // SIGKILL (see SetupCfg::under_valgrind)
        let sm = summarize(&per_req);
        t.push(vec![
            row.name().to_string(),
            fmt_summary(sm),
            cells.join(", "),
        ]);
    }
    let md = markdown_table(
        &[
            "driver",
            "instructions (Ir) per request",
            &format!("Ir({big}) / Ir({small}) per repeat"),
        ],
        &t,
    );
    Ok(Report { md, chart: vec![] })
}
