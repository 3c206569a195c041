//! End-to-end support: the real `ringmesh-control` and `ringmesh-proxy`
//! binaries as processes on loopback, tiny HTTP applications behind them, and
//! a keep-alive client loop that counts every failed request.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub fn control_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringmesh-control"))
}

/// `ringmesh-proxy` from the same target directory; built on demand when only
/// this crate's tests were asked for.
pub fn proxy_bin() -> PathBuf {
    let bin = control_bin().with_file_name("ringmesh-proxy");
    if !bin.exists() {
        let release = bin.to_string_lossy().contains("/release/");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "ringmesh-engine", "--bin", "ringmesh-proxy"]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build ringmesh-proxy");
        assert!(st.success(), "building ringmesh-proxy failed");
    }
    bin
}

/// A port that was free a moment ago. Never the same port twice within this
/// test process: the kernel hands a just-released port straight out again,
/// and a proxy binds its listeners only once its config has arrived.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports, none handed out before in this process.
pub fn free_ports<const N: usize>() -> [u16; N] {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::with_capacity(N);
    for _ in 0..1000 {
        if held.len() == N {
            break;
        }
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            held.push(l);
        }
    }
    assert_eq!(held.len(), N, "no fresh free ports after 1000 tries");
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ringmesh-e2e-{tag}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `text` to `path` the way editors and ConfigMaps do: a temp file
/// renamed over the old one.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A child process killed on drop, its output captured to a file.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, bin: &Path, args: &[String], dir: &Path) -> Process {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Process {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM and wait for the exit (the graceful stop users do).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL: the process vanishes without a word.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            None => true,
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct ControlPlane {
    pub proc: Process,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    grace: String,
    extra: Vec<String>,
}

impl ControlPlane {
    pub fn start(dir: &Path, grace: &str) -> ControlPlane {
        ControlPlane::start_with(dir, grace, &[])
    }

    /// `start` with more `serve` flags (CA files, certificate lifetime).
    pub fn start_with(dir: &Path, grace: &str, extra: &[&str]) -> ControlPlane {
        let config_dir = dir.join("mesh");
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&config_dir).unwrap();
        let [grpc, admin] = free_ports();
        ControlPlane::start_at(
            dir,
            config_dir,
            data_dir,
            (local(grpc), local(admin)),
            grace,
            extra.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn start_at(
        dir: &Path,
        config_dir: PathBuf,
        data_dir: PathBuf,
        (grpc, admin): (SocketAddr, SocketAddr),
        grace: &str,
        extra: Vec<String>,
    ) -> ControlPlane {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--config-dir".into(),
            config_dir.display().to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            grpc.to_string(),
            "--admin".into(),
            admin.to_string(),
            "--grace-period".into(),
            grace.into(),
        ];
        args.extend(extra.iter().cloned());
        let proc = Process::spawn("control", &control_bin(), &args, dir);
        let cp = ControlPlane {
            proc,
            grpc,
            admin,
            config_dir,
            data_dir,
            grace: grace.into(),
            extra,
        };
        let up = wait_until(Duration::from_secs(20), || {
            http_get(cp.admin, "localhost", "/healthz").is_ok_and(|r| r.status == 200)
        });
        assert!(up, "control plane did not come up; log:\n{}", cp.proc.log());
        cp
    }

    /// Kills the process and starts a new one on the same addresses,
    /// directories and data.
    pub fn restart_after_kill(mut self, dir: &Path) -> ControlPlane {
        self.proc.kill();
        let (c, d, g, a, grace, extra) = (
            self.config_dir.clone(),
            self.data_dir.clone(),
            self.grpc,
            self.admin,
            self.grace.clone(),
            self.extra.clone(),
        );
        drop(self);
        ControlPlane::start_at(dir, c, d, (g, a), &grace, extra)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Writes a file of the config directory and waits (up to 5 s) until the
    /// control plane has loaded the change (or refused it), so proxies
    /// started next see it rather than the directory as it was.
    pub fn write(&self, file: &str, text: &str) {
        let before = self.loaded_state();
        write_atomic(&self.config_dir.join(file), text);
        wait_until(Duration::from_secs(5), || self.loaded_state() != before);
    }

    fn loaded_state(&self) -> String {
        let s = self.status();
        format!("{} {}", s["mesh_version"], s["config_error"])
    }

    pub fn status(&self) -> serde_json::Value {
        let r = http_get(self.admin, "localhost", "/status").expect("GET /status");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).expect("status JSON")
    }

    pub fn metrics(&self) -> String {
        let r = http_get(self.admin, "localhost", "/metrics").expect("GET /metrics");
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// SIGHUP: the control plane reloads its CA files.
    pub fn hup(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.proc.pid() as i32, libc::SIGHUP) };
    }

    /// `ringmesh-control status --admin ADDR`, as an operator runs it.
    pub fn status_cli(&self) -> (i32, String) {
        let out = Command::new(control_bin())
            .args(["status", "--admin", &self.admin.to_string()])
            .output()
            .unwrap();
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), s)
    }

    /// The status record of node `id`.
    pub fn node(&self, id: &str) -> Option<serde_json::Value> {
        self.status()["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
    }
}

/// One mesh proxy: a node of `service`.
pub struct MeshProxy {
    pub proc: Process,
    pub id: String,
    pub admin: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
}

pub struct NodeSpec<'a> {
    pub id: &'a str,
    pub service: &'a str,
    pub app_port: u16,
    pub labels: &'a [&'a str],
}

