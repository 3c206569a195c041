//! The command line: scenarios, flags and their defaults (`--help` prints
//! [`USAGE`]). Parsing only; `main.rs` runs what is parsed here.

use crate::proxies::{Row, ALL_ROWS};
use crate::Res;
use std::path::{Path, PathBuf};

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
}
