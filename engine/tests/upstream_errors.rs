//! Upstream failures become 502/503/504 with a `ringmesh-error` reason, and the
//! (single) worker keeps serving afterwards.

mod common;
use common::*;

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// A proxy with one worker: `/healthy*` and `/after-error*` -> a healthy upstream,
/// everything else -> cluster `bad` (the endpoint under test). `timeout` is the bad route's.
fn start(bad: SocketAddr, timeout: &str) -> (Upstream, Proxy, SocketAddr) {
    let good = Upstream::start("good");
    let port = free_port();
    let proxy = Proxy::start_with(
        &format!(
            r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: good
            match: {{ path: {{ prefix: /healthy }} }}
            route: {{ cluster: good }}
          - name: good2
            match: {{ path: {{ prefix: /after-error }} }}
            route: {{ cluster: good }}
          - name: bad
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: bad, timeout: {timeout} }}
clusters:
{}  - name: bad
    endpoints: ["{bad}"]
    connect_timeout: 500ms
"#,
            cluster_yaml("good", &[good.addr]),
        ),
        &["--workers", "1"],
    );
    (good, proxy, local(port))
}

/// The worker still answers: on a new connection, and on `c` if it is still open.
fn assert_still_serving(web: SocketAddr, what: &str) {
    let r = get(web, "localhost", "/healthy");
    assert_eq!(r.status, 200, "after {what}: {}", r.text());
    assert_eq!(r.upstream(), Some("good"), "after {what}");
}

fn expect_error(web: SocketAddr, path: &str, status: u16, reasons: &[&str]) -> Duration {
    let t0 = Instant::now();
    let mut c = Conn::connect(web);
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
    assert!(
        !r.body.is_empty(),
        "{path}: proxy errors carry a short text body"
    );
    // Keep-alive after a proxy-made error is allowed: if the connection is still
    // open it must serve the next request correctly.
    if let Ok(r2) = c.request(&Req::get("/after-error")) {
        assert_eq!(
            r2.status, 200,
            "{path}: next request on the same connection"
        );
    }
    took
}

#[test]
fn connect_refused_is_503() {
    let (_good, _p, web) = start(dead_addr(), "5s");
    for _ in 0..3 {
        expect_error(
            web,
            "/x",
            503,
            &["upstream_connect_failed", "no_healthy_upstream"],
        );
    }
    assert_still_serving(web, "connect refused");
}

#[test]
fn reset_before_response_is_502() {
    let bad = Upstream::raw("reset", |mut s, _| {
        if read_request_head(&mut s).is_some() {
            reset(s);
        }
    });
    let (_good, _p, web) = start(bad.addr, "5s");
    for _ in 0..3 {
        expect_error(web, "/reset", 502, &["upstream_reset"]);
    }
    assert_still_serving(web, "upstream reset");
}

#[test]
fn close_without_response_is_502() {
    let bad = Upstream::raw("eof", |mut s, _| {
        if read_request_head(&mut s).is_some() {
            drop(s);
        }
    });
    let (_good, _p, web) = start(bad.addr, "5s");
    expect_error(
        web,
        "/eof",
        502,
        &["upstream_reset", "bad_upstream_response"],
    );
    assert_still_serving(web, "upstream closed without answering");
}

#[test]
fn garbage_response_is_502() {
    let bad = Upstream::raw("garbage", |mut s, _| {
        if read_request_head(&mut s).is_some() {
            let _ = s.write_all(b"HELLO THIS IS NOT HTTP\r\n\r\n\x00\x01\x02");
            thread::sleep(Duration::from_millis(200));
        }
    });
    let (_good, _p, web) = start(bad.addr, "5s");
    expect_error(web, "/garbage", 502, &["bad_upstream_response"]);
    assert_still_serving(web, "garbage response");
}

#[test]
fn invalid_upstream_framing_is_502() {
    // A response with both Content-Length and Transfer-Encoding, and one with two
    // different Content-Lengths: the proxy must not guess.
    let bad = Upstream::raw("badframing", |mut s, _| {
        if let Some(head) = read_request_head(&mut s) {
            let resp: &[u8] = if head.contains("/clte") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
            };
            let _ = s.write_all(resp);
            thread::sleep(Duration::from_millis(100));
        }
    });
    let (_good, _p, web) = start(bad.addr, "5s");
    expect_error(web, "/clte", 502, &["bad_upstream_response"]);
    expect_error(web, "/2cl", 502, &["bad_upstream_response"]);
    assert_still_serving(web, "invalid upstream framing");
}

