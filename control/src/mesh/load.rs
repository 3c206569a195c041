//! Reads the config directory into one validated `Mesh`: lists the YAML files,
//! parses each against `model`, merges them and checks every name, reference
//! and limit. The first problem found is returned as a `MeshError` naming the
//! file, the line and the field.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringmesh_yaml::{locate, route_regex};

use super::model;
use super::{
    Destination, HeaderMatch, HeaderMatchKind, HttpRoute, LbPolicy, Mesh, MtlsMode, PathMatch,
    Policy, PolicyAction, PolicyRule, Protocol, Retries, RouteMatch, Service, ServiceKey,
    ServicePort, StaticEndpoint, Subset, TrafficRule,
};

/// A file larger than this is refused before it is parsed.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// All files of the directory together.
pub const MAX_TOTAL_BYTES: u64 = 32 << 20;
pub const MAX_FILES: usize = 1_000;
pub const MAX_SERVICES: usize = 10_000;
pub const MAX_TRAFFIC_RULES: usize = 10_000;
/// Routes summed over every traffic rule.
pub const MAX_ROUTES: usize = 10_000;
pub const MAX_POLICIES: usize = 10_000;
/// YAML nodes (scalars, lists, maps) in all files together, with aliases
/// expanded: a legitimate mesh at every other limit stays well below it, and
/// it keeps an alias bomb from expanding into gigabytes.
pub const MAX_NODES: usize = 4_000_000;
/// Bound on one weight and on the sum of a split's weights.
pub const MAX_WEIGHT: u64 = 1_000_000;
pub const MAX_RETRY_ATTEMPTS: u64 = 10;
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Retry conditions understood by the proxy (Envoy's names).
pub const RETRY_CONDITIONS: &[&str] = &[
    "connect-failure",
    "reset",
    "5xx",
    "gateway-error",
    "retriable-4xx",
];

/// What is wrong with the config directory, and where.
pub type MeshError = ringmesh_yaml::ConfigError;

/// Reads every `*.yaml` / `*.yml` file directly in `dir` (in file-name order;
/// dotfiles, names ending in `~` and subdirectories are skipped; symlinks are
/// followed, so a Kubernetes ConfigMap mount works) and returns the validated
/// mesh. An empty directory is a valid, empty mesh.
pub fn load_dir(dir: &Path) -> Result<Mesh, MeshError> {
    let sources = read_sources(dir)?;
    build(&sources)
}

/// `load_dir` without the directory: each `(path, text)` is one file, in the
/// order given (`load_dir` sorts by name). For tools and the fuzz target
/// `control_yaml` (fuzz/); the paths only name the files in errors and feed
/// the version hash. The file-size and file-count limits of reading a
/// directory do not apply; every other check does.
pub fn load_texts(files: &[(PathBuf, String)]) -> Result<Mesh, MeshError> {
    let sources: Vec<Source> = files
        .iter()
        .map(|(path, text)| Source {
            path: path.clone(),
            text: text.clone(),
        })
        .collect();
    build(&sources)
}

/// One file as read: its path (for errors) and text.
pub(super) struct Source {
    pub path: PathBuf,
    pub text: String,
}

fn dir_error(dir: &Path, message: String) -> MeshError {
    MeshError {
        file: dir.to_owned(),
        line: None,
        field: String::new(),
        message,
    }
}

fn is_config_name(name: &str) -> bool {
    !name.starts_with('.')
        && !name.ends_with('~')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

fn read_sources(dir: &Path) -> Result<Vec<Source>, MeshError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| dir_error(dir, format!("cannot read the config directory: {e}")))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| dir_error(dir, format!("cannot read the config directory: {e}")))?;
        // Names that are not UTF-8 cannot be told apart as *.yaml; skip them.
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_config_name(&name) {
            continue;
        }
        names.push(name);
    }
    names.sort();
    let mut sources = Vec::new();
    let mut total: u64 = 0;
    for name in names {
        let path = dir.join(&name);
        let file_error = |message: String| MeshError {
            file: path.clone(),
            line: None,
            field: String::new(),
            message,
        };
        // `metadata` follows symlinks: a ConfigMap's files are links into `..data`.
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            // Deleted between listing and reading, or a dangling link left by a
            // ConfigMap swap: the file is gone, which is what we load.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(file_error(format!("cannot read: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| file_error(format!("cannot read: {e}")))?;
        if meta.is_dir() {
            continue;
        }
        if sources.len() == MAX_FILES {
            return Err(file_error(format!(
                "more than {MAX_FILES} files in the config directory"
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| file_error(format!("cannot read: {e}")))?;
        let len = bytes.len() as u64;
        if len > MAX_FILE_BYTES {
            return Err(file_error(format!(
                "file is larger than the limit of {MAX_FILE_BYTES} bytes"
            )));
        }
        total += len;
        if total > MAX_TOTAL_BYTES {
            return Err(file_error(format!(
                "the config directory holds more than {MAX_TOTAL_BYTES} bytes"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            file_error(format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()))
        })?;
        sources.push(Source { path, text });
    }
    Ok(sources)
}

/// Content hash over (file name, text) of every file read; not cryptographic,
/// it only tells operators whether two states are the same.
fn version(sources: &[Source]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: &[u8]| {
        for &x in b {
            h = (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
        }
    };
    for s in sources {
        let name = s
            .path
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or(b"");
        feed(&(name.len() as u64).to_le_bytes());
        feed(name);
        feed(&(s.text.len() as u64).to_le_bytes());
        feed(s.text.as_bytes());
    }
    format!("{h:016x}")
}

fn parse(src: &Source) -> Result<model::File, MeshError> {
    // A file of only comments is a null document: an empty mesh part.
    let file: Option<model::File> = serde_yaml::from_str(&src.text).map_err(|e| {
        // serde_yaml puts the field path at the front and the location at the
        // end of its message; keep the path, move the line up front.
        let mut msg = e.to_string();
        if let Some(cut) = msg.find(" at line ") {
            msg.truncate(cut);
        }
        let (field, message) = match msg.split_once(": ") {
            Some((f, m)) if !f.contains(' ') => (f.to_owned(), m.to_owned()),
            _ => (String::new(), msg),
        };
        MeshError {
            file: src.path.clone(),
            // serde_yaml gives no location for a second document.
            line: e
                .location()
                .map(|l| l.line())
                .or_else(|| locate::second_document(&src.text)),
            field,
            message: ringmesh_yaml::clip(message),
        }
    })?;
    Ok(file.unwrap_or_default())
}

/// A problem inside one file: (field path, message).
type FieldError = (String, String);
type FResult<T> = Result<T, FieldError>;

fn ferr<T>(field: impl Into<String>, message: impl Into<String>) -> FResult<T> {
    Err((field.into(), message.into()))
}

/// Turns field errors into `MeshError`s; computes lines only on the error path.
struct Files<'a> {
    sources: &'a [Source],
}

impl Files<'_> {
    fn line(&self, file: usize, field: &str) -> Option<usize> {
        let lines = locate::field_lines(&self.sources[file].text);
        locate::line_of(&lines, field)
    }

    fn error(&self, file: usize, (field, message): FieldError) -> MeshError {
        MeshError {
            file: self.sources[file].path.clone(),
            line: self.line(file, &field),
            field,
            message: ringmesh_yaml::clip(message),
        }
    }

    /// `services.yaml:12`, for "already declared in ..." messages.
    fn place(&self, file: usize, field: &str) -> String {
        let name = self.sources[file]
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self.line(file, field) {
            Some(l) => format!("{name}:{l}"),
            None => name,
        }
    }
}

/// Where an item was declared: file index and index in that file's list.
#[derive(Clone, Copy)]
struct At {
    file: usize,
    index: usize,
}

pub(super) fn build(sources: &[Source]) -> Result<Mesh, MeshError> {
    let files = Files { sources };
    let mut nodes = 0usize;
    let mut parsed = Vec::with_capacity(sources.len());
    for src in sources {
        // Counted before serde_yaml runs: it would expand aliases first; and
        // its parser takes the square of the nesting depth.
        match locate::precheck(&src.text, MAX_NODES - nodes) {
            Ok(n) => nodes += n,
            Err(r) => {
                let (line, message) = match r {
                    locate::Refused::TooManyValues { line } => (
                        line,
                        format!(
                            "more than {MAX_NODES} YAML values in the config directory (aliases expanded)"
                        ),
                    ),
                    locate::Refused::TooDeep { line } => (
                        line,
                        format!("nested more than {} levels deep", locate::MAX_NESTING),
                    ),
                };
                return Err(MeshError {
                    file: src.path.clone(),
                    line: Some(line),
                    field: String::new(),
                    message,
                });
            }
        }
        parsed.push(parse(src)?);
    }

    // mesh: at most once.
    let mut trust_domain = DEFAULT_TRUST_DOMAIN.to_owned();
    let mut mesh_mtls = MtlsMode::default();
    let mut mesh_at: Option<usize> = None;
    for (fi, f) in parsed.iter().enumerate() {
        let Some(m) = &f.mesh else { continue };
        if let Some(first) = mesh_at {
            return Err(files.error(
                fi,
                (
                    "mesh".into(),
                    format!("is already set in {}", files.place(first, "mesh")),
                ),
            ));
        }
        mesh_at = Some(fi);
        if let Some(td) = &m.trust_domain {
            check_trust_domain(td).map_err(|m| files.error(fi, ("mesh.trust_domain".into(), m)))?;
            trust_domain = td.clone();
        }
        if let Some(m) = m.mtls {
            mesh_mtls = mtls_mode(m);
        }
    }

    // Services: each on its own, then duplicates across files.
    let mut services: Vec<(At, Service)> = Vec::new();
    let mut by_key: HashMap<ServiceKey, usize> = HashMap::new();
    for (fi, f) in parsed.iter().enumerate() {
        for (i, s) in f.services.iter().enumerate() {
            let at = At { file: fi, index: i };
            let field = format!("services[{i}]");
            if services.len() == MAX_SERVICES {
                return Err(files.error(
                    fi,
                    (
                        field,
                        format!("more than {MAX_SERVICES} services in the config directory"),
                    ),
                ));
            }
            let mut svc = service(&field, s).map_err(|e| files.error(fi, e))?;
            svc.mtls = s.mtls.map_or(mesh_mtls, mtls_mode);
            if let Some(&first) = by_key.get(&svc.key) {
                let a = services[first].0;
                return Err(files.error(
                    fi,
                    (
                        format!("{field}.name"),
                        format!(
                            "service {} is already declared in {}",
                            svc.key,
                            files.place(a.file, &format!("services[{}].name", a.index))
                        ),
                    ),
                ));
            }
            by_key.insert(svc.key.clone(), services.len());
            services.push((at, svc));
        }
    }
    let known = |k: &ServiceKey| by_key.get(k).map(|&i| &services[i].1);

    // `calls` name known services.
    let mut calls_of: Vec<Option<Vec<ServiceKey>>> = Vec::with_capacity(services.len());
    for (at, _) in &services {
        let raw = &parsed[at.file].services[at.index];
        let Some(list) = &raw.calls else {
            calls_of.push(None);
            continue;
        };
        let mut keys = Vec::with_capacity(list.len());
        let mut seen = HashSet::new();
        for (j, c) in list.iter().enumerate() {
            let f = format!("services[{}].calls[{j}]", at.index);
            let key = service_ref(c)
                .and_then(|k| match known(&k) {
                    Some(_) => Ok(k),
                    None => Err(format!("unknown service {k}")),
                })
                .map_err(|m| files.error(at.file, (f.clone(), m)))?;
            if !seen.insert(key.clone()) {
                return Err(files.error(at.file, (f, format!("{key} is listed twice"))));
            }
            keys.push(key);
        }
        calls_of.push(Some(keys));
    }

    // Traffic rules.
    let mut traffic = Vec::new();
    let mut rule_names: HashMap<String, At> = HashMap::new();
    // Per service: the ports already covered, `None` = every HTTP-family port.
    let mut covered: HashMap<ServiceKey, Vec<(Option<u16>, At)>> = HashMap::new();
    let mut routes_total = 0usize;
    // The proxy's budget for all regexes of its config: a mesh whose regexes
    // exceed it could not be pushed anyway.
    let mut regexes = route_regex::Budget::default();
    for (fi, f) in parsed.iter().enumerate() {
        for (i, r) in f.traffic.iter().enumerate() {
            let at = At { file: fi, index: i };
            let field = format!("traffic[{i}]");
            if traffic.len() == MAX_TRAFFIC_RULES {
                return Err(files.error(
                    fi,
                    (
                        field,
                        format!(
                            "more than {MAX_TRAFFIC_RULES} traffic rules in the config directory"
                        ),
                    ),
                ));
            }
            routes_total += r.routes.len();
            if routes_total > MAX_ROUTES {
                return Err(files.error(
                    fi,
                    (
                        format!("{field}.routes"),
                        format!("more than {MAX_ROUTES} routes in the config directory"),
                    ),
                ));
            }
            let rule =
                traffic_rule(&field, r, &known, &mut regexes).map_err(|e| files.error(fi, e))?;
            if let Some(first) = rule_names.get(&rule.name) {
                return Err(files.error(
                    fi,
                    (
                        format!("{field}.name"),
                        format!(
                            "traffic rule {:?} is already declared in {}",
                            rule.name,
                            files.place(first.file, &format!("traffic[{}].name", first.index))
                        ),
                    ),
                ));
            }
            let taken = covered.entry(rule.service.clone()).or_default();
            if let Some((other_port, other)) = taken
                .iter()
                .find(|(p, _)| p.is_none() || rule.port.is_none() || *p == rule.port)
            {
                let what = match other_port {
                    Some(p) => format!("port {p} of {}", rule.service),
                    None => format!("every HTTP (http, http2, grpc) port of {}", rule.service),
                };
                let other_name = &parsed[other.file].traffic[other.index].name;
                return Err(files.error(
                    fi,
                    (
                        if rule.port.is_some() {
                            format!("{field}.port")
                        } else {
                            format!("{field}.service")
                        },
                        format!(
                            "traffic rule {other_name:?} ({}) already applies to {what}",
                            files.place(other.file, &format!("traffic[{}].name", other.index))
                        ),
                    ),
                ));
            }
            taken.push((rule.port, at));
            rule_names.insert(rule.name.clone(), at);
            traffic.push(rule);
        }
    }

    // Policies.
    let mut policies = Vec::new();
    let mut policy_names: HashMap<String, At> = HashMap::new();
    for (fi, f) in parsed.iter().enumerate() {
        for (i, p) in f.policies.iter().enumerate() {
            let field = format!("policies[{i}]");
            if policies.len() == MAX_POLICIES {
                return Err(files.error(
                    fi,
                    (
                        field,
                        format!("more than {MAX_POLICIES} policies in the config directory"),
                    ),
                ));
            }
            let policy = policy(&field, p, &known).map_err(|e| files.error(fi, e))?;
            if let Some(first) = policy_names.get(&policy.name) {
                return Err(files.error(
                    fi,
                    (
                        format!("{field}.name"),
                        format!(
                            "policy {:?} is already declared in {}",
                            policy.name,
                            files.place(first.file, &format!("policies[{}].name", first.index))
                        ),
                    ),
                ));
            }
            policy_names.insert(policy.name.clone(), At { file: fi, index: i });
            policies.push(policy);
        }
    }

    let mut services: Vec<Service> = services
        .into_iter()
        .zip(calls_of)
        .map(|((_, mut s), calls)| {
            s.calls = calls;
            s
        })
        .collect();
    services.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Mesh {
        trust_domain,
        services,
        traffic,
        policies,
        mtls: mesh_mtls,
        version: version(sources),
    })
}

fn service(f: &str, s: &model::Service) -> FResult<Service> {
    let name = label(&format!("{f}.name"), &s.name)?;
    let namespace = match &s.namespace {
        Some(ns) => label(&format!("{f}.namespace"), ns)?,
        None => DEFAULT_NAMESPACE.to_owned(),
    };
    if s.ports.is_empty() {
        return ferr(format!("{f}.ports"), "a service needs at least one port");
    }
    let mut ports = Vec::with_capacity(s.ports.len());
    let mut port_names = HashSet::new();
    let mut port_numbers = HashSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        let pf = format!("{f}.ports[{i}]");
        let pname = label(&format!("{pf}.name"), &p.name)?;
        let number = port_number(&format!("{pf}.port"), p.port)?;
        if !port_names.insert(pname.clone()) {
            return ferr(
                format!("{pf}.name"),
                format!("port name {pname:?} is used twice in this service"),
            );
        }
        if !port_numbers.insert(number) {
            return ferr(
                format!("{pf}.port"),
                format!("port {number} is declared twice in this service"),
            );
        }
        ports.push(ServicePort {
            name: pname,
            port: number,
            protocol: match p.protocol {
                model::Protocol::Http => Protocol::Http,
                model::Protocol::Http2 => Protocol::Http2,
                model::Protocol::Grpc => Protocol::Grpc,
                model::Protocol::Tcp => Protocol::Tcp,
            },
        });
    }
    let mut subsets = Vec::with_capacity(s.subsets.len());
    let mut subset_names = HashSet::new();
    for (i, ss) in s.subsets.iter().enumerate() {
        let sf = format!("{f}.subsets[{i}]");
        let sname = label(&format!("{sf}.name"), &ss.name)?;
        if !subset_names.insert(sname.clone()) {
            return ferr(
                format!("{sf}.name"),
                format!("subset {sname:?} is declared twice in this service"),
            );
        }
        if ss.labels.is_empty() {
            return ferr(format!("{sf}.labels"), "a subset needs at least one label");
        }
        labels(&format!("{sf}.labels"), &ss.labels)?;
        subsets.push(Subset {
            name: sname,
            labels: ss.labels.clone(),
        });
    }
    let mut static_endpoints = Vec::with_capacity(s.endpoints.len());
    for (i, e) in s.endpoints.iter().enumerate() {
        let ef = format!("{f}.endpoints[{i}]");
        let address: SocketAddr = match e.address.parse() {
            Ok(a) => a,
            Err(_) => {
                return ferr(
                    format!("{ef}.address"),
                    format!(
                        "{:?} is not an IP:port address (e.g. 10.0.0.7:8080 or [fd00::7]:8080)",
                        e.address
                    ),
                )
            }
        };
        if address.port() == 0 {
            return ferr(format!("{ef}.address"), "port 0 is not a valid port");
        }
        labels(&format!("{ef}.labels"), &e.labels)?;
        if e.zone.chars().any(char::is_control) {
            return ferr(format!("{ef}.zone"), "has control characters");
        }
        static_endpoints.push(StaticEndpoint {
            address,
            labels: e.labels.clone(),
            zone: e.zone.clone(),
        });
    }
    let connect_timeout = match s.connect_timeout {
        Some(d) => Some(positive(&format!("{f}.connect_timeout"), d.0)?),
        None => None,
    };
    Ok(Service {
        key: ServiceKey { name, namespace },
        ports,
        subsets,
        static_endpoints,
        calls: None,
        lb_policy: match s.lb_policy {
            model::LbPolicy::RoundRobin => LbPolicy::RoundRobin,
            model::LbPolicy::Random => LbPolicy::Random,
            model::LbPolicy::LeastRequest => LbPolicy::LeastRequest,
        },
        connect_timeout,
        mtls: MtlsMode::default(),
    })
}

