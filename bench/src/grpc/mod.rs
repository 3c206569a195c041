//! `ringmesh-bench grpc`: issue 6's benchmark, side by side in one run.
//!
//! 1. **gRPC unary**: h2load (h2c prior knowledge, `-c C -m M`, a POST of a
//!    length-prefixed `EchoRequest` with `content-type: application/grpc` and
//!    `te: trailers`) → the proxy → the real tonic Echo server
//!    (`ringmesh-testgrpc --threads 1`). Targets: direct (h2load → tonic),
//!    ringmesh (listener → cluster `protocol: http2`), nginx (`grpc_pass`,
//!    upstream `keepalive`) and HAProxy (`proto h2` on both sides). Before the
//!    run one real gRPC call (tonic client) goes through each target:
//!    grpc-status must be 0 and the payload must come back, since h2load
//!    checks only `:status`.
//! 2. **Plain HTTP, HTTP/1.1 vs h2c**: h2load `--h1` (C×M connections, one
//!    request in flight each) and h2c (C connections, M streams each) → the
//!    proxy → nginx `return 200` (12 bytes) over HTTP/1.1 keep-alive, through
//!    ringmesh (one listener serves both) and nginx (`listen` and
//!    `listen … http2`). ringmesh also with an h2c upstream (nginx `listen …
//!    http2`), HTTP/1.1 and h2c downstream: the cost of its HTTP/1 ↔ HTTP/2
//!    bridge.
//!
//! Pinning as in the rest of the harness: every proxy 1 worker on CPU 0; the
//! upstream (tonic or nginx) and h2load on CPU 1. CPU per request = the
//! proxy's utime+stime from /proc over the h2load run ÷ successful requests.
//! Rounds interleave the rows; median (min–max) over `--repeats`.
//!
//! `--callgrind` instead runs ringmesh under `valgrind --tool=callgrind` and
//! reports instructions per request (Ir of a big minus a small fixed-count
//! h2load run) and the top functions of the big run — the profile to act on.

pub mod client;
pub mod config;
pub mod profile;
pub mod report;

use crate::cli::workspace_root;
use crate::parse::parse_callgrind_total;
use crate::process::{
    children_of, clk_tck, cpu_ticks, port_free, run_bounded, spawn, stop_children_on_interrupt,
    wait_port, Proc,
};
use crate::tools::{given_binary, have, install_packages, release_binary};
use crate::{sh, write_file, Res};
use client::{grpc_preflight, h2load_cmd, log_percentiles, parse_h2load, Amount, Load};
use config::Ports;
use report::{grpc_report, GSample};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One row of the tables.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GRow {
    GrpcDirect,
    GrpcRingmesh,
    GrpcNginx,
    GrpcHaproxy,
    H1Ringmesh,
    H2cRingmesh,
    H1Nginx,
    H2cNginx,
    /// ringmesh's bridge: HTTP/1.1 downstream, HTTP/2 (h2c) upstream.
    H1H2Ringmesh,
    /// h2c downstream and upstream.
    H2cH2Ringmesh,
}

pub const ALL_GROWS: [GRow; 10] = [
    GRow::GrpcDirect,
    GRow::GrpcRingmesh,
    GRow::GrpcNginx,
    GRow::GrpcHaproxy,
    GRow::H1Ringmesh,
    GRow::H2cRingmesh,
    GRow::H1Nginx,
    GRow::H2cNginx,
    GRow::H1H2Ringmesh,
    GRow::H2cH2Ringmesh,
];

impl GRow {
    pub fn name(self) -> &'static str {
        match self {
            GRow::GrpcDirect => "direct (no proxy)",
            GRow::GrpcRingmesh => "ringmesh (cluster protocol: http2)",
            GRow::GrpcNginx => "nginx grpc_pass",
            GRow::GrpcHaproxy => "HAProxy proto h2",
            GRow::H1Ringmesh => "ringmesh, HTTP/1.1",
            GRow::H2cRingmesh => "ringmesh, h2c",
            GRow::H1Nginx => "nginx, HTTP/1.1",
            GRow::H2cNginx => "nginx, h2c (listen http2)",
            GRow::H1H2Ringmesh => "ringmesh, HTTP/1.1 → h2c upstream",
            GRow::H2cH2Ringmesh => "ringmesh, h2c → h2c upstream",
        }
    }
    /// The row's word on the command line (log lines too).
    pub fn id(self) -> &'static str {
        match self {
            GRow::GrpcDirect => "grpc-direct",
            GRow::GrpcRingmesh => "grpc-ringmesh",
            GRow::GrpcNginx => "grpc-nginx",
            GRow::GrpcHaproxy => "grpc-haproxy",
            GRow::H1Ringmesh => "h1-ringmesh",
            GRow::H2cRingmesh => "h2c-ringmesh",
            GRow::H1Nginx => "h1-nginx",
            GRow::H2cNginx => "h2c-nginx",
            GRow::H1H2Ringmesh => "h1-h2-ringmesh",
            GRow::H2cH2Ringmesh => "h2c-h2-ringmesh",
        }
    }
    pub fn port(self, p: Ports) -> u16 {
        match self {
            GRow::GrpcDirect => p.grpc_up(),
            GRow::GrpcRingmesh => p.rm_grpc(),
            GRow::GrpcNginx => p.nginx_grpc(),
            GRow::GrpcHaproxy => p.haproxy_grpc(),
            GRow::H1Ringmesh | GRow::H2cRingmesh => p.rm_http(),
            GRow::H1Nginx => p.nginx_h1(),
            GRow::H2cNginx => p.nginx_h2c(),
            GRow::H1H2Ringmesh | GRow::H2cH2Ringmesh => p.rm_http_h2(),
        }
    }
    pub fn load(self) -> Load {
        match self {
            GRow::H1Ringmesh | GRow::H1Nginx | GRow::H1H2Ringmesh => Load::H1,
            GRow::H2cRingmesh | GRow::H2cNginx | GRow::H2cH2Ringmesh => Load::H2c,
            _ => Load::Grpc,
        }
    }
    pub fn is_grpc(self) -> bool {
        self.load() == Load::Grpc
    }
    fn is_ringmesh(self) -> bool {
        matches!(
            self,
            GRow::GrpcRingmesh
                | GRow::H1Ringmesh
                | GRow::H2cRingmesh
                | GRow::H1H2Ringmesh
                | GRow::H2cH2Ringmesh
        )
    }
    fn is_nginx(self) -> bool {
        matches!(self, GRow::GrpcNginx | GRow::H1Nginx | GRow::H2cNginx)
    }
    /// What h2load must report as "Application protocol".
    fn protocol(self) -> &'static str {
        match self.load() {
            Load::H1 => "http/1.1",
            _ => "h2c",
        }
    }
}

