//! Smoke test of `ringmesh-bench grpc`: every row for one 1-second round
//! against the `ringmesh-proxy` and `ringmesh-testgrpc` of the same target dir
//! (`cargo build -p ringmesh-engine -p ringmesh-testgrpc` builds them;
//! `RINGMESH_PROXY_BIN` / `RINGMESH_TESTGRPC_BIN` name others). Keeps the
//! bench from rotting and runs its pre-flight (a real gRPC call through each
//! target); not a measurement. Skipped without the binaries, h2load
//! (Debian nghttp2-client), nginx, haproxy or taskset.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn bin(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/ringmesh-bench → target/<profile>/NAME
    let p = PathBuf::from(env!("CARGO_BIN_EXE_ringmesh-bench")).with_file_name(name);
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
fn grpc_bench_smoke() {
    let (Some(proxy), Some(testgrpc)) = (
        bin("RINGMESH_PROXY_BIN", "ringmesh-proxy"),
        bin("RINGMESH_TESTGRPC_BIN", "ringmesh-testgrpc"),
    ) else {
        eprintln!(
            "skipped: no ringmesh-proxy or ringmesh-testgrpc next to ringmesh-bench (run `cargo build -p ringmesh-engine -p ringmesh-testgrpc` or set RINGMESH_PROXY_BIN / RINGMESH_TESTGRPC_BIN)"
        );
        return;
    };
    for t in ["h2load", "nginx", "haproxy", "taskset"] {
        if !have(t) {
            eprintln!("skipped: no {t} on this machine");
            return;
        }
    }
    let out =
        std::env::temp_dir().join(format!("ringmesh-bench-grpc-smoke-{}", std::process::id()));
    // Away from the default 20200.. so a real run elsewhere does not
    // collide, and below the kernel's ephemeral ports (32768..).
    let base = 24000 + (std::process::id() % 250) * 20;
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_ringmesh-bench"))
        .args([
            "grpc",
            "--duration",
            "1",
            "--repeats",
            "1",
            "--connections",
            "2",
            "--streams",
            "4",
            "--no-install",
            "--port-base",
            &base.to_string(),
        ])
        .arg("--proxy-bin")
        .arg(&proxy)
        .arg("--testgrpc-bin")
        .arg(&testgrpc)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("10 row(s) answered as configured"),
        "{stderr}"
    );
    for heading in [
        "#### gRPC unary",
        "#### Plain HTTP, HTTP/1.1 vs h2c",
        "ringmesh ÷ nginx (medians): CPU per request **",
        "ringmesh bridge HTTP/1.1 → h2c upstream ÷ HTTP/1.1 → HTTP/1.1",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} in\n{stdout}");
    }
    // Every data row: requests served, no errors (5th column).
    let mut rows = 0;
    for line in stdout.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if matches!(cells[1], "target" | "---") {
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
            .any(|f| f.starts_with("grpc-") && f.ends_with(".md")),
        "{files:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