fn mtls_mode(m: model::Mtls) -> MtlsMode {
    match m {
        model::Mtls::Strict => MtlsMode::Strict,
        model::Mtls::Permissive => MtlsMode::Permissive,
        model::Mtls::Disable => MtlsMode::Disable,
    }
}

fn traffic_rule<'a>(
    f: &str,
    r: &model::TrafficRule,
    known: &impl Fn(&ServiceKey) -> Option<&'a Service>,
    regexes: &mut route_regex::Budget,
) -> FResult<TrafficRule> {
    let name = label(&format!("{f}.name"), &r.name)?;
    let sf = format!("{f}.service");
    let service = service_ref(&r.service).map_err(|m| (sf.clone(), m))?;
    let Some(svc) = known(&service) else {
        return ferr(sf, format!("unknown service {service}"));
    };
    let port = match r.port {
        Some(n) => {
            let pf = format!("{f}.port");
            let n = port_number(&pf, n)?;
            match svc.ports.iter().find(|p| p.port == n) {
                None => return ferr(pf, format!("service {service} has no port {n}")),
                Some(p) if !p.protocol.is_http() => {
                    return ferr(
                        pf,
                        format!(
                            "port {n} of {service} is {}; traffic rules apply to an HTTP (http, http2, grpc) port",
                            p.protocol.as_str()
                        ),
                    )
                }
                Some(_) => Some(n),
            }
        }
        None => {
            if !svc.ports.iter().any(|p| p.protocol.is_http()) {
                return ferr(
                    sf,
                    format!("service {service} has no HTTP (http, http2, grpc) port"),
                );
            }
            None
        }
    };
    let mut routes = Vec::with_capacity(r.routes.len());
    let mut route_names = HashSet::new();
    for (i, route) in r.routes.iter().enumerate() {
        let rf = format!("{f}.routes[{i}]");
        let rname = match &route.name {
            Some(n) => label(&format!("{rf}.name"), n)?,
            None => format!("route-{i}"),
        };
        if !route_names.insert(rname.clone()) {
            return ferr(
                format!("{rf}.name"),
                format!("route {rname:?} is declared twice in this rule"),
            );
        }
        routes.push(http_route(&rf, rname, route, &service, known, regexes)?);
    }
    Ok(TrafficRule {
        name,
        service,
        port,
        routes,
    })
}

