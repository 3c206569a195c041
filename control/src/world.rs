//! The shared picture every stream task builds its node's snapshot from: the
//! mesh in force plus the registered instances of each service. The parts
//! that are the same for every caller of a service (its outbound clusters
//! and their endpoint sets, the large part of most snapshots) are built and
//! hashed once per change here instead of once per node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use prost::Message;
use ringmesh_proto::v1::{self, resource::Kind};

use crate::hash;
use crate::mesh::{LbPolicy, Mesh, MtlsMode, Protocol, Service, ServiceKey, TrafficRule};
use crate::node::NodeInfo;

/// A resource with the content hash of its encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Hashed {
    pub resource: v1::Resource,
    pub hash: u128,
}

impl Hashed {
    pub fn new(resource: v1::Resource) -> Arc<Self> {
        let hash = hash::hash_bytes(&resource.encode_to_vec());
        Arc::new(Self { resource, hash })
    }

    pub fn name(&self) -> &str {
        &self.resource.name
    }
}

/// An outbound cluster: a port of a service, optionally narrowed to a subset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterRef {
    pub service: ServiceKey,
    pub port: u16,
    pub subset: Option<String>,
}

impl ClusterRef {
    /// `reviews.default:9080`, `reviews.default:9080/v2`.
    pub fn name(&self) -> String {
        match &self.subset {
            None => format!("{}:{}", self.service, self.port),
            Some(s) => format!("{}:{}/{}", self.service, self.port, s),
        }
    }
}

pub struct World {
    /// Bumped on every rebuild; for logs.
    pub generation: u64,
    /// The registry generation this world was built from: a new stream waits
    /// for a world that includes its own registration before its first push.
    pub registry_generation: u64,
    pub mesh: Arc<Mesh>,
    /// Registered instances (connected or within their grace period) per
    /// announced service, sorted by node id. Services not in the mesh too.
    pub instances: BTreeMap<ServiceKey, Vec<Arc<NodeInfo>>>,
    services: HashMap<ServiceKey, usize>,
    /// Per mesh service (by index in `mesh.services`): the generation at
    /// which its registered instances last changed. A stream whose snapshot
    /// uses none of the services changed since it last built skips the
    /// rebuild, so a proxy joining wakes every stream but costs only its
    /// callers a snapshot.
    pub instances_changed: Vec<u64>,
    clusters: HashMap<String, Arc<Hashed>>,
    endpoints: HashMap<String, Arc<Hashed>>,
}

