//! Control mode (`--control`): the real `ringmesh-proxy` against a fake
//! control plane written here (a tonic `AggregatedDiscovery` server with
//! scripted responses), over real gRPC and real sockets: subscription order
//! and node, readiness, ACK/NACK, cluster retention, losing and regaining the
//! control plane, SIGHUP and SIGTERM, and the identity flow (bundle, CSR,
//! issued certificate, renewal, refusals).
//!
//! By default the fake acts like the real control plane's CA: it answers the
//! SECRET subscription with a trust bundle and signs every CSR it gets.

mod common;
use common::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, PKCS_ECDSA_P256_SHA256,
};

use ringmesh_proto::v1 as pb;
use ringmesh_proto::v1::aggregated_discovery_server::{
    AggregatedDiscovery, AggregatedDiscoveryServer,
};
use ringmesh_proto::v1::resource::Kind as PbKind;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

type Outbound = mpsc::UnboundedSender<Result<pb::DiscoveryResponse, tonic::Status>>;

const TD: &str = "cluster.local";
const ME: &str = "spiffe://cluster.local/ns/default/sa/web";

/// The fake's certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let pem = p.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(p, key),
            pem,
        }
    }

    /// A leaf for `id` over `public`, valid from now (no backdate) for
    /// `lifetime`. Returns the PEM and its not_before (unix seconds).
    fn sign(&self, public: &impl PublicKeyData, id: &str, lifetime: Duration) -> (String, i64) {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(id.to_owned().try_into().unwrap())];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now;
        p.not_after = now + lifetime;
        p.serial_number = Some(
            (0..16)
                .map(|_| fastrand::u8(..0x80))
                .collect::<Vec<_>>()
                .into(),
        );
        (
            p.signed_by(public, &self.issuer).unwrap().pem(),
            now.unix_timestamp(),
        )
    }
}

/// A CSR the fake received, checked.
#[derive(Clone)]
struct Csr {
    stream: usize,
    at: SystemTime,
    request_id: String,
    /// The URI SANs it asks for.
    uris: Vec<String>,
    subject_empty: bool,
    /// The requested key's SubjectPublicKeyInfo.
    spki: Vec<u8>,
    /// The PEM as sent, for signing by hand.
    pem: String,
}

/// A certificate the fake issued by itself.
#[derive(Clone)]
struct Issued {
    request_id: String,
    not_before: i64,
}

struct Recorded {
    /// Every request received: (stream number, request).
    requests: Vec<(usize, pb::DiscoveryRequest)>,
    streams: Vec<Outbound>,
    ca: Arc<Ca>,
    /// Roots sent in the bundle.
    roots: Vec<String>,
    /// Answer a SECRET subscription with the bundle.
    auto_bundle: bool,
    /// Sign CSRs as they come (else the test signs).
    auto_sign: bool,
    lifetime: Duration,
    secret_version: u64,
    /// The last identity sent per stream.
    current: HashMap<usize, pb::IssuedCertificate>,
    csrs: Vec<Csr>,
    issued: Vec<Issued>,
}

impl Default for Recorded {
    fn default() -> Self {
        let ca = Arc::new(Ca::new("fake root"));
        Recorded {
            requests: Vec::new(),
            streams: Vec::new(),
            roots: vec![ca.pem.clone()],
            ca,
            auto_bundle: true,
            auto_sign: true,
            lifetime: Duration::from_secs(3600),
            secret_version: 0,
            current: HashMap::new(),
            csrs: Vec::new(),
            issued: Vec::new(),
        }
    }
}

impl Recorded {
    /// The SECRET response for `stream`: the bundle and its identity, if any.
    fn secret_response(&mut self, stream: usize) -> pb::DiscoveryResponse {
        self.secret_version += 1;
        let mut resources = vec![(
            "trust-bundle",
            PbKind::Secret(pb::Secret {
                name: "trust-bundle".into(),
                kind: Some(pb::secret::Kind::TrustBundle(pb::TrustBundle {
                    root_certificates_pem: self
                        .roots
                        .iter()
                        .map(|r| r.as_bytes().to_vec())
                        .collect(),
                    trust_domain: TD.into(),
                })),
            }),
        )];
        if let Some(ic) = self.current.get(&stream) {
            resources.push((
                "identity",
                PbKind::Secret(pb::Secret {
                    name: "identity".into(),
                    kind: Some(pb::secret::Kind::IssuedCertificate(ic.clone())),
                }),
            ));
        }
        response(
            pb::ResourceType::Secret,
            &format!("s{}", self.secret_version),
            resources,
        )
    }

