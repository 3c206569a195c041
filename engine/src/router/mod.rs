//! Request routing: virtual host by Host, then the first route whose path,
//! method and header matchers all hold. Compiled once per config epoch; matching
//! allocates nothing.

use std::sync::Arc;
use std::time::Duration;

use ringmesh_yaml::route_regex::Regex;
use rustc_hash::FxHashMap;

/// A header a route adds: (lower-case name, value).
pub type HeaderEdit = (Box<[u8]>, Box<[u8]>);

/// Headers of the request being routed, looked up by lower-case name.
pub trait HeaderLookup {
    fn header(&self, lower_name: &[u8]) -> Option<&[u8]>;
}

#[derive(Debug)]
pub struct RouteTable {
    pub vhosts: Vec<VirtualHost>,
    /// Lower-case exact domains to vhost index.
    pub(crate) exact: FxHashMap<Box<[u8]>, usize>,
    /// `*.suffix` domains as `.suffix`, longest first (most specific wins).
    pub(crate) suffixes: Vec<(Box<[u8]>, usize)>,
    pub(crate) any: Option<usize>,
    /// Some exact domain names a port (`reviews:9080`): such a domain wins
    /// over the same host without the port, as in Envoy.
    pub(crate) ported: bool,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: Arc<str>,
    pub routes: Vec<Route>,
}

#[derive(Debug)]
pub struct Route {
    /// Unique within one config epoch; indexes per-route worker state.
    pub id: u32,
    pub name: Arc<str>,
    pub path: PathMatcher,
    /// Empty: any method.
    pub methods: Vec<Box<[u8]>>,
    pub headers: Vec<HeaderMatcher>,
    pub action: Action,
    pub request_headers_to_add: Vec<HeaderEdit>,
    /// Lower-case names.
    pub request_headers_to_remove: Vec<Box<[u8]>>,
    pub response_headers_to_add: Vec<HeaderEdit>,
    pub response_headers_to_remove: Vec<Box<[u8]>>,
}

#[derive(Debug)]
pub enum PathMatcher {
    Any,
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    /// Anchored at both ends at compile time.
    Regex(Regex),
}

#[derive(Debug)]
pub enum HeaderMatcher {
    Exact { name: Box<[u8]>, value: Box<[u8]> },
    Present { name: Box<[u8]>, present: bool },
    Regex { name: Box<[u8]>, regex: Regex },
}

#[derive(Debug)]
pub enum Action {
    Forward(Forward),
    Direct(Direct),
}

#[derive(Debug)]
pub struct Forward {
    /// (cluster index in `Config::clusters`, cumulative weight upper bound).
    pub targets: Vec<(usize, u32)>,
    pub total_weight: u32,
    pub prefix_rewrite: Option<Box<[u8]>>,
    pub timeout: Duration,
    pub retry: Retry,
}

/// When a failed attempt is tried again (on another endpoint when the cluster
/// has one). `attempts == 0`: never, beyond the engine's own stale-connection
/// retry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u8,
    pub on: u8,
    /// Per attempt, until the response head; `None`: the route timeout.
    pub per_try_timeout: Option<Duration>,
}

impl Retry {
    pub const CONNECT_FAILURE: u8 = 1;
    pub const RESET: u8 = 2;
    pub const STATUS_5XX: u8 = 4;
    pub const GATEWAY_ERROR: u8 = 8;
    pub const RETRIABLE_4XX: u8 = 16;

    /// The flag for an Envoy-style condition name.
    pub fn condition(name: &str) -> Option<u8> {
        Some(match name {
            "connect-failure" => Self::CONNECT_FAILURE,
            "reset" => Self::RESET,
            "5xx" => Self::STATUS_5XX,
            "gateway-error" => Self::GATEWAY_ERROR,
            "retriable-4xx" => Self::RETRIABLE_4XX,
            _ => return None,
        })
    }

    pub fn on(&self, flag: u8) -> bool {
        self.on & flag != 0
    }

    /// Whether a response status asks for another attempt.
    pub fn status_retriable(&self, status: u16) -> bool {
        (self.on(Self::STATUS_5XX) && (500..=599).contains(&status))
            || (self.on(Self::GATEWAY_ERROR) && matches!(status, 502..=504))
            || (self.on(Self::RETRIABLE_4XX) && status == 409)
    }
}

#[derive(Debug)]
pub struct Direct {
    pub status: u16,
    pub body: Box<[u8]>,
    pub content_type: Box<str>,
}

impl Forward {
    /// The cluster for a uniformly random `r` in `0..total_weight`.
    pub fn pick(&self, r: u32) -> usize {
        if self.targets.len() == 1 {
            return self.targets[0].0;
        }
        for &(cluster, upper) in &self.targets {
            if r < upper {
                return cluster;
            }
        }
        // Unreachable for r < total_weight; fall back to the last target.
        self.targets.last().map_or(0, |t| t.0)
    }
}

impl RouteTable {
    pub fn vhost_for(&self, full: &[u8]) -> Option<&VirtualHost> {
        let host = strip_port(full);
        let mut lower = [0u8; 256];
        if self.ported && host.len() < full.len() && full.len() <= lower.len() {
            let l = &mut lower[..full.len()];
            l.copy_from_slice(full);
            l.make_ascii_lowercase();
            if let Some(&i) = self.exact.get(&*l) {
                return self.vhosts.get(i);
            }
        }
        if host.len() <= lower.len() {
            let l = &mut lower[..host.len()];
            l.copy_from_slice(host);
            l.make_ascii_lowercase();
            if let Some(&i) = self.exact.get(&*l) {
                return self.vhosts.get(i);
            }
            for (suffix, i) in &self.suffixes {
                if l.len() > suffix.len() && l.ends_with(suffix) {
                    return self.vhosts.get(*i);
                }
            }
        }
        self.any.and_then(|i| self.vhosts.get(i))
    }

    pub fn select(
        &self,
        host: &[u8],
        method: &[u8],
        path: &[u8],
        headers: &impl HeaderLookup,
    ) -> Option<&Route> {
        self.vhost_for(host)?
            .routes
            .iter()
            .find(|r| r.matches(method, path, headers))
    }
}

impl Route {
    pub fn matches(&self, method: &[u8], path: &[u8], headers: &impl HeaderLookup) -> bool {
        let path_ok = match &self.path {
            PathMatcher::Any => true,
            PathMatcher::Exact(p) => path == &**p,
            PathMatcher::Prefix(p) => path.starts_with(p),
            PathMatcher::Regex(re) => re.is_match(path),
        };
        if !path_ok {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| &**m == method) {
            return false;
        }
        self.headers.iter().all(|h| match h {
            HeaderMatcher::Exact { name, value } => headers.header(name) == Some(value),
            HeaderMatcher::Present { name, present } => headers.header(name).is_some() == *present,
            HeaderMatcher::Regex { name, regex } => {
                headers.header(name).is_some_and(|v| regex.is_match(v))
            }
        })
    }
}

/// `host:port` or `[v6]:port` without the port.
pub(crate) fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) if host[colon + 1..].iter().all(u8::is_ascii_digit) => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests;
