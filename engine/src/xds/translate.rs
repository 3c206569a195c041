//! Control-plane resources to the config model: the bootstrap file's
//! `model::File` plus every dynamic cluster (with its endpoints) and every
//! listener (with its route table inlined) becomes one `model::File`, which
//! the ordinary compiler turns into the next `Config`. A compile error's field
//! path (`listeners[3].virtual_hosts[0].routes[1]...`) is mapped back to the
//! resource it came from, so a NACK names what the control plane sent.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ringmesh_proto::v1 as pb;

use ringmesh_proto::v1::secret::Kind as SecretKind;

use super::identity;
use super::state::{route_label, State};
use crate::config::compile::{self, Config};
use crate::config::duration::Dur;
use crate::config::model;

/// Longest duration accepted; the YAML config has the same bound.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The merged model and where each entry came from.
#[derive(Debug)]
pub struct Translated {
    pub file: model::File,
    origins: Origins,
}

#[derive(Debug, Default)]
struct Origins {
    bootstrap_listeners: usize,
    bootstrap_clusters: usize,
    /// Per dynamic listener (in `file.listeners` order after the bootstrap
    /// ones): its name and the route table inlined into it.
    listeners: Vec<(String, Option<String>)>,
    clusters: Vec<String>,
}

/// Translates and compiles: the next config, or the reason to refuse it.
pub fn build(bootstrap: &model::File, source: &Path, state: &State) -> Result<Config, String> {
    let t = translate(bootstrap, state)?;
    let model = t.file.clone();
    compile::compile(t.file, source)
        .map_err(|(field, msg)| t.origins.describe(&model, &field, &msg))
}

/// The bootstrap plus the dynamic resources, as one model. Listeners whose
/// route table has not arrived yet are left out (warming) until it does.
pub fn translate(bootstrap: &model::File, state: &State) -> Result<Translated, String> {
    let mut file = bootstrap.clone();
    if let (Some(id), Some(bundle)) = (&state.identity, identity::trust_bundle(state)) {
        // The control plane's identity replaces one the bootstrap names.
        file.identity = Some(model::Identity {
            certificate: inline(&id.chain_pem),
            private_key: inline(id.key.bytes()),
            trust_bundle: inline(&identity::bundle_pem(bundle)),
        });
    }
    file.identity_pending = file.identity.is_none();
    let mut origins = Origins {
        bootstrap_listeners: file.listeners.len(),
        bootstrap_clusters: file.clusters.len(),
        ..Origins::default()
    };
    for name in state.cluster_names() {
        if bootstrap.clusters.iter().any(|c| c.name == name) {
            return Err(format!(
                "cluster {name:?}: name clashes with a cluster of the bootstrap config"
            ));
        }
        // cluster_names() only lists names cluster() finds.
        let Some(c) = state.cluster(name) else {
            continue;
        };
        let cluster =
            cluster(c, state.endpoints_of(name)).map_err(|e| format!("cluster {name:?}: {e}"))?;
        file.clusters.push(cluster);
        origins.clusters.push(name.to_owned());
    }
    for (name, l) in &state.listeners {
        if bootstrap.listeners.iter().any(|b| b.name == *name) {
            return Err(format!(
                "listener {name:?}: name clashes with a listener of the bootstrap config"
            ));
        }
        let Some(ml) = listener(l, state)? else {
            continue;
        };
        let table = (ml.protocol == model::Protocol::Http).then(|| l.route_table.clone());
        file.listeners.push(ml);
        origins.listeners.push((name.clone(), table));
    }
    Ok(Translated { file, origins })
}

