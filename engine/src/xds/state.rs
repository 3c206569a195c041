//! The proxy's view of the control plane: per resource type, the complete set
//! last applied ("state of the world") and its version, plus the clusters a
//! CLUSTER update dropped that listeners or routes still name (retained, with
//! their last endpoints, until nothing names them).
//!
//! `State::apply` checks one response's shape (names, kinds, references) and
//! returns the next state; it never touches the current one, so a refused
//! response leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};

use ringmesh_proto::v1 as pb;
use ringmesh_proto::v1::resource::Kind as PbKind;
use ringmesh_proto::v1::secret::Kind as SecretKind;

use super::identity::{self, Active};

/// The resource types the proxy subscribes to, in push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The trust bundle, the node's issued certificate, edge certificates.
    Secret,
    Cluster,
    Endpoints,
    Listener,
    RouteTable,
}

impl Kind {
    pub const COUNT: usize = 5;
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Secret,
        Kind::Cluster,
        Kind::Endpoints,
        Kind::Listener,
        Kind::RouteTable,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in logs, metrics labels and `/config_dump`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Cluster => "cluster",
            Kind::Endpoints => "endpoints",
            Kind::Listener => "listener",
            Kind::RouteTable => "route_table",
        }
    }

    pub fn proto(self) -> pb::ResourceType {
        match self {
            Kind::Secret => pb::ResourceType::Secret,
            Kind::Cluster => pb::ResourceType::Cluster,
            Kind::Endpoints => pb::ResourceType::Endpoints,
            Kind::Listener => pb::ResourceType::Listener,
            Kind::RouteTable => pb::ResourceType::RouteTable,
        }
    }

    /// None for types the proxy does not subscribe to (yet).
    pub fn from_proto(t: i32) -> Option<Kind> {
        match pb::ResourceType::try_from(t).ok()? {
            pb::ResourceType::Secret => Some(Kind::Secret),
            pb::ResourceType::Cluster => Some(Kind::Cluster),
            pb::ResourceType::Endpoints => Some(Kind::Endpoints),
            pb::ResourceType::Listener => Some(Kind::Listener),
            pb::ResourceType::RouteTable => Some(Kind::RouteTable),
            _ => None,
        }
    }
}

/// A cluster kept after the control plane dropped it, because a listener or
/// route still names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Retained {
    pub cluster: pb::Cluster,
    pub endpoints: Option<pb::ClusterEndpoints>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub clusters: BTreeMap<String, pb::Cluster>,
    /// Keyed by cluster name.
    pub endpoints: BTreeMap<String, pb::ClusterEndpoints>,
    pub listeners: BTreeMap<String, pb::Listener>,
    pub route_tables: BTreeMap<String, pb::RouteTable>,
    pub retained: BTreeMap<String, Retained>,
    /// The SECRET set: `trust-bundle`, `identity` (as sent: the certificate
    /// in force is `identity` below) and edge `tls_certificate`s.
    pub secrets: BTreeMap<String, pb::Secret>,
    /// The mesh certificate in force with its key (from a CSR of ours).
    pub identity: Option<Active>,
    /// The version applied per type ("" before the first).
    pub versions: [String; Kind::COUNT],
    /// Whether a response of the type has been applied since start.
    pub applied: [bool; Kind::COUNT],
}

impl State {
    /// Every type applied at least once and an identity held: the first
    /// complete config.
    pub fn complete(&self) -> bool {
        self.applied.iter().all(|a| *a) && self.identity.is_some()
    }

    pub fn version(&self, kind: Kind) -> &str {
        &self.versions[kind.index()]
    }

    /// A cluster the proxy has: from the last CLUSTER update, or retained.
    pub fn cluster(&self, name: &str) -> Option<&pb::Cluster> {
        self.clusters
            .get(name)
            .or_else(|| self.retained.get(name).map(|r| &r.cluster))
    }

