//! SIGHUP config reload: hitless under traffic, broken configs rejected, and
//! listeners added/removed.

mod common;
use common::*;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn direct(port: u16, body: &str) -> String {
    format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            direct_response:
              status: 200
              body: "{body}"
clusters: []
"#
    )
}

fn epochs(proxy: &Proxy) -> (f64, u64) {
    let m = proxy
        .metric("ringmesh_config_epoch")
        .unwrap_or_else(|| panic!("no ringmesh_config_epoch metric:\n{}", proxy.metrics()));
    let d = proxy.config_dump()["epoch"]
        .as_u64()
        .expect("config_dump has a numeric \"epoch\"");
    (m, d)
}

/// Waits until the metric epoch differs from `old`; returns whether it did.
fn wait_epoch_change(proxy: &Proxy, old: f64) -> bool {
    wait_until(Duration::from_secs(5), || {
        proxy
            .metric("ringmesh_config_epoch")
            .is_some_and(|e| e != old)
    })
}

#[derive(Default)]
struct Tally {
    bodies: Vec<(Instant, String)>,
    failures: Vec<String>,
    retries: usize,
}

/// Requests `/` in a loop until `stop`, either on one keep-alive connection
/// (reconnecting when the proxy says close) or on a new connection each time.
fn client_loop(web: SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn: Option<Conn> = None;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && n < 200_000 {
        n += 1;
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Conn::try_connect(web) {
                Ok(c) => c,
                Err(e) => {
                    tally.lock().unwrap().failures.push(format!("connect: {e}"));
                    continue;
                }
            },
        };
        let req = if keep_alive {
            Req::get("/")
        } else {
            Req::get("/").header("Connection", "close")
        };
        match c.request(&req) {
            Ok(r) if r.status == 200 => {
                let close = r
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                tally
                    .lock()
                    .unwrap()
                    .bodies
                    .push((Instant::now(), r.text()));
                if keep_alive && !close {
                    conn = Some(c);
                }
            }
            Ok(r) => tally.lock().unwrap().failures.push(format!(
                "status {} {:?} {}",
                r.status,
                r.error_reason(),
                r.text()
            )),
            // A keep-alive connection closed by the server just as we reused it:
            // every HTTP client retries that (nothing was answered). Not a failure.
            Err(e)
                if reused
                    && matches!(
                        e.kind(),
                        ErrorKind::UnexpectedEof
                            | ErrorKind::ConnectionReset
                            | ErrorKind::BrokenPipe
                    ) =>
            {
                tally.lock().unwrap().retries += 1;
            }
            Err(e) => tally
                .lock()
                .unwrap()
                .failures
                .push(format!("request (reused={reused}): {e}")),
        }
    }
}

#[test]
fn sighup_reload_under_traffic_is_hitless() {
    let port = free_port();
    let proxy = Proxy::start(&direct(port, "v1"));
    let web = local(port);
    assert_eq!(get(web, "localhost", "/").text(), "v1");
    let (e0, d0) = epochs(&proxy);

    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..2)
        .map(|_| Arc::new(Mutex::new(Tally::default())))
        .collect();
    let handles: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (stop, t) = (stop.clone(), t.clone());
            thread::spawn(move || client_loop(web, i == 0, stop, t))
        })
        .collect();
    let t0 = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    proxy.write_config(&direct(port, "v2"));
    proxy.sighup();
    let reloaded = wait_epoch_change(&proxy, e0);
    let reload_seen = Instant::now();
    let reload_seen_at = reload_seen - t0;
    thread::sleep(Duration::from_secs(3).saturating_sub(t0.elapsed()));
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().unwrap();
    }
    assert!(
        reloaded,
        "ringmesh_config_epoch did not change within 5 s of SIGHUP; log:\n{}",
        proxy.log()
    );

    for (i, t) in tallies.iter().enumerate() {
        let t = t.lock().unwrap();
        let kind = if i == 0 {
            "keep-alive"
        } else {
            "new connection per request"
        };
        eprintln!(
            "client {i} ({kind}): {} ok, {} failed, {} keep-alive retries; reload seen at {reload_seen_at:?}",
            t.bodies.len(),
            t.failures.len(),
            t.retries
        );
        assert!(
            t.failures.is_empty(),
            "client {i} ({kind}) had failed requests: {:?}",
            &t.failures[..t.failures.len().min(10)]
        );
        assert!(
            t.bodies.len() >= 20,
            "client {i} made only {} requests",
            t.bodies.len()
        );
        assert!(
            t.bodies.iter().all(|(_, b)| b == "v1" || b == "v2"),
            "unexpected bodies"
        );
        assert!(
            t.bodies.iter().any(|(_, b)| b == "v2"),
            "client {i} never saw the new body"
        );
        // Once the epoch metric has moved (plus a little slack), only the new body.
        let settled = reload_seen + Duration::from_millis(200);
        let stale = t
            .bodies
            .iter()
            .filter(|(at, b)| *at > settled && b == "v1")
            .count();
        assert_eq!(
            stale, 0,
            "client {i} got the old body {stale} times after the reload was reported"
        );
    }
    assert_eq!(get(web, "localhost", "/").text(), "v2");
    let (e1, d1) = epochs(&proxy);
    assert_eq!(e1, e0 + 1.0, "ringmesh_config_epoch");
    assert_eq!(d1, d0 + 1, "config_dump epoch");
    let text = proxy.metrics();
    assert_metric_line(&text, "ringmesh_config_reloads_total{result=\"success\"} 1");
}

