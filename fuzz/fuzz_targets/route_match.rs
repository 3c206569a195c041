//! Route matching: a route table compiled by the config compiler, matched
//! against arbitrary requests (host, method, path, headers).
//!
//! Byte 0 picks the table: even, a fixed YAML table with exact, prefix and
//! regex paths, methods, header matches, exact, ported, wildcard and `*`
//! domains; odd, a small table built from the next bytes (domains, paths and
//! header values from a small alphabet, so requests hit them). The rest is
//! the request: lines `host`, `method`, `path`, then `name:value` headers.
//!
//! Properties: never panics; `RouteTable::select` picks exactly the route a
//! naive reading of the model picks: the virtual host by the full host when a
//! domain names the port, else by the host without its port, else the longest
//! `*.suffix` (first declared on a tie), else `*` (hosts over 256 bytes only
//! reach `*`); then the first route whose path, methods and headers all hold.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use regex::bytes::Regex;
use ringmesh_engine::config::compile::compile;
use ringmesh_engine::config::model::{self, File};
use ringmesh_engine::config::{Config, ListenerKind};
use ringmesh_engine::router::HeaderLookup;

const FIXED: &str = r#"
listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: api
        domains: ["api.example.com", "API.internal:8443"]
        routes:
          - name: health
            match: { path: { exact: /health } }
            direct_response: { status: 200, body: ok }
          - name: canary
            match:
              path: { prefix: /v1/ }
              headers: [{ name: x-canary, exact: "1" }]
            route: { cluster: b }
          - name: v1
            match: { path: { prefix: /v1/ }, methods: [GET, POST] }
            route: { cluster: a, prefix_rewrite: /v2/ }
          - name: users
            match: { path: { regex: "/users/[0-9]+(/.*)?" } }
            route: { cluster: a }
          - name: debug
            match: { headers: [{ name: X-Debug, present: true }] }
            route: { cluster: b }
          - name: no-auth
            match:
              path: { prefix: /private }
              headers: [{ name: authorization, present: false }]
            direct_response: { status: 401 }
          - name: version
            match: { headers: [{ name: x-version, regex: "v[0-9]{1,3}" }] }
            route: { cluster: b }
          - name: api-rest
            match: { path: { prefix: / } }
            route: { cluster: a }
      - name: ported
        domains: ["svc:9080", "svc"]
        routes:
          - name: ported-exact
            match: { path: { exact: / }, methods: [DELETE] }
            route: { cluster: b }
          - name: ported-any
            route: { cluster: a }
            match: {}
      - name: wild
        domains: ["*.example.com", "*.a.example.com"]
        routes:
          - name: wild-static
            match: { path: { prefix: /static/ } }
            direct_response: { status: 200 }
          - name: wild-rest
            match: { path: { regex: "/[a-z]*" } }
            route: { cluster: a }
      - name: default
        domains: ["*"]
        routes:
          - name: default-exact
            match: { path: { exact: /exact } }
            route: { cluster: a }
          - name: default-prefix
            match: { path: { prefix: /p } }
            route: { cluster: b }
clusters:
  - name: a
    endpoints: ["127.0.0.1:9001"]
  - name: b
    endpoints: ["127.0.0.1:9002"]
"#;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let generated_config;
    let (config, request) = if mode % 2 == 0 {
        (fixed(), rest)
    } else {
        let mut bytes = Bytes(rest);
        let file = generated(&mut bytes);
        let Ok(c) = compile(file, Path::new("fuzz.yaml")) else {
            return;
        };
        generated_config = c;
        (&generated_config, bytes.0)
    };
    let file = &config.model;
    let ListenerKind::Http(table) = &config.listeners[0].kind else {
        unreachable!("the tables here are HTTP listeners");
    };
    let req = Request::parse(request);
    let got = table
        .select(&req.host, &req.method, &req.path, &req)
        .map(|r| r.name.to_string());
    let want = naive(&file.listeners[0].virtual_hosts, &req);
    assert_eq!(got, want, "{req:?}");
});

/// The fixed table, compiled once.
fn fixed() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let file: File = serde_yaml::from_str(FIXED).expect("the fixed table parses");
        compile(file, Path::new("fixed.yaml")).expect("the fixed table compiles")
    })
}

