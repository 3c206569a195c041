//! The per-node snapshot: a pure function of the shared `World` and one
//! node, giving the complete resource list of every type for that node and
//! a content-hash version per type. Names follow `notes/cp-contract.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ringmesh_proto::v1::{self, resource::Kind, ResourceType};

use crate::ca::Issued;
use crate::hash::{self, Fnv128};
use crate::mesh::{
    HeaderMatchKind, MtlsMode, PathMatch, Policy, PolicyAction, Protocol, Service, ServiceKey,
};
use crate::node::NodeInfo;
use crate::world::{duration, inbound_protocol, rule_for, ClusterRef, Hashed, World};

/// Every type, in push order.
pub const TYPES: [ResourceType; 6] = [
    ResourceType::Cluster,
    ResourceType::Endpoints,
    ResourceType::Listener,
    ResourceType::RouteTable,
    ResourceType::Secret,
    ResourceType::AuthorizationPolicy,
];

/// Position of a type in `TYPES`; `None` for UNSPECIFIED.
pub fn type_index(t: ResourceType) -> Option<usize> {
    TYPES.iter().position(|&x| x == t)
}

/// The name used in status JSON and metric labels.
pub fn type_name(t: ResourceType) -> &'static str {
    match t {
        ResourceType::Cluster => "cluster",
        ResourceType::Endpoints => "endpoints",
        ResourceType::Listener => "listener",
        ResourceType::RouteTable => "route_table",
        ResourceType::Secret => "secret",
        ResourceType::AuthorizationPolicy => "authorization_policy",
        ResourceType::Unspecified => "unspecified",
    }
}

/// The resources of one type for one node, sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeSnapshot {
    pub version: String,
    pub resources: Vec<Arc<Hashed>>,
}