#[test]
fn broken_config_on_sighup_keeps_old_config() {
    let port = free_port();
    let proxy = Proxy::start(&direct(port, "v1"));
    let web = local(port);
    let (e0, d0) = epochs(&proxy);

    // A route to an unknown cluster.
    proxy.write_config(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: nope }}
clusters: []
"#
    ));
    proxy.sighup();
    let text = proxy.wait_metric(
        "ringmesh_config_reloads_total{result=\"failure\"}",
        Duration::from_secs(5),
        |v| v >= 1.0,
    );
    assert_metric_line(&text, "ringmesh_config_reloads_total{result=\"failure\"} 1");
    assert_eq!(
        metric_value(&text, "ringmesh_config_epoch"),
        Some(e0),
        "epoch must not change on a failed reload"
    );
    assert_eq!(proxy.config_dump()["epoch"].as_u64(), Some(d0));
    for _ in 0..5 {
        let r = get(web, "localhost", "/");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "v1"),
            "old config keeps serving"
        );
    }
    assert!(
        proxy.log().contains("nope"),
        "the reload error should be logged (naming the bad cluster); log:\n{}",
        proxy.log()
    );

    // Not even YAML.
    proxy.write_config_raw("listeners: [ {{{ this is : not yaml\n");
    proxy.sighup();
    let text = proxy.wait_metric(
        "ringmesh_config_reloads_total{result=\"failure\"}",
        Duration::from_secs(5),
        |v| v >= 2.0,
    );
    assert_metric_line(&text, "ringmesh_config_reloads_total{result=\"failure\"} 2");
    assert_eq!(get(web, "localhost", "/").text(), "v1");
    assert_eq!(
        proxy.admin_get("/ready").unwrap().status,
        200,
        "still ready"
    );

    // A good config afterwards is applied.
    proxy.write_config(&direct(port, "v3"));
    proxy.sighup();
    assert!(
        wait_epoch_change(&proxy, e0),
        "good reload after failures not applied"
    );
    assert!(wait_until(Duration::from_secs(3), || get(
        web,
        "localhost",
        "/"
    )
    .text()
        == "v3"));
    let text = proxy.metrics();
    assert_metric_line(&text, "ringmesh_config_reloads_total{result=\"success\"} 1");
    assert_eq!(metric_value(&text, "ringmesh_config_epoch"), Some(e0 + 1.0));
}

fn listeners(entries: &[(&str, u16)]) -> String {
    let mut s = String::from("listeners:\n");
    for (name, port) in entries {
        s.push_str(&format!(
            r#"  - name: {name}
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            direct_response:
              status: 200
              body: "{name}"
"#
        ));
    }
    s.push_str("clusters: []\n");
    s
}

#[test]
fn reload_adds_and_removes_listeners() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let proxy = Proxy::start(&listeners(&[("web", pa), ("old", pb)]));
    assert_eq!(get(local(pa), "localhost", "/").text(), "web");
    assert_eq!(get(local(pb), "localhost", "/").text(), "old");
    assert!(connect_refused(local(pc)), "port {pc} unexpectedly in use");
    let (e0, _) = epochs(&proxy);

    proxy.write_config(&listeners(&[("web", pa), ("new", pc)]));
    proxy.sighup();
    assert!(
        wait_epoch_change(&proxy, e0),
        "reload not applied; log:\n{}",
        proxy.log()
    );

    let new_up = wait_until(Duration::from_secs(5), || {
        Conn::try_connect(local(pc))
            .ok()
            .and_then(|mut c| c.request(&Req::get("/")).ok())
            .is_some_and(|r| r.text() == "new")
    });
    assert!(new_up, "listener added by reload does not serve on {pc}");
    let old_gone = wait_until(Duration::from_secs(5), || connect_refused(local(pb)));
    assert!(old_gone, "listener removed by reload still accepts on {pb}");
    assert_eq!(
        get(local(pa), "localhost", "/").text(),
        "web",
        "unchanged listener keeps serving"
    );
    let text = proxy.metrics();
    assert!(
        text.contains("listener=\"new\""),
        "metrics know the new listener:\n{}",
        related_lines(&text, "ringmesh_downstream_connections_total")
    );
}

