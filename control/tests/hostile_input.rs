//! Hostile and runaway config directories: malformed and oversized YAML,
//! alias bombs, deep nesting, huge weights, huge, deep and numerous regexes,
//! 10,000 routes. Each is refused with the file, line and field named, in
//! bounded time (`load_dir` directly, each timed); and the running control
//! plane, shown each one in turn, keeps serving the last good mesh while a
//! proxy in front of an application keeps answering.

mod mesh_support;
use mesh_support::*;

use std::time::{Duration, Instant};

use ringmesh_control::mesh::{load_dir, Mesh, MeshError};

const SERVICES: &str = r#"services:
  - name: front
    ports: [{ name: http, port: 8080, protocol: http }]
    calls: [reviews]
  - name: reviews
    ports: [{ name: http, port: 9080, protocol: http }]
  - name: ratings
    ports: [{ name: http, port: 9080, protocol: http }]
"#;

/// A debug build on a loaded 2-core machine: the slowest case measured takes
/// about a tenth of this.
const BOUND: Duration = Duration::from_secs(10);

/// `services.yaml` plus `files`, loaded once and timed.
fn load(files: &[(&str, &[u8])]) -> (Result<Mesh, MeshError>, Duration) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let t = Instant::now();
    let r = load_dir(dir.path());
    (r, t.elapsed())
}

/// The error for `files`, as "file:line: field: message" with the
/// directory left out; asserts it came within [`BOUND`].
fn refused(what: &str, files: &[(&str, &[u8])]) -> String {
    let (r, took) = load(files);
    let e = match r {
        Ok(_) => panic!("{what}: loaded"),
        Err(e) => e,
    };
    println!("{what}: refused in {took:?}");
    assert!(took < BOUND, "{what}: took {took:?}");
    let name = e.file.file_name().unwrap().to_string_lossy().into_owned();
    let shown = e.to_string();
    let at = shown.find(&name).unwrap_or(0);
    shown[at..].to_string()
}

/// A traffic rule for `reviews` with the given route lines (indented 6).
fn rule(routes: &str) -> String {
    format!("traffic:\n  - name: r\n    service: reviews\n    routes:\n{routes}")
}

fn regex_routes(n: usize, regex: impl Fn(usize) -> String) -> String {
    let mut routes = String::new();
    for i in 0..n {
        routes.push_str(&format!(
            "      - split: [{{weight: 1}}]\n        match: {{path: {{regex: '{}'}}}}\n",
            regex(i)
        ));
    }
    rule(&routes)
}

/// A file of `n` bytes of YAML comments.
fn padding(n: usize) -> Vec<u8> {
    let line = format!("#{}\n", "x".repeat(1022));
    let mut v = line.repeat(n / 1024 + 1).into_bytes();
    v.truncate(n);
    v
}

#[test]
fn malformed_and_oversized_files_are_refused() {
    assert_eq!(
        refused(
            "a tab for indentation",
            &[("t.yaml", b"traffic:\n\t- name: r\n")]
        ),
        "t.yaml:2: found character that cannot start any token"
    );
    assert_eq!(
        refused(
            "an unclosed list",
            &[("t.yaml", b"traffic:\n  - name: r\n    service: [reviews\n")]
        ),
        "t.yaml:3: traffic[0].service: invalid type: sequence, expected a string"
    );
    assert_eq!(
        refused("not UTF-8", &[("t.yaml", b"services: []\n\xc3\x28")]),
        "t.yaml: not UTF-8 (byte 13)"
    );
    assert_eq!(
        refused("binary", &[("t.yaml", &[0u8, 1, 2, 3, 0xff][..])]),
        "t.yaml: not UTF-8 (byte 4)"
    );
    assert_eq!(
        refused(
            "a file over 4 MiB",
            &[("big.yaml", &padding((4 << 20) + 1))]
        ),
        "big.yaml: file is larger than the limit of 4194304 bytes"
    );
    // Under the per-file limit each, over the directory's 32 MiB together.
    let part = padding(4 << 20);
    let parts: Vec<(String, &[u8])> = (0..9).map(|i| (format!("p{i}.yaml"), &part[..])).collect();
    let files: Vec<(&str, &[u8])> = parts.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    assert_eq!(
        refused("9 files of 4 MiB", &files),
        "p8.yaml: the config directory holds more than 33554432 bytes"
    );
    let names: Vec<String> = (0..=1000).map(|i| format!("f{i:04}.yaml")).collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .map(|n| (n.as_str(), &b"# empty\n"[..]))
        .collect();
    assert_eq!(
        refused("1,001 files", &files),
        "f1000.yaml: more than 1000 files in the config directory"
    );
}

