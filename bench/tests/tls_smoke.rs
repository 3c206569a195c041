//! Smoke test of `ringmesh-bench tls`: every row (the 16 KiB mesh pair too)
//! for one 1-second round
//! against the `ringmesh-proxy` of the same target dir (`cargo build -p
//! ringmesh-engine` builds it; `RINGMESH_PROXY_BIN` names another). Keeps the
//! bench from rotting and checks that each endpoint really speaks TLS (the
//! harness's pre-flight); not a measurement. Skipped without nginx, wrk or
//! taskset on the machine.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn proxy_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGMESH_PROXY_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/ringmesh-bench → target/<profile>/ringmesh-proxy
    let p = PathBuf::from(env!("CARGO_BIN_EXE_ringmesh-bench")).with_file_name("ringmesh-proxy");
    p.exists().then_some(p)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn tls_bench_smoke() {
    let Some(proxy) = proxy_bin() else {
        eprintln!(
            "skipped: no ringmesh-proxy next to ringmesh-bench (run `cargo build -p ringmesh-engine` or set RINGMESH_PROXY_BIN)"
        );
        return;
    };
    for t in ["nginx", "wrk", "taskset"] {
        if !have(t) {
            eprintln!("skipped: no {t} on this machine");
            return;
        }
    }
    let out = std::env::temp_dir().join(format!("ringmesh-bench-tls-smoke-{}", std::process::id()));
    // Away from the default 20100.. so a real run elsewhere does not collide.
    let base = 30000 + (std::process::id() % 250) * 20;
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_ringmesh-bench"))
        .args([
            "tls",
            "--duration",
            "1",
            "--repeats",
            "1",
            "--connections",
            "8",
            "--hs-clients",
            "4",
            "--no-install",
            "--port-base",
            &base.to_string(),
        ])
        .arg("--proxy-bin")
        .arg(&proxy)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("every endpoint answered as configured"),
        "{stderr}"
    );
    for heading in [
        "#### Mesh hop:",
        "#### Mesh hop, 16 KiB response body",
        "#### mTLS handshakes",
        "#### HTTPS edge, keep-alive",
        "#### HTTPS edge, connection per request",
        "mTLS ÷ plaintext (medians): CPU per request (A+B)",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} in\n{stdout}");
    }
    // Every data row: requests served, no errors (5th column).
    let mut rows = 0;
    for line in stdout.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if matches!(cells[1], "hop A → B" | "server" | "proxy" | "---") {
            continue;
        }
        rows += 1;
        assert_ne!(cells[2], "0", "no requests: {line}");
        assert_eq!(cells[5], "0", "errors: {line}\n{stdout}\n{stderr}");
    }
    assert_eq!(rows, 10, "{stdout}");
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("tls-") && f.ends_with(".md")),
        "{files:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
