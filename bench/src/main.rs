//! Side-by-side benchmark harness: ringmesh (io_uring and epoll) against nginx,
//! HAProxy and the direct path, in one run. See `bench/RESULTS.md` and
//! `cargo run --release -p ringmesh-bench -- --help`.
//!
//! Method (2-core machine): the upstream (nginx, or our TCP source for L4) and
//! the load generator share CPU 1; each proxy runs 1 worker pinned to CPU 0.
//! CPU per request = the proxy's utime+stime from /proc over the run divided
//! by completed requests. Rounds are interleaved so drift hits every row alike.

use ringmesh_bench::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PORT_UP: u16 = 20000;
const PORT_NGINX: u16 = 20001;
const PORT_HAPROXY: u16 = 20002;
const PORT_URING: u16 = 20003;
const PORT_EPOLL: u16 = 20004;
const PORT_ADMIN_URING: u16 = 20013;
const PORT_ADMIN_EPOLL: u16 = 20014;
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

type Res<T> = Result<T, String>;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Row {
    Uring,
    Epoll,
    Nginx,
    Haproxy,
    Direct,
}

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::Uring => "ringmesh io_uring",
            Row::Epoll => "ringmesh epoll",
            Row::Nginx => "nginx",
            Row::Haproxy => "HAProxy",
            Row::Direct => "direct (no proxy)",
        }
    }
    fn port(self) -> u16 {
        match self {
            Row::Uring => PORT_URING,
            Row::Epoll => PORT_EPOLL,
            Row::Nginx => PORT_NGINX,
            Row::Haproxy => PORT_HAPROXY,
            Row::Direct => PORT_UP,
        }
    }
    fn parse(s: &str) -> Res<Row> {
        Ok(match s {
            "uring" | "io_uring" => Row::Uring,
            "epoll" => Row::Epoll,
            "nginx" => Row::Nginx,
            "haproxy" => Row::Haproxy,
            "direct" => Row::Direct,
            _ => {
                return Err(format!(
                    "unknown row {s:?} (uring, epoll, nginx, haproxy, direct)"
                ))
            }
        })
    }
}

const ALL_ROWS: [Row; 5] = [
    Row::Uring,
    Row::Epoll,
    Row::Nginx,
    Row::Haproxy,
    Row::Direct,
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Http1,
    Body16k,
    Body1m,
    Conns1000,
    Close,
    Tcp,
    Rate,
    Memory,
    Callgrind,
}

impl Scenario {
    fn parse(s: &str) -> Res<Scenario> {
        Ok(match s {
            "http1" => Scenario::Http1,
            "body16k" => Scenario::Body16k,
            "body1m" => Scenario::Body1m,
            "conns1000" => Scenario::Conns1000,
            "close" => Scenario::Close,
            "tcp" => Scenario::Tcp,
            "rate" => Scenario::Rate,
            "memory" => Scenario::Memory,
            "callgrind" => Scenario::Callgrind,
            _ => return Err(format!("unknown scenario {s:?}\n{USAGE}")),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Scenario::Http1 => "http1",
            Scenario::Body16k => "body16k",
            Scenario::Body1m => "body1m",
            Scenario::Conns1000 => "conns1000",
            Scenario::Close => "close",
            Scenario::Tcp => "tcp",
            Scenario::Rate => "rate",
            Scenario::Memory => "memory",
            Scenario::Callgrind => "callgrind",
        }
    }
    fn describe(self, o: &Opts) -> String {
        match self {
            Scenario::Http1 => format!("HTTP/1.1 keep-alive, 12-byte body, wrk -t1 -c{}", o.conns(32)),
            Scenario::Body16k => format!("HTTP/1.1 keep-alive, 16 KiB body, wrk -t1 -c{}", o.conns(32)),
            Scenario::Body1m => format!("HTTP/1.1 keep-alive, 1 MiB body, wrk -t1 -c{}", o.conns(8)),
            Scenario::Conns1000 => format!("HTTP/1.1 keep-alive, 12-byte body, wrk -t1 -c{}", o.conns(1000)),
            Scenario::Close => format!(
                "HTTP/1.1 connection per request (Connection: close), wrk -t1 -c{}",
                o.conns(32)
            ),
            Scenario::Tcp => format!("L4 TCP bulk download through the proxy, {} connections", o.conns(4)),
            Scenario::Rate => format!(
                "fixed rate {} req/s over {} keep-alive connections (our constant-rate generator, latency from the intended send time)",
                o.rate,
                o.conns(32)
            ),
            Scenario::Memory => format!(
                "2 workers: idle RSS, then RSS growth with {} idle keep-alive connections",
                o.idle_conns
            ),
            Scenario::Callgrind => "instructions per keep-alive request under callgrind".to_string(),
        }
    }
    fn path(self) -> &'static str {
        match self {
            Scenario::Body16k => "/b16k",
            Scenario::Body1m => "/b1m",
            _ => "/",
        }
    }
}