fn cluster(c: &pb::Cluster, eps: Option<&pb::ClusterEndpoints>) -> Result<model::Cluster, String> {
    let lb_policy = match pb::LbPolicy::try_from(c.lb_policy) {
        Ok(pb::LbPolicy::Unspecified | pb::LbPolicy::RoundRobin) => model::LbPolicy::RoundRobin,
        Ok(pb::LbPolicy::Random) => model::LbPolicy::Random,
        Ok(pb::LbPolicy::LeastRequest) => model::LbPolicy::LeastRequest,
        Err(_) => return Err(format!("lb_policy: unknown value {}", c.lb_policy)),
    };
    let mut endpoints = Vec::new();
    for e in eps.map(|e| e.endpoints.as_slice()).unwrap_or_default() {
        let addr = socket_addr(&e.address).map_err(|m| format!("endpoint {:?}: {m}", e.address))?;
        endpoints.push(addr.to_string());
    }
    Ok(model::Cluster {
        name: c.name.clone(),
        endpoints,
        lb_policy,
        connect_timeout: opt_duration("connect_timeout", c.connect_timeout.as_ref())?
            .unwrap_or_else(model::Cluster::default_connect_timeout),
        max_idle_per_endpoint: match c.max_idle_per_endpoint {
            0 => model::Cluster::default_max_idle(),
            n => n as usize,
        },
        idle_timeout: opt_duration("idle_timeout", c.idle_timeout.as_ref())?
            .unwrap_or_else(model::Cluster::default_idle_timeout),
        mtls: cluster_mtls(c, eps)?,
        protocol: match pb::UpstreamProtocol::try_from(c.protocol) {
            Ok(pb::UpstreamProtocol::Http1) => model::UpstreamProtocol::Http1,
            Ok(pb::UpstreamProtocol::Http2) => model::UpstreamProtocol::Http2,
            Ok(pb::UpstreamProtocol::Auto) => model::UpstreamProtocol::Auto,
            Err(_) => return Err(format!("protocol: unknown value {}", c.protocol)),
        },
    })
}

/// mTLS to a mesh service: when the cluster names the identity its proxies
/// present and at least one endpoint is such a proxy. The SNI is the
/// service part of the name (`reviews.default:9080/v2` -> `reviews.default`).
fn cluster_mtls(
    c: &pb::Cluster,
    eps: Option<&pb::ClusterEndpoints>,
) -> Result<Option<model::ClusterMtls>, String> {
    let eps = eps.map(|e| e.endpoints.as_slice()).unwrap_or_default();
    if c.expected_identity.is_empty() || !eps.iter().any(|e| e.mtls) {
        return Ok(None);
    }
    let mut plaintext_endpoints = Vec::new();
    for e in eps.iter().filter(|e| !e.mtls) {
        let addr = socket_addr(&e.address).map_err(|m| format!("endpoint {:?}: {m}", e.address))?;
        plaintext_endpoints.push(addr.to_string());
    }
    let sni = c.name.split(':').next().unwrap_or_default();
    Ok(Some(model::ClusterMtls {
        identity: c.expected_identity.clone(),
        sni: (!sni.is_empty()).then(|| sni.to_owned()),
        plaintext_endpoints,
    }))
}

fn inline(pem: &std::sync::Arc<[u8]>) -> model::Pem {
    model::Pem {
        file: None,
        inline: Some(pem.clone()),
    }
}

/// `Ok(None)`: a listener that is not ready to be put in force yet (warming):
/// an HTTP listener whose route table has not arrived, or an mTLS listener
/// before the proxy holds an identity.
fn listener(l: &pb::Listener, state: &State) -> Result<Option<model::Listener>, String> {
    let ctx = |m: String| format!("listener {:?}: {m}", l.name);
    let mtls = listener_mtls(l.mtls_mode).map_err(ctx)?;
    if mtls.is_some() && state.identity.is_none() {
        return Ok(None);
    }
    let authorization = l
        .authorization_policies
        .iter()
        .map(authz_policy)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ctx)?;
    let tls = listener_tls(l, state).map_err(ctx)?;
    let address = socket_addr(&l.address)
        .map_err(|m| ctx(format!("address {:?}: {m}", l.address)))?
        .to_string();
    let protocol = protocol(l.protocol).map_err(ctx)?;
    if pb::Direction::try_from(l.direction).is_err() {
        return Err(ctx(format!("direction: unknown value {}", l.direction)));
    }
    match protocol {
        model::Protocol::Tcp => {
            if l.cluster.is_empty() {
                return Err(ctx("a TCP listener needs a cluster".into()));
            }
            if !l.route_table.is_empty() {
                return Err(ctx("a TCP listener has no route_table".into()));
            }
            Ok(Some(model::Listener {
                name: l.name.clone(),
                address,
                protocol,
                virtual_hosts: Vec::new(),
                cluster: Some(l.cluster.clone()),
                idle_timeout: opt_duration("idle_timeout", l.idle_timeout.as_ref()).map_err(ctx)?,
                mtls,
                tls,
                authorization,
            }))
        }
        model::Protocol::Http => {
            if l.route_table.is_empty() {
                return Err(ctx("an HTTP listener needs a route_table".into()));
            }
            if !l.cluster.is_empty() {
                return Err(ctx(
                    "an HTTP listener routes by route_table, not cluster".into()
                ));
            }
            // HTTP connections idle out by limits.downstream_idle_timeout;
            // a listener's own idle_timeout only applies to TCP.
            let Some(table) = state.route_tables.get(&l.route_table) else {
                return Ok(None);
            };
            Ok(Some(model::Listener {
                name: l.name.clone(),
                address,
                protocol,
                virtual_hosts: route_table(table)?,
                cluster: None,
                idle_timeout: None,
                mtls,
                tls,
                authorization,
            }))
        }
    }
}

