//! Command line and startup: --validate, config errors, port in use, --cpu-list,
//! --io-driver, and the shipped quickstart example.

mod common;
use common::*;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

fn write_file(name: &str, text: &str) -> (PathBuf, PathBuf) {
    let dir = scratch_dir("startup");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn validate_reports_file_line_and_field() {
    let port = free_port();
    let text = format!(
        r#"admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: users
            match:
              path:
                prefix: /users
            route:
              cluster: userz
clusters:
  - name: users
    endpoints: ["127.0.0.1:9"]
"#,
        admin = free_port()
    );
    let line = text
        .lines()
        .position(|l| l.contains("cluster: userz"))
        .unwrap()
        + 1;
    let (dir, path) = write_file("bad-route.yaml", &text);
    let out = run_proxy(
        &["--config", path.to_str().unwrap(), "--validate"],
        Duration::from_secs(10),
    );
    let status = out.status.expect("--validate must not hang");
    assert!(
        !status.success(),
        "--validate accepted a route to an unknown cluster"
    );
    let all = format!("{}{}", out.stderr, out.stdout);
    assert!(
        all.contains(&format!("bad-route.yaml:{line}")),
        "error must name file and line {line}: {all}"
    );
    assert!(
        all.contains("listeners[0].virtual_hosts[0].routes[0].route.cluster"),
        "error must name the field path: {all}"
    );
    assert!(
        all.contains("userz"),
        "error must name the bad value: {all}"
    );
    assert!(
        connect_refused(local(port)),
        "--validate must not start listeners"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn validate_rejects_unknown_fields_and_accepts_good_config() {
    let text = format!(
        r#"admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: users
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: users }}
clusters:
  - name: users
    endpoints: ["127.0.0.1:9"]
    connect_timout: 1s
"#,
        admin = free_port(),
        port = free_port()
    );
    let line = text
        .lines()
        .position(|l| l.contains("connect_timout"))
        .unwrap()
        + 1;
    let (dir, path) = write_file("typo.yaml", &text);
    let out = run_proxy(
        &["--config", path.to_str().unwrap(), "--validate"],
        Duration::from_secs(10),
    );
    assert_eq!(
        out.status.map(|s| s.success()),
        Some(false),
        "a typo'd field must be an error"
    );
    let all = format!("{}{}", out.stderr, out.stdout);
    assert!(
        all.contains("connect_timout"),
        "error must name the unknown field: {all}"
    );
    assert!(
        all.contains(&format!("typo.yaml:{line}")),
        "error must name file and line {line}: {all}"
    );

    let good = text.replace("connect_timout", "connect_timeout");
    std::fs::write(&path, good).unwrap();
    let out = run_proxy(
        &["--config", path.to_str().unwrap(), "--validate"],
        Duration::from_secs(10),
    );
    assert_eq!(
        out.status.map(|s| s.success()),
        Some(true),
        "valid config rejected: {}{}",
        out.stderr,
        out.stdout
    );

    let missing = dir.join("does-not-exist.yaml");
    let out = run_proxy(
        &["--config", missing.to_str().unwrap(), "--validate"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.map(|s| s.success()), Some(false));
    assert!(
        format!("{}{}", out.stderr, out.stdout).contains("does-not-exist.yaml"),
        "missing file named: {}",
        out.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_config_at_startup_exits_nonzero() {
    let proxy = Proxy::spawn(
        r#"listeners:
  - name: web
    address: 127.0.0.1:1
    protocol: htp
clusters: []
"#,
        &[],
    );
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("proxy with a bad config must exit");
    assert!(!status.success());
    assert!(
        proxy.log().contains("protocol"),
        "error names the field: {}",
        proxy.log()
    );
}

#[test]
fn port_in_use_is_a_clear_error() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let proxy = Proxy::spawn(
        &format!(
            r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: hello
            match: {{ path: {{ prefix: / }} }}
            direct_response: {{ status: 200, body: "x" }}
clusters: []
"#
        ),
        &[],
    );
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "proxy kept running although its port is taken; log:\n{}",
        proxy.log()
    );
    assert!(!status.unwrap().success());
    let log = proxy.log().to_lowercase();
    assert!(
        log.contains("already in use"),
        "message should say the address is already in use: {}",
        proxy.log()
    );
    assert!(
        log.contains(&port.to_string()),
        "message should name the port {port}: {}",
        proxy.log()
    );
    drop(holder);
}

#[test]
fn bad_cpu_list_is_a_clear_error() {
    let port = free_port();
    let proxy = Proxy::spawn(
        &format!(
            r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: hello
            match: {{ path: {{ prefix: / }} }}
            direct_response: {{ status: 200, body: "x" }}
clusters: []
"#
        ),
        &["--cpu-list", "0,bad"],
    );
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "proxy kept running with --cpu-list 0,bad; log:\n{}",
        proxy.log()
    );
    assert!(!status.unwrap().success());
    let log = proxy.log();
    assert!(
        log.contains("bad"),
        "error should quote the bad entry: {log}"
    );
    assert!(
        log.to_lowercase().contains("cpu"),
        "error should mention the cpu list: {log}"
    );
    assert!(
        !log.contains("panicked"),
        "a usage error must not be a panic: {log}"
    );
}

#[test]
fn io_driver_epoll_serves() {
    let up = Upstream::start("up");
    let port = free_port();
    let proxy = Proxy::start_with(
        &catch_all(port, "up", &[up.addr]),
        &["--workers", "1", "--io-driver", "epoll"],
    );
    let web = local(port);
    let mut c = Conn::connect(web);
    for i in 0..20 {
        let r = c.request(&Req::get(&format!("/e/{i}"))).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["path"], format!("/e/{i}"));
    }
    let r = get(web, "localhost", &format!("/bytes/{}", 3 * 1024 * 1024));
    assert_eq!(r.body.len(), 3 * 1024 * 1024);
    let text = proxy.metrics();
    assert_metric_line(
        &text,
        "ringmesh_worker_io_driver{worker=\"0\",driver=\"epoll\"} 1",
    );
}