const USAGE: &str = "usage: ringmesh-bench [SCENARIO] [flags]
scenarios: http1 (default) | body16k | body1m | conns1000 | close | tcp | rate | memory | callgrind | all
flags:
  --repeats N        interleaved rounds (default 3)
  --duration S       seconds per run (default 5)
  --connections N    override the scenario's connection count
  --rate R           req/s for the rate scenario (default 20000)
  --idle-conns N     idle connections for the memory scenario (default 5000)
  --rows a,b,..      subset of uring,epoll,nginx,haproxy,direct
  --proxy-bin PATH   ringmesh-proxy to measure (default: build target/release/ringmesh-proxy)
  --out DIR          where the .md and .png go (default bench/results)
  --no-install       do not apt-get install missing tools";

struct Opts {
    scenarios: Vec<Scenario>,
    repeats: usize,
    duration: u64,
    connections: Option<usize>,
    rate: u64,
    idle_conns: usize,
    rows: Vec<Row>,
    proxy_bin: Option<PathBuf>,
    out: PathBuf,
    install: bool,
    cmdline: String,
}

impl Opts {
    fn conns(&self, default: usize) -> usize {
        self.connections.unwrap_or(default)
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn parse_opts(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        scenarios: vec![],
        repeats: 3,
        duration: 5,
        connections: None,
        rate: 20_000,
        idle_conns: 5000,
        rows: ALL_ROWS.to_vec(),
        proxy_bin: None,
        out: workspace_root().join("bench/results"),
        install: true,
        cmdline: format!(
            "cargo run --release -p ringmesh-bench -- {}",
            args.join(" ")
        ),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "-h" | "--help" => return Err(USAGE.to_string()),
            "--repeats" => o.repeats = val(a)?.parse().map_err(|e| format!("--repeats: {e}"))?,
            "--duration" => o.duration = val(a)?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--connections" => {
                o.connections = Some(val(a)?.parse().map_err(|e| format!("--connections: {e}"))?)
            }
            "--rate" => o.rate = val(a)?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--idle-conns" => {
                o.idle_conns = val(a)?.parse().map_err(|e| format!("--idle-conns: {e}"))?
            }
            "--rows" => o.rows = val(a)?.split(',').map(Row::parse).collect::<Res<_>>()?,
            "--proxy-bin" => o.proxy_bin = Some(PathBuf::from(val(a)?)),
            "--out" => o.out = PathBuf::from(val(a)?),
            "--no-install" => o.install = false,
            "all" => o.scenarios.extend([
                Scenario::Http1,
                Scenario::Body16k,
                Scenario::Body1m,
                Scenario::Conns1000,
                Scenario::Close,
                Scenario::Tcp,
                Scenario::Rate,
                Scenario::Memory,
                Scenario::Callgrind,
            ]),
            s if !s.starts_with('-') => o.scenarios.push(Scenario::parse(s)?),
            s => return Err(format!("unknown flag {s}\n{USAGE}")),
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios.push(Scenario::Http1);
    }
    if o.repeats == 0 || o.duration == 0 {
        return Err("--repeats and --duration must be positive".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------- processes

/// A child we started; killed (SIGTERM, then SIGKILL) by its own PID on drop.
struct Proc {
    child: Child,
    name: String,
    kill_signal: i32,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        unsafe { libc::kill(pid, self.kill_signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("[bench] {} (pid {pid}) did not stop: SIGKILL", self.name);
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Res<Proc> {
    let f = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    Ok(Proc {
        child,
        name: name.to_string(),
        kill_signal: libc::SIGTERM,
    })
}

/// Runs a command to completion with a deadline; returns stdout+stderr.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Res<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(_st) = child.try_wait().map_err(|e| e.to_string())? {
            break;
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = t_out.join().unwrap_or_default();
    s.push_str(&t_err.join().unwrap_or_default());
    Ok(s)
}

fn read_proc(pid: u32, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()
}

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| read_proc(*p, "stat").and_then(|s| parse_proc_stat_cpu_ticks(&s)))
        .sum()
}

fn rss_sum(pids: &[u32], field: &str) -> u64 {
    pids.iter()
        .filter_map(|p| read_proc(*p, "status").and_then(|s| parse_proc_kb_field(&s, field)))
        .sum()
}

fn pss_sum(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| read_proc(*p, "smaps_rollup").and_then(|s| parse_proc_kb_field(&s, "Pss")))
        .sum()
}

fn children_of(ppid: u32) -> Vec<u32> {
    let mut v = vec![];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if read_proc(pid, "stat").and_then(|s| parse_proc_stat_ppid(&s)) == Some(ppid) {
                v.push(pid);
            }
        }
    }
    v.sort();
    v
}