fn http_route<'a>(
    rf: &str,
    name: String,
    r: &model::Route,
    rule_service: &ServiceKey,
    known: &impl Fn(&ServiceKey) -> Option<&'a Service>,
    regexes: &mut route_regex::Budget,
) -> FResult<HttpRoute> {
    let matcher = route_match(&format!("{rf}.match"), &r.matcher, regexes)?;

    let sf = format!("{rf}.split");
    if r.split.is_empty() {
        return ferr(sf, "a route needs at least one destination");
    }
    let mut split = Vec::with_capacity(r.split.len());
    let mut total: u64 = 0;
    let mut seen = HashSet::new();
    for (i, d) in r.split.iter().enumerate() {
        let df = format!("{sf}[{i}]");
        let service = match &d.service {
            Some(s) => {
                let f = format!("{df}.service");
                let key = service_ref(s).map_err(|m| (f.clone(), m))?;
                let Some(svc) = known(&key) else {
                    return ferr(f, format!("unknown service {key}"));
                };
                if !svc.ports.iter().any(|p| p.protocol.is_http()) {
                    return ferr(
                        f,
                        format!("service {key} has no HTTP (http, http2, grpc) port"),
                    );
                }
                key
            }
            None => rule_service.clone(),
        };
        if let Some(subset) = &d.subset {
            let f = format!("{df}.subset");
            // The rule's service and any named service were checked above.
            let declared =
                known(&service).is_some_and(|s| s.subsets.iter().any(|x| &x.name == subset));
            if !declared {
                return ferr(f, format!("service {service} has no subset {subset:?}"));
            }
        }
        let weight = match d.weight {
            Some(w) if w > MAX_WEIGHT => {
                return ferr(
                    format!("{df}.weight"),
                    format!("weight {w} is more than {MAX_WEIGHT}"),
                )
            }
            Some(w) => w,
            None if r.split.len() == 1 => 1,
            None => {
                return ferr(
                    format!("{df}.weight"),
                    "a weight is required when the split has more than one destination",
                )
            }
        };
        let what = match &d.subset {
            Some(s) => format!("{service}/{s}"),
            None => service.to_string(),
        };
        if !seen.insert((service.clone(), d.subset.clone())) {
            return ferr(
                df,
                format!("destination {what} appears twice in this split"),
            );
        }
        total += weight;
        split.push(Destination {
            service,
            subset: d.subset.clone(),
            // At most MAX_WEIGHT, checked above.
            weight: weight as u32,
        });
    }
    if total == 0 {
        return ferr(sf, "the weights sum to 0; at least one must be more than 0");
    }
    if total > MAX_WEIGHT {
        return ferr(
            sf,
            format!("the weights sum to {total}, more than {MAX_WEIGHT}"),
        );
    }

    let timeout = match r.timeout {
        Some(d) => Some(positive(&format!("{rf}.timeout"), d.0)?),
        None => None,
    };
    let retries = match &r.retries {
        None => None,
        Some(rt) => {
            let tf = format!("{rf}.retries");
            if rt.attempts > MAX_RETRY_ATTEMPTS {
                return ferr(
                    format!("{tf}.attempts"),
                    format!("{} attempts is more than {MAX_RETRY_ATTEMPTS}", rt.attempts),
                );
            }
            let on = match &rt.on {
                None => vec!["connect-failure".to_owned()],
                Some(list) if list.is_empty() && rt.attempts > 0 => {
                    return ferr(
                        format!("{tf}.on"),
                        "name at least one condition (or leave `on` out for connect-failure)",
                    )
                }
                Some(list) => {
                    for (i, c) in list.iter().enumerate() {
                        if !RETRY_CONDITIONS.contains(&c.as_str()) {
                            return ferr(
                                format!("{tf}.on[{i}]"),
                                format!(
                                    "unknown retry condition {c:?} (use {})",
                                    RETRY_CONDITIONS.join(", ")
                                ),
                            );
                        }
                    }
                    list.clone()
                }
            };
            let per_try_timeout = match rt.per_try_timeout {
                Some(d) => Some(positive(&format!("{tf}.per_try_timeout"), d.0)?),
                None => None,
            };
            Some(Retries {
                // At most MAX_RETRY_ATTEMPTS, checked above.
                attempts: rt.attempts as u32,
                on,
                per_try_timeout,
            })
        }
    };
    let prefix_rewrite = match &r.prefix_rewrite {
        Some(p) => {
            let f = format!("{rf}.prefix_rewrite");
            // The proxy replaces the matched prefix, so it needs one.
            if !matches!(matcher.path, Some(PathMatch::Prefix(_))) {
                return ferr(f, "needs a match.path.prefix route");
            }
            path(&f, p)?;
            Some(p.clone())
        }
        None => None,
    };
    Ok(HttpRoute {
        name,
        matcher,
        split,
        timeout,
        retries,
        prefix_rewrite,
    })
}

