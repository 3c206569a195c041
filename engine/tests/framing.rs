//! Request framing and header syntax rules (request smuggling defences), head
//! size/count limits, the request head timeout, and pipelining.

mod common;
use common::*;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn start() -> (Upstream, Proxy, std::net::SocketAddr) {
    let up = Upstream::start("up");
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"limits:
  max_request_head_bytes: 4096
  max_headers: 20
  request_head_timeout: 1s
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: up }}
clusters:
{}"#,
        cluster_yaml("up", &[up.addr]),
    ));
    (up, proxy, local(port))
}

/// Sends `bytes` on a new connection; asserts the response status, the error
/// reason, and that the proxy then closes the connection.
fn expect_rejected(web: std::net::SocketAddr, what: &str, bytes: &[u8], status: u16, reason: &str) {
    let (mut c, r) = raw_exchange(web, bytes, "GET");
    let r = r.unwrap_or_else(|e| panic!("{what}: no response: {e}"));
    assert_eq!(r.status, status, "{what}: {:?} {}", r.headers, r.text());
    assert_eq!(r.error_reason(), Some(reason), "{what}: {:?}", r.headers);
    c.assert_closed(what);
}

fn expect_400(web: std::net::SocketAddr, what: &str, bytes: &[u8]) {
    expect_rejected(web, what, bytes, 400, "bad_request");
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let (up, _p, web) = start();
    expect_400(
        web,
        "CL + TE",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    expect_400(
        web,
        "TE + CL",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(
        up.request_count(),
        0,
        "rejected requests must not reach the upstream"
    );
}

#[test]
fn bad_content_length_is_400() {
    let (up, _p, web) = start();
    expect_400(
        web,
        "differing CL",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
    expect_400(
        web,
        "differing CL list",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
    );
    for cl in [
        "5a",
        "-1",
        "+5",
        "0x5",
        "5 5",
        "",
        "99999999999999999999999",
    ] {
        expect_400(
            web,
            &format!("malformed CL {cl:?}"),
            format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\nhello").as_bytes(),
        );
    }
    assert_eq!(up.request_count(), 0);
}

#[test]
fn unsupported_transfer_encoding_is_400() {
    let (up, _p, web) = start();
    expect_400(
        web,
        "TE gzip",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    );
    expect_400(
        web,
        "TE chunked, gzip (chunked not last)",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    );
    expect_400(
        web,
        "TE garbage",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(up.request_count(), 0);
}

#[test]
fn bad_header_syntax_is_400() {
    let (up, _p, web) = start();
    expect_400(
        web,
        "obs-fold",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Foo: a\r\n  folded\r\n\r\n",
    );
    expect_400(
        web,
        "space before colon",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Foo : bar\r\n\r\n",
    );
    expect_400(
        web,
        "bare CR in value",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Foo: a\rb\r\n\r\n",
    );
    expect_400(
        web,
        "NUL in value",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Foo: a\0b\r\n\r\n",
    );
    expect_400(
        web,
        "no colon",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Foo\r\n\r\n",
    );
    expect_400(
        web,
        "bad request line",
        b"GET /x HTTP/1.1 extra\r\nHost: a\r\n\r\n",
    );
    assert_eq!(up.request_count(), 0);
}

#[test]
fn bad_chunk_size_is_400() {
    let (up, _p, web) = start();
    expect_400(web, "chunk size zz", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    expect_400(
        web,
        "chunk size overflow",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    );
    expect_400(web, "negative chunk size", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n");
    // Nothing complete reached the upstream (it records after reading a full body).
    assert_eq!(up.request_count(), 0);
}

#[test]
fn oversized_head_is_431() {
    let (up, _p, web) = start();
    let big = "a".repeat(5000);
    expect_rejected(
        web,
        "header block over max_request_head_bytes",
        format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        431,
        "request_header_fields_too_large",
    );
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    expect_rejected(
        web,
        "more than max_headers headers",
        format!("GET /x HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
        431,
        "request_header_fields_too_large",
    );
    // Just under the limits is fine.
    let ok: String = (0..15).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (_c, r) = raw_exchange(
        web,
        format!(
            "GET /ok HTTP/1.1\r\nHost: a\r\n{ok}X-Mid: {}\r\n\r\n",
            "b".repeat(2000)
        )
        .as_bytes(),
        "GET",
    );
    assert_eq!(r.unwrap().status, 200);
    assert_eq!(up.request_count(), 1);
}

#[test]
fn request_head_timeout_is_408() {
    let (up, _p, web) = start();
    let mut c = Conn::connect(web);
    let t0 = Instant::now();
    c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n").unwrap();
    let r = c.read_response("GET").expect("a 408 response");
    let took = t0.elapsed();
    assert_eq!(r.status, 408, "{:?}", r.headers);
    assert_eq!(r.error_reason(), Some("request_timeout"));
    assert!(
        took >= Duration::from_millis(800),
        "408 after only {took:?} (timeout is 1s)"
    );
    assert!(
        took < Duration::from_secs(4),
        "408 after {took:?} (timeout is 1s)"
    );
    c.assert_closed("after 408");
    assert_eq!(up.request_count(), 0);
}

#[test]
fn slowloris_drip_feed_still_times_out() {
    // Bytes trickling in (one every 100 ms) must not extend the 1 s head timeout.
    let (_up, _p, web) = start();
    let mut c = Conn::connect(web);
    let t0 = Instant::now();
    c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Drip: ")
        .unwrap();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 1];
    while t0.elapsed() < Duration::from_secs(4) {
        match c.stream.peek(&mut buf) {
            Ok(_) => break, // a response (or EOF) is there
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if c.send(b"a").is_err() {
            break;
        }
    }
    c.set_read_timeout(Duration::from_secs(5));
    match c.read_response("GET") {
        Ok(r) => {
            assert_eq!(r.status, 408, "{:?}", r.headers);
            assert_eq!(r.error_reason(), Some("request_timeout"));
        }
        Err(e) => panic!(
            "expected a 408 for a head trickling in for {:?}: {e}",
            t0.elapsed()
        ),
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "408 only after {took:?} although the head timeout is 1s"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (up, _p, web) = start();
    let mut c = Conn::connect(web);
    let mut bytes = Vec::new();
    bytes.extend(Req::get("/p1").to_bytes());
    bytes.extend(Req::new("POST", "/p2").body("hello world").to_bytes());
    bytes.extend(Req::get("/sleep/200").to_bytes());
    bytes.extend(
        b"POST /p4 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    bytes.extend(Req::get("/p5").to_bytes());
    c.send(&bytes).unwrap();
    let want = [
        ("/p1", 0),
        ("/p2", 11),
        ("/sleep/200", 0),
        ("/p4", 3),
        ("/p5", 0),
    ];
    for (path, len) in want {
        let r = c
            .read_response("GET")
            .unwrap_or_else(|e| panic!("response for {path}: {e}"));
        assert_eq!(r.status, 200, "{path}");
        let j = r.json();
        assert_eq!(j["path"], path, "responses out of order");
        assert_eq!(j["body_len"], len, "{path}");
    }
    assert_eq!(up.request_count(), 5);
}

/// Request smuggling through an upstream that answers before reading the
/// whole body (a 413, a 401) and closes: the rest of the body must not be
/// read as a next request on the client's connection.
#[test]
fn the_rest_of_a_body_the_upstream_did_not_take_is_never_a_next_request() {
    let smuggled = Arc::new(AtomicBool::new(false));
    let seen = smuggled.clone();
    let up = Upstream::raw("early", move |s, _| {
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let Ok(Some(head)) = read_head(&mut r) else {
            return;
        };
        let mut w = s;
        if head.starts_with(b"GET /smuggled") {
            seen.store(true, Ordering::SeqCst);
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nSMUGGLED!");
            return;
        }
        let _ = w.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n");
        std::thread::sleep(Duration::from_millis(50));
        // Closed with the body unread: a reset.
        let _ = socket2::SockRef::from(&w).set_linger(Some(Duration::ZERO));
    });
    let port = free_port();
    let _proxy = Proxy::start(&catch_all(port, "up", &[up.addr]));
    let smuggle = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut c = Conn::connect(local(port));
    c.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\nfirst part",
            10 + smuggle.len()
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The rest of the body, once the upstream has answered and gone.
    c.send(smuggle).unwrap();
    let r = c.read_response("POST").unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    let rest = c.read_until_closed(Duration::from_secs(5)).unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !smuggled.load(Ordering::SeqCst),
        "the rest of the body reached the upstream as a request"
    );
}