fn clk_tck() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn wait_port(port: u16, timeout: Duration) -> Res<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "nothing listens on 127.0.0.1:{port} after {timeout:?}"
    ))
}

// ---------------------------------------------------------------- setup

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn install_missing(o: &Opts) -> Res<()> {
    let mut need: Vec<&str> = vec![];
    if !have("nginx") {
        need.push("nginx-light");
    }
    if !have("haproxy") {
        need.push("haproxy");
    }
    if !have("wrk") {
        need.push("wrk");
    }
    if !have("taskset") {
        need.push("util-linux");
    }
    if o.scenarios.contains(&Scenario::Callgrind) && !have("callgrind_control") {
        need.push("valgrind");
    }
    if o.scenarios.contains(&Scenario::Tcp) && !Path::new(NGINX_STREAM_MODULE).exists() {
        need.push("libnginx-mod-stream");
    }
    if !Path::new(FONT).exists() {
        need.push("fonts-dejavu-core");
    }
    if need.is_empty() {
        return Ok(());
    }
    if !o.install {
        return Err(format!(
            "missing: {} (rerun without --no-install)",
            need.join(" ")
        ));
    }
    eprintln!("[bench] installing from Debian: {}", need.join(" "));
    let s = format!(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {} >/dev/null",
        need.join(" ")
    );
    run_bounded(
        Command::new("sh").arg("-c").arg(s),
        Duration::from_secs(600),
    )?;
    Ok(())
}