impl World {
    pub fn new(
        generation: u64,
        registry_generation: u64,
        mesh: Arc<Mesh>,
        instances: BTreeMap<ServiceKey, Vec<Arc<NodeInfo>>>,
        prev: Option<&World>,
    ) -> Self {
        let services = mesh
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.clone(), i))
            .collect();
        let mut world = Self {
            generation,
            registry_generation,
            mesh,
            instances,
            instances_changed: Vec::new(),
            services,
            clusters: HashMap::new(),
            endpoints: HashMap::new(),
        };
        world.instances_changed = world
            .mesh
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| match prev {
                Some(p)
                    if Arc::ptr_eq(&p.mesh, &world.mesh)
                        && p.instances.get(&s.key) == world.instances.get(&s.key) =>
                {
                    p.instances_changed[i]
                }
                _ => generation,
            })
            .collect();
        let mut refs = BTreeSet::new();
        for s in &world.mesh.services {
            for p in &s.ports {
                refs.insert(ClusterRef {
                    service: s.key.clone(),
                    port: p.port,
                    subset: None,
                });
            }
        }
        for rule in &world.mesh.traffic {
            let Some(svc) = world.service(&rule.service) else {
                continue;
            };
            for port in rule_ports(svc, rule) {
                for route in &rule.routes {
                    for dest in &route.split {
                        if let Some(r) = world.resolve(&rule.service, port, dest) {
                            refs.insert(r);
                        }
                    }
                }
            }
        }
        for r in refs {
            let name = r.name();
            if let Some(c) = world.build_cluster(&r) {
                world.clusters.insert(name.clone(), c);
            }
            if let Some(e) = world.build_endpoints(&r) {
                world.endpoints.insert(name, e);
            }
        }
        world
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(key).map(|&i| &self.mesh.services[i])
    }

    /// Index of a service in `mesh.services` (and `instances_changed`).
    pub fn service_index(&self, key: &ServiceKey) -> Option<usize> {
        self.services.get(key).copied()
    }

    /// The outbound cluster resource of `r` (cached when the mesh names it).
    pub fn cluster(&self, r: &ClusterRef) -> Option<Arc<Hashed>> {
        match self.clusters.get(&r.name()) {
            Some(c) => Some(c.clone()),
            None => self.build_cluster(r),
        }
    }

    /// The endpoint set of the outbound cluster `r`.
    pub fn endpoints(&self, r: &ClusterRef) -> Option<Arc<Hashed>> {
        match self.endpoints.get(&r.name()) {
            Some(e) => Some(e.clone()),
            None => self.build_endpoints(r),
        }
    }

    /// Discovered plus static endpoints of a service's first port, for the
    /// `ringmesh_control_endpoints` gauge.
    pub fn endpoint_count(&self, svc: &Service) -> usize {
        let discovered = self.instances.get(&svc.key).map_or(0, Vec::len);
        discovered + svc.static_endpoints.len()
    }

    /// The cluster a split destination of the rule for (`rule_service`,
    /// `port`) sends to: the same port of the rule's own service; on another
    /// service its port with the same number, else its first HTTP-family
    /// (http, http2, grpc) port.
    pub fn resolve(
        &self,
        rule_service: &ServiceKey,
        port: u16,
        dest: &crate::mesh::Destination,
    ) -> Option<ClusterRef> {
        let target = self.service(&dest.service)?;
        let dest_port =
            if &dest.service == rule_service || target.ports.iter().any(|p| p.port == port) {
                port
            } else {
                target.ports.iter().find(|p| p.protocol.is_http())?.port
            };
        if let Some(subset) = &dest.subset {
            target.subsets.iter().find(|s| &s.name == subset)?;
        }
        Some(ClusterRef {
            service: dest.service.clone(),
            port: dest_port,
            subset: dest.subset.clone(),
        })
    }

    fn build_cluster(&self, r: &ClusterRef) -> Option<Arc<Hashed>> {
        let svc = self.service(&r.service)?;
        let port = svc.ports.iter().find(|p| p.port == r.port)?;
        let name = r.name();
        let cluster = v1::Cluster {
            name: name.clone(),
            lb_policy: lb_policy(svc.lb_policy) as i32,
            connect_timeout: svc.connect_timeout.map(duration),
            max_idle_per_endpoint: 0,
            idle_timeout: None,
            expected_identity: format!(
                "spiffe://{}/ns/{}/sa/{}",
                self.mesh.trust_domain, svc.key.namespace, svc.key.name
            ),
            protocol: outbound_protocol(port.protocol) as i32,
        };
        Some(Hashed::new(v1::Resource {
            name,
            kind: Some(Kind::Cluster(cluster)),
        }))
    }

    fn build_endpoints(&self, r: &ClusterRef) -> Option<Arc<Hashed>> {
        let svc = self.service(&r.service)?;
        let index = svc.ports.iter().position(|p| p.port == r.port)?;
        let labels = match &r.subset {
            None => None,
            Some(name) => Some(&svc.subsets.iter().find(|s| &s.name == name)?.labels),
        };
        let selected = |node_labels: &BTreeMap<String, String>| {
            labels.is_none_or(|want| want.iter().all(|(k, v)| node_labels.get(k) == Some(v)))
        };
        let mut endpoints = Vec::new();
        for node in self.instances.get(&svc.key).into_iter().flatten() {
            if !selected(&node.labels) {
                continue;
            }
            // An inbound base port too close to 65535 leaves later ports out.
            let Some(port) = u16::try_from(index)
                .ok()
                .and_then(|i| node.inbound_port.checked_add(i))
            else {
                continue;
            };
            endpoints.push(v1::Endpoint {
                address: SocketAddr::new(node.address, port).to_string(),
                node_id: node.id.clone(),
                zone: node.zone.clone(),
                // A proxy's inbound listener: TLS unless its service
                // turned mTLS off.
                mtls: svc.mtls != MtlsMode::Disable,
            });
        }
        for se in &svc.static_endpoints {
            if !selected(&se.labels) {
                continue;
            }
            let address = if index == 0 {
                se.address
            } else {
                SocketAddr::new(se.address.ip(), r.port)
            };
            endpoints.push(v1::Endpoint {
                address: address.to_string(),
                node_id: String::new(),
                zone: se.zone.clone(),
                mtls: false,
            });
        }
        endpoints.sort_by(|a, b| (&a.address, &a.node_id).cmp(&(&b.address, &b.node_id)));
        let name = r.name();
        Some(Hashed::new(v1::Resource {
            name: name.clone(),
            kind: Some(Kind::Endpoints(v1::ClusterEndpoints {
                cluster: name,
                endpoints,
            })),
        }))
    }
}