fn listener_mtls(mode: i32) -> Result<Option<model::ListenerMtls>, String> {
    let mode = match pb::MtlsMode::try_from(mode) {
        Ok(pb::MtlsMode::Unspecified) => return Ok(None),
        Ok(pb::MtlsMode::Strict) => model::MtlsMode::Strict,
        Ok(pb::MtlsMode::Permissive) => model::MtlsMode::Permissive,
        Err(_) => return Err(format!("mtls_mode: unknown value {mode}")),
    };
    Ok(Some(model::ListenerMtls {
        mode,
        detect_timeout: None,
    }))
}

/// Edge TLS: each SNI entry's certificate and key, inline from the SECRET
/// set (`State::apply` has checked that every secret named exists).
fn listener_tls(l: &pb::Listener, state: &State) -> Result<Option<model::ListenerTls>, String> {
    if l.sni_certificates.is_empty() {
        if !l.alpn.is_empty() {
            return Err("alpn without sni_certificates".into());
        }
        return Ok(None);
    }
    let mut certificates = Vec::with_capacity(l.sni_certificates.len());
    for sni in &l.sni_certificates {
        let cert = match state.secrets.get(&sni.secret).and_then(|s| s.kind.as_ref()) {
            Some(SecretKind::TlsCertificate(t)) => t,
            Some(_) => return Err(format!("secret {:?} is not a tls_certificate", sni.secret)),
            None => return Err(format!("unknown secret {:?}", sni.secret)),
        };
        certificates.push(model::ServerCertificate {
            server_names: sni.server_names.clone(),
            certificate: inline(&cert.certificate_chain_pem.clone().into()),
            private_key: inline(&cert.private_key_pem.clone().into()),
        });
    }
    Ok(Some(model::ListenerTls {
        certificates,
        alpn: l.alpn.clone(),
    }))
}

fn authz_policy(p: &pb::AuthorizationPolicy) -> Result<model::AuthzPolicy, String> {
    let ctx = |m: String| format!("authorization policy {:?}: {m}", p.name);
    if p.name.is_empty() {
        return Err("an authorization policy has no name".into());
    }
    let action = match pb::authorization_policy::Action::try_from(p.action) {
        Ok(pb::authorization_policy::Action::Allow) => model::AuthzAction::Allow,
        Ok(pb::authorization_policy::Action::Deny) => model::AuthzAction::Deny,
        Ok(pb::authorization_policy::Action::Unspecified) => {
            return Err(ctx("action is unspecified".into()))
        }
        Err(_) => return Err(ctx(format!("action: unknown value {}", p.action))),
    };
    let mut rules = Vec::with_capacity(p.rules.len());
    for (i, r) in p.rules.iter().enumerate() {
        let mut paths = Vec::with_capacity(r.paths.len());
        for (j, pm) in r.paths.iter().enumerate() {
            let (exact, prefix) = match &pm.kind {
                Some(pb::path_match::Kind::Exact(x)) => (Some(x.clone()), None),
                Some(pb::path_match::Kind::Prefix(x)) => (None, Some(x.clone())),
                None => {
                    return Err(ctx(format!(
                        "rules[{i}].paths[{j}]: set one of exact, prefix"
                    )))
                }
            };
            paths.push(model::AuthzPath { exact, prefix });
        }
        let mut ports = Vec::with_capacity(r.ports.len());
        for port in &r.ports {
            match u16::try_from(*port) {
                Ok(p) if p > 0 => ports.push(p),
                _ => return Err(ctx(format!("rules[{i}].ports: {port} is not a port"))),
            }
        }
        rules.push(model::AuthzRule {
            identities: r.source_identities.clone(),
            namespaces: r.source_namespaces.clone(),
            methods: r.methods.clone(),
            paths,
            ports,
        });
    }
    Ok(model::AuthzPolicy {
        name: p.name.clone(),
        action,
        rules,
    })
}