#[test]
fn alias_bombs_deep_nesting_and_huge_values_are_refused_quickly() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..20 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert_eq!(
        refused("an alias bomb", &[("t.yaml", bomb.as_bytes())]),
        "t.yaml:7: more than 4000000 YAML values in the config directory (aliases expanded)"
    );
    // The YAML parser under serde takes the square of the depth: 100,000
    // levels took over a minute before they were refused up front.
    let deep = format!("services: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        refused("100,000 nested lists", &[("t.yaml", deep.as_bytes())]),
        "t.yaml:1: nested more than 64 levels deep"
    );
    let deep = format!(
        "services: {}1{}\n",
        "{a: ".repeat(100_000),
        "}".repeat(100_000)
    );
    assert_eq!(
        refused("100,000 nested maps", &[("t.yaml", deep.as_bytes())]),
        "t.yaml:1: nested more than 64 levels deep"
    );
    let mut deep = String::from("services:\n");
    for d in 0..200 {
        deep.push_str(&format!("{}- \n", " ".repeat(2 + d)));
    }
    assert_eq!(
        refused("200 nested block lists", &[("t.yaml", deep.as_bytes())]),
        "t.yaml:65: nested more than 64 levels deep"
    );
    // A 3 MiB name: refused, and the error quoting it is cut short.
    let huge = format!(
        "traffic:\n  - name: {}\n    service: reviews\n",
        "a".repeat(3 << 20)
    );
    let e = refused("a 3 MiB name", &[("t.yaml", huge.as_bytes())]);
    assert!(
        e.starts_with("t.yaml:2: traffic[0].name: \"aaaa"),
        "{}",
        &e[..100]
    );
    assert!(e.len() < 1200 && e.ends_with("..."), "{} bytes", e.len());
}

#[test]
fn hostile_weights_are_refused_by_field() {
    for (split, message) in [
        (
            "[{weight: 4294967296}]",
            "split[0].weight: weight 4294967296 is more than 1000000",
        ),
        (
            "[{weight: 99999999999999999999999}]",
            "split[0].weight: invalid type: integer `99999999999999999999999` as u128, expected u64",
        ),
        (
            "[{weight: 1000001}]",
            "split[0].weight: weight 1000001 is more than 1000000",
        ),
        (
            "[{weight: -1}]",
            "split[0].weight: invalid type: integer `-1`, expected u64",
        ),
        (
            "[{weight: 600000}, {weight: 600000, service: ratings}]",
            "split: the weights sum to 1200000, more than 1000000",
        ),
        (
            "[{weight: 0}]",
            "split: the weights sum to 0; at least one must be more than 0",
        ),
    ] {
        let text = rule(&format!("      - split: {split}\n"));
        let e = refused(split, &[("t.yaml", text.as_bytes())]);
        assert!(
            e.starts_with("t.yaml:5: traffic[0].routes[0].") && e.ends_with(message),
            "{split}: {e}"
        );
    }
}

#[test]
fn hostile_regexes_are_refused_quickly() {
    assert_eq!(
        refused(
            "a regex over the size limit",
            &[("t.yaml", regex_routes(1, |_| "(\\w{100}){100}".into()).as_bytes())]
        ),
        "t.yaml:6: traffic[0].routes[0].match.path.regex: bad regex: Compiled regex exceeds size limit of 1048576 bytes."
    );
    assert_eq!(
        refused(
            "a regex nested 5,000 deep",
            &[(
                "t.yaml",
                regex_routes(1, |_| format!("{}/a{}", "(".repeat(5000), ")".repeat(5000)))
                    .as_bytes()
            )]
        ),
        "t.yaml:6: traffic[0].routes[0].match.path.regex: bad regex: regex parse error: exceed the maximum number of nested parentheses/brackets (250)"
    );
    let e = refused(
        "a regex escaping its anchors",
        &[("t.yaml", regex_routes(1, |_| "/a)|(/b".into()).as_bytes())],
    );
    assert!(
        e.starts_with(
            "t.yaml:6: traffic[0].routes[0].match.path.regex: bad regex: regex parse error:"
        ),
        "{e}"
    );
    // 10,000 routes, each regex near the size limit: without a budget for
    // all of them, minutes of compiling (and gigabytes in each proxy).
    let e = refused(
        "10,000 near-limit regexes",
        &[(
            "t.yaml",
            regex_routes(10_000, |i| format!("/{i}/[a-z0-9]{{9000}}")).as_bytes(),
        )],
    );
    assert!(
        e.ends_with(
            ".match.path.regex: bad regex: the regexes of this config together exceed the limit of 67108864 bytes compiled"
        ),
        "{e}"
    );
}