    /// What the fake does with a request besides recording it.
    fn react(&mut self, stream: usize, req: &pb::DiscoveryRequest) -> Vec<pb::DiscoveryResponse> {
        let mut out = Vec::new();
        if req.r#type != pb::ResourceType::Secret as i32 {
            return out;
        }
        if let Some(csr) = &req.csr {
            let text = String::from_utf8(csr.csr_pem.clone()).unwrap();
            // Parses and verifies the signature.
            let parsed = CertificateSigningRequestParams::from_pem(&text)
                .unwrap_or_else(|e| panic!("bad CSR from the proxy: {e}\n{text}"));
            let uris = parsed
                .params
                .subject_alt_names
                .iter()
                .map(|san| match san {
                    SanType::URI(u) => u.as_str().to_owned(),
                    other => format!("not a URI: {other:?}"),
                })
                .collect();
            let c = Csr {
                stream,
                at: SystemTime::now(),
                request_id: csr.request_id.clone(),
                uris,
                subject_empty: parsed.params.distinguished_name.iter().next().is_none(),
                spki: parsed.public_key.subject_public_key_info(),
                pem: text,
            };
            self.csrs.push(c.clone());
            if self.auto_sign {
                // Like the real CA after its checks: the identity asked for.
                let id = c.uris.first().cloned().unwrap_or_default();
                let (chain, not_before) = self.ca.sign(&parsed.public_key, &id, self.lifetime);
                self.issued.push(Issued {
                    request_id: c.request_id.clone(),
                    not_before,
                });
                self.current.insert(
                    stream,
                    pb::IssuedCertificate {
                        certificate_chain_pem: chain.into_bytes(),
                        spiffe_id: id,
                        not_before_unix: not_before,
                        not_after_unix: not_before + self.lifetime.as_secs() as i64,
                        request_id: c.request_id,
                    },
                );
                out.push(self.secret_response(stream));
                return out;
            }
        }
        if req.response_nonce.is_empty() && self.auto_bundle {
            out.push(self.secret_response(stream));
        }
        out
    }
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
                let mut r = rec.lock().unwrap();
                for resp in r.react(stream, &m) {
                    let _ = r.streams[stream].send(Ok(resp));
                }
                r.requests.push((stream, m));
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

    fn rec(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.rec.lock().unwrap()
    }

    /// Ends every open stream with UNAVAILABLE (the server stays up).
    fn reset_streams(&self) {
        let r = self.rec();
        for tx in &r.streams {
            let _ = tx.send(Err(tonic::Status::unavailable("reset by the test")));
        }
    }

    /// Waits until at least `n` CSRs arrived; returns them all.
    fn wait_csrs(&self, n: usize, timeout: Duration) -> Vec<Csr> {
        let deadline = Instant::now() + timeout;
        loop {
            let csrs = self.rec().csrs.clone();
            if csrs.len() >= n {
                return csrs;
            }
            assert!(
                Instant::now() < deadline,
                "only {} CSR(s) after {timeout:?}",
                csrs.len()
            );
            thread::sleep(Duration::from_millis(5));
        }
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

    /// The five subscribe requests of stream `stream`, in arrival order.
    fn wait_subscribes(&self, stream: usize) -> Vec<pb::DiscoveryRequest> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let subs: Vec<pb::DiscoveryRequest> = self
                .requests()
                .into_iter()
                .filter(|(s, r)| *s == stream && r.response_nonce.is_empty())
                .map(|(_, r)| r)
                .collect();
            if subs.len() >= 5 {
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
            pb::ResourceType::Secret as i32,
            pb::ResourceType::Cluster as i32,
            pb::ResourceType::Endpoints as i32,
            pb::ResourceType::Listener as i32,
            pb::ResourceType::RouteTable as i32
        ]
    );
    assert!(subs
        .iter()
        .all(|r| r.version_info.is_empty() && r.error_detail.is_none()));
    // No bundle yet, so no CSR in the subscription.
    assert!(subs.iter().all(|r| r.csr.is_none()));
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

    // A protocol this proxy does not know, too.
    let mut h2 = listeners("l2", s.port);
    if let Some(PbKind::Listener(l)) = &mut h2.resources[0].kind {
        l.protocol = 99;
    }
    let nack = s.cp.push_and_wait(h2);
    assert_eq!(nack.version_info, "l1");
    assert_eq!(
        nack.error_detail.unwrap().message,
        "listener \"outbound\": protocol: unknown value 99"
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
    assert_eq!(versions[1..], ["c1", "e1", "l1", "r1"]);
    assert_eq!(versions[0], "s2", "bundle, then bundle + identity");
    // The bundle is known: the SECRET subscription asks for a certificate.
    assert!(subs[0].csr.is_some());
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

// ----- identity ----------------------------------------------------------------

fn secret_type() -> i32 {
    pb::ResourceType::Secret as i32
}

/// Signs the CSR `csr` by hand as the SECRET response for `stream`: `id` in
/// the SAN and the spiffe_id field, over `key` (None: the CSR's own key).
fn sign_by_hand(
    cp: &FakeCp,
    stream: usize,
    csr: &Csr,
    id: &str,
    key: Option<&KeyPair>,
) -> (pb::DiscoveryResponse, i64) {
    let mut r = cp.rec();
    let parsed = CertificateSigningRequestParams::from_pem(&csr.pem).unwrap();
    let (chain, not_before) = match key {
        Some(k) => r.ca.sign(k, id, Duration::from_secs(3600)),
        None => r.ca.sign(&parsed.public_key, id, Duration::from_secs(3600)),
    };
    r.current.insert(
        stream,
        pb::IssuedCertificate {
            certificate_chain_pem: chain.into_bytes(),
            spiffe_id: id.into(),
            not_before_unix: not_before,
            not_after_unix: not_before + 3600,
            request_id: csr.request_id.clone(),
        },
    );
    (r.secret_response(stream), not_before + 3600)
}

/// Pushes the four non-SECRET types (v1) for an upstream and a listener.
fn push_config(cp: &FakeCp, upstream: &Upstream, port: u16) {
    for (resp, v) in [
        (clusters("c1", &["up"]), "c1"),
        (endpoints("e1", &[("up", &[upstream.addr])]), "e1"),
        (listeners("l1", port), "l1"),
        (routes("r1", "main", "up"), "r1"),
    ] {
        assert_ack(&cp.push_and_wait(resp), v);
    }
}

fn ready_status(proxy: &Proxy) -> u16 {
    proxy.admin_get("/ready").unwrap().status
}

#[test]
fn identity_by_csr_gates_readiness_and_bad_certificates_are_refused() {
    let cp = FakeCp::start(local(free_port()));
    cp.rec().auto_sign = false;
    let url = cp.url();
    let proxy = Proxy::spawn("", &node_args(&url, &[]));
    let subs = cp.wait_subscribes(0);
    assert_eq!(subs[0].r#type, secret_type(), "SECRET is subscribed first");
    assert!(subs[0].node.is_some() && subs[0].csr.is_none());

    // The bundle (s1) is ACKed and the ACK carries the CSR.
    let ack = cp.wait_request("a SECRET ACK with a CSR", |_, r| {
        r.r#type == secret_type() && r.csr.is_some()
    });
    assert_eq!(ack.version_info, "s1");
    assert!(ack.error_detail.is_none(), "{ack:?}");
    assert!(!ack.response_nonce.is_empty());
    let csrs = cp.wait_csrs(1, Duration::from_secs(10));
    let first = csrs[0].clone();
    assert_eq!(first.uris, [ME], "exactly one URI SAN: our SPIFFE ID");
    assert!(first.subject_empty);

    // Everything else arrives: still not ready without a certificate.
    let upstream = Upstream::start("u1");
    let port = free_port();
    push_config(&cp, &upstream, port);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(ready_status(&proxy), 503);
    assert_eq!(get_ok(port).upstream(), Some("u1"), "plain listeners serve");

    let (resp, not_after) = sign_by_hand(&cp, 0, &first, ME, None);
    assert_ack(&cp.push_and_wait(resp), "s2");
    proxy.wait_ready(Duration::from_secs(10));
    let body = proxy.admin_get("/config_dump").unwrap().text();
    assert!(!body.contains("PRIVATE KEY"), "{body}");
    let dump = proxy.config_dump();
    let id = &dump["control"]["identity"];
    assert_eq!(id["spiffe_id"], ME, "{dump:#}");
    assert_eq!(id["not_after"], not_after);
    assert_eq!(id["expired"], false);
    assert_eq!(dump["control"]["versions"]["secret"], "s2");
    let serial = id["serial"].as_str().unwrap().to_owned();
    assert_eq!(serial.len(), 32, "{serial}");
    assert!(dump["config"]["identity"].is_object(), "{dump:#}");
    let m = proxy.metrics();
    assert_metric_line(
        &m,
        &format!("ringmesh_identity_expiry_timestamp_seconds {not_after}"),
    );
    assert_metric_line(&m, "ringmesh_identity_csr_sent_total 1");
    assert_metric_line(&m, "ringmesh_identity_renewals_total 0");
    assert!(!proxy.log().contains("PRIVATE KEY"));

    // A new stream: the subscription itself carries a fresh CSR.
    cp.reset_streams();
    let subs = cp.wait_subscribes(1);
    let csr = subs[0].csr.as_ref().expect("a CSR on the new stream");
    let csrs = cp.wait_csrs(2, Duration::from_secs(10));
    let second = csrs[1].clone();
    assert_eq!(second.request_id, csr.request_id);
    assert_eq!(second.stream, 1);
    assert_ne!(second.spki, first.spki, "a fresh key");
    // The bundle of the new stream (s3) is ACKed.
    cp.wait_request("the ACK of s3", |s, r| s == 1 && r.version_info == "s3");

    // A certificate for another identity is refused; the old one stays.
    let admin = "spiffe://cluster.local/ns/default/sa/admin";
    let (bad, _) = sign_by_hand(&cp, 1, &second, admin, None);
    let nack = cp.push_and_wait(bad);
    assert_eq!(nack.version_info, "s3", "{nack:?}");
    let err = nack.error_detail.expect("NACK").message;
    assert_eq!(
        err,
        format!("secret \"identity\": issued for {admin:?}, this proxy is {ME:?}")
    );
    // The same with a good spiffe_id field but the wrong SAN.
    let (mut bad, _) = sign_by_hand(&cp, 1, &second, admin, None);
    for r in &mut bad.resources {
        if let Some(PbKind::Secret(pb::Secret {
            kind: Some(pb::secret::Kind::IssuedCertificate(ic)),
            ..
        })) = &mut r.kind
        {
            ic.spiffe_id = ME.into();
        }
    }
    let err = cp.push_and_wait(bad).error_detail.expect("NACK").message;
    assert!(err.contains("URI SANs are"), "{err}");
    // A certificate over another key.
    let stranger = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let (bad, _) = sign_by_hand(&cp, 1, &second, ME, Some(&stranger));
    let err = cp.push_and_wait(bad).error_detail.expect("NACK").message;
    assert_eq!(
        err,
        format!(
            "secret \"identity\": the certificate's public key is not the key of CSR {:?}",
            second.request_id
        )
    );
    let dump = proxy.config_dump();
    assert_eq!(dump["control"]["identity"]["serial"], serial.as_str());
    assert_eq!(ready_status(&proxy), 200);
    assert_eq!(
        dump["control"]["last_nack"]["secret"],
        err.as_str(),
        "{dump:#}"
    );

    // The right one is taken.
    let (good, _) = sign_by_hand(&cp, 1, &second, ME, None);
    let v = good.version_info.clone();
    assert_ack(&cp.push_and_wait(good), &v);
    let dump = proxy.config_dump();
    assert_ne!(dump["control"]["identity"]["serial"], serial.as_str());
    assert_metric_line(&proxy.metrics(), "ringmesh_identity_renewals_total 1");

    // A bundle-only push (a second root) is ACKed with a new epoch.
    let epoch = dump["epoch"].as_u64().unwrap();
    let serial = dump["control"]["identity"]["serial"].clone();
    let bundle = {
        let mut r = cp.rec();
        let extra = Ca::new("next root").pem;
        r.roots.push(extra);
        r.secret_response(1)
    };
    let v = bundle.version_info.clone();
    assert_ack(&cp.push_and_wait(bundle), &v);
    let dump = proxy.config_dump();
    assert!(dump["epoch"].as_u64().unwrap() > epoch);
    assert_eq!(dump["control"]["identity"]["serial"], serial);
    assert_eq!(dump["control"]["identity"]["trust_roots"], 2);
    assert_eq!(ready_status(&proxy), 200);
    assert_eq!(get_ok(port).upstream(), Some("u1"));
}

#[test]
fn renews_at_half_life_with_a_fresh_key_and_recovers_after_expiry() {
    let cp = FakeCp::start(local(free_port()));
    cp.rec().lifetime = Duration::from_secs(4);
    let url = cp.url();
    let proxy = Proxy::spawn("", &node_args(&url, &[]));
    cp.wait_subscribes(0);
    let upstream = Upstream::start("u1");
    let port = free_port();
    push_config(&cp, &upstream, port);
    proxy.wait_ready(Duration::from_secs(10));

    // The renewal CSR comes at not_before + 4 s * U(0.45, 0.55).
    let csrs = cp.wait_csrs(2, Duration::from_secs(10));
    let issued = cp.rec().issued.clone();
    assert_eq!(issued[0].request_id, csrs[0].request_id);
    let since = csrs[1]
        .at
        .duration_since(UNIX_EPOCH + Duration::from_secs(issued[0].not_before as u64))
        .unwrap()
        .as_secs_f64();
    assert!(
        (1.7..=2.9).contains(&since),
        "renewal CSR {since:.2} s after not_before"
    );
    assert_eq!(csrs[1].stream, 0, "on the same stream");
    assert_ne!(csrs[1].spki, csrs[0].spki, "a fresh key");
    assert_eq!(csrs[1].uris, [ME]);
    // Sent on its own (no response to answer): it carries the SECRET version.
    let req = cp.wait_request("the renewal CSR", |_, r| {
        r.csr.as_ref().map(|c| &c.request_id) == Some(&csrs[1].request_id)
    });
    assert!(req.version_info.starts_with('s') && req.error_detail.is_none());
    proxy.wait_metric(
        "ringmesh_identity_renewals_total",
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    assert_eq!(ready_status(&proxy), 200);

    // The control plane stops signing: the certificate expires, the proxy
    // says so once, keeps serving and is not ready.
    cp.rec().auto_sign = false;
    assert!(
        wait_until(Duration::from_secs(10), || ready_status(&proxy) == 503),
        "{}",
        proxy.log()
    );
    assert_eq!(get_ok(port).upstream(), Some("u1"), "still serving");
    assert_eq!(proxy.config_dump()["control"]["identity"]["expired"], true);
    assert!(wait_until(Duration::from_secs(5), || proxy
        .log()
        .contains("without renewal")));
    // It keeps asking; signing again makes it ready again.
    let asked = cp.rec().csrs.len();
    cp.wait_csrs(asked + 1, Duration::from_secs(10));
    cp.rec().auto_sign = true;
    proxy.wait_ready(Duration::from_secs(15));
    assert_eq!(proxy.log().matches("without renewal").count(), 1);
}

#[test]
fn edge_tls_certificates_come_from_pushed_secrets_chosen_by_sni() {
    let Setup {
        cp,
        proxy,
        upstream: _u,
        port: _,
    } = setup();
    // The edge certificate travels as a SECRET with its key (edge
    // certificates are not mesh identities), beside the bundle and identity.
    let edge_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(vec!["edge.test".to_string()]).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "edge.test");
    let edge_cert = p.self_signed(&edge_key).unwrap();
    let dir = scratch_dir("xds-edge");
    let ca_file = dir.join("edge.pem");
    std::fs::write(&ca_file, edge_cert.pem()).unwrap();
    let stream = cp.streams() - 1;
    let mut secrets = cp.rec().secret_response(stream);
    secrets.resources.push(pb::Resource {
        name: "edge-cert".into(),
        kind: Some(PbKind::Secret(pb::Secret {
            name: "edge-cert".into(),
            kind: Some(pb::secret::Kind::TlsCertificate(pb::TlsCertificate {
                certificate_chain_pem: edge_cert.pem().into_bytes(),
                private_key_pem: edge_key.serialize_pem().into_bytes(),
            })),
        })),
    });
    let v = secrets.version_info.clone();
    assert_ack(&cp.push_and_wait(secrets), &v);

    let edge_port = free_port();
    let mut l = listeners("l2", free_port());
    l.resources.push(pb::Resource {
        name: "edge".into(),
        kind: Some(PbKind::Listener(pb::Listener {
            name: "edge".into(),
            address: local(edge_port).to_string(),
            protocol: pb::Protocol::Http as i32,
            direction: pb::Direction::Inbound as i32,
            route_table: "outbound".into(),
            sni_certificates: vec![pb::SniCertificate {
                server_names: vec!["edge.test".into()],
                secret: "edge-cert".into(),
            }],
            alpn: vec!["http/1.1".into()],
            ..Default::default()
        })),
    });
    assert_ack(&cp.push_and_wait(l), "l2");
    let ran = curl(&[
        "-sS",
        "-v",
        "--cacert",
        ca_file.to_str().unwrap(),
        "--resolve",
        &format!("edge.test:{edge_port}:127.0.0.1"),
        &format!("https://edge.test:{edge_port}/hello"),
    ]);
    assert!(ran.status.is_some_and(|s| s.success()), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("ALPN: server accepted http/1.1"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("< HTTP/1.1 200"), "{}", ran.stderr);
    // A listener naming a secret that is not there is refused by name.
    let mut bad = listeners("l3", free_port());
    bad.resources.push(pb::Resource {
        name: "edge2".into(),
        kind: Some(PbKind::Listener(pb::Listener {
            name: "edge2".into(),
            address: local(free_port()).to_string(),
            route_table: "outbound".into(),
            sni_certificates: vec![pb::SniCertificate {
                server_names: vec![],
                secret: "missing".into(),
            }],
            ..Default::default()
        })),
    });
    let nack = cp.push_and_wait(bad);
    let msg = nack.error_detail.expect("a NACK").message;
    assert!(msg.contains("unknown secret \"missing\""), "{msg}");
    drop(proxy);
}

/// Route table `outbound` with `n` routes made by `route(i)`, then a
/// catch-all `main` to `up` (so requests still find a route).
fn many_routes(
    version: &str,
    n: usize,
    route: impl Fn(usize) -> pb::Route,
) -> pb::DiscoveryResponse {
    let mut all: Vec<pb::Route> = (0..n).map(route).collect();
    if let Some(PbKind::RouteTable(t)) = &routes(version, "main", "up").resources[0].kind {
        all.push(t.virtual_hosts[0].routes[0].clone());
    }
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
                    routes: all,
                }],
            }),
        )],
    )
}

