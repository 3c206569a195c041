//! `ringmesh-bench tls`: issue 5's benchmarks, side by side in one run.
//!
//! 1. **Mesh hop**: wrk (keep-alive, `-t1 -c32`) → ringmesh A (plain HTTP
//!    listener, cluster `b`) → ringmesh B (inbound listener) → nginx. Two
//!    pairs run at once: plaintext, and mTLS (A's cluster `mtls` with B's
//!    SPIFFE ID required, B's listener `mtls: strict`). CPU per request =
//!    utime+stime of A **and** B ÷ requests; the ratio mTLS ÷ plaintext is
//!    the issue's target (≤ 1.3×). Two bodies through the same processes: a
//!    12-byte one (`/`, the per-request cost) and 16 KiB (`/b16k`, where the
//!    per-byte record encryption shows).
//! 2. **Handshakes**: our multi-threaded rustls client ([`client`]) opening
//!    new connections to B's mTLS inbound listener (full TLS 1.3 mTLS
//!    handshake, one request, close) and to nginx with `ssl_verify_client on`
//!    (same SVID and key); CPU per handshake of the server and per core =
//!    1e6 ÷ that.
//! 3. **HTTPS edge**: wrk `https://` keep-alive and `Connection: close`
//!    against ringmesh's edge listener and nginx `listen ssl` (same ECDSA
//!    P-256 certificate and key, TLS 1.3), nginx upstream behind both.
//!
//! Pinning as in the rest of the harness: every proxy 1 worker on CPU 0 (the
//! mesh hop's A and B **share** CPU 0), the upstream nginx, wrk and our client
//! on CPU 1. Rounds interleave the rows; median (min–max) over `--repeats`.

pub mod certs;
pub mod client;
pub mod config;
pub mod report;

use crate::cli::workspace_root;
use crate::parse::{parse_wrk, WRK_LUA};
use crate::process::{
    children_of, clk_tck, cpu_ticks, port_free, run_bounded, spawn, stop_children_on_interrupt,
    wait_port, Proc,
};
use crate::{sh, write_file, Res};
use certs::Certs;
use client::{preflight, Expect};
use config::Ports;
use report::{tls_report, TSample};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One row of the tables.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TRow {
    MeshPlain,
    MeshMtls,
    MeshPlain16k,
    MeshMtls16k,
    HsRingmesh,
    HsNginx,
    EdgeRingmesh,
    EdgeNginx,
    CloseRingmesh,
    CloseNginx,
}

pub const ALL_TROWS: [TRow; 10] = [
    TRow::MeshPlain,
    TRow::MeshMtls,
    TRow::MeshPlain16k,
    TRow::MeshMtls16k,
    TRow::HsRingmesh,
    TRow::HsNginx,
    TRow::EdgeRingmesh,
    TRow::EdgeNginx,
    TRow::CloseRingmesh,
    TRow::CloseNginx,
];

