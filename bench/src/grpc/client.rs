//! The client side of a `grpc` run: the gRPC request body h2load sends (the
//! 5-byte gRPC frame prefix and a protobuf `EchoRequest`), the h2load
//! command line and the parsing of its output and per-request log, and the
//! one real gRPC call (tonic) through each target before the run — h2load
//! checks only `:status`, not `grpc-status` nor the reply.

use crate::stats::percentile_sorted;
use crate::Res;
use prost::Message;
use ringmesh_proto::testing::echo_client::EchoClient;
use ringmesh_proto::testing::EchoRequest;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The method every gRPC row calls.
pub const UNARY_PATH: &str = "/ringmesh.testing.v1.Echo/Unary";

/// The payload of the benchmark's `EchoRequest` (`n` bytes of `x`).
pub fn payload(n: usize) -> Vec<u8> {
    vec![b'x'; n]
}

/// A length-prefixed gRPC message: flag 0 (not compressed), 4-byte
/// big-endian length, then the protobuf encoding of `EchoRequest{payload}`.
pub fn grpc_body(payload_len: usize) -> Vec<u8> {
    let msg = EchoRequest {
        payload: payload(payload_len),
        ..Default::default()
    }
    .encode_to_vec();
    let mut b = Vec::with_capacity(5 + msg.len());
    b.push(0);
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(&msg);
    b
}

/// What h2load sends and how.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// gRPC unary over h2c: POST of the body file with the gRPC headers.
    Grpc,
    /// GET / over h2c (prior knowledge).
    H2c,
    /// GET / over HTTP/1.1 (`--h1`), one request in flight per connection.
    H1,
}

/// How long or how much: `-D secs` or `-n requests`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    Seconds(u64),
    Requests(u64),
}

/// The h2load command line, pinned to CPU 1: `connections` connections with
/// `streams` requests in flight on each (HTTP/1.1: `connections × streams`
/// connections with one each, so the concurrency is the same).
pub fn h2load_cmd(
    load: Load,
    port: u16,
    connections: usize,
    streams: usize,
    amount: Amount,
    body: &Path,
    log: Option<&Path>,
) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", "1", "h2load", "-t1"]);
    let (conns, m) = match load {
        Load::H1 => (connections * streams, 1),
        _ => (connections, streams),
    };
    c.arg(format!("-c{conns}")).arg(format!("-m{m}"));
    match amount {
        Amount::Seconds(s) => c.arg(format!("-D{s}")),
        Amount::Requests(n) => c.arg(format!("-n{n}")),
    };
    if let Some(l) = log {
        c.arg(format!("--log-file={}", l.display()));
    }
    let path = match load {
        Load::Grpc => {
            c.arg("-d").arg(body).args([
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
            ]);
            UNARY_PATH
        }
        Load::H2c => "/",
        Load::H1 => {
            c.arg("--h1");
            "/"
        }
    };
    c.arg(format!("http://127.0.0.1:{port}{path}"));
    c
}

/// What one h2load run reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct H2loadResult {
    pub duration_s: f64,
    pub rps: f64,
    pub done: u64,
    /// Completed with a 2xx or 3xx status.
    pub succeeded: u64,
    /// Non-2xx/3xx statuses, stream errors and timeouts.
    pub failed: u64,
    pub status_2xx: u64,
    /// "h2c" or "http/1.1" (what was negotiated), if printed.
    pub protocol: Option<String>,
}

fn duration_s(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches(',');
    if let Some(v) = s.strip_suffix("ms") {
        v.parse::<f64>().ok().map(|v| v / 1e3)
    } else if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().ok().map(|v| v / 1e6)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse().ok()
    } else {
        None
    }
}

/// The number before `word` in `line` (`206172 succeeded,` → 206172).
fn count_before(line: &str, word: &str) -> Option<u64> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    toks.windows(2)
        .find(|w| w[1].trim_end_matches(',') == word)
        .and_then(|w| w[0].parse().ok())
}

/// Parses h2load's summary (`finished in …`, `requests: …`, `status codes: …`).
pub fn parse_h2load(out: &str) -> Option<H2loadResult> {
    let mut r = H2loadResult::default();
    let mut seen = (false, false);
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            let mut parts = rest.split(',');
            r.duration_s = duration_s(parts.next()?)?;
            r.rps = parts.next()?.trim().strip_suffix(" req/s")?.parse().ok()?;
            seen.0 = true;
        } else if line.starts_with("requests: ") {
            r.done = count_before(line, "done")?;
            r.succeeded = count_before(line, "succeeded")?;
            r.failed = count_before(line, "failed")?;
            seen.1 = true;
        } else if line.starts_with("status codes: ") {
            r.status_2xx = count_before(line, "2xx")?;
        } else if let Some(p) = line.strip_prefix("Application protocol: ") {
            r.protocol = Some(p.trim().to_string());
        }
    }
    (seen.0 && seen.1).then_some(r)
}

