//! Turns the YAML model into the immutable `Config` a worker runs on: names
//! resolved to indexes, regexes compiled, addresses resolved, limits checked.
//! An error is `(field path, message)`; `config::load` adds the file and line.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ringmesh_yaml::route_regex::{self, Regex};
use rustc_hash::FxHashMap;

use super::model::{self, LbPolicy, Protocol};
use crate::router::{self, Action, HeaderMatcher, PathMatcher, RouteTable};

type CResult<T> = Result<T, (String, String)>;

/// One immutable configuration. Workers hold an `Arc<Config>` for as long as a
/// connection (L4) or request (L7) that started on it is alive.
#[derive(Debug)]
pub struct Config {
    /// Set when published; 0 until then.
    pub epoch: u64,
    /// Content hash of the source file, for `/config_dump`.
    pub version: String,
    pub source: PathBuf,
    pub admin: SocketAddr,
    pub access_log: Option<PathBuf>,
    pub limits: Limits,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Arc<Cluster>>,
    pub model: model::File,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_head_bytes: usize,
    pub max_headers: usize,
    pub request_head_timeout: Duration,
    pub downstream_idle_timeout: Duration,
    pub downstream_send_timeout: Duration,
    /// None: derived from the file-descriptor limit by each worker
    /// ([`auto_max_connections_per_worker`]).
    pub max_connections_per_worker: Option<usize>,
    pub upstream_response_timeout: Duration,
    pub drain_timeout: Duration,
    pub http2: Http2Limits,
}

/// Largest `limits.max_connections_per_worker` accepted.
pub const MAX_CONNECTIONS_PER_WORKER: u32 = 10_000_000;
/// The derived per-worker connection limit never exceeds this: past it an
/// edge proxy is better served by an explicit number.
pub const AUTO_CONNECTIONS_CAP: usize = 65_536;

/// The default `limits.max_connections_per_worker`: a connection may need two
/// descriptors (client and upstream), a quarter of the descriptors (at least
/// 64) stay for everything else (listening sockets, idle pooled upstream
/// connections, the admin and control threads, log files), and the rest is
/// shared by the workers; at least 16, at most [`AUTO_CONNECTIONS_CAP`].
/// `nofile` is the soft `RLIMIT_NOFILE` after start-up raised it to the hard
/// limit.
pub fn auto_max_connections_per_worker(nofile: u64, workers: usize) -> usize {
    let nofile = nofile.min(1 << 30) as usize;
    let reserve = (nofile / 4).max(64);
    let per_worker = nofile.saturating_sub(reserve) / 2 / workers.max(1);
    per_worker.clamp(16, AUTO_CONNECTIONS_CAP)
}

/// `limits.http2`, checked.
#[derive(Debug, Clone)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    pub initial_stream_window: u32,
    pub initial_connection_window: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: u32,
    pub max_rapid_resets: u32,
    pub rapid_reset_window: Duration,
    pub max_control_frames_per_second: u32,
}

fn http2_limits(h: &model::Http2Limits) -> CResult<Http2Limits> {
    const MAX_WINDOW: u32 = (1 << 31) - 1;
    if h.max_concurrent_streams == 0 || h.max_concurrent_streams > 10_000 {
        return err(
            "limits.http2.max_concurrent_streams",
            "must be between 1 and 10000",
        );
    }
    if !(65_535..=MAX_WINDOW).contains(&h.initial_stream_window) {
        return err(
            "limits.http2.initial_stream_window",
            "must be between 65535 and 2147483647",
        );
    }
    if !(65_535..=MAX_WINDOW).contains(&h.initial_connection_window) {
        return err(
            "limits.http2.initial_connection_window",
            "must be between 65535 and 2147483647",
        );
    }
    if !(16_384..=16_777_215).contains(&h.max_frame_size) {
        return err(
            "limits.http2.max_frame_size",
            "must be between 16384 and 16777215 (RFC 9113 6.5.2)",
        );
    }
    if !(1024..=1 << 20).contains(&h.max_header_list_size) {
        return err(
            "limits.http2.max_header_list_size",
            "must be between 1024 and 1048576",
        );
    }
    if h.max_rapid_resets == 0 {
        return err("limits.http2.max_rapid_resets", "must be more than 0");
    }
    if h.rapid_reset_window.0.is_zero() {
        return err("limits.http2.rapid_reset_window", "must be more than 0");
    }
    if h.max_control_frames_per_second == 0 {
        return err(
            "limits.http2.max_control_frames_per_second",
            "must be more than 0",
        );
    }
    Ok(Http2Limits {
        max_concurrent_streams: h.max_concurrent_streams,
        initial_stream_window: h.initial_stream_window,
        initial_connection_window: h.initial_connection_window,
        max_frame_size: h.max_frame_size,
        max_header_list_size: h.max_header_list_size,
        max_rapid_resets: h.max_rapid_resets,
        rapid_reset_window: h.rapid_reset_window.0,
        max_control_frames_per_second: h.max_control_frames_per_second,
    })
}

