//! The command line: scenarios, flags and their defaults (`--help` prints
//! [`USAGE`]). Parsing only; `main.rs` runs what is parsed here.

use crate::proxies::{Row, ALL_ROWS};
use crate::Res;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One table of results (one word on the command line).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
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
    pub fn parse(s: &str) -> Res<Scenario> {
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
    pub fn name(self) -> &'static str {
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
    pub fn describe(self, o: &Opts) -> String {
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
    pub fn path(self) -> &'static str {
        match self {
            Scenario::Body16k => "/b16k",
            Scenario::Body1m => "/b1m",
            _ => "/",
        }
    }
}

pub const USAGE: &str = "usage: ringmesh-bench [SCENARIO] [flags]
       ringmesh-bench control [flags]   (the control plane; `control --help`)
       ringmesh-bench tls [flags]       (mTLS mesh hop, handshakes, HTTPS edge; `tls --help`)
       ringmesh-bench grpc [flags]      (gRPC unary and HTTP/1.1 vs h2c vs nginx; `grpc --help`)
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

/// The parsed command line.
#[derive(Debug)]
pub struct Opts {
    pub scenarios: Vec<Scenario>,
    pub repeats: usize,
    pub duration: u64,
    pub connections: Option<usize>,
    pub rate: u64,
    pub idle_conns: usize,
    pub rows: Vec<Row>,
    pub proxy_bin: Option<PathBuf>,
    pub out: PathBuf,
    pub install: bool,
    /// The command as typed, for the report (so anyone can rerun it).
    pub cmdline: String,
}

impl Opts {
    /// `--connections` if given, else the scenario's own default.
    pub fn conns(&self, default: usize) -> usize {
        self.connections.unwrap_or(default)
    }
}

