//! The mesh end to end: the real `ringmesh-control` and one real
//! `ringmesh-proxy` process per service instance, on loopback, with HTTP
//! applications behind them and a request loop that must never see a failure.

mod mesh_support;
use mesh_support::*;

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

const SERVICES: &str = r#"services:
  - name: front
    ports: [{ name: http, port: 8080, protocol: http }]
    calls: [reviews]
  - name: reviews
    ports: [{ name: http, port: 9080, protocol: http }]
    subsets:
      - { name: v1, labels: { version: v1 } }
      - { name: v2, labels: { version: v2 } }
"#;

fn split(v1: u32, v2: u32) -> String {
    format!(
        r#"traffic:
  - name: reviews-split
    service: reviews
    routes:
      - name: split
        match: {{ path: {{ prefix: / }} }}
        split:
          - {{ subset: v1, weight: {v1} }}
          - {{ subset: v2, weight: {v2} }}
"#
    )
}

/// The `front` proxy plus two `reviews` instances (labelled v1 and v2), all
/// ready. Returns (apps, proxies) in that order: front, reviews-1, reviews-2.
fn mesh(dir: &std::path::Path, cp: &ControlPlane) -> (Vec<App>, Vec<MeshProxy>) {
    let apps = vec![App::start("front"), App::start("r1"), App::start("r2")];
    let specs = [
        ("front-1", "front", "version=v1"),
        ("reviews-1", "reviews", "version=v1"),
        ("reviews-2", "reviews", "version=v2"),
    ];
    let proxies: Vec<MeshProxy> = specs
        .iter()
        .zip(&apps)
        .map(|((id, svc, label), app)| {
            MeshProxy::start(
                dir,
                cp,
                NodeSpec {
                    id,
                    service: svc,
                    app_port: app.port,
                    labels: &[label],
                },
            )
        })
        .collect();
    for p in &proxies {
        p.wait_ready();
    }
    (apps, proxies)
}

/// The version of `ty` that node `id` last ACKed, per the control plane.
fn acked(cp: &ControlPlane, id: &str, ty: &str) -> String {
    cp.node(id)
        .and_then(|n| n["types"][ty]["acked_version"].as_str().map(String::from))
        .unwrap_or_default()
}

fn wait_acked_change(cp: &ControlPlane, id: &str, ty: &str, before: &str) -> String {
    let mut now = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            now = acked(cp, id, ty);
            !now.is_empty() && now != before
        }),
        "{id} never ACKed a new {ty} (still {before:?}); status: {}",
        cp.status()
    );
    now
}

#[test]
fn traffic_reaches_every_instance_and_a_stopped_one_leaves_without_a_failed_request() {
    let dir = scratch("discovery");
    let cp = ControlPlane::start(&dir, "3s");
    cp.write("services.yaml", SERVICES);
    let (_apps, mut proxies) = mesh(&dir, &cp);
    let front = proxies[0].outbound;

    // Every instance of `reviews` gets traffic through the front proxy.
    let load = Load::start(front, "reviews");
    load.wait_more(200);
    let t = load.snapshot();
    assert!(
        t.seen.get("r1").copied().unwrap_or(0) > 20 && t.seen.get("r2").copied().unwrap_or(0) > 20,
        "{t:?}"
    );
    let gone = proxies[2].inbound.to_string();
    assert!(proxies[0].config_dump().contains(&gone));

    // Stop one instance's proxy the way an orchestrator does.
    let stopped_at = Instant::now();
    proxies[2].proc.stop();
    thread::sleep(Duration::from_millis(1500));
    assert!(
        proxies[0].config_dump().contains(&gone),
        "removed before the 3 s grace period"
    );
    assert!(
        wait_until(Duration::from_secs(6), || !proxies[0]
            .config_dump()
            .contains(&gone)),
        "reviews-2 still in front-1's config 6 s after its grace period"
    );
    let took = stopped_at.elapsed();
    assert!(took >= Duration::from_secs(3), "removed after {took:?}");
    load.reset_seen();
    load.wait_more(100);
    let t = load.finish();
    assert_eq!(t.failures, Vec::<String>::new(), "failed requests");
    assert_eq!(
        t.seen.get("r2"),
        None,
        "traffic after removal: {:?}",
        t.seen
    );
    assert_eq!(cp.node("reviews-2"), None, "status still lists reviews-2");
    assert!(cp
        .metrics()
        .contains("ringmesh_control_connected_proxies 2\n"));
}

