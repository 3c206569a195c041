//! HTTP/2 through ringmesh-proxy: h2c with prior knowledge and h2 by ALPN
//! downstream (curl), HTTP/1.1 <-> HTTP/2 both ways, the advertised SETTINGS,
//! and the attacks an edge proxy must survive (rapid reset, CONTINUATION,
//! PING/SETTINGS/PRIORITY/empty-DATA floods, connection-specific headers,
//! content-length lies), driven by a raw frame-level client (common/h2raw.rs);
//! and a graceful drain with GOAWAY.

mod common;
use common::h2raw::*;
use common::pki::{dns, Pki};
use common::*;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A listener `web` on `port`, route `r` (prefix /) to cluster `c` at
/// `upstream` speaking `protocol`; `listener_extra` goes inside the listener
/// (e.g. its `tls:`), `top` before `listeners:` (limits).
fn config(
    port: u16,
    upstream: SocketAddr,
    protocol: &str,
    listener_extra: &str,
    top: &str,
) -> String {
    format!(
        r#"{top}listeners:
  - name: web
    address: 127.0.0.1:{port}
{listener_extra}    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: c, timeout: 30s }}
clusters:
  - name: c
    endpoints: ["{upstream}"]
    protocol: {protocol}
"#
    )
}

fn proxy_to(upstream: SocketAddr, protocol: &str) -> (Proxy, u16) {
    let port = free_port();
    (
        Proxy::start(&config(port, upstream, protocol, "", "")),
        port,
    )
}

fn ok(r: &Ran) -> bool {
    r.status.is_some_and(|s| s.success())
}

/// `curl --http2-prior-knowledge` to a plaintext listener: (body, http_version).
fn curl_h2c(args: &[&str], url: &str) -> (String, String) {
    let mut a = vec!["-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}"];
    a.extend_from_slice(args);
    a.push(url);
    let r = curl(&a);
    assert!(ok(&r), "curl {a:?} failed: {}", r.stderr);
    let (body, version) = r.stdout.rsplit_once('\n').unwrap_or(("", &r.stdout));
    (body.to_string(), version.to_string())
}

fn h2(addr: SocketAddr) -> H2Client {
    H2Client::connect(addr).unwrap_or_else(|e| panic!("h2 connect to {addr}: {e}"))
}

// ---------------------------------------------------------------------------
// The raw client and the h2 test upstream on their own (no proxy).

#[test]
fn raw_client_against_the_h2_test_upstream() {
    let up = H2Upstream::start();
    let mut c = h2(up.addr);
    let s = c.read_server_settings(Duration::from_secs(5)).unwrap();
    assert_eq!(s.kind, kind::SETTINGS);

    c.send_request(1, "POST", "/echo?q=1", &[("x-a", "b")], Some(b"hello"))
        .unwrap();
    let r = c.read_response(1, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
    assert!(r.complete);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("x-body-len"), Some("5"));
    assert_eq!(r.header("x-path"), Some("/echo?q=1"));
    assert_eq!(r.trailer("x-trailer"), Some("done"));

    // 300 KB response: more than the default windows, so WINDOW_UPDATEs work.
    c.send_request(3, "GET", "/bytes/300000", &[], None)
        .unwrap();
    let r = c.read_response(3, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, Some(200));
    assert_eq!(r.body.len(), 300_000);
    let mut check = PatternCheck::new();
    check.update(&r.body);
    assert_eq!(check.first_mismatch, None);

    // The h2 crate refuses a connection-specific header and a content-length
    // lie with stream resets: the raw client sees them.
    c.write(&headers_frame(
        5,
        &request_headers("GET", "/bad", &[("connection", "keep-alive")]),
        true,
    ))
    .unwrap();
    let r = c.read_response(5, Duration::from_secs(5)).unwrap();
    assert_eq!(r.reset, Some(code::PROTOCOL_ERROR), "{r:?}");
    let mut bytes = headers_frame(
        7,
        &request_headers("POST", "/cl", &[("content-length", "10")]),
        false,
    );
    bytes.extend_from_slice(&data_frame(7, b"abc", true));
    c.write(&bytes).unwrap();
    let r = c.read_response(7, Duration::from_secs(5)).unwrap();
    assert_eq!(r.reset, Some(code::PROTOCOL_ERROR), "{r:?}");
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/echo?q=1", "/bytes/300000"]);
}