/// The workspace (`bench/..`): the default output directory is under it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Parses the arguments after `--`; `Err` carries the message to print (also for `--help`).
pub fn parse_opts(args: &[String]) -> Res<Opts> {
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

pub const CONTROL_USAGE: &str = "usage: ringmesh-bench control [flags]
N simulated proxies (one HTTP/2 connection each) against a real ringmesh-control:
RSS per connected proxy, config change -> ACK latency, discovery join/leave.
flags:
  --proxies N         simulated proxies (default 1000)
  --services S        services in the generated mesh (default 50)
  --changes K         traffic-rule changes to time (default 5)
  --grace-period D    the control plane's --grace-period (default 1s)
  --concurrency C     proxies connecting at a time (default 64)
  --client-threads T  tokio worker threads of the simulated proxies (default 1)
  --timeout D         how long a node may take to see a change (default 10s)
  --control-bin PATH  ringmesh-control to run (default: build target/release/ringmesh-control)
  --out DIR           where the .md and .json go (default bench/results)
smoke test: ringmesh-bench control --proxies 5 --services 3 --changes 1";

/// The `control` subcommand's command line.
#[derive(Debug, Clone)]
pub struct ControlOpts {
    pub proxies: usize,
    pub services: usize,
    pub changes: usize,
    pub grace: Duration,
    pub concurrency: usize,
    pub client_threads: usize,
    pub timeout: Duration,
    pub control_bin: Option<PathBuf>,
    pub out: PathBuf,
    pub cmdline: String,
}

/// `1s`, `250ms`, `1.5s`.
pub fn parse_duration(s: &str) -> Res<Duration> {
    let bad = || format!("{s:?}: expected a duration like 1s or 250ms");
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(bad());
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Parses the arguments after `control`.
pub fn parse_control_opts(args: &[String]) -> Res<ControlOpts> {
    let mut o = ControlOpts {
        proxies: 1000,
        services: 50,
        changes: 5,
        grace: Duration::from_secs(1),
        concurrency: 64,
        client_threads: 1,
        timeout: Duration::from_secs(10),
        control_bin: None,
        out: workspace_root().join("bench/results"),
        cmdline: format!(
            "cargo run --release -p ringmesh-bench -- control {}",
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
            "-h" | "--help" => return Err(CONTROL_USAGE.to_string()),
            "--proxies" => o.proxies = num(a, val(a)?)?,
            "--services" => o.services = num(a, val(a)?)?,
            "--changes" => o.changes = num(a, val(a)?)?,
            "--concurrency" => o.concurrency = num(a, val(a)?)?,
            "--client-threads" => o.client_threads = num(a, val(a)?)?,
            "--grace-period" => o.grace = parse_duration(&val(a)?)?,
            "--timeout" => o.timeout = parse_duration(&val(a)?)?,
            "--control-bin" => o.control_bin = Some(PathBuf::from(val(a)?)),
            "--out" => o.out = PathBuf::from(val(a)?),
            s => return Err(format!("unknown flag {s}\n{CONTROL_USAGE}")),
        }
    }
    if o.proxies == 0 || o.services == 0 || o.concurrency == 0 || o.client_threads == 0 {
        return Err(
            "--proxies, --services, --concurrency and --client-threads must be positive".into(),
        );
    }
    if o.proxies >= crate::control_plane::mesh::MAX_PROXIES {
        return Err(format!(
            "--proxies: at most {}",
            crate::control_plane::mesh::MAX_PROXIES - 1
        ));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults() {
        let o = parse_opts(&[]).unwrap();
        assert_eq!(o.scenarios, vec![Scenario::Http1]);
        assert_eq!(
            (o.repeats, o.duration, o.rate, o.idle_conns),
            (3, 5, 20_000, 5000)
        );
        assert_eq!(o.rows, ALL_ROWS.to_vec());
        assert!(o.install && o.proxy_bin.is_none() && o.connections.is_none());
        assert!(o.out.ends_with("bench/results"));
        assert_eq!(o.cmdline, "cargo run --release -p ringmesh-bench -- ");
    }

    #[test]
    fn flags() {
        let o = parse_opts(&args(
            "body1m rate --repeats 2 --duration 7 --connections 64 --rows uring,nginx --proxy-bin /x --no-install",
        ))
        .unwrap();
        assert_eq!(o.scenarios, vec![Scenario::Body1m, Scenario::Rate]);
        assert_eq!((o.repeats, o.duration, o.conns(8)), (2, 7, 64));
        assert_eq!(o.rows, vec![Row::Uring, Row::Nginx]);
        assert_eq!(o.proxy_bin, Some(PathBuf::from("/x")));
        assert!(!o.install);
        assert!(o.cmdline.ends_with("-- body1m rate --repeats 2 --duration 7 --connections 64 --rows uring,nginx --proxy-bin /x --no-install"));
        assert_eq!(parse_opts(&args("all")).unwrap().scenarios.len(), 9);
    }

    #[test]
    fn errors() {
        assert!(parse_opts(&args("--help"))
            .unwrap_err()
            .starts_with("usage:"));
        assert!(parse_opts(&args("nope")).is_err());
        assert!(parse_opts(&args("--bogus")).is_err());
        assert!(parse_opts(&args("--repeats")).is_err());
        assert!(parse_opts(&args("--repeats 0")).is_err());
        assert!(parse_opts(&args("--rows uring,envoy")).is_err());
    }

    #[test]
    fn scenario_names_round_trip() {
        for s in [
            "http1",
            "body16k",
            "body1m",
            "conns1000",
            "close",
            "tcp",
            "rate",
            "memory",
            "callgrind",
        ] {
            assert_eq!(Scenario::parse(s).unwrap().name(), s);
        }
        assert_eq!(Scenario::Body16k.path(), "/b16k");
        assert_eq!(Scenario::Close.path(), "/");
    }

    #[test]
    fn control_flags() {
        let o = parse_control_opts(&[]).unwrap();
        assert_eq!(
            (
                o.proxies,
                o.services,
                o.changes,
                o.concurrency,
                o.client_threads
            ),
            (1000, 50, 5, 64, 1)
        );
        assert_eq!(
            (o.grace, o.timeout),
            (Duration::from_secs(1), Duration::from_secs(10))
        );
        assert_eq!(
            o.cmdline,
            "cargo run --release -p ringmesh-bench -- control"
        );
        let o = parse_control_opts(&args(
            "--proxies 5 --services 3 --changes 1 --grace-period 250ms --timeout 2.5s --control-bin /c --out /o --concurrency 8 --client-threads 2",
        ))
        .unwrap();
        assert_eq!(
            (
                o.proxies,
                o.services,
                o.changes,
                o.concurrency,
                o.client_threads
            ),
            (5, 3, 1, 8, 2)
        );
        assert_eq!(o.grace, Duration::from_millis(250));
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.control_bin, Some(PathBuf::from("/c")));
        assert_eq!(o.out, PathBuf::from("/o"));
        assert!(parse_control_opts(&args("--help"))
            .unwrap_err()
            .contains("--proxies"));
        assert!(parse_control_opts(&args("--proxies 0")).is_err());
        assert!(parse_control_opts(&args("--proxies 70000")).is_err());
        assert!(parse_control_opts(&args("--grace-period 5")).is_err());
        assert!(parse_control_opts(&args("--grace-period -1s")).is_err());
        assert!(parse_control_opts(&args("--rows uring")).is_err());
    }
}
