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
    /// The proxy's mesh identity for mTLS between proxies. With `--control`
    /// the control plane issues it from the proxy's CSR instead.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// Set by the control client while its certificate is still on the way:
    /// mTLS clusters then compile without an identity and their connections
    /// fail (503) instead of the whole config being refused.
    #[serde(skip)]
    pub identity_pending: bool,
}

/// PEM material given as a file path in YAML, or held in memory when it came
/// from the control plane (or was generated in the process). In-memory PEM is
/// never serialized: `/config_dump` must not show a private key.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip)]
    pub inline: Option<std::sync::Arc<[u8]>>,
}

/// An X.509-SVID: `spiffe://<trust domain>/ns/<namespace>/sa/<service>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The certificate chain, leaf first.
    pub certificate: Pem,
    pub private_key: Pem,
    /// Every root to trust (several while a root is rotated).
    pub trust_bundle: Pem,
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
    /// A write to a client that makes no progress for this long (the client
    /// does not read) closes the connection, like nginx's `send_timeout`.
    pub downstream_send_timeout: Dur,
    /// Connections one worker serves at once; above it the worker stops
    /// accepting (new connections wait in the kernel's backlog) until one
    /// closes. None: derived from the file-descriptor limit (see
    /// `compile::auto_max_connections_per_worker`).
    pub max_connections_per_worker: Option<u32>,
    pub upstream_response_timeout: Dur,
    pub drain_timeout: Dur,
    pub http2: Http2Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_head_bytes: 60 * 1024,
            max_headers: 100,
            request_head_timeout: Dur::secs(10),
            downstream_idle_timeout: Dur::secs(60),
            downstream_send_timeout: Dur::secs(60),
            max_connections_per_worker: None,
            upstream_response_timeout: Dur::secs(15),
            drain_timeout: Dur::secs(15),
            http2: Http2Limits::default(),
        }
    }
}

/// HTTP/2 limits, for downstream connections (what we advertise and accept)
/// and, for the windows and frame size, upstream connections too. The
/// defaults are the ones Envoy recommends at the edge.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much of one stream's body a peer
    /// may send before we have forwarded it.
    pub initial_stream_window: u32,
    /// The connection-level window: all streams of one connection together.
    pub initial_connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE (16384..=16777215).
    pub max_frame_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: decoded header bytes of one request
    /// (HEADERS plus CONTINUATION); more is refused (431 / stream reset).
    pub max_header_list_size: u32,
    /// Rapid reset (CVE-2023-44487): streams the client resets within one
    /// second of opening them, per `reset_window`, before the connection is
    /// closed with GOAWAY(ENHANCE_YOUR_CALM).
    pub max_rapid_resets: u32,
    pub rapid_reset_window: Dur,
    /// SETTINGS, PING, PRIORITY and empty DATA/HEADERS/CONTINUATION frames a
    /// client may send per second before the connection is closed with
    /// GOAWAY(ENHANCE_YOUR_CALM).
    pub max_control_frames_per_second: u32,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 100,
            initial_stream_window: 256 * 1024,
            initial_connection_window: 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_header_list_size: 64 * 1024,
            max_rapid_resets: 200,
            rapid_reset_window: Dur::secs(10),
            max_control_frames_per_second: 1000,
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
    /// Mesh mTLS on an inbound listener, with the proxy's identity.
    #[serde(default)]
    pub mtls: Option<ListenerMtls>,
    /// Edge TLS: server certificates chosen by SNI.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Who may call: evaluated per request (HTTP) or connection (TCP).
    #[serde(default)]
    pub authorization: Vec<AuthzPolicy>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// mTLS from a mesh identity only.
    #[default]
    Strict,
    /// mTLS or plaintext on one port, told apart by the first bytes.
    Permissive,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerMtls {
    #[serde(default)]
    pub mode: MtlsMode,
    /// PERMISSIVE: how long to wait for the first bytes before treating the
    /// connection as plaintext.
    #[serde(default)]
    pub detect_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub certificates: Vec<ServerCertificate>,
    /// ALPN protocols to offer, in preference order.
    #[serde(default)]
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCertificate {
    /// Exact names or `*.suffix`; empty: the default certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
    pub certificate: Pem,
    pub private_key: Pem,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthzAction {
    Allow,
    Deny,
}

/// DENY policies first; then, if any ALLOW policy exists, the request must
/// match one; no policy: allowed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzPolicy {
    pub name: String,
    pub action: AuthzAction,
    /// The policy matches when any rule matches.
    pub rules: Vec<AuthzRule>,
}

/// Every non-empty field must match.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// Exact SPIFFE IDs of the caller.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Any caller identity in these namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<AuthzPath>,
    /// The listener's port (for TCP the only thing besides the identity).
    #[serde(default)]
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzPath {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
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
    /// The endpoints are ringmesh proxies: connect with mTLS and require
    /// this identity.
    #[serde(default)]
    pub mtls: Option<ClusterMtls>,
    /// What to speak to the endpoints. Endpoints that are ringmesh proxies
    /// reached over mTLS are always spoken to in HTTP/2 (the mesh hop).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

/// The HTTP version spoken to a cluster's endpoints.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
    /// Over TLS: whatever ALPN settles. In plaintext: the protocol the
    /// downstream client spoke (after a mesh hop: the one the original
    /// client spoke, carried in `ringmesh-orig-proto`).
    Auto,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMtls {
    /// The SPIFFE ID the peer proxy must present.
    pub identity: String,
    /// The server name sent in the ClientHello (default: the cluster name
    /// up to its first ':').
    #[serde(default)]
    pub sni: Option<String>,
    /// Endpoints outside the mesh, reached in plaintext.
    #[serde(default)]
    pub plaintext_endpoints: Vec<String>,
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