#[test]
fn a_split_changed_100_times_under_load_changes_traffic_and_fails_nothing() {
    let dir = scratch("split");
    let cp = ControlPlane::start(&dir, "10s");
    cp.write("services.yaml", SERVICES);
    cp.write("traffic.yaml", &split(100, 0));
    let (_apps, proxies) = mesh(&dir, &cp);
    let load = Load::start(proxies[0].outbound, "reviews");
    load.wait_more(50);
    let mut version = acked(&cp, "front-1", "route_table");
    for round in 0..100 {
        // 50/50: v2 starts answering.
        cp.write("traffic.yaml", &split(50, 50));
        version = wait_acked_change(&cp, "front-1", "route_table", &version);
        load.wait_more(2);
        load.reset_seen();
        assert!(
            wait_until(Duration::from_secs(10), || load
                .snapshot()
                .seen
                .contains_key("r2")),
            "round {round}: 50/50 never reached v2: {:?}",
            load.snapshot()
        );
        // Back to 100/0: v2 gets nothing.
        cp.write("traffic.yaml", &split(100, 0));
        version = wait_acked_change(&cp, "front-1", "route_table", &version);
        load.wait_more(2);
        load.reset_seen();
        load.wait_more(20);
        let seen = load.snapshot().seen;
        assert_eq!(
            seen.get("r2"),
            None,
            "round {round}: 100/0 still sent to v2: {seen:?}"
        );
    }
    let t = load.finish();
    assert_eq!(t.failures, Vec::<String>::new(), "failed requests");
    assert!(t.ok > 2000, "{} requests", t.ok);
}

#[test]
fn an_invalid_change_is_rejected_by_name_and_a_refused_push_shows_as_a_nack() {
    let dir = scratch("invalid");
    let cp = ControlPlane::start(&dir, "10s");
    cp.write("services.yaml", SERVICES);
    cp.write("traffic.yaml", &split(100, 0));
    let (_apps, proxies) = mesh(&dir, &cp);
    let load = Load::start(proxies[0].outbound, "reviews");
    load.wait_more(20);
    let before: Vec<String> = ["cluster", "endpoints", "listener", "route_table"]
        .iter()
        .map(|t| acked(&cp, "front-1", t))
        .collect();

    // A split to a subset nobody declared: rejected, named, not pushed.
    cp.write(
        "traffic.yaml",
        &split(100, 0).replace("subset: v2", "subset: v9"),
    );
    assert!(
        wait_until(Duration::from_secs(5), || !cp.status()["config_error"]
            .is_null()),
        "no config error reported; log:\n{}",
        cp.proc.log()
    );
    let e = &cp.status()["config_error"];
    assert!(
        e["file"].as_str().unwrap_or("").ends_with("traffic.yaml"),
        "{e}"
    );
    assert_eq!(e["field"], "traffic[0].routes[0].split[1].subset", "{e}");
    let (code, out) = cp.status_cli();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("traffic.yaml") && out.contains("split[1].subset"),
        "{out}"
    );
    assert!(cp
        .metrics()
        .contains("ringmesh_control_config_reloads_total{result=\"rejected\"} 1\n"));
    thread::sleep(Duration::from_millis(500));
    let after: Vec<String> = ["cluster", "endpoints", "listener", "route_table"]
        .iter()
        .map(|t| acked(&cp, "front-1", t))
        .collect();
    assert_eq!(before, after, "a rejected change reached the proxy");

    // A TCP service whose outbound port something else on front-1's host
    // already listens on: the control plane cannot know, the proxy must
    // refuse the listener.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    cp.write("traffic.yaml", &split(100, 0));
    cp.write(
        "services.yaml",
        &format!(
            "{}  - name: db\n    ports: [{{ name: pg, port: {port}, protocol: tcp }}]\n    endpoints: [{{ address: \"127.0.0.1:9\" }}]\n",
            SERVICES
                .replace("calls: [reviews]", "calls: [reviews, db]")
                .replace("protocol: http }]\n    subsets", "protocol: http }]\n    calls: []\n    subsets")
        ),
    );
    let mut nack = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            nack = cp.node("front-1").map_or(serde_json::Value::Null, |n| {
                n["types"]["listener"]["last_nack"].clone()
            });
            !nack.is_null()
        }),
        "no NACK recorded; status: {}",
        cp.status()
    );
    let msg = nack["message"].as_str().unwrap_or("");
    assert!(msg.contains(&port.to_string()), "NACK reason: {msg}");
    let (_, out) = cp.status_cli();
    assert!(
        out.contains("front-1") && out.contains(&port.to_string()),
        "{out}"
    );
    let m = cp.metrics();
    assert!(
        m.contains("ringmesh_control_nacks_total{type=\"listener\"} 1\n"),
        "{m}\n{}",
        cp.status()
    );
    // Only the listener was refused: the new cluster and its endpoints,
    // pushed with it, are in force.
    let front = cp.node("front-1").unwrap();
    for ty in ["cluster", "endpoints", "route_table"] {
        assert!(front["types"][ty]["last_nack"].is_null(), "{ty}: {front}");
    }
    assert!(proxies[0].config_dump().contains("db.default"));
    // A proxy that starts now gets the same unbindable listener: the rest
    // of its listeners are in force, it becomes ready and carries traffic.
    let app = App::start("front-2");
    let late = MeshProxy::start(
        &dir,
        &cp,
        NodeSpec {
            id: "front-2",
            service: "front",
            app_port: app.port,
            labels: &[],
        },
    );
    late.wait_ready();
    let r = http_get(late.outbound, "reviews", "/").expect("GET via front-2");
    assert_eq!((r.status, r.text()), (200, "r1".to_string()));
    let r = http_get(late.inbound, "front", "/").expect("GET front-2 inbound");
    assert_eq!((r.status, r.text()), (200, "front-2".to_string()));
    assert!(
        cp.node("front-2").unwrap()["types"]["listener"]["last_nack"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&port.to_string())
    );
    // front-1 keeps its last good listeners.
    assert_eq!(acked(&cp, "front-1", "listener"), before[2]);

    load.wait_more(50);
    let t = load.finish();
    assert_eq!(t.failures, Vec::<String>::new(), "failed requests");
    drop(squatter);
}