impl TRow {
    pub fn name(self) -> &'static str {
        match self {
            TRow::MeshPlain | TRow::MeshPlain16k => "plaintext",
            TRow::MeshMtls | TRow::MeshMtls16k => "mTLS",
            TRow::HsRingmesh => "ringmesh B inbound (mTLS strict)",
            TRow::HsNginx => "nginx ssl_verify_client on",
            TRow::EdgeRingmesh | TRow::CloseRingmesh => "ringmesh edge (tls)",
            TRow::EdgeNginx | TRow::CloseNginx => "nginx listen ssl",
        }
    }
    /// The row's word on the command line (log lines too).
    pub fn id(self) -> &'static str {
        match self {
            TRow::MeshPlain => "mesh-plain",
            TRow::MeshMtls => "mesh-mtls",
            TRow::MeshPlain16k => "mesh16k-plain",
            TRow::MeshMtls16k => "mesh16k-mtls",
            TRow::HsRingmesh => "hs-ringmesh",
            TRow::HsNginx => "hs-nginx",
            TRow::EdgeRingmesh => "edge-ringmesh",
            TRow::EdgeNginx => "edge-nginx",
            TRow::CloseRingmesh => "close-ringmesh",
            TRow::CloseNginx => "close-nginx",
        }
    }
    /// Where the load goes.
    pub fn port(self, p: Ports) -> u16 {
        match self {
            TRow::MeshPlain | TRow::MeshPlain16k => p.a_plain(),
            TRow::MeshMtls | TRow::MeshMtls16k => p.a_mtls(),
            TRow::HsRingmesh => p.b_mtls(),
            TRow::HsNginx => p.nginx_mtls(),
            TRow::EdgeRingmesh | TRow::CloseRingmesh => p.edge(),
            TRow::EdgeNginx | TRow::CloseNginx => p.nginx_edge(),
        }
    }
    /// The upstream path the load asks for: `/` (12 bytes) or `/b16k`.
    pub fn path(self) -> &'static str {
        match self {
            TRow::MeshPlain16k | TRow::MeshMtls16k => "/b16k",
            _ => "/",
        }
    }
    /// The least response body a request of this row must carry (checked
    /// from wrk's byte count, so a 16 KiB row cannot silently serve 12 bytes).
    fn min_body(self) -> u64 {
        match self {
            TRow::MeshPlain16k | TRow::MeshMtls16k => BODY_16K as u64,
            _ => 0,
        }
    }
    fn is_nginx(self) -> bool {
        matches!(self, TRow::HsNginx | TRow::EdgeNginx | TRow::CloseNginx)
    }
}

/// The large response body of the `mesh16k-*` rows (a static file of the upstream).
pub const BODY_16K: usize = 16 * 1024;

/// A word of `--rows`: a group (`mesh`, `mesh16k`, `handshakes`, `edge`,
/// `edge-close`) or one row id.
pub fn parse_rows(s: &str) -> Res<Vec<TRow>> {
    let mut v = vec![];
    for w in s.split(',') {
        let add: &[TRow] = match w {
            "mesh" => &[TRow::MeshPlain, TRow::MeshMtls],
            "mesh16k" => &[TRow::MeshPlain16k, TRow::MeshMtls16k],
            "handshakes" | "hs" => &[TRow::HsRingmesh, TRow::HsNginx],
            "edge" => &[TRow::EdgeRingmesh, TRow::EdgeNginx],
            "edge-close" | "close" => &[TRow::CloseRingmesh, TRow::CloseNginx],
            _ => match ALL_TROWS.iter().find(|r| r.id() == w) {
                Some(r) => std::slice::from_ref(r),
                None => return Err(format!("--rows: unknown {w:?}\n{TLS_USAGE}")),
            },
        };
        for r in add {
            if !v.contains(r) {
                v.push(*r);
            }
        }
    }
    // Table order, whatever the order on the command line.
    v.sort_by_key(|r| ALL_TROWS.iter().position(|a| a == r));
    Ok(v)
}

pub const TLS_USAGE: &str = "usage: ringmesh-bench tls [flags]
mesh hop plaintext vs mTLS (A+B CPU per request; 12-byte and 16 KiB bodies),
mTLS handshakes per core,
HTTPS edge (keep-alive and Connection: close) against nginx; one run, interleaved.
flags:
  --repeats N         interleaved rounds (default 3)
  --duration S        seconds per row per round (default 5)
  --connections N     wrk connections (default 32)
  --hs-clients N      threads of the handshake client (default 16)
  --rows a,b,..       groups mesh,mesh16k,handshakes,edge,edge-close or rows
                      mesh-plain,mesh-mtls,mesh16k-plain,mesh16k-mtls,
                      hs-ringmesh,hs-nginx,edge-ringmesh,edge-nginx,
                      close-ringmesh,close-nginx (default: all)
  --port-base P       ports P..P+15 on 127.0.0.1 (default 20100)
  --proxy-bin PATH    ringmesh-proxy to measure (default: build target/release/ringmesh-proxy)
  --out DIR           where the .md goes (default bench/results)
  --no-install        do not apt-get install missing tools