// ---------------------------------------------------------------------------
// Protocols both ways.

#[test]
fn h2c_prior_knowledge_to_an_http1_upstream() {
    let up = Upstream::start("app");
    let (_p, port) = proxy_to(up.addr, "http1");
    let url = format!("http://127.0.0.1:{port}/hello?x=1");
    let (body, version) = curl_h2c(&[], &url);
    assert_eq!(version, "2", "curl spoke HTTP/{version} to the proxy");
    assert!(body.contains("\"path\":\"/hello?x=1\""), "body: {body}");
    assert!(body.contains("\"upstream\":\"app\""), "body: {body}");

    // 1 MiB POST body round trip.
    const N: u64 = 1 << 20;
    let dir = scratch_dir("h2c-post");
    let file = dir.join("body");
    let mut f = std::fs::File::create(&file).unwrap();
    write_pattern(&mut f, N).unwrap();
    drop(f);
    let (body, version) = curl_h2c(
        &[
            "--data-binary",
            &format!("@{}", file.display()),
            "-H",
            "content-type: application/octet-stream",
        ],
        &format!("http://127.0.0.1:{port}/upload"),
    );
    assert_eq!(version, "2");
    let j: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(j["method"], "POST");
    assert_eq!(j["body_len"].as_u64(), Some(N), "{body}");
    assert_eq!(j["body_sum"].as_str(), Some(pattern_checksum(N).as_str()));
    let seen = up.last_request("/upload").unwrap();
    assert_eq!(seen.header("content-length"), Some(N.to_string().as_str()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn h2_by_alpn_on_an_edge_tls_listener_and_http11_still_works() {
    let pki = Pki::new();
    let up = Upstream::start("app");
    let (cert, key) = pki.pair("edge", dns("edge.test"));
    let ca = pki.bundle();
    let port = free_port();
    let tls = format!(
        "    tls:\n      certificates:\n        - certificate: {{ file: {cert} }}\n          private_key: {{ file: {key} }}\n"
    );
    let _p = Proxy::start(&config(port, up.addr, "http1", &tls, ""));
    let resolve = format!("edge.test:{port}:127.0.0.1");
    let url = format!("https://edge.test:{port}/tls");
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let r = curl(&[
            "-sS",
            flag,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version}",
            &url,
        ]);
        assert!(ok(&r), "curl {flag}: {}", r.stderr);
        let (body, version) = r.stdout.rsplit_once('\n').unwrap();
        assert_eq!(version, want, "curl {flag} spoke HTTP/{version}");
        assert!(body.contains("\"path\":\"/tls\""), "{flag}: {body}");
    }
    let seen = up.last_request("/tls").unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn http1_client_to_an_h2c_upstream() {
    let up = H2Upstream::start();
    let (_p, port) = proxy_to(up.addr, "http2");
    let web = local(port);
    let mut c = Conn::connect(web);
    // A chunked request body: HTTP/2 has no chunked encoding; DATA frames carry it.
    c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nx-test: 1\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .unwrap();
    let r = c.read_response("POST").expect("response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.header("x-upstream"), Some("h2echo"));
    assert_eq!(r.header("x-body-len"), Some("11"));
    let seen = up
        .last_request("/echo")
        .expect("the h2 upstream saw the request");
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.header("x-test"), Some("1"));
    assert_eq!(seen.header("transfer-encoding"), None);
    eprintln!("trailers given to the HTTP/1.1 client: {:?}", r.trailers);

    // 1 MiB chunked up, echoed back; then a 1 MiB download, same connection.
    const N: u64 = 1 << 20;
    let mut body = Vec::new();
    write_pattern(&mut body, N).unwrap();
    let mut req =
        b"POST /big HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for ch in body.chunks(100_000) {
        req.extend_from_slice(format!("{:x}\r\n", ch.len()).as_bytes());
        req.extend_from_slice(ch);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.send(&req).unwrap();
    let r = c.read_response("POST").expect("response to the 1 MiB POST");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-body-sum"), Some(pattern_checksum(N).as_str()));
    assert!(
        r.body == body,
        "echoed body differs ({} bytes)",
        r.body.len()
    );
    let r = c.request(&Req::get("/bytes/1048576")).expect("download");
    assert_eq!(r.status, 200);
    let mut check = PatternCheck::new();
    check.update(&r.body);
    assert_eq!(check.offset, N);
    assert_eq!(check.first_mismatch, None);
}

#[test]
fn h2_client_to_an_h2c_upstream_gets_trailers() {
    let up = H2Upstream::start();
    let (_p, port) = proxy_to(up.addr, "http2");
    let mut c = h2(local(port));
    c.send_request(1, "POST", "/t", &[("te", "trailers")], Some(b"abc"))
        .unwrap();
    let r = c.read_response(1, Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_eq!(r.body, b"abc");
    assert_eq!(r.trailer("x-trailer"), Some("done"), "{r:?}");
    assert!(r.complete);
}

#[test]
fn settings_advertise_the_limits() {
    let up = Upstream::start("app");
    let (_p, port) = proxy_to(up.addr, "http1");
    let mut c = h2(local(port));
    let s = c.read_server_settings(Duration::from_secs(5)).unwrap();
    assert_eq!(
        s.setting(setting::MAX_CONCURRENT_STREAMS),
        Some(100),
        "{}",
        s.describe()
    );
    assert_eq!(
        s.setting(setting::INITIAL_WINDOW_SIZE),
        Some(262_144),
        "{}",
        s.describe()
    );

    // A lower limit is advertised and enforced: stream 8 of 7 is refused
    // while the first 7 complete.
    let port = free_port();
    let _p2 = Proxy::start(&config(
        port,
        up.addr,
        "http1",
        "",
        "limits:\n  http2:\n    max_concurrent_streams: 7\n",
    ));
    let mut c = h2(local(port));
    let s = c.read_server_settings(Duration::from_secs(5)).unwrap();
    assert_eq!(s.setting(setting::MAX_CONCURRENT_STREAMS), Some(7));
    // Let our ACK of its SETTINGS reach the proxy before going over.
    c.write(&ping_frame(*b"settled!", false)).unwrap();
    c.read_until(Duration::from_secs(5), |f| {
        f.kind == kind::PING && f.flags & flag::ACK != 0
    })
    .unwrap();
    let mut bytes = Vec::new();
    for i in 0..8u32 {
        bytes.extend_from_slice(&headers_frame(
            2 * i + 1,
            &request_headers("GET", &format!("/sleep/700?i={i}"), &[]),
            true,
        ));
    }
    c.write(&bytes).unwrap();
    let seen = c
        .read_until(Duration::from_secs(10), {
            let mut done = 0;
            move |f| {
                if f.end_stream() || f.kind == kind::RST_STREAM {
                    done += 1;
                }
                done == 8
            }
        })
        .unwrap();
    let refused = seen.rst(15);
    assert!(
        matches!(
            refused,
            Some(code::REFUSED_STREAM) | Some(code::PROTOCOL_ERROR)
        ),
        "stream 15 (the 8th) must be refused: {}",
        seen.describe()
    );
    for i in 0..7u32 {
        let h = seen.headers(2 * i + 1);
        assert_eq!(
            h.and_then(Frame::status),
            Some(200),
            "stream {}: {}",
            2 * i + 1,
            seen.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// Attacks.

/// An upstream that reads a request and then holds it until the proxy gives up
/// on it (closes): requests stay in flight, each costs one sleeping thread.
fn hold_upstream() -> Upstream {
    Upstream::raw("hold", |mut s, _| {
        let _ = read_request_head(&mut s);
        let mut b = [0u8; 1024];
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        while let Ok(n) = s.read(&mut b) {
            if n == 0 {
                break;
            }
        }
    })
}

/// How a flood ended.
struct FloodEnd {
    /// Units written (some may still sit in socket buffers).
    sent: usize,
    bytes: u64,
    seen: Seen,
    elapsed: Duration,
}

impl FloodEnd {
    fn describe(&self) -> String {
        format!(
            "{} units ({} bytes) sent in {:?}; frames: {}",
            self.sent,
            self.bytes,
            self.elapsed,
            self.seen.describe()
        )
    }
}

/// Writes `unit(i)` for i in 0..max in batches of `batch`, reading what comes
/// back between batches; stops early at a GOAWAY, a closed connection or a
/// failed write, then reads on until the connection closes (5 s at most).
fn flood(
    c: &mut H2Client,
    max: usize,
    batch: usize,
    mut unit: impl FnMut(usize) -> Vec<u8>,
) -> FloodEnd {
    let t = Instant::now();
    let mut seen = Seen::default();
    let (mut sent, mut bytes) = (0usize, 0u64);
    while sent < max && t.elapsed() < Duration::from_secs(20) {
        let mut out = Vec::new();
        let n = batch.min(max - sent);
        for i in sent..sent + n {
            out.extend_from_slice(&unit(i));
        }
        if c.write(&out).is_err() {
            break;
        }
        sent += n;
        bytes += out.len() as u64;
        let got = c.poll_frames().unwrap_or_default();
        seen.frames.extend(got.frames);
        if got.closed || seen.goaway().is_some() {
            seen.closed |= got.closed;
            break;
        }
    }
    if !seen.closed {
        let rest = c.read_to_close(Duration::from_secs(5)).unwrap_or_default();
        seen.frames.extend(rest.frames);
        seen.closed = rest.closed;
        seen.timed_out = rest.timed_out;
    }
    FloodEnd {
        sent,
        bytes,
        seen,
        elapsed: t.elapsed(),
    }
}

/// A normal request on a new connection still works (curl, h2c).
fn still_serving(port: u16) {
    let (body, version) = curl_h2c(&[], &format!("http://127.0.0.1:{port}/status/200"));
    assert_eq!(version, "2");
    assert!(body.contains("status 200"), "{body}");
}

/// Asserts the flood was answered with GOAWAY(ENHANCE_YOUR_CALM) and a close.
fn assert_calmed(end: &FloodEnd, what: &str) {
    assert_eq!(
        end.seen.goaway().map(|g| g.1),
        Some(code::ENHANCE_YOUR_CALM),
        "{what}: expected GOAWAY(ENHANCE_YOUR_CALM); {}",
        end.describe()
    );
    assert!(
        end.seen.closed,
        "{what}: the connection must be closed after the GOAWAY; {}",
        end.describe()
    );
}

#[test]
fn rapid_reset_gets_goaway_enhance_your_calm() {
    let up = Upstream::start("app");
    let hold = hold_upstream();
    let port = free_port();
    let _p = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: hold
            match: {{ path: {{ prefix: /hold }} }}
            route: {{ cluster: hold }}
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: app }}
clusters:
{}{}"#,
        cluster_yaml("hold", &[hold.addr]),
        cluster_yaml("app", &[up.addr])
    ));
    let mut c = h2(local(port));
    let end = flood(&mut c, 10_000, 20, |i| {
        let id = 2 * i as u32 + 1;
        let mut b = headers_frame(id, &request_headers("GET", "/hold", &[]), true);
        b.extend_from_slice(&rst_frame(id, code::CANCEL));
        b
    });
    eprintln!("rapid reset: {}", end.describe());
    assert_calmed(&end, "rapid reset");
    // The GOAWAY names the last stream the proxy took: far fewer than 10,000
    // (the limit is 200 resets per 10 s).
    let (last, _) = end.seen.goaway().unwrap();
    assert!(
        last < 2 * 2_000,
        "the proxy took streams up to {last} before GOAWAY (limit 200 rapid resets)"
    );
    still_serving(port);
    assert!(
        hold.accepted() < 2_000,
        "{} upstream connections",
        hold.accepted()
    );
}

/// Rapid reset of streams the proxy has already taken (each reached the
/// upstream before its RST_STREAM): the h2 crate's own limit on resets of
/// not-yet-accepted streams does not apply, the proxy's count (200 per 10 s)
/// does.
#[test]
fn rapid_reset_of_accepted_streams_gets_goaway_after_the_limit() {
    const BATCH: u32 = 50;
    let hold = hold_upstream();
    let port = free_port();
    let _p = Proxy::start(&config(port, hold.addr, "http1", "", ""));
    let mut c = h2(local(port));
    let mut seen = Seen::default();
    let mut resets = 0u32;
    let mut next_id = 1u32;
    let mut stalled = String::new();
    let t = Instant::now();
    while resets < 1000 && seen.goaway().is_none() && !seen.closed {
        let ids: Vec<u32> = (0..BATCH).map(|k| next_id + 2 * k).collect();
        next_id += 2 * BATCH;
        let mut out = Vec::new();
        for id in &ids {
            out.extend_from_slice(&headers_frame(
                *id,
                &request_headers("GET", "/hold", &[]),
                true,
            ));
        }
        let before = hold.accepted();
        if c.write(&out).is_err() {
            break;
        }
        // All of them in flight at the upstream: the proxy accepted the streams.
        let in_flight = wait_until(Duration::from_secs(3), || {
            hold.accepted() >= before + BATCH as usize
        });
        if !in_flight {
            stalled = format!(
                "; after {resets} resets the proxy stopped taking streams ({} of {BATCH} reached the upstream in 3 s)",
                hold.accepted() - before
            );
            break;
        }
        let mut out = Vec::new();
        for id in &ids {
            out.extend_from_slice(&rst_frame(*id, code::CANCEL));
        }
        if c.write(&out).is_err() {
            break;
        }
        resets += BATCH;
        let got = c
            .read_until(Duration::from_millis(100), |f| f.goaway().is_some())
            .unwrap_or_default();
        seen.frames.extend(got.frames);
        seen.closed |= got.closed;
    }
    if !seen.closed {
        let rest = c.read_to_close(Duration::from_secs(5)).unwrap_or_default();
        seen.frames.extend(rest.frames);
        seen.closed = rest.closed;
    }
    eprintln!(
        "{resets} resets of accepted streams in {:?}: {}",
        t.elapsed(),
        seen.describe()
    );
    assert_eq!(
        seen.goaway().map(|g| g.1),
        Some(code::ENHANCE_YOUR_CALM),
        "{resets} rapid resets of accepted streams: expected GOAWAY(ENHANCE_YOUR_CALM){stalled}; {}",
        seen.describe()
    );
    assert!(
        (200..=300).contains(&resets),
        "GOAWAY after {resets} rapid resets; the limit is 200"
    );
    assert!(
        seen.closed,
        "the connection must close: {}",
        seen.describe()
    );
}

#[test]
fn endless_continuation_is_cut_off() {
    let up = Upstream::start("app");
    let (p, port) = proxy_to(up.addr, "http1");
    let before = p.rss_kb();
    let peak = RssPeak::start(p.pid());
    let mut c = h2(local(port));
    let value = "v".repeat(8000);
    // HEADERS without END_HEADERS, then CONTINUATION frames of ~16 KB each, forever.
    let first = frame(
        kind::HEADERS,
        flag::END_STREAM,
        1,
        &hpack_literal(&request_headers("GET", "/c", &[])),
    );
    let mut first = Some(first);
    let end = flood(&mut c, 4096, 4, |i| {
        let names = [format!("x-fill-{i}-a"), format!("x-fill-{i}-b")];
        let block = hpack_literal(&[
            (names[0].as_str(), value.as_str()),
            (names[1].as_str(), value.as_str()),
        ]);
        let mut b = first.take().unwrap_or_default();
        b.extend_from_slice(&continuation_frame(1, &block, false));
        b
    });
    let peak = peak.finish();
    eprintln!(
        "continuation flood: {}; proxy RSS {before} -> {peak} KiB",
        end.describe()
    );
    assert!(
        end.seen.closed,
        "the connection must be closed (GOAWAY or EOF) during a CONTINUATION flood; {}",
        end.describe()
    );
    assert!(
        end.bytes < 16 << 20,
        "the proxy took {} bytes of one header block before closing",
        end.bytes
    );
    if let Some((_, code)) = end.seen.goaway() {
        assert_ne!(code, code::NO_ERROR, "{}", end.describe());
    }
    assert!(
        peak.saturating_sub(before) < 32 * 1024,
        "proxy RSS grew {before} -> {peak} KiB on one header block"
    );
    assert!(
        end.seen.headers(1).is_none(),
        "no response to an unfinished header block: {}",
        end.describe()
    );
    assert_eq!(up.request_count(), 0, "the upstream saw a request");
    still_serving(port);
}

fn flood_test(what: &str, first: Vec<u8>, unit: impl Fn(usize) -> Vec<u8>) {
    let up = Upstream::start("app");
    let (_p, port) = proxy_to(up.addr, "http1");
    let mut c = h2(local(port));
    c.write(&first).unwrap();
    let end = flood(&mut c, 20_000, 100, unit);
    eprintln!("{what}: {}", end.describe());
    assert_calmed(&end, what);
    still_serving(port);
}

#[test]
fn ping_flood_gets_goaway_enhance_your_calm() {
    flood_test("PING flood", Vec::new(), |i| {
        ping_frame((i as u64).to_be_bytes(), false)
    });
}

#[test]
fn settings_flood_gets_goaway_enhance_your_calm() {
    flood_test("SETTINGS flood", Vec::new(), |_| {
        settings_frame(&[(setting::ENABLE_PUSH, 0)])
    });
}

#[test]
fn priority_flood_gets_goaway_enhance_your_calm() {
    flood_test("PRIORITY flood", Vec::new(), |i| {
        priority_frame(2 * (i as u32 % 1000) + 101, 0, 16)
    });
}

#[test]
fn empty_data_flood_gets_goaway_enhance_your_calm() {
    // One open request whose body never comes: only empty DATA frames.
    let open = headers_frame(1, &request_headers("POST", "/sleep/1", &[]), false);
    flood_test("empty DATA flood", open, |_| data_frame(1, &[], false));
}

#[test]
fn connection_specific_headers_are_refused() {
    let up = Upstream::start("app");
    let (_p, port) = proxy_to(up.addr, "http1");
    let mut c = h2(local(port));
    let bad = [
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ];
    for (i, (n, v)) in bad.iter().enumerate() {
        let id = 2 * i as u32 + 1;
        c.write(&headers_frame(
            id,
            &request_headers("GET", &format!("/bad/{n}"), &[(n, v)]),
            true,
        ))
        .unwrap();
        let r = c.read_response(id, Duration::from_secs(5)).unwrap();
        let refused = r.reset == Some(code::PROTOCOL_ERROR)
            || r.status.is_some_and(|s| (400..500).contains(&s));
        assert!(
            refused,
            "{n}: {v}: expected RST_STREAM(PROTOCOL_ERROR) or a 4xx, got {r:?}"
        );
    }
    // te: trailers is allowed, and the connection still works.
    let id = 2 * bad.len() as u32 + 1;
    c.send_request(id, "GET", "/good", &[("te", "trailers")], None)
        .unwrap();
    let r = c.read_response(id, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/good"], "only /good may reach the upstream");
    let seen = up.last_request("/good").unwrap();
    assert_eq!(seen.header("te"), None, "te is hop-by-hop");
}

#[test]
fn content_length_mismatch_is_a_protocol_error() {
    let up = Upstream::start("app");
    let (_p, port) = proxy_to(up.addr, "http1");
    let mut c = h2(local(port));
    // Fewer bytes than announced.
    let mut b = headers_frame(
        1,
        &request_headers("POST", "/short", &[("content-length", "10")]),
        false,
    );
    b.extend_from_slice(&data_frame(1, b"abc", true));
    c.write(&b).unwrap();
    let r = c.read_response(1, Duration::from_secs(5)).unwrap();
    assert_eq!(
        r.reset,
        Some(code::PROTOCOL_ERROR),
        "content-length 10, 3 bytes sent: {r:?}"
    );
    // More bytes than announced.
    let mut b = headers_frame(
        3,
        &request_headers("POST", "/long", &[("content-length", "2")]),
        false,
    );
    b.extend_from_slice(&data_frame(3, b"abc", true));
    c.write(&b).unwrap();
    let r = c.read_response(3, Duration::from_secs(5)).unwrap();
    assert_eq!(
        r.reset,
        Some(code::PROTOCOL_ERROR),
        "content-length 2, 3 bytes sent: {r:?}"
    );
    // The connection is still good and an honest body arrives.
    c.send_request(5, "POST", "/ok", &[("content-length", "3")], Some(b"abc"))
        .unwrap();
    let r = c.read_response(5, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["body_len"], 3);
    assert!(
        up.requests().iter().all(|r| r.path == "/ok"),
        "a lying request was completed at the upstream: {:?}",
        up.requests()
    );
}

// ---------------------------------------------------------------------------
// Drain.

#[test]
fn sigterm_sends_goaway_and_in_flight_streams_finish() {
    let up = Upstream::start("slow");
    let port = free_port();
    let p = Proxy::start(&config(
        port,
        up.addr,
        "http1",
        "",
        "limits:\n  drain_timeout: 5s\n",
    ));
    let mut c = h2(local(port));
    c.send_request(1, "GET", "/sleep/1500", &[], None).unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || up.request_count() == 1),
        "the request did not reach the upstream"
    );
    let t = Instant::now();
    p.sigterm();
    let seen = c
        .read_until(Duration::from_secs(8), |f| f.stream == 1 && f.end_stream())
        .unwrap();
    let goaway = seen.goaway();
    assert!(
        matches!(goaway, Some((_, code::NO_ERROR))),
        "expected GOAWAY(NO_ERROR) on SIGTERM: {}",
        seen.describe()
    );
    assert_eq!(
        seen.headers(1).and_then(Frame::status),
        Some(200),
        "the in-flight stream must finish: {}",
        seen.describe()
    );
    let body: Vec<u8> = seen
        .frames
        .iter()
        .filter(|f| f.kind == kind::DATA && f.stream == 1)
        .flat_map(|f| f.data().to_vec())
        .collect();
    let j: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&body)));
    assert_eq!(j["path"], "/sleep/1500");
    let rest = c.read_to_close(Duration::from_secs(5)).unwrap();
    assert!(
        rest.closed,
        "the connection must close after the drain: {}",
        rest.describe()
    );
    let st = p.wait_exit(Duration::from_secs(7));
    assert_eq!(st.and_then(|s| s.code()), Some(0), "exit: {st:?}");
    eprintln!("drained in {:?}", t.elapsed());
}

