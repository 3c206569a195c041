//! Shared harness of the ringmesh-proxy integration tests: starting the proxy
//! binary with a generated config, a raw HTTP/1.1 client, test upstreams,
//! metric helpers and a `curl` wrapper.
#![allow(dead_code)]

pub mod h2raw;
pub mod h2server;
pub mod http;
pub mod pki;
pub mod upstream;

#[allow(unused_imports)]
pub use h2server::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use upstream::*;

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test: Cargo's own (when these tests live in the engine
/// crate), else `$RINGMESH_PROXY_BIN`, else the workspace debug build.
pub fn proxy_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_ringmesh-proxy") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("RINGMESH_PROXY_BIN") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("/work/main/target/debug/ringmesh-proxy")
}

/// A port that was free a moment ago (bind :0 and drop; the race with other
/// processes is accepted). Never the same port twice within this test process:
/// the kernel may hand a just-released port straight out again.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh free port after 1000 tries");
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `f` every 20 ms until it is true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh private directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "ringmesh-itest-{}-{n}-{nanos}-{tag}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `path` atomically (a reloading proxy never sees half a file).
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A running proxy. Killed with SIGKILL on drop; its log is printed if the test panicked.
pub struct Proxy {
    child: Mutex<Child>,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pid: u32,
}

impl Proxy {
    /// Starts the proxy with `--workers 2` and waits for `/ready`.
    /// `body` is the YAML config without the `admin:` section, which is added.
    pub fn start(body: &str) -> Proxy {
        Proxy::start_with(body, &[])
    }

    /// Like `start`, with extra arguments (`--workers 2` unless `--workers` is given).
    pub fn start_with(body: &str, args: &[&str]) -> Proxy {
        let p = Proxy::spawn(body, args);
        p.wait_ready(Duration::from_secs(10));
        p
    }

    /// Starts the process without waiting for readiness (admin section added).
    pub fn spawn(body: &str, args: &[&str]) -> Proxy {
        let admin = local(free_port());
        Proxy::spawn_full(&config_text(admin, body), admin, args)
    }

    /// Starts the process with a complete config text whose admin address is `admin`.
    pub fn spawn_full(text: &str, admin: SocketAddr, args: &[&str]) -> Proxy {
        let dir = scratch_dir("proxy");
        let config_path = dir.join("proxy.yaml");
        fs::write(&config_path, text).unwrap();
        Proxy::launch(dir, Some(config_path), admin, args)
    }

    /// Starts the process with only `args` (no `--config`; control mode),
    /// `--workers 2` unless given, the I/O driver of the suite.
    pub fn spawn_no_config(admin: SocketAddr, args: &[&str]) -> Proxy {
        Proxy::launch(scratch_dir("proxy"), None, admin, args)
    }

    /// Like `spawn`, with `prepare` applied to the command before it starts
    /// (e.g. a `pre_exec` that lowers a resource limit).
    pub fn spawn_prepared(body: &str, args: &[&str], prepare: impl FnOnce(&mut Command)) -> Proxy {
        let admin = local(free_port());
        let dir = scratch_dir("proxy");
        let config_path = dir.join("proxy.yaml");
        fs::write(&config_path, config_text(admin, body)).unwrap();
        Proxy::launch_with(dir, Some(config_path), admin, args, prepare)
    }

    fn launch(dir: PathBuf, config: Option<PathBuf>, admin: SocketAddr, args: &[&str]) -> Proxy {
        Proxy::launch_with(dir, config, admin, args, |_| {})
    }

