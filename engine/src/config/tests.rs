use std::path::Path;

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    load_str(Path::new("proxy.yaml"), text)
}

const GOOD: &str = r#"
listeners:
  - name: web
    address: 127.0.0.1:18080
    virtual_hosts:
      - name: v
        domains: ["*"]
        routes:
          - name: r
            match: { path: { prefix: / } }
            route: { cluster: up }
clusters:
  - name: up
    endpoints: ["127.0.0.1:9"]
"#;

#[test]
fn quickstart_compiles() {
    let text = include_str!("../../../deploy/examples/quickstart.yaml");
    let c = load(text).unwrap();
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.clusters[0].name.as_ref(), "admin");
}

#[test]
fn every_shipped_example_compiles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            load_str(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2, "examples found: {n}");
}

#[test]
fn good_config_compiles_with_defaults() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.limits.max_headers, 100);
    assert_eq!(c.limits.max_request_head_bytes, 61440);
    assert_eq!(
        c.limits.request_head_timeout,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(
        c.clusters[0].connect_timeout,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(c.clusters[0].max_idle_per_endpoint, 1024);
    assert_eq!(c.version.len(), 16);
}

#[test]
fn unknown_cluster_names_file_line_and_field() {
    let bad = GOOD.replace("route: { cluster: up }", "route: { cluster: upp }");
    let e = load(&bad).unwrap_err().to_string();
    assert_eq!(
        e,
        "proxy.yaml:11: listeners[0].virtual_hosts[0].routes[0].route.cluster: unknown cluster \"upp\""
    );
}

#[test]
fn unknown_field_is_an_error_with_line() {
    let bad = GOOD.replace(
        "    address: 127.0.0.1:18080",
        "    address: 127.0.0.1:18080\n    adress: x",
    );
    let e = load(&bad).unwrap_err();
    assert_eq!(e.line, Some(5));
    assert!(e.to_string().contains("unknown field `adress`"), "{e}");
    assert!(e.field.starts_with("listeners[0]"), "{e}");
}

#[test]
fn bad_duration_and_limits_are_rejected() {
    let e = load(&format!("limits:\n  request_head_timeout: 10\n{GOOD}")).unwrap_err();
    assert!(e.to_string().contains("limits.request_head_timeout"), "{e}");
    let e = load(&format!("limits:\n  max_headers: 0\n{GOOD}")).unwrap_err();
    assert_eq!(e.field, "limits.max_headers");
    assert_eq!(e.line, Some(2));
}

#[test]
fn route_rules_are_checked() {
    let two = GOOD.replace(
        "route: { cluster: up }",
        "route: { cluster: up, weighted_clusters: [{cluster: up, weight: 1}] }",
    );
    assert!(load(&two)
        .unwrap_err()
        .to_string()
        .contains("exactly one of cluster, weighted_clusters"));
    let zero = GOOD.replace(
        "route: { cluster: up }",
        "route: { weighted_clusters: [{cluster: up, weight: 0}] }",
    );
    assert!(load(&zero)
        .unwrap_err()
        .to_string()
        .contains("weights add up to 0"));
    let huge = GOOD.replace(
        "route: { cluster: up }",
        "route: { weighted_clusters: [{cluster: up, weight: 4000000000}] }",
    );
    assert!(load(&huge)
        .unwrap_err()
        .to_string()
        .contains("at most 1000000"));
    let re = GOOD.replace("prefix: /", "regex: \"(\"");
    assert!(load(&re).unwrap_err().to_string().contains("bad regex"));
    let rw = GOOD
        .replace("prefix: /", "exact: /a")
        .replace("cluster: up }", "cluster: up, prefix_rewrite: /b }");
    assert!(load(&rw)
        .unwrap_err()
        .to_string()
        .contains("needs a match.path.prefix"));
}

#[test]
fn duplicates_are_rejected() {
    let dup = GOOD.replace(
        "clusters:\n",
        "clusters:\n  - name: up\n    endpoints: []\n",
    );
    let e = load(&dup).unwrap_err();
    assert_eq!(e.field, "clusters[1].name");
    assert!(e.to_string().contains("duplicate cluster name"));
}

#[test]
fn tcp_listener_needs_cluster() {
    let t = "listeners:\n  - name: t\n    address: 127.0.0.1:18081\n    protocol: tcp\n";
    let e = load(t).unwrap_err();
    assert_eq!(
        e.to_string(),
        "proxy.yaml:2: listeners[0].cluster: a tcp listener needs a cluster"
    );
}

#[test]
fn retry_policies_are_checked_with_their_field_named() {
    let with = |retries: &str| {
        GOOD.replace(
            "route: { cluster: up }",
            &format!("route: {{ cluster: up, retries: {retries} }}"),
        )
    };
    let ok = load(&with(
        "{ attempts: 2, on: [5xx, connect-failure], per_try_timeout: 250ms }",
    ))
    .unwrap();
    let ListenerKind::Http(t) = &ok.listeners[0].kind else {
        panic!()
    };
    let crate::router::Action::Forward(f) = &t.vhosts[0].routes[0].action else {
        panic!()
    };
    assert_eq!(f.retry.attempts, 2);
    assert!(f.retry.status_retriable(503) && !f.retry.status_retriable(404));
    assert_eq!(
        f.retry.per_try_timeout,
        Some(std::time::Duration::from_millis(250))
    );

    let e = load(&with("{ attempts: 1, on: [5xx, teapot] }")).unwrap_err();
    assert_eq!(e.line, Some(11));
    assert_eq!(
        e.field,
        "listeners[0].virtual_hosts[0].routes[0].route.retries.on[1]"
    );
    assert!(e.message.contains("unknown condition \"teapot\""), "{e}");
    let e = load(&with("{ attempts: 11, on: [reset] }")).unwrap_err();
    assert!(e.field.ends_with("retries.attempts"), "{e}");
    let e = load(&with("{ attempts: 1 }")).unwrap_err();
    assert!(e.message.contains("at least one condition"), "{e}");
}

#[test]
fn a_regex_cannot_escape_its_anchors() {
    let text = GOOD.replace(
        "match: { path: { prefix: / } }",
        "match: { path: { regex: \"/a)|(/b\" } }",
    );
    let e = load(&text).unwrap_err();
    assert_eq!(
        e.field,
        "listeners[0].virtual_hosts[0].routes[0].match.path.regex"
    );
    assert!(e.message.starts_with("bad regex"), "{e}");
}

#[test]
fn an_alias_bomb_is_refused_before_it_expands() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let t0 = std::time::Instant::now();
    let e = load(&text).unwrap_err();
    assert!(e.message.contains("YAML values (aliases expanded)"), "{e}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn abuse_limits_have_edge_defaults_and_are_checked() {
    let c = load(GOOD).unwrap();
    assert_eq!(
        c.limits.downstream_send_timeout,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(c.limits.max_connections_per_worker, None);
    let c = load(&format!(
        "limits:\n  downstream_send_timeout: 2s\n  max_connections_per_worker: 500\n{GOOD}"
    ))
    .unwrap();
    assert_eq!(
        c.limits.downstream_send_timeout,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(c.limits.max_connections_per_worker, Some(500));
    for (line, field, msg) in [
        (
            "max_connections_per_worker: 0",
            "limits.max_connections_per_worker",
            "must be between 1 and 10000000",
        ),
        (
            "max_connections_per_worker: 10000001",
            "limits.max_connections_per_worker",
            "must be between 1 and 10000000",
        ),
        (
            "downstream_send_timeout: 0s",
            "limits.downstream_send_timeout",
            "must be more than 0",
        ),
        (
            "request_head_timeout: 0ms",
            "limits.request_head_timeout",
            "must be more than 0",
        ),
    ] {
        let e = load(&format!("limits:\n  {line}\n{GOOD}")).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            (field, msg),
            "{line}"
        );
        assert_eq!(e.line, Some(2), "{line}");
    }
}

#[test]
fn the_derived_connection_limit_leaves_descriptors_to_spare() {
    use compile::auto_max_connections_per_worker as auto;
    // Two descriptors per connection, a quarter (at least 64) kept back.
    assert_eq!(auto(256, 1), 96);
    assert_eq!(auto(1024, 2), 192);
    assert_eq!(auto(20_000, 2), 3750);
    assert_eq!(auto(1 << 20, 8), 49_152);
    // Bounds: at least 16, at most 65536; never more than the descriptors.
    assert_eq!(auto(64, 4), 16);
    assert_eq!(auto(u64::MAX, 1), 65_536);
    for (nofile, workers) in [(256, 1), (4096, 3), (65_536, 16), (1 << 20, 64)] {
        let n = auto(nofile, workers) as u64;
        assert!(
            2 * n * workers as u64 <= nofile * 3 / 4,
            "{nofile} {workers}"
        );
    }
}

#[test]
fn route_methods_are_tokens() {
    // Found by the fuzz target control_yaml: the control plane accepted the
    // method "GET1" (a token) and every proxy refused the route table.
    let with = |m: &str| {
        GOOD.replace(
            "match: { path: { prefix: / } }",
            &format!("match: {{ methods: [{m:?}] }}"),
        )
    };
    for m in ["GET1", "M-SEARCH", "PROPFIND", "x.y_z~!"] {
        load(&with(m)).unwrap_or_else(|e| panic!("{m}: {e}"));
    }
    for m in ["", "GE T", "GET/1", "G\u{e9}T"] {
        let e = load(&with(m)).unwrap_err();
        assert_eq!(
            e.field, "listeners[0].virtual_hosts[0].routes[0].match.methods[0]",
            "{m}"
        );
    }
}

/// GOOD with `n` routes whose path regex is `regex`.
fn with_regex_routes(n: usize, regex: &str) -> String {
    let mut text = GOOD.replace(
        "          - name: r\n            match: { path: { prefix: / } }\n            route: { cluster: up }\n",
        "",
    );
    let at = text.find("clusters:").unwrap();
    let mut routes = String::new();
    for i in 0..n {
        routes.push_str(&format!(
            "          - name: r{i}\n            match: {{ path: {{ regex: \"{regex}\" }} }}\n            route: {{ cluster: up }}\n"
        ));
    }
    text.insert_str(at, &routes);
    text
}

#[test]
fn the_regexes_of_a_config_share_a_budget() {
    // Each near the per-regex limit: without a budget, 10,000 such routes
    // would take minutes to compile and gigabytes to hold.
    let t0 = std::time::Instant::now();
    let e = load(&with_regex_routes(10_000, "/[a-z0-9]{9000}")).unwrap_err();
    assert!(
        e.field.starts_with("listeners[0].virtual_hosts[0].routes[")
            && e.field.ends_with("].match.path.regex"),
        "{e}"
    );
    assert_eq!(
        e.message,
        "bad regex: the regexes of this config together exceed the limit of 67108864 bytes compiled"
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t0.elapsed()
    );
    // One over the per-regex limit names that limit.
    let e = load(&with_regex_routes(1, "(\\\\w{100}){100}")).unwrap_err();
    assert_eq!(
        e.message,
        "bad regex: Compiled regex exceeds size limit of 1048576 bytes."
    );
    // Ordinary regexes: a thousand routes of them compile.
    let c = load(&with_regex_routes(1000, "/api/v[0-9]+/users/[^/]+")).unwrap();
    assert!(matches!(
        c.listeners[0].kind,
        ListenerKind::Http(ref t) if t.vhosts[0].routes.len() == 1000
    ));
}

#[test]
fn routes_are_bounded_over_the_whole_config() {
    let mut file: model::File = serde_yaml::from_str(GOOD).unwrap();
    let one = file.listeners[0].virtual_hosts[0].routes[0].clone();
    file.listeners[0].virtual_hosts[0].routes = vec![one; compile::MAX_ROUTES as usize + 1];
    let (field, msg) = compile::compile(file, Path::new("proxy.yaml")).unwrap_err();
    assert_eq!(field, "listeners[0].virtual_hosts[0].routes[100000]");
    assert_eq!(msg, "more than 100000 routes in the config");
}

#[test]
fn an_oversized_config_file_is_refused_before_it_is_parsed() {
    let path = std::env::temp_dir().join(format!("ringmesh-big-{}.yaml", std::process::id()));
    let line = format!("#{}\n", "x".repeat(1022));
    let text = line.repeat((MAX_FILE_BYTES / 1024) as usize + 1);
    std::fs::write(&path, &text).unwrap();
    let t0 = std::time::Instant::now();
    let e = load_with(&path, &Overrides::default()).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(e.message, "file is larger than the limit of 16777216 bytes");
    assert_eq!(e.line, None);
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
}
