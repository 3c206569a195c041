//! Loading and validation of the config directory: every rule with the exact
//! error an operator sees, merging across files, and the shipped example.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::load::{self, build, Source, MAX_SERVICES};
use super::*;

fn load(files: &[(&str, &str)]) -> Result<Mesh, MeshError> {
    let sources: Vec<Source> = files
        .iter()
        .map(|(name, text)| Source {
            path: PathBuf::from(name),
            text: (*text).to_owned(),
        })
        .collect();
    build(&sources)
}

fn err(files: &[(&str, &str)]) -> String {
    match load(files) {
        Ok(m) => panic!("loaded: {m:?}"),
        Err(e) => e.to_string(),
    }
}

/// The error of `text` as the only file `m.yaml`.
fn err1(text: &str) -> String {
    err(&[("m.yaml", text)])
}

/// Services most tests refer to; its lines do not matter to them.
const SERVICES: &str = "\
services:
  - name: reviews
    ports:
      - {name: http, port: 9080, protocol: http}
      - {name: grpc, port: 9090, protocol: tcp}
    subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v2, labels: {version: v2}}
  - name: ratings
    ports: [{name: http, port: 9080, protocol: http}]
  - name: db
    namespace: data
    ports: [{name: pg, port: 5432, protocol: tcp}]
";

/// `text` as `t.yaml` loaded beside `SERVICES`.
fn load_with_services(text: &str) -> Result<Mesh, MeshError> {
    load(&[("s.yaml", SERVICES), ("t.yaml", text)])
}

/// The error of `text` as `t.yaml` loaded beside `SERVICES`.
fn err_with_services(text: &str) -> String {
    err(&[("s.yaml", SERVICES), ("t.yaml", text)])
}

fn key(name: &str, namespace: &str) -> ServiceKey {
    ServiceKey {
        name: name.into(),
        namespace: namespace.into(),
    }
}

// ---------------------------------------------------------------------------
// Valid input
// ---------------------------------------------------------------------------

const REALISTIC: &str = "\
mesh:
  trust_domain: prod.example
services:
  - name: frontend
    ports: [{name: http, port: 8080, protocol: http}]
    calls: [reviews, payments.external]
    lb_policy: least_request
    connect_timeout: 250ms
  - name: reviews
    ports:
      - {name: http, port: 9080, protocol: http}
      - {name: metrics, port: 9100, protocol: tcp}
    subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v2, labels: {version: v2, track: canary}}
  - name: payments
    namespace: external
    ports: [{name: https, port: 443, protocol: tcp}]
    endpoints:
      - {address: 203.0.113.7:443, zone: eu-1}
      - {address: '[2001:db8::7]:443', labels: {site: b}}
traffic:
  - name: reviews-canary
    service: reviews
    port: 9080
    routes:
      - name: alice
        match:
          path: {prefix: /api/}
          methods: [GET, HEAD]
          headers:
            - {name: X-User, exact: alice}
            - {name: x-debug, present: true}
            - {name: x-trace, regex: '[0-9a-f]+'}
        split: [{subset: v2}]
        prefix_rewrite: /v2/api/
      - name: canary
        match: {path: {regex: '/reviews/[0-9]+'}}
        split:
          - {subset: v1, weight: 90}
          - {subset: v2, weight: 10}
        timeout: 2s
        retries: {attempts: 2, on: [connect-failure, 5xx], per_try_timeout: 500ms}
      - split: [{service: reviews.default, weight: 1}]
        retries: {attempts: 1}
policies:
  - name: reviews-from-frontend
    service: reviews
    action: allow
    rules:
      - sources:
          identities: [spiffe://prod.example/ns/default/sa/frontend]
          namespaces: [default]
        methods: [GET]
        paths: [{prefix: /api}, {exact: /health}]
        ports: [9080]
  - name: deny-all-metrics
    service: reviews.default
    action: deny
    rules: [{ports: [9100]}]
";

#[test]
fn realistic_mesh_loads() {
    let m = load(&[("mesh.yaml", REALISTIC)]).unwrap();
    assert_eq!(m.trust_domain, "prod.example");
    let keys: Vec<String> = m.services.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(
        keys,
        ["frontend.default", "payments.external", "reviews.default"],
        "sorted by key"
    );
    let frontend = &m.services[0];
    assert_eq!(
        frontend.calls,
        Some(vec![key("reviews", "default"), key("payments", "external")])
    );
    assert_eq!(frontend.lb_policy, LbPolicy::LeastRequest);
    assert_eq!(frontend.connect_timeout, Some(Duration::from_millis(250)));
    let reviews = &m.services[2];
    assert_eq!(reviews.calls, None);
    assert_eq!(reviews.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(reviews.ports[1].protocol, Protocol::Tcp);
    assert_eq!(reviews.subsets[1].labels.len(), 2);
    let payments = &m.services[1];
    assert_eq!(
        payments.static_endpoints[0].address,
        "203.0.113.7:443".parse().unwrap()
    );
    assert_eq!(payments.static_endpoints[0].zone, "eu-1");
    assert_eq!(
        payments.static_endpoints[1].address,
        "[2001:db8::7]:443".parse().unwrap()
    );

    assert_eq!(m.traffic.len(), 1);
    let rule = &m.traffic[0];
    assert_eq!(rule.service, key("reviews", "default"));
    assert_eq!(rule.port, Some(9080));
    let r0 = &rule.routes[0];
    assert_eq!(r0.name, "alice");
    assert_eq!(r0.matcher.path, Some(PathMatch::Prefix("/api/".into())));
    assert_eq!(r0.matcher.methods, ["GET", "HEAD"]);
    assert_eq!(
        r0.matcher.headers[0],
        HeaderMatch {
            name: "x-user".into(),
            kind: HeaderMatchKind::Exact("alice".into())
        }
    );
    assert_eq!(r0.matcher.headers[1].kind, HeaderMatchKind::Present(true));
    assert_eq!(
        r0.matcher.headers[2].kind,
        HeaderMatchKind::Regex("[0-9a-f]+".into())
    );
    assert_eq!(
        r0.split,
        [Destination {
            service: key("reviews", "default"),
            subset: Some("v2".into()),
            weight: 1
        }]
    );
    assert_eq!(r0.prefix_rewrite.as_deref(), Some("/v2/api/"));
    let r1 = &rule.routes[1];
    assert_eq!(
        r1.matcher.path,
        Some(PathMatch::Regex("/reviews/[0-9]+".into()))
    );
    assert_eq!(
        r1.split.iter().map(|d| d.weight).collect::<Vec<_>>(),
        [90, 10]
    );
    assert_eq!(r1.timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        r1.retries,
        Some(Retries {
            attempts: 2,
            on: vec!["connect-failure".into(), "5xx".into()],
            per_try_timeout: Some(Duration::from_millis(500)),
        })
    );
    let r2 = &rule.routes[2];
    assert_eq!(r2.name, "route-2", "an unnamed route is named by its index");
    assert_eq!(r2.matcher, RouteMatch::default());
    assert_eq!(r2.retries.as_ref().unwrap().on, ["connect-failure"]);

    assert_eq!(m.policies.len(), 2);
    let p = &m.policies[0];
    assert_eq!(p.action, PolicyAction::Allow);
    assert_eq!(
        p.rules[0],
        PolicyRule {
            source_identities: vec!["spiffe://prod.example/ns/default/sa/frontend".into()],
            source_namespaces: vec!["default".into()],
            methods: vec!["GET".into()],
            paths: vec![(false, "/api".into()), (true, "/health".into())],
            ports: vec![9080],
        }
    );
    assert_eq!(m.policies[1].action, PolicyAction::Deny);
    assert_eq!(m.policies[1].service, key("reviews", "default"));
    assert_eq!(m.version.len(), 16);
}

#[test]
fn nothing_is_a_valid_mesh() {
    let m = load(&[]).unwrap();
    assert_eq!(m.trust_domain, "cluster.local");
    assert!(m.services.is_empty() && m.traffic.is_empty() && m.policies.is_empty());
    let m = load(&[
        ("a.yaml", ""),
        ("b.yaml", "# only a comment\n"),
        ("c.yml", "---\n"),
    ])
    .unwrap();
    assert!(m.services.is_empty());
    let m = load(&[("a.yaml", "services: []\ntraffic: []\npolicies: []\n")]).unwrap();
    assert!(m.services.is_empty());
}

#[test]
fn files_merge_in_order() {
    let m = load(&[
        ("a.yaml", SERVICES),
        (
            "b.yaml",
            "traffic:\n  - {name: r1, service: ratings, routes: [{split: [{weight: 1}]}]}\n\
             services:\n  - {name: aaa, ports: [{name: p, port: 1, protocol: tcp}]}\n",
        ),
        (
            "c.yaml",
            "mesh: {trust_domain: x.y}\ntraffic:\n  - {name: r0, service: reviews, routes: []}\n",
        ),
    ])
    .unwrap();
    assert_eq!(m.trust_domain, "x.y");
    let keys: Vec<String> = m.services.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "aaa.default",
            "db.data",
            "ratings.default",
            "reviews.default"
        ]
    );
    let names: Vec<&str> = m.traffic.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["r1", "r0"], "file order, not sorted by name");
}

