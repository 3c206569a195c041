//! The YAML schema of `ringmesh-proxy --config`, exactly as users write it.
//! Everything here is plain data; `compile.rs` turns it into the immutable
//! `Config` the workers run on.

use serde::{Deserialize, Serialize};

use super::duration::Dur;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "Admin::default_address")]
    pub address: String,
}

impl Admin {
    fn default_address() -> String {
        "127.0.0.1:15000".into()
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: Self::default_address(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    pub path: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_request_head_bytes: usize,
    pub max_headers: usize,
    pub request_head_timeout: Dur,
    pub downstream_idle_timeout: Dur,
    pub upstream_response_timeout: Dur,
    pub drain_timeout: Dur,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_head_bytes: 60 * 1024,
            max_headers: 100,
            request_head_timeout: Dur::secs(10),
            downstream_idle_timeout: Dur::secs(60),
            upstream_response_timeout: Dur::secs(15),
            drain_timeout: Dur::secs(15),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Tcp,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    #[serde(default)]
    pub route: Option<RouteAction>,
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValue>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValue>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub path: Option<PathMatch>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub weighted_clusters: Vec<WeightedCluster>,
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
}

/// Envoy's retry policy: `attempts` after the first try, on the listed
/// conditions (`connect-failure`, `reset`, `5xx`, `gateway-error`,
/// `retriable-4xx`). Only requests whose body is still fully in hand are
/// retried.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub attempts: u32,
    #[serde(default)]
    pub on: Vec<String>,
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    Random,
    LeastRequest,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    #[serde(default = "Cluster::default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "Cluster::default_max_idle")]
    pub max_idle_per_endpoint: usize,
    #[serde(default = "Cluster::default_idle_timeout")]
    pub idle_timeout: Dur,
}

impl Cluster {
    /// Envoy's default. One second sits exactly on the first SYN
    /// retransmission, so a single dropped SYN would fail the connect.
    pub fn default_connect_timeout() -> Dur {
        Dur::secs(5)
    }
    /// Per worker per endpoint. Closing surplus connections after a burst
    /// leaves TIME_WAIT sockets on the proxy and new connects on the next
    /// burst; idle ones cost only a socket and are reaped by `idle_timeout`.
    pub fn default_max_idle() -> usize {
        1024
    }
    pub fn default_idle_timeout() -> Dur {
        Dur::secs(60)
    }
}