#[test]
fn ten_thousand_routes_load_and_one_more_is_refused() {
    let mut routes = String::new();
    for i in 0..10_000 {
        routes.push_str(&format!(
            "      - split: [{{weight: 1}}]\n        match: {{path: {{prefix: /p{i}}}}}\n"
        ));
    }
    let text = rule(&routes);
    let (r, took) = load(&[("t.yaml", text.as_bytes())]);
    println!("10,000 routes: loaded in {took:?}");
    let mesh = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mesh.traffic[0].routes.len(), 10_000);
    assert!(took < BOUND, "{took:?}");

    routes.push_str("      - split: [{weight: 1}]\n");
    let text = rule(&routes);
    assert_eq!(
        refused("10,001 routes", &[("t.yaml", text.as_bytes())]),
        "t.yaml:4: traffic[0].routes: more than 10000 routes in the config directory"
    );
}

// ----- the running control plane ----------------------------------------------

/// Writes `text` as `file`, waits for the control plane to refuse it; returns
/// how long that took and the error shown in /status.
fn shown_refused(cp: &ControlPlane, file: &str, text: &[u8]) -> (Duration, serde_json::Value) {
    let path = cp.config_dir.join(file);
    let tmp = cp.config_dir.join(format!(".{file}.tmp"));
    let t = Instant::now();
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let mut err = serde_json::Value::Null;
    assert!(
        wait_until(2 * BOUND, || {
            err = cp.status()["config_error"].clone();
            err["file"].as_str().is_some_and(|f| f.ends_with(file))
        }),
        "{file}: no error shown; log:\n{}",
        cp.proc.log()
    );
    (t.elapsed(), err)
}

/// Removes `file` and waits until the directory is valid again.
fn remove(cp: &ControlPlane, file: &str) {
    std::fs::remove_file(cp.config_dir.join(file)).unwrap();
    assert!(
        wait_until(BOUND, || cp.status()["config_error"].is_null()),
        "{file}: error not cleared"
    );
}

#[test]
fn the_control_plane_keeps_serving_the_last_good_mesh_through_hostile_changes() {
    let dir = scratch("hostile");
    let cp = ControlPlane::start(&dir, "10s");
    cp.write("services.yaml", SERVICES);
    let apps = [App::start("front"), App::start("r1")];
    let proxies: Vec<MeshProxy> = [("front-1", "front"), ("reviews-1", "reviews")]
        .iter()
        .zip(&apps)
        .map(|((id, svc), app)| {
            MeshProxy::start(
                &dir,
                &cp,
                NodeSpec {
                    id,
                    service: svc,
                    app_port: app.port,
                    labels: &[],
                },
            )
        })
        .collect();
    for p in &proxies {
        p.wait_ready();
    }
    let load = Load::start(proxies[0].outbound, "reviews");
    load.wait_more(20);
    let version = cp.status()["mesh_version"].clone();

    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..20 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "malformed",
            "bad.yaml",
            b"traffic:\n\t- name: r\n".to_vec(),
            "",
        ),
        ("over 4 MiB", "big.yaml", padding((4 << 20) + 1), ""),
        ("alias bomb", "bomb.yaml", bomb.into_bytes(), ""),
        (
            "deep nesting",
            "deep.yaml",
            format!("services: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            "",
        ),
        (
            "huge weight",
            "w.yaml",
            rule("      - split: [{weight: 4294967296}]\n").into_bytes(),
            "traffic[0].routes[0].split[0].weight",
        ),
        (
            "near-limit regexes past the budget",
            "re.yaml",
            regex_routes(200, |i| format!("/{i}/[a-z0-9]{{9000}}")).into_bytes(),
            "",
        ),
    ];
    let n = cases.len();
    for (what, file, text, field) in cases {
        let (took, err) = shown_refused(&cp, file, &text);
        println!("{what}: refused and shown in {took:?}: {}", err["message"]);
        if !field.is_empty() {
            assert_eq!(err["field"], field, "{what}: {err}");
        }
        assert!(err["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty() && m.len() < 1100));
        let s = cp.status();
        assert_eq!(
            s["mesh_version"], version,
            "{what}: the last good mesh stays"
        );
        load.wait_more(10);
        remove(&cp, file);
    }
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    assert_eq!(tally.seen.keys().collect::<Vec<_>>(), ["r1"]);
    let m = cp.metrics();
    assert!(
        m.contains(&format!(
            "ringmesh_control_config_reloads_total{{result=\"rejected\"}} {n}\n"
        )),
        "{m}"
    );
    drop(proxies);
}