fn proxied(port: u16, body: &str, endpoints: &[SocketAddr]) -> String {
    format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: d
            match: {{ path: {{ exact: /d }} }}
            direct_response: {{ status: 200, body: "{body}" }}
          - name: p
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: c }}
clusters:
{}"#,
        cluster_yaml("c", endpoints)
    )
}

/// Upstream connections pooled before a reload are still used after it: for
/// an unchanged cluster, and for the endpoints a changed cluster kept.
#[test]
fn reload_keeps_upstream_pools() {
    let up1 = Upstream::start("one");
    let up2 = Upstream::start("two");
    let port = free_port();
    let proxy = Proxy::start_with(&proxied(port, "v1", &[up1.addr]), &["--workers", "1"]);
    let web = local(port);
    let mut c = Conn::connect(web);
    let hit = |c: &mut Conn, path: &str| {
        let r = c.request(&Req::get(path)).unwrap();
        assert_eq!(r.status, 200);
        r
    };
    for _ in 0..5 {
        hit(&mut c, "/p");
    }
    assert_eq!(up1.accepted(), 1);

    // Epoch 2: only a direct response changes; cluster `c` is the same.
    let (e0, _) = epochs(&proxy);
    proxy.write_config(&proxied(port, "v2", &[up1.addr]));
    proxy.sighup();
    assert!(
        wait_epoch_change(&proxy, e0),
        "reload not applied:\n{}",
        proxy.log()
    );
    assert_eq!(hit(&mut c, "/d").text(), "v2");
    for _ in 0..5 {
        hit(&mut c, "/p");
    }
    assert_eq!(
        up1.accepted(),
        1,
        "the pooled connection survived the epoch"
    );

    // Epoch 3: the cluster gains an endpoint; the kept one keeps its pool.
    let (e1, _) = epochs(&proxy);
    proxy.write_config(&proxied(port, "v3", &[up1.addr, up2.addr]));
    proxy.sighup();
    assert!(
        wait_epoch_change(&proxy, e1),
        "reload not applied:\n{}",
        proxy.log()
    );
    let mut seen = [0; 2];
    for _ in 0..6 {
        let r = hit(&mut c, "/p");
        seen[usize::from(r.upstream() == Some("two"))] += 1;
    }
    assert_eq!(seen, [3, 3], "round robin over both endpoints");
    assert_eq!(up1.accepted(), 1, "endpoint one kept its pooled connection");
    assert_eq!(up2.accepted(), 1);
    assert_metric_line(
        &proxy.metrics(),
        "ringmesh_upstream_pool_misses_total{cluster=\"c\"} 2",
    );
}

/// A listener removed and added back by two reloads that land within one
/// worker tick gets freshly bound SO_REUSEPORT sockets; every worker must
/// serve its new socket, or the kernel would queue a share of connections
/// where nobody accepts them.
#[test]
fn listener_removed_and_readded_quickly_still_answers_every_connection() {
    let (pa, pb) = (free_port(), free_port());
    let proxy = Proxy::start(&listeners(&[("web", pa), ("flap", pb)]));
    for round in 0..3 {
        let (e0, _) = epochs(&proxy);
        proxy.write_config(&listeners(&[("web", pa)]));
        proxy.sighup();
        assert!(wait_epoch_change(&proxy, e0), "round {round}: first reload");
        let (e1, _) = epochs(&proxy);
        proxy.write_config(&listeners(&[("web", pa), ("flap", pb)]));
        proxy.sighup();
        assert!(
            wait_epoch_change(&proxy, e1),
            "round {round}: second reload"
        );
        // Let every worker reach the latest epoch (its tick is 100 ms).
        std::thread::sleep(Duration::from_millis(250));
        for i in 0..40 {
            let mut c = Conn::connect(local(pb));
            c.set_read_timeout(Duration::from_secs(2));
            let r = c
                .request(&Req::get("/"))
                .unwrap_or_else(|e| panic!("round {round}, connection {i}: {e}\n{}", proxy.log()));
            assert_eq!(r.text(), "flap");
        }
    }
}
