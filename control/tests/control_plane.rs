//! The control plane as a process, with tonic clients as proxies: push
//! order, versions and nonces, discovery and the grace period, ACK/NACK
//! records, resubscribe, config changes, health, reflection, metrics.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ringmesh_proto::v1::{resource::Kind, route, DiscoveryRequest, ResourceType};

const SERVICES: &str = "\
services:
  - name: a
    ports:
      - {name: http, port: 8080, protocol: http}
    calls: [b]
  - name: b
    ports:
      - {name: http, port: 9080, protocol: http}
    subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v2, labels: {version: v2}}
    calls: []
";

fn traffic(v1: u32, v2: u32) -> String {
    format!(
        "\
traffic:
  - name: b-split
    service: b
    routes:
      - name: split
        match: {{path: {{prefix: /}}}}
        split:
          - {{subset: v1, weight: {v1}}}
          - {{subset: v2, weight: {v2}}}
"
    )
}

fn start(args: &[&str]) -> ControlPlane {
    ControlPlane::start(
        &[
            ("services.yaml", SERVICES),
            ("traffic.yaml", &traffic(100, 0)),
        ],
        args,
    )
}

const SECS5: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_gets_four_types_in_order_and_acks_are_recorded() {
    let cp = start(&[]);
    let mut a = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    let first = a.start().await;
    let mut nonces: Vec<&str> = first.iter().map(|r| r.nonce.as_str()).collect();
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "a fresh nonce per response");
    for r in &first {
        assert_eq!(r.version_info.len(), 16);
    }
    assert_eq!(
        names(&first[0]),
        [
            "b.default:9080",
            "b.default:9080/v1",
            "b.default:9080/v2",
            "inbound:8080"
        ]
    );
    assert_eq!(names(&first[2]), ["inbound:8080", "outbound"]);
    assert_eq!(names(&first[3]), ["inbound:8080", "outbound"]);

    let s = cp
        .wait_status("ACKs", |s| {
            s["nodes"][0]["types"]["route_table"]["acked_version"].is_string()
        })
        .await;
    let n = &s["nodes"][0];
    assert_eq!(n["id"], "a-1");
    assert_eq!(n["service"], "a");
    assert_eq!(n["namespace"], "default");
    assert_eq!(n["address"], "127.0.0.11");
    assert_eq!(n["connected"], true);
    assert!(n["disconnected_at"].is_null());
    for (key, r) in ["cluster", "endpoints", "listener", "route_table"]
        .iter()
        .zip(&first)
    {
        assert_eq!(n["types"][key]["sent_version"], r.version_info.as_str());
        assert_eq!(n["types"][key]["acked_version"], r.version_info.as_str());
        assert!(n["types"][key]["last_nack"].is_null());
    }
    // Nothing more: the node's own registration was in the first push.
    a.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_become_endpoints_and_leave_after_the_grace_period() {
    let cp = start(&["--grace-period", "1s"]);
    let mut a = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    let first = a.start().await;
    assert!(endpoint_addresses(&first[1], "b.default:9080").is_empty());

    let mut b1 = Proxy::open(
        &cp.url(),
        node("b-1", "b", "127.0.0.21", &[("version", "v1")]),
    )
    .await;
    b1.start().await;
    let r = a.recv(SECS5).await;
    assert_eq!(
        r.r#type(),
        ResourceType::Endpoints,
        "only endpoints change for a"
    );
    assert_eq!(
        endpoint_addresses(&r, "b.default:9080"),
        ["127.0.0.21:15006"]
    );
    a.ack(&r).await;

    let mut b2 = Proxy::open(
        &cp.url(),
        node("b-2", "b", "127.0.0.22", &[("version", "v2")]),
    )
    .await;
    b2.start().await;
    let r = a.recv(SECS5).await;
    assert_eq!(r.r#type(), ResourceType::Endpoints);
    assert_eq!(
        endpoint_addresses(&r, "b.default:9080"),
        ["127.0.0.21:15006", "127.0.0.22:15006"]
    );
    assert_eq!(
        endpoint_addresses(&r, "b.default:9080/v1"),
        ["127.0.0.21:15006"]
    );
    assert_eq!(
        endpoint_addresses(&r, "b.default:9080/v2"),
        ["127.0.0.22:15006"]
    );
    a.ack(&r).await;
    let metrics = cp.metrics();
    assert!(metrics
        .lines()
        .any(|l| l == "ringmesh_control_endpoints{service=\"b.default\"} 2"));
    assert!(metrics
        .lines()
        .any(|l| l == "ringmesh_control_connected_proxies 3"));

    // b-2's proxy goes away: its endpoint stays for the grace period...
    drop(b2);
    let gone = Instant::now();
    cp.wait_status("b-2 disconnected", |s| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "b-2" && n["connected"] == false)
    })
    .await;
    a.expect_nothing(Duration::from_millis(600)).await;
    // ...then it is removed and pushed.
    let r = a.recv(SECS5).await;
    assert!(
        gone.elapsed() >= Duration::from_millis(900),
        "{:?}",
        gone.elapsed()
    );
    assert_eq!(r.r#type(), ResourceType::Endpoints);
    assert_eq!(
        endpoint_addresses(&r, "b.default:9080"),
        ["127.0.0.21:15006"]
    );
    assert!(endpoint_addresses(&r, "b.default:9080/v2").is_empty());
    a.ack(&r).await;
    let s = cp.status();
    assert!(!s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["id"] == "b-2"));

    // A reconnect within the grace period cancels the removal.
    drop(b1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b1 = Proxy::open(
        &cp.url(),
        node("b-1", "b", "127.0.0.21", &[("version", "v1")]),
    )
    .await;
    b1.start().await;
    a.expect_nothing(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_shows_in_status_json_and_the_status_command() {
    let cp = start(&[]);
    let mut a = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    a.subscribe(["", "", "", ""]).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(a.recv(SECS5).await);
    }
    for r in &got[..3] {
        a.ack(r).await;
    }
    a.nack(
        &got[3],
        "",
        "route outbound: unknown cluster \"b.default:9080/v9\"",
    )
    .await;
    let s = cp
        .wait_status("NACK", |s| {
            !s["nodes"][0]["types"]["route_table"]["last_nack"].is_null()
        })
        .await;
    let nack = &s["nodes"][0]["types"]["route_table"]["last_nack"];
    assert_eq!(nack["version"], got[3].version_info.as_str());
    assert_eq!(
        nack["message"],
        "route outbound: unknown cluster \"b.default:9080/v9\""
    );
    assert!(nack["at"].as_u64().unwrap() > 1_600_000_000);
    assert!(s["nodes"][0]["types"]["route_table"]["acked_version"].is_null());
    let metrics = cp.metrics();
    assert!(metrics
        .lines()
        .any(|l| l == "ringmesh_control_nacks_total{type=\"route_table\"} 1"));
    assert!(metrics
        .lines()
        .any(|l| l == "ringmesh_control_acks_total{type=\"listener\"} 1"));

    let out = Command::new(BIN)
        .args(["status", "--admin", &cp.admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("a-1"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains("a.default") && row.contains("connected"),
        "{row}"
    );
    assert!(row.contains(&got[0].version_info[..8]), "{row}");
    assert!(
        row.contains(&format!("route_table {}", &got[3].version_info[..8]))
            && row.ends_with("route outbound: unknown cluster \"b.default:9080/v9\""),
        "{row}"
    );
    let json = Command::new(BIN)
        .args(["status", "--json", "--admin", &cp.admin.to_string()])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["nodes"][0]["id"], "a-1");
    // The refused version is not sent again.
    a.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribe_with_current_versions_gets_nothing_and_replaces_the_old_stream() {
    let cp = start(&[]);
    let mut a = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    let first = a.start().await;
    let v: Vec<&str> = first.iter().map(|r| r.version_info.as_str()).collect();

    let mut again = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    again.subscribe([v[0], v[1], v[2], v[3]]).await;
    again.expect_nothing(Duration::from_millis(500)).await;
    let old = a.recv_error(SECS5).await;
    assert_eq!(old.code(), tonic::Code::Aborted, "{old:?}");
    let s = cp.status();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(s["nodes"][0]["connected"], true);
    assert_eq!(s["nodes"][0]["types"]["listener"]["acked_version"], v[2]);

    // An out-of-date version of one type: only that type is sent.
    let mut third = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    third
        .subscribe([v[0], "0000000000000000", v[2], v[3]])
        .await;
    let r = third.recv(SECS5).await;
    assert_eq!(r.r#type(), ResourceType::Endpoints);
    assert_eq!(r.version_info, v[1]);
    third.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_change_pushes_only_route_tables_and_a_bad_change_is_rejected() {
    let cp = start(&[]);
    let mut a = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    a.start().await;

    cp.write("traffic.yaml", &traffic(50, 50));
    let r = a.recv(SECS5).await;
    assert_eq!(r.r#type(), ResourceType::RouteTable);
    let out = r.resources.iter().find(|x| x.name == "outbound").unwrap();
    let Some(Kind::RouteTable(rt)) = &out.kind else {
        panic!()
    };
    let Some(route::Action::Forward(f)) = &rt.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    let weights: Vec<u32> = f.clusters.iter().map(|c| c.weight).collect();
    assert_eq!(weights, [50, 50]);
    a.ack(&r).await;
    a.expect_nothing(Duration::from_millis(300)).await;
    let version = cp.status()["mesh_version"].clone();

    // Invalid: a split to a subset that does not exist.
    cp.write(
        "traffic.yaml",
        &traffic(50, 50).replace("subset: v2", "subset: v9"),
    );
    let s = cp
        .wait_status("config error", |s| !s["config_error"].is_null())
        .await;
    let e = &s["config_error"];
    assert!(e["file"].as_str().unwrap().ends_with("traffic.yaml"), "{e}");
    assert!(e["line"].as_u64().is_some(), "{e}");
    assert!(e["field"].as_str().unwrap().contains("split"), "{e}");
    assert_eq!(s["mesh_version"], version, "the last good mesh stays");
    a.expect_nothing(Duration::from_millis(300)).await;
    assert!(cp.logs().contains("config rejected: "), "{}", cp.logs());
    let text = String::from_utf8(
        Command::new(BIN)
            .args(["status", "--admin", &cp.admin.to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        text.contains("config: REJECTED: ") && text.contains("traffic.yaml:"),
        "{text}"
    );

    // Fixed again: the error clears; same content as before, no push.
    cp.write("traffic.yaml", &traffic(50, 50));
    cp.wait_status("error cleared", |s| s["config_error"].is_null())
        .await;
    a.expect_nothing(Duration::from_millis(300)).await;
    let m = cp.metrics();
    assert!(
        m.lines()
            .any(|l| l == "ringmesh_control_config_reloads_total{result=\"rejected\"} 1"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == "ringmesh_control_config_reloads_total{result=\"ok\"} 2"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == "ringmesh_control_pushes_total{type=\"route_table\"} 2"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == "ringmesh_control_pushes_total{type=\"cluster\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_nodes_are_refused_and_unknown_services_get_empty_resources() {
    let cp = start(&[]);
    let mut p = Proxy::open(&cp.url(), node("", "a", "127.0.0.11", &[])).await;
    p.subscribe(["", "", "", ""]).await;
    let st = p.recv_error(SECS5).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert_eq!(st.message(), "node.id is required");

    let mut p = Proxy::open(&cp.url(), node("x", "a", "127.0.0.11", &[])).await;
    p.send(DiscoveryRequest {
        node: None,
        r#type: ResourceType::Cluster as i32,
        ..Default::default()
    })
    .await;
    let st = p.recv_error(SECS5).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert!(st.message().contains("must carry the node"), "{st:?}");

    // A type this server does not know is ignored, not fatal.
    let mut p = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    p.send(DiscoveryRequest {
        node: Some(p.node.clone()),
        r#type: 42,
        ..Default::default()
    })
    .await;
    p.start().await;
    // Another node id on the same stream is refused.
    p.send(DiscoveryRequest {
        node: Some(node("a-2", "a", "127.0.0.11", &[])),
        r#type: ResourceType::Cluster as i32,
        ..Default::default()
    })
    .await;
    let st = p.recv_error(SECS5).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert!(st.message().contains("a stream serves one node"), "{st:?}");

    let mut z = Proxy::open(&cp.url(), node("z-1", "zzz", "127.0.0.99", &[])).await;
    for r in z.start().await {
        assert!(r.resources.is_empty(), "{r:?}");
    }
    let s = cp
        .wait_status("z-1", |s| s["nodes"][1]["problem"].is_string())
        .await;
    assert_eq!(s["nodes"][1]["id"], "z-1");
    assert!(s["nodes"][1]["problem"]
        .as_str()
        .unwrap()
        .contains("zzz.default is not declared"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metric_lines() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let cp = start(&[]);
    let channel = tonic::transport::Channel::from_shared(cp.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "ringmesh.v1.AggregatedDiscovery"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"ringmesh.v1.AggregatedDiscovery"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let mut a = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    a.start().await;
    cp.wait_status("ACK", |s| {
        s["nodes"][0]["types"]["route_table"]["acked_version"].is_string()
    })
    .await;
    let m = cp.metrics();
    for line in [
        "# TYPE ringmesh_control_connected_proxies gauge",
        "ringmesh_control_connected_proxies 1",
        "ringmesh_control_pushes_total{type=\"cluster\"} 1",
        "ringmesh_control_pushes_total{type=\"endpoints\"} 1",
        "ringmesh_control_pushes_total{type=\"listener\"} 1",
        "ringmesh_control_pushes_total{type=\"route_table\"} 1",
        "ringmesh_control_acks_total{type=\"cluster\"} 1",
        "ringmesh_control_acks_total{type=\"route_table\"} 1",
        "ringmesh_control_nacks_total{type=\"cluster\"} 0",
        "# TYPE ringmesh_control_push_latency_seconds histogram",
        "ringmesh_control_push_latency_seconds_bucket{le=\"+Inf\"} 4",
        "ringmesh_control_push_latency_seconds_count 4",
        "ringmesh_control_config_reloads_total{result=\"ok\"} 0",
        "ringmesh_control_config_reloads_total{result=\"rejected\"} 0",
        "ringmesh_control_endpoints{service=\"a.default\"} 1",
        "ringmesh_control_endpoints{service=\"b.default\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    assert_eq!(
        ringmesh_control::admin::get(&cp.admin.to_string(), "/ready").unwrap(),
        "ready\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_registered_instances_as_endpoints() {
    let mut cp = start(&[]);
    let mut b1 = Proxy::open(
        &cp.url(),
        node("b-1", "b", "127.0.0.21", &[("version", "v1")]),
    )
    .await;
    b1.start().await;
    cp.wait_status("b-1", |s| s["nodes"][0]["id"] == "b-1")
        .await;
    // Saved within the rebuild interval.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = cp.stop();
    assert!(st.success(), "{st:?}\n{}", cp.logs());
    let old = b1.recv_error(SECS5).await;
    assert_eq!(old.code(), tonic::Code::Unavailable, "{old:?}");
    let nodes = std::fs::read_to_string(cp.data_dir.join("nodes.json")).unwrap();
    assert!(nodes.contains("\"b-1\""), "{nodes}");

    cp.spawn();
    let s = cp.status();
    assert_eq!(s["nodes"][0]["id"], "b-1");
    assert_eq!(s["nodes"][0]["connected"], false);
    // A caller that connects before b-1 returns still sees it.
    let mut a = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.11", &[])).await;
    let first = a.start().await;
    assert_eq!(
        endpoint_addresses(&first[1], "b.default:9080"),
        ["127.0.0.21:15006"]
    );
}

#[test]
fn an_invalid_initial_config_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("services.yaml"),
        "services:\n  - name: a\n    ports: []\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config-dir")
        .arg(tmp.path())
        .args([
            "--listen",
            &free_port().to_string(),
            "--admin",
            &free_port().to_string(),
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("invalid config: ") && err.contains("services.yaml:"),
        "{err}"
    );
}

#[test]
fn status_says_when_the_admin_endpoint_is_unreachable() {
    let out = Command::new(BIN)
        .args(["status", "--admin", &free_port().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot reach the control plane's admin endpoint"),
        "{err}"
    );
}