#[derive(Debug)]
struct Request {
    host: Vec<u8>,
    method: Vec<u8>,
    path: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Request {
    fn parse(b: &[u8]) -> Self {
        let mut lines = b.split(|&c| c == b'\n');
        let mut next = || lines.next().unwrap_or_default().to_vec();
        let host = next();
        let method = next();
        let path = next();
        let mut headers = Vec::new();
        for line in lines {
            let (n, v) = match line.iter().position(|&c| c == b':') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &b""[..]),
            };
            headers.push((n.to_vec(), v.to_vec()));
        }
        Request {
            host,
            method,
            path,
            headers,
        }
    }
}

impl HeaderLookup for Request {
    fn header(&self, lower_name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(lower_name))
            .map(|(_, v)| v.as_slice())
    }
}

// ---------------------------------------------------------------------------
// The naive reading of the model.
// ---------------------------------------------------------------------------

fn naive(vhosts: &[model::VirtualHost], req: &Request) -> Option<String> {
    let vi = naive_vhost(vhosts, &req.host)?;
    let vh = &vhosts[vi];
    vh.routes
        .iter()
        .enumerate()
        .find(|(_, r)| naive_route(r, req))
        .map(|(ri, r)| {
            r.name
                .clone()
                .unwrap_or_else(|| format!("{}/{ri}", vh.name))
        })
}

/// The host without a trailing `:digits` (or after a `[v6]` literal,
/// whatever follows it).
fn without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        if let Some(end) = host.iter().position(|&b| b == b']') {
            return &host[..=end];
        }
        return host;
    }
    if let Some(colon) = host.iter().rposition(|&b| b == b':') {
        if host[colon + 1..].iter().all(u8::is_ascii_digit) {
            return &host[..colon];
        }
    }
    host
}

fn naive_vhost(vhosts: &[model::VirtualHost], host: &[u8]) -> Option<usize> {
    let full = host.to_ascii_lowercase();
    let bare = without_port(&full).to_vec();
    let domains = || {
        vhosts.iter().enumerate().flat_map(|(i, v)| {
            v.domains
                .iter()
                .map(move |d| (i, d.to_ascii_lowercase().into_bytes()))
        })
    };
    if full.len() <= 256 && bare.len() < full.len() {
        if let Some((i, _)) = domains().find(|(_, d)| *d == full) {
            return Some(i);
        }
    }
    if bare.len() <= 256 {
        if let Some((i, _)) = domains().find(|(_, d)| *d == bare && !d.contains(&b'*')) {
            return Some(i);
        }
        let mut best: Option<(usize, usize)> = None;
        for (i, d) in domains() {
            let Some(suffix) = d.strip_prefix(b"*") else {
                continue;
            };
            if suffix.is_empty() {
                continue;
            }
            if bare.len() > suffix.len()
                && bare.ends_with(suffix)
                && best.is_none_or(|(_, len)| suffix.len() > len)
            {
                best = Some((i, suffix.len()));
            }
        }
        if let Some((i, _)) = best {
            return Some(i);
        }
    }
    domains().find(|(_, d)| d == b"*").map(|(i, _)| i)
}

fn full_match(re: &str, s: &[u8]) -> bool {
    thread_local! {
        static CACHE: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 10_000 {
            c.clear();
        }
        c.entry(re.to_owned())
            .or_insert_with(|| Regex::new(&format!("^(?:{re})$")).ok())
            .as_ref()
            .is_some_and(|r| r.is_match(s))
    })
}

fn naive_route(r: &model::Route, req: &Request) -> bool {
    if let Some(p) = &r.matcher.path {
        let ok = if let Some(x) = &p.exact {
            req.path == x.as_bytes()
        } else if let Some(x) = &p.prefix {
            req.path.starts_with(x.as_bytes())
        } else if let Some(x) = &p.regex {
            full_match(x, &req.path)
        } else {
            true
        };
        if !ok {
            return false;
        }
    }
    if !r.matcher.methods.is_empty()
        && !r.matcher.methods.iter().any(|m| m.as_bytes() == req.method)
    {
        return false;
    }
    r.matcher.headers.iter().all(|h| {
        let name = h.name.to_ascii_lowercase();
        let value = req
            .headers
            .iter()
            .find(|(n, _)| n.to_ascii_lowercase() == name.as_bytes())
            .map(|(_, v)| v.as_slice());
        if let Some(x) = &h.exact {
            value == Some(x.as_bytes())
        } else if let Some(present) = h.present {
            value.is_some() == present
        } else if let Some(re) = &h.regex {
            value.is_some_and(|v| full_match(re, v))
        } else {
            false
        }
    })
}