smoke test: ringmesh-bench tls --duration 1 --repeats 1";

/// The `tls` subcommand's command line.
#[derive(Debug, Clone)]
pub struct TlsOpts {
    pub repeats: usize,
    pub duration: u64,
    pub connections: usize,
    pub hs_clients: usize,
    pub rows: Vec<TRow>,
    pub ports: Ports,
    pub proxy_bin: Option<PathBuf>,
    pub out: PathBuf,
    pub install: bool,
    pub cmdline: String,
}

pub fn parse_tls_opts(args: &[String]) -> Res<TlsOpts> {
    let mut o = TlsOpts {
        repeats: 3,
        duration: 5,
        connections: 32,
        hs_clients: 16,
        rows: ALL_TROWS.to_vec(),
        ports: Ports { base: 20100 },
        proxy_bin: None,
        out: workspace_root().join("bench/results"),
        install: true,
        cmdline: format!(
            "cargo run --release -p ringmesh-bench -- tls {}",
            args.join(" ")
        )
        .trim_end()
        .to_string(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| v.parse::<usize>().map_err(|e| format!("{name}: {e}"));
        match a.as_str() {
            "-h" | "--help" => return Err(TLS_USAGE.to_string()),
            "--repeats" => o.repeats = num(a, val(a)?)?,
            "--duration" => o.duration = num(a, val(a)?)? as u64,
            "--connections" => o.connections = num(a, val(a)?)?,
            "--hs-clients" => o.hs_clients = num(a, val(a)?)?,
            "--rows" => o.rows = parse_rows(&val(a)?)?,
            "--port-base" => {
                let p = num(a, val(a)?)?;
                if !(1024..=65500).contains(&p) {
                    return Err("--port-base: 1024..=65500".into());
                }
                o.ports = Ports { base: p as u16 };
            }
            "--proxy-bin" => o.proxy_bin = Some(PathBuf::from(val(a)?)),
            "--out" => o.out = PathBuf::from(val(a)?),
            "--no-install" => o.install = false,
            s => return Err(format!("unknown flag {s}\n{TLS_USAGE}")),
        }
    }
    if o.repeats == 0 || o.duration == 0 || o.connections == 0 || o.hs_clients == 0 {
        return Err(
            "--repeats, --duration, --connections and --hs-clients must be positive".into(),
        );
    }
    Ok(o)
}

// ------------------------------------------------------------ processes

/// Everything started for the run; dropping it stops it all (proxies first).
struct TlsEnv {
    dir: PathBuf,
    certs: Certs,
    /// Per row: the PIDs whose CPU is counted (mesh: A then B; nginx: its worker).
    pids: HashMap<TRow, Vec<u32>>,
    procs: Vec<Proc>,
}

impl Drop for TlsEnv {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_ringmesh(env: &mut TlsEnv, bin: &Path, name: &str, yaml: &str) -> Res<u32> {
    let f = env.dir.join(format!("{name}.yaml"));
    write_file(&f, yaml)?;
    let p = spawn(
        &format!("ringmesh {name}"),
        Command::new(bin).arg("-c").arg(&f).args([
            "--workers",
            "1",
            "--cpu-list",
            "0",
            "--io-driver",
            "uring",
        ]),
        &env.dir.join(format!("{name}.log")),
    )?;
    let pid = p.pid();
    env.procs.push(p);
    Ok(pid)
}

fn setup(o: &TlsOpts, bin: &Path) -> Res<TlsEnv> {
    let p = o.ports;
    let mut ports = vec![p.up()];
    for r in &o.rows {
        ports.push(r.port(p));
    }
    ports.extend((0..5).map(|i| p.admin(i)));
    ports.extend([p.b_plain(), p.b_mtls()]);
    for port in ports {
        if !port_free(port) {
            return Err(format!(
                "port 127.0.0.1:{port} is already in use (the tls bench uses {}..{}; see --port-base)",
                p.base,
                p.base + 15
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("ringmesh-bench-tls.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let certs = certs::generate(&dir.join("certs"))?;
    std::fs::create_dir_all(dir.join("www")).map_err(|e| format!("{}/www: {e}", dir.display()))?;
    write_file(&dir.join("www/b16k"), &"x".repeat(BODY_16K))?;
    // nginx workers run as nobody: the tree (throwaway keys included) must be readable.
    let _ = Command::new("chmod").args(["-R", "755"]).arg(&dir).status();
    let mut env = TlsEnv {
        dir: dir.clone(),
        certs,
        pids: HashMap::new(),
        procs: vec![],
    };
    write_file(&dir.join("up.conf"), &config::upstream_conf(&dir, p.up()))?;
    let up = spawn(
        "nginx upstream",
        Command::new("nginx").arg("-c").arg(dir.join("up.conf")),
        &dir.join("up.log"),
    )?;
    env.procs.push(up);
    wait_port(p.up(), Duration::from_secs(10))?;

    let has = |r: TRow| o.rows.contains(&r);
    let c = env.certs.clone();
    let mut listen = vec![];
    if has(TRow::MeshPlain) || has(TRow::MeshPlain16k) {
        let b = start_ringmesh(
            &mut env,
            bin,
            "b-plain",
            &config::mesh_b_yaml(&c, false, p.b_plain(), p.up(), p.admin(1)),
        )?;
        let a = start_ringmesh(
            &mut env,
            bin,
            "a-plain",
            &config::mesh_a_yaml(&c, false, p.a_plain(), p.b_plain(), p.admin(0)),
        )?;
        env.pids.insert(TRow::MeshPlain, vec![a, b]);
        env.pids.insert(TRow::MeshPlain16k, vec![a, b]);
        listen.extend([p.b_plain(), p.a_plain()]);
    }
    let mtls_hop = has(TRow::MeshMtls) || has(TRow::MeshMtls16k);
    if mtls_hop || has(TRow::HsRingmesh) {
        let b = start_ringmesh(
            &mut env,
            bin,
            "b-mtls",
            &config::mesh_b_yaml(&c, true, p.b_mtls(), p.up(), p.admin(3)),
        )?;
        env.pids.insert(TRow::HsRingmesh, vec![b]);
        listen.push(p.b_mtls());
        if mtls_hop {
            let a = start_ringmesh(
                &mut env,
                bin,
                "a-mtls",
                &config::mesh_a_yaml(&c, true, p.a_mtls(), p.b_mtls(), p.admin(2)),
            )?;
            env.pids.insert(TRow::MeshMtls, vec![a, b]);
            env.pids.insert(TRow::MeshMtls16k, vec![a, b]);
            listen.push(p.a_mtls());
        }
    }
    if has(TRow::EdgeRingmesh) || has(TRow::CloseRingmesh) {
        let e = start_ringmesh(
            &mut env,
            bin,
            "edge",
            &config::edge_yaml(&c, p.edge(), p.up(), p.admin(4)),
        )?;
        env.pids.insert(TRow::EdgeRingmesh, vec![e]);
        env.pids.insert(TRow::CloseRingmesh, vec![e]);
        listen.push(p.edge());
    }
    if o.rows.iter().any(|r| r.is_nginx()) {
        write_file(&dir.join("nginx.conf"), &config::nginx_conf(&dir, &c, p))?;
        let n = spawn(
            "nginx",
            Command::new("nginx").arg("-c").arg(dir.join("nginx.conf")),
            &dir.join("nginx.log"),
        )?;
        let master = n.pid();
        env.procs.push(n);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut w = children_of(master);
        while w.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            w = children_of(master);
        }
        if w.is_empty() {
            return Err(format!(
                "nginx started no worker (see {}/nginx.err)",
                dir.display()
            ));
        }
        for r in [TRow::HsNginx, TRow::EdgeNginx, TRow::CloseNginx] {
            env.pids.insert(r, w.clone());
        }
        listen.extend([p.nginx_edge(), p.nginx_mtls()]);
    }
    for port in listen {
        wait_port(port, Duration::from_secs(15))
            .map_err(|e| format!("{e} (logs in {})", dir.display()))?;
    }
    Ok(env)
}

/// Each endpoint speaks what its row claims (see [`client::preflight`]).
fn check(o: &TlsOpts, env: &TlsEnv) -> Res<()> {
    let p = o.ports;
    let c = &env.certs;
    let has = |r: TRow| o.rows.contains(&r);
    if has(TRow::MeshPlain) || has(TRow::MeshPlain16k) {
        preflight("ringmesh A (plaintext hop)", p.a_plain(), Expect::Plain)?;
    }
    let mtls_hop = has(TRow::MeshMtls) || has(TRow::MeshMtls16k);
    if mtls_hop || has(TRow::HsRingmesh) {
        preflight("ringmesh B (mTLS strict)", p.b_mtls(), Expect::NotPlain)?;
        preflight(
            "ringmesh B (mTLS strict)",
            p.b_mtls(),
            Expect::Tls {
                server: &c.b,
                client: Some(&c.a),
            },
        )?;
    }
    if mtls_hop {
        // B refuses plaintext (above), so a 200 through A means A spoke mTLS to B.
        preflight("ringmesh A (mTLS hop)", p.a_mtls(), Expect::Plain)?;
    }
    if has(TRow::EdgeRingmesh) || has(TRow::CloseRingmesh) {
        preflight(
            "ringmesh edge",
            p.edge(),
            Expect::Tls {
                server: &c.edge,
                client: None,
            },
        )?;
    }
    if o.rows.iter().any(|r| r.is_nginx()) {
        preflight(
            "nginx listen ssl",
            p.nginx_edge(),
            Expect::Tls {
                server: &c.edge,
                client: None,
            },
        )?;
        preflight(
            "nginx ssl_verify_client",
            p.nginx_mtls(),
            Expect::Tls {
                server: &c.b,
                client: Some(&c.a),
            },
        )?;
    }
    Ok(())
}

// ------------------------------------------------------------ one run

/// The load of `row` for `secs` seconds; CPU of the row's processes from /proc.
fn measure(o: &TlsOpts, env: &TlsEnv, row: TRow, secs: u64) -> Res<TSample> {
    let pids = env.pids.get(&row).cloned().unwrap_or_default();
    let t0: Vec<u64> = pids.iter().map(|p| cpu_ticks(&[*p])).collect();
    let wall = Instant::now();
    let port = row.port(o.ports);
    let timeout = Duration::from_secs(secs + 30);
    let out = match row {
        TRow::HsRingmesh | TRow::HsNginx => {
            let me = std::env::current_exe().map_err(|e| e.to_string())?;
            let a = &env.certs.a;
            run_bounded(
                Command::new("taskset")
                    .args(["-c", "1"])
                    .arg(me)
                    .args([
                        "__tls-handshakes",
                        &port.to_string(),
                        &o.hs_clients.to_string(),
                        &secs.to_string(),
                    ])
                    .arg(&a.cert)
                    .arg(&a.key),
                timeout,
            )?
        }
        _ => {
            let scheme = match row {
                TRow::MeshPlain | TRow::MeshMtls | TRow::MeshPlain16k | TRow::MeshMtls16k => "http",
                _ => "https",
            };
            let mut c = Command::new("taskset");
            c.args(["-c", "1", "wrk", "-t1"])
                .arg(format!("-c{}", o.connections))
                .arg(format!("-d{secs}s"))
                .args(["--timeout", "5s", "--latency", "-s"])
                .arg(env.dir.join("report.lua"));
            if matches!(row, TRow::CloseRingmesh | TRow::CloseNginx) {
                c.args(["-H", "Connection: close"]);
            }
            c.arg(format!("{scheme}://127.0.0.1:{port}{}", row.path()));
            run_bounded(&mut c, timeout)?
        }
    };
    let wall_s = wall.elapsed().as_secs_f64();
    let t1: Vec<u64> = pids.iter().map(|p| cpu_ticks(&[*p])).collect();
    let r = parse_wrk(&out).ok_or_else(|| format!("{} load output: {out}", row.id()))?;
    if r.requests > 0 && r.bytes / r.requests < row.min_body() {
        return Err(format!(
            "{}: {} bytes per response, expected at least {} (is {} served by the upstream?)",
            row.id(),
            r.bytes / r.requests,
            row.min_body(),
            row.path()
        ));
    }
    let mut s = TSample {
        rps: if r.rps > 0.0 {
            r.rps
        } else if r.duration_s > 0.0 {
            r.requests as f64 / r.duration_s
        } else {
            0.0
        },
        p50_ms: r.p50_us / 1e3,
        p99_ms: r.p99_us / 1e3,
        errors: r.errors as f64,
        ..TSample::default()
    };
    let secs_of = |i: usize| t1[i].saturating_sub(t0[i]) as f64 / clk_tck();
    let total: f64 = (0..pids.len()).map(secs_of).sum();
    if !pids.is_empty() {
        s.cpu_pct = Some(total / wall_s * 100.0);
        if r.requests > 0 {
            let per = |cpu_s: f64| cpu_s * 1e6 / r.requests as f64;
            s.cpu_us = Some(per(total));
            s.cpu_us_parts = (0..pids.len()).map(|i| per(secs_of(i))).collect();
        }
    }
    Ok(s)
}

/// The subcommand: set up, check, warm up, interleaved rounds, report.
pub fn tls_main(args: &[String]) -> Res<()> {
    let o = parse_tls_opts(args)?;
    stop_children_on_interrupt()?;
    let io = crate::cli::parse_opts(&if o.install {
        vec![]
    } else {
        vec!["--no-install".to_string()]
    })?;
    crate::tools::install_missing(&io)?;
    let bin = match &o.proxy_bin {
        Some(p) if p.exists() => p.clone(),
        Some(p) => return Err(format!("--proxy-bin {}: no such file", p.display())),
        None => crate::tools::proxy_binary(&io)?,
    };
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let stamp = sh("date -u +%Y-%m-%dT%H:%M:%SZ");
    let file_stamp = stamp.replace([':', '-'], "");
    let machine = format!(
        "{} CPUs ({}), kernel {}; load average at start {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim(),
        sh("uname -r"),
        sh("cut -d' ' -f1-3 /proc/loadavg")
    );
    let versions = format!(
        "{}; {}; {}; rustls 0.23 (ring) in ringmesh and the handshake client; ringmesh {}",
        sh("nginx -v 2>&1"),
        sh("openssl version"),
        sh("wrk -v 2>&1 | head -1"),
        bin.display()
    );
    let started = Instant::now();
    let env = setup(&o, &bin)?;
    write_file(&env.dir.join("report.lua"), WRK_LUA)?;
    check(&o, &env)?;
    eprintln!("[bench] tls: every endpoint answered as configured");
    for &row in &o.rows {
        measure(&o, &env, row, 1).map_err(|e| format!("warm-up {}: {e}", row.id()))?;
    }
    let mut samples: HashMap<TRow, Vec<TSample>> = HashMap::new();
    for round in 1..=o.repeats {
        for &row in &o.rows {
            let s = measure(&o, &env, row, o.duration)?;
            eprintln!(
                "[bench] tls round {round} {:<15} {:>9.0}/s p99 {:>7.3} ms CPU µs/op {} ({}) CPU {}% errors {}",
                row.id(),
                s.rps,
                s.p99_ms,
                s.cpu_us.map(|v| format!("{v:.2}")).unwrap_or("—".into()),
                s.cpu_us_parts
                    .iter()
                    .map(|v| format!("{v:.2}"))
                    .collect::<Vec<_>>()
                    .join(" + "),
                s.cpu_pct.map(|v| format!("{v:.0}")).unwrap_or("—".into()),
                s.errors
            );
            samples.entry(row).or_default().push(s);
        }
    }
    let ktls = ktls_line(&env.dir);
    drop(env);
    let mut md = format!(
        "### tls — mesh hop plaintext vs mTLS, mTLS handshakes, HTTPS edge vs nginx\n\n- date: {stamp}\n- machine: {machine}\n- tools: {versions}\n- command: `{}`\n- method: every proxy 1 worker pinned to CPU 0 (the mesh hop's A and B **share** CPU 0; CPU per request is A+B); upstream nginx (`/`: `return 200` of 12 bytes; `/b16k`: a 16 KiB static file; keep-alive from every proxy), wrk and the handshake client pinned to CPU 1; wrk -t1 -c{} keep-alive unless noted; handshake client {} threads, TLS 1.3, X25519, ECDSA P-256 certificates, no resumption, server not verified by the client (checked once before the run); {} repeat(s) of {} s, interleaved; median (min–max); whole run {:.0} s\n",
        o.cmdline,
        o.connections,
        o.hs_clients,
        o.repeats,
        o.duration,
        started.elapsed().as_secs_f64()
    );
    if let Some(k) = ktls {
        md.push_str(&format!("- kTLS (ringmesh's log): `{k}`\n"));
    }
    md.push('\n');
    md.push_str(&tls_report(&o.rows, &samples));
    println!("{md}");
    let f = o.out.join(format!("tls-{file_stamp}.md"));
    write_file(&f, &md)?;
    eprintln!("[bench] wrote {}", f.display());
    Ok(())
}

/// The first line of a ringmesh log that mentions kTLS (which mode ran).
fn ktls_line(dir: &Path) -> Option<String> {
    for name in ["b-mtls", "a-mtls", "edge"] {
        let Ok(s) = std::fs::read_to_string(dir.join(format!("{name}.log"))) else {
            continue;
        };
        if let Some(l) = s.lines().find(|l| l.to_ascii_lowercase().contains("ktls")) {
            return Some(l.trim().chars().take(200).collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn opts() {
        let o = parse_tls_opts(&[]).unwrap();
        assert_eq!(
            (o.repeats, o.duration, o.connections, o.hs_clients),
            (3, 5, 32, 16)
        );
        assert_eq!(o.rows, ALL_TROWS.to_vec());
        assert_eq!(o.ports.base, 20100);
        assert_eq!(o.cmdline, "cargo run --release -p ringmesh-bench -- tls");
        let o = parse_tls_opts(&args(
            "--duration 1 --repeats 2 --rows edge-close,mesh-mtls,mesh-plain --port-base 31000 --no-install --hs-clients 4",
        ))
        .unwrap();
        assert_eq!((o.duration, o.repeats, o.hs_clients), (1, 2, 4));
        assert_eq!(
            o.rows,
            vec![
                TRow::MeshPlain,
                TRow::MeshMtls,
                TRow::CloseRingmesh,
                TRow::CloseNginx
            ]
        );
        assert_eq!(o.ports.base, 31000);
        assert!(!o.install);
        assert!(parse_tls_opts(&args("--rows mesh,envoy")).is_err());
        assert!(parse_tls_opts(&args("--repeats 0")).is_err());
        assert!(parse_tls_opts(&args("--port-base 80")).is_err());
        assert!(parse_tls_opts(&args("--help"))
            .unwrap_err()
            .contains("--hs-clients"));
        for r in ALL_TROWS {
            assert_eq!(parse_rows(r.id()).unwrap(), vec![r]);
        }
        assert_eq!(TRow::HsRingmesh.port(Ports { base: 20100 }), 20104);
        assert_eq!(
            parse_rows("mesh16k,mesh-plain").unwrap(),
            vec![TRow::MeshPlain, TRow::MeshPlain16k, TRow::MeshMtls16k]
        );
        assert_eq!(TRow::MeshMtls16k.port(Ports { base: 20100 }), 20103);
        assert_eq!(
            (TRow::MeshMtls16k.path(), TRow::MeshMtls.path()),
            ("/b16k", "/")
        );
    }
}