#[test]
fn references_default_to_namespace_default() {
    let m = load(&[(
        "m.yaml",
        "services:\n  - {name: a, namespace: other, ports: [{name: p, port: 1, protocol: http}]}\n  \
         - {name: a, ports: [{name: p, port: 1, protocol: http}], calls: [a, a.other]}\n",
    )])
    .unwrap();
    assert_eq!(
        m.services[0].calls,
        Some(vec![key("a", "default"), key("a", "other")])
    );
    assert_eq!(
        err1("services:\n  - {name: a, namespace: other, ports: [{name: p, port: 1, protocol: http}]}\n  \
              - {name: b, ports: [{name: p, port: 1, protocol: http}], calls: [a]}\n"),
        "m.yaml:3: services[1].calls[0]: unknown service a.default"
    );
}

#[test]
fn version_is_a_content_hash_of_names_and_texts() {
    let a = load(&[("a.yaml", SERVICES)]).unwrap().version;
    assert_eq!(a, load(&[("a.yaml", SERVICES)]).unwrap().version);
    assert_ne!(a, load(&[("b.yaml", SERVICES)]).unwrap().version);
    let mut changed = SERVICES.to_owned();
    changed.push_str("# comment\n");
    assert_ne!(a, load(&[("a.yaml", &changed)]).unwrap().version);
    assert_ne!(
        load(&[("a.yaml", ""), ("b.yaml", "")]).unwrap().version,
        load(&[("a.yaml", "")]).unwrap().version
    );
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
}

// ---------------------------------------------------------------------------
// Schema errors (serde)
// ---------------------------------------------------------------------------

#[test]
fn unknown_fields_are_rejected() {
    assert_eq!(
        err1("service:\n  - name: a\n"),
        "m.yaml:1: unknown field `service`, expected one of `mesh`, `services`, `traffic`, `policies`"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports: [{name: p, port: 1, protocol: http, tls: true}]\n"),
        "m.yaml:3: services[0].ports[0]: unknown field `tls`, expected one of `name`, `port`, `protocol`"
    );
    assert_eq!(
        err_with_services(
            "traffic:\n  - name: r\n    service: reviews\n    routes:\n      - split: [{weight: 1}]\n        retry: {}\n"
        ),
        "t.yaml:6: traffic[0].routes[0]: unknown field `retry`, expected one of `name`, `match`, `split`, `timeout`, `retries`, `prefix_rewrite`"
    );
    assert_eq!(
        err1("mesh: {trust_domain: a, ca: b}\n"),
        "m.yaml:1: mesh: unknown field `ca`, expected `trust_domain` or `mtls`"
    );
}

#[test]
fn wrong_types_and_variants_are_rejected() {
    assert_eq!(
        err1("services:\n  - name: a\n    ports: [{name: p, port: 1, protocol: udp}]\n"),
        "m.yaml:3: services[0].ports[0].protocol: unknown variant `udp`, expected one of `http`, `http2`, `grpc`, `tcp`"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports: [{name: p, port: 1, protocol: http}]\n    lb_policy: fastest\n"),
        "m.yaml:4: services[0].lb_policy: unknown variant `fastest`, expected one of `round_robin`, `random`, `least_request`"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports: [{name: p, port: http, protocol: http}]\n"),
        "m.yaml:3: services[0].ports[0].port: invalid type: string \"http\", expected u64"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports: [{name: p, port: 1, protocol: http}]\n    connect_timeout: 5\n"),
        "m.yaml:4: services[0].connect_timeout: duration \"5\" has no unit (use ms, s, m or h)"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports: [{name: p, port: 1, protocol: http}]\n    connect_timeout: 5d\n"),
        "m.yaml:4: services[0].connect_timeout: duration \"5d\" has unknown unit \"d\" (use ms, s, m or h)"
    );
    assert_eq!(
        err1("services:\n  - ports: [{name: p, port: 1, protocol: http}]\n"),
        "m.yaml:2: services[0]: missing field `name`"
    );
    assert_eq!(
        err1("policies:\n  - {name: p, service: a, action: permit}\n"),
        "m.yaml:2: policies[0].action: unknown variant `permit`, expected `allow` or `deny`"
    );
    assert_eq!(
        err1("services: {}\n"),
        "m.yaml:1: services: invalid type: map, expected a sequence"
    );
    assert_eq!(
        err1("services: [\n"),
        "m.yaml:2: did not find expected node content"
    );
}

// ---------------------------------------------------------------------------
// mesh:
// ---------------------------------------------------------------------------

#[test]
fn mesh_is_set_at_most_once() {
    assert_eq!(
        err(&[
            ("a.yaml", "services: []\nmesh: {trust_domain: a.b}\n"),
            ("b.yaml", "\nmesh:\n  trust_domain: c.d\n")
        ]),
        "b.yaml:2: mesh: is already set in a.yaml:2"
    );
    // An empty `mesh:` in one file still counts.
    assert_eq!(
        err(&[("a.yaml", "mesh: {}\n"), ("b.yaml", "mesh: {}\n")]),
        "b.yaml:1: mesh: is already set in a.yaml:1"
    );
}

