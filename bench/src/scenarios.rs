//! The load scenarios (http1, body16k, body1m, conns1000, close, tcp, rate):
//! one proxy worker each, a warm-up second per row, then `--repeats` rounds
//! interleaved across the rows so drift hits every row alike.

use crate::cli::{Opts, Scenario};
use crate::load::{measure, Sample};
use crate::parse::WRK_LUA;
use crate::proxies::{setup, Mode, Row, SetupCfg};
use crate::report::{load_report, Report};
use crate::{write_file, Res};
use std::collections::HashMap;
use std::path::Path;

/// Runs one load scenario against every row of `o.rows` and builds its tables.
pub fn load_scenario(o: &Opts, bin: &Path, sc: Scenario) -> Res<Report> {
    let rows = o.rows.clone();
    let mode = if sc == Scenario::Tcp {
        Mode::Tcp
    } else {
        Mode::Http
    };
    let cfg = SetupCfg {
        mode,
        workers: 1,
        maxconn: 4096,
        under_valgrind: false,
    };
    let env = setup(bin, &rows, &cfg)?;
    write_file(&env.dir.join("report.lua"), WRK_LUA)?;
    // Warm-up (not counted): fills pools and caches.
    for &row in &rows {
        measure(o, &env, sc, row, 1).map_err(|e| format!("warm-up {}: {e}", row.name()))?;
    }
    let mut samples: HashMap<Row, Vec<Sample>> = HashMap::new();
    for round in 1..=o.repeats {
        for &row in &rows {
            let s = measure(o, &env, sc, row, o.duration)?;
            eprintln!(
                "[bench] {} round {round} {:<18} req/s {:>9.0} MB/s {:>8.1} p99 {:>7.3} ms CPU µs/req {} errors {}",
                sc.name(),
                row.name(),
                s.rps,
                s.mb_per_s,
                s.p99_ms,
                s.cpu_us_per_req.map(|v| format!("{v:.2}")).unwrap_or("—".into()),
                s.errors
            );
            samples.entry(row).or_default().push(s);
        }
    }
    drop(env);
    Ok(load_report(sc, &rows, &samples))
}