fn protocol(p: i32) -> Result<model::Protocol, String> {
    match pb::Protocol::try_from(p) {
        // proto3's zero value: an HTTP listener, as in the YAML config.
        Ok(pb::Protocol::Unspecified | pb::Protocol::Http) => Ok(model::Protocol::Http),
        Ok(pb::Protocol::Tcp) => Ok(model::Protocol::Tcp),
        // An HTTP listener serves HTTP/1.1 and HTTP/2 (ALPN or the h2c
        // preface) alike; gRPC is HTTP/2.
        Ok(pb::Protocol::Http2 | pb::Protocol::Grpc) => Ok(model::Protocol::Http),
        Err(_) => Err(format!("protocol: unknown value {p}")),
    }
}

/// A route table's virtual hosts in the model's shape.
pub fn route_table(t: &pb::RouteTable) -> Result<Vec<model::VirtualHost>, String> {
    let mut out = Vec::with_capacity(t.virtual_hosts.len());
    for vh in &t.virtual_hosts {
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (i, r) in vh.routes.iter().enumerate() {
            routes.push(route(r).map_err(|m| {
                format!(
                    "route_table {:?}: route {:?}: {m}",
                    t.name,
                    route_label(vh, i, r)
                )
            })?);
        }
        out.push(model::VirtualHost {
            name: vh.name.clone(),
            domains: vh.domains.clone(),
            routes,
        });
    }
    Ok(out)
}

fn route(r: &pb::Route) -> Result<model::Route, String> {
    let m = r.r#match.clone().unwrap_or_default();
    let path = m.path.map(|p| {
        let mut pm = model::PathMatch {
            prefix: None,
            exact: None,
            regex: None,
        };
        match p {
            pb::route_match::Path::Prefix(x) => pm.prefix = Some(x),
            pb::route_match::Path::Exact(x) => pm.exact = Some(x),
            pb::route_match::Path::Regex(x) => pm.regex = Some(x),
        }
        pm
    });
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.into_iter().enumerate() {
        let mut hm = model::HeaderMatch {
            name: h.name,
            exact: None,
            present: None,
            regex: None,
        };
        match h.r#match {
            Some(pb::header_match::Match::Exact(v)) => hm.exact = Some(v),
            Some(pb::header_match::Match::Present(v)) => hm.present = Some(v),
            Some(pb::header_match::Match::Regex(v)) => hm.regex = Some(v),
            None => {
                return Err(format!(
                    "match.headers[{i}] ({:?}): set one of exact, present, regex",
                    hm.name
                ))
            }
        }
        headers.push(hm);
    }
    let (action, direct) = match &r.action {
        Some(pb::route::Action::Forward(f)) => (Some(forward(f)?), None),
        Some(pb::route::Action::DirectResponse(d)) => {
            let status = u16::try_from(d.status)
                .map_err(|_| format!("direct_response.status: {} is not a status", d.status))?;
            let direct = model::DirectResponse {
                status,
                body: d.body.clone(),
                content_type: (!d.content_type.is_empty()).then(|| d.content_type.clone()),
            };
            (None, Some(direct))
        }
        None => return Err("set one of forward, direct_response".into()),
    };
    Ok(model::Route {
        name: (!r.name.is_empty()).then(|| r.name.clone()),
        matcher: model::RouteMatch {
            path,
            methods: m.methods,
            headers,
        },
        route: action,
        direct_response: direct,
        request_headers_to_add: header_values(&r.request_headers_to_add),
        request_headers_to_remove: r.request_headers_to_remove.clone(),
        response_headers_to_add: header_values(&r.response_headers_to_add),
        response_headers_to_remove: r.response_headers_to_remove.clone(),
    })
}