#[test]
fn trust_domain_is_a_dns_name() {
    assert_eq!(
        err1("mesh:\n  trust_domain: Cluster.Local\n"),
        "m.yaml:2: mesh.trust_domain: \"Cluster.Local\" is not a trust domain (DNS labels joined by '.', e.g. cluster.local)"
    );
    assert!(err1("mesh: {trust_domain: ''}\n").contains("is not a trust domain"));
    assert!(err1("mesh: {trust_domain: a..b}\n").contains("is not a trust domain"));
}

#[test]
fn mtls_modes_default_to_permissive_and_services_override() {
    let m = load(&[("m.yaml", &svc(""))]).unwrap();
    assert_eq!(m.mtls, MtlsMode::Permissive);
    assert_eq!(m.services[0].mtls, MtlsMode::Permissive);
    let text = format!(
        "mesh: {{mtls: strict}}\n{}  - name: b\n    mtls: disable\n    ports: [{{name: p, port: 1, protocol: http}}]\n",
        svc("")
    );
    let m = load(&[("m.yaml", &text)]).unwrap();
    assert_eq!(m.mtls, MtlsMode::Strict);
    assert_eq!(m.services[0].mtls, MtlsMode::Strict);
    assert_eq!(m.services[1].mtls, MtlsMode::Disable);
    let m = load(&[("m.yaml", &svc("    mtls: permissive\n"))]).unwrap();
    assert_eq!(m.services[0].mtls, MtlsMode::Permissive);
}

#[test]
fn mtls_modes_are_checked() {
    assert_eq!(
        err1("mesh:\n  mtls: on\n"),
        "m.yaml:2: mesh.mtls: unknown variant `on`, expected one of `strict`, `permissive`, `disable`"
    );
    assert_eq!(
        err1(&svc("    mtls: STRICT\n")),
        "m.yaml:4: services[0].mtls: unknown variant `STRICT`, expected one of `strict`, `permissive`, `disable`"
    );
}

// ---------------------------------------------------------------------------
// services:
// ---------------------------------------------------------------------------

fn svc(extra: &str) -> String {
    format!("services:\n  - name: a\n    ports: [{{name: p, port: 1, protocol: http}}]\n{extra}")
}

#[test]
fn names_are_dns_labels() {
    let msg = "is not a DNS label (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)";
    assert_eq!(
        err1("services:\n  - name: Reviews\n    ports: [{name: p, port: 1, protocol: http}]\n"),
        format!("m.yaml:2: services[0].name: \"Reviews\" {msg}")
    );
    assert_eq!(
        err1("services:\n  - name: ''\n    ports: [{name: p, port: 1, protocol: http}]\n"),
        "m.yaml:2: services[0].name: must not be empty"
    );
    for bad in ["-a", "a-", "a_b", "a.b", "ä"] {
        assert_eq!(
            err1(&format!(
                "services:\n  - name: '{bad}'\n    ports: [{{name: p, port: 1, protocol: http}}]\n"
            )),
            format!("m.yaml:2: services[0].name: {bad:?} {msg}")
        );
    }
    let long = "a".repeat(64);
    assert_eq!(
        err1(&format!(
            "services:\n  - name: {long}\n    ports: [{{name: p, port: 1, protocol: http}}]\n"
        )),
        format!("m.yaml:2: services[0].name: {long:?} {msg}")
    );
    let ok = "a".repeat(63);
    load(&[(
        "m.yaml",
        &format!("services:\n  - name: {ok}\n    ports: [{{name: p, port: 1, protocol: http}}]\n"),
    )])
    .unwrap();
    assert_eq!(
        err1(&svc("    namespace: Prod\n")),
        format!("m.yaml:4: services[0].namespace: \"Prod\" {msg}")
    );
    assert_eq!(
        err1(&svc("    subsets: [{name: V1, labels: {v: '1'}}]\n")),
        format!("m.yaml:4: services[0].subsets[0].name: \"V1\" {msg}")
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports: [{name: HTTP, port: 1, protocol: http}]\n"),
        format!("m.yaml:3: services[0].ports[0].name: \"HTTP\" {msg}")
    );
}

#[test]
fn duplicate_services_name_the_second_file() {
    assert_eq!(
        err(&[
            ("a.yaml", SERVICES),
            (
                "b.yaml",
                "services:\n  - name: x\n    ports: [{name: p, port: 1, protocol: http}]\n  - name: ratings\n    ports: [{name: p, port: 1, protocol: http}]\n"
            )
        ]),
        "b.yaml:4: services[1].name: service ratings.default is already declared in a.yaml:9"
    );
    assert_eq!(
        err1("services:\n  - {name: a, namespace: default, ports: [{name: p, port: 1, protocol: http}]}\n  - {name: a, ports: [{name: p, port: 1, protocol: http}]}\n"),
        "m.yaml:3: services[1].name: service a.default is already declared in m.yaml:2"
    );
    // Same name in another namespace is another service.
    load(&[(
        "m.yaml",
        "services:\n  - {name: a, namespace: x, ports: [{name: p, port: 1, protocol: http}]}\n  - {name: a, ports: [{name: p, port: 1, protocol: http}]}\n",
    )])
    .unwrap();
}

#[test]
fn ports_are_checked() {
    assert_eq!(
        err1("services:\n  - name: a\n"),
        "m.yaml:2: services[0].ports: a service needs at least one port"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports: []\n"),
        "m.yaml:3: services[0].ports: a service needs at least one port"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports:\n      - {name: p, port: 0, protocol: http}\n"),
        "m.yaml:4: services[0].ports[0].port: port 0 is out of range 1..=65535"
    );
    assert_eq!(
        err1(
            "services:\n  - name: a\n    ports:\n      - {name: p, port: 65536, protocol: http}\n"
        ),
        "m.yaml:4: services[0].ports[0].port: port 65536 is out of range 1..=65535"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports:\n      - {name: p, port: -1, protocol: http}\n"),
        "m.yaml:4: services[0].ports[0].port: invalid type: integer `-1`, expected u64"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports:\n      - {name: p, port: 1, protocol: http}\n      - {name: p, port: 2, protocol: tcp}\n"),
        "m.yaml:5: services[0].ports[1].name: port name \"p\" is used twice in this service"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports:\n      - {name: p, port: 1, protocol: http}\n      - {name: q, port: 1, protocol: tcp}\n"),
        "m.yaml:5: services[0].ports[1].port: port 1 is declared twice in this service"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports:\n      - {name: p, port: 1}\n"),
        "m.yaml:4: services[0].ports[0]: missing field `protocol`"
    );
}

