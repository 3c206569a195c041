//! Authorization policies of a listener: who may call what.
//!
//! Evaluation (as Istio's): DENY policies first, and any match denies; then,
//! if the listener has at least one ALLOW policy, the request must match one
//! of them; with no policy at all everything is allowed.
//!
//! A rule matches when every field it sets matches. For a TCP connection the
//! HTTP-only fields (methods, paths) cannot be known: an ALLOW rule that sets
//! them never matches a connection, and a DENY rule ignores them (so it denies
//! more, never less). Paths are matched after normalization (query dropped,
//! unreserved percent-escapes decoded, `.`/`..` segments resolved, repeated
//! slashes merged) so `/a/../admin`, `//admin` and `/%61dmin` cannot slip
//! past a rule written for `/admin`; the request itself is forwarded as sent.

use std::sync::Arc;

use super::config::model;
pub use ringmesh_yaml::authz::normalize_path;
use ringmesh_yaml::authz::{spiffe_pattern, SpiffePattern};

type CResult<T> = Result<T, (String, String)>;

/// Bounds that keep evaluation cheap and configs sane.
const MAX_POLICIES: usize = 1000;
const MAX_RULES: usize = 1000;
const MAX_VALUES: usize = 1000;

/// The compiled policies of one listener. A policy without rules matches
/// nothing: as ALLOW it denies everything no other ALLOW admits (Istio's
/// allow-nothing); as DENY it has no effect. A rule without fields matches
/// everything.
#[derive(Debug, Default)]
pub struct Policies {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    /// Policy names by index (`Decision` refers to them), DENY ones first.
    names: Vec<Arc<str>>,
}

#[derive(Debug)]
struct Policy {
    index: u32,
    rules: Vec<Rule>,
}

#[derive(Debug, Default)]
struct Rule {
    identities: Vec<Box<str>>,
    /// `spiffe://td/ns/<ns>/` from `identities` entries written `.../ns/<ns>/*`.
    id_prefixes: Vec<Box<str>>,
    /// Namespace names (any trust domain the bundle admits).
    namespaces: Vec<Box<str>>,
    methods: Vec<Box<[u8]>>,
    paths: Vec<PathRule>,
    ports: Vec<u16>,
}

#[derive(Debug)]
enum PathRule {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
}

/// What is known about one request or connection.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The verified SPIFFE ID of the peer; `None` for plaintext.
    pub identity: Option<&'a str>,
    /// `None` for a TCP connection.
    pub http: Option<HttpSubject<'a>>,
    /// The listener's port.
    pub port: u16,
}

#[derive(Debug, Clone, Copy)]
pub struct HttpSubject<'a> {
    pub method: &'a [u8],
    /// The request target as sent (origin form; query allowed).
    pub path: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No policy applies to this listener.
    NoPolicy,
    /// Allowed by the ALLOW policy at this index.
    Allowed(u32),
    /// Denied by the DENY policy at this index.
    Denied(u32),
    /// ALLOW policies exist and none matched.
    NoAllowMatch,
}

impl Decision {
    pub fn allowed(self) -> bool {
        matches!(self, Decision::NoPolicy | Decision::Allowed(_))
    }
}

impl Policies {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The name of a policy a decision refers to.
    pub fn name(&self, index: u32) -> &str {
        self.names.get(index as usize).map_or("", |n| n)
    }

    pub fn evaluate(&self, s: &Subject) -> Decision {
        if self.names.is_empty() {
            return Decision::NoPolicy;
        }
        // Normalized once, only when some rule looks at paths.
        let mut norm: Option<Vec<u8>> = None;
        for p in &self.deny {
            if p.rules.iter().any(|r| r.matches(s, true, &mut norm)) {
                return Decision::Denied(p.index);
            }
        }
        if self.allow.is_empty() {
            return Decision::NoPolicy;
        }
        for p in &self.allow {
            if p.rules.iter().any(|r| r.matches(s, false, &mut norm)) {
                return Decision::Allowed(p.index);
            }
        }
        Decision::NoAllowMatch
    }

