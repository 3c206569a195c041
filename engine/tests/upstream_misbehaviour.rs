//! Upstreams that misbehave: garbage instead of HTTP, bodies cut short, huge or
//! broken heads, silence, closing at every possible moment, bad framing. Each
//! gets the right answer (502 before the response head went out, 504 at the
//! route timeout, a cut connection or a reset stream after it), is counted,
//! and the one worker (`--workers 1`) keeps serving: on a new connection, and
//! on the same one when it stayed open. Also for an HTTP/2 client in front of
//! the same HTTP/1.1 upstream.
//!
//! upstream_errors.rs covers resets, refused and timed-out connects and the
//! basic garbage/framing cases; this file adds the rest of the misbehaviour
//! catalogue, what the client sees on the wire, the metric, and HTTP/2.

mod common;
use common::h2raw::H2Client;
use common::*;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// The route timeout of the misbehaving routes.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the misbehaving upstream does, by request path.
fn misbehave(mut s: TcpStream, _idx: usize) {
    loop {
        let Some(head) = read_request_head(&mut s) else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let w = |s: &mut TcpStream, b: &[u8]| {
            let _ = s.write_all(b);
        };
        let linger = |s: TcpStream, ms: u64| {
            thread::sleep(Duration::from_millis(ms));
            drop(s);
        };
        match path.as_str() {
            "/garbage/text" => {
                w(&mut s, b"HELLO THIS IS NOT HTTP\r\n\r\n");
                return linger(s, 3000);
            }
            "/garbage/binary" => {
                w(&mut s, &[0u8, 1, 2, 3, 0xff, 0xfe, 0x80, b'\n', 0, 0, 0x17, 0x03]);
                return linger(s, 3000);
            }
            "/garbage/banner" => {
                // A server that speaks first (SSH) and then waits for us.
                w(&mut s, b"SSH-2.0-OpenSSH_9.6\r\n");
                return linger(s, 3000);
            }
            "/garbage/tls-alert" => {
                // A TLS server on a plaintext cluster: an alert record, then close.
                w(&mut s, b"\x15\x03\x01\x00\x02\x02\x46");
                return linger(s, 100);
            }
            "/garbage/body-only" => {
                // HTTP/0.9 style: a body without a status line or head.
                w(&mut s, b"hello\n");
                return linger(s, 100);
            }
            "/head/2-digit-status" => w(&mut s, b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok"),
            "/head/bare-lf" => w(&mut s, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
            "/head/obs-fold" => w(&mut s, b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 2\r\n\r\nok"),
            "/head/nul" => w(&mut s, b"HTTP/1.1 200 OK\r\nX-A: b\0c\r\nContent-Length: 2\r\n\r\nok"),
            "/head/cl-te" => w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "/head/cl-list" => w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok!"),
            "/head/te-gzip-chunked" => w(&mut s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
            "/head/te-gzip" => {
                w(&mut s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot really gzip");
                return linger(s, 50);
            }
            "/head/te-http10" => w(&mut s, b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
            "/head/101" => w(&mut s, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
            "/head/cl-dup" => w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 02\r\ncontent-length: 2, 2\r\n\r\nok"),
            "/head/huge" => {
                // A single 70 KiB field: over the 64 KiB response head limit.
                let big = "a".repeat(70 * 1024);
                w(&mut s, format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\nok").as_bytes());
            }
            "/head/many" => {
                let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
                w(&mut s, format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 2\r\n\r\nok").as_bytes());
            }
            "/close/mid-head" => {
                w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Le");
                return linger(s, 50);
            }
            "/close/after-status-line" => {
                w(&mut s, b"HTTP/1.1 200 OK\r\n");
                return linger(s, 50);
            }
            "/close/before-response" => return drop(s),
            "/silent" => return linger(s, 5000),
            "/interim-flood" => {
                // 100 Continue, over and over, never a final response.
                for _ in 0..500 {
                    if s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                return;
            }
            "/body/truncated" => {
                w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
                return linger(s, 100);
            }
            "/body/truncated-chunked" => {
                w(&mut s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n");
                return linger(s, 100);
            }
            "/body/bad-chunk" => {
                // Invalid framing mid-body, and the connection stays open: the
                // proxy must notice by itself, not wait for a timeout.
                w(&mut s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n");
                return linger(s, 5000);
            }
            "/body/bad-chunk-late" => {
                w(&mut s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
                thread::sleep(Duration::from_millis(100));
                w(&mut s, b"5\r\nworldXX\r\n0\r\n\r\n");
                return linger(s, 5000);
            }
            "/body/stall" => {
                // Head and part of the body, then silence past the route timeout.
                w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
                return linger(s, 5000);
            }
            "/body/head-with-body" => {
                // A HEAD answered with a body in the same write.
                w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
            }
            "/body/extra-after" => {
                // A complete response, then stray bytes a moment later.
                w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                thread::sleep(Duration::from_millis(30));
                w(&mut s, b"junk after the response");
            }
            _ => w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nx-upstream: bad\r\n\r\nfine-ok"),
        }
    }
}

struct Setup {
    good: Upstream,
    bad: Upstream,
    closer: Upstream,
    flaky: Upstream,
    proxy: Proxy,
    web: SocketAddr,
}

fn start() -> Setup {
    let good = Upstream::start("good");
    let bad = Upstream::raw("bad", misbehave);
    // Closes every connection right after accepting it.
    let closer = Upstream::raw("closer", |s, _| drop(s));
    // Closes its first connection right after accepting it, then serves.
    let flaky = Upstream::raw("flaky", |mut s, idx| {
        if idx == 0 {
            return drop(s);
        }
        while read_request_head(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-upstream: flaky\r\n\r\nflaky");
        }
    });
    let port = free_port();
    let t = ROUTE_TIMEOUT.as_millis();
    let proxy = Proxy::start_with(
        &format!(
            r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: healthy
            match: {{ path: {{ prefix: /healthy }} }}
            route: {{ cluster: good }}
          - name: closer
            match: {{ path: {{ prefix: /accept-close }} }}
            route: {{ cluster: closer, timeout: {t}ms }}
          - name: closer-retried
            match: {{ path: {{ prefix: /retried/accept-close }} }}
            route: {{ cluster: flaky, timeout: {t}ms, retries: {{ attempts: 1, on: [reset] }} }}
          - name: bad
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: bad, timeout: {t}ms }}
clusters:
{}{}{}  - name: bad
    endpoints: ["{}"]
    connect_timeout: 500ms
"#,
            cluster_yaml("good", &[good.addr]),
            cluster_yaml("closer", &[closer.addr]),
            cluster_yaml("flaky", &[flaky.addr]),
            bad.addr,
        ),
        &["--workers", "1"],
    );
    Setup {
        good,
        bad,
        closer,
        flaky,
        proxy,
        web: local(port),
    }
}

/// The one worker still answers on a new connection.
fn assert_still_serving(web: SocketAddr, what: &str) {
    let r = get(web, "localhost", "/healthy");
    assert_eq!(r.status, 200, "after {what}: {}", r.text());
    assert_eq!(r.upstream(), Some("good"), "after {what}");
}

/// `GET path` on a fresh connection: the proxy's own error with this status and
/// reason, in bounded time; then the connection is either closed or serves the
/// next request correctly. Returns the time to the answer.
fn expect_error(web: SocketAddr, path: &str, status: u16, reasons: &[&str]) -> Duration {
    let mut c = Conn::connect(web);
    let t0 = Instant::now();
    let r = c
        .request(&Req::get(path))
        .unwrap_or_else(|e| panic!("{path}: expected a {status} from the proxy, got: {e}"));
    let took = t0.elapsed();
    assert_eq!(r.status, status, "{path}: {:?} {}", r.headers, r.text());
    let reason = r.error_reason().unwrap_or("<none>");
    assert!(
        reasons.contains(&reason),
        "{path}: ringmesh-error {reason:?}, expected one of {reasons:?}"
    );
    let says_close = r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if says_close {
        c.assert_closed(path);
    } else {
        let next = c
            .request(&Req::get("/healthy/same-conn"))
            .unwrap_or_else(|e| panic!("{path}: the kept-alive connection failed the next request: {e}"));
        assert_eq!(next.status, 200, "{path}: next request on the same connection");
        assert_eq!(next.upstream(), Some("good"));
    }
    took
}

/// A response whose head went out and whose body then failed: the client sees
/// the head, a body shorter than announced (or broken), and the connection
/// closed promptly — never a hang, never a reused connection.
fn expect_cut(web: SocketAddr, path: &str) -> Vec<u8> {
    let mut c = Conn::connect(web);
    c.send(&Req::get(path).to_bytes()).unwrap();
    let t0 = Instant::now();
    let (start, headers) = c
        .read_head_raw()
        .unwrap_or_else(|e| panic!("{path}: expected the upstream's head: {e}"));
    assert!(start.starts_with("HTTP/1.1 200"), "{path}: {start}");
    let rest = c
        .read_until_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{path}: the client connection must be closed: {e}"));
    let took = t0.elapsed();
    assert!(
        took < ROUTE_TIMEOUT + Duration::from_secs(2),
        "{path}: cut noticed only after {took:?}"
    );
    if let Some(cl) = find_header(&headers, "content-length") {
        let cl: usize = cl.parse().unwrap();
        assert!(rest.len() < cl, "{path}: {} of {cl} body bytes: not cut?", rest.len());
    } else {
        assert_eq!(
            find_header(&headers, "transfer-encoding"),
            Some("chunked"),
            "{path}: {headers:?}"
        );
        assert!(
            !rest.ends_with(b"0\r\n\r\n"),
            "{path}: a cut chunked body must not end with a last chunk: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    rest
}

#[test]
fn misbehaving_http1_upstream() {
    let s = start();
    let web = s.web;
    let pid = s.proxy.pid();
    let mut table = Vec::new();
    let mut row = |what: &str, outcome: String| {
        table.push(format!("{what:<40} {outcome}"));
    };

    // ---- not HTTP at all: 502 at once (not after the route timeout) ----
    for path in [
        "/garbage/text",
        "/garbage/binary",
        "/garbage/banner",
        "/garbage/tls-alert",
        "/garbage/body-only",
    ] {
        let took = expect_error(web, path, 502, &["bad_upstream_response"]);
        assert!(took < ROUTE_TIMEOUT, "{path}: 502 only after {took:?}");
        assert_still_serving(web, path);
        row(path, format!("502 bad_upstream_response in {took:?}"));
    }

    // ---- broken response heads: 502 ----
    for path in [
        "/head/2-digit-status",
        "/head/bare-lf",
        "/head/obs-fold",
        "/head/nul",
        "/head/cl-te",
        "/head/cl-list",
        "/head/te-http10",
        "/head/te-gzip-chunked",
        "/head/te-gzip",
        "/head/101",
        "/head/huge",
        "/head/many",
    ] {
        let took = expect_error(web, path, 502, &["bad_upstream_response"]);
        assert!(took < ROUTE_TIMEOUT, "{path}: 502 only after {took:?}");
        assert_still_serving(web, path);
        row(path, format!("502 bad_upstream_response in {took:?}"));
    }

    // ---- closing before the head is complete: 502 ----
    for path in [
        "/close/before-response",
        "/close/after-status-line",
        "/close/mid-head",
    ] {
        let took = expect_error(web, path, 502, &["upstream_reset", "bad_upstream_response"]);
        assert!(took < ROUTE_TIMEOUT, "{path}: 502 only after {took:?}");
        assert_still_serving(web, path);
        row(path, format!("502 in {took:?}"));
    }
    let took = expect_error(web, "/accept-close", 502, &["upstream_reset"]);
    assert_still_serving(web, "an upstream closing right after accept");
    row("/accept-close (no retry policy)", format!("502 upstream_reset in {took:?}"));
    assert!(s.closer.accepted() >= 1);

    // ... and a retry policy on `reset` retries it (the first connection of
    // `flaky` closes right after accept, the second one answers).
    let r = get(web, "localhost", "/retried/accept-close");
    assert_eq!(r.status, 200, "retried: {:?} {}", r.headers, r.text());
    assert_eq!(r.upstream(), Some("flaky"));
    assert_eq!(s.flaky.accepted(), 2, "one attempt closed at accept, one retry");
    row("/retried/accept-close (retries: reset)", "200 after one retry".into());

    // ---- silence: 504 at the route timeout ----
    for path in ["/silent", "/interim-flood"] {
        let took = expect_error(web, path, 504, &["upstream_timeout"]);
        assert!(
            took >= ROUTE_TIMEOUT - Duration::from_millis(100)
                && took < ROUTE_TIMEOUT + Duration::from_millis(1500),
            "{path}: 504 after {took:?}, route timeout {ROUTE_TIMEOUT:?}"
        );
        assert_still_serving(web, path);
        row(path, format!("504 upstream_timeout in {took:?}"));
    }

    // ---- the head went out, then the body failed: the client connection is cut ----
    let cut_before = s
        .proxy
        .metric("ringmesh_upstream_response_body_errors_total{cluster=\"bad\"}")
        .unwrap_or(0.0);
    let cuts = [
        "/body/truncated",
        "/body/truncated-chunked",
        "/body/bad-chunk",
        "/body/bad-chunk-late",
        "/body/stall",
    ];
    for path in cuts {
        let t0 = Instant::now();
        let rest = expect_cut(web, path);
        assert_still_serving(web, path);
        row(
            path,
            format!("head + {} body bytes, then closed in {:?}", rest.len(), t0.elapsed()),
        );
    }
    let series = "ringmesh_upstream_response_body_errors_total{cluster=\"bad\"}";
    let want = cut_before + cuts.len() as f64;
    let text = s.proxy.wait_metric(series, Duration::from_secs(3), |v| v >= want);
    assert_eq!(
        metric_value(&text, series),
        Some(want),
        "every cut body is counted: {}",
        related_lines(&text, "ringmesh_upstream_response_body_errors_total")
    );

    // ---- equal Content-Lengths are accepted, and passed on as one ----
    let mut c = Conn::connect(web);
    for method in ["GET", "HEAD"] {
        let r = c.request(&Req::new(method, "/head/cl-dup")).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.headers_all("content-length"), ["2"], "{method}: {:?}", r.headers);
        assert_eq!(r.text(), if method == "GET" { "ok" } else { "" });
    }
    row("/head/cl-dup (02 and 2, 2)", "200 with one content-length: 2".into());

    // ---- stray body bytes: never read as the next response ----
    let mut c = Conn::connect(web);
    let r = c.request(&Req::new("HEAD", "/body/head-with-body")).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    for i in 0..3 {
        let r = c.request(&Req::get("/fine")).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "fine-ok"), "request {i} after a HEAD answered with a body");
    }
    row("/body/head-with-body (HEAD)", "head only; next requests fine".into());
    let r = c.request(&Req::get("/body/extra-after")).unwrap();
    assert_eq!(r.text(), "ok");
    thread::sleep(Duration::from_millis(100));
    for i in 0..3 {
        let r = c.request(&Req::get("/fine")).unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "fine-ok"),
            "request {i} after a response followed by stray bytes: {:?}",
            r.headers
        );
    }
    row("/body/extra-after", "ok; the stray bytes never became a response".into());

    println!("\n{}", table.join("\n"));
    assert_eq!(s.proxy.pid(), pid);
    assert!(s.proxy.wait_exit(Duration::ZERO).is_none(), "the proxy exited");
    assert!(!s.proxy.log().contains("panicked"), "{}", s.proxy.log());
    let _ = (&s.good, &s.bad);
}

#[test]
fn http2_client_in_front_of_a_misbehaving_http1_upstream() {
    let s = start();
    let web = s.web;

    // curl with prior knowledge: the proxy's errors arrive as HTTP/2 responses.
    for (path, code) in [
        ("/garbage/text", "502"),
        ("/head/huge", "502"),
        ("/close/mid-head", "502"),
        ("/silent", "504"),
    ] {
        let url = format!("http://{web}{path}");
        let r = curl(&[
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            &url,
        ]);
        assert_eq!(r.stdout.trim(), format!("{code} 2"), "{path}: {}", r.stderr);
    }

    // One connection, many streams: errors, a mid-body failure (RST_STREAM), and
    // good answers interleaved; the connection keeps serving throughout.
    let mut c = H2Client::connect(web).unwrap();
    c.read_server_settings(Duration::from_secs(5)).unwrap();
    let mut sid = 1;
    let mut next = |c: &mut H2Client, path: &str| {
        let id = sid;
        sid += 2;
        c.send_request(id, "GET", path, &[], None).unwrap();
        c.read_response(id, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{path} on stream {id}: {e}"))
    };
    for (path, want) in [
        ("/garbage/binary", Some(502)),
        ("/healthy/1", Some(200)),
        ("/head/cl-te", Some(502)),
        ("/close/before-response", Some(502)),
        ("/silent", Some(504)),
        ("/healthy/2", Some(200)),
        ("/body/truncated", None),
        ("/body/bad-chunk", None),
        ("/healthy/3", Some(200)),
    ] {
        let r = next(&mut c, path);
        assert_eq!(r.goaway, None, "{path}: GOAWAY {:?}", r.goaway);
        match want {
            Some(code) => {
                assert_eq!(r.status, Some(code), "{path}: {r:?}");
                assert!(r.complete, "{path}: {r:?}");
                if code >= 500 {
                    assert!(r.header("ringmesh-error").is_some(), "{path}: {r:?}");
                }
            }
            None => {
                // The body failed after the head was handed to HTTP/2 (whose
                // HEADERS may not have been flushed yet): the stream is reset,
                // never ended as if the body were complete.
                assert!(matches!(r.status, None | Some(200)), "{path}: {r:?}");
                assert!(!r.complete, "{path}: a cut body ended cleanly: {r:?}");
                assert!(r.reset.is_some(), "{path}: want RST_STREAM: {r:?}");
            }
        }
    }
    // Equal Content-Lengths ("02" and "2, 2") reach an HTTP/2 client as one.
    let r = next(&mut c, "/head/cl-dup");
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_eq!(r.body, b"ok");
    let lengths: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(lengths, ["2"], "{r:?}");
    assert!(!c.closed, "the HTTP/2 connection must stay open");
    let series = "ringmesh_upstream_response_body_errors_total{cluster=\"bad\"}";
    let text = s.proxy.wait_metric(series, Duration::from_secs(3), |v| v >= 2.0);
    assert_eq!(
        metric_value(&text, series),
        Some(2.0),
        "both reset streams are counted: {}",
        related_lines(&text, "ringmesh_upstream_response_body_errors_total")
    );
    // Concurrent streams: a silent one does not hold up the others.
    c.send_request(101, "GET", "/silent", &[], None).unwrap();
    c.send_request(103, "GET", "/healthy/concurrent", &[], None).unwrap();
    let r = c.read_response(103, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
    let r = c.read_response(101, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, Some(504), "{r:?}");
    assert_still_serving(web, "HTTP/2 streams");
    assert!(!s.proxy.log().contains("panicked"), "{}", s.proxy.log());
}