#[test]
fn subsets_are_checked() {
    assert_eq!(
        err1(&svc("    subsets:\n      - {name: v1, labels: {v: '1'}}\n      - {name: v1, labels: {v: '2'}}\n")),
        "m.yaml:6: services[0].subsets[1].name: subset \"v1\" is declared twice in this service"
    );
    assert_eq!(
        err1(&svc("    subsets:\n      - {name: v1}\n")),
        "m.yaml:5: services[0].subsets[0].labels: a subset needs at least one label"
    );
    assert_eq!(
        err1(&svc("    subsets:\n      - {name: v1, labels: {}}\n")),
        "m.yaml:5: services[0].subsets[0].labels: a subset needs at least one label"
    );
    assert_eq!(
        err1(&svc(
            "    subsets:\n      - name: v1\n        labels: {'': x}\n"
        )),
        "m.yaml:6: services[0].subsets[0].labels: \"\" is not a label key"
    );
}

#[test]
fn static_endpoints_are_ip_and_port() {
    assert_eq!(
        err1(&svc("    endpoints:\n      - {address: 'example.com:80'}\n")),
        "m.yaml:5: services[0].endpoints[0].address: \"example.com:80\" is not an IP:port address (e.g. 10.0.0.7:8080 or [fd00::7]:8080)"
    );
    assert_eq!(
        err1(&svc("    endpoints:\n      - {address: 10.0.0.1}\n")),
        "m.yaml:5: services[0].endpoints[0].address: \"10.0.0.1\" is not an IP:port address (e.g. 10.0.0.7:8080 or [fd00::7]:8080)"
    );
    assert_eq!(
        err1(&svc("    endpoints:\n      - {address: '10.0.0.1:0'}\n")),
        "m.yaml:5: services[0].endpoints[0].address: port 0 is not a valid port"
    );
    assert_eq!(
        err1(&svc("    endpoints:\n      - {labels: {a: b}}\n")),
        "m.yaml:5: services[0].endpoints[0]: missing field `address`"
    );
}

#[test]
fn connect_timeout_is_positive() {
    assert_eq!(
        err1(&svc("    connect_timeout: 0s\n")),
        "m.yaml:4: services[0].connect_timeout: must be more than 0"
    );
}

#[test]
fn calls_name_known_services() {
    assert_eq!(
        err(&[
            ("s.yaml", SERVICES),
            ("t.yaml", &svc("    calls: [ratings, details]\n"))
        ]),
        "t.yaml:4: services[0].calls[1]: unknown service details.default"
    );
    assert_eq!(
        err(&[
            ("s.yaml", SERVICES),
            ("t.yaml", &svc("    calls:\n      - db\n"))
        ]),
        "t.yaml:5: services[0].calls[0]: unknown service db.default"
    );
    assert_eq!(
        err(&[("s.yaml", SERVICES), ("t.yaml", &svc("    calls: [db.data.svc]\n"))]),
        "t.yaml:4: services[0].calls[0]: \"db.data.svc\" is not a service reference (\"name\" or \"name.namespace\", DNS labels)"
    );
    assert_eq!(
        err(&[
            ("s.yaml", SERVICES),
            ("t.yaml", &svc("    calls: [ratings, ratings.default]\n"))
        ]),
        "t.yaml:4: services[0].calls[1]: ratings.default is listed twice"
    );
    // Known across files, in either order; an empty list calls nothing.
    let m = load(&[
        ("a.yaml", &svc("    calls: [db.data]\n")),
        ("b.yaml", SERVICES),
    ])
    .unwrap();
    assert_eq!(m.services[0].calls, Some(vec![key("db", "data")]));
    let m = load(&[("a.yaml", &svc("    calls: []\n"))]).unwrap();
    assert_eq!(m.services[0].calls, Some(vec![]));
}

#[test]
fn too_many_services() {
    let mut text = String::from("services:\n");
    for i in 0..=MAX_SERVICES {
        text.push_str(&format!(
            "  - {{name: s{i}, ports: [{{name: p, port: 1, protocol: tcp}}]}}\n"
        ));
    }
    let start = std::time::Instant::now();
    assert_eq!(
        err1(&text),
        "m.yaml:10002: services[10000]: more than 10000 services in the config directory"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    // Exactly the limit loads.
    let cut = text.rfind("  - ").unwrap();
    assert_eq!(
        load(&[("m.yaml", &text[..cut])]).unwrap().services.len(),
        MAX_SERVICES
    );
}

// ---------------------------------------------------------------------------
// traffic:
// ---------------------------------------------------------------------------

/// One traffic rule for `reviews` with the given route lines (indented 6).
fn rule(route: &str) -> String {
    format!("traffic:\n  - name: r\n    service: reviews\n    routes:\n{route}")
}

#[test]
fn traffic_rules_name_a_known_service_and_http_port() {
    assert_eq!(
        err_with_services("traffic:\n  - name: r\n    service: details\n"),
        "t.yaml:3: traffic[0].service: unknown service details.default"
    );
    assert_eq!(
        err_with_services("traffic:\n  - name: r\n    service: db\n"),
        "t.yaml:3: traffic[0].service: unknown service db.default"
    );
    assert_eq!(
        err_with_services("traffic:\n  - name: r\n    service: db.data\n"),
        "t.yaml:3: traffic[0].service: service db.data has no HTTP (http, http2, grpc) port"
    );
    assert_eq!(
        err_with_services("traffic:\n  - name: r\n    service: 'Reviews'\n"),
        "t.yaml:3: traffic[0].service: \"Reviews\" is not a service reference (\"name\" or \"name.namespace\", DNS labels)"
    );
    assert_eq!(
        err_with_services("traffic:\n  - name: r\n    service: reviews\n    port: 8080\n"),
        "t.yaml:4: traffic[0].port: service reviews.default has no port 8080"
    );
    assert_eq!(
        err_with_services("traffic:\n  - name: r\n    service: reviews\n    port: 9090\n"),
        "t.yaml:4: traffic[0].port: port 9090 of reviews.default is tcp; traffic rules apply to an HTTP (http, http2, grpc) port"
    );
    assert_eq!(
        err_with_services("traffic:\n  - name: r\n    service: reviews\n    port: 0\n"),
        "t.yaml:4: traffic[0].port: port 0 is out of range 1..=65535"
    );
    assert_eq!(
        err_with_services("traffic:\n  - name: R\n    service: reviews\n"),
        "t.yaml:2: traffic[0].name: \"R\" is not a DNS label (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
    );
}

#[test]
fn traffic_rule_names_are_unique_across_files() {
    assert_eq!(
        err(&[
            ("a.yaml", SERVICES),
            ("b.yaml", "traffic:\n  - {name: r, service: reviews}\n"),
            ("c.yaml", "traffic:\n  - {name: q, service: ratings}\n  - {name: r, service: ratings.default}\n"),
        ]),
        "c.yaml:3: traffic[1].name: traffic rule \"r\" is already declared in b.yaml:2"
    );
}

#[test]
fn one_traffic_rule_per_service_port() {
    assert_eq!(
        err(&[
            ("a.yaml", SERVICES),
            ("b.yaml", "traffic:\n  - {name: a, service: reviews, port: 9080}\n"),
            ("c.yaml", "traffic:\n  - name: b\n    service: reviews.default\n    port: 9080\n"),
        ]),
        "c.yaml:4: traffic[0].port: traffic rule \"a\" (b.yaml:2) already applies to port 9080 of reviews.default"
    );
    // A rule without a port covers every HTTP port, so it clashes both ways.
    assert_eq!(
        err_with_services("traffic:\n  - {name: a, service: reviews}\n  - {name: b, service: reviews, port: 9080}\n"),
        "t.yaml:3: traffic[1].port: traffic rule \"a\" (t.yaml:2) already applies to every HTTP (http, http2, grpc) port of reviews.default"
    );
    assert_eq!(
        err_with_services("traffic:\n  - {name: a, service: reviews, port: 9080}\n  - {name: b, service: reviews}\n"),
        "t.yaml:3: traffic[1].service: traffic rule \"a\" (t.yaml:2) already applies to port 9080 of reviews.default"
    );
    // Different services do not clash.
    load(&[
        ("a.yaml", SERVICES),
        (
            "b.yaml",
            "traffic:\n  - {name: a, service: reviews}\n  - {name: b, service: ratings}\n",
        ),
    ])
    .unwrap();
}

// ---------------------------------------------------------------------------
// HTTP/2 and gRPC ports
// ---------------------------------------------------------------------------

/// A gRPC service, an HTTP/2 one, and one with a gRPC and a TCP port.
const H2_SERVICES: &str = "\
services:
  - name: echo
    ports: [{name: grpc, port: 50051, protocol: grpc}]
    subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v2, labels: {version: v2}}
  - name: web
    ports: [{name: h2, port: 8443, protocol: http2}]
  - name: mixed
    ports:
      - {name: api, port: 9000, protocol: grpc}
      - {name: raw, port: 9001, protocol: tcp}
      - {name: web, port: 9002, protocol: http}
