//! The simulated proxies: one tokio task per proxy, each with its own HTTP/2
//! connection (its own tonic `Channel`, so its own TCP connection, as a real
//! proxy has), one aggregated discovery stream, a subscription to CLUSTER,
//! ENDPOINTS, LISTENER and ROUTE_TABLE, and an immediate ACK of every
//! response. What a phase of the bench waits for is a [`Want`]: each task
//! checks every response against the current one and records when it ACKed
//! the first response that satisfies it.

use ringmesh_proto::v1::aggregated_discovery_client::AggregatedDiscoveryClient;
use ringmesh_proto::v1::{
    resource, route, DiscoveryRequest, DiscoveryResponse, Node, ResourceType,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The types a proxy subscribes to, in the contract's order.
pub const TYPES: [ResourceType; 4] = [
    ResourceType::Cluster,
    ResourceType::Endpoints,
    ResourceType::Listener,
    ResourceType::RouteTable,
];

/// What a phase waits for in a node's responses.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// Route table `outbound`: virtual host `vhost`'s first route forwards
    /// with exactly these weights.
    Weights { vhost: String, weights: Vec<u32> },
    /// Endpoint resource `cluster` is present and lists `address`.
    EndpointPresent { cluster: String, address: String },
    /// Endpoint resource `cluster` is present and does not list `address`.
    EndpointAbsent { cluster: String, address: String },
}

impl Want {
    /// Whether the response satisfies the want (a response of another type
    /// never does).
    pub fn matches(&self, r: &DiscoveryResponse) -> bool {
        match self {
            Want::Weights { vhost, weights } => {
                if r.r#type != ResourceType::RouteTable as i32 {
                    return false;
                }
                let table = r.resources.iter().find_map(|res| match &res.kind {
                    Some(resource::Kind::RouteTable(t)) if res.name == "outbound" => Some(t),
                    _ => None,
                });
                let Some(vh) =
                    table.and_then(|t| t.virtual_hosts.iter().find(|v| &v.name == vhost))
                else {
                    return false;
                };
                match vh.routes.first().and_then(|r| r.action.as_ref()) {
                    Some(route::Action::Forward(f)) => f
                        .clusters
                        .iter()
                        .map(|c| c.weight)
                        .eq(weights.iter().copied()),
                    _ => false,
                }
            }
            Want::EndpointPresent { cluster, address }
            | Want::EndpointAbsent { cluster, address } => {
                if r.r#type != ResourceType::Endpoints as i32 {
                    return false;
                }
                let eps = r.resources.iter().find_map(|res| match &res.kind {
                    Some(resource::Kind::Endpoints(e)) if &res.name == cluster => Some(e),
                    _ => None,
                });
                let Some(eps) = eps else { return false };
                let listed = eps.endpoints.iter().any(|e| &e.address == address);
                listed == matches!(self, Want::EndpointPresent { .. })
            }
        }
    }
}

/// One phase's records.
struct Phase {
    want: Option<Want>,
    /// Per node: when it ACKed the first response satisfying `want`.
    hits: Vec<Option<Instant>>,
    /// Per node: responses received during the phase.
    responses: Vec<u32>,
}

/// State shared by the bench and every simulated proxy.
pub struct Shared {
    phase: Mutex<Phase>,
    /// Nodes that have ACKed all four types at least once.
    pub synced: AtomicUsize,
    /// Responses received by all nodes since the start (for quiescence).
    pub responses: AtomicU64,
    /// Streams that failed or ended (message per node).
    pub errors: Mutex<Vec<String>>,
    /// Per node: time from its connect attempt to its fourth ACK.
    pub sync_times: Mutex<Vec<Option<Duration>>>,
}

/// What a phase saw, per node.
pub struct PhaseResult {
    pub hits: Vec<Option<Instant>>,
    pub responses: Vec<u32>,
}

