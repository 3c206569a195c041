//! SIGTERM: in-flight requests complete, new connections are refused, exit 0.

mod common;
use common::*;

use std::thread;
use std::time::{Duration, Instant};

#[test]
fn sigterm_drains_in_flight_requests() {
    let up = Upstream::start("slow");
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"limits:
  drain_timeout: 5s
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: slow }}
clusters:
{}"#,
        cluster_yaml("slow", &[up.addr]),
    ));
    let web = local(port);
    // Warm-up, so the listener is known good.
    assert_eq!(get(web, "localhost", "/warm").status, 200);

    let handles: Vec<_> = (0..20)
        .map(|i| {
            thread::spawn(move || {
                let mut c = Conn::connect(web);
                let r = c.request(&Req::get(&format!("/sleep/1000?i={i}")));
                r.map(|r| {
                    (
                        r.status,
                        r.json()["path"].as_str().unwrap_or("").to_string(),
                    )
                })
                .map_err(|e| e.to_string())
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    // All 20 must be in flight at the upstream before we signal (else the test
    // would check connection refusal instead of draining).
    let in_flight = wait_until(Duration::from_secs(3), || {
        up.requests()
            .iter()
            .filter(|r| r.path.starts_with("/sleep/"))
            .count()
            == 20
    });
    assert!(
        in_flight,
        "only {} of 20 requests reached the upstream",
        up.request_count() - 1
    );
    let t_term = Instant::now();
    proxy.sigterm();

    // New connections are refused soon after SIGTERM (well before the drain ends).
    let refused = wait_until(Duration::from_millis(600), || connect_refused(web));
    let refused_after = t_term.elapsed();

    let mut ok = 0;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join().unwrap() {
            Ok((200, path)) => {
                assert_eq!(path, format!("/sleep/1000?i={i}"));
                ok += 1;
            }
            Ok((s, _)) => panic!("in-flight request {i} got {s} during drain"),
            Err(e) => panic!(
                "in-flight request {i} failed during drain: {e}; log:\n{}",
                proxy.log()
            ),
        }
    }
    assert_eq!(ok, 20);
    let status = proxy.wait_exit(Duration::from_secs(7));
    let exited_after = t_term.elapsed();
    assert!(
        status.is_some(),
        "proxy still running {exited_after:?} after SIGTERM (drain_timeout 5s)"
    );
    assert_eq!(
        status.unwrap().code(),
        Some(0),
        "exit status after a clean drain: {:?}",
        status
    );
    assert!(
        refused,
        "new connections were still accepted {refused_after:?} after SIGTERM"
    );
    eprintln!("refused new connections after {refused_after:?}, exited after {exited_after:?}");
}

#[test]
fn sigterm_with_idle_connections_exits_promptly() {
    // Idle keep-alive connections must not hold the process for the whole drain_timeout.
    let up = Upstream::start("up");
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"limits:
  drain_timeout: 10s
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
    let web = local(port);
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut c = Conn::connect(web);
        assert_eq!(c.request(&Req::get("/x")).unwrap().status, 200);
        idle.push(c);
    }
    let t0 = Instant::now();
    proxy.sigterm();
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "5 idle keep-alive connections kept the proxy alive for > 5 s after SIGTERM"
    );
    assert_eq!(status.unwrap().code(), Some(0));
    eprintln!("exited {:?} after SIGTERM", t0.elapsed());
    for (i, c) in idle.iter_mut().enumerate() {
        c.assert_closed(&format!("idle connection {i} after shutdown"));
    }
}