";

fn load_with_h2(text: &str) -> Result<Mesh, MeshError> {
    load(&[("s.yaml", H2_SERVICES), ("t.yaml", text)])
}

fn err_with_h2(text: &str) -> String {
    err(&[("s.yaml", H2_SERVICES), ("t.yaml", text)])
}

#[test]
fn port_protocols_http2_and_grpc_are_http_family() {
    let m = load(&[("s.yaml", H2_SERVICES)]).unwrap();
    let protocols = |name: &str| -> Vec<Protocol> {
        let s = m.services.iter().find(|s| s.key.name == name).unwrap();
        s.ports.iter().map(|p| p.protocol).collect()
    };
    assert_eq!(protocols("echo"), [Protocol::Grpc]);
    assert_eq!(protocols("web"), [Protocol::Http2]);
    assert_eq!(
        protocols("mixed"),
        [Protocol::Grpc, Protocol::Tcp, Protocol::Http]
    );
    for p in [Protocol::Http, Protocol::Http2, Protocol::Grpc] {
        assert!(p.is_http(), "{p:?}");
    }
    assert!(!Protocol::Tcp.is_http());
    assert_eq!(
        err1("services:\n  - name: a\n    ports: [{name: p, port: 1, protocol: h2}]\n"),
        "m.yaml:3: services[0].ports[0].protocol: unknown variant `h2`, expected one of `http`, `http2`, `grpc`, `tcp`"
    );
    assert_eq!(
        err1("services:\n  - name: a\n    ports: [{name: p, port: 1, protocol: GRPC}]\n"),
        "m.yaml:3: services[0].ports[0].protocol: unknown variant `GRPC`, expected one of `http`, `http2`, `grpc`, `tcp`"
    );
}

#[test]
fn traffic_rules_apply_to_grpc_and_http2_ports() {
    // Every route feature on a gRPC service, without and with a port.
    let m = load_with_h2(
        "\
traffic:
  - name: echo-canary
    service: echo
    routes:
      - name: slow
        match:
          path: {prefix: /ringmesh.testing.v1.Echo/}
          methods: [POST]
          headers: [{name: x-canary, present: true}]
        split:
          - {subset: v1, weight: 90}
          - {subset: v2, weight: 10}
        timeout: 250ms
        retries: {attempts: 2, on: [connect-failure, reset], per_try_timeout: 100ms}
  - name: web
    service: web
    port: 8443
    routes:
      - match: {path: {prefix: /v1/}}
        split: [{service: echo, weight: 1}]
        prefix_rewrite: /
  - name: mixed-api
    service: mixed
    port: 9000
    routes:
      - split: [{service: web, weight: 1}]
",
    )
    .unwrap();
    assert_eq!(m.traffic.len(), 3);
    let r = &m.traffic[0].routes[0];
    assert_eq!(m.traffic[0].port, None);
    assert_eq!(r.timeout, Some(Duration::from_millis(250)));
    assert_eq!(r.split.len(), 2);
    assert_eq!(r.retries.as_ref().unwrap().attempts, 2);
    assert_eq!(m.traffic[1].port, Some(8443));
    assert_eq!(m.traffic[2].port, Some(9000));
    // The TCP port of a service with a gRPC port is still refused.
    assert_eq!(
        err_with_h2("traffic:\n  - name: r\n    service: mixed\n    port: 9001\n"),
        "t.yaml:4: traffic[0].port: port 9001 of mixed.default is tcp; traffic rules apply to an HTTP (http, http2, grpc) port"
    );
    // A rule for every port of `mixed` covers the gRPC and the HTTP port.
    assert_eq!(
        err_with_h2("traffic:\n  - {name: a, service: mixed}\n  - {name: b, service: mixed, port: 9000}\n"),
        "t.yaml:3: traffic[1].port: traffic rule \"a\" (t.yaml:2) already applies to every HTTP (http, http2, grpc) port of mixed.default"
    );
    // A gRPC-only service is a valid split target from an HTTP rule.
    load(&[
        ("s.yaml", SERVICES),
        ("u.yaml", H2_SERVICES),
        (
            "t.yaml",
            &rule("      - split: [{service: echo, weight: 1}, {subset: v1, weight: 1}]\n"),
        ),
    ])
    .unwrap();
}

#[test]
fn policies_apply_to_grpc_ports() {
    let m = load_with_h2(
        "\
policies:
  - name: echo-readers
    service: echo
    action: allow
    rules:
      - sources: {namespaces: [default]}
        methods: [POST]
        paths: [{prefix: /ringmesh.testing.v1.Echo/}, {exact: /grpc.health.v1.Health/Check}]
        ports: [50051]
",
    )
    .unwrap();
    let rule = &m.policies[0].rules[0];
    assert_eq!(rule.ports, [50051]);
    assert_eq!(rule.paths.len(), 2);
    assert_eq!(rule.methods, ["POST"]);
}