    /// The text of a 403 for a denied HTTP request.
    pub fn denial_body(&self, d: Decision) -> String {
        match d {
            Decision::Denied(i) => format!("RBAC: access denied by policy {:?}\n", self.name(i)),
            _ => format!(
                "RBAC: access denied: no ALLOW policy matched ({})\n",
                self.allow
                    .iter()
                    .map(|p| self.name(p.index))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl Rule {
    fn matches(&self, s: &Subject, deny: bool, norm: &mut Option<Vec<u8>>) -> bool {
        if !self.identities.is_empty()
            || !self.id_prefixes.is_empty()
            || !self.namespaces.is_empty()
        {
            let Some(id) = s.identity else {
                return false;
            };
            let known = self.identities.iter().any(|i| **i == *id)
                || self.id_prefixes.iter().any(|p| id.starts_with(&**p))
                || self.namespaces.iter().any(|n| namespace_matches(n, id));
            if !known {
                return false;
            }
        }
        if !self.ports.is_empty() && !self.ports.contains(&s.port) {
            return false;
        }
        let http_only = !self.methods.is_empty() || !self.paths.is_empty();
        match &s.http {
            // TCP: DENY ignores HTTP-only fields, ALLOW cannot satisfy them.
            None => deny || !http_only,
            Some(h) => {
                if !self.methods.is_empty() && !self.methods.iter().any(|m| **m == *h.method) {
                    return false;
                }
                if self.paths.is_empty() {
                    return true;
                }
                let path = norm.get_or_insert_with(|| normalize_path(h.path));
                self.paths.iter().any(|p| match p {
                    PathRule::Exact(e) => **e == **path,
                    PathRule::Prefix(x) => path.starts_with(x),
                })
            }
        }
    }
}

/// `pattern` is a namespace name; `id` matches when it is
/// `spiffe://<any trust domain>/ns/<pattern>/...`.
fn namespace_matches(ns: &str, id: &str) -> bool {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return false;
    };
    let Some((_, path)) = rest.split_once('/') else {
        return false;
    };
    let Some(after) = path.strip_prefix("ns/") else {
        return false;
    };
    after
        .strip_prefix(ns)
        .is_some_and(|tail| tail.starts_with('/'))
}

fn err<T>(field: String, msg: impl Into<String>) -> CResult<T> {
    Err((field, msg.into()))
}

fn check_len<T>(field: &str, v: &[T]) -> CResult<()> {
    if v.len() > MAX_VALUES {
        return err(field.to_owned(), format!("more than {MAX_VALUES} values"));
    }
    Ok(())
}

/// Compiles `listeners[i].authorization` (`f` is that field path).
pub fn compile(f: &str, policies: &[model::AuthzPolicy]) -> CResult<Policies> {
    if policies.len() > MAX_POLICIES {
        return err(f.to_owned(), format!("more than {MAX_POLICIES} policies"));
    }
    let mut out = Policies::default();
    // DENY ones get the low indexes so `names` reads in evaluation order.
    let mut ordered: Vec<(usize, &model::AuthzPolicy)> = policies.iter().enumerate().collect();
    ordered.sort_by_key(|(_, p)| p.action != model::AuthzAction::Deny);
    for (i, p) in ordered {
        let pf = format!("{f}[{i}]");
        if p.name.is_empty() {
            return err(format!("{pf}.name"), "must not be empty");
        }
        if out.names.iter().any(|n| **n == *p.name) {
            return err(
                format!("{pf}.name"),
                format!("duplicate policy {:?}", p.name),
            );
        }
        if p.rules.len() > MAX_RULES {
            return err(
                format!("{pf}.rules"),
                format!("more than {MAX_RULES} rules"),
            );
        }
        let mut rules = Vec::with_capacity(p.rules.len());
        for (j, r) in p.rules.iter().enumerate() {
            rules.push(rule(&format!("{pf}.rules[{j}]"), r)?);
        }
        let index = out.names.len() as u32;
        out.names.push(p.name.as_str().into());
        let policy = Policy { index, rules };
        match p.action {
            model::AuthzAction::Deny => out.deny.push(policy),
            model::AuthzAction::Allow => out.allow.push(policy),
        }
    }
    Ok(out)
}

fn rule(rf: &str, r: &model::AuthzRule) -> CResult<Rule> {
    check_len(&format!("{rf}.identities"), &r.identities)?;
    check_len(&format!("{rf}.namespaces"), &r.namespaces)?;
    check_len(&format!("{rf}.methods"), &r.methods)?;
    check_len(&format!("{rf}.paths"), &r.paths)?;
    check_len(&format!("{rf}.ports"), &r.ports)?;
    let mut out = Rule::default();
    for (k, id) in r.identities.iter().enumerate() {
        match spiffe_pattern(id) {
            Ok(SpiffePattern::Exact) => out.identities.push(id.as_str().into()),
            Ok(SpiffePattern::Namespace(prefix)) => out.id_prefixes.push(prefix.into()),
            Err(m) => return err(format!("{rf}.identities[{k}]"), m),
        }
    }
    for (k, ns) in r.namespaces.iter().enumerate() {
        if ns.is_empty() || ns.contains('/') || ns.contains('*') {
            return err(
                format!("{rf}.namespaces[{k}]"),
                format!("{ns:?} is not a namespace name"),
            );
        }
        out.namespaces.push(ns.as_str().into());
    }
    for (k, m) in r.methods.iter().enumerate() {
        if m.is_empty()
            || !m
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return err(
                format!("{rf}.methods[{k}]"),
                format!("{m:?} is not an HTTP method"),
            );
        }
        out.methods.push(m.as_bytes().into());
    }
    for (k, p) in r.paths.iter().enumerate() {
        let f = format!("{rf}.paths[{k}]");
        let rule = match (&p.exact, &p.prefix) {
            (Some(e), None) => PathRule::Exact(checked_path(&f, "exact", e)?.into()),
            (None, Some(x)) => PathRule::Prefix(checked_path(&f, "prefix", x)?.into()),
            _ => return err(f, "set exactly one of exact, prefix"),
        };
        out.paths.push(rule);
    }
    for (k, &port) in r.ports.iter().enumerate() {
        if port == 0 {
            return err(format!("{rf}.ports[{k}]"), "must be 1..65535");
        }
    }
    out.ports.clone_from(&r.ports);
    Ok(out)
}

/// A rule's path must already be in normal form, or it could never match.
fn checked_path(f: &str, kind: &str, p: &str) -> CResult<Vec<u8>> {
    ringmesh_yaml::authz::normal_path(p).or_else(|m| err(format!("{f}.{kind}"), m))?;
    Ok(p.as_bytes().to_vec())
}

#[cfg(test)]
mod tests;