/// A word of `--rows`: a group (`grpc`, `http`, `bridge`, `ringmesh`,
/// `nginx`) or one row id.
pub fn parse_rows(s: &str) -> Res<Vec<GRow>> {
    let mut v = vec![];
    for w in s.split(',') {
        let add: Vec<GRow> = match w {
            "grpc" => ALL_GROWS.iter().copied().filter(|r| r.is_grpc()).collect(),
            "http" => ALL_GROWS.iter().copied().filter(|r| !r.is_grpc()).collect(),
            "ringmesh" => ALL_GROWS
                .iter()
                .copied()
                .filter(|r| r.is_ringmesh())
                .collect(),
            "nginx" => ALL_GROWS.iter().copied().filter(|r| r.is_nginx()).collect(),
            "bridge" => vec![
                GRow::H1Ringmesh,
                GRow::H2cRingmesh,
                GRow::H1H2Ringmesh,
                GRow::H2cH2Ringmesh,
            ],
            _ => match ALL_GROWS.iter().find(|r| r.id() == w) {
                Some(r) => vec![*r],
                None => return Err(format!("--rows: unknown {w:?}\n{GRPC_USAGE}")),
            },
        };
        for r in add {
            if !v.contains(&r) {
                v.push(r);
            }
        }
    }
    v.sort_by_key(|r| ALL_GROWS.iter().position(|a| a == r));
    Ok(v)
}