#[test]
fn routes_are_checked() {
    assert_eq!(
        err_with_services(&rule("      - name: a\n        split: [{weight: 1}]\n      - name: a\n        split: [{weight: 1}]\n")),
        "t.yaml:7: traffic[0].routes[1].name: route \"a\" is declared twice in this rule"
    );
    assert_eq!(
        err_with_services(&rule("      - name: A\n        split: [{weight: 1}]\n")),
        "t.yaml:5: traffic[0].routes[0].name: \"A\" is not a DNS label (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
    );
    assert_eq!(
        err_with_services(&rule(
            "      - name: a\n        split: [{weight: 1}]\n        timeout: 0ms\n"
        )),
        "t.yaml:7: traffic[0].routes[0].timeout: must be more than 0"
    );
    assert_eq!(
        err_with_services(&rule("      - split: [{weight: 1}]\n        match: {path: {prefix: /a}}\n        prefix_rewrite: v2/\n")),
        "t.yaml:7: traffic[0].routes[0].prefix_rewrite: \"v2/\" is not a path (starts with /, no spaces or control characters)"
    );
    assert_eq!(
        err_with_services(&rule(
            "      - split: [{weight: 1}]\n        prefix_rewrite: /v2/\n"
        )),
        "t.yaml:6: traffic[0].routes[0].prefix_rewrite: needs a match.path.prefix route"
    );
    assert_eq!(
        err_with_services(&rule("      - split: [{weight: 1}]\n        match: {path: {exact: /a}}\n        prefix_rewrite: /v2/\n")),
        "t.yaml:7: traffic[0].routes[0].prefix_rewrite: needs a match.path.prefix route"
    );
}

#[test]
fn matches_are_checked() {
    let m = |matcher: &str| {
        err_with_services(&rule(&format!(
            "      - split: [{{weight: 1}}]\n        match:\n{matcher}"
        )))
    };
    assert_eq!(
        m("          path: {prefix: api}\n"),
        "t.yaml:7: traffic[0].routes[0].match.path.prefix: \"api\" is not a path (starts with /, no spaces or control characters)"
    );
    assert_eq!(
        m("          path: {exact: '/a b'}\n"),
        "t.yaml:7: traffic[0].routes[0].match.path.exact: \"/a b\" is not a path (starts with /, no spaces or control characters)"
    );
    assert_eq!(
        m("          path: {prefix: /a, exact: /a}\n"),
        "t.yaml:7: traffic[0].routes[0].match.path: set exactly one of prefix, exact, regex"
    );
    assert_eq!(
        m("          path: {}\n"),
        "t.yaml:7: traffic[0].routes[0].match.path: set exactly one of prefix, exact, regex"
    );
    assert!(
        m("          path:\n            regex: '/(a'\n").starts_with(
            "t.yaml:8: traffic[0].routes[0].match.path.regex: bad regex: regex parse error:"
        )
    );
    assert_eq!(
        m("          methods: [GET, 'PO ST']\n"),
        "t.yaml:7: traffic[0].routes[0].match.methods[1]: \"PO ST\" is not an HTTP method"
    );
    assert_eq!(
        m("          methods: ['']\n"),
        "t.yaml:7: traffic[0].routes[0].match.methods[0]: \"\" is not an HTTP method"
    );
    assert_eq!(
        m("          headers:\n            - {name: 'x user', exact: a}\n"),
        "t.yaml:8: traffic[0].routes[0].match.headers[0].name: \"x user\" is not a valid header name"
    );
    assert_eq!(
        m("          headers:\n            - {name: x, exact: a, present: true}\n"),
        "t.yaml:8: traffic[0].routes[0].match.headers[0]: set exactly one of exact, present, regex"
    );
    assert_eq!(
        m("          headers:\n            - {name: x}\n"),
        "t.yaml:8: traffic[0].routes[0].match.headers[0]: set exactly one of exact, present, regex"
    );
    assert_eq!(
        m("          headers:\n            - {name: x, exact: \"a\\nb\"}\n"),
        "t.yaml:8: traffic[0].routes[0].match.headers[0].exact: has control characters"
    );
    assert!(
        m("          headers:\n            - {name: x, regex: '[z-a]'}\n").starts_with(
            "t.yaml:8: traffic[0].routes[0].match.headers[0].regex: bad regex: regex parse error:"
        )
    );
}

