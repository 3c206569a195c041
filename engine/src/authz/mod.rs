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

type CResult<T> = Result<T, (String, String)>;

/// Bounds that keep evaluation cheap and configs sane.
const MAX_POLICIES: usize = 1000;
const MAX_RULES: usize = 1000;
const MAX_VALUES: usize = 1000;

/// The compiled policies of one listener.
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

/// The path part of a request target, normalized for matching: query and
/// fragment dropped, `%XX` of unreserved characters decoded (other escapes
/// kept, hex upper-cased), `.` and `..` segments removed, runs of `/`
/// merged. The result always starts with `/`.
pub fn normalize_path(target: &[u8]) -> Vec<u8> {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let raw = &target[..end];
    // Decode unreserved escapes.
    let mut dec = Vec::with_capacity(raw.len() + 1);
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                let c = h << 4 | l;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    dec.push(c);
                } else {
                    dec.push(b'%');
                    dec.push(raw[i + 1].to_ascii_uppercase());
                    dec.push(raw[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        dec.push(b);
        i += 1;
    }
    // Resolve segments.
    let mut out: Vec<&[u8]> = Vec::new();
    let trailing = dec.ends_with(b"/") || dec.ends_with(b"/.") || dec.ends_with(b"/..");
    for seg in dec.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = Vec::with_capacity(dec.len() + 1);
    for s in &out {
        path.push(b'/');
        path.extend_from_slice(s);
    }
    if path.is_empty() || (trailing && !out.is_empty()) {
        path.push(b'/');
    }
    path
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
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
        if p.rules.is_empty() {
            return err(
                format!("{pf}.rules"),
                "needs at least one rule (a rule with no fields matches everything)",
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
        let f = format!("{rf}.identities[{k}]");
        let Some(rest) = id.strip_prefix("spiffe://") else {
            return err(f, format!("{id:?} is not a spiffe:// ID"));
        };
        if let Some(prefix) = id.strip_suffix("/*") {
            // spiffe://td/ns/NS/* : any service account in NS.
            let parts: Vec<&str> = prefix["spiffe://".len()..].split('/').collect();
            match parts.as_slice() {
                [td, "ns", ns] if !td.is_empty() && !ns.is_empty() && !ns.contains('*') => {
                    out.id_prefixes.push(format!("{prefix}/").into());
                }
                _ => {
                    return err(
                        f,
                        "a wildcard is written spiffe://<trust domain>/ns/<namespace>/*",
                    )
                }
            }
            continue;
        }
        if rest.is_empty() || id.contains('*') || id.contains('?') || id.contains('#') {
            return err(
                f,
                format!("{id:?} is not an exact spiffe:// ID (or ns/<namespace>/*)"),
            );
        }
        out.identities.push(id.as_str().into());
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
    if !p.starts_with('/') {
        return err(format!("{f}.{kind}"), format!("{p:?} must start with /"));
    }
    let n = normalize_path(p.as_bytes());
    // A prefix may end in '/', which normalization keeps.
    if n != p.as_bytes() {
        return err(
            format!("{f}.{kind}"),
            format!(
                "{p:?} is not in normal form (requests are matched as {:?})",
                String::from_utf8_lossy(&n)
            ),
        );
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