fn forward(f: &pb::ForwardAction) -> Result<model::RouteAction, String> {
    let (cluster, weighted_clusters) = match f.clusters.as_slice() {
        [] => return Err("forward.clusters: names no cluster".into()),
        // One entry: no split, its weight does not matter.
        [one] => (Some(one.cluster.clone()), Vec::new()),
        several => (
            None,
            several
                .iter()
                .map(|w| model::WeightedCluster {
                    cluster: w.cluster.clone(),
                    weight: w.weight,
                })
                .collect(),
        ),
    };
    let retries = match &f.retry {
        None => None,
        Some(r) => Some(model::RetryPolicy {
            attempts: r.retries,
            on: r.retry_on.clone(),
            per_try_timeout: opt_duration(
                "forward.retry.per_try_timeout",
                r.per_try_timeout.as_ref(),
            )?,
        }),
    };
    Ok(model::RouteAction {
        cluster,
        weighted_clusters,
        prefix_rewrite: (!f.prefix_rewrite.is_empty()).then(|| f.prefix_rewrite.clone()),
        timeout: opt_duration("forward.timeout", f.timeout.as_ref())?,
        retries,
    })
}

fn header_values(hv: &[pb::HeaderValue]) -> Vec<model::HeaderValue> {
    hv.iter()
        .map(|h| model::HeaderValue {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

/// An `ip:port` literal: the control plane sends addresses, never names, and
/// this thread does not do DNS for it.
fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| "not an ip:port address".to_string())
}

/// A protobuf duration that is set: positive and at most a week.
pub fn opt_duration(field: &str, d: Option<&prost_types::Duration>) -> Result<Option<Dur>, String> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 {
        return Err(format!("{field}: must not be negative"));
    }
    if d.nanos >= 1_000_000_000 {
        return Err(format!("{field}: nanos must be below 1e9"));
    }
    // Both non-negative and checked above, so the casts are exact.
    let dur = Duration::new(d.seconds as u64, d.nanos as u32);
    if dur > MAX_DURATION {
        return Err(format!("{field}: longer than a week"));
    }
    if dur.is_zero() {
        return Err(format!(
            "{field}: must be more than 0 (leave it unset for the default)"
        ));
    }
    Ok(Some(Dur(dur)))
}

impl Origins {
    /// Names the resource behind a compile error's field path.
    fn describe(&self, file: &model::File, field: &str, msg: &str) -> String {
        let (list, index, rest) = match split_index(field) {
            Some(x) => x,
            None => return format!("bootstrap: {field}: {msg}"),
        };
        match list {
            "listeners" if index >= self.bootstrap_listeners => {
                let Some((name, table)) = self.listeners.get(index - self.bootstrap_listeners)
                else {
                    return format!("{field}: {msg}");
                };
                if let (Some(table), Some(("virtual_hosts", vi, vrest))) =
                    (table, split_index(rest))
                {
                    let vh = file
                        .listeners
                        .get(index)
                        .and_then(|l| l.virtual_hosts.get(vi));
                    let vname = vh.map_or("?", |v| v.name.as_str());
                    if let Some(("routes", ri, rrest)) = split_index(vrest) {
                        let rname = vh
                            .and_then(|v| v.routes.get(ri))
                            .and_then(|r| r.name.clone())
                            .unwrap_or_else(|| format!("{vname}/{ri}"));
                        let rrest = rrest
                            .strip_prefix("route.")
                            .map_or_else(|| rrest.to_owned(), |r| format!("forward.{r}"));
                        return join(
                            &format!("route_table {table:?}: route {rname:?}"),
                            &rrest,
                            msg,
                        );
                    }
                    return join(
                        &format!("route_table {table:?}: virtual_host {vname:?}"),
                        vrest,
                        msg,
                    );
                }
                join(&format!("listener {name:?}"), rest, msg)
            }
            "clusters" if index >= self.bootstrap_clusters => {
                match self.clusters.get(index - self.bootstrap_clusters) {
                    Some(name) => join(&format!("cluster {name:?}"), rest, msg),
                    None => format!("{field}: {msg}"),
                }
            }
            _ => format!("bootstrap: {field}: {msg}"),
        }
    }
}

fn join(what: &str, field: &str, msg: &str) -> String {
    if field.is_empty() {
        format!("{what}: {msg}")
    } else {
        format!("{what}: {field}: {msg}")
    }
}

/// `name[3].rest` -> ("name", 3, "rest"); `.` after the index is dropped.
fn split_index(path: &str) -> Option<(&str, usize, &str)> {
    let open = path.find('[')?;
    let close = open + path[open..].find(']')?;
    let index = path[open + 1..close].parse().ok()?;
    let rest = &path[close + 1..];
    Some((&path[..open], index, rest.strip_prefix('.').unwrap_or(rest)))
}