/// A route `r{i}` matching `path` to `up` with `weight`.
fn route_to_up(i: usize, path: pb::route_match::Path, weight: u32) -> pb::Route {
    pb::Route {
        name: format!("r{i}"),
        r#match: Some(pb::RouteMatch {
            path: Some(path),
            ..Default::default()
        }),
        action: Some(pb::route::Action::Forward(pb::ForwardAction {
            clusters: vec![pb::WeightedCluster {
                cluster: "up".into(),
                weight,
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Requests in a loop on fresh connections; the slowest answer and how
/// many, until stopped.
/// Answers, the slowest, failures.
type LoopResult = (usize, Duration, Vec<String>);

fn request_loop(port: u16) -> (Arc<Mutex<bool>>, JoinHandle<LoopResult>) {
    let stop = Arc::new(Mutex::new(false));
    let s = stop.clone();
    let h = thread::spawn(move || {
        let (mut n, mut worst, mut failures) = (0, Duration::ZERO, Vec::new());
        while !*s.lock().unwrap() {
            let t = Instant::now();
            match Conn::try_connect(local(port))
                .and_then(|mut c| c.request(&Req::get("/hello").host("svc")))
            {
                Ok(r) if r.status == 200 => n += 1,
                Ok(r) => failures.push(format!("status {}", r.status)),
                Err(e) => failures.push(e.to_string()),
            }
            worst = worst.max(t.elapsed());
            thread::sleep(Duration::from_millis(2));
        }
        (n, worst, failures)
    });
    (stop, h)
}

#[test]
fn hostile_route_tables_are_nacked_without_stalling_the_workers() {
    use pb::route_match::Path;
    let s = setup();
    let epoch = s.proxy.config_dump()["epoch"].as_u64().unwrap();
    let (stop, looping) = request_loop(s.port);
    thread::sleep(Duration::from_millis(200));

    // 10,000 routes, each with a regex near the per-regex size limit:
    // refused once the config's regex budget is spent, not compiled for
    // minutes into gigabytes.
    let t = Instant::now();
    let nack = s.cp.push_and_wait(many_routes("r-budget", 10_000, |i| {
        route_to_up(i, Path::Regex(format!("/{i}/[a-z0-9]{{9000}}")), 1)
    }));
    let budget_nack_in = t.elapsed();
    let msg = nack.error_detail.expect("a NACK").message;
    assert!(
        msg.starts_with("route_table \"outbound\": route \"r")
            && msg.ends_with(
                "match.path.regex: bad regex: the regexes of this config together exceed the limit of 67108864 bytes compiled"
            ),
        "{msg}"
    );
    assert_eq!(nack.version_info, "r1");

    // One regex over the per-regex limit.
    let nack = s.cp.push_and_wait(many_routes("r-huge", 1, |i| {
        route_to_up(i, Path::Regex("(\\w{100}){100}".into()), 1)
    }));
    assert_eq!(
        nack.error_detail.expect("a NACK").message,
        "route_table \"outbound\": route \"r0\": match.path.regex: bad regex: Compiled regex exceeds size limit of 1048576 bytes."
    );
    // Nested too deep.
    let deep = format!("{}/a{}", "(".repeat(5000), ")".repeat(5000));
    let nack = s.cp.push_and_wait(many_routes("r-deep", 1, |i| {
        route_to_up(i, Path::Regex(deep.clone()), 1)
    }));
    assert_eq!(
        nack.error_detail.expect("a NACK").message,
        "route_table \"outbound\": route \"r0\": match.path.regex: bad regex: regex parse error: exceed the maximum number of nested parentheses/brackets (250)"
    );
    // Absurd weights (a split: one destination's weight does not matter).
    let nack = s.cp.push_and_wait(many_routes("r-weight", 1, |i| {
        let mut r = route_to_up(i, Path::Prefix("/w".into()), u32::MAX);
        if let Some(pb::route::Action::Forward(f)) = &mut r.action {
            f.clusters.push(f.clusters[0].clone());
        }
        r
    }));
    let msg = nack.error_detail.expect("a NACK").message;
    assert!(
        msg.starts_with(
            "route_table \"outbound\": route \"r0\": forward.weighted_clusters[0].weight: "
        ) && msg.contains("1000000"),
        "{msg}"
    );
    assert_eq!(
        s.proxy.config_dump()["epoch"].as_u64().unwrap(),
        epoch,
        "no new epoch"
    );

    // 10,000 ordinary routes are taken, and routed by.
    let t = Instant::now();
    let ack = s.cp.push_and_wait(many_routes("r-many", 10_000, |i| {
        route_to_up(i, Path::Exact(format!("/r{i}")), 1)
    }));
    let many_ack_in = t.elapsed();
    assert_ack(&ack, "r-many");
    let r = get(local(s.port), "svc", "/r9999");
    assert_eq!(r.status, 200);

    *stop.lock().unwrap() = true;
    let (n, worst, failures) = looping.join().unwrap();
    println!(
        "hostile pushes: regex budget NACKed in {budget_nack_in:?}; 10,000 routes ACKed in \
         {many_ack_in:?}; meanwhile {n} requests, slowest {worst:?}"
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(n > 20, "only {n} requests");
    assert!(
        worst < Duration::from_millis(500),
        "a request waited {worst:?} while a push was compiled"
    );
    assert_metric_line(
        &s.proxy.metrics(),
        "ringmesh_control_updates_total{type=\"route_table\",result=\"nack\"} 4",
    );
}