#[derive(Debug)]
pub struct Listener {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub kind: ListenerKind,
    /// mTLS (mesh inbound) or edge TLS; None: plaintext.
    pub tls: Option<crate::tls::DownstreamTls>,
    /// Authorization policies; empty: everything is allowed.
    pub authz: crate::authz::Policies,
}

#[derive(Debug)]
pub enum ListenerKind {
    Http(RouteTable),
    Tcp {
        cluster: usize,
        idle_timeout: Duration,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Cluster {
    pub name: Arc<str>,
    pub endpoints: Vec<SocketAddr>,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
    /// mTLS to the endpoints (ringmesh proxies), with the identity they must
    /// present.
    pub tls: Option<crate::tls::UpstreamTls>,
    pub protocol: model::UpstreamProtocol,
}

const MAX_WEIGHT_TOTAL: u64 = 1_000_000;
/// Routes in one config, over every listener: far above what a control
/// plane sends (10,000 routes in a mesh, the same route per HTTP port), a
/// bound on what a hostile snapshot makes the proxy compile and hold.
pub const MAX_ROUTES: u32 = 100_000;

/// Retries beyond this multiply load on an upstream that is already failing.
const MAX_RETRY_ATTEMPTS: u32 = 10;

fn retry_policy(f: &str, r: &model::RetryPolicy) -> CResult<router::Retry> {
    if r.attempts > MAX_RETRY_ATTEMPTS {
        return err(
            format!("{f}.attempts"),
            format!("must be at most {MAX_RETRY_ATTEMPTS}"),
        );
    }
    let mut on = 0;
    for (i, c) in r.on.iter().enumerate() {
        on |= router::Retry::condition(c).ok_or_else(|| {
            (
                format!("{f}.on[{i}]"),
                format!(
                    "unknown condition {c:?} (connect-failure, reset, 5xx, gateway-error, retriable-4xx)"
                ),
            )
        })?;
    }
    if r.attempts > 0 && on == 0 {
        return err(format!("{f}.on"), "name at least one condition to retry on");
    }
    let per_try_timeout = match r.per_try_timeout {
        Some(d) if d.0.is_zero() => {
            return err(format!("{f}.per_try_timeout"), "must be more than 0")
        }
        d => d.map(|d| d.0),
    };
    Ok(router::Retry {
        attempts: r.attempts as u8,
        on,
        per_try_timeout,
    })
}

fn err<T>(field: impl Into<String>, msg: impl Into<String>) -> CResult<T> {
    Err((field.into(), msg.into()))
}

pub fn compile(file: model::File, source: &Path) -> CResult<Config> {
    let admin = resolve_one("admin.address", &file.admin.address)?;
    let l = &file.limits;
    if l.max_request_head_bytes < 256 || l.max_request_head_bytes > 1 << 20 {
        return err(
            "limits.max_request_head_bytes",
            "must be between 256 and 1048576",
        );
    }
    if l.max_headers == 0 || l.max_headers > 1000 {
        return err("limits.max_headers", "must be between 1 and 1000");
    }
    for (field, d) in [
        ("limits.request_head_timeout", l.request_head_timeout),
        ("limits.downstream_idle_timeout", l.downstream_idle_timeout),
        ("limits.downstream_send_timeout", l.downstream_send_timeout),
        (
            "limits.upstream_response_timeout",
            l.upstream_response_timeout,
        ),
    ] {
        if d.0.is_zero() {
            return err(field, "must be more than 0");
        }
    }
    if let Some(n) = l.max_connections_per_worker {
        if n == 0 || n > MAX_CONNECTIONS_PER_WORKER {
            return err(
                "limits.max_connections_per_worker",
                format!("must be between 1 and {MAX_CONNECTIONS_PER_WORKER}"),
            );
        }
    }
    let limits = Limits {
        max_request_head_bytes: l.max_request_head_bytes,
        max_headers: l.max_headers,
        request_head_timeout: l.request_head_timeout.0,
        downstream_idle_timeout: l.downstream_idle_timeout.0,
        downstream_send_timeout: l.downstream_send_timeout.0,
        max_connections_per_worker: l.max_connections_per_worker.map(|n| n as usize),
        upstream_response_timeout: l.upstream_response_timeout.0,
        drain_timeout: l.drain_timeout.0,
        http2: http2_limits(&l.http2)?,
    };

    let identity = match &file.identity {
        Some(id) => Some(crate::tls::MeshIdentity::load(id)?),
        None => None,
    };
    let mut mesh_server: Option<Arc<rustls::ServerConfig>> = None;

    let mut clusters = Vec::with_capacity(file.clusters.len());
    let mut cluster_index: FxHashMap<&str, usize> = FxHashMap::default();
    for (i, c) in file.clusters.iter().enumerate() {
        let f = format!("clusters[{i}]");
        if c.name.is_empty() {
            return err(format!("{f}.name"), "must not be empty");
        }
        if cluster_index.insert(&c.name, i).is_some() {
            return err(
                format!("{f}.name"),
                format!("duplicate cluster name {:?}", c.name),
            );
        }
        let mut endpoints = Vec::with_capacity(c.endpoints.len());
        for (j, e) in c.endpoints.iter().enumerate() {
            endpoints.push(resolve_one(&format!("{f}.endpoints[{j}]"), e)?);
        }
        if c.connect_timeout.0.is_zero() {
            return err(format!("{f}.connect_timeout"), "must be more than 0");
        }
        let tls = match &c.mtls {
            None => None,
            Some(m) => Some(cluster_tls(
                &f,
                &c.name,
                m,
                identity.as_ref(),
                file.identity_pending,
            )?),
        };
        clusters.push(Arc::new(Cluster {
            name: c.name.as_str().into(),
            endpoints,
            lb: c.lb_policy,
            connect_timeout: c.connect_timeout.0,
            max_idle_per_endpoint: c.max_idle_per_endpoint,
            idle_timeout: c.idle_timeout.0,
            tls,
            protocol: c.protocol,
        }));
    }

    let mut listeners = Vec::with_capacity(file.listeners.len());
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut next_route_id = 0u32;
    let mut regexes = route_regex::Budget::default();
    for (i, lm) in file.listeners.iter().enumerate() {
        let f = format!("listeners[{i}]");
        if lm.name.is_empty() || !names.insert(lm.name.as_str()) {
            return err(
                format!("{f}.name"),
                format!("listener name {:?} is empty or not unique", lm.name),
            );
        }
        let addr = resolve_one(&format!("{f}.address"), &lm.address)?;
        if !addrs.insert(addr) || addr == admin {
            return err(
                format!("{f}.address"),
                format!("{addr} is used twice in this config"),
            );
        }
        let kind = match lm.protocol {
            Protocol::Tcp => {
                if !lm.virtual_hosts.is_empty() {
                    return err(
                        format!("{f}.virtual_hosts"),
                        "a tcp listener has no virtual hosts",
                    );
                }
                let Some(name) = &lm.cluster else {
                    return err(format!("{f}.cluster"), "a tcp listener needs a cluster");
                };
                let Some(&cluster) = cluster_index.get(name.as_str()) else {
                    return err(format!("{f}.cluster"), format!("unknown cluster {name:?}"));
                };
                ListenerKind::Tcp {
                    cluster,
                    idle_timeout: lm.idle_timeout.map_or(Duration::from_secs(3600), |d| d.0),
                }
            }
            Protocol::Http => {
                if lm.cluster.is_some() {
                    return err(
                        format!("{f}.cluster"),
                        "an http listener routes by virtual_hosts, not cluster",
                    );
                }
                if lm.idle_timeout.is_some() {
                    return err(
                        format!("{f}.idle_timeout"),
                        "http listeners use limits.downstream_idle_timeout",
                    );
                }
                let table = compile_routes(
                    &f,
                    &lm.virtual_hosts,
                    &cluster_index,
                    &limits,
                    &mut next_route_id,
                    &mut regexes,
                )?;
                ListenerKind::Http(table)
            }
        };
        let tls = match (&lm.mtls, &lm.tls) {
            (Some(_), Some(_)) => return err(f, "mtls and tls cannot both be set"),
            (None, None) => None,
            (None, Some(t)) => Some(crate::tls::DownstreamTls::Edge {
                config: crate::tls::edge_server_config(&format!("{f}.tls"), t)?,
            }),
            (Some(m), None) => {
                let Some(id) = &identity else {
                    return err(format!("{f}.mtls"), "the config has no identity");
                };
                let config = match &mesh_server {
                    Some(c) => c.clone(),
                    None => {
                        let c = id
                            .server_config()
                            .or_else(|e| err(format!("{f}.mtls"), e))?;
                        mesh_server = Some(c.clone());
                        c
                    }
                };
                let detect = m.detect_timeout.map_or(Duration::from_secs(5), |d| d.0);
                if detect.is_zero() {
                    return err(format!("{f}.mtls.detect_timeout"), "must be more than 0");
                }
                Some(crate::tls::DownstreamTls::Mesh {
                    config,
                    permissive: (m.mode == model::MtlsMode::Permissive).then_some(detect),
                    own_id: id.id.clone(),
                })
            }
        };
        let authz = crate::authz::compile(&format!("{f}.authorization"), &lm.authorization)?;
        listeners.push(Listener {
            name: lm.name.as_str().into(),
            addr,
            kind,
            tls,
            authz,
        });
    }

    Ok(Config {
        epoch: 0,
        version: String::new(),
        source: source.to_owned(),
        admin,
        access_log: file.access_log.as_ref().map(|a| PathBuf::from(&a.path)),
        limits,
        listeners,
        clusters,
        model: file,
    })
}

fn cluster_tls(
    f: &str,
    name: &str,
    m: &model::ClusterMtls,
    identity: Option<&crate::tls::MeshIdentity>,
    identity_pending: bool,
) -> CResult<crate::tls::UpstreamTls> {
    if identity.is_none() && !identity_pending {
        return err(format!("{f}.mtls"), "the config has no identity");
    }
    if !m.identity.starts_with("spiffe://") {
        return err(
            format!("{f}.mtls.identity"),
            format!("{:?} is not a spiffe:// ID", m.identity),
        );
    }
    let sni = m
        .sni
        .clone()
        .unwrap_or_else(|| name.split(':').next().unwrap_or(name).to_owned());
    let server_name = rustls::pki_types::ServerName::try_from(sni.clone())
        .or_else(|e| err(format!("{f}.mtls.sni"), format!("{sni:?}: {e}")))?;
    let mut plaintext = Vec::with_capacity(m.plaintext_endpoints.len());
    for (j, e) in m.plaintext_endpoints.iter().enumerate() {
        plaintext.push(resolve_one(
            &format!("{f}.mtls.plaintext_endpoints[{j}]"),
            e,
        )?);
    }
    let (config, config_h2) = match identity {
        Some(id) => {
            let (h1, h2) = id
                .client_configs(&m.identity)
                .or_else(|e| err(format!("{f}.mtls"), e))?;
            (Some(h1), Some(h2))
        }
        None => (None, None),
    };
    Ok(crate::tls::UpstreamTls {
        config,
        config_h2,
        server_name,
        expected: m.identity.as_str().into(),
        plaintext,
    })
}

fn compile_routes(
    f: &str,
    vhosts: &[model::VirtualHost],
    clusters: &FxHashMap<&str, usize>,
    limits: &Limits,
    next_id: &mut u32,
    regexes: &mut route_regex::Budget,
) -> CResult<RouteTable> {
    let mut table = RouteTable {
        vhosts: Vec::with_capacity(vhosts.len()),
        exact: FxHashMap::default(),
        suffixes: Vec::new(),
        any: None,
        ported: false,
    };
    let mut vnames = HashSet::new();
    for (vi, vh) in vhosts.iter().enumerate() {
        let vf = format!("{f}.virtual_hosts[{vi}]");
        if !vnames.insert(vh.name.as_str()) {
            return err(
                format!("{vf}.name"),
                format!("duplicate virtual host {:?}", vh.name),
            );
        }
        if vh.domains.is_empty() {
            return err(
                format!("{vf}.domains"),
                "needs at least one domain (use \"*\" for any)",
            );
        }
        for (di, d) in vh.domains.iter().enumerate() {
            let df = format!("{vf}.domains[{di}]");
            let d = d.to_ascii_lowercase();
            let dup = if d == "*" {
                table.any.replace(vi).is_some()
            } else if let Some(suffix) = d.strip_prefix('*') {
                if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
                    return err(df, "a wildcard domain is written *.example.com");
                }
                let dup = table
                    .suffixes
                    .iter()
                    .any(|(s, _)| **s == *suffix.as_bytes());
                table.suffixes.push((suffix.as_bytes().into(), vi));
                dup
            } else {
                if d.contains('*') || d.is_empty() {
                    return err(df, "a domain is exact, *.suffix or *");
                }
                table.ported |= router::strip_port(d.as_bytes()).len() < d.len();
                table.exact.insert(d.as_bytes().into(), vi).is_some()
            };
            if dup {
                return err(df, format!("domain {d:?} is claimed by two virtual hosts"));
            }
        }
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (ri, r) in vh.routes.iter().enumerate() {
            let rf = format!("{vf}.routes[{ri}]");
            if *next_id >= MAX_ROUTES {
                return err(rf, format!("more than {MAX_ROUTES} routes in the config"));
            }
            let name = r
                .name
                .clone()
                .unwrap_or_else(|| format!("{}/{ri}", vh.name));
            routes.push(compile_route(
                &rf, r, name, clusters, limits, *next_id, regexes,
            )?);
            *next_id += 1;
        }
        table.vhosts.push(router::VirtualHost {
            name: vh.name.as_str().into(),
            routes,
        });
    }
    table.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    Ok(table)
}

fn compile_route(
    rf: &str,
    r: &model::Route,
    name: String,
    clusters: &FxHashMap<&str, usize>,
    limits: &Limits,
    id: u32,
    regexes: &mut route_regex::Budget,
) -> CResult<router::Route> {
    let path = match &r.matcher.path {
        None => PathMatcher::Any,
        Some(p) => match (&p.prefix, &p.exact, &p.regex) {
            (Some(x), None, None) => {
                PathMatcher::Prefix(path_bytes(&format!("{rf}.match.path.prefix"), x)?)
            }
            (None, Some(x), None) => {
                PathMatcher::Exact(path_bytes(&format!("{rf}.match.path.exact"), x)?)
            }
            (None, None, Some(x)) => {
                PathMatcher::Regex(regex(&format!("{rf}.match.path.regex"), x, regexes)?)
            }
            _ => {
                return err(
                    format!("{rf}.match.path"),
                    "set exactly one of prefix, exact, regex",
                )
            }
        },
    };
    let mut methods = Vec::new();
    for (i, m) in r.matcher.methods.iter().enumerate() {
        // Any token (RFC 9110 §9.1), as the control plane and authorization
        // rules accept: a method the control plane sends must compile here.
        if m.is_empty() || !m.bytes().all(crate::http1::codec::is_tchar) {
            return err(
                format!("{rf}.match.methods[{i}]"),
                format!("{m:?} is not an HTTP method"),
            );
        }
        methods.push(m.as_bytes().into());
    }
    let mut headers = Vec::new();
    for (i, h) in r.matcher.headers.iter().enumerate() {
        let hf = format!("{rf}.match.headers[{i}]");
        let hname = header_name(&format!("{hf}.name"), &h.name)?;
        headers.push(match (&h.exact, h.present, &h.regex) {
            (Some(v), None, None) => HeaderMatcher::Exact {
                name: hname,
                value: v.as_bytes().into(),
            },
            (None, Some(present), None) => HeaderMatcher::Present {
                name: hname,
                present,
            },
            (None, None, Some(re)) => HeaderMatcher::Regex {
                name: hname,
                regex: regex(&format!("{hf}.regex"), re, regexes)?,
            },
            _ => return err(hf, "set exactly one of exact, present, regex"),
        });
    }

    let action = match (&r.route, &r.direct_response) {
        (Some(a), None) => {
            let af = format!("{rf}.route");
            let mut targets = Vec::new();
            let mut total: u64 = 0;
            match (&a.cluster, a.weighted_clusters.is_empty()) {
                (Some(c), true) => {
                    let Some(&idx) = clusters.get(c.as_str()) else {
                        return err(format!("{af}.cluster"), format!("unknown cluster {c:?}"));
                    };
                    targets.push((idx, 1));
                    total = 1;
                }
                (None, false) => {
                    for (i, w) in a.weighted_clusters.iter().enumerate() {
                        let wf = format!("{af}.weighted_clusters[{i}]");
                        let Some(&idx) = clusters.get(w.cluster.as_str()) else {
                            return err(
                                format!("{wf}.cluster"),
                                format!("unknown cluster {:?}", w.cluster),
                            );
                        };
                        total += u64::from(w.weight);
                        if total > MAX_WEIGHT_TOTAL {
                            return err(
                                format!("{wf}.weight"),
                                format!("weights must add up to at most {MAX_WEIGHT_TOTAL}"),
                            );
                        }
                        if w.weight > 0 {
                            targets.push((idx, total as u32));
                        }
                    }
                    if total == 0 {
                        return err(format!("{af}.weighted_clusters"), "weights add up to 0");
                    }
                }
                _ => return err(af, "set exactly one of cluster, weighted_clusters"),
            }
            let prefix_rewrite = match &a.prefix_rewrite {
                None => None,
                Some(p) => {
                    if !matches!(path, PathMatcher::Prefix(_)) {
                        return err(
                            format!("{af}.prefix_rewrite"),
                            "needs a match.path.prefix route",
                        );
                    }
                    Some(path_bytes(&format!("{af}.prefix_rewrite"), p)?)
                }
            };
            let retry = match &a.retries {
                None => router::Retry::default(),
                Some(r) => retry_policy(&format!("{af}.retries"), r)?,
            };
            Action::Forward(router::Forward {
                targets,
                total_weight: total as u32,
                prefix_rewrite,
                timeout: a.timeout.map_or(limits.upstream_response_timeout, |d| d.0),
                retry,
            })
        }
        (None, Some(d)) => {
            if !(200..=599).contains(&d.status) {
                return err(format!("{rf}.direct_response.status"), "must be 200..599");
            }
            let ct = d
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain".into());
            if ct.bytes().any(|b| b.is_ascii_control()) {
                return err(
                    format!("{rf}.direct_response.content_type"),
                    "has control characters",
                );
            }
            Action::Direct(router::Direct {
                status: d.status,
                body: d.body.as_bytes().into(),
                content_type: ct.into(),
            })
        }
        _ => return err(rf, "set exactly one of route, direct_response"),
    };

    Ok(router::Route {
        id,
        name: name.into(),
        path,
        methods,
        headers,
        action,
        request_headers_to_add: header_values(
            &format!("{rf}.request_headers_to_add"),
            &r.request_headers_to_add,
        )?,
        request_headers_to_remove: header_names(
            &format!("{rf}.request_headers_to_remove"),
            &r.request_headers_to_remove,
        )?,
        response_headers_to_add: header_values(
            &format!("{rf}.response_headers_to_add"),
            &r.response_headers_to_add,
        )?,
        response_headers_to_remove: header_names(
            &format!("{rf}.response_headers_to_remove"),
            &r.response_headers_to_remove,
        )?,
    })
}

/// Anchored, with the per-regex size limit and the config's regex budget
/// (`ringmesh_yaml::route_regex`, shared with the control plane).
fn regex(f: &str, re: &str, budget: &mut route_regex::Budget) -> CResult<Regex> {
    route_regex::compile(re, budget).or_else(|e| err(f, format!("bad regex: {e}")))
}

fn path_bytes(f: &str, p: &str) -> CResult<Box<[u8]>> {
    if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return err(
            f,
            format!("{p:?} is not a path (starts with /, no spaces or control characters)"),
        );
    }
    Ok(p.as_bytes().into())
}