/// p50 and p99 in ms of the successful requests in h2load's `--log-file`
/// (tab-separated: start µs since the epoch, status, µs to the end of the
/// response).
pub fn log_percentiles(text: &str) -> Option<(f64, f64)> {
    let mut v: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let _start = f.next()?;
            let status: u16 = f.next()?.trim().parse().ok()?;
            let us: u64 = f.next()?.trim().parse().ok()?;
            (200..300).contains(&status).then_some(us)
        })
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some((
        percentile_sorted(&v, 50.0) as f64 / 1e3,
        percentile_sorted(&v, 99.0) as f64 / 1e3,
    ))
}

/// One real unary call through `port` with the tonic client: grpc-status
/// must be 0 (OK) and the reply must carry the payload back.
pub fn grpc_preflight(name: &str, port: u16, payload_len: usize) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let want = payload(payload_len);
    let call = async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .map_err(|e| format!("endpoint: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = EchoClient::new(ch);
        let reply = c
            .unary(EchoRequest {
                payload: want.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| {
                format!(
                    "grpc-status {} ({:?}): {}",
                    s.code() as i32,
                    s.code(),
                    s.message()
                )
            })?;
        Ok::<_, String>(reply.into_inner().payload)
    };
    let got = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), call).await })
        .map_err(|_| format!("{name}: the gRPC call did not finish within 10 s"))?
        .map_err(|e| format!("{name} (127.0.0.1:{port}): {e}"))?;
    if got != want {
        return Err(format!(
            "{name}: the reply payload is {} bytes, not the {} sent",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Command) -> String {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn body_is_a_grpc_frame() {
        let b = grpc_body(12);
        // field 1 (bytes): tag 0x0a, length 12, 12 bytes.
        assert_eq!(&b[..5], &[0, 0, 0, 0, 14]);
        assert_eq!(&b[5..7], &[0x0a, 12]);
        assert_eq!(&b[7..], b"xxxxxxxxxxxx");
        let m = EchoRequest::decode(&b[5..]).unwrap();
        assert_eq!(m.payload, payload(12));
    }

    #[test]
    fn command_lines() {
        let body = Path::new("/t/body.grpc");
        let c = h2load_cmd(
            Load::Grpc,
            20201,
            8,
            16,
            Amount::Seconds(5),
            body,
            Some(Path::new("/t/log")),
        );
        assert_eq!(c.get_program(), "taskset");
        assert_eq!(
            args(&c),
            "-c 1 h2load -t1 -c8 -m16 -D5 --log-file=/t/log -d /t/body.grpc -H content-type: application/grpc -H te: trailers http://127.0.0.1:20201/ringmesh.testing.v1.Echo/Unary"
        );
        let c = h2load_cmd(Load::H1, 20206, 8, 16, Amount::Requests(100), body, None);
        assert_eq!(
            args(&c),
            "-c 1 h2load -t1 -c128 -m1 -n100 --h1 http://127.0.0.1:20206/"
        );
        let c = h2load_cmd(Load::H2c, 20207, 8, 16, Amount::Seconds(1), body, None);
        assert_eq!(
            args(&c),
            "-c 1 h2load -t1 -c8 -m16 -D1 http://127.0.0.1:20207/"
        );
    }

    const OUT: &str = "starting benchmark...
spawning thread #0: 4 total client(s). 2000 total requests
Application protocol: h2c
progress: 100% done

finished in 72.43ms, 27612.87 req/s, 2.08MB/s
requests: 2000 total, 2000 started, 2000 done, 1990 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 1990 2xx, 0 3xx, 0 4xx, 10 5xx
traffic: 154.49KB (158196) total, 95.70KB (98000) headers (space savings 50.51%), 23.44KB (24000) data
";

    #[test]
    fn parses_h2load() {
        let r = parse_h2load(OUT).unwrap();
        assert!((r.duration_s - 0.07243).abs() < 1e-9);
        assert_eq!(r.rps, 27612.87);
        assert_eq!(
            (r.done, r.succeeded, r.failed, r.status_2xx),
            (2000, 1990, 10, 1990)
        );
        assert_eq!(r.protocol.as_deref(), Some("h2c"));
        let r = parse_h2load(&OUT.replace("72.43ms", "5.00s")).unwrap();
        assert_eq!(r.duration_s, 5.0);
        assert!(parse_h2load("connect failed").is_none());
    }

    #[test]
    fn percentiles_from_the_log() {
        let mut t = String::new();
        for i in 1..=100 {
            t.push_str(&format!("1795419918023488\t200\t{}\n", i * 10));
        }
        t.push_str("1795419918023488\t502\t999999\n");
        let (p50, p99) = log_percentiles(&t).unwrap();
        assert_eq!((p50, p99), (0.5, 0.99));
        assert!(log_percentiles("").is_none());
    }
}
