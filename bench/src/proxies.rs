//! The rows of every table and how each is run: the upstream (nginx, or our TCP
//! source for L4) pinned to CPU 1, and each proxy under test — its config text,
//! ports, CPU pinning, start, readiness wait and stop (by dropping [`Env`]).

use crate::process::{children_of, port_free, spawn, wait_port, Proc};
use crate::{write_file, Res};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const PORT_UP: u16 = 20000;
pub const PORT_NGINX: u16 = 20001;
pub const PORT_HAPROXY: u16 = 20002;
pub const PORT_URING: u16 = 20003;
pub const PORT_EPOLL: u16 = 20004;
pub const PORT_ADMIN_URING: u16 = 20013;
pub const PORT_ADMIN_EPOLL: u16 = 20014;
/// nginx's `stream {}` (the tcp scenario) is a dynamic module on Debian.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// One row of the tables: a proxy under test, or the direct path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Row {
    Uring,
    Epoll,
    Nginx,
    Haproxy,
    Direct,
}

pub const ALL_ROWS: [Row; 5] = [
    Row::Uring,
    Row::Epoll,
    Row::Nginx,
    Row::Haproxy,
    Row::Direct,
];

impl Row {
    pub fn name(self) -> &'static str {
        match self {
            Row::Uring => "ringmesh io_uring",
            Row::Epoll => "ringmesh epoll",
            Row::Nginx => "nginx",
            Row::Haproxy => "HAProxy",
            Row::Direct => "direct (no proxy)",
        }
    }
    /// Where the load generator connects (the direct row: the upstream itself).
    pub fn port(self) -> u16 {
        match self {
            Row::Uring => PORT_URING,
            Row::Epoll => PORT_EPOLL,
            Row::Nginx => PORT_NGINX,
            Row::Haproxy => PORT_HAPROXY,
            Row::Direct => PORT_UP,
        }
    }
    pub fn parse(s: &str) -> Res<Row> {
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

/// What the proxies forward: HTTP/1.1 requests, or raw TCP (L4).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    Http,
    Tcp,
}

pub struct SetupCfg {
    pub mode: Mode,
    /// Worker threads/processes of every proxy, pinned to CPUs 0..workers.
    pub workers: usize,
    /// HAProxy's `maxconn` (its default would refuse the memory scenario's connections).
    pub maxconn: usize,
    /// Run ringmesh under `valgrind --tool=callgrind` (and stop it with SIGKILL).
    pub under_valgrind: bool,
}

/// Everything started for one scenario; dropping it stops it all.
pub struct Env {
    /// Configs, logs and callgrind dumps of this run.
    pub dir: PathBuf,
    /// Per row: the PIDs whose CPU is counted (nginx: its workers).
    pub cpu_pids: HashMap<Row, Vec<u32>>,
    /// Per row: the PIDs whose memory is counted (nginx: master + workers).
    pub mem_pids: HashMap<Row, Vec<u32>>,
    // Dropped in reverse order of start: proxies first, upstream last.
    procs: Vec<Proc>,
}