fn header_name(f: &str, n: &str) -> CResult<Box<[u8]>> {
    if n.is_empty() || !n.bytes().all(crate::http1::codec::is_tchar) {
        return err(f, format!("{n:?} is not a valid header name"));
    }
    Ok(n.to_ascii_lowercase().into_bytes().into())
}

fn header_names(f: &str, names: &[String]) -> CResult<Vec<Box<[u8]>>> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| header_name(&format!("{f}[{i}]"), n))
        .collect()
}

fn header_values(f: &str, hv: &[model::HeaderValue]) -> CResult<Vec<router::HeaderEdit>> {
    let mut out = Vec::with_capacity(hv.len());
    for (i, h) in hv.iter().enumerate() {
        let name = header_name(&format!("{f}[{i}].name"), &h.name)?;
        if h.value
            .bytes()
            .any(|b| (b < b' ' && b != b'\t') || b == 0x7f)
        {
            return err(format!("{f}[{i}].value"), "has control characters");
        }
        out.push((name, h.value.as_bytes().into()));
    }
    Ok(out)
}

fn resolve_one(f: &str, addr: &str) -> CResult<SocketAddr> {
    match addr.to_socket_addrs() {
        Ok(mut it) => match it.next() {
            Some(a) => Ok(a),
            None => err(f, format!("{addr:?} resolves to no address")),
        },
        Err(e) => err(f, format!("{addr:?} is not host:port ({e})")),
    }
}
