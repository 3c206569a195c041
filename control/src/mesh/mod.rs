//! The mesh as the control plane sees it after loading and validating the YAML
//! directory: services, traffic rules and authorization policies, with every
//! reference checked. Snapshot generation reads only these types.
//!
//! Loading (`load_dir`), validation with file/line/field errors and the
//! debounced directory watcher live in this module's submodules.

mod load;
pub mod model;
mod watch;

#[cfg(test)]
mod tests;

pub use load::{load_dir, load_texts, MeshError};
pub use watch::{watch, WatchHandle};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One validated state of the config directory. Immutable; a change produces
/// a new `Mesh`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    /// SPIFFE trust domain, default `cluster.local`.
    pub trust_domain: String,
    /// Sorted by key (`ServiceKey`'s order: name, then namespace); keys
    /// unique, so `binary_search_by(|s| s.key.cmp(k))` finds a service.
    pub services: Vec<Service>,
    /// Traffic rules in file order (files sorted by name); at most one rule
    /// per (service, port).
    pub traffic: Vec<TrafficRule>,
    pub policies: Vec<Policy>,
    /// `mesh.mtls`: the mode of services that do not set their own.
    pub mtls: MtlsMode,
    /// Content hash of every file read, for logs and status.
    pub version: String,
}

/// `name.namespace`, the key of a service everywhere in the control plane.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub name: String,
    pub namespace: String,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// A service port's protocol. `Http`, `Http2` and `Grpc` are the HTTP
/// family: the proxy serves HTTP/1.1 and HTTP/2 on their listeners and
/// traffic rules and the HTTP fields of policies apply to them alike; they
/// differ in the HTTP version the proxy speaks to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (and HTTP/2 when the original caller spoke it).
    Http,
    /// HTTP/2 to the application (h2c prior knowledge).
    Http2,
    /// gRPC: HTTP/2 to the application, like `Http2`.
    Grpc,
    /// Raw TCP, forwarded byte for byte.
    Tcp,
}

impl Protocol {
    /// `http`, `http2` or `grpc`: routed as HTTP.
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }

    /// The name as written in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    Random,
    LeastRequest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub key: ServiceKey,
    /// At least one; names and numbers unique within the service.
    pub ports: Vec<ServicePort>,
    /// Named label selectors for canary / A-B splits (e.g. version=v2).
    pub subsets: Vec<Subset>,
    /// Endpoints declared in YAML (services outside the mesh). Discovered
    /// endpoints are added by the registry, not here.
    pub static_endpoints: Vec<StaticEndpoint>,
    /// The services this one calls; `None`: every service in the mesh.
    pub calls: Option<Vec<ServiceKey>>,
    pub lb_policy: LbPolicy,
    pub connect_timeout: Option<Duration>,
    /// How the service's inbound listeners take connections (its own
    /// `mtls`, else `mesh.mtls`).
    pub mtls: MtlsMode,
}

/// How a service's proxies accept inbound connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtlsMode {
    /// Mutually authenticated TLS from a mesh identity only.
    Strict,
    /// mTLS or plaintext on one port (a mesh can be adopted gradually).
    #[default]
    Permissive,
    /// Plaintext only; callers reach it without TLS.
    Disable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServicePort {
    pub name: String,
    /// The port the application listens on inside each instance, and the port
    /// callers name (`Host: reviews:9080`).
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subset {
    pub name: String,
    /// An instance belongs to the subset when all these labels match its
    /// node labels.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticEndpoint {
    /// The instance's address for the service's first port; its other
    /// ports are reached at the same IP with their declared port numbers.
    pub address: SocketAddr,
    pub labels: BTreeMap<String, String>,
    pub zone: String,
}

/// Routing for calls to one service (like an Istio VirtualService): the
/// first matching route wins; a call matching none goes to the whole service.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficRule {
    pub name: String,
    pub service: ServiceKey,
    /// The service port the rule applies to; `None`: every HTTP-family
    /// (http, http2, grpc) port.
    pub port: Option<u16>,
    pub routes: Vec<HttpRoute>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    pub name: String,
    pub matcher: RouteMatch,
    /// Non-empty; weights sum to more than 0.
    pub split: Vec<Destination>,
    pub timeout: Option<Duration>,
    pub retries: Option<Retries>,
    pub prefix_rewrite: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub methods: Vec<String>,
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// The pattern as written; it must match the whole path (the proxy
    /// compiles it as `^(?:PATTERN)$`). Header regexes likewise.
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatch {
    pub name: String,
    pub kind: HeaderMatchKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderMatchKind {
    Exact(String),
    Present(bool),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Usually the rule's own service; may be another (A/B between services).
    pub service: ServiceKey,
    /// A subset declared on that service.
    pub subset: Option<String>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    pub attempts: u32,
    /// Envoy-style conditions: connect-failure, reset, 5xx, gateway-error,
    /// retriable-4xx.
    pub on: Vec<String>,
    pub per_try_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    /// The service the policy protects.
    pub service: ServiceKey,
    pub action: PolicyAction,
    pub rules: Vec<PolicyRule>,
}

/// All non-empty fields must match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyRule {
    pub source_identities: Vec<String>,
    pub source_namespaces: Vec<String>,
    pub methods: Vec<String>,
    /// (exact, path) pairs: `true` exact, `false` prefix.
    pub paths: Vec<(bool, String)>,
    pub ports: Vec<u16>,
}