impl Shared {
    /// For `nodes` proxies (indices `0..nodes`).
    pub fn new(nodes: usize) -> Arc<Shared> {
        Arc::new(Shared {
            phase: Mutex::new(Phase {
                want: None,
                hits: vec![None; nodes],
                responses: vec![0; nodes],
            }),
            synced: AtomicUsize::new(0),
            responses: AtomicU64::new(0),
            errors: Mutex::new(vec![]),
            sync_times: Mutex::new(vec![None; nodes]),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a phase: clears the records and sets what to wait for.
    pub fn begin(&self, want: Want) {
        let mut p = self.lock();
        p.want = Some(want);
        p.hits.iter_mut().for_each(|h| *h = None);
        p.responses.iter_mut().for_each(|r| *r = 0);
    }

    /// Ends the phase and hands back its records.
    pub fn end(&self) -> PhaseResult {
        let mut p = self.lock();
        p.want = None;
        PhaseResult {
            hits: p.hits.clone(),
            responses: p.responses.clone(),
        }
    }

    /// How many of `nodes` have a hit in the current phase.
    pub fn hits_among(&self, nodes: &[usize]) -> usize {
        let p = self.lock();
        nodes.iter().filter(|&&n| p.hits[n].is_some()).count()
    }

    /// Counts the response; true if it satisfies the phase's want and the
    /// node has no hit yet.
    fn observe(&self, node: usize, r: &DiscoveryResponse) -> bool {
        self.responses.fetch_add(1, Ordering::Relaxed);
        let mut p = self.lock();
        p.responses[node] += 1;
        p.hits[node].is_none() && p.want.as_ref().is_some_and(|w| w.matches(r))
    }

    fn hit(&self, node: usize, at: Instant) {
        let mut p = self.lock();
        if p.want.is_some() && p.hits[node].is_none() {
            p.hits[node] = Some(at);
        }
    }

    fn error(&self, msg: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    pub fn error_list(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Runs simulated proxy `idx` until its stream ends or the task is aborted.
/// `permit` (the bounded connect concurrency) is released once the node has
/// ACKed all four types.
pub async fn run_node(
    idx: usize,
    node: Node,
    url: String,
    shared: Arc<Shared>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let id = node.id.clone();
    if let Err(e) = node_stream(idx, node, url, &shared, permit).await {
        shared.error(format!("{id}: {e}"));
    }
}

async fn node_stream(
    idx: usize,
    node: Node,
    url: String,
    shared: &Shared,
    mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(), String> {
    let started = Instant::now();
    let channel = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = AggregatedDiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(8);
    // The subscriptions are queued before the call: a server that waits for
    // the first message before answering the headers cannot stall us.
    let mut node = Some(node);
    for t in TYPES {
        let req = DiscoveryRequest {
            node: node.take(),
            r#type: t as i32,
            ..Default::default()
        };
        tx.send(req).await.map_err(|_| "request stream closed")?;
    }
    let mut stream = client
        .stream_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("stream: {e}"))?
        .into_inner();
    let mut acked = 0u8;
    loop {
        let r = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err("the control plane ended the stream".into()),
            Err(e) => return Err(format!("stream: {e}")),
        };
        let hit = shared.observe(idx, &r);
        let ack = DiscoveryRequest {
            node: None,
            r#type: r.r#type,
            version_info: r.version_info,
            response_nonce: r.nonce,
            error_detail: None,
            csr: None,
        };
        tx.send(ack).await.map_err(|_| "request stream closed")?;
        let now = Instant::now();
        if hit {
            shared.hit(idx, now);
        }
        if let Some(pos) = TYPES.iter().position(|t| *t as i32 == r.r#type) {
            let before = acked;
            acked |= 1 << pos;
            if acked == 0b1111 && before != 0b1111 {
                shared.sync_times.lock().unwrap_or_else(|p| p.into_inner())[idx] =
                    Some(now - started);
                shared.synced.fetch_add(1, Ordering::SeqCst);
                permit.take();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmesh_proto::v1::{
        ClusterEndpoints, Endpoint, ForwardAction, Resource, RouteTable, VirtualHost,
        WeightedCluster,
    };

    fn routes(vhost: &str, weights: &[u32]) -> DiscoveryResponse {
        let clusters = weights
            .iter()
            .map(|&w| WeightedCluster {
                cluster: "c".into(),
                weight: w,
            })
            .collect();
        DiscoveryResponse {
            r#type: ResourceType::RouteTable as i32,
            version_info: "v".into(),
            nonce: "n".into(),
            resources: vec![Resource {
                name: "outbound".into(),
                kind: Some(resource::Kind::RouteTable(RouteTable {
                    name: "outbound".into(),
                    virtual_hosts: vec![VirtualHost {
                        name: vhost.into(),
                        domains: vec![],
                        routes: vec![ringmesh_proto::v1::Route {
                            name: "split".into(),
                            action: Some(route::Action::Forward(ForwardAction {
                                clusters,
                                ..Default::default()
                            })),
                            ..Default::default()
                        }],
                    }],
                })),
            }],
        }
    }

    fn endpoints(cluster: &str, addrs: &[&str]) -> DiscoveryResponse {
        DiscoveryResponse {
            r#type: ResourceType::Endpoints as i32,
            resources: vec![Resource {
                name: cluster.into(),
                kind: Some(resource::Kind::Endpoints(ClusterEndpoints {
                    cluster: cluster.into(),
                    endpoints: addrs
                        .iter()
                        .map(|a| Endpoint {
                            address: a.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                })),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn wants() {
        let w = Want::Weights {
            vhost: "svc-0.default:8080".into(),
            weights: vec![89, 11],
        };
        assert!(w.matches(&routes("svc-0.default:8080", &[89, 11])));
        assert!(!w.matches(&routes("svc-0.default:8080", &[90, 10])));
        assert!(!w.matches(&routes("svc-1.default:8080", &[89, 11])));
        assert!(!w.matches(&endpoints("svc-0.default:8080", &[])));

        let a = "127.1.0.1:15006";
        let present = Want::EndpointPresent {
            cluster: "svc-0.default:8080".into(),
            address: a.into(),
        };
        let absent = Want::EndpointAbsent {
            cluster: "svc-0.default:8080".into(),
            address: a.into(),
        };
        let with = endpoints("svc-0.default:8080", &["127.1.0.2:15006", a]);
        let without = endpoints("svc-0.default:8080", &["127.1.0.2:15006"]);
        assert!(present.matches(&with) && !present.matches(&without));
        assert!(absent.matches(&without) && !absent.matches(&with));
        // A node without the cluster (it does not call the service) never matches.
        let other = endpoints("svc-1.default:8080", &[]);
        assert!(!present.matches(&other) && !absent.matches(&other));
        assert!(!absent.matches(&routes("svc-0.default:8080", &[1])));
    }

    #[test]
    fn phases_record_first_hit_only() {
        let s = Shared::new(3);
        let r = endpoints("c", &["a"]);
        let want = Want::EndpointPresent {
            cluster: "c".into(),
            address: "a".into(),
        };
        // No phase: counted, never a hit.
        assert!(!s.observe(0, &r));
        s.begin(want);
        assert!(s.observe(1, &r));
        let t = Instant::now();
        s.hit(1, t);
        assert!(!s.observe(1, &r), "second match of the same node");
        s.hit(1, t + Duration::from_secs(1));
        assert_eq!(s.hits_among(&[0, 1, 2]), 1);
        let res = s.end();
        assert_eq!(res.hits[1], Some(t));
        assert_eq!(res.responses, vec![0, 2, 0]);
        assert_eq!(s.responses.load(Ordering::Relaxed), 3);
    }
}