// ---------------------------------------------------------------------------
// Tables from bytes.
// ---------------------------------------------------------------------------

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `max` characters from `alphabet`, the length from one byte.
    fn string(&mut self, alphabet: &[u8], max: usize) -> String {
        let n = usize::from(self.byte()) % (max + 1);
        (0..n)
            .map(|_| char::from(alphabet[usize::from(self.byte()) % alphabet.len()]))
            .collect()
    }
}

const DOMAIN: &[u8] = b"ab.*:8";
const PATH: &[u8] = b"/ab.";
const VALUE: &[u8] = b"1ab";
const REGEX: &[u8] = b"/ab.*+?|()[]";
const METHODS: [&str; 4] = ["GET", "POST", "get", "X-Y"];

fn generated(b: &mut Bytes<'_>) -> File {
    let mut vhosts = Vec::new();
    for vi in 0..usize::from(b.byte() % 4 + 1) {
        let mut domains = Vec::new();
        for _ in 0..usize::from(b.byte() % 3 + 1) {
            domains.push(b.string(DOMAIN, 6));
        }
        let mut routes = Vec::new();
        for ri in 0..usize::from(b.byte() % 5) {
            let kind = b.byte();
            let path = match kind % 4 {
                0 => None,
                1 => Some(model::PathMatch {
                    exact: Some(format!("/{}", b.string(PATH, 4))),
                    prefix: None,
                    regex: None,
                }),
                2 => Some(model::PathMatch {
                    prefix: Some(format!("/{}", b.string(PATH, 3))),
                    exact: None,
                    regex: None,
                }),
                _ => Some(model::PathMatch {
                    regex: Some(b.string(REGEX, 6)),
                    exact: None,
                    prefix: None,
                }),
            };
            let methods = (0..usize::from(kind / 4 % 3))
                .map(|_| METHODS[usize::from(b.byte()) % METHODS.len()].to_owned())
                .collect();
            let mut headers = Vec::new();
            for _ in 0..usize::from(kind / 16 % 3) {
                let sel = b.byte();
                let name = ["x-a", "X-B", "x-a"][usize::from(sel) % 3].to_owned();
                headers.push(match sel / 3 % 3 {
                    0 => model::HeaderMatch {
                        name,
                        exact: Some(b.string(VALUE, 2)),
                        present: None,
                        regex: None,
                    },
                    1 => model::HeaderMatch {
                        name,
                        exact: None,
                        present: Some(sel >= 128),
                        regex: None,
                    },
                    _ => model::HeaderMatch {
                        name,
                        exact: None,
                        present: None,
                        regex: Some(b.string(b"1ab.*|", 4)),
                    },
                });
            }
            routes.push(model::Route {
                name: (ri % 2 == 0).then(|| format!("v{vi}r{ri}")),
                matcher: model::RouteMatch {
                    path,
                    methods,
                    headers,
                },
                route: None,
                direct_response: Some(model::DirectResponse {
                    status: 200,
                    body: String::new(),
                    content_type: None,
                }),
                request_headers_to_add: Vec::new(),
                request_headers_to_remove: Vec::new(),
                response_headers_to_add: Vec::new(),
                response_headers_to_remove: Vec::new(),
            });
        }
        vhosts.push(model::VirtualHost {
            name: format!("v{vi}"),
            domains,
            routes,
        });
    }
    let mut file = File::default();
    file.listeners.push(model::Listener {
        name: "web".into(),
        address: "127.0.0.1:8080".into(),
        protocol: model::Protocol::Http,
        virtual_hosts: vhosts,
        cluster: None,
        idle_timeout: None,
        mtls: None,
        tls: None,
        authorization: Vec::new(),
    });
    file
}