fn route_match(
    mf: &str,
    m: &model::RouteMatch,
    regexes: &mut route_regex::Budget,
) -> FResult<RouteMatch> {
    let path_match = match &m.path {
        None => None,
        Some(p) => Some(match (&p.prefix, &p.exact, &p.regex) {
            (Some(x), None, None) => {
                path(&format!("{mf}.path.prefix"), x)?;
                PathMatch::Prefix(x.clone())
            }
            (None, Some(x), None) => {
                path(&format!("{mf}.path.exact"), x)?;
                PathMatch::Exact(x.clone())
            }
            (None, None, Some(x)) => {
                regex(&format!("{mf}.path.regex"), x, regexes)?;
                PathMatch::Regex(x.clone())
            }
            _ => {
                return ferr(
                    format!("{mf}.path"),
                    "set exactly one of prefix, exact, regex",
                )
            }
        }),
    };
    let methods = m
        .methods
        .iter()
        .enumerate()
        .map(|(i, x)| method(&format!("{mf}.methods[{i}]"), x))
        .collect::<FResult<Vec<_>>>()?;
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        let hf = format!("{mf}.headers[{i}]");
        let name = header_name(&format!("{hf}.name"), &h.name)?;
        let kind = match (&h.exact, h.present, &h.regex) {
            (Some(v), None, None) => {
                if v.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
                    return ferr(format!("{hf}.exact"), "has control characters");
                }
                HeaderMatchKind::Exact(v.clone())
            }
            (None, Some(p), None) => HeaderMatchKind::Present(p),
            (None, None, Some(re)) => {
                regex(&format!("{hf}.regex"), re, regexes)?;
                HeaderMatchKind::Regex(re.clone())
            }
            _ => return ferr(hf, "set exactly one of exact, present, regex"),
        };
        headers.push(HeaderMatch { name, kind });
    }
    Ok(RouteMatch {
        path: path_match,
        methods,
        headers,
    })
}

