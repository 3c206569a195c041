//! Load generation: wrk (with our Lua hook for exact percentiles) for the HTTP
//! scenarios, and our own tools run as subprocesses pinned to CPU 1 — the
//! constant-rate generator (`__rate`), and the L4 source/sink (`__tcp-*`).

use crate::cli::{Opts, Scenario};
use crate::parse::{parse_response_head, parse_wrk};
use crate::process::{clk_tck, cpu_ticks, rss_sum, run_bounded};
use crate::proxies::{Env, Row};
use crate::stats::percentile_sorted;
use crate::Res;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One measured run of one row.
#[derive(Clone, Default, Debug)]
pub struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: Option<f64>,
    pub errors: f64,
    pub cpu_us_per_req: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub mb_per_s: f64,
    pub cpu_s_per_gb: Option<f64>,
}

/// The wrk command line for one run (wrk on CPU 1, one thread).
pub fn wrk_cmd(o: &Opts, sc: Scenario, port: u16, secs: u64, lua: &Path) -> Command {
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

/// Runs the load against `row` for `secs` seconds and reads the proxy's CPU
/// (utime+stime over the run) and peak RSS from `/proc`.
pub fn measure(o: &Opts, env: &Env, sc: Scenario, row: Row, secs: u64) -> Res<Sample> {
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

// ------------------------------------------------------------ HTTP client

/// Sends one GET and reads the whole response; returns the status.
pub fn http_get<S: Read + Write>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    req: &[u8],
) -> std::io::Result<u16> {
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

/// The request of the memory, callgrind and rate scenarios.
pub const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

// ------------------------------------------------------------ subprocess helpers (`__tcp-source`, `__tcp-sink`, `__rate`)

/// `__tcp-source PORT`: accepts connections and writes zeros into them until they close.
pub fn tcp_source(port: u16) -> Res<()> {
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
pub fn tcp_sink(port: u16, conns: usize, secs: u64) -> Res<()> {
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
pub fn rate_gen(port: u16, rate: u64, conns: usize, secs: u64) -> Res<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_opts;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn wrk_command_lines() {
        let o = parse_opts(&[]).unwrap();
        let lua = Path::new("/t/report.lua");
        let c = wrk_cmd(&o, Scenario::Http1, 20003, 5, lua);
        assert_eq!(c.get_program(), "taskset");
        assert_eq!(
            args(&c).join(" "),
            "-c 1 wrk -t1 -c32 -d5s --timeout 5s --latency -s /t/report.lua http://127.0.0.1:20003/"
        );
        let c = wrk_cmd(&o, Scenario::Body1m, 20001, 1, lua);
        assert!(args(&c).contains(&"-c8".to_string()));
        assert!(args(&c).last().unwrap().ends_with(":20001/b1m"));
        let c = args(&wrk_cmd(&o, Scenario::Close, 20002, 5, lua));
        assert!(c.windows(2).any(|w| w == ["-H", "Connection: close"]));
        assert!(
            args(&wrk_cmd(&o, Scenario::Conns1000, 20002, 5, lua)).contains(&"-c1000".to_string())
        );
    }

    /// http_get against a one-shot local server: Content-Length and chunked bodies.
    #[test]
    fn http_get_reads_whole_responses() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"lo").unwrap();
            let _ = s.read(&mut b).unwrap();
            s.write_all(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
                .unwrap();
        });
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut buf = vec![];
        assert_eq!(http_get(&mut s, &mut buf, GET).unwrap(), 200);
        assert_eq!(http_get(&mut s, &mut buf, GET).unwrap(), 404);
        server.join().unwrap();
    }
}