    /// The endpoints of a cluster: from the last ENDPOINTS update, else those
    /// it had when it was retained.
    pub fn endpoints_of(&self, name: &str) -> Option<&pb::ClusterEndpoints> {
        self.endpoints
            .get(name)
            .or_else(|| self.retained.get(name).and_then(|r| r.endpoints.as_ref()))
    }

    /// Names of every cluster the proxy has, sorted.
    pub fn cluster_names(&self) -> BTreeSet<&str> {
        self.clusters
            .keys()
            .chain(self.retained.keys())
            .map(String::as_str)
            .collect()
    }

    /// Clusters named by the current listeners and route tables.
    pub fn referenced(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for l in self.listeners.values() {
            if !l.cluster.is_empty() {
                out.insert(l.cluster.clone());
            }
        }
        for t in self.route_tables.values() {
            for_each_route_cluster(t, |_, c| {
                out.insert(c.to_owned());
            });
        }
        out
    }

    /// The state after `resp` (whose type must be one of `Kind`), or why the
    /// response is refused.
    pub fn apply(&self, kind: Kind, resp: &pb::DiscoveryResponse) -> Result<State, String> {
        let mut next = self.clone();
        let mut seen = BTreeSet::new();
        for (i, r) in resp.resources.iter().enumerate() {
            if r.name.is_empty() {
                return Err(format!("{} resource [{i}]: name is empty", kind.name()));
            }
            if !seen.insert(r.name.as_str()) {
                return Err(format!("{} {:?}: listed twice", kind.name(), r.name));
            }
        }
        match kind {
            Kind::Secret => {
                let mut secrets = BTreeMap::new();
                for r in &resp.resources {
                    let Some(PbKind::Secret(s)) = &r.kind else {
                        return Err(wrong_kind(kind, r));
                    };
                    secrets.insert(r.name.clone(), identity::check_secret(r, s)?);
                }
                next.secrets = secrets;
            }
            Kind::Cluster => {
                let mut clusters = BTreeMap::new();
                for r in &resp.resources {
                    let Some(PbKind::Cluster(c)) = &r.kind else {
                        return Err(wrong_kind(kind, r));
                    };
                    check_inner_name(kind, &r.name, "cluster.name", &c.name)?;
                    let mut c = c.clone();
                    c.name.clone_from(&r.name);
                    clusters.insert(r.name.clone(), c);
                }
                // Dropped clusters that listeners or routes still name stay,
                // with the endpoints they have now.
                let referenced = self.referenced();
                for name in self.cluster_names() {
                    if clusters.contains_key(name) || !referenced.contains(name) {
                        continue;
                    }
                    if let Some(c) = self.cluster(name) {
                        let endpoints = self.endpoints_of(name).cloned();
                        next.retained.insert(
                            name.to_owned(),
                            Retained {
                                cluster: c.clone(),
                                endpoints,
                            },
                        );
                    }
                }
                next.retained.retain(|n, _| !clusters.contains_key(n));
                next.clusters = clusters;
            }
            Kind::Endpoints => {
                let mut endpoints = BTreeMap::new();
                for r in &resp.resources {
                    let Some(PbKind::Endpoints(e)) = &r.kind else {
                        return Err(wrong_kind(kind, r));
                    };
                    check_inner_name(kind, &r.name, "endpoints.cluster", &e.cluster)?;
                    let mut e = e.clone();
                    e.cluster.clone_from(&r.name);
                    endpoints.insert(r.name.clone(), e);
                }
                next.endpoints = endpoints;
            }
            Kind::Listener => {
                let mut listeners = BTreeMap::new();
                for r in &resp.resources {
                    let Some(PbKind::Listener(l)) = &r.kind else {
                        return Err(wrong_kind(kind, r));
                    };
                    check_inner_name(kind, &r.name, "listener.name", &l.name)?;
                    let mut l = l.clone();
                    l.name.clone_from(&r.name);
                    listeners.insert(r.name.clone(), l);
                }
                next.listeners = listeners;
            }
            Kind::RouteTable => {
                let mut tables = BTreeMap::new();
                for r in &resp.resources {
                    let Some(PbKind::RouteTable(t)) = &r.kind else {
                        return Err(wrong_kind(kind, r));
                    };
                    check_inner_name(kind, &r.name, "route_table.name", &t.name)?;
                    let mut t = t.clone();
                    t.name.clone_from(&r.name);
                    tables.insert(r.name.clone(), t);
                }
                next.route_tables = tables;
            }
        }
        next.check_references()?;
        // Release retained clusters nothing names any more.
        let referenced = next.referenced();
        next.retained.retain(|n, _| referenced.contains(n));
        next.versions[kind.index()].clone_from(&resp.version_info);
        next.applied[kind.index()] = true;
        Ok(next)
    }