impl Drop for Env {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
        // Configs, logs and the upstream's files; the results are written
        // elsewhere (`--out`), so nothing of value is lost.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------ config text

/// `--cpu-list` for ringmesh: worker i on CPU i.
pub fn cpu_list(workers: usize) -> String {
    (0..workers)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// nginx `worker_cpu_affinity` masks: worker i on CPU i (at least 2 digits).
pub fn nginx_affinity(workers: usize) -> String {
    (0..workers)
        .map(|i| format!("{:0w$b}", 1 << i, w = workers.max(2)))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn ringmesh_yaml(mode: Mode, port: u16, admin: u16) -> String {
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

/// The upstream nginx: 1 worker on CPU 1 (mask `10`), a 12-byte body on `/`
/// and static files from `dir/www` (`/b16k`, `/b1m`).
pub fn upstream_nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1; worker_cpu_affinity 10; daemon off; pid {d}/up.pid; error_log {d}/up.err;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s; sendfile on;
  server {{ listen 127.0.0.1:{PORT_UP} reuseport backlog=4096; root {d}/www;
    location = / {{ return 200 \"hello world\\n\"; }}
    location / {{ }} }} }}
"
    )
}

/// nginx under test: `proxy_pass` with upstream `keepalive` and HTTP/1.1 (or
/// `stream {}` for L4), `workers` processes pinned to CPUs 0..workers.
pub fn nginx_conf(mode: Mode, workers: usize, dir: &Path) -> String {
    let d = dir.display();
    let body = match mode {
        Mode::Http => format!(
            "http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  upstream up {{ server 127.0.0.1:{PORT_UP}; keepalive 64; }}
  server {{ listen 127.0.0.1:{PORT_NGINX} backlog=4096; location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}"
        ),
        Mode::Tcp => format!(
            "stream {{ server {{ listen 127.0.0.1:{PORT_NGINX} backlog=4096; proxy_pass 127.0.0.1:{PORT_UP}; }} }}"
        ),
    };
    let module = if mode == Mode::Tcp {
        format!("load_module {NGINX_STREAM_MODULE};\n")
    } else {
        String::new()
    };
    format!(
        "{module}worker_processes {workers}; worker_cpu_affinity {}; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
{body}
",
        nginx_affinity(workers)
    )
}

/// HAProxy under test: `nbthread` = workers, threads mapped to CPUs 0..workers,
/// `http-reuse always` so upstream connections are kept like the others'.
pub fn haproxy_cfg(mode: Mode, workers: usize, maxconn: usize) -> String {
    let w = workers;
    let (mode, extra) = match mode {
        Mode::Http => (
            "http",
            "  http-reuse always\n  timeout http-keep-alive 300s\n",
        ),
        Mode::Tcp => ("tcp", ""),
    };
    format!(
        "global
  nbthread {w}
  cpu-map auto:1/1-{w} 0-{}
  maxconn {maxconn}
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
        w - 1
    )
}

// ------------------------------------------------------------ starting

fn start_ringmesh(env: &mut Env, bin: &Path, row: Row, cfg: &SetupCfg) -> Res<()> {
    let (drv, admin) = match row {
        Row::Uring => ("uring", PORT_ADMIN_URING),
        _ => ("epoll", PORT_ADMIN_EPOLL),
    };
    let yaml = env.dir.join(format!("rm-{drv}.yaml"));
    write_file(&yaml, &ringmesh_yaml(cfg.mode, row.port(), admin))?;
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
        p.set_kill_signal(libc::SIGKILL); // the io_uring worker ignores SIGTERM under valgrind
    }
    let pid = p.pid();
    env.procs.push(p);
    env.cpu_pids.insert(row, vec![pid]);
    env.mem_pids.insert(row, vec![pid]);
    Ok(())
}

fn start_nginx(env: &mut Env, cfg: &SetupCfg) -> Res<()> {
    let dir = env.dir.clone();
    let w = cfg.workers;
    write_file(&dir.join("nginx.conf"), &nginx_conf(cfg.mode, w, &dir))?;
    let p = spawn(
        "nginx",
        Command::new("nginx").arg("-c").arg(dir.join("nginx.conf")),
        &dir.join("nginx.log"),
    )?;
    let master = p.pid();
    env.procs.push(p);
    // CPU is counted on the workers (the master idles); wait until all exist.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut workers = children_of(master);
    while workers.len() < w && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        workers = children_of(master);
    }
    if workers.len() < w {
        return Err(format!(
            "nginx started {} of {w} workers (see {}/nginx.err)",
            workers.len(),
            dir.display()
        ));
    }
    let mut all = workers.clone();
    all.push(master);
    env.cpu_pids.insert(Row::Nginx, workers);
    env.mem_pids.insert(Row::Nginx, all);
    Ok(())
}

fn start_haproxy(env: &mut Env, cfg: &SetupCfg) -> Res<()> {
    let dir = env.dir.clone();
    write_file(
        &dir.join("haproxy.cfg"),
        &haproxy_cfg(cfg.mode, cfg.workers, cfg.maxconn),
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
    env.cpu_pids.insert(Row::Haproxy, vec![pid]);
    env.mem_pids.insert(Row::Haproxy, vec![pid]);
    Ok(())
}

/// The ports a run of `rows` binds: refused up front if any is taken, so we
/// never measure (or stop) someone else's process.
fn ports_needed(rows: &[Row]) -> Vec<u16> {
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
    ports
}

/// Starts the upstream, then each row's proxy, and waits until all listen.
pub fn setup(bin: &Path, rows: &[Row], cfg: &SetupCfg) -> Res<Env> {
    for p in &ports_needed(rows) {
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

    // Upstream, pinned to CPU 1.
    match cfg.mode {
        Mode::Http => {
            write_file(&dir.join("www/b16k"), &"x".repeat(16 * 1024))?;
            write_file(&dir.join("www/b1m"), &"x".repeat(1024 * 1024))?;
            write_file(&dir.join("up.conf"), &upstream_nginx_conf(&dir))?;
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
            Row::Nginx => start_nginx(&mut env, cfg)?,
            Row::Haproxy => start_haproxy(&mut env, cfg)?,
            Row::Direct => {}
        }
    }
    // valgrind needs far longer before the proxy listens.
    let wait = if cfg.under_valgrind { 120 } else { 15 };
    for &row in rows {
        wait_port(row.port(), Duration::from_secs(wait))
            .map_err(|e| format!("{}: {e} (logs in {d})", row.name()))?;
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_and_ports() {
        assert_eq!(Row::parse("io_uring"), Ok(Row::Uring));
        assert_eq!(Row::parse("haproxy"), Ok(Row::Haproxy));
        assert!(Row::parse("envoy").is_err());
        assert_eq!(Row::Direct.port(), PORT_UP);
        assert_eq!(
            ports_needed(&[Row::Uring, Row::Direct, Row::Nginx]),
            vec![PORT_UP, PORT_URING, PORT_ADMIN_URING, PORT_NGINX]
        );
    }

    #[test]
    fn pinning() {
        assert_eq!(cpu_list(1), "0");
        assert_eq!(cpu_list(2), "0,1");
        assert_eq!(nginx_affinity(1), "01");
        assert_eq!(nginx_affinity(2), "01 10");
    }

    #[test]
    fn nginx_configs() {
        let dir = Path::new("/tmp/x");
        let up = upstream_nginx_conf(dir);
        assert!(up.starts_with("worker_processes 1; worker_cpu_affinity 10;"));
        assert!(up.contains("listen 127.0.0.1:20000 reuseport backlog=4096; root /tmp/x/www;"));
        assert!(up.contains("return 200 \"hello world\\n\";"));
        let http = nginx_conf(Mode::Http, 1, dir);
        assert!(http.starts_with("worker_processes 1; worker_cpu_affinity 01;"));
        assert!(http.contains("keepalive 64;"));
        assert!(http.contains("proxy_http_version 1.1; proxy_set_header Connection \"\";"));
        let tcp = nginx_conf(Mode::Tcp, 2, dir);
        assert!(tcp.starts_with(&format!(
            "load_module {NGINX_STREAM_MODULE};\nworker_processes 2; worker_cpu_affinity 01 10;"
        )));
        assert!(tcp.contains("stream { server { listen 127.0.0.1:20001 backlog=4096; proxy_pass 127.0.0.1:20000; } }"));
    }

    #[test]
    fn haproxy_config() {
        let c = haproxy_cfg(Mode::Http, 1, 4096);
        assert!(c.contains("  nbthread 1\n  cpu-map auto:1/1-1 0-0\n  maxconn 4096\n"));
        assert!(c.contains("  mode http\n"));
        assert!(c.contains("  http-reuse always\n"));
        let c = haproxy_cfg(Mode::Tcp, 2, 8000);
        assert!(c.contains("cpu-map auto:1/1-2 0-1"));
        assert!(c.contains("  mode tcp\n"));
        assert!(!c.contains("http-reuse"));
    }

    #[test]
    fn ringmesh_configs() {
        let y = ringmesh_yaml(Mode::Http, PORT_URING, PORT_ADMIN_URING);
        assert!(y.contains("admin: { address: 127.0.0.1:20013 }"));
        assert!(y.contains("address: 127.0.0.1:20003"));
        assert!(y.contains("endpoints: [\"127.0.0.1:20000\"]"));
        let y = ringmesh_yaml(Mode::Tcp, PORT_EPOLL, PORT_ADMIN_EPOLL);
        assert!(y.contains("protocol: tcp\n    cluster: up"));
    }

    /// The engine's own loader accepts what we hand the proxy.
    #[test]
    fn ringmesh_configs_load() {
        for mode in [Mode::Http, Mode::Tcp] {
            let y = ringmesh_yaml(mode, PORT_URING, PORT_ADMIN_URING);
            ringmesh_engine::config::load_str(Path::new("bench.yaml"), &y)
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        }
    }
}
