//! Smoke test of `ringmesh-bench control`: 5 simulated proxies, 3 services,
//! one change, against the `ringmesh-control` binary of the same target dir
//! (`cargo test --workspace` builds it, since the control crate has
//! integration tests). Keeps the bench from rotting; not a measurement.
//! `RINGMESH_CONTROL_BIN` names another binary.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn control_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGMESH_CONTROL_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/ringmesh-bench → target/<profile>/ringmesh-control
    let p = PathBuf::from(env!("CARGO_BIN_EXE_ringmesh-bench")).with_file_name("ringmesh-control");
    p.exists().then_some(p)
}

#[test]
fn control_bench_smoke() {
    let Some(control) = control_bin() else {
        eprintln!(
            "skipped: no ringmesh-control next to ringmesh-bench (run `cargo build -p ringmesh-control` or set RINGMESH_CONTROL_BIN)"
        );
        return;
    };
    let out = std::env::temp_dir().join(format!("ringmesh-bench-smoke-{}", std::process::id()));
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_ringmesh-bench"))
        .args([
            "control",
            "--proxies",
            "5",
            "--services",
            "3",
            "--changes",
            "1",
            "--grace-period",
            "300ms",
            "--timeout",
            "5s",
        ])
        .arg("--control-bin")
        .arg(&control)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    // svc-1 and svc-2 call svc-0: proxies 1, 2 and 4 see every event.
    for row in [
        "| change 1 (89/11) | 3 | 3 | 0 | 0 |",
        "| join (svc-0 instance) | 3 | 3 | 0 | 0 |",
        "| leave (stream dropped) | 3 | 3 | 0 | 0 |",
    ] {
        assert!(stdout.contains(row), "no {row:?} in\n{stdout}\n{stderr}");
    }
    assert!(
        stdout.contains("`ringmesh_control_connected_proxies` then: 5."),
        "{stdout}"
    );
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("control-n5-") && f.ends_with(".json")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("control-n5-") && f.ends_with(".md")),
        "{files:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