    /// Every cluster a listener or route names exists.
    fn check_references(&self) -> Result<(), String> {
        for l in self.listeners.values() {
            if !l.cluster.is_empty() && self.cluster(&l.cluster).is_none() {
                return Err(format!(
                    "listener {:?}: unknown cluster {:?}",
                    l.name, l.cluster
                ));
            }
            for sni in &l.sni_certificates {
                match self.secrets.get(&sni.secret).and_then(|s| s.kind.as_ref()) {
                    None => {
                        return Err(format!(
                            "listener {:?}: unknown secret {:?}",
                            l.name, sni.secret
                        ))
                    }
                    Some(SecretKind::TlsCertificate(_)) => {}
                    Some(_) => {
                        return Err(format!(
                            "listener {:?}: secret {:?} is not a tls_certificate",
                            l.name, sni.secret
                        ))
                    }
                }
            }
        }
        for t in self.route_tables.values() {
            let mut bad = None;
            for_each_route_cluster(t, |route, c| {
                if bad.is_none() && self.cluster(c).is_none() {
                    bad = Some(format!(
                        "route_table {:?}: route {route:?}: unknown cluster {c:?}",
                        t.name
                    ));
                }
            });
            if let Some(e) = bad {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// The label of a route in messages: its name, else `vhost/index` (what the
/// compiler names an unnamed route).
pub fn route_label(vhost: &pb::VirtualHost, index: usize, route: &pb::Route) -> String {
    if route.name.is_empty() {
        format!("{}/{index}", vhost.name)
    } else {
        route.name.clone()
    }
}

/// Calls `f(route label, cluster)` for every cluster a forward action names.
fn for_each_route_cluster(t: &pb::RouteTable, mut f: impl FnMut(&str, &str)) {
    for vh in &t.virtual_hosts {
        for (i, r) in vh.routes.iter().enumerate() {
            if let Some(pb::route::Action::Forward(fwd)) = &r.action {
                let label = route_label(vh, i, r);
                for w in &fwd.clusters {
                    f(&label, &w.cluster);
                }
            }
        }
    }
}

fn wrong_kind(kind: Kind, r: &pb::Resource) -> String {
    let got = match &r.kind {
        None => "nothing",
        Some(PbKind::Cluster(_)) => "a cluster",
        Some(PbKind::Endpoints(_)) => "endpoints",
        Some(PbKind::Listener(_)) => "a listener",
        Some(PbKind::RouteTable(_)) => "a route_table",
        Some(PbKind::Secret(_)) => "a secret",
        Some(PbKind::AuthorizationPolicy(_)) => "an authorization_policy",
    };
    format!(
        "{} {:?}: resource holds {got}, not a {}",
        kind.name(),
        r.name,
        kind.name()
    )
}

fn check_inner_name(kind: Kind, outer: &str, field: &str, inner: &str) -> Result<(), String> {
    if inner.is_empty() || inner == outer {
        Ok(())
    } else {
        Err(format!(
            "{} {outer:?}: {field} is {inner:?}, not the resource name",
            kind.name()
        ))
    }
}
