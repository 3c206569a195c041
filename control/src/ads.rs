//! The aggregated discovery service (`ringmesh.v1.AggregatedDiscovery`): one
//! task per proxy stream. The first request announces the node; the task
//! registers it, then sends a response for every subscribed type whose
//! version for this node differs from what the proxy has, in the order
//! SECRET, CLUSTER, ENDPOINTS, LISTENER, ROUTE_TABLE, each with a fresh
//! nonce, and records ACKs and NACKs. Every task watches the shared world
//! and computes only its own node's snapshot when it changes; it keeps
//! versions between pushes, not resources.
//!
//! SECRET is the node's own: the trust bundle and the certificate last
//! issued on this stream. A SECRET request carrying a CSR is answered with a
//! new certificate (or ends the stream when refused); a SECRET push never
//! rebuilds the other types.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use ringmesh_proto::v1::aggregated_discovery_server::AggregatedDiscovery;
use ringmesh_proto::v1::{
    CertificateSigningRequest, DiscoveryRequest, DiscoveryResponse, ResourceType,
};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::ca::{Ca, Issued, Refusal};
use crate::log::unix_now;
use crate::node::NodeInfo;
use crate::registry::{lock, Nack, NodeRecords};
use crate::snapshot::{self, type_index, type_name, TYPES};
use crate::state::Shared;
use crate::world::World;
use crate::{log_info, log_warn};

/// Responses queued towards one proxy; a proxy that stops reading holds its
/// task at this bound instead of growing memory.
const OUT_QUEUE: usize = 8;
/// A stream must announce its node within this time.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time the first push waits for a world that includes the node.
const REGISTRATION_WAIT: Duration = Duration::from_secs(2);
/// Unanswered responses remembered per type (for NACK versions and latency).
const INFLIGHT: usize = 16;
/// Longest NACK message kept.
const MAX_NACK_MESSAGE: usize = 1024;
/// Index of SECRET in `TYPES`.
const SECRET: usize = 4;

/// Largest request accepted from a proxy.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct Ads {
    shared: Arc<Shared>,
}

impl Ads {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub fn into_server(self) -> crate::ads_server::AdsServer {
        crate::ads_server::AdsServer::new(self)
    }
}

/// The response stream of one proxy: responses from the stream task, then
/// the status it ended with (if any).
pub struct Outbound {
    rx: mpsc::Receiver<DiscoveryResponse>,
    end: Option<oneshot::Receiver<Status>>,
}

impl tokio_stream::Stream for Outbound {
    type Item = Result<DiscoveryResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(r) = ready!(self.rx.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(r)));
        }
        let Some(end) = self.end.as_mut() else {
            return Poll::Ready(None);
        };
        let status = ready!(Pin::new(end).poll(cx));
        self.end = None;
        Poll::Ready(status.ok().map(Err))
    }
}

#[tonic::async_trait]
impl AggregatedDiscovery for Ads {
    type StreamResourcesStream = Outbound;

    async fn stream_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamResourcesStream>, Status> {
        if self.shared.is_shutting_down() {
            return Err(Status::unavailable("control plane shutting down"));
        }
        let peer = request.remote_addr();
        // Responses only: a channel slot of Result<_, Status> is three
        // times larger, and tokio allocates slots 32 at a time.
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        let (end_tx, end_rx) = oneshot::channel();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let end = run(shared, request.into_inner(), &tx, peer).await;
            drop(tx);
            if let Some(status) = end {
                let _ = end_tx.send(status);
            }
        });
        Ok(Response::new(Outbound {
            rx,
            end: Some(end_rx),
        }))
    }
}

type Tx = mpsc::Sender<DiscoveryResponse>;

/// Why a stream task ends.
enum End {
    /// The proxy closed its side, reset the stream or stopped reading.
    Gone,
    Replaced,
    Shutdown,
    Refused(Status),
}

