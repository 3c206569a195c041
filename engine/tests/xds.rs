//! Control mode (`--control`): the real `ringmesh-proxy` against a fake
//! control plane written here (a tonic `AggregatedDiscovery` server with
//! scripted responses), over real gRPC and real sockets: subscription order
//! and node, readiness, ACK/NACK, cluster retention, losing and regaining the
//! control plane, SIGHUP and SIGTERM.

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringmesh_proto::v1 as pb;
use ringmesh_proto::v1::aggregated_discovery_server::{
    AggregatedDiscovery, AggregatedDiscoveryServer,
};
use ringmesh_proto::v1::resource::Kind as PbKind;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

type Outbound = mpsc::UnboundedSender<Result<pb::DiscoveryResponse, tonic::Status>>;

#[derive(Default)]
struct Recorded {
    /// Every request received: (stream number, request).
    requests: Vec<(usize, pb::DiscoveryRequest)>,
    streams: Vec<Outbound>,
}

#[derive(Clone, Default)]
struct Svc(Arc<Mutex<Recorded>>);

#[tonic::async_trait]
impl AggregatedDiscovery for Svc {
    type StreamResourcesStream =
        UnboundedReceiverStream<Result<pb::DiscoveryResponse, tonic::Status>>;

    async fn stream_resources(
        &self,
        request: tonic::Request<tonic::Streaming<pb::DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamResourcesStream>, tonic::Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = {
            let mut r = self.0.lock().unwrap();
            r.streams.push(tx);
            r.streams.len() - 1
        };
        let mut inbound = request.into_inner();
        let rec = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                rec.lock().unwrap().requests.push((stream, m));
            }
        });
        Ok(tonic::Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// A fake control plane on its own thread and runtime. Dropping it (or
/// `kill`) closes the listener and every stream at once, like a crash.
struct FakeCp {
    addr: SocketAddr,
    rec: Arc<Mutex<Recorded>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeCp {
    fn start(addr: SocketAddr) -> FakeCp {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let rec = Arc::new(Mutex::new(Recorded::default()));
        let svc = Svc(rec.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let serve = tonic::transport::Server::builder()
                    .serve_with_incoming(AggregatedDiscoveryServer::new(svc), incoming);
                tokio::select! {
                    r = serve => r.unwrap(),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task: sockets close.
            drop(rt);
        });
        FakeCp {
            addr,
            rec,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn requests(&self) -> Vec<(usize, pb::DiscoveryRequest)> {
        self.rec.lock().unwrap().requests.clone()
    }

    fn streams(&self) -> usize {
        self.rec.lock().unwrap().streams.len()
    }

    /// Sends on the newest stream.
    fn push(&self, resp: pb::DiscoveryResponse) {
        let r = self.rec.lock().unwrap();
        let tx = r.streams.last().expect("no stream open");
        tx.send(Ok(resp)).expect("stream closed");
    }

    /// Waits for the first request matching `f`.
    fn wait_request(
        &self,
        what: &str,
        f: impl Fn(usize, &pb::DiscoveryRequest) -> bool,
    ) -> pb::DiscoveryRequest {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, r)) = self.requests().into_iter().find(|(s, r)| f(*s, r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no request {what}; got:\n{:#?}",
                self.requests()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The four subscribe requests of stream `stream`, in arrival order.
    fn wait_subscribes(&self, stream: usize) -> Vec<pb::DiscoveryRequest> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let subs: Vec<pb::DiscoveryRequest> = self
                .requests()
                .into_iter()
                .filter(|(s, r)| *s == stream && r.response_nonce.is_empty())
                .map(|(_, r)| r)
                .collect();
            if subs.len() >= 4 {
                return subs;
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream}: only {} subscribe(s): {subs:#?}",
                subs.len()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pushes `resp` and waits for its answer (ACK or NACK).
    fn push_and_wait(&self, resp: pb::DiscoveryResponse) -> pb::DiscoveryRequest {
        let nonce = resp.nonce.clone();
        self.push(resp);
        self.wait_request(&format!("answering nonce {nonce}"), |_, r| {
            r.response_nonce == nonce
        })
    }
}

impl Drop for FakeCp {
    fn drop(&mut self) {
        self.kill();
    }
}

// ----- resources -------------------------------------------------------------

fn response(
    t: pb::ResourceType,
    version: &str,
    resources: Vec<(&str, PbKind)>,
) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        r#type: t as i32,
        version_info: version.into(),
        nonce: format!("{}-{version}-{}", t.as_str_name(), fastrand::u32(..)),
        resources: resources
            .into_iter()
            .map(|(name, kind)| pb::Resource {
                name: name.into(),
                kind: Some(kind),
            })
            .collect(),
    }
}

fn clusters(version: &str, names: &[&str]) -> pb::DiscoveryResponse {
    response(
        pb::ResourceType::Cluster,
        version,
        names
            .iter()
            .map(|n| {
                (
                    *n,
                    PbKind::Cluster(pb::Cluster {
                        name: (*n).into(),
                        connect_timeout: Some(prost_types::Duration {
                            seconds: 1,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                )
            })
            .collect(),
    )
}

fn endpoints(version: &str, eps: &[(&str, &[SocketAddr])]) -> pb::DiscoveryResponse {
    response(
        pb::ResourceType::Endpoints,
        version,
        eps.iter()
            .map(|(n, addrs)| {
                (
                    *n,
                    PbKind::Endpoints(pb::ClusterEndpoints {
                        cluster: (*n).into(),
                        endpoints: addrs
                            .iter()
                            .map(|a| pb::Endpoint {
                                address: a.to_string(),
                                node_id: "up-1".into(),
                                zone: "z1".into(),
                                mtls: false,
                            })
                            .collect(),
                    }),
                )
            })
            .collect(),
    )
}

fn listeners(version: &str, port: u16) -> pb::DiscoveryResponse {
    response(
        pb::ResourceType::Listener,
        version,
        vec![(
            "outbound",
            PbKind::Listener(pb::Listener {
                name: "outbound".into(),
                address: local(port).to_string(),
                protocol: pb::Protocol::Http as i32,
                direction: pb::Direction::Outbound as i32,
                route_table: "outbound".into(),
                ..Default::default()
            }),
        )],
    )
}

/// Route table `outbound`: everything to `cluster`, named `route`.
fn routes(version: &str, route: &str, cluster: &str) -> pb::DiscoveryResponse {
    response(
        pb::ResourceType::RouteTable,
        version,
        vec![(
            "outbound",
            PbKind::RouteTable(pb::RouteTable {
                name: "outbound".into(),
                virtual_hosts: vec![pb::VirtualHost {
                    name: "all".into(),
                    domains: vec!["*".into()],
                    routes: vec![pb::Route {
                        name: route.into(),
                        r#match: Some(pb::RouteMatch {
                            path: Some(pb::route_match::Path::Prefix("/".into())),
                            ..Default::default()
                        }),
                        action: Some(pb::route::Action::Forward(pb::ForwardAction {
                            clusters: vec![pb::WeightedCluster {
                                cluster: cluster.into(),
                                weight: 1,
                            }],
                            ..Default::default()
                        })),
                        response_headers_to_add: vec![pb::HeaderValue {
                            name: "x-route".into(),
                            value: route.into(),
                        }],
                        ..Default::default()
                    }],
                }],
            }),
        )],
    )
}

fn assert_ack(answer: &pb::DiscoveryRequest, resp_version: &str) {
    assert!(answer.error_detail.is_none(), "NACK: {answer:?}");
    assert_eq!(answer.version_info, resp_version, "{answer:?}");
    assert!(
        answer.node.is_none(),
        "only the first request carries the node"
    );
}

/// A proxy in control mode plus what it talks to.
struct Setup {
    cp: FakeCp,
    proxy: Proxy,
    upstream: Upstream,
    port: u16,
}

fn node_args<'a>(cp: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--control", cp, "--node-id", "web-1", "--service", "web"];
    v.extend_from_slice(extra);
    v
}

/// Starts a fake control plane and a proxy (bootstrap: the admin section
/// only), pushes the four types (v1) and waits for ready.
fn setup() -> Setup {
    let cp = FakeCp::start(local(free_port()));
    let url = cp.url();
    let proxy = Proxy::spawn("", &node_args(&url, &[]));
    cp.wait_subscribes(0);
    let upstream = Upstream::start("u1");
    let port = free_port();
    for (resp, v) in [
        (clusters("c1", &["up"]), "c1"),
        (endpoints("e1", &[("up", &[upstream.addr])]), "e1"),
        (listeners("l1", port), "l1"),
        (routes("r1", "main", "up"), "r1"),
    ] {
        assert_ack(&cp.push_and_wait(resp), v);
    }
    proxy.wait_ready(Duration::from_secs(10));
    Setup {
        cp,
        proxy,
        upstream,
        port,
    }
}

fn get_ok(port: u16) -> Response {
    let r = get(local(port), "svc", "/hello");
    assert_eq!(r.status, 200, "{:?}", r.text());
    r
}

fn dump_cluster<'a>(dump: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    dump["config"]["clusters"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

// ----- tests -------------------------------------------------------------------

#[test]
fn subscribes_in_order_with_the_node_acks_after_publishing_and_serves() {
    let cp = FakeCp::start(local(free_port()));
    let url = cp.url();
    let (inb, outb) = (free_port().to_string(), free_port().to_string());
    let proxy = Proxy::spawn(
        "",
        &node_args(
            &url,
            &[
                "--namespace",
                "prod",
                "--address",
                "127.0.0.1",
                "--inbound-port",
                &inb,
                "--outbound-port",
                &outb,
                "--app-port",
                "8080",
                "--label",
                "version=v1",
                "--label",
                "track=stable",
                "--zone",
                "z1",
            ],
        ),
    );
    let subs = cp.wait_subscribes(0);
    let types: Vec<i32> = subs.iter().map(|r| r.r#type).collect();
    assert_eq!(
        types,
        [
            pb::ResourceType::Cluster as i32,
            pb::ResourceType::Endpoints as i32,
            pb::ResourceType::Listener as i32,
            pb::ResourceType::RouteTable as i32
        ]
    );
    assert!(subs
        .iter()
        .all(|r| r.version_info.is_empty() && r.error_detail.is_none()));
    let node = subs[0]
        .node
        .as_ref()
        .expect("the first request carries the node");
    assert!(subs[1..].iter().all(|r| r.node.is_none()));
    assert_eq!(node.id, "web-1");
    assert_eq!(node.service, "web");
    assert_eq!(node.namespace, "prod");
    assert_eq!(node.address, "127.0.0.1");
    assert_eq!(node.zone, "z1");
    assert_eq!(node.labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(node.labels.get("track").map(String::as_str), Some("stable"));
    let ports: Vec<(String, u32)> = node
        .ports
        .iter()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    assert_eq!(
        ports,
        [
            ("inbound".to_string(), inb.parse().unwrap()),
            ("outbound".to_string(), outb.parse().unwrap()),
            ("app".to_string(), 8080)
        ]
    );

    // Not ready before the first complete config.
    assert_eq!(proxy.admin_get("/ready").unwrap().status, 503);
    proxy.wait_metric("ringmesh_control_connected", Duration::from_secs(10), |v| {
        v == 1.0
    });

    let upstream = Upstream::start("u1");
    let port: u16 = outb.parse().unwrap();
    // The first three types alone are not a complete config.
    let c = clusters("c1", &["up"]);
    let c_nonce = c.nonce.clone();
    let ack = cp.push_and_wait(c);
    assert_ack(&ack, "c1");
    assert_eq!(ack.response_nonce, c_nonce);
    assert_eq!(ack.r#type, pb::ResourceType::Cluster as i32);
    assert_ack(
        &cp.push_and_wait(endpoints("e1", &[("up", &[upstream.addr])])),
        "e1",
    );
    assert_ack(&cp.push_and_wait(listeners("l1", port)), "l1");
    assert_eq!(proxy.admin_get("/ready").unwrap().status, 503);
    // The ACK comes after the epoch is published: traffic flows at once.
    assert_ack(&cp.push_and_wait(routes("r1", "main", "up")), "r1");
    let r = get_ok(port);
    assert_eq!(r.upstream(), Some("u1"));
    assert_eq!(r.header("x-route"), Some("main"));
    proxy.wait_ready(Duration::from_secs(10));

    let dump = proxy.config_dump();
    assert_eq!(dump["control"]["connected"], true, "{dump:#}");
    assert_eq!(dump["control"]["node_id"], "web-1");
    for (k, v) in [
        ("cluster", "c1"),
        ("endpoints", "e1"),
        ("listener", "l1"),
        ("route_table", "r1"),
    ] {
        assert_eq!(dump["control"]["versions"][k], v, "{dump:#}");
    }
    let up = dump_cluster(&dump, "up").expect("cluster up in /config_dump");
    assert_eq!(up["endpoints"][0], upstream.addr.to_string());

    let m = proxy.metrics();
    assert_metric_line(&m, "ringmesh_control_connected 1");
    for t in ["cluster", "endpoints", "listener", "route_table"] {
        assert_metric_line(
            &m,
            &format!("ringmesh_control_updates_total{{type=\"{t}\",result=\"ack\"}} 1"),
        );
        assert_metric_line(
            &m,
            &format!("ringmesh_control_updates_total{{type=\"{t}\",result=\"nack\"}} 0"),
        );
    }
}

#[test]
fn a_route_to_an_unknown_cluster_is_nacked_and_the_old_epoch_keeps_serving() {
    let s = setup();
    let epoch = s.proxy.config_dump()["epoch"].as_u64().unwrap();
    let bad = routes("r2", "canary", "x");
    let nonce = bad.nonce.clone();
    let nack = s.cp.push_and_wait(bad);
    assert_eq!(nack.response_nonce, nonce);
    assert_eq!(
        nack.version_info, "r1",
        "a NACK carries the version still in force"
    );
    let err = nack.error_detail.expect("a NACK has error_detail");
    assert_eq!(err.code, 3);
    assert_eq!(
        err.message,
        "route_table \"outbound\": route \"canary\": unknown cluster \"x\""
    );

    let r = get_ok(s.port);
    assert_eq!(r.header("x-route"), Some("main"));
    let dump = s.proxy.config_dump();
    assert_eq!(dump["epoch"].as_u64().unwrap(), epoch, "no new epoch");
    assert_eq!(dump["control"]["versions"]["route_table"], "r1");
    assert_eq!(
        dump["control"]["last_nack"]["route_table"],
        err.message.as_str()
    );
    assert_metric_line(
        &s.proxy.metrics(),
        "ringmesh_control_updates_total{type=\"route_table\",result=\"nack\"} 1",
    );

    // A refused protocol, too.
    let mut h2 = listeners("l2", s.port);
    if let Some(PbKind::Listener(l)) = &mut h2.resources[0].kind {
        l.set_protocol(pb::Protocol::Http2);
    }
    let nack = s.cp.push_and_wait(h2);
    assert_eq!(nack.version_info, "l1");
    assert_eq!(
        nack.error_detail.unwrap().message,
        "listener \"outbound\": protocol HTTP2 is not supported yet"
    );

    // And a good update after the bad ones applies.
    assert_ack(&s.cp.push_and_wait(routes("r3", "again", "up")), "r3");
    assert_eq!(get_ok(s.port).header("x-route"), Some("again"));
}

#[test]
fn a_dropped_cluster_that_routes_still_name_is_kept_until_they_stop() {
    let s = setup();
    let other = Upstream::start("u2");
    // The control plane drops `up` (and its endpoints) but the route still
    // names it: the proxy keeps it with its last endpoints.
    assert_ack(&s.cp.push_and_wait(clusters("c2", &["other"])), "c2");
    assert_ack(
        &s.cp
            .push_and_wait(endpoints("e2", &[("other", &[other.addr])])),
        "e2",
    );
    for _ in 0..5 {
        assert_eq!(get_ok(s.port).upstream(), Some("u1"));
    }
    let dump = s.proxy.config_dump();
    let up = dump_cluster(&dump, "up").expect("up is retained");
    assert_eq!(up["endpoints"][0], s.upstream.addr.to_string());
    assert!(dump_cluster(&dump, "other").is_some());

    // The routes move to `other`: `up` goes.
    assert_ack(&s.cp.push_and_wait(routes("r2", "moved", "other")), "r2");
    let r = get_ok(s.port);
    assert_eq!(r.upstream(), Some("u2"));
    let dump = s.proxy.config_dump();
    assert!(dump_cluster(&dump, "up").is_none(), "{dump:#}");

    // Now that nothing keeps it, naming `up` again is refused.
    let nack = s.cp.push_and_wait(routes("r3", "back", "up"));
    assert_eq!(
        nack.error_detail.unwrap().message,
        "route_table \"outbound\": route \"back\": unknown cluster \"up\""
    );
    assert_eq!(nack.version_info, "r2");
}

#[test]
fn losing_the_control_plane_keeps_the_epoch_and_a_restart_resyncs() {
    let mut s = setup();
    let addr = s.cp.addr;
    let epoch = s.proxy.config_dump()["epoch"].as_u64().unwrap();
    s.cp.kill();
    s.proxy
        .wait_metric("ringmesh_control_connected", Duration::from_secs(10), |v| {
            v == 0.0
        });
    // Traffic continues on the last good epoch while it is gone.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(get_ok(s.port).upstream(), Some("u1"));
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        s.proxy.admin_get("/ready").unwrap().status,
        200,
        "still ready"
    );
    let dump = s.proxy.config_dump();
    assert_eq!(dump["epoch"].as_u64().unwrap(), epoch);
    assert_eq!(dump["control"]["connected"], false);

    // Back on the same address: the proxy reconnects and subscribes with
    // the versions it runs.
    let cp = FakeCp::start(addr);
    let subs = cp.wait_subscribes(0);
    let versions: Vec<&str> = subs.iter().map(|r| r.version_info.as_str()).collect();
    assert_eq!(versions, ["c1", "e1", "l1", "r1"]);
    assert_eq!(subs[0].node.as_ref().map(|n| n.id.as_str()), Some("web-1"));
    s.proxy
        .wait_metric("ringmesh_control_connected", Duration::from_secs(10), |v| {
            v == 1.0
        });
    assert_eq!(cp.streams(), 1);

    // And it takes updates on the new stream.
    assert_ack(&cp.push_and_wait(routes("r2", "after", "up")), "r2");
    assert_eq!(get_ok(s.port).header("x-route"), Some("after"));
    let log = s.proxy.log();
    assert!(log.contains("control plane stream ended"), "{log}");
    assert!(log.contains("reconnected to control plane"), "{log}");
}

#[test]
fn starts_before_the_control_plane_without_a_bootstrap_file() {
    let cp_addr = local(free_port());
    let admin = local(free_port());
    let url = format!("http://{cp_addr}");
    let admin_s = admin.to_string();
    let proxy = Proxy::spawn_no_config(admin, &node_args(&url, &["--admin", &admin_s]));
    // The admin listener is up (from --admin), the proxy is not ready.
    assert!(wait_until(Duration::from_secs(10), || proxy
        .admin_get("/healthz")
        .is_ok_and(|r| r.status == 200)));
    assert_eq!(proxy.admin_get("/ready").unwrap().status, 503);
    assert_eq!(proxy.config_dump()["control"]["connected"], false);
    thread::sleep(Duration::from_millis(300));

    let cp = FakeCp::start(cp_addr);
    cp.wait_subscribes(0);
    let upstream = Upstream::start("u1");
    let port = free_port();
    // All four at once: the proxy may apply them as one epoch, but answers each.
    let batch = [
        clusters("c1", &["up"]),
        endpoints("e1", &[("up", &[upstream.addr])]),
        listeners("l1", port),
        routes("r1", "main", "up"),
    ];
    let nonces: Vec<String> = batch.iter().map(|r| r.nonce.clone()).collect();
    for r in batch {
        cp.push(r);
    }
    for (n, v) in nonces.iter().zip(["c1", "e1", "l1", "r1"]) {
        let a = cp.wait_request(n, |_, r| r.response_nonce == *n);
        assert_ack(&a, v);
    }
    proxy.wait_ready(Duration::from_secs(10));
    assert_eq!(get_ok(port).upstream(), Some("u1"));
    let log = proxy.log();
    assert!(log.contains("cannot reach control plane"), "{log}");
    // Retries are not logged one by one.
    assert!(
        log.matches("cannot reach control plane").count() <= 2,
        "{log}"
    );
}

#[test]
fn sighup_rereads_the_bootstrap_and_sigterm_drains() {
    let static_port = free_port();
    let bootstrap = |body: &str| {
        format!(
            r#"listeners:
  - name: static
    address: 127.0.0.1:{static_port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ path: {{ prefix: / }} }}
            direct_response: {{ status: 200, body: "{body}" }}
"#
        )
    };
    let cp = FakeCp::start(local(free_port()));
    let url = cp.url();
    let proxy = Proxy::spawn(&bootstrap("one"), &node_args(&url, &[]));
    cp.wait_subscribes(0);
    // The static listener serves before the control plane sent anything.
    assert!(wait_until(Duration::from_secs(10), || {
        Conn::try_connect(local(static_port)).is_ok()
    }));
    assert_eq!(get(local(static_port), "x", "/").text(), "one");
    let upstream = Upstream::start("u1");
    let port = free_port();
    for r in [
        clusters("c1", &["up"]),
        endpoints("e1", &[("up", &[upstream.addr])]),
        listeners("l1", port),
        routes("r1", "main", "up"),
    ] {
        assert!(cp.push_and_wait(r).error_detail.is_none());
    }
    proxy.wait_ready(Duration::from_secs(10));

    proxy.write_config(&bootstrap("two"));
    proxy.sighup();
    assert!(
        wait_until(Duration::from_secs(10), || get(
            local(static_port),
            "x",
            "/"
        )
        .text()
            == "two"),
        "{}",
        proxy.log()
    );
    // The dynamic part is still there.
    assert_eq!(get_ok(port).upstream(), Some("u1"));
    let dump = proxy.config_dump();
    let names: Vec<&str> = dump["config"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(names, ["static", "outbound"]);

    // A bootstrap that clashes with the dynamic config is refused whole.
    proxy.write_config(&format!(
        "{}clusters:\n  - name: up\n    endpoints: []\n",
        bootstrap("three")
    ));
    proxy.sighup();
    proxy.wait_metric(
        "ringmesh_config_reloads_total{result=\"failure\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert_eq!(get(local(static_port), "x", "/").text(), "two");
    assert!(proxy
        .log()
        .contains("name clashes with a cluster of the bootstrap config"));

    proxy.sigterm();
    let st = proxy
        .wait_exit(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert!(st.success(), "{st:?}\n{}", proxy.log());
    assert!(proxy.log().contains("drained; exiting"));
}

#[test]
fn control_mode_flags_are_checked() {
    let t = Duration::from_secs(10);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--control", "http://127.0.0.1:1", "--service", "web"],
            "--control needs --node-id",
        ),
        (
            &["--control", "http://127.0.0.1:1", "--node-id", "a"],
            "--control needs --service",
        ),
        (
            &[
                "--control",
                "http://127.0.0.1:1",
                "--node-id",
                "",
                "--service",
                "web",
            ],
            "--node-id must not be empty",
        ),
        (
            &[
                "--control",
                "127.0.0.1:1",
                "--node-id",
                "a",
                "--service",
                "web",
            ],
            "expected http://HOST:PORT",
        ),
        (
            &[
                "--control",
                "https://cp:1",
                "--node-id",
                "a",
                "--service",
                "web",
            ],
            "not supported yet",
        ),
        (
            &[
                "--control",
                "http://cp",
                "--node-id",
                "a",
                "--service",
                "web",
            ],
            "the port is missing",
        ),
        (
            &[
                "--control",
                "http://cp:1",
                "--node-id",
                "a",
                "--service",
                "web",
                "--label",
                "x",
            ],
            "is not key=value",
        ),
        (
            &[
                "--control",
                "http://cp:1",
                "--node-id",
                "a",
                "--service",
                "web",
                "--admin",
                "nope",
            ],
            "--admin \"nope\" is not HOST:PORT",
        ),
        // Node flags belong to control mode; file mode needs --config.
        (&["--config", "x.yaml", "--node-id", "a"], "--control"),
        (&["--workers", "1"], "--config"),
    ];
    for (args, want) in cases {
        let ran = run_proxy(args, t);
        assert_eq!(
            ran.status.and_then(|s| s.code()),
            Some(2),
            "{args:?}: {}{}",
            ran.stdout,
            ran.stderr
        );
        assert!(
            ran.stderr.contains(want),
            "{args:?}: want {want:?} in {:?}",
            ran.stderr
        );
    }
    let ran = run_proxy(
        &[
            "--control",
            "http://127.0.0.1:1",
            "--node-id",
            "a",
            "--service",
            "web",
            "--validate",
        ],
        t,
    );
    assert_eq!(ran.status.and_then(|s| s.code()), Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("OK"), "{}", ran.stdout);
}