fn policy<'a>(
    f: &str,
    p: &model::Policy,
    known: &impl Fn(&ServiceKey) -> Option<&'a Service>,
) -> FResult<Policy> {
    let name = label(&format!("{f}.name"), &p.name)?;
    let sf = format!("{f}.service");
    let service = service_ref(&p.service).map_err(|m| (sf.clone(), m))?;
    let Some(svc) = known(&service) else {
        return ferr(sf, format!("unknown service {service}"));
    };
    let mut rules = Vec::with_capacity(p.rules.len());
    for (i, r) in p.rules.iter().enumerate() {
        let rf = format!("{f}.rules[{i}]");
        let mut rule = PolicyRule::default();
        for (j, id) in r.sources.identities.iter().enumerate() {
            let idf = format!("{rf}.sources.identities[{j}]");
            if let Err(m) = ringmesh_yaml::authz::spiffe_pattern(id) {
                return ferr(
                    idf,
                    format!("{m} (spiffe://TRUST_DOMAIN/ns/NS/sa/NAME or spiffe://TRUST_DOMAIN/ns/NS/*)"),
                );
            }
            rule.source_identities.push(id.clone());
        }
        for (j, ns) in r.sources.namespaces.iter().enumerate() {
            rule.source_namespaces
                .push(label(&format!("{rf}.sources.namespaces[{j}]"), ns)?);
        }
        for (j, m) in r.methods.iter().enumerate() {
            rule.methods.push(method(&format!("{rf}.methods[{j}]"), m)?);
        }
        for (j, pp) in r.paths.iter().enumerate() {
            let pf = format!("{rf}.paths[{j}]");
            rule.paths.push(match (&pp.prefix, &pp.exact) {
                (Some(x), None) => {
                    policy_path(&format!("{pf}.prefix"), x)?;
                    (false, x.clone())
                }
                (None, Some(x)) => {
                    policy_path(&format!("{pf}.exact"), x)?;
                    (true, x.clone())
                }
                _ => return ferr(pf, "set exactly one of prefix, exact"),
            });
        }
        for (j, &n) in r.ports.iter().enumerate() {
            let pf = format!("{rf}.ports[{j}]");
            let n = port_number(&pf, n)?;
            if !svc.ports.iter().any(|p| p.port == n) {
                return ferr(pf, format!("service {service} has no port {n}"));
            }
            rule.ports.push(n);
        }
        rules.push(rule);
    }
    Ok(Policy {
        name,
        service,
        action: match p.action {
            model::PolicyAction::Allow => PolicyAction::Allow,
            model::PolicyAction::Deny => PolicyAction::Deny,
        },
        rules,
    })
}