/// Serves one stream; the status to end it with, if not OK.
async fn run(
    shared: Arc<Shared>,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: &Tx,
    peer: Option<SocketAddr>,
) -> Option<Status> {
    let mut shutdown = shared.shutdown_signal();
    let first = tokio::select! {
        r = tokio::time::timeout(FIRST_REQUEST_TIMEOUT, inbound.message()) => r,
        () = tx.closed() => return None,
        _ = shutdown.changed() => return Some(Status::unavailable("control plane shutting down")),
    };
    let first = match first {
        Ok(Ok(Some(req))) => req,
        Ok(Ok(None) | Err(_)) => return None,
        Err(_) => {
            return Some(Status::deadline_exceeded(
                "no DiscoveryRequest announcing the node within 30s",
            ))
        }
    };
    let info = match first.node.as_ref() {
        None => Err("the first DiscoveryRequest of a stream must carry the node".to_owned()),
        Some(n) => NodeInfo::from_proto(n),
    };
    let info = match info {
        Ok(i) => Arc::new(i),
        Err(msg) => {
            log_warn!(
                "stream from {}: refused: {msg}",
                peer.map_or("?".to_owned(), |p| p.to_string())
            );
            return Some(Status::invalid_argument(msg));
        }
    };
    let c = shared.connect(info.clone());
    log_info!(
        "node {} (service {}, address {}) connected from {}",
        info.id,
        info.service_key(),
        info.address,
        peer.map_or("?".to_owned(), |p| p.to_string())
    );
    let mut world = shared.world();
    // The first push includes the node itself (a service that calls itself
    // must not get an empty endpoint set and then a second push).
    let _ = tokio::time::timeout(
        REGISTRATION_WAIT,
        world.wait_for(|w| w.registry_generation >= c.generation),
    )
    .await;
    let ca = shared.ca();
    let mut stream = Stream {
        ca,
        issued: None,
        secret_inputs: None,
        shared: shared.clone(),
        info: info.clone(),
        records: c.records,
        subscribed: [false; TYPES.len()],
        known: Default::default(),
        inflight: Default::default(),
        computed: None,
        problem_logged: false,
        unknown_type_logged: false,
    };
    let mut kicked = c.kicked;
    let end = stream
        .serve(
            first,
            &mut inbound,
            tx,
            &mut world,
            &mut kicked,
            &mut shutdown,
        )
        .await;
    shared.disconnect(&info.id, c.conn);
    match end {
        End::Gone => None,
        End::Replaced => Some(Status::aborted(format!(
            "replaced by a newer stream of node {}",
            info.id
        ))),
        End::Shutdown => Some(Status::unavailable("control plane shutting down")),
        End::Refused(status) => {
            log_warn!("node {}: stream refused: {}", info.id, status.message());
            Some(status)
        }
    }
}

struct Stream {
    shared: Arc<Shared>,
    /// The CA in force; a change of its trust bundle is pushed.
    ca: watch::Receiver<Arc<Ca>>,
    /// The certificate last issued on this stream, with its request id.
    issued: Option<(Issued, String)>,
    /// What the SECRET version was last computed from (CA, trust domain,
    /// serial), to skip hashing when nothing changed.
    secret_inputs: Option<(u64, String, Option<String>)>,
    info: Arc<NodeInfo>,
    records: Arc<Mutex<NodeRecords>>,
    subscribed: [bool; TYPES.len()],
    /// Per type, the version the proxy has or is being sent: a push happens
    /// when the node's snapshot version differs.
    known: [Option<String>; TYPES.len()],
    /// Unanswered responses per type: (nonce, version, sent at).
    inflight: [VecDeque<(String, String, Instant)>; TYPES.len()],
    /// What the last snapshot was computed from, to skip the rebuild when
    /// nothing this node sees changed.
    computed: Option<Computed>,
    problem_logged: bool,
    unknown_type_logged: bool,
}