impl TypeSnapshot {
    fn new(by_name: BTreeMap<String, Arc<Hashed>>) -> Self {
        let mut h = Fnv128::default();
        for r in by_name.values() {
            h.write(&r.hash.to_le_bytes());
        }
        Self {
            version: hash::version_hex(h.finish()),
            resources: by_name.into_values().collect(),
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.resources.iter().map(|r| r.name()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&v1::Resource> {
        self.resources
            .iter()
            .map(|r| &r.resource)
            .find(|r| r.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    types: Vec<TypeSnapshot>,
    /// Why the node gets nothing (its service is not in the mesh).
    pub problem: Option<String>,
    /// The services (indexes in `mesh.services`) whose instances this
    /// snapshot's endpoints come from; sorted, unique.
    pub deps: Vec<u32>,
}

impl Snapshot {
    pub fn get(&self, t: ResourceType) -> &TypeSnapshot {
        // UNSPECIFIED never reaches here: callers index with TYPES.
        &self.types[type_index(t).unwrap_or(0)]
    }
}

#[derive(Default)]
struct Builder {
    clusters: BTreeMap<String, Arc<Hashed>>,
    endpoints: BTreeMap<String, Arc<Hashed>>,
    listeners: BTreeMap<String, Arc<Hashed>>,
    routes: BTreeMap<String, Arc<Hashed>>,
    deps: Vec<u32>,
}

impl Builder {
    fn finish(mut self, problem: Option<String>) -> Snapshot {
        self.deps.sort_unstable();
        self.deps.dedup();
        Snapshot {
            deps: self.deps,
            types: vec![
                TypeSnapshot::new(self.clusters),
                TypeSnapshot::new(self.endpoints),
                TypeSnapshot::new(self.listeners),
                TypeSnapshot::new(self.routes),
                // SECRET is per stream (the node's certificate), built by
                // `ads`; AUTHORIZATION_POLICY is no longer used: policies
                // ride inside the inbound listeners.
                TypeSnapshot::new(BTreeMap::new()),
                TypeSnapshot::new(BTreeMap::new()),
            ],
            problem,
        }
    }
}

fn put(map: &mut BTreeMap<String, Arc<Hashed>>, name: String, kind: Kind) {
    map.insert(
        name.clone(),
        Hashed::new(v1::Resource {
            name,
            kind: Some(kind),
        }),
    );
}

/// A node's SECRET set: `trust-bundle` (every root and the trust domain)
/// and, once issued, `identity` (its certificate chain, no key).
pub fn secrets(
    roots: &[String],
    trust_domain: &str,
    issued: Option<(&Issued, &str)>,
) -> TypeSnapshot {
    let mut m = BTreeMap::new();
    let bundle = v1::Secret {
        name: TRUST_BUNDLE.into(),
        kind: Some(v1::secret::Kind::TrustBundle(v1::TrustBundle {
            root_certificates_pem: roots.iter().map(|r| r.as_bytes().to_vec()).collect(),
            trust_domain: trust_domain.to_owned(),
        })),
    };
    put(&mut m, TRUST_BUNDLE.into(), Kind::Secret(bundle));
    if let Some((i, request_id)) = issued {
        let identity = v1::Secret {
            name: IDENTITY.into(),
            kind: Some(v1::secret::Kind::IssuedCertificate(v1::IssuedCertificate {
                certificate_chain_pem: i.chain_pem.as_bytes().to_vec(),
                spiffe_id: i.spiffe_id.clone(),
                not_before_unix: i.not_before,
                not_after_unix: i.not_after,
                request_id: request_id.to_owned(),
            })),
        };
        put(&mut m, IDENTITY.into(), Kind::Secret(identity));
    }
    TypeSnapshot::new(m)
}

/// Names of a node's SECRET resources.
pub const TRUST_BUNDLE: &str = "trust-bundle";
pub const IDENTITY: &str = "identity";

/// Builds node `node`'s snapshot from `world`.
pub fn build(world: &World, node: &NodeInfo) -> Snapshot {
    let mut b = Builder::default();
    let key = node.service_key();
    let Some(svc) = world.service(&key) else {
        return b.finish(Some(format!(
            "service {key} is not declared in the mesh: the node gets empty resources"
        )));
    };
    let policies = world
        .mesh
        .policies
        .iter()
        .filter(|p| p.service == key)
        .map(authorization_policy)
        .collect();
    inbound(&mut b, svc, node, policies);
    outbound(&mut b, world, svc, node);
    b.finish(None)
}

/// A policy as it rides inside the inbound listeners of its service.
fn authorization_policy(p: &Policy) -> v1::AuthorizationPolicy {
    v1::AuthorizationPolicy {
        name: p.name.clone(),
        service: p.service.to_string(),
        action: match p.action {
            PolicyAction::Allow => v1::authorization_policy::Action::Allow,
            PolicyAction::Deny => v1::authorization_policy::Action::Deny,
        } as i32,
        rules: p
            .rules
            .iter()
            .map(|r| v1::AuthorizationRule {
                source_identities: r.source_identities.clone(),
                source_namespaces: r.source_namespaces.clone(),
                methods: r.methods.clone(),
                paths: r
                    .paths
                    .iter()
                    .map(|(exact, path)| v1::PathMatch {
                        kind: Some(if *exact {
                            v1::path_match::Kind::Exact(path.clone())
                        } else {
                            v1::path_match::Kind::Prefix(path.clone())
                        }),
                    })
                    .collect(),
                ports: r.ports.iter().map(|&p| u32::from(p)).collect(),
            })
            .collect(),
    }
}

/// The policies as one inbound listener (service port `port`) enforces
/// them. A rule's `ports` name service ports, but the proxy sees its
/// listener's port: a rule naming this port applies to the whole listener
/// (ports cleared), a rule naming only other ports is left out. A policy
/// left without rules stays: an ALLOW policy matching nothing still means
/// "only what an ALLOW policy matches" (Istio's allow-nothing).
fn policies_for_port(
    policies: &[v1::AuthorizationPolicy],
    port: u16,
) -> Vec<v1::AuthorizationPolicy> {
    policies
        .iter()
        .map(|p| v1::AuthorizationPolicy {
            rules: p
                .rules
                .iter()
                .filter(|r| r.ports.is_empty() || r.ports.contains(&u32::from(port)))
                .map(|r| v1::AuthorizationRule {
                    ports: Vec::new(),
                    ..r.clone()
                })
                .collect(),
            ..p.clone()
        })
        .collect()
}

/// The listener mode of a service's inbound listeners.
pub fn mtls_mode(m: MtlsMode) -> v1::MtlsMode {
    match m {
        MtlsMode::Strict => v1::MtlsMode::Strict,
        MtlsMode::Permissive => v1::MtlsMode::Permissive,
        MtlsMode::Disable => v1::MtlsMode::Unspecified,
    }
}

fn protocol(p: Protocol) -> v1::Protocol {
    match p {
        Protocol::Http => v1::Protocol::Http,
        Protocol::Http2 => v1::Protocol::Http2,
        Protocol::Grpc => v1::Protocol::Grpc,
        Protocol::Tcp => v1::Protocol::Tcp,
    }
}

/// Per port i of the node's own service: cluster and endpoints `inbound:p`
/// (the local application), listener `inbound:p` at `address:(inbound+i)`
/// and, for HTTP, the route table `inbound:p`.
/// Every inbound listener carries the service's mTLS mode and its
/// authorization policies, so a listener is never in force without them.
fn inbound(
    b: &mut Builder,
    svc: &Service,
    node: &NodeInfo,
    policies: Vec<v1::AuthorizationPolicy>,
) {
    for (i, port) in svc.ports.iter().enumerate() {
        let name = format!("inbound:{}", port.port);
        let app = match (i, node.app_port) {
            (0, Some(app)) => app,
            _ => port.port,
        };
        put(
            &mut b.clusters,
            name.clone(),
            Kind::Cluster(v1::Cluster {
                name: name.clone(),
                lb_policy: v1::LbPolicy::RoundRobin as i32,
                connect_timeout: svc.connect_timeout.map(duration),
                protocol: inbound_protocol(port.protocol) as i32,
                ..Default::default()
            }),
        );
        put(
            &mut b.endpoints,
            name.clone(),
            Kind::Endpoints(v1::ClusterEndpoints {
                cluster: name.clone(),
                endpoints: vec![v1::Endpoint {
                    address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), app).to_string(),
                    node_id: node.id.clone(),
                    zone: node.zone.clone(),
                    mtls: false,
                }],
            }),
        );
        let Some(listen) = u16::try_from(i)
            .ok()
            .and_then(|i| node.inbound_port.checked_add(i))
        else {
            continue;
        };
        let http = port.protocol.is_http();
        put(
            &mut b.listeners,
            name.clone(),
            Kind::Listener(v1::Listener {
                name: name.clone(),
                address: SocketAddr::new(node.address, listen).to_string(),
                protocol: protocol(port.protocol) as i32,
                direction: v1::Direction::Inbound as i32,
                route_table: if http { name.clone() } else { String::new() },
                cluster: if http { String::new() } else { name.clone() },
                idle_timeout: None,
                mtls_mode: mtls_mode(svc.mtls) as i32,
                authorization_policies: policies_for_port(&policies, port.port),
                ..Default::default()
            }),
        );
        if http {
            put(
                &mut b.routes,
                name.clone(),
                Kind::RouteTable(v1::RouteTable {
                    name: name.clone(),
                    virtual_hosts: vec![v1::VirtualHost {
                        name: "inbound".into(),
                        domains: vec!["*".into()],
                        routes: vec![forward_route("inbound", vec![(name.clone(), 1)])],
                    }],
                }),
            );
        }
    }
}

/// A route matching every path, forwarding to weighted clusters.
fn forward_route(name: &str, clusters: Vec<(String, u32)>) -> v1::Route {
    v1::Route {
        name: name.into(),
        r#match: Some(v1::RouteMatch {
            path: Some(v1::route_match::Path::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(v1::route::Action::Forward(v1::ForwardAction {
            clusters: clusters
                .into_iter()
                .map(|(cluster, weight)| v1::WeightedCluster { cluster, weight })
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The services `svc` calls: its `calls` list, or every service.
fn called<'w>(world: &'w World, svc: &Service) -> Vec<&'w Service> {
    let mut out: Vec<&Service> = match &svc.calls {
        None => world.mesh.services.iter().collect(),
        Some(keys) => keys.iter().filter_map(|k| world.service(k)).collect(),
    };
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    out
}

fn outbound(b: &mut Builder, world: &World, svc: &Service, node: &NodeInfo) {
    let called = called(world, svc);
    // The short name `reviews` belongs to the caller's own namespace's
    // service of that name, else to the first by namespace: two virtual
    // hosts must never claim the same domain.
    let mut short_owner: HashMap<&str, &ServiceKey> = HashMap::new();
    for t in &called {
        let owner = short_owner.entry(t.key.name.as_str()).or_insert(&t.key);
        if owner.namespace != node.service.namespace && t.key.namespace == node.service.namespace {
            *owner = &t.key;
        }
    }
    let mut refs: BTreeMap<String, ClusterRef> = BTreeMap::new();
    let mut vhosts = Vec::new();
    let mut local_ports = HashSet::from([node.outbound_port]);
    for t in &called {
        let first_http = t
            .ports
            .iter()
            .find(|p| p.protocol.is_http())
            .map(|p| p.port);
        for p in &t.ports {
            let own = ClusterRef {
                service: t.key.clone(),
                port: p.port,
                subset: None,
            };
            let own_name = own.name();
            refs.insert(own_name.clone(), own);
            match p.protocol {
                Protocol::Http | Protocol::Http2 | Protocol::Grpc => {
                    let short = short_owner.get(t.key.name.as_str()) == Some(&&t.key);
                    let mut routes = Vec::new();
                    if let Some(rule) = rule_for(&world.mesh, &t.key, p.port) {
                        for r in &rule.routes {
                            let mut clusters = Vec::new();
                            for dest in &r.split {
                                if let Some(c) = world.resolve(&t.key, p.port, dest) {
                                    let name = c.name();
                                    clusters.push((name.clone(), dest.weight));
                                    refs.insert(name, c);
                                }
                            }
                            if !clusters.is_empty() {
                                routes.push(http_route(r, clusters));
                            }
                        }
                    }
                    routes.push(forward_route("default", vec![(own_name.clone(), 1)]));
                    vhosts.push(v1::VirtualHost {
                        name: own_name,
                        domains: domains(
                            &t.key,
                            &world.mesh.trust_domain,
                            p.port,
                            first_http == Some(p.port),
                            short,
                        ),
                        routes,
                    });
                }
                Protocol::Tcp => {
                    // Two called TCP services on one port number cannot
                    // both listen on 127.0.0.1:port; the first keeps it.
                    if !local_ports.insert(p.port) {
                        continue;
                    }
                    let name = format!("outbound:{own_name}");
                    put(
                        &mut b.listeners,
                        name.clone(),
                        Kind::Listener(v1::Listener {
                            name,
                            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p.port)
                                .to_string(),
                            protocol: v1::Protocol::Tcp as i32,
                            direction: v1::Direction::Outbound as i32,
                            route_table: String::new(),
                            cluster: own_name,
                            idle_timeout: None,
                            ..Default::default()
                        }),
                    );
                }
            }
        }
    }
    if !vhosts.is_empty() {
        put(
            &mut b.listeners,
            "outbound".into(),
            Kind::Listener(v1::Listener {
                name: "outbound".into(),
                address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node.outbound_port)
                    .to_string(),
                protocol: v1::Protocol::Http as i32,
                direction: v1::Direction::Outbound as i32,
                route_table: "outbound".into(),
                cluster: String::new(),
                idle_timeout: None,
                ..Default::default()
            }),
        );
        put(
            &mut b.routes,
            "outbound".into(),
            Kind::RouteTable(v1::RouteTable {
                name: "outbound".into(),
                virtual_hosts: vhosts,
            }),
        );
    }
    for (name, r) in refs {
        if let Some(i) = world.service_index(&r.service) {
            b.deps.push(i as u32);
        }
        if let Some(c) = world.cluster(&r) {
            b.clusters.insert(name.clone(), c);
        }
        if let Some(e) = world.endpoints(&r) {
            b.endpoints.insert(name, e);
        }
    }
}

/// `NAME`, `NAME.NS`, `NAME.NS.svc`, `NAME.NS.svc.TD`, each with `:port`,
/// and without the port too for the service's first HTTP-family port.
fn domains(key: &ServiceKey, td: &str, port: u16, first_http: bool, short: bool) -> Vec<String> {
    let (n, ns) = (&key.name, &key.namespace);
    let mut bases = Vec::with_capacity(4);
    if short {
        bases.push(n.clone());
    }
    bases.push(format!("{n}.{ns}"));
    bases.push(format!("{n}.{ns}.svc"));
    bases.push(format!("{n}.{ns}.svc.{td}"));
    let mut out = Vec::with_capacity(8);
    for base in bases {
        out.push(format!("{base}:{port}"));
        if first_http {
            out.push(base);
        }
    }
    out
}

fn http_route(r: &crate::mesh::HttpRoute, clusters: Vec<(String, u32)>) -> v1::Route {
    let m = &r.matcher;
    v1::Route {
        name: r.name.clone(),
        r#match: Some(v1::RouteMatch {
            path: m.path.as_ref().map(|p| match p {
                PathMatch::Prefix(s) => v1::route_match::Path::Prefix(s.clone()),
                PathMatch::Exact(s) => v1::route_match::Path::Exact(s.clone()),
                PathMatch::Regex(s) => v1::route_match::Path::Regex(s.clone()),
            }),
            methods: m.methods.clone(),
            headers: m
                .headers
                .iter()
                .map(|h| v1::HeaderMatch {
                    name: h.name.clone(),
                    r#match: Some(match &h.kind {
                        HeaderMatchKind::Exact(s) => v1::header_match::Match::Exact(s.clone()),
                        HeaderMatchKind::Present(b) => v1::header_match::Match::Present(*b),
                        HeaderMatchKind::Regex(s) => v1::header_match::Match::Regex(s.clone()),
                    }),
                })
                .collect(),
        }),
        action: Some(v1::route::Action::Forward(v1::ForwardAction {
            clusters: clusters
                .into_iter()
                .map(|(cluster, weight)| v1::WeightedCluster { cluster, weight })
                .collect(),
            prefix_rewrite: r.prefix_rewrite.clone().unwrap_or_default(),
            timeout: r.timeout.map(duration),
            retry: r.retries.as_ref().map(|rt| v1::RetryPolicy {
                retries: rt.attempts,
                retry_on: rt.on.clone(),
                per_try_timeout: rt.per_try_timeout.map(duration),
            }),
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