// ---------------------------------------------------------------------------
// Single values
// ---------------------------------------------------------------------------

/// An RFC 1123 label: what Kubernetes accepts for names and namespaces.
fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn label(f: &str, s: &str) -> FResult<String> {
    if s.is_empty() {
        return ferr(f, "must not be empty");
    }
    if !is_label(s) {
        return ferr(
            f,
            format!(
                "{s:?} is not a DNS label (lowercase letters, digits and '-', \
                 at most 63, starting and ending with a letter or digit)"
            ),
        );
    }
    Ok(s.to_owned())
}

/// `name` (namespace `default`) or `name.namespace`.
fn service_ref(s: &str) -> Result<ServiceKey, String> {
    let (name, namespace) = s.split_once('.').unwrap_or((s, DEFAULT_NAMESPACE));
    if is_label(name) && is_label(namespace) {
        Ok(ServiceKey {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        })
    } else {
        Err(format!(
            "{s:?} is not a service reference (\"name\" or \"name.namespace\", DNS labels)"
        ))
    }
}

fn check_trust_domain(td: &str) -> Result<(), String> {
    if td.len() <= 253 && td.split('.').all(is_label) {
        Ok(())
    } else {
        Err(format!(
            "{td:?} is not a trust domain (DNS labels joined by '.', e.g. cluster.local)"
        ))
    }
}