fn proxy_binary(o: &Opts) -> Res<PathBuf> {
    if let Some(p) = &o.proxy_bin {
        if !p.exists() {
            return Err(format!("--proxy-bin {}: no such file", p.display()));
        }
        return Ok(p.clone());
    }
    let root = workspace_root();
    eprintln!("[bench] cargo build --release -p ringmesh-engine");
    let st = Command::new("cargo")
        .args(["build", "--release", "-q", "-p", "ringmesh-engine"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err("building ringmesh-engine failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root.join(p) } else { p })
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/ringmesh-proxy"))
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Http,
    Tcp,
}

struct SetupCfg {
    mode: Mode,
    workers: usize,
    maxconn: usize,
    under_valgrind: bool,
}

/// Everything started for one scenario; dropping it stops it all.
struct Env {
    dir: PathBuf,
    /// Per row: the PIDs whose CPU is counted (nginx: its workers).
    cpu_pids: HashMap<Row, Vec<u32>>,
    /// Per row: the PIDs whose memory is counted (nginx: master + workers).
    mem_pids: HashMap<Row, Vec<u32>>,
    // Dropped in reverse order of start: proxies first, upstream last.
    procs: Vec<Proc>,
}

impl Drop for Env {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}

fn cpu_list(workers: usize) -> String {
    (0..workers)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn write(path: &Path, text: &str) -> Res<()> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn ringmesh_yaml(mode: Mode, port: u16, admin: u16) -> String {
    match mode {
        Mode::Http => format!(
            "admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: v
        domains: [\"*\"]
        routes:
          - match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: up }}
clusters:
  - {{ name: up, endpoints: [\"127.0.0.1:{PORT_UP}\"] }}
"
        ),
        Mode::Tcp => format!(
            "admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: l4
    address: 127.0.0.1:{port}
    protocol: tcp
    cluster: up
clusters:
  - {{ name: up, endpoints: [\"127.0.0.1:{PORT_UP}\"] }}
"
        ),
    }
}

fn start_ringmesh(env: &mut Env, bin: &Path, row: Row, cfg: &SetupCfg) -> Res<()> {
    let (drv, admin) = match row {
        Row::Uring => ("uring", PORT_ADMIN_URING),
        _ => ("epoll", PORT_ADMIN_EPOLL),
    };
    let yaml = env.dir.join(format!("rm-{drv}.yaml"));
    write(&yaml, &ringmesh_yaml(cfg.mode, row.port(), admin))?;
    let mut cmd;
    if cfg.under_valgrind {
        cmd = Command::new("valgrind");
        cmd.arg("--tool=callgrind")
            .arg(format!(
                "--callgrind-out-file={}/cg-{drv}.%p",
                env.dir.display()
            ))
            .arg(bin);
    } else {
        cmd = Command::new(bin);
    }
    cmd.arg("-c")
        .arg(&yaml)
        .args(["--workers", &cfg.workers.to_string()])
        .args(["--cpu-list", &cpu_list(cfg.workers)])
        .args(["--io-driver", drv]);
    let mut p = spawn(row.name(), &mut cmd, &env.dir.join(format!("rm-{drv}.log")))?;
    if cfg.under_valgrind {
        p.kill_signal = libc::SIGKILL; // the io_uring worker ignores SIGTERM under valgrind
    }
    let pid = p.pid();
    env.procs.push(p);
    env.cpu_pids.insert(row, vec![pid]);
    env.mem_pids.insert(row, vec![pid]);
    Ok(())
}

fn setup(o: &Opts, bin: &Path, rows: &[Row], cfg: &SetupCfg) -> Res<Env> {
    let mut ports = vec![PORT_UP];
    for r in rows {
        if *r != Row::Direct {
            ports.push(r.port());
        }
        match r {
            Row::Uring => ports.push(PORT_ADMIN_URING),
            Row::Epoll => ports.push(PORT_ADMIN_EPOLL),
            _ => {}
        }
    }
    for p in &ports {
        if !port_free(*p) {
            return Err(format!(
                "port 127.0.0.1:{p} is already in use (the harness uses 20000-20014)"
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("ringmesh-bench.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).map_err(|e| e.to_string())?;
    // nginx workers run as nobody: the tree must be world-readable.
    let _ = Command::new("chmod").args(["-R", "755"]).arg(&dir).status();
    let mut env = Env {
        dir: dir.clone(),
        cpu_pids: HashMap::new(),
        mem_pids: HashMap::new(),
        procs: vec![],
    };
    let d = dir.display();
    let w = cfg.workers;
    let affinity: Vec<String> = (0..w)
        .map(|i| format!("{:0w$b}", 1 << i, w = w.max(2)))
        .collect();

    // Upstream, pinned to CPU 1.
    match cfg.mode {
        Mode::Http => {
            write(&dir.join("www/b16k"), &"x".repeat(16 * 1024))?;
            write(&dir.join("www/b1m"), &"x".repeat(1024 * 1024))?;
            write(
                &dir.join("up.conf"),
                &format!(
                    "worker_processes 1; worker_cpu_affinity 10; daemon off; pid {d}/up.pid; error_log {d}/up.err;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s; sendfile on;
  server {{ listen 127.0.0.1:{PORT_UP} reuseport backlog=4096; root {d}/www;
    location = / {{ return 200 \"hello world\\n\"; }}
    location / {{ }} }} }}
"
                ),
            )?;
            let p = spawn(
                "nginx upstream",
                Command::new("nginx").arg("-c").arg(dir.join("up.conf")),
                &dir.join("up.log"),
            )?;
            env.procs.push(p);
        }
        Mode::Tcp => {
            let me = std::env::current_exe().map_err(|e| e.to_string())?;
            let p = spawn(
                "tcp source",
                Command::new("taskset")
                    .args(["-c", "1"])
                    .arg(me)
                    .args(["__tcp-source", &PORT_UP.to_string()]),
                &dir.join("up.log"),
            )?;
            env.procs.push(p);
        }
    }
    wait_port(PORT_UP, Duration::from_secs(10))?;

    for &row in rows {
        match row {
            Row::Uring | Row::Epoll => start_ringmesh(&mut env, bin, row, cfg)?,
            Row::Nginx => {
                let body = match cfg.mode {
                    Mode::Http => format!(
                        "http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  upstream up {{ server 127.0.0.1:{PORT_UP}; keepalive 64; }}
  server {{ listen 127.0.0.1:{PORT_NGINX} backlog=4096; location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}"
                    ),
                    Mode::Tcp => format!(
                        "stream {{ server {{ listen 127.0.0.1:{PORT_NGINX} backlog=4096; proxy_pass 127.0.0.1:{PORT_UP}; }} }}"
                    ),
                };
                let module = if cfg.mode == Mode::Tcp {
                    format!("load_module {NGINX_STREAM_MODULE};\n")
                } else {
                    String::new()
                };
                write(
                    &dir.join("nginx.conf"),
                    &format!(
                        "{module}worker_processes {w}; worker_cpu_affinity {}; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
{body}
",
                        affinity.join(" ")
                    ),
                )?;
                let p = spawn(
                    "nginx",
                    Command::new("nginx").arg("-c").arg(dir.join("nginx.conf")),
                    &dir.join("nginx.log"),
                )?;
                let master = p.pid();
                env.procs.push(p);
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut workers = children_of(master);
                while workers.len() < w && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                    workers = children_of(master);
                }
                if workers.len() < w {
                    return Err(format!(
                        "nginx started {} of {w} workers (see {d}/nginx.err)",
                        workers.len()
                    ));
                }
                let mut all = workers.clone();
                all.push(master);
                env.cpu_pids.insert(row, workers);
                env.mem_pids.insert(row, all);
            }
            Row::Haproxy => {
                let (mode, extra) = match cfg.mode {
                    Mode::Http => (
                        "http",
                        "  http-reuse always\n  timeout http-keep-alive 300s\n",
                    ),
                    Mode::Tcp => ("tcp", ""),
                };
                write(
                    &dir.join("haproxy.cfg"),
                    &format!(
                        "global
  nbthread {w}
  cpu-map auto:1/1-{w} 0-{}
  maxconn {}
defaults
  mode {mode}
  timeout connect 5s
  timeout client 300s
  timeout server 300s
{extra}frontend f
  bind 127.0.0.1:{PORT_HAPROXY}
  default_backend b
backend b
  server s1 127.0.0.1:{PORT_UP}
",
                        w - 1,
                        cfg.maxconn
                    ),
                )?;
                let p = spawn(
                    "HAProxy",
                    Command::new("haproxy")
                        .arg("-f")
                        .arg(dir.join("haproxy.cfg")),
                    &dir.join("haproxy.log"),
                )?;
                let pid = p.pid();
                env.procs.push(p);
                env.cpu_pids.insert(row, vec![pid]);
                env.mem_pids.insert(row, vec![pid]);
            }
            Row::Direct => {}
        }
    }
    let wait = if cfg.under_valgrind { 120 } else { 15 };
    for &row in rows {
        wait_port(row.port(), Duration::from_secs(wait))
            .map_err(|e| format!("{}: {e} (logs in {d})", row.name()))?;
    }
    let _ = o;
    Ok(env)
}

// ---------------------------------------------------------------- load

#[derive(Clone, Default, Debug)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: Option<f64>,
    errors: f64,
    cpu_us_per_req: Option<f64>,
    peak_rss_mb: Option<f64>,
    mb_per_s: f64,
    cpu_s_per_gb: Option<f64>,
}

fn wrk_cmd(o: &Opts, sc: Scenario, port: u16, secs: u64, lua: &Path) -> Command {
    let conns = match sc {
        Scenario::Body1m => o.conns(8),
        Scenario::Conns1000 => o.conns(1000),
        _ => o.conns(32),
    };
    let mut c = Command::new("taskset");
    c.args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .args(["--timeout", "5s", "--latency", "-s"])
        .arg(lua);
    if sc == Scenario::Close {
        c.args(["-H", "Connection: close"]);
    }
    c.arg(format!("http://127.0.0.1:{port}{}", sc.path()));
    c
}

fn measure(o: &Opts, env: &Env, sc: Scenario, row: Row, secs: u64) -> Res<Sample> {
    let pids = env.cpu_pids.get(&row).cloned().unwrap_or_default();
    let t0 = cpu_ticks(&pids);
    let mut s = Sample::default();
    let timeout = Duration::from_secs(secs + 30);
    let lua = env.dir.join("report.lua");
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let (requests, bytes) = match sc {
        Scenario::Tcp => {
            let out = run_bounded(
                Command::new("taskset").args(["-c", "1"]).arg(&me).args([
                    "__tcp-sink",
                    &row.port().to_string(),
                    &o.conns(4).to_string(),
                    &secs.to_string(),
                ]),
                timeout,
            )?;
            let r = parse_wrk(&out).ok_or_else(|| format!("tcp sink output: {out}"))?;
            s.mb_per_s = r.bytes as f64 / 1e6 / r.duration_s;
            s.errors = r.errors as f64;
            (r.requests, r.bytes)
        }
        Scenario::Rate => {
            let out = run_bounded(
                Command::new("taskset").args(["-c", "1"]).arg(&me).args([
                    "__rate",
                    &row.port().to_string(),
                    &o.rate.to_string(),
                    &o.conns(32).to_string(),
                    &secs.to_string(),
                ]),
                timeout,
            )?;
            let r = parse_wrk(&out).ok_or_else(|| format!("rate generator output: {out}"))?;
            s.rps = r.rps;
            s.p50_ms = r.p50_us / 1e3;
            s.p99_ms = r.p99_us / 1e3;
            s.p999_ms = r.p999_us.map(|v| v / 1e3);
            s.errors = r.errors as f64;
            (r.requests, r.bytes)
        }
        _ => {
            let out = run_bounded(&mut wrk_cmd(o, sc, row.port(), secs, &lua), timeout)?;
            let r = parse_wrk(&out).ok_or_else(|| format!("{} wrk output: {out}", row.name()))?;
            s.rps = r.rps;
            s.p50_ms = r.p50_us / 1e3;
            s.p99_ms = r.p99_us / 1e3;
            s.p999_ms = r.p999_us.map(|v| v / 1e3);
            s.errors = r.errors as f64;
            (r.requests, r.bytes)
        }
    };
    let t1 = cpu_ticks(&pids);
    if !pids.is_empty() {
        let cpu_s = (t1 - t0) as f64 / clk_tck();
        if requests > 0 {
            s.cpu_us_per_req = Some(cpu_s * 1e6 / requests as f64);
        }
        if bytes > 0 {
            s.cpu_s_per_gb = Some(cpu_s / (bytes as f64 / 1e9));
        }
        let mem = env.mem_pids.get(&row).cloned().unwrap_or_default();
        s.peak_rss_mb = Some(rss_sum(&mem, "VmHWM") as f64 / 1e6);
    }
    Ok(s)
}

fn sm(v: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<Summary> {
    let xs: Vec<f64> = v.iter().filter_map(f).collect();
    summarize(&xs)
}

struct Report {
    md: String,
    /// For the chart: (row, p50, p99, p99.9 medians in ms, CPU µs/req median).
    chart: Vec<(String, f64, f64, f64, Option<f64>)>,
}

fn load_scenario(o: &Opts, bin: &Path, sc: Scenario) -> Res<Report> {
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
    let env = setup(o, bin, &rows, &cfg)?;
    write(&env.dir.join("report.lua"), WRK_LUA)?;
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

    let get = |row: Row| samples.get(&row).cloned().unwrap_or_default();
    let mut md = String::new();
    let mut chart = vec![];
    if sc == Scenario::Tcp {
        let header = ["proxy", "MB/s", "CPU s/GB", "peak RSS MB", "errors"];
        let mut t = vec![];
        for &row in &rows {
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
        for &row in &rows {
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
        for &row in &rows {
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
        for &row in &rows {
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
    Ok(Report { md, chart })
}

// ---------------------------------------------------------------- memory

/// Sends one GET and reads the whole response; returns the status.
fn http_get(stream: &mut TcpStream, buf: &mut Vec<u8>, req: &[u8]) -> std::io::Result<u16> {
    stream.write_all(req)?;
    buf.clear();
    let mut chunk = [0u8; 16384];
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response");
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let (code, len, chunked) = parse_response_head(&buf[..pos]).ok_or_else(bad)?;
            let body_start = pos + 4;
            if let Some(len) = len {
                let mut have = buf.len() - body_start;
                while have < len {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(bad());
                    }
                    have += n;
                }
            } else if chunked {
                while !buf.ends_with(b"0\r\n\r\n") {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(bad());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            return Ok(code);
        }
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

fn memory_scenario(o: &Opts, bin: &Path) -> Res<Report> {
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
    let env = setup(o, bin, &rows, &cfg)?;
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

// ---------------------------------------------------------------- callgrind

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

fn callgrind_ctl(flag: &str, pid: u32) -> Res<()> {
    run_bounded(
        Command::new("callgrind_control")
            .arg(flag)
            .arg(pid.to_string()),
        Duration::from_secs(60),
    )
    .map(|_| ())
}

fn callgrind_scenario(o: &Opts, bin: &Path) -> Res<Report> {
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
        let env = setup(o, bin, &[row], &cfg)?;
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

// ---------------------------------------------------------------- helpers run as subprocesses

/// `__tcp-source PORT`: accepts connections and writes zeros into them until they close.
fn tcp_source(port: u16) -> Res<()> {
    let l = TcpListener::bind(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let buf = vec![0u8; 256 * 1024];
            while s.write_all(&buf).is_ok() {}
        });
    }
    Ok(())
}

/// `__tcp-sink PORT CONNS SECS`: reads through CONNS connections for SECS seconds.
fn tcp_sink(port: u16, conns: usize, secs: u64) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let hs: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || -> (u64, u64) {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return (0, 1);
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                while Instant::now() < deadline {
                    match s.read(&mut buf) {
                        Ok(0) => return (total, 1),
                        Ok(n) => total += n as u64,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return (total, 1),
                    }
                }
                (total, 0)
            })
        })
        .collect();
    let (mut bytes, mut errors) = (0, 0);
    for h in hs {
        let (b, e) = h.join().unwrap_or((0, 1));
        bytes += b;
        errors += e;
    }
    let el = start.elapsed();
    println!("RMBENCH requests {conns}\nRMBENCH duration_us {}\nRMBENCH bytes {bytes}\nRMBENCH errors {errors}", el.as_micros());
    Ok(())
}

/// `__rate PORT RATE CONNS SECS`: constant-rate load, latency measured from the
/// intended send time (no coordinated omission: a stalled response delays the
/// following requests of that connection, and their waiting counts).
fn rate_gen(port: u16, rate: u64, conns: usize, secs: u64) -> Res<()> {
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs(secs);
    let interval = Duration::from_secs_f64(conns as f64 / rate as f64);
    let hs: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || -> (Vec<u64>, u64) {
                let mut lat = Vec::with_capacity((rate * secs) as usize / conns + 16);
                let mut errors = 0;
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return (lat, 1);
                };
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::with_capacity(4096);
                let mut k = 0u32;
                let offset = interval.mul_f64(i as f64 / conns as f64);
                loop {
                    let intended = start + offset + interval * k;
                    if intended >= end {
                        break;
                    }
                    let now = Instant::now();
                    if intended > now {
                        std::thread::sleep(intended - now);
                    }
                    match http_get(&mut s, &mut buf, GET) {
                        Ok(200) => lat.push(intended.elapsed().as_micros() as u64),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            match TcpStream::connect(("127.0.0.1", port)) {
                                Ok(n) => s = n,
                                Err(_) => return (lat, errors),
                            }
                        }
                    }
                    k += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = vec![];
    let mut errors = 0;
    for h in hs {
        let (l, e) = h.join().unwrap_or_default();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    println!(
        "RMBENCH requests {}\nRMBENCH duration_us {}\nRMBENCH errors {errors}\nRMBENCH p50_us {}\nRMBENCH p99_us {}\nRMBENCH p999_us {}",
        all.len(),
        secs * 1_000_000,
        percentile_sorted(&all, 50.0),
        percentile_sorted(&all, 99.0),
        percentile_sorted(&all, 99.9)
    );
    Ok(())
}

// ---------------------------------------------------------------- chart

fn chart(path: &Path, title: &str, data: &[(String, f64, f64, f64, Option<f64>)]) -> Res<()> {
    use plotters::prelude::*;
    let font: &'static [u8] = Box::leak(
        std::fs::read(FONT)
            .map_err(|e| format!("{FONT}: {e}"))?
            .into_boxed_slice(),
    );
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "bad font".to_string())?;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(800);
    let n = data.len();
    let names: Vec<String> = data.iter().map(|d| d.0.clone()).collect();
    let colors = [
        RGBColor(70, 130, 180),
        RGBColor(255, 140, 0),
        RGBColor(178, 34, 34),
    ];

    // Left: latency percentiles, grouped bars per proxy.
    let ymax = data
        .iter()
        .map(|d| d.1.max(d.2).max(d.3))
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.15;
    let mut c = ChartBuilder::on(&left)
        .caption(
            "latency (ms): p50 / p99 / p99.9, median of repeats",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        .map_err(|x| e(&x))?;
    let nm = names.clone();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < nm.len() {
                nm[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("ms")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|x| e(&x))?;
    for (k, label) in ["p50", "p99", "p99.9"].iter().enumerate() {
        let col = colors[k];
        c.draw_series(data.iter().enumerate().map(|(i, d)| {
            let v = [d.1, d.2, d.3][k];
            let x0 = i as f64 + 0.15 + k as f64 * 0.23;
            Rectangle::new([(x0, 0.0), (x0 + 0.2, v)], col.filled())
        }))
        .map_err(|x| e(&x))?
        .label(*label)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
        c.draw_series(data.iter().enumerate().map(|(i, d)| {
            let v = [d.1, d.2, d.3][k];
            let x0 = i as f64 + 0.15 + k as f64 * 0.23;
            Text::new(
                format!("{v:.2}"),
                (x0, v + ymax * 0.035),
                ("sans-serif", 11),
            )
        }))
        .map_err(|x| e(&x))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;

    // Right: CPU µs per request.
    let cpu: Vec<(usize, &String, f64)> = data
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.4.map(|v| (i, &d.0, v)))
        .collect();
    let cmax = cpu.iter().map(|c| c.2).fold(0.0, f64::max).max(0.001) * 1.2;
    let mut c = ChartBuilder::on(&right)
        .caption(
            "proxy CPU µs per request (lower is better)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..cpu.len().max(1) as f64, 0f64..cmax)
        .map_err(|x| e(&x))?;
    let cn: Vec<String> = cpu.iter().map(|c| c.1.clone()).collect();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(cpu.len() * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < cn.len() {
                cn[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("µs / request")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|x| e(&x))?;
    c.draw_series(cpu.iter().enumerate().map(|(j, _)| {
        Rectangle::new(
            [(j as f64 + 0.2, 0.0), (j as f64 + 0.8, cpu[j].2)],
            RGBColor(46, 139, 87).filled(),
        )
    }))
    .map_err(|x| e(&x))?;
    c.draw_series(cpu.iter().enumerate().map(|(j, c)| {
        Text::new(
            format!("{:.2}", c.2),
            (j as f64 + 0.35, c.2 + cmax * 0.04),
            ("sans-serif", 13),
        )
    }))
    .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

// ---------------------------------------------------------------- main

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("__tcp-source") => tcp_source(args[1].parse().unwrap()),
        Some("__tcp-sink") => tcp_sink(
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
        ),
        Some("__rate") => rate_gen(
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
        ),
        _ => run(&args),
    };
    if let Err(e) = r {
        eprintln!("ringmesh-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Res<()> {
    let o = parse_opts(args)?;
    install_missing(&o)?;
    let bin = proxy_binary(&o)?;
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let stamp = sh("date -u +%Y-%m-%dT%H:%M:%SZ");
    let file_stamp = stamp.replace([':', '-'], "");
    let machine = format!(
        "{} CPUs ({}), kernel {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim(),
        sh("uname -r")
    );
    let versions = format!(
        "{}; {}; {}; ringmesh {}",
        sh("nginx -v 2>&1"),
        sh("haproxy -v | head -1"),
        sh("wrk -v 2>&1 | head -1"),
        bin.display()
    );
    for &sc in &o.scenarios {
        eprintln!("[bench] scenario {}: {}", sc.name(), sc.describe(&o));
        let rep = match sc {
            Scenario::Memory => memory_scenario(&o, &bin)?,
            Scenario::Callgrind => callgrind_scenario(&o, &bin)?,
            _ => load_scenario(&o, &bin, sc)?,
        };
        let mut md = format!(
            "### {} — {}\n\n- date: {stamp}\n- machine: {machine}\n- tools: {versions}\n- command: `{}`\n- method: upstream and load generator pinned to CPU 1, each proxy 1 worker pinned to CPU 0 (memory: 2 workers on CPUs 0,1); {} repeat(s) of {} s, interleaved; median (min–max)\n\n",
            sc.name(),
            sc.describe(&o),
            o.cmdline,
            o.repeats,
            o.duration
        );
        md.push_str(&rep.md);
        let base = o.out.join(format!("{}-{file_stamp}", sc.name()));
        if !rep.chart.is_empty() {
            let png = base.with_extension("png");
            match chart(
                &png,
                &format!("ringmesh-bench {} — {}", sc.name(), sc.describe(&o)),
                &rep.chart,
            ) {
                Ok(()) => md.push_str(&format!("\nchart: `{}`\n", png.display())),
                Err(e) => eprintln!("[bench] chart failed: {e}"),
            }
        }
        println!("{md}");
        write(&base.with_extension("md"), &md)?;
        eprintln!("[bench] wrote {}", base.with_extension("md").display());
    }
    Ok(())
}
