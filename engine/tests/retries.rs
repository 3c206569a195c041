//! Failover and retries: a refused connect goes to another endpoint (always:
//! nothing was sent) and ejects the endpoint for a while; a route's retry
//! policy tries 5xx answers, resets and per-try timeouts again on another
//! endpoint; without a policy the answer goes to the client as it is.

mod common;
use common::*;

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// An upstream that answers every request with `503` (keep-alive).
fn always_503() -> Upstream {
    Upstream::raw("always-503", |mut s, _| {
        while read_request_head(&mut s).is_some() {
            let r = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nx-upstream: always-503\r\n\r\nbusy";
            if s.write_all(r).is_err() {
                return;
            }
        }
    })
}

/// Routes: `/retry5xx` retries once on 5xx, `/reset` once on reset,
/// `/slow` on gateway-error with a 300 ms per-try timeout, anything else
/// has no policy. All go to cluster `pair` = [first, second], round robin.
fn proxy_for(first: SocketAddr, second: SocketAddr) -> (Proxy, SocketAddr) {
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
          - name: retry5xx
            match: {{ path: {{ prefix: /retry5xx }} }}
            route: {{ cluster: pair, retries: {{ attempts: 1, on: [5xx] }} }}
          - name: reset
            match: {{ path: {{ prefix: /reset }} }}
            route: {{ cluster: pair, retries: {{ attempts: 1, on: [reset] }} }}
          - name: slow
            match: {{ path: {{ prefix: /slow }} }}
            route: {{ cluster: pair, timeout: 5s, retries: {{ attempts: 2, on: [gateway-error], per_try_timeout: 300ms }} }}
          - name: plain
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: pair }}
clusters:
  - name: pair
    endpoints: ["{first}", "{second}"]
    connect_timeout: 1s
"#
        ),
        &["--workers", "1"],
    );
    (proxy, local(port))
}

#[test]
fn a_refused_endpoint_fails_over_to_another_and_is_passed_over_afterwards() {
    let good = Upstream::start("good");
    let (proxy, web) = proxy_for(dead_addr(), good.addr);
    for i in 0..40 {
        let r = get(web, "localhost", &format!("/plain/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.upstream(), Some("good"));
    }
    // A body in hand fails over too: the refused connect sent nothing.
    let mut c = Conn::connect(web);
    let r = c
        .request(&Req::new("POST", "/plain/post").body("payload"))
        .expect("POST");
    assert_eq!(r.status, 200);
    // The dead endpoint is ejected after its first refusal, so 40 requests
    // cost only a few connect attempts to it, not 20.
    let failures = proxy
        .metric(r#"ringmesh_upstream_connect_failures_total{cluster="pair"}"#)
        .unwrap_or(0.0);
    assert!(
        (1.0..=4.0).contains(&failures),
        "connect failures to the dead endpoint: {failures}"
    );
}

#[test]
fn without_a_policy_a_5xx_answer_goes_to_the_client() {
    let bad = always_503();
    let good = Upstream::start("good");
    let (_proxy, web) = proxy_for(bad.addr, good.addr);
    let statuses: Vec<u16> = (0..10)
        .map(|i| get(web, "localhost", &format!("/plain/{i}")).status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        5,
        "{statuses:?}"
    );
}

#[test]
fn retry_on_5xx_answers_from_the_other_endpoint() {
    let bad = always_503();
    let good = Upstream::start("good");
    let (_proxy, web) = proxy_for(bad.addr, good.addr);
    for i in 0..20 {
        let r = get(web, "localhost", &format!("/retry5xx/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.upstream(), Some("good"));
    }
    // Each first attempt that hit the 503 endpoint was sent exactly once more.
    assert_eq!(good.request_count(), 20);
}

#[test]
fn with_every_endpoint_failing_the_last_answer_is_returned() {
    let a = always_503();
    let b = always_503();
    let (_proxy, web) = proxy_for(a.addr, b.addr);
    let r = get(web, "localhost", "/retry5xx/x");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "busy",
        "the upstream's own answer, not a proxy error"
    );
}

#[test]
fn retry_on_reset_survives_an_upstream_that_resets_mid_request() {
    let resetter = Upstream::raw("resetter", |mut s, _| {
        if read_request_head(&mut s).is_some() {
            reset(s);
        }
    });
    let good = Upstream::start("good");
    let (_proxy, web) = proxy_for(resetter.addr, good.addr);
    for i in 0..10 {
        let r = get(web, "localhost", &format!("/reset/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    // Without the policy a reset is a 502 for the requests that hit it.
    let statuses: Vec<u16> = (0..6)
        .map(|i| get(web, "localhost", &format!("/plain/{i}")).status)
        .collect();
    assert!(statuses.contains(&502), "{statuses:?}");
}

#[test]
fn a_per_try_timeout_moves_on_to_the_next_endpoint() {
    let silent = Upstream::raw("silent", |mut s, _| {
        if read_request_head(&mut s).is_some() {
            thread::sleep(Duration::from_secs(10));
        }
    });
    let good = Upstream::start("good");
    let (_proxy, web) = proxy_for(silent.addr, good.addr);
    for i in 0..4 {
        let t0 = Instant::now();
        let r = get(web, "localhost", &format!("/slow/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "per-try timeout, not the 5 s route timeout: {:?}",
            t0.elapsed()
        );
    }
}