fn port_number(f: &str, n: u64) -> FResult<u16> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => ferr(f, format!("port {n} is out of range 1..=65535")),
    }
}

fn positive(f: &str, d: Duration) -> FResult<Duration> {
    if d.is_zero() {
        return ferr(f, "must be more than 0");
    }
    Ok(d)
}

fn labels(f: &str, l: &BTreeMap<String, String>) -> FResult<()> {
    for (k, v) in l {
        if k.is_empty() || k.bytes().any(|b| b <= b' ' || b == 0x7f) {
            let kf = if k.is_empty() {
                f.to_owned()
            } else {
                format!("{f}.{k}")
            };
            return ferr(kf, format!("{k:?} is not a label key"));
        }
        if v.chars().any(char::is_control) {
            return ferr(format!("{f}.{k}"), "has control characters");
        }
    }
    Ok(())
}

/// tchar from RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn method(f: &str, m: &str) -> FResult<String> {
    if m.is_empty() || !m.bytes().all(is_tchar) {
        return ferr(f, format!("{m:?} is not an HTTP method"));
    }
    Ok(m.to_owned())
}

fn header_name(f: &str, n: &str) -> FResult<String> {
    if n.is_empty() || !n.bytes().all(is_tchar) {
        return ferr(f, format!("{n:?} is not a valid header name"));
    }
    Ok(n.to_ascii_lowercase())
}

/// A policy path: as `path`, and in the normal form proxies match requests
/// in (`/a/../b` could never match), checked as the proxy checks it.
fn policy_path(f: &str, p: &str) -> FResult<()> {
    path(f, p)?;
    ringmesh_yaml::authz::normal_path(p).or_else(|m| ferr(f, m))
}

fn path(f: &str, p: &str) -> FResult<()> {
    if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return ferr(
            f,
            format!("{p:?} is not a path (starts with /, no spaces or control characters)"),
        );
    }
    Ok(())
}

/// Compiled as the engine does (`ringmesh_yaml::route_regex`: anchored to
/// the whole value, the same size limit and budget), so a regex accepted
/// here is accepted by the proxy.
fn regex(f: &str, re: &str, budget: &mut route_regex::Budget) -> FResult<()> {
    route_regex::compile(re, budget)
        .map(drop)
        .or_else(|e| ferr(f, format!("bad regex: {e}")))
}