/// The HTTP-family ports of `svc` a traffic rule applies to.
pub fn rule_ports(svc: &Service, rule: &TrafficRule) -> Vec<u16> {
    svc.ports
        .iter()
        .filter(|p| p.protocol.is_http() && rule.port.is_none_or(|want| want == p.port))
        .map(|p| p.port)
        .collect()
}

/// The traffic rule for calls to (`svc`, `port`): one naming the port wins
/// over one for every port.
pub fn rule_for<'m>(mesh: &'m Mesh, svc: &ServiceKey, port: u16) -> Option<&'m TrafficRule> {
    let mut any_port = None;
    for rule in mesh.traffic.iter().filter(|r| &r.service == svc) {
        match rule.port {
            Some(p) if p == port => return Some(rule),
            None if any_port.is_none() => any_port = Some(rule),
            _ => {}
        }
    }
    any_port
}

/// The HTTP version a caller's proxy speaks to a service port's endpoints
/// outside the mesh (static endpoints): HTTP/2 (h2c prior knowledge in
/// plaintext) for http2 and grpc, HTTP/1.1 for http. Endpoints that are
/// ringmesh proxies (`mtls`) are spoken to in HTTP/2 whatever this says: the
/// engine upgrades the mesh hop itself. Meaningless for tcp.
pub fn outbound_protocol(p: Protocol) -> v1::UpstreamProtocol {
    match p {
        Protocol::Http2 | Protocol::Grpc => v1::UpstreamProtocol::Http2,
        Protocol::Http | Protocol::Tcp => v1::UpstreamProtocol::Http1,
    }
}

/// The HTTP version a proxy speaks to its own application (the inbound
/// cluster): http2 and grpc apps get HTTP/2 (h2c prior knowledge); an http
/// app gets HTTP/1.1 whatever its client spoke (Istio's meaning of `http`):
/// an app that declared `http` may well speak nothing else. `auto` (what the
/// original client spoke) remains for static configs.
pub fn inbound_protocol(p: Protocol) -> v1::UpstreamProtocol {
    match p {
        Protocol::Http2 | Protocol::Grpc => v1::UpstreamProtocol::Http2,
        Protocol::Http | Protocol::Tcp => v1::UpstreamProtocol::Http1,
    }
}

pub fn lb_policy(p: LbPolicy) -> v1::LbPolicy {
    match p {
        LbPolicy::RoundRobin => v1::LbPolicy::RoundRobin,
        LbPolicy::Random => v1::LbPolicy::Random,
        LbPolicy::LeastRequest => v1::LbPolicy::LeastRequest,
    }
}

pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9.
        nanos: d.subsec_nanos() as i32,
    }
}
