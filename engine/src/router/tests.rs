use std::path::Path;

use super::*;
use crate::config::{load_str, ListenerKind};

struct H(Vec<(&'static str, &'static str)>);

impl HeaderLookup for H {
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, v)| v.as_bytes())
    }
}

fn table() -> crate::config::Config {
    let y = r#"
listeners:
  - name: web
    address: 127.0.0.1:18090
    virtual_hosts:
      - name: api
        domains: ["api.example.com"]
        routes:
          - name: exact
            match: { path: { exact: /users } }
            route: { cluster: a }
          - name: regex
            match: { path: { regex: "/users/[0-9]+" }, methods: [GET] }
            route: { cluster: a }
          - name: canary
            match: { path: { prefix: /users }, headers: [{ name: x-canary, exact: "1" }] }
            route: { cluster: b }
          - name: debug
            match: { path: { prefix: /users }, headers: [{ name: X-Debug, present: true }] }
            route: { cluster: b }
          - name: prefix
            match: { path: { prefix: /users } }
            route: { cluster: a }
      - name: wild
        domains: ["*.example.com"]
        routes:
          - name: w
            match: {}
            direct_response: { status: 200, body: wild }
      - name: deeper
        domains: ["*.eu.example.com"]
        routes:
          - name: d
            match: {}
            direct_response: { status: 200, body: eu }
      - name: any
        domains: ["*"]
        routes:
          - name: fallback
            match: { path: { prefix: / } }
            direct_response: { status: 404, body: none }
clusters:
  - { name: a, endpoints: ["127.0.0.1:1"] }
  - { name: b, endpoints: ["127.0.0.1:2"] }
"#;
    load_str(Path::new("t.yaml"), y).unwrap()
}

fn pick<'a>(
    c: &'a crate::config::Config,
    host: &str,
    method: &str,
    path: &str,
    h: &H,
) -> Option<&'a str> {
    let ListenerKind::Http(t) = &c.listeners[0].kind else {
        panic!()
    };
    t.select(host.as_bytes(), method.as_bytes(), path.as_bytes(), h)
        .map(|r| &*r.name)
}

#[test]
fn host_matching() {
    let c = table();
    let none = H(vec![]);
    assert_eq!(
        pick(&c, "api.example.com", "GET", "/users", &none),
        Some("exact")
    );
    assert_eq!(
        pick(&c, "API.Example.COM:8080", "GET", "/users", &none),
        Some("exact")
    );
    assert_eq!(pick(&c, "x.example.com", "GET", "/", &none), Some("w"));
    assert_eq!(pick(&c, "a.b.example.com", "GET", "/", &none), Some("w"));
    assert_eq!(
        pick(&c, "x.eu.example.com", "GET", "/", &none),
        Some("d"),
        "longest suffix wins"
    );
    assert_eq!(
        pick(&c, "example.com", "GET", "/", &none),
        Some("fallback"),
        "*.x does not match x"
    );
    assert_eq!(pick(&c, "other.org", "GET", "/", &none), Some("fallback"));
    assert_eq!(pick(&c, "[::1]:80", "GET", "/", &none), Some("fallback"));
}

#[test]
fn path_method_and_header_matching() {
    let c = table();
    let none = H(vec![]);
    let h = "api.example.com";
    assert_eq!(pick(&c, h, "GET", "/users/42", &none), Some("regex"));
    assert_eq!(
        pick(&c, h, "POST", "/users/42", &none),
        Some("prefix"),
        "method mismatch falls through"
    );
    assert_eq!(
        pick(&c, h, "GET", "/users/42x", &none),
        Some("prefix"),
        "regex is anchored"
    );
    assert_eq!(
        pick(&c, h, "GET", "/users/x", &H(vec![("x-canary", "1")])),
        Some("canary")
    );
    assert_eq!(
        pick(&c, h, "GET", "/users/x", &H(vec![("x-canary", "2")])),
        Some("prefix")
    );
    assert_eq!(
        pick(&c, h, "GET", "/users/x", &H(vec![("x-debug", "")])),
        Some("debug")
    );
    assert_eq!(pick(&c, h, "GET", "/nope", &none), None);
}

#[test]
fn weighted_pick_follows_cumulative_weights() {
    let f = Forward {
        targets: vec![(0, 90), (1, 100)],
        total_weight: 100,
        prefix_rewrite: None,
        timeout: std::time::Duration::from_secs(1),
        retry: Default::default(),
    };
    assert_eq!((0..90).filter(|&r| f.pick(r) == 0).count(), 90);
    assert_eq!((90..100).filter(|&r| f.pick(r) == 1).count(), 10);
}

#[test]
fn strip_port_handles_v6() {
    assert_eq!(strip_port(b"[::1]:8080"), b"[::1]");
    assert_eq!(strip_port(b"host:80"), b"host");
    assert_eq!(strip_port(b"host"), b"host");
    assert_eq!(strip_port(b"host:abc"), b"host:abc");
}

#[test]
fn a_domain_with_a_port_wins_over_the_same_host_without_one() {
    let y = r#"
listeners:
  - name: web
    address: 127.0.0.1:18091
    virtual_hosts:
      - name: first-port
        domains: ["reviews", "reviews:9080"]
        routes: [{ name: p9080, match: {}, direct_response: { status: 200 } }]
      - name: second-port
        domains: ["reviews:9443"]
        routes: [{ name: p9443, match: {}, direct_response: { status: 200 } }]
"#;
    let c = load_str(Path::new("t.yaml"), y).unwrap();
    let none = H(vec![]);
    assert_eq!(pick(&c, "reviews", "GET", "/", &none), Some("p9080"));
    assert_eq!(pick(&c, "reviews:9080", "GET", "/", &none), Some("p9080"));
    assert_eq!(pick(&c, "REVIEWS:9443", "GET", "/", &none), Some("p9443"));
    assert_eq!(
        pick(&c, "reviews:7000", "GET", "/", &none),
        Some("p9080"),
        "an unlisted port falls back to the host alone"
    );
}