#[test]
fn io_driver_auto_reports_its_choice() {
    let port = free_port();
    let proxy = Proxy::start_with(
        &format!(
            r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: hello
            match: {{ path: {{ prefix: / }} }}
            direct_response: {{ status: 200, body: "x" }}
clusters: []
"#
        ),
        &["--workers", "2", "--io-driver", "auto"],
    );
    assert_eq!(get(local(port), "localhost", "/").text(), "x");
    let text = proxy.metrics();
    for w in 0..2 {
        let ok = ["io_uring", "epoll"].iter().any(|d| {
            text.lines().any(|l| {
                l == format!("ringmesh_worker_io_driver{{worker=\"{w}\",driver=\"{d}\"}} 1")
            })
        });
        assert!(
            ok,
            "worker {w} io driver not reported:\n{}",
            related_lines(&text, "ringmesh_worker_io_driver")
        );
    }
}

#[test]
fn unknown_io_driver_is_rejected() {
    let (dir, path) = write_file("ok.yaml", "listeners: []\nclusters: []\n");
    let out = run_proxy(
        &["--config", path.to_str().unwrap(), "--io-driver", "kqueue"],
        Duration::from_secs(10),
    );
    assert_eq!(
        out.status.map(|s| s.success()),
        Some(false),
        "--io-driver kqueue accepted"
    );
    assert!(
        out.stderr.contains("kqueue"),
        "error names the bad value: {}",
        out.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn admin_health_endpoints() {
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: hello
            match: {{ path: {{ prefix: / }} }}
            direct_response: {{ status: 200, body: "x" }}
clusters: []
"#
    ));
    assert_eq!(proxy.admin_get("/ready").unwrap().status, 200);
    assert_eq!(proxy.admin_get("/healthz").unwrap().status, 200);
    let dump = proxy.config_dump();
    assert!(
        dump["epoch"].as_u64().is_some(),
        "config_dump epoch: {dump}"
    );
    assert!(
        dump.to_string().contains(&format!("127.0.0.1:{port}")),
        "config_dump has the compiled config: {dump}"
    );
    assert_eq!(proxy.admin_get("/no-such-admin-page").unwrap().status, 404);
}

#[test]
fn quickstart_example_works() {
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/quickstart.yaml"),
        PathBuf::from("/work/main/deploy/examples/quickstart.yaml"),
    ];
    let Some(path) = candidates.iter().find(|p| p.exists()) else {
        panic!("quickstart.yaml not found in {candidates:?}");
    };
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains("127.0.0.1:15000") && text.contains("127.0.0.1:8080"),
        "quickstart layout changed"
    );
    // Same file, private ports (tests run in parallel).
    let (admin, web) = (free_port(), free_port());
    let text = text
        .replace("127.0.0.1:15000", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{web}"));
    let proxy = Proxy::spawn_full(&text, local(admin), &[]);
    proxy.wait_ready(Duration::from_secs(10));
    let r = get(local(web), "localhost", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello from ringmesh\n");
    let r = get(local(web), "localhost", "/admin/ready");
    assert_eq!(r.status, 200, "proxied to the admin listener: {}", r.text());
}

/// `--cpu-list` pins worker i to the i-th CPU listed: the kernel's view of
/// each worker thread's affinity says so.
#[test]
fn cpu_list_pins_each_worker() {
    let cpus = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_string())
        })
        .unwrap();
    // Use the last allowed CPU for worker 0 and the first for worker 1 (on a
    // one-CPU machine both are the same), so the order of the list matters.
    let first: usize = cpus.split([',', '-']).next().unwrap().parse().unwrap();
    let last: usize = cpus.rsplit([',', '-']).next().unwrap().parse().unwrap();
    let port = free_port();
    let list = format!("{last},{first}");
    let proxy = Proxy::start_with(
        &format!(
            r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{}}
            direct_response: {{ status: 200 }}
"#
        ),
        &["--workers", "2", "--cpu-list", &list],
    );
    let mut seen = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", proxy.pid())).unwrap() {
        // A short-lived thread may be gone between the listing and the read.
        let Ok(task) = task.map(|t| t.path()) else {
            continue;
        };
        let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if let Some(w) = name.trim().strip_prefix("ringmesh-w") {
            let allowed = std::fs::read_to_string(task.join("status"))
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Cpus_allowed_list:")
                        .map(|v| v.trim().to_string())
                })
                .unwrap();
            seen.push((w.to_string(), allowed));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("0".to_string(), last.to_string()),
            ("1".to_string(), first.to_string())
        ]
    );
}

/// A client that connects to the admin port and sends nothing must not make
/// a readiness probe wait (kubelet's default probe timeout is 1 s).
#[test]
fn silent_admin_client_does_not_block_ready() {
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{}}
            direct_response: {{ status: 200 }}
"#
    ));
    let _silent = std::net::TcpStream::connect(proxy.admin).unwrap();
    let t = std::time::Instant::now();
    let mut c = Conn::connect(proxy.admin);
    let r = c.request(&Req::get("/ready")).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
}