impl Stream {
    async fn serve(
        &mut self,
        first: DiscoveryRequest,
        inbound: &mut Streaming<DiscoveryRequest>,
        tx: &Tx,
        world: &mut watch::Receiver<Arc<World>>,
        kicked: &mut oneshot::Receiver<()>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        if let Err(status) = self.handle(first) {
            return End::Refused(status);
        }
        loop {
            // Take every request already received before pushing, so a
            // burst of subscribes is answered in one ordered push.
            while let Ok(next) = tokio::time::timeout(Duration::ZERO, inbound.message()).await {
                match next {
                    Ok(Some(req)) => {
                        if let Err(status) = self.handle(req) {
                            return End::Refused(status);
                        }
                    }
                    Ok(None) | Err(_) => return End::Gone,
                }
            }
            // Cheap when nothing this node sees changed.
            let current = world.borrow_and_update().clone();
            let secret = self.secret_response(&current);
            for resp in secret.into_iter().chain(self.responses(&current)) {
                tokio::select! {
                    biased;
                    _ = &mut *kicked => return End::Replaced,
                    _ = shutdown.changed() => return End::Shutdown,
                    r = tx.send(resp) => if r.is_err() { return End::Gone },
                }
            }
            tokio::select! {
                biased;
                _ = &mut *kicked => return End::Replaced,
                _ = shutdown.changed() => return End::Shutdown,
                () = tx.closed() => return End::Gone,
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => {
                        if let Err(status) = self.handle(req) {
                            return End::Refused(status);
                        }
                    }
                    Ok(None) | Err(_) => return End::Gone,
                },
                r = world.changed() => {
                    if r.is_err() {
                        return End::Shutdown;
                    }
                }
                r = self.ca.changed() => {
                    if r.is_err() {
                        return End::Shutdown;
                    }
                }
            }
        }
    }

    /// Applies one request: a subscribe, an ACK or a NACK, and a CSR it
    /// carries.
    fn handle(&mut self, mut req: DiscoveryRequest) -> Result<(), Status> {
        let csr = req.csr.take();
        self.handle_versions(req)?;
        match csr {
            Some(csr) => self.issue(&csr),
            None => Ok(()),
        }
    }

    /// Signs a certificate for this node's identity, or refuses the CSR
    /// (the stream then ends with the reason).
    fn issue(&mut self, csr: &CertificateSigningRequest) -> Result<(), Status> {
        let td = self.shared.current_world().mesh.trust_domain.clone();
        let id = spiffe_id(&td, &self.info);
        let ca = self.ca.borrow().clone();
        match ca.sign(&csr.csr_pem, &id, time::OffsetDateTime::now_utc()) {
            Ok(issued) => {
                self.shared.metrics.issued();
                log_info!(
                    "node {}: issued a certificate for {id} (serial {}, valid until {})",
                    self.info.id,
                    issued.serial,
                    issued.not_after
                );
                lock(&self.records).certificate = Some((issued.serial.clone(), issued.not_after));
                self.issued = Some((issued, clip(&csr.request_id, 256)));
                Ok(())
            }
            Err(refusal) => {
                self.shared.metrics.csr_refused(refusal.reason());
                let msg = format!("CSR refused: {}", refusal.message());
                Err(match refusal {
                    Refusal::Identity(_) => Status::permission_denied(msg),
                    Refusal::Invalid(_) => Status::invalid_argument(msg),
                })
            }
        }
    }

    /// The SECRET response to send now, if SECRET is subscribed and its
    /// content (trust bundle, trust domain, certificate) changed.
    fn secret_response(&mut self, world: &World) -> Option<DiscoveryResponse> {
        if !self.subscribed[SECRET] {
            return None;
        }
        let ca = self.ca.borrow_and_update().clone();
        let td = &world.mesh.trust_domain;
        let inputs = (
            ca.generation,
            td.clone(),
            self.issued
                .as_ref()
                .map(|(i, r)| format!("{}/{r}", i.serial)),
        );
        if self.secret_inputs.as_ref() == Some(&inputs) && self.known[SECRET].is_some() {
            return None;
        }
        self.secret_inputs = Some(inputs);
        let ts = snapshot::secrets(
            &ca.roots,
            td,
            self.issued.as_ref().map(|(i, r)| (i, r.as_str())),
        );
        if self.known[SECRET].as_deref() == Some(ts.version.as_str()) {
            return None;
        }
        let nonce = self.shared.next_nonce();
        let resp = DiscoveryResponse {
            r#type: ResourceType::Secret as i32,
            version_info: ts.version.clone(),
            nonce: nonce.clone(),
            resources: ts.resources.iter().map(|r| r.resource.clone()).collect(),
        };
        self.record_sent(SECRET, &ts.version, nonce, unix_now());
        Some(resp)
    }

    fn record_sent(&mut self, i: usize, version: &str, nonce: String, now: u64) {
        self.known[i] = Some(version.to_owned());
        if self.inflight[i].len() == INFLIGHT {
            self.inflight[i].pop_front();
        }
        self.inflight[i].push_back((nonce.clone(), version.to_owned(), Instant::now()));
        self.shared.metrics.pushed(i);
        let mut rec = lock(&self.records);
        let r = &mut rec.types[i];
        r.sent_version = Some(version.to_owned());
        r.sent_nonce = Some(nonce);
        r.sent_at = Some(now);
    }

    /// Applies the version part of a request: a subscribe, an ACK or a NACK.
    fn handle_versions(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        if let Some(n) = &req.node {
            if n.id != self.info.id {
                return Err(Status::invalid_argument(format!(
                    "a stream serves one node: it announced {:?}, now {:?}",
                    self.info.id,
                    n.id.chars().take(64).collect::<String>()
                )));
            }
        }
        let t = ResourceType::try_from(req.r#type).unwrap_or(ResourceType::Unspecified);
        let Some(i) = type_index(t) else {
            // A newer proxy may ask for a type we do not serve: ignore it
            // (said once per stream) rather than end the stream.
            if !self.unknown_type_logged {
                self.unknown_type_logged = true;
                log_warn!(
                    "node {}: ignoring requests for unknown resource type {}",
                    self.info.id,
                    req.r#type
                );
            }
            return Ok(());
        };
        let now = unix_now();
        if req.response_nonce.is_empty() {
            self.subscribed[i] = true;
            if i == SECRET {
                self.secret_inputs = None;
            }
            let has = (!req.version_info.is_empty()).then(|| req.version_info.clone());
            let mut rec = lock(&self.records);
            rec.types[i].subscribed = true;
            if has.is_some() {
                // The version it runs; if it is current nothing is sent.
                rec.types[i].acked_version.clone_from(&has);
            }
            self.known[i] = has;
            return Ok(());
        }
        let inflight = &mut self.inflight[i];
        let answered = match inflight
            .iter()
            .position(|(n, _, _)| *n == req.response_nonce)
        {
            // Earlier responses were answered before this one or never
            // will be.
            Some(p) => inflight.drain(..=p).next_back(),
            None => None,
        };
        let mut rec = lock(&self.records);
        let r = &mut rec.types[i];
        match req.error_detail {
            Some(err) => {
                self.shared.metrics.nacked(i);
                let version = match &answered {
                    Some((_, v, _)) => v.clone(),
                    None => req.version_info.clone(),
                };
                let message = clip(&err.message, MAX_NACK_MESSAGE);
                // Once per distinct refusal: a proxy repeating itself does
                // not flood the log.
                let repeated = r
                    .last_nack
                    .as_ref()
                    .is_some_and(|n| n.version == version && n.message == message);
                if !repeated {
                    log_warn!(
                        "node {}: NACK {} version {version}: {message}",
                        self.info.id,
                        type_name(t)
                    );
                }
                r.last_nack = Some(Nack {
                    version,
                    message,
                    at: now,
                });
                if !req.version_info.is_empty() {
                    r.acked_version = Some(req.version_info);
                }
            }
            // An ACK of a nonce we do not know (an earlier stream's) says
            // nothing about this stream.
            None if answered.is_none() => {}
            None => {
                let latency = answered.map(|(_, _, at)| at.elapsed());
                self.shared.metrics.acked(i, latency);
                r.acked_version = Some(req.version_info);
            }
        }
        Ok(())
    }

    /// The responses to send now, in push order, recorded as sent.
    fn responses(&mut self, world: &World) -> Vec<DiscoveryResponse> {
        if let Some(c) = self.computed.as_mut() {
            let sent = (0..TYPES.len()).all(|i| {
                i == SECRET || !self.subscribed[i] || self.known[i].as_ref() == Some(&c.versions[i])
            });
            if sent && c.still_current(world) {
                c.generation = world.generation;
                return Vec::new();
            }
        }
        let snap = snapshot::build(world, &self.info);
        if snap.problem.is_some() != self.problem_logged {
            self.problem_logged = snap.problem.is_some();
            if let Some(p) = &snap.problem {
                log_warn!("node {}: {p}", self.info.id);
            }
            lock(&self.records).problem.clone_from(&snap.problem);
        }
        let mut out = Vec::new();
        let now = unix_now();
        for (i, &t) in TYPES.iter().enumerate() {
            let ts = snap.get(t);
            if i == SECRET
                || !self.subscribed[i]
                || self.known[i].as_deref() == Some(ts.version.as_str())
            {
                continue;
            }
            let nonce = self.shared.next_nonce();
            out.push(DiscoveryResponse {
                r#type: t as i32,
                version_info: ts.version.clone(),
                nonce: nonce.clone(),
                resources: ts.resources.iter().map(|r| r.resource.clone()).collect(),
            });
            self.record_sent(i, &ts.version, nonce, now);
        }
        self.computed = Some(Computed {
            generation: world.generation,
            mesh: world.mesh.clone(),
            versions: TYPES.map(|t| snap.get(t).version.clone()),
            deps: snap.deps,
        });
        out
    }
}

/// The inputs and result of a stream's last snapshot.
struct Computed {
    /// The world generation it was built (or last found current) at.
    generation: u64,
    /// The mesh it was built from; another mesh means a rebuild.
    mesh: Arc<crate::mesh::Mesh>,
    /// Services whose instances it used (`Snapshot::deps`).
    deps: Vec<u32>,
    versions: [String; TYPES.len()],
}

impl Computed {
    /// Whether `world` would give the same snapshot: the same mesh, and no
    /// service this node's endpoints come from changed its instances since.
    fn still_current(&self, world: &World) -> bool {
        self.generation == world.generation
            || (Arc::ptr_eq(&self.mesh, &world.mesh)
                && self.deps.iter().all(|&i| {
                    world
                        .instances_changed
                        .get(i as usize)
                        .is_some_and(|&g| g <= self.generation)
                }))
    }
}

fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// `spiffe://TD/ns/NAMESPACE/sa/SERVICE`: the one identity a node may have.
pub fn spiffe_id(trust_domain: &str, node: &NodeInfo) -> String {
    format!(
        "spiffe://{trust_domain}/ns/{}/sa/{}",
        node.service.namespace, node.service.name
    )
}