#[test]
fn huge_regexes_are_refused_quickly() {
    let start = std::time::Instant::now();
    let e = err_with_services(&rule(
        "      - split: [{weight: 1}]\n        match: {path: {regex: '(\\w{100}){100}'}}\n",
    ));
    assert!(
        e.starts_with("t.yaml:6: traffic[0].routes[0].match.path.regex: bad regex: "),
        "{e}"
    );
    assert!(e.contains("exceeds size limit"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn regexes_are_anchored_like_the_engine() {
    // `a|b` anchored as `^(?:a|b)$` is valid; a bare `)` could escape a
    // naive `^...$` wrapping and must still be refused.
    load(&[
        ("s.yaml", SERVICES),
        (
            "t.yaml",
            &rule("      - split: [{weight: 1}]\n        match: {path: {regex: '/a|/b'}}\n"),
        ),
    ])
    .unwrap();
    assert!(err_with_services(&rule(
        "      - split: [{weight: 1}]\n        match: {path: {regex: '/a)|(/b'}}\n"
    ))
    .contains("bad regex"));
}

#[test]
fn splits_are_checked() {
    let s = |split: &str| err_with_services(&rule(&format!("      - split:\n{split}")));
    assert_eq!(
        err_with_services(&rule("      - name: a\n")),
        "t.yaml:5: traffic[0].routes[0].split: a route needs at least one destination"
    );
    assert_eq!(
        err_with_services(&rule("      - split: []\n")),
        "t.yaml:5: traffic[0].routes[0].split: a route needs at least one destination"
    );
    assert_eq!(
        s("          - {subset: v3, weight: 1}\n"),
        "t.yaml:6: traffic[0].routes[0].split[0].subset: service reviews.default has no subset \"v3\""
    );
    assert_eq!(
        s("          - {service: ratings, subset: v1, weight: 1}\n"),
        "t.yaml:6: traffic[0].routes[0].split[0].subset: service ratings.default has no subset \"v1\""
    );
    assert_eq!(
        s("          - {subset: v1, weight: 1}\n          - {service: details, weight: 1}\n"),
        "t.yaml:7: traffic[0].routes[0].split[1].service: unknown service details.default"
    );
    assert_eq!(
        s("          - {service: db.data, weight: 1}\n"),
        "t.yaml:6: traffic[0].routes[0].split[0].service: service db.data has no HTTP (http, http2, grpc) port"
    );
    assert_eq!(
        s("          - {subset: v1, weight: 1}\n          - {subset: v1, weight: 2}\n"),
        "t.yaml:7: traffic[0].routes[0].split[1]: destination reviews.default/v1 appears twice in this split"
    );
    assert_eq!(
        s("          - {weight: 1}\n          - {service: reviews.default, weight: 2}\n"),
        "t.yaml:7: traffic[0].routes[0].split[1]: destination reviews.default appears twice in this split"
    );
    // Another service with its own subset is fine.
    load(&[
        ("s.yaml", SERVICES),
        ("t.yaml", &rule("      - split:\n          - {subset: v1, weight: 1}\n          - {service: ratings, weight: 1}\n")),
    ])
    .unwrap();
}

#[test]
fn weights_are_checked() {
    let s = |split: &str| err_with_services(&rule(&format!("      - split:\n{split}")));
    assert_eq!(
        s("          - {subset: v1}\n          - {subset: v2, weight: 1}\n"),
        "t.yaml:6: traffic[0].routes[0].split[0].weight: a weight is required when the split has more than one destination"
    );
    assert_eq!(
        s("          - {subset: v1, weight: 1000001}\n"),
        "t.yaml:6: traffic[0].routes[0].split[0].weight: weight 1000001 is more than 1000000"
    );
    assert_eq!(
        s("          - {subset: v1, weight: 0}\n          - {subset: v2, weight: 0}\n"),
        "t.yaml:5: traffic[0].routes[0].split: the weights sum to 0; at least one must be more than 0"
    );
    assert_eq!(
        s("          - {subset: v1, weight: 1000000}\n          - {subset: v2, weight: 1}\n"),
        "t.yaml:5: traffic[0].routes[0].split: the weights sum to 1000001, more than 1000000"
    );
    assert_eq!(
        s("          - {subset: v1, weight: -1}\n"),
        "t.yaml:6: traffic[0].routes[0].split[0].weight: invalid type: integer `-1`, expected u64"
    );
    assert_eq!(
        s("          - {subset: v1, weight: 18446744073709551616}\n"),
        "t.yaml:6: traffic[0].routes[0].split[0].weight: invalid type: integer `18446744073709551616` as u128, expected u64"
    );
    // 100/0 and the maximum are fine.
    let m = load(&[
        ("s.yaml", SERVICES),
        ("t.yaml", &rule("      - split:\n          - {subset: v1, weight: 100}\n          - {subset: v2, weight: 0}\n      - split:\n          - {subset: v1, weight: 999999}\n          - {subset: v2, weight: 1}\n")),
    ])
    .unwrap();
    assert_eq!(m.traffic[0].routes[0].split[1].weight, 0);
    assert_eq!(m.traffic[0].routes[1].split[0].weight, 999_999);
}

#[test]
fn retries_are_checked() {
    let r = |retries: &str| {
        err_with_services(&rule(&format!(
            "      - split: [{{weight: 1}}]\n        retries:\n{retries}"
        )))
    };
    assert_eq!(
        r("          attempts: 11\n"),
        "t.yaml:7: traffic[0].routes[0].retries.attempts: 11 attempts is more than 10"
    );
    assert_eq!(
        r("          attempts: 2\n          on: [5xx, timeout]\n"),
        "t.yaml:8: traffic[0].routes[0].retries.on[1]: unknown retry condition \"timeout\" (use connect-failure, reset, 5xx, gateway-error, retriable-4xx)"
    );
    assert_eq!(
        r("          attempts: 2\n          on: []\n"),
        "t.yaml:8: traffic[0].routes[0].retries.on: name at least one condition (or leave `on` out for connect-failure)"
    );
    assert_eq!(
        r("          attempts: 2\n          per_try_timeout: 0s\n"),
        "t.yaml:8: traffic[0].routes[0].retries.per_try_timeout: must be more than 0"
    );
    assert_eq!(
        r("          on: [5xx]\n"),
        "t.yaml:7: traffic[0].routes[0].retries: missing field `attempts`"
    );
    let m = load(&[
        ("s.yaml", SERVICES),
        (
            "t.yaml",
            &rule("      - split: [{weight: 1}]\n        retries: {attempts: 10, on: [connect-failure, reset, 5xx, gateway-error, retriable-4xx]}\n      - split: [{weight: 1}]\n        retries: {attempts: 0, on: []}\n"),
        ),
    ])
    .unwrap();
    assert_eq!(
        m.traffic[0].routes[0].retries.as_ref().unwrap().attempts,
        10
    );
    assert!(m.traffic[0].routes[1]
        .retries
        .as_ref()
        .unwrap()
        .on
        .is_empty());
}

#[test]
fn too_many_routes() {
    let mut a = rule("");
    for _ in 0..6000 {
        a.push_str("      - split: [{weight: 1}]\n");
    }
    let b = a
        .replace("name: r", "name: q")
        .replace("service: reviews", "service: ratings");
    let start = std::time::Instant::now();
    assert_eq!(
        err(&[("s.yaml", SERVICES), ("a.yaml", &a), ("b.yaml", &b)]),
        "b.yaml:4: traffic[0].routes: more than 10000 routes in the config directory"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// policies:
// ---------------------------------------------------------------------------

fn pol(rules: &str) -> String {
    format!("policies:\n  - name: p\n    service: reviews\n    action: allow\n    rules:\n{rules}")
}

#[test]
fn policies_are_checked() {
    assert_eq!(
        err_with_services("policies:\n  - {name: p, service: details, action: allow}\n"),
        "t.yaml:2: policies[0].service: unknown service details.default"
    );
    assert_eq!(
        err_with_services("policies:\n  - {name: '', service: reviews, action: deny}\n"),
        "t.yaml:2: policies[0].name: must not be empty"
    );
    assert_eq!(
        err(&[
            ("s.yaml", SERVICES),
            (
                "t.yaml",
                "policies:\n  - {name: p, service: reviews, action: deny}\n"
            ),
            (
                "u.yaml",
                "\npolicies:\n  - {name: p, service: ratings, action: allow}\n"
            ),
        ]),
        "u.yaml:3: policies[0].name: policy \"p\" is already declared in t.yaml:2"
    );
    assert_eq!(
        err_with_services(&pol("      - sources: {identities: [frontend]}\n")),
        "t.yaml:6: policies[0].rules[0].sources.identities[0]: \"frontend\" is not a spiffe:// ID (spiffe://TRUST_DOMAIN/ns/NS/sa/NAME or spiffe://TRUST_DOMAIN/ns/NS/*)"
    );
    assert_eq!(
        err_with_services(&pol("      - sources:\n          identities: ['spiffe://']\n")),
        "t.yaml:7: policies[0].rules[0].sources.identities[0]: \"spiffe://\" is not a spiffe:// ID (spiffe://TRUST_DOMAIN/ns/NS/sa/NAME or spiffe://TRUST_DOMAIN/ns/NS/*)"
    );
    // Wildcards: only a whole namespace, as the proxies accept them.
    assert!(err_with_services(&pol(
        "      - sources:\n          identities: ['spiffe://td/ns/*/sa/x']\n"
    ))
    .contains("sources.identities[0]: \"spiffe://td/ns/*/sa/x\": an exact SPIFFE ID"));
    assert!(load_with_services(&pol(
        "      - sources:\n          identities: ['spiffe://td/ns/shop/*']\n"
    ))
    .is_ok());
    // A path requests could never be matched as.
    assert_eq!(
        err_with_services(&pol("      - paths:\n          - prefix: /a/../admin\n")),
        "t.yaml:7: policies[0].rules[0].paths[0].prefix: \"/a/../admin\" is not in normal form (requests are matched as \"/admin\")"
    );
    assert_eq!(
        err_with_services(&pol("      - sources: {namespaces: [Default]}\n")),
        "t.yaml:6: policies[0].rules[0].sources.namespaces[0]: \"Default\" is not a DNS label (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
    );
    assert_eq!(
        err_with_services(&pol("      - methods: [GET, 'G(T']\n")),
        "t.yaml:6: policies[0].rules[0].methods[1]: \"G(T\" is not an HTTP method"
    );
    assert_eq!(
        err_with_services(&pol(
            "      - paths: [{prefix: /a}, {prefix: /b, exact: /b}]\n"
        )),
        "t.yaml:6: policies[0].rules[0].paths[1]: set exactly one of prefix, exact"
    );
    assert_eq!(
        err_with_services(&pol("      - paths:\n          - exact: health\n")),
        "t.yaml:7: policies[0].rules[0].paths[0].exact: \"health\" is not a path (starts with /, no spaces or control characters)"
    );
    assert_eq!(
        err_with_services(&pol("      - ports: [9080, 8080]\n")),
        "t.yaml:6: policies[0].rules[0].ports[1]: service reviews.default has no port 8080"
    );
    assert_eq!(
        err_with_services(&pol("      - ports: [70000]\n")),
        "t.yaml:6: policies[0].rules[0].ports[0]: port 70000 is out of range 1..=65535"
    );
    assert_eq!(
        err_with_services(&pol("      - sources: {principals: [a]}\n")),
        "t.yaml:6: policies[0].rules[0].sources: unknown field `principals`, expected `identities` or `namespaces`"
    );
    // A TCP port may be named in a policy.
    load(&[
        ("s.yaml", SERVICES),
        ("t.yaml", &pol("      - ports: [9090]\n")),
    ])
    .unwrap();
}

// ---------------------------------------------------------------------------
// The directory
// ---------------------------------------------------------------------------

#[test]
fn load_dir_reads_yaml_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("b.yml"),
        "traffic:\n  - {name: second, service: ratings}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("a.yaml"),
        "traffic:\n  - {name: first, service: reviews}\n",
    )
    .unwrap();
    std::fs::write(d.join("0-services.yaml"), SERVICES).unwrap();
    // Skipped: dotfiles, editor backups, other extensions, subdirectories.
    std::fs::write(d.join(".hidden.yaml"), "bad: [").unwrap();
    std::fs::write(d.join("a.yaml~"), "bad: [").unwrap();
    std::fs::write(d.join("notes.txt"), "bad: [").unwrap();
    std::fs::create_dir(d.join("sub.yaml")).unwrap();
    std::fs::write(d.join("sub.yaml/x.yaml"), "bad: [").unwrap();
    let m = load_dir(d).unwrap();
    let names: Vec<&str> = m.traffic.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(m.services.len(), 3);
    // The version depends on what was read, not where the directory is.
    let copy = tempfile::tempdir().unwrap();
    for f in ["b.yml", "a.yaml", "0-services.yaml"] {
        std::fs::copy(d.join(f), copy.path().join(f)).unwrap();
    }
    assert_eq!(load_dir(copy.path()).unwrap().version, m.version);
}

#[test]
fn load_dir_errors_name_the_full_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.yaml"), SERVICES).unwrap();
    std::fs::write(
        d.join("t.yaml"),
        "traffic:\n  - name: r\n    service: reviews\n    routes:\n      - split:\n          - {subset: v1, weight: 2000000}\n",
    )
    .unwrap();
    let e = load_dir(d).unwrap_err();
    assert_eq!(
        e,
        MeshError {
            file: d.join("t.yaml"),
            line: Some(6),
            field: "traffic[0].routes[0].split[0].weight".into(),
            message: "weight 2000000 is more than 1000000".into(),
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{}: traffic[0].routes[0].split[0].weight: weight 2000000 is more than 1000000",
            d.join("t.yaml:6").display()
        )
    );
}

#[test]
fn load_dir_empty_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    let m = load_dir(dir.path()).unwrap();
    assert!(m.services.is_empty());
    std::fs::write(dir.path().join("empty.yaml"), "").unwrap();
    assert!(load_dir(dir.path()).unwrap().services.is_empty());

    let missing = dir.path().join("nope");
    let e = load_dir(&missing).unwrap_err();
    assert_eq!(e.file, missing);
    assert_eq!(e.line, None);
    assert!(
        e.to_string().starts_with(&format!(
            "{}: cannot read the config directory: ",
            missing.display()
        )),
        "{e}"
    );
}

#[test]
fn load_dir_limits_file_size_and_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let mut text = String::from("# padding\n");
    while text.len() as u64 <= load::MAX_FILE_BYTES {
        text.push_str(&"#".repeat(1023));
        text.push('\n');
    }
    std::fs::write(&big, &text).unwrap();
    assert_eq!(
        load_dir(dir.path()).unwrap_err().to_string(),
        format!(
            "{}: file is larger than the limit of 4194304 bytes",
            big.display()
        )
    );
    std::fs::remove_file(&big).unwrap();

    let bin = dir.path().join("bin.yaml");
    std::fs::write(&bin, b"services: []\n\xff\xfe").unwrap();
    assert_eq!(
        load_dir(dir.path()).unwrap_err().to_string(),
        format!("{}: not UTF-8 (byte 13)", bin.display())
    );
}