    fn launch_with(
        dir: PathBuf,
        config: Option<PathBuf>,
        admin: SocketAddr,
        args: &[&str],
        prepare: impl FnOnce(&mut Command),
    ) -> Proxy {
        let log_path = dir.join("proxy.log");
        let log = fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(proxy_bin());
        if let Some(c) = &config {
            cmd.arg("--config").arg(c);
        }
        if !args.contains(&"--workers") {
            cmd.args(["--workers", "2"]);
        }
        // RINGMESH_ITEST_IO_DRIVER=epoll runs the whole suite on another driver.
        if let Ok(d) = std::env::var("RINGMESH_ITEST_IO_DRIVER") {
            if !d.is_empty() && !args.contains(&"--io-driver") {
                cmd.args(["--io-driver", &d]);
            }
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env("RUST_BACKTRACE", "1");
        prepare(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", proxy_bin().display()));
        let pid = child.id();
        Proxy {
            child: Mutex::new(child),
            admin,
            config_path: config.unwrap_or_else(|| dir.join("(none)")),
            dir,
            log_path,
            pid,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Polls `GET /ready` until 200; panics (with the log) on timeout or early exit.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.admin_get("/ready") {
                if r.status == 200 {
                    return;
                }
            }
            if let Some(st) = self.exit_status_now() {
                panic!(
                    "proxy exited early with {st} before /ready; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!("proxy not ready after {timeout:?}; log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn exit_status_now(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// Replaces the config file (admin section kept) without signalling.
    pub fn write_config(&self, body: &str) {
        write_atomic(&self.config_path, &config_text(self.admin, body));
    }

    /// Writes the config file verbatim (e.g. a broken one).
    pub fn write_config_raw(&self, text: &str) {
        write_atomic(&self.config_path, text);
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exit_status_now() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn admin_get(&self, path: &str) -> std::io::Result<Response> {
        let mut c = Conn::try_connect(self.admin)?;
        c.set_read_timeout(Duration::from_secs(5));
        c.request(&Req::get(path).host("admin").header("Connection", "close"))
    }

    /// `GET /stats/prometheus` body.
    pub fn metrics(&self) -> String {
        let r = self
            .admin_get("/stats/prometheus")
            .unwrap_or_else(|e| panic!("GET /stats/prometheus: {e}; log:\n{}", self.log()));
        assert_eq!(r.status, 200, "GET /stats/prometheus");
        r.text()
    }

    /// One series' value (`name{labels}` exactly as exported), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    /// Polls the metrics until `series` satisfies `pred` (metrics may be published
    /// a moment after the response); returns the last scrape.
    pub fn wait_metric(
        &self,
        series: &str,
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> String {
        let mut last = String::new();
        wait_until(timeout, || {
            last = self.metrics();
            metric_value(&last, series).is_some_and(&pred)
        });
        last
    }

    /// `GET /config_dump` as JSON.
    pub fn config_dump(&self) -> serde_json::Value {
        let r = self.admin_get("/config_dump").expect("GET /config_dump");
        assert_eq!(r.status, 200, "GET /config_dump");
        r.json()
    }

    /// Resident set size in KiB (VmRSS).
    pub fn rss_kb(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Everything the proxy wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!(
                "---- proxy log ({}; config {}) ----\n{}\n---- end of proxy log ----",
                self.log_path.display(),
                self.config_path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            eprintln!(
                "---- config ----\n{}",
                fs::read_to_string(&self.config_path).unwrap_or_default()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The full config text: our admin section + the test's body.
pub fn config_text(admin: SocketAddr, body: &str) -> String {
    format!("admin:\n  address: {admin}\n{body}")
}

/// A YAML `clusters:` entry list item.
/// A listener `web` on `port` whose one route `r` sends everything to cluster
/// `name`: the config most tests start from.
pub fn catch_all(port: u16, name: &str, endpoints: &[SocketAddr]) -> String {
    format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: {name} }}
clusters:
{}"#,
        cluster_yaml(name, endpoints)
    )
}

pub fn cluster_yaml(name: &str, endpoints: &[SocketAddr]) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!("  - name: {name}\n    endpoints: [{}]\n", eps.join(", "))
}

/// One series' value from Prometheus text: the line must be `series value`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let v = rest.strip_prefix(' ')?;
        v.trim().parse::<f64>().ok()
    })
}

/// Asserts that `line` appears verbatim as a line of the metrics text.
pub fn assert_metric_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l.trim_end() == line),
        "metric line {line:?} not found; related lines:\n{}",
        related_lines(text, line)
    );
}

/// Lines of `text` with the same metric name as `line` (for failure messages).
pub fn related_lines(text: &str, line: &str) -> String {
    let name = line.split(['{', ' ']).next().unwrap_or(line);
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with(name)).collect();
    if found.is_empty() {
        format!("(no series named {name})")
    } else {
        found.join("\n")
    }
}

/// Result of running a program to completion (or killing it at the timeout).
pub struct Ran {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with output captured to files, killing it after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Ran {
    let dir = scratch_dir("run");
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let ran = Ran {
        status,
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    };
    let _ = fs::remove_dir_all(&dir);
    ran
}

/// Runs the proxy binary with `args` to completion (for --validate and startup errors).
pub fn run_proxy(args: &[&str], timeout: Duration) -> Ran {
    let mut cmd = Command::new(proxy_bin());
    cmd.args(args);
    run_with_timeout(cmd, timeout)
}

/// Runs real curl with `args`; proxies from the environment are ignored.
pub fn curl(args: &[&str]) -> Ran {
    let mut cmd = Command::new("/usr/bin/curl");
    cmd.args(["--noproxy", "*", "--max-time", "20"]).args(args);
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(v);
    }
    run_with_timeout(cmd, Duration::from_secs(25))
}

/// True if a TCP connect to `addr` is refused right now.
pub fn connect_refused(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

/// Samples a process's RSS (VmRSS) every 20 ms on a thread until finished;
/// `finish` returns the peak in KiB.
pub struct RssPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl RssPeak {
    pub fn start(pid: u32) -> RssPeak {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kb) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    p.fetch_max(kb, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        RssPeak {
            stop,
            peak,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::SeqCst)
    }
}
