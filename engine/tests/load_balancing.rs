//! Weighted cluster split and upstream connection reuse.

mod common;
use common::*;

use std::thread;
use std::time::{Duration, Instant};

#[test]
fn weighted_split_90_10() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let port = free_port();
    let _proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: split
            match: {{ path: {{ prefix: / }} }}
            route:
              weighted_clusters:
                - {{ cluster: v1, weight: 90 }}
                - {{ cluster: v2, weight: 10 }}
clusters:
{}{}"#,
        cluster_yaml("v1", &[v1.addr]),
        cluster_yaml("v2", &[v2.addr]),
    ));
    let web = local(port);
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    let deadline = Instant::now() + Duration::from_secs(15);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut counts = [0usize; 2];
                let mut c = Conn::connect(web);
                for i in 0..PER_THREAD {
                    assert!(
                        Instant::now() < deadline,
                        "thread {t}: too slow, {i} requests done"
                    );
                    let r = c
                        .request(&Req::get(&format!("/w/{t}/{i}")))
                        .expect("request");
                    assert_eq!(r.status, 200, "{}", r.text());
                    match r.upstream() {
                        Some("v1") => counts[0] += 1,
                        Some("v2") => counts[1] += 1,
                        other => panic!("unexpected upstream {other:?}"),
                    }
                }
                counts
            })
        })
        .collect();
    let mut total = [0usize; 2];
    for h in handles {
        let c = h.join().unwrap();
        total[0] += c[0];
        total[1] += c[1];
    }
    let n = THREADS * PER_THREAD;
    assert_eq!(total[0] + total[1], n);
    // 10% of 2000 = 200, sigma ~13.4; allow 10% +- 2.5% (150..=250).
    assert!(
        (150..=250).contains(&total[1]),
        "v2 got {} of {n} requests (v1 {}), expected 10% +- 2.5%",
        total[1],
        total[0]
    );
    assert_eq!(v1.request_count(), total[0]);
    assert_eq!(v2.request_count(), total[1]);
}

#[test]
fn upstream_connections_are_reused() {
    let up = Upstream::start("up");
    let port = free_port();
    let proxy = Proxy::start(&catch_all(port, "c", &[up.addr]));
    let web = local(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    // 100 sequential requests on one keep-alive client connection ...
    let mut c = Conn::connect(web);
    for i in 0..100 {
        assert!(Instant::now() < deadline, "too slow at request {i}");
        let r = c.request(&Req::get(&format!("/ka/{i}"))).unwrap();
        assert_eq!(r.status, 200);
    }
    drop(c);
    // ... and 100 sequential requests each on a new client connection.
    for i in 0..100 {
        assert!(Instant::now() < deadline, "too slow at request {i}");
        let r = send(
            web,
            &Req::get(&format!("/new/{i}")).header("Connection", "close"),
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(up.request_count(), 200);
    assert!(
        up.accepted() <= 4,
        "200 sequential requests opened {} upstream connections (expected <= 4 with 2 workers)",
        up.accepted()
    );
    let text = proxy.wait_metric(
        "ringmesh_upstream_pool_hits_total{cluster=\"c\"}",
        Duration::from_secs(3),
        |v| v >= 190.0,
    );
    let hits = metric_value(&text, "ringmesh_upstream_pool_hits_total{cluster=\"c\"}");
    let misses = metric_value(&text, "ringmesh_upstream_pool_misses_total{cluster=\"c\"}");
    assert!(
        hits.is_some_and(|h| h >= 190.0),
        "pool hits {hits:?} (misses {misses:?}), expected >= 190; upstream accepted {}",
        up.accepted()
    );
    assert_eq!(
        hits.unwrap() + misses.unwrap_or(-1.0),
        200.0,
        "hits + misses = upstream requests"
    );
}

/// An upstream that answers one keep-alive request per connection, then
/// closes it silently (no `connection: close`), as a server with a short
/// idle timeout does. The pooled connection is stale when the next request
/// comes: a GET is retried on a fresh connection, a POST with a body is
/// never sent on it (the liveness peek catches it). No client sees an error.
#[test]
fn stale_pooled_connections_are_never_used_for_a_failed_request() {
    use std::io::{Read, Write};
    let up = Upstream::raw("closer", |mut s, _| {
        let Some(head) = read_request_head(&mut s) else {
            return;
        };
        let lower = head.to_ascii_lowercase();
        if let Some(cl) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
        {
            let mut body = vec![0u8; cl.trim().parse().unwrap_or(0)];
            let _ = s.read_exact(&mut body);
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        thread::sleep(Duration::from_millis(20));
        // Dropped: FIN after a response that promised keep-alive.
    });
    let port = free_port();
    let proxy = Proxy::start_with(&catch_all(port, "c", &[up.addr]), &["--workers", "1"]);
    let web = local(port);
    let mut c = Conn::connect(web);
    for i in 0..6 {
        let req = if i % 2 == 0 {
            Req::get(&format!("/get/{i}"))
        } else {
            Req::new("POST", &format!("/post/{i}")).body(b"payload".to_vec())
        };
        let r = c.request(&req).unwrap();
        assert_eq!(r.status, 200, "request {i}: {:?}", r.error_reason());
        assert_eq!(r.body, b"ok");
        // Let the upstream's FIN arrive while the connection sits in the pool.
        thread::sleep(Duration::from_millis(100));
    }
    // Every request needed a fresh upstream connection in the end.
    assert!(up.accepted() >= 6, "accepted {}", up.accepted());
    let m = proxy.metrics();
    assert!(m.contains("ringmesh_requests_total{listener=\"web\",route=\"r\",cluster=\"c\",status_class=\"2xx\"} 6"), "{m}");
}