pub const GRPC_USAGE: &str = "usage: ringmesh-bench grpc [flags]
gRPC unary through ringmesh, nginx grpc_pass and HAProxy (and direct) to a tonic
Echo server, and plain HTTP/1.1 vs h2c through ringmesh and nginx; h2load load,
proxy CPU per request from /proc, one run, interleaved rounds.
flags:
  --repeats N          interleaved rounds (default 3)
  --duration S         seconds per row per round (default 5)
  --connections C      h2load connections (default 8; HTTP/1.1 rows: C×M)
  --streams M          requests in flight per connection (default 16)
  --payload B          EchoRequest payload bytes (default 12)
  --rows a,b,..        groups grpc,http,bridge,ringmesh,nginx or rows
                       grpc-direct,grpc-ringmesh,grpc-nginx,grpc-haproxy,
                       h1-ringmesh,h2c-ringmesh,h1-nginx,h2c-nginx,
                       h1-h2-ringmesh,h2c-h2-ringmesh (default: all)
  --keep-going         leave out (and report) rows whose check fails instead
                       of stopping (e.g. ringmesh before its HTTP/2 support)
  --io-driver D        ringmesh's --io-driver, uring or epoll (default uring)
  --port-base P        ports P..P+10 on 127.0.0.1 (default 20200)
  --callgrind          profile instead of load: ringmesh under callgrind,
                       Ir per request and top functions for its rows
  --cg-requests N      requests of the big callgrind run (default 10000; the
                       small run is N/10)
  --proxy-bin PATH     ringmesh-proxy to measure (default: build it)
  --testgrpc-bin PATH  ringmesh-testgrpc upstream (default: build it)
  --out DIR            where the .md goes (default bench/results)
  --no-install         do not apt-get install missing tools (h2load is in
                       Debian's nghttp2-client)
smoke test: ringmesh-bench grpc --duration 1 --repeats 1";

/// The `grpc` subcommand's command line.
#[derive(Debug, Clone)]
pub struct GrpcOpts {
    pub repeats: usize,
    pub duration: u64,
    pub connections: usize,
    pub streams: usize,
    pub payload: usize,
    pub rows: Vec<GRow>,
    pub keep_going: bool,
    pub io_driver: String,
    pub ports: Ports,
    pub callgrind: bool,
    pub cg_requests: u64,
    pub proxy_bin: Option<PathBuf>,
    pub testgrpc_bin: Option<PathBuf>,
    pub out: PathBuf,
    pub install: bool,
    pub cmdline: String,
}

pub fn parse_grpc_opts(args: &[String]) -> Res<GrpcOpts> {
    let mut o = GrpcOpts {
        repeats: 3,
        duration: 5,
        connections: 8,
        streams: 16,
        payload: 12,
        rows: ALL_GROWS.to_vec(),
        keep_going: false,
        io_driver: "uring".into(),
        ports: Ports { base: 20200 },
        callgrind: false,
        cg_requests: 10_000,
        proxy_bin: None,
        testgrpc_bin: None,
        out: workspace_root().join("bench/results"),
        install: true,
        cmdline: format!(
            "cargo run --release -p ringmesh-bench -- grpc {}",
            args.join(" ")
        )
        .trim_end()
        .to_string(),
    };
    let mut rows_given = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| v.parse::<usize>().map_err(|e| format!("{name}: {e}"));
        match a.as_str() {
            "-h" | "--help" => return Err(GRPC_USAGE.to_string()),
            "--repeats" => o.repeats = num(a, val(a)?)?,
            "--duration" => o.duration = num(a, val(a)?)? as u64,
            "--connections" => o.connections = num(a, val(a)?)?,
            "--streams" => o.streams = num(a, val(a)?)?,
            "--payload" => o.payload = num(a, val(a)?)?,
            "--rows" => {
                o.rows = parse_rows(&val(a)?)?;
                rows_given = true;
            }
            "--keep-going" => o.keep_going = true,
            "--io-driver" => {
                o.io_driver = val(a)?;
                if !matches!(o.io_driver.as_str(), "uring" | "epoll") {
                    return Err("--io-driver: uring or epoll".into());
                }
            }
            "--port-base" => {
                let p = num(a, val(a)?)?;
                if !(1024..=65500).contains(&p) {
                    return Err("--port-base: 1024..=65500".into());
                }
                o.ports = Ports { base: p as u16 };
            }
            "--callgrind" => o.callgrind = true,
            "--cg-requests" => o.cg_requests = num(a, val(a)?)? as u64,
            "--proxy-bin" => o.proxy_bin = Some(PathBuf::from(val(a)?)),
            "--testgrpc-bin" => o.testgrpc_bin = Some(PathBuf::from(val(a)?)),
            "--out" => o.out = PathBuf::from(val(a)?),
            "--no-install" => o.install = false,
            s => return Err(format!("unknown flag {s}\n{GRPC_USAGE}")),
        }
    }
    if o.repeats == 0 || o.duration == 0 || o.connections == 0 || o.streams == 0 {
        return Err("--repeats, --duration, --connections and --streams must be positive".into());
    }
    if o.connections * o.streams > config::NGINX_KEEPALIVE {
        return Err(format!(
            "--connections × --streams must be at most {} (nginx's upstream keepalive)",
            config::NGINX_KEEPALIVE
        ));
    }
    if o.cg_requests < 100 {
        return Err("--cg-requests: at least 100".into());
    }
    if o.callgrind {
        if !rows_given {
            o.rows = vec![GRow::GrpcRingmesh];
        }
        o.rows.retain(|r| r.is_ringmesh());
        if o.rows.is_empty() {
            return Err("--callgrind profiles ringmesh rows only".into());
        }
    }
    Ok(o)
}

// ------------------------------------------------------------ processes

/// Everything started for the run; dropping it stops it all (proxies first).
struct GEnv {
    dir: PathBuf,
    body: PathBuf,
    /// Per row: the proxy PIDs whose CPU is counted (nginx: its worker).
    pids: HashMap<GRow, Vec<u32>>,
    /// Per row: the upstream's PIDs (tonic server, or the upstream nginx worker).
    up_pids: HashMap<GRow, Vec<u32>>,
    /// ringmesh's PID (for callgrind_control).
    ringmesh: Option<u32>,
    procs: Vec<Proc>,
}

impl Drop for GEnv {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The workers of an nginx master (waits until it has one).
fn nginx_workers(master: u32, dir: &Path, err: &str) -> Res<Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut w = children_of(master);
    while w.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        w = children_of(master);
    }
    if w.is_empty() {
        return Err(format!(
            "nginx started no worker (see {}/{err})",
            dir.display()
        ));
    }
    Ok(w)
}