impl MeshProxy {
    pub fn start(dir: &Path, cp: &ControlPlane, n: NodeSpec) -> MeshProxy {
        let [admin, inbound, outbound] = free_ports();
        let mut args: Vec<String> = [
            "--control",
            &cp.url(),
            "--node-id",
            n.id,
            "--service",
            n.service,
            "--address",
            "127.0.0.1",
            "--inbound-port",
            &inbound.to_string(),
            "--outbound-port",
            &outbound.to_string(),
            "--app-port",
            &n.app_port.to_string(),
            "--admin",
            &local(admin).to_string(),
            "--workers",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for l in n.labels {
            args.push("--label".into());
            args.push((*l).into());
        }
        let proc = Process::spawn(n.id, &proxy_bin(), &args, dir);
        MeshProxy {
            proc,
            id: n.id.into(),
            admin: local(admin),
            inbound: local(inbound),
            outbound: local(outbound),
        }
    }

    pub fn ready(&self) -> bool {
        http_get(self.admin, "localhost", "/ready").is_ok_and(|r| r.status == 200)
    }

    pub fn wait_ready(&self) {
        assert!(
            wait_until(Duration::from_secs(20), || self.ready()),
            "{} not ready; log:\n{}",
            self.id,
            self.proc.log()
        );
    }

    pub fn config_dump(&self) -> String {
        let r = http_get(self.admin, "localhost", "/config_dump").expect("config_dump");
        String::from_utf8_lossy(&r.body).into_owned()
    }

    pub fn metrics(&self) -> String {
        let r = http_get(self.admin, "localhost", "/stats/prometheus").expect("metrics");
        String::from_utf8_lossy(&r.body).into_owned()
    }
}

/// An application instance: answers every request 200 with its name as the
/// body (keep-alive), counting requests.
pub struct App {
    pub name: String,
    pub port: u16,
    pub hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// What an application answers with.
#[derive(Clone, Copy)]
enum Answer {
    /// Its name.
    Name,
    /// `<name> xfcc=<x-forwarded-client-cert or "none">`.
    ClientCert,
}

impl App {
    pub fn start(name: &str) -> App {
        App::start_answering(name, Answer::Name)
    }

    /// An app whose body also shows the `x-forwarded-client-cert` header the
    /// proxy in front of it added.
    pub fn start_echo_client_cert(name: &str) -> App {
        App::start_answering(name, Answer::ClientCert)
    }

    fn start_answering(name: &str, answer: Answer) -> App {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, h, s) = (name.to_string(), hits.clone(), stop.clone());
        thread::spawn(move || {
            for c in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(c) = c else { continue };
                let (n, h) = (n.clone(), h.clone());
                thread::spawn(move || serve_app(c, &n, &h, answer));
            }
        });
        App {
            name: name.into(),
            port,
            hits,
            stop,
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(local(self.port));
    }
}

fn serve_app(c: TcpStream, name: &str, hits: &AtomicU64, answer: Answer) {
    let _ = c.set_nodelay(true);
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    loop {
        let mut len = 0usize;
        let mut xfcc = String::from("none");
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let t = h.trim_end();
            if t.is_empty() {
                break;
            }
            if let Some((k, v)) = t.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("x-forwarded-client-cert") {
                    xfcc = v.trim().to_string();
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        hits.fetch_add(1, Ordering::Relaxed);
        let text = match answer {
            Answer::Name => name.to_string(),
            Answer::ClientCert => format!("{name} xfcc={xfcc}"),
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-app: {name}\r\n\r\n{text}",
            text.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client connection (Content-Length bodies only).
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<Resp> {
        self.request("GET", host, path, &[])
    }

    /// One request with extra header lines (no body).
    pub fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Resp> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
        if method != "GET" && method != "HEAD" {
            req.push_str("content-length: 0\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let r = self.exchange(&req);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn exchange(&mut self, req: &str) -> std::io::Result<Resp> {
        let c = self.conn.as_mut().unwrap();
        c.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        if c.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed before the response"));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        let mut len = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            c.read_line(&mut h)?;
            let t = h.trim_end();
            if t.is_empty() {
                break;
            }
            if let Some((k, v)) = t.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        c.read_exact(&mut body)?;
        if close {
            self.conn = None;
        }
        Ok(Resp {
            status,
            headers,
            body,
        })
    }
}

pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<Resp> {
    let mut c = Client::new(addr);
    c.get(host, path)
}

/// Requests sent in a loop on one keep-alive connection (reconnecting after a
/// close), with every outcome tallied by answer body.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub tally: Arc<Mutex<Tally>>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: u64,
    /// Failed requests with what went wrong (status and body, or the error).
    pub failures: Vec<String>,
    /// 200 answers by body (the instance name), since the last `reset_seen`.
    pub seen: std::collections::BTreeMap<String, u64>,
}

impl Load {
    pub fn start(addr: SocketAddr, host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (s, t, host) = (stop.clone(), tally.clone(), host.to_string());
        let handle = thread::spawn(move || {
            let mut c = Client::new(addr);
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                i += 1;
                let r = c.get(&host, &format!("/load/{i}"));
                let mut t = t.lock().unwrap();
                match r {
                    Ok(r) if r.status == 200 => {
                        t.ok += 1;
                        *t.seen.entry(r.text()).or_default() += 1;
                    }
                    Ok(r) => t
                        .failures
                        .push(format!("request {i}: {} {}", r.status, r.text())),
                    Err(e) => t.failures.push(format!("request {i}: {e}")),
                }
            }
        });
        Load {
            stop,
            tally,
            handle: Some(handle),
        }
    }

    pub fn snapshot(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    pub fn reset_seen(&self) {
        self.tally.lock().unwrap().seen.clear();
    }

    /// Waits until at least `n` more requests succeeded.
    pub fn wait_more(&self, n: u64) {
        let start = self.snapshot().ok;
        assert!(
            wait_until(Duration::from_secs(20), || self.snapshot().ok >= start + n),
            "the request loop stalled: {:?}",
            self.snapshot().failures
        );
    }

    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