// ---------------------------------------------------------------------------
// An upstream that turns streams away without processing them.

/// A raw HTTP/2 upstream whose streams, across connections, follow `script`
/// in turn (the last entry repeats): `Refuse` resets the stream with
/// REFUSED_STREAM, `GoAway` answers it with GOAWAY(last_stream_id 0) and
/// closes the connection, `Answer` replies 200 "ok". Returns its address
/// and a count of connections accepted.
#[derive(Clone, Copy, Debug)]
enum Turn {
    Refuse,
    GoAway,
    Answer,
}

fn turning_upstream(
    script: Vec<Turn>,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let streams = std::sync::Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            c2.fetch_add(1, Ordering::SeqCst);
            let (script, streams) = (script.clone(), streams.clone());
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut preface = [0u8; 24];
                if s.read_exact(&mut preface).is_err() {
                    return;
                }
                let frame = |ty: u8, flags: u8, id: u32, payload: &[u8]| {
                    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
                    f.extend_from_slice(&[ty, flags]);
                    f.extend_from_slice(&id.to_be_bytes());
                    f.extend_from_slice(payload);
                    f
                };
                let _ = s.write_all(&frame(4, 0, 0, &[]));
                loop {
                    let mut h = [0u8; 9];
                    if s.read_exact(&mut h).is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    let mut payload = vec![0u8; len];
                    if s.read_exact(&mut payload).is_err() {
                        return;
                    }
                    let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let turn = if h[3] == 1 {
                        let n = streams.fetch_add(1, Ordering::SeqCst);
                        script[n.min(script.len() - 1)]
                    } else {
                        Turn::Answer
                    };
                    match (h[3], turn) {
                        (4, _) if h[4] & 1 == 0 => {
                            let _ = s.write_all(&frame(4, 1, 0, &[]));
                        }
                        (1, Turn::Refuse) => {
                            let _ = s.write_all(&frame(3, 0, id, &7u32.to_be_bytes()));
                        }
                        (1, Turn::GoAway) => {
                            let _ = s.write_all(&frame(7, 0, 0, &[0; 8]));
                            let _ = s.shutdown(std::net::Shutdown::Write);
                            let _ = std::io::copy(&mut s, &mut std::io::sink());
                            return;
                        }
                        (1, Turn::Answer) => {
                            // HEADERS `:status: 200` (HPACK static index 8),
                            // then DATA "ok" ending the stream.
                            let _ = s.write_all(&frame(1, 4, id, &[0x88]));
                            let _ = s.write_all(&frame(0, 1, id, b"ok"));
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, count)
}

#[test]
fn a_refused_stream_or_one_above_goaway_is_sent_again_unseen_by_the_client() {
    use std::sync::atomic::Ordering;
    // HTTP/1.1 client -> HTTP/2 upstream.
    let (up, conns) = turning_upstream(vec![Turn::Refuse, Turn::GoAway, Turn::Answer]);
    let (p, port) = proxy_to(up, "http2");
    let mut c = Conn::connect(local(port));
    let r = c.request(&Req::get("/x")).expect("response");
    assert_eq!((r.status, r.text()), (200, "ok".to_string()), "{r:?}");
    // The refused stream is sent again on the same connection; after the
    // GOAWAY, on a new one.
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    assert_metric_line(
        &p.metrics(),
        "ringmesh_requests_total{listener=\"web\",route=\"r\",cluster=\"c\",status_class=\"2xx\"} 1",
    );

    // HTTP/2 client -> HTTP/2 upstream.
    let (up, conns) = turning_upstream(vec![Turn::GoAway, Turn::Refuse, Turn::Answer]);
    let (_p, port) = proxy_to(up, "http2");
    let (body, version) = curl_h2c(&[], &format!("http://127.0.0.1:{port}/y"));
    assert_eq!((body.as_str(), version.as_str()), ("ok", "2"));
    assert_eq!(conns.load(Ordering::SeqCst), 2);

    // An upstream that refuses every time: the client gets one 502, after
    // the proxy tried three times.
    let (up, conns) = turning_upstream(vec![Turn::Refuse]);
    let (_p, port) = proxy_to(up, "http2");
    let mut c = Conn::connect(local(port));
    let r = c.request(&Req::get("/z")).expect("response");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.header("ringmesh-error"), Some("upstream_reset"));
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[test]
fn an_http1_upstream_closing_its_idle_keep_alive_connection_costs_no_request() {
    use std::io::Write;
    // Answers one request per connection with keep-alive framing, then
    // closes the connection when the next request arrives, unanswered: a
    // server whose keep-alive timeout ended as the proxy reused the
    // connection.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = conns.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                let _ = s.read(&mut b);
            });
        }
    });
    let (_p, port) = proxy_to(up, "http1");
    let mut c = h2(local(port));
    for (i, id) in [1u32, 3, 5].into_iter().enumerate() {
        c.send_request(id, "GET", &format!("/k{i}"), &[], None)
            .unwrap();
        let r = c.read_response(id, Duration::from_secs(10)).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (Some(200), &b"ok"[..]),
            "{r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
}