fn setup(o: &GrpcOpts, bin: &Path, testgrpc: &Path, under_valgrind: bool) -> Res<GEnv> {
    let p = o.ports;
    for port in p.all() {
        if !port_free(port) {
            return Err(format!(
                "port 127.0.0.1:{port} is already in use (the grpc bench uses {}..{}; see --port-base)",
                p.base,
                p.base + 10
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("ringmesh-bench-grpc.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let body = dir.join("body.grpc");
    std::fs::write(&body, client::grpc_body(o.payload))
        .map_err(|e| format!("{}: {e}", body.display()))?;
    // nginx workers run as nobody.
    let _ = Command::new("chmod").args(["-R", "755"]).arg(&dir).status();
    let mut env = GEnv {
        dir: dir.clone(),
        body,
        pids: HashMap::new(),
        up_pids: HashMap::new(),
        ringmesh: None,
        procs: vec![],
    };
    let has = |f: fn(GRow) -> bool| o.rows.iter().any(|r| f(*r));
    let mut listen = vec![];

    // Upstreams, pinned to CPU 1.
    if has(GRow::is_grpc) {
        let t = spawn(
            "ringmesh-testgrpc",
            Command::new("taskset")
                .args(["-c", "1"])
                .arg(testgrpc)
                .args(["--listen", &format!("127.0.0.1:{}", p.grpc_up())])
                .args(["--threads", "1"]),
            &dir.join("testgrpc.log"),
        )?;
        let pid = t.pid();
        env.procs.push(t);
        for r in o.rows.iter().filter(|r| r.is_grpc()) {
            env.up_pids.insert(*r, vec![pid]);
        }
        wait_port(p.grpc_up(), Duration::from_secs(10))?;
    }
    if has(|r| !r.is_grpc()) {
        write_file(&dir.join("up.conf"), &config::upstream_conf(&dir, p))?;
        let u = spawn(
            "nginx upstream",
            Command::new("nginx").arg("-c").arg(dir.join("up.conf")),
            &dir.join("up.log"),
        )?;
        let master = u.pid();
        env.procs.push(u);
        let w = nginx_workers(master, &dir, "up.err")?;
        for r in o.rows.iter().filter(|r| !r.is_grpc()) {
            env.up_pids.insert(*r, w.clone());
        }
        wait_port(p.http_up(), Duration::from_secs(10))?;
        wait_port(p.http_up_h2(), Duration::from_secs(10))?;
    }

    // Proxies, 1 worker each on CPU 0.
    if has(GRow::is_ringmesh) {
        let y = dir.join("ringmesh.yaml");
        write_file(&y, &config::ringmesh_yaml(p))?;
        let mut cmd;
        if under_valgrind {
            cmd = Command::new("valgrind");
            cmd.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}/cg.%p", dir.display()))
                .arg(bin);
        } else {
            cmd = Command::new(bin);
        }
        cmd.arg("-c").arg(&y).args([
            "--workers",
            "1",
            "--cpu-list",
            "0",
            "--io-driver",
            &o.io_driver,
        ]);
        let mut r = spawn("ringmesh", &mut cmd, &dir.join("ringmesh.log"))?;
        if under_valgrind {
            r.set_kill_signal(libc::SIGKILL); // the io_uring worker ignores SIGTERM under valgrind
        }
        let pid = r.pid();
        env.procs.push(r);
        env.ringmesh = Some(pid);
        for row in o.rows.iter().filter(|r| r.is_ringmesh()) {
            env.pids.insert(*row, vec![pid]);
            listen.push(row.port(p));
        }
    }
    if has(GRow::is_nginx) {
        write_file(&dir.join("nginx.conf"), &config::nginx_conf(&dir, p))?;
        let n = spawn(
            "nginx",
            Command::new("nginx").arg("-c").arg(dir.join("nginx.conf")),
            &dir.join("nginx.log"),
        )?;
        let master = n.pid();
        env.procs.push(n);
        let w = nginx_workers(master, &dir, "nginx.err")?;
        for row in o.rows.iter().filter(|r| r.is_nginx()) {
            env.pids.insert(*row, w.clone());
            listen.push(row.port(p));
        }
    }
    if o.rows.contains(&GRow::GrpcHaproxy) {
        write_file(&dir.join("haproxy.cfg"), &config::haproxy_cfg(p))?;
        let h = spawn(
            "HAProxy",
            Command::new("haproxy")
                .arg("-f")
                .arg(dir.join("haproxy.cfg")),
            &dir.join("haproxy.log"),
        )?;
        env.pids.insert(GRow::GrpcHaproxy, vec![h.pid()]);
        env.procs.push(h);
        listen.push(p.haproxy_grpc());
    }
    let wait = if under_valgrind { 120 } else { 15 };
    for port in listen {
        wait_port(port, Duration::from_secs(wait))
            .map_err(|e| format!("{e} (logs in {})", dir.display()))?;
    }
    Ok(env)
}

/// One short h2load run that must succeed entirely and in the row's protocol.
fn h2load_check(o: &GrpcOpts, env: &GEnv, row: GRow, n: u64) -> Res<()> {
    let out = run_bounded(
        &mut h2load_cmd(
            row.load(),
            row.port(o.ports),
            o.connections,
            o.streams,
            Amount::Requests(n),
            &env.body,
            None,
        ),
        Duration::from_secs(60),
    )?;
    let r = parse_h2load(&out).ok_or_else(|| format!("h2load output: {}", tail(&out)))?;
    if r.protocol.as_deref() != Some(row.protocol()) {
        return Err(format!(
            "h2load spoke {:?}, expected {}: {}",
            r.protocol,
            row.protocol(),
            tail(&out)
        ));
    }
    if r.status_2xx != n {
        return Err(format!(
            "{} of {n} requests answered 2xx: {}",
            r.status_2xx,
            tail(&out)
        ));
    }
    Ok(())
}

/// What to quote of h2load's output in an error: its counts if it printed
/// them, else its last lines.
fn tail(out: &str) -> String {
    let counts: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("requests: ") || l.starts_with("status codes: "))
        .collect();
    if !counts.is_empty() {
        return counts.join("; ");
    }
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

/// Each row answers as its name claims: for gRPC, one tonic call (grpc-status
/// 0, payload echoed) and 100 h2load requests; for plain HTTP, 100 h2load
/// requests in the row's protocol. Returns the rows that failed, with why.
fn check(o: &GrpcOpts, env: &GEnv) -> Vec<(GRow, String)> {
    let mut bad = vec![];
    // h2load wants at least one request per connection.
    let n = 100.max(2 * (o.connections * o.streams) as u64);
    for &row in &o.rows {
        let r = if row.is_grpc() {
            grpc_preflight(row.name(), row.port(o.ports), o.payload)
                .and_then(|()| h2load_check(o, env, row, n))
        } else {
            h2load_check(o, env, row, n)
        };
        if let Err(e) = r {
            eprintln!("[bench] grpc: check failed for {}: {e}", row.id());
            bad.push((row, e));
        }
    }
    bad
}

// ------------------------------------------------------------ one run

/// stime (kernel CPU) of the PIDs, in clock ticks.
fn sys_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().nth(12)?.parse::<u64>().ok()
        })
        .sum()
}

/// The load of `row` for `secs` seconds; CPU of the proxy and the upstream from /proc.
fn measure(o: &GrpcOpts, env: &GEnv, row: GRow, secs: u64) -> Res<GSample> {
    let pids = env.pids.get(&row).cloned().unwrap_or_default();
    let up = env.up_pids.get(&row).cloned().unwrap_or_default();
    let log = env.dir.join(format!("h2load-{}.tsv", row.id()));
    let _ = std::fs::remove_file(&log);
    let (t0, u0, k0) = (cpu_ticks(&pids), cpu_ticks(&up), sys_ticks(&pids));
    let wall = Instant::now();
    let out = run_bounded(
        &mut h2load_cmd(
            row.load(),
            row.port(o.ports),
            o.connections,
            o.streams,
            Amount::Seconds(secs),
            &env.body,
            Some(&log),
        ),
        Duration::from_secs(secs + 30),
    )?;
    let wall_s = wall.elapsed().as_secs_f64();
    let (t1, u1, k1) = (cpu_ticks(&pids), cpu_ticks(&up), sys_ticks(&pids));
    let r =
        parse_h2load(&out).ok_or_else(|| format!("{}: h2load output: {}", row.id(), tail(&out)))?;
    if r.protocol.as_deref() != Some(row.protocol()) || r.succeeded == 0 {
        return Err(format!(
            "{}: h2load spoke {:?} (expected {}), {} requests succeeded: {}",
            row.id(),
            r.protocol,
            row.protocol(),
            r.succeeded,
            tail(&out)
        ));
    }
    let lat = std::fs::read_to_string(&log)
        .ok()
        .and_then(|t| log_percentiles(&t));
    let _ = std::fs::remove_file(&log);
    let per_req = |ticks: u64| ticks as f64 / clk_tck() * 1e6 / r.succeeded as f64;
    let mut s = GSample {
        rps: r.rps,
        p50_ms: lat.map(|l| l.0),
        p99_ms: lat.map(|l| l.1),
        errors: (r.failed + r.done.saturating_sub(r.succeeded)) as f64,
        ..GSample::default()
    };
    if !pids.is_empty() {
        let d = t1.saturating_sub(t0);
        s.cpu_us = Some(per_req(d));
        s.sys_us = Some(per_req(k1.saturating_sub(k0)));
        s.cpu_pct = Some(d as f64 / clk_tck() / wall_s * 100.0);
    }
    if !up.is_empty() {
        s.up_cpu_us = Some(per_req(u1.saturating_sub(u0)));
    }
    Ok(s)
}

// ------------------------------------------------------------ callgrind

/// Dumps callgrind's counters of `pid` and returns the new dump file.
fn callgrind_dump(dir: &Path, pid: u32) -> Res<PathBuf> {
    let list = || -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("cg."))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = list();
    run_bounded(
        Command::new("callgrind_control")
            .arg("-d")
            .arg(pid.to_string()),
        Duration::from_secs(120),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(f) = list().into_iter().find(|p| !before.contains(p)) {
            std::thread::sleep(Duration::from_millis(300));
            return Ok(f);
        }
        if Instant::now() > deadline {
            return Err("callgrind wrote no dump".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn callgrind_zero(pid: u32) -> Res<()> {
    run_bounded(
        Command::new("callgrind_control")
            .arg("-z")
            .arg(pid.to_string()),
        Duration::from_secs(120),
    )
    .map(|_| ())
}

/// `callgrind_annotate --auto=no` of `dump` with `extra` flags (whole output).
fn annotate(dump: &Path, extra: &[&str]) -> Res<String> {
    run_bounded(
        Command::new("callgrind_annotate")
            .args(["--auto=no", "--threshold=100"])
            .args(extra)
            .arg(dump),
        Duration::from_secs(300),
    )
}

/// The Markdown of one profile: cost per request by component, the top
/// functions by self and inclusive cost, and the callers of memcpy.
fn profile_md(dump: &Path, requests: u64, out_prefix: &Path) -> Res<String> {
    use profile::{by_component, memcpy_callers, parse_flat, short};
    let excl = annotate(dump, &["--inclusive=no"])?;
    let incl = annotate(dump, &["--inclusive=yes"])?;
    let tree = annotate(dump, &["--inclusive=no", "--tree=caller"])?;
    for (kind, text) in [
        ("exclusive", &excl),
        ("inclusive", &incl),
        ("callers", &tree),
    ] {
        let f = PathBuf::from(format!("{}-{kind}.txt", out_prefix.display()));
        write_file(&f, text)?;
        eprintln!("[bench] wrote {}", f.display());
    }
    let per = |ir: u64| ir as f64 / requests as f64;
    let (total, fns) = parse_flat(&excl);
    let mut md = String::new();
    let rows: Vec<Vec<String>> = by_component(&fns)
        .into_iter()
        .take(16)
        .map(|(c, ir)| {
            vec![
                c,
                format!("{:.0}", per(ir)),
                format!("{:.1}%", ir as f64 * 100.0 / total.max(1) as f64),
            ]
        })
        .collect();
    md.push_str(
        "Self cost by component (source file of the inlined code):

",
    );
    md.push_str(&crate::report::markdown_table(
        &["component", "Ir/request", "share"],
        &rows,
    ));
    let top = |fns: &[profile::FnCost], n: usize| -> String {
        fns.iter()
            .take(n)
            .map(|f| format!("{:>8.0}  {}", per(f.ir), short(&f.name)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    md.push_str(&format!(
        "\nTop 25 functions by self cost (Ir per request, `file:function`; the file is where inlined code was written):\n\n```\n{}\n```\n",
        top(&fns, 25)
    ));
    let callers = memcpy_callers(&tree);
    if !callers.is_empty() {
        md.push_str(&format!(
            "\nCallers of memcpy/memmove (Ir per request; valgrind counts a `rep movsb` copy as about one instruction per byte, so this is roughly the bytes copied per request, and costs far less time than its share of Ir):\n\n```\n{}\n```\n",
            callers
                .iter()
                .take(8)
                .map(|(ir, c)| format!("{:>8.0}  {}", per(*ir), short(c)))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let (_, inc) = parse_flat(&incl);
    md.push_str(&format!(
        "\nTop 25 by inclusive cost (Ir per request):\n\n```\n{}\n```\n\n",
        top(&inc, 25)
    ));
    Ok(md)
}

/// Ir per request and the profile of each ringmesh row in `o.rows`.
fn callgrind_run(o: &GrpcOpts, bin: &Path, testgrpc: &Path) -> Res<String> {
    let big = o.cg_requests;
    let small = (big / 10).max(10);
    let mut md = format!(
        "ringmesh under `valgrind --tool=callgrind` (`--io-driver {}`, 1 worker); h2load `-c{} -m{}` (HTTP/1.1 rows: `-c{} -m1`); 2,000 warm-up requests, then counters zeroed (`callgrind_control -z`) before each of a {small}- and a {big}-request run and dumped after it; Ir per request = (Ir({big}) − Ir({small})) ÷ {}, so connection set-up and teardown cancel out. Top functions: the {big}-request dump, by exclusive Ir (self cost) and inclusive Ir.\n\n",
        o.io_driver,
        o.connections,
        o.streams,
        o.connections * o.streams,
        big - small
    );
    for &row in &o.rows {
        let one = GrpcOpts {
            rows: vec![row],
            ..o.clone()
        };
        let env = setup(&one, bin, testgrpc, true)?;
        let pid = env.ringmesh.ok_or("ringmesh did not start")?;
        let bad = check(&one, &env);
        if let Some((_, e)) = bad.first() {
            return Err(format!("{}: {e}", row.id()));
        }
        h2load_check(&one, &env, row, 2000).map_err(|e| format!("warm-up {}: {e}", row.id()))?;
        let mut ir = [0u64; 2];
        let mut dumps = vec![];
        for (i, n) in [small, big].into_iter().enumerate() {
            callgrind_zero(pid)?;
            h2load_check(&one, &env, row, n).map_err(|e| format!("{}: {e}", row.id()))?;
            let f = callgrind_dump(&env.dir, pid)?;
            let text = std::fs::read_to_string(&f).map_err(|e| e.to_string())?;
            ir[i] = parse_callgrind_total(&text).ok_or("no totals in the callgrind dump")?;
            dumps.push(f);
        }
        let per = (ir[1] as f64 - ir[0] as f64) / (big - small) as f64;
        eprintln!(
            "[bench] callgrind {}: Ir({big}) {} Ir({small}) {} → {per:.0} Ir/request",
            row.id(),
            ir[1],
            ir[0]
        );
        let stamp = sh("date -u +%Y%m%dT%H%M%SZ");
        let prefix = o.out.join(format!("grpc-callgrind-{}-{stamp}", row.id()));
        let keep = PathBuf::from(format!("{}.out", prefix.display()));
        std::fs::copy(&dumps[1], &keep).map_err(|e| format!("{}: {e}", keep.display()))?;
        eprintln!("[bench] kept the dump as {}", keep.display());
        md.push_str(&format!(
            "#### {} — {per:.0} Ir per request (Ir({big}) {}, Ir({small}) {})\n\nThe {big}-request run (dump `{}`):\n\n",
            row.name(),
            ir[1],
            ir[0],
            keep.display()
        ));
        md.push_str(&profile_md(&dumps[1], big, &prefix)?);
        drop(env); // SIGKILL (see setup)
    }
    Ok(md)
}

// ------------------------------------------------------------ main

fn install_missing(o: &GrpcOpts) -> Res<()> {
    let mut need = vec![];
    if !have("h2load") {
        need.push("nghttp2-client");
    }
    if !have("taskset") {
        need.push("util-linux");
    }
    if o.rows.iter().any(|r| r.is_nginx() || !r.is_grpc()) && !have("nginx") {
        need.push("nginx-light");
    }
    if o.rows.contains(&GRow::GrpcHaproxy) && !have("haproxy") {
        need.push("haproxy");
    }
    if o.callgrind && !have("callgrind_control") {
        need.push("valgrind");
    }
    install_packages(&need, o.install)
}

/// The subcommand: set up, check, warm up, interleaved rounds, report.
pub fn grpc_main(args: &[String]) -> Res<()> {
    let mut o = parse_grpc_opts(args)?;
    stop_children_on_interrupt()?;
    install_missing(&o)?;
    let needs_ringmesh = o.rows.iter().any(|r| r.is_ringmesh());
    let bin = match &o.proxy_bin {
        Some(p) => given_binary("--proxy-bin", p)?,
        None if needs_ringmesh => release_binary("ringmesh-engine", "ringmesh-proxy")?,
        None => PathBuf::from("ringmesh-proxy"),
    };
    let testgrpc = match &o.testgrpc_bin {
        Some(p) => given_binary("--testgrpc-bin", p)?,
        None => release_binary("ringmesh-testgrpc", "ringmesh-testgrpc")?,
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
        "{}; {}; {}; tonic 0.14 Echo server `{}` (1 tokio worker); ringmesh {}",
        sh("h2load --version 2>&1 | head -1"),
        sh("nginx -v 2>&1"),
        sh("haproxy -v 2>/dev/null | head -1"),
        testgrpc.display(),
        if needs_ringmesh {
            bin.display().to_string()
        } else {
            "(not run)".into()
        }
    );
    let header = |title: &str, method: &str, secs: f64| {
        format!(
            "### grpc — {title}\n\n- date: {stamp}\n- machine: {machine}\n- tools: {versions}\n- command: `{}`\n- method: {method}; whole run {secs:.0} s\n\n",
            o.cmdline
        )
    };
    let started = Instant::now();
    if o.callgrind {
        let md = callgrind_run(&o, &bin, &testgrpc)?;
        let md = header(
            "callgrind profile of ringmesh",
            "see below",
            started.elapsed().as_secs_f64(),
        ) + &md;
        println!("{md}");
        let f = o.out.join(format!("grpc-callgrind-{file_stamp}.md"));
        write_file(&f, &md)?;
        eprintln!("[bench] wrote {}", f.display());
        return Ok(());
    }
    let env = setup(&o, &bin, &testgrpc, false)?;
    let bad = check(&o, &env);
    let mut notes = String::new();
    if !bad.is_empty() {
        if !o.keep_going {
            let why: Vec<String> = bad
                .iter()
                .map(|(r, e)| format!("{}: {e}", r.id()))
                .collect();
            return Err(format!(
                "check failed (--keep-going leaves such rows out):\n  {}",
                why.join("\n  ")
            ));
        }
        for (r, e) in &bad {
            notes.push_str(&format!(
                "- **{} not measured**: its check failed: {e}\n",
                r.id()
            ));
        }
        o.rows.retain(|r| !bad.iter().any(|(b, _)| b == r));
    }
    eprintln!(
        "[bench] grpc: {} row(s) answered as configured",
        o.rows.len()
    );
    for &row in &o.rows {
        measure(&o, &env, row, 1).map_err(|e| format!("warm-up {}: {e}", row.id()))?;
    }
    let mut samples: HashMap<GRow, Vec<GSample>> = HashMap::new();
    // Other work on the machine shows here (the proxy and the load are pinned,
    // other processes are not).
    let mut loads = vec![];
    for round in 1..=o.repeats {
        let load = sh("cut -d' ' -f1 /proc/loadavg");
        eprintln!("[bench] grpc round {round}: load average {load}");
        loads.push(load);
        for &row in &o.rows {
            let s = measure(&o, &env, row, o.duration)?;
            eprintln!(
                "[bench] grpc round {round} {:<15} {:>9.0} req/s p99 {} ms proxy CPU {}% {} µs/req (sys {}) upstream {} µs/req errors {}",
                row.id(),
                s.rps,
                s.p99_ms.map(|v| format!("{v:.3}")).unwrap_or("—".into()),
                s.cpu_pct.map(|v| format!("{v:.0}")).unwrap_or("—".into()),
                s.cpu_us.map(|v| format!("{v:.2}")).unwrap_or("—".into()),
                s.sys_us.map(|v| format!("{v:.2}")).unwrap_or("—".into()),
                s.up_cpu_us.map(|v| format!("{v:.2}")).unwrap_or("—".into()),
                s.errors
            );
            samples.entry(row).or_default().push(s);
        }
    }
    drop(env);
    let method = format!(
        "every proxy 1 worker pinned to CPU 0; the upstream (tonic Echo server, 1 tokio worker; nginx `return 200` for plain HTTP) and h2load (1 thread) pinned to CPU 1; h2load h2c prior knowledge `-c{} -m{}` (HTTP/1.1 rows: `--h1 -c{} -m1`, the same requests in flight); gRPC: unary `Echo/Unary`, {}-byte payload ({} bytes on the wire with the 5-byte prefix), checked once per target with a tonic call (grpc-status 0, payload echoed); nginx and HAProxy keep upstream connections alive (`keepalive {}` / `http-reuse always`); CPU per request = the proxy's utime+stime over the h2load run ÷ 2xx responses (`of which kernel`: stime alone); p50/p99 from h2load's per-request log; {} repeat(s) of {} s, interleaved; median (min–max)",
        o.connections,
        o.streams,
        o.connections * o.streams,
        o.payload,
        client::grpc_body(o.payload).len(),
        config::NGINX_KEEPALIVE,
        o.repeats,
        o.duration
    );
    let mut md = header(
        "gRPC unary and HTTP/1.1 vs h2c through ringmesh, nginx, HAProxy",
        &method,
        started.elapsed().as_secs_f64(),
    );
    md.push_str(&format!(
        "- 1-minute load average at the start of each round: {}; at the end: {}\n\n",
        loads.join(", "),
        sh("cut -d' ' -f1-3 /proc/loadavg")
    ));
    if !notes.is_empty() {
        md.push_str(&notes);
        md.push('\n');
    }
    md.push_str(&grpc_report(&o.rows, &samples));
    println!("{md}");
    let f = o.out.join(format!("grpc-{file_stamp}.md"));
    write_file(&f, &md)?;
    eprintln!("[bench] wrote {}", f.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn opts() {
        let o = parse_grpc_opts(&[]).unwrap();
        assert_eq!(
            (o.repeats, o.duration, o.connections, o.streams, o.payload),
            (3, 5, 8, 16, 12)
        );
        assert_eq!(o.rows, ALL_GROWS.to_vec());
        assert_eq!(o.ports.base, 20200);
        assert_eq!(o.io_driver, "uring");
        assert!(!o.callgrind && !o.keep_going && o.install);
        assert_eq!(o.cmdline, "cargo run --release -p ringmesh-bench -- grpc");
        let o = parse_grpc_opts(&args(
            "--duration 1 --repeats 2 --rows h2c-nginx,grpc --connections 4 --streams 8 --payload 100 --keep-going --io-driver epoll --port-base 31000 --no-install",
        ))
        .unwrap();
        assert_eq!(
            o.rows,
            vec![
                GRow::GrpcDirect,
                GRow::GrpcRingmesh,
                GRow::GrpcNginx,
                GRow::GrpcHaproxy,
                GRow::H2cNginx
            ]
        );
        assert_eq!((o.connections, o.streams, o.payload), (4, 8, 100));
        assert!(o.keep_going && !o.install);
        assert_eq!(o.io_driver, "epoll");
        assert_eq!(o.ports.base, 31000);
        assert!(parse_grpc_opts(&args("--rows grpc,envoy")).is_err());
        assert!(parse_grpc_opts(&args("--streams 0")).is_err());
        assert!(parse_grpc_opts(&args("--connections 64 --streams 32")).is_err());
        assert!(parse_grpc_opts(&args("--io-driver kqueue")).is_err());
        assert!(parse_grpc_opts(&args("--help"))
            .unwrap_err()
            .contains("--streams"));
        for r in ALL_GROWS {
            assert_eq!(parse_rows(r.id()).unwrap(), vec![r]);
        }
        assert_eq!(
            parse_rows("ringmesh").unwrap(),
            vec![
                GRow::GrpcRingmesh,
                GRow::H1Ringmesh,
                GRow::H2cRingmesh,
                GRow::H1H2Ringmesh,
                GRow::H2cH2Ringmesh
            ]
        );
        assert_eq!(parse_rows("bridge").unwrap().len(), 4);
    }

    #[test]
    fn callgrind_opts() {
        let o = parse_grpc_opts(&args("--callgrind")).unwrap();
        assert_eq!(o.rows, vec![GRow::GrpcRingmesh]);
        assert_eq!(o.cg_requests, 10_000);
        let o = parse_grpc_opts(&args("--callgrind --rows grpc,h2c-ringmesh")).unwrap();
        assert_eq!(o.rows, vec![GRow::GrpcRingmesh, GRow::H2cRingmesh]);
        assert!(parse_grpc_opts(&args("--callgrind --rows nginx")).is_err());
        assert!(parse_grpc_opts(&args("--cg-requests 5")).is_err());
    }

    #[test]
    fn rows() {
        let p = Ports { base: 20200 };
        assert_eq!(GRow::GrpcDirect.port(p), 20200);
        assert_eq!(GRow::H1Ringmesh.port(p), GRow::H2cRingmesh.port(p));
        assert_eq!(GRow::H1Nginx.protocol(), "http/1.1");
        assert_eq!(GRow::GrpcNginx.protocol(), "h2c");
        assert!(GRow::GrpcHaproxy.is_grpc() && !GRow::H2cNginx.is_grpc());
    }
}