#[test]
fn killing_the_control_plane_fails_nothing_and_a_restart_resyncs() {
    let dir = scratch("restart");
    let cp = ControlPlane::start(&dir, "10s");
    cp.write("services.yaml", SERVICES);
    let (_apps, proxies) = mesh(&dir, &cp);
    let versions: Vec<String> = ["cluster", "endpoints", "listener", "route_table"]
        .iter()
        .map(|t| acked(&cp, "front-1", t))
        .collect();
    assert!(versions.iter().all(|v| !v.is_empty()), "{versions:?}");
    let load = Load::start(proxies[0].outbound, "reviews");
    load.wait_more(50);

    // The control plane vanishes: the proxies keep serving their last epoch.
    let mut cp = cp;
    cp.proc.kill();
    load.wait_more(300);
    assert_eq!(load.snapshot().failures, Vec::<String>::new());
    assert!(wait_until(Duration::from_secs(10), || proxies[0]
        .metrics()
        .contains("ringmesh_control_connected 0")));

    // Back on the same address with its state: every proxy reconnects,
    // reports what it runs, and nothing is re-pushed or emptied.
    let cp = cp.restart_after_kill(&dir);
    assert!(
        wait_until(Duration::from_secs(45), || {
            let s = cp.status();
            s["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["connected"] == true))
        }),
        "proxies did not reconnect: {}",
        cp.status()
    );
    let now: Vec<String> = ["cluster", "endpoints", "listener", "route_table"]
        .iter()
        .map(|t| acked(&cp, "front-1", t))
        .collect();
    assert_eq!(versions, now, "the resynced versions differ");
    load.reset_seen();
    load.wait_more(200);
    let t = load.finish();
    assert_eq!(t.failures, Vec::<String>::new(), "failed requests");
    assert!(
        t.seen.contains_key("r1") && t.seen.contains_key("r2"),
        "{:?}",
        t.seen
    );
}