#[test]
fn truncated_body_closes_client_connection() {
    // The head was already forwarded, so no 502 is possible: the client must see
    // the connection closed before the announced length (never a hang, never a
    // reused connection).
    let bad = Upstream::raw("trunc", |mut s, _| {
        if read_request_head(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
            thread::sleep(Duration::from_millis(100));
            reset(s);
        }
    });
    let (_good, _p, web) = start(bad.addr, "5s");
    let mut c = Conn::connect(web);
    c.send(&Req::get("/trunc").to_bytes()).unwrap();
    let t0 = Instant::now();
    let err = c
        .read_response("GET")
        .expect_err("a 1000-byte body of which 10 bytes were sent must not complete");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "truncation noticed only after {:?}: {err}",
        t0.elapsed()
    );
    assert_still_serving(web, "truncated upstream body");
}

#[test]
fn slow_upstream_is_504_after_route_timeout() {
    let slow = Upstream::start("slow");
    let (_good, _p, web) = start(slow.addr, "500ms");
    let took = expect_error(web, "/sleep/3000", 504, &["upstream_timeout"]);
    assert!(
        took >= Duration::from_millis(400),
        "504 after only {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "504 after {took:?}, route timeout is 500ms"
    );
    assert_still_serving(web, "upstream timeout");
    // A fast answer on the same route is fine.
    let r = get(web, "localhost", "/fast");
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream(), Some("slow"));
}

#[test]
fn silent_upstream_is_504() {
    let silent = Upstream::raw("silent", |mut s, _| {
        let _ = read_request_head(&mut s);
        thread::sleep(Duration::from_secs(5));
    });
    let (_good, _p, web) = start(silent.addr, "500ms");
    let took = expect_error(web, "/silent", 504, &["upstream_timeout"]);
    assert!(
        took < Duration::from_millis(2500),
        "504 after {took:?}, route timeout is 500ms"
    );
    assert_still_serving(web, "silent upstream");
}

#[test]
fn error_metrics_are_counted() {
    let (_good, proxy, web) = start(dead_addr(), "5s");
    for _ in 0..2 {
        let r = get(web, "localhost", "/x");
        assert_eq!(r.status, 503);
    }
    let text = proxy.wait_metric(
        "ringmesh_upstream_connect_failures_total{cluster=\"bad\"}",
        Duration::from_secs(3),
        |v| v >= 2.0,
    );
    assert!(
        metric_value(
            &text,
            "ringmesh_upstream_connect_failures_total{cluster=\"bad\"}"
        )
        .is_some_and(|v| v >= 2.0),
        "{}",
        related_lines(&text, "ringmesh_upstream_connect_failures_total")
    );
    assert_metric_line(&text, "ringmesh_requests_total{listener=\"web\",route=\"bad\",cluster=\"bad\",status_class=\"5xx\"} 2");
}

#[test]
fn connect_timeout_is_503_and_counted() {
    let hole = blackhole();
    let (_good, proxy, web) = start(hole.addr, "5s");
    let took = expect_error(
        web,
        "/x",
        503,
        &["upstream_connect_failed", "no_healthy_upstream"],
    );
    assert!(
        took >= Duration::from_millis(400),
        "503 after {took:?}: connect_timeout is 500ms, was the connect really attempted?"
    );
    assert!(
        took < Duration::from_millis(3000),
        "503 after {took:?}, connect_timeout is 500ms"
    );
    let series = "ringmesh_upstream_connect_timeouts_total{cluster=\"bad\"}";
    let text = proxy.wait_metric(series, Duration::from_secs(3), |v| v >= 1.0);
    assert!(
        metric_value(&text, series).is_some_and(|v| v >= 1.0),
        "{}",
        related_lines(&text, "ringmesh_upstream_connect_timeouts_total")
    );
    assert_still_serving(web, "connect timeout");
}