#[test]
fn hostile_yaml_is_refused_quickly() {
    let start = std::time::Instant::now();
    // Exponential aliases ("billion laughs").
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..20 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert!(err1(&text).starts_with("m.yaml"));
    // An alias bomb that fits the schema: one long list of routes, named by
    // every further rule.
    let mut t = String::from(
        "services:\n  - {name: s, ports: [{name: p, port: 1, protocol: http}]}\ntraffic:\n  - name: a\n    service: s\n    routes: &rs\n",
    );
    for _ in 0..5000 {
        t.push_str("      - split: [{weight: 1}]\n");
    }
    for i in 0..1000 {
        t.push_str(&format!("  - {{name: b{i}, service: s, routes: *rs}}\n"));
    }
    assert_eq!(
        err1(&t),
        "m.yaml:5139: more than 4000000 YAML values in the config directory (aliases expanded)"
    );
    // Deep nesting: refused before serde_yaml, whose parser takes the
    // square of the depth (100,000 levels took a minute).
    let deep = format!("services: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(err1(&deep), "m.yaml:1: nested more than 64 levels deep");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_shipped_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mesh");
    let m = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<String> = m.services.iter().map(|s| s.key.to_string()).collect();
    assert!(keys.contains(&"frontend.default".to_owned()), "{keys:?}");
    assert!(keys.contains(&"reviews.default".to_owned()), "{keys:?}");
    assert!(keys.contains(&"ratings.default".to_owned()), "{keys:?}");
    assert!(
        m.services.iter().any(|s| !s.static_endpoints.is_empty()),
        "an external service with static endpoints"
    );
    let canary = m
        .traffic
        .iter()
        .find(|t| t.service == key("reviews", "default"))
        .expect("a traffic rule for reviews");
    assert!(canary
        .routes
        .iter()
        .any(|r| r.split.len() == 2 && r.split.iter().all(|d| d.subset.is_some())));
    assert!(!m.policies.is_empty());
}
