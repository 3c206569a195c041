//! The JSON access log: one line per request with the fields operators grep
//! for, written by a separate thread.

mod common;
use common::*;

use std::time::Duration;

#[test]
fn access_log_has_one_json_line_per_request() {
    let up = Upstream::start("up");
    let port = free_port();
    let dir = scratch_dir("accesslog");
    let log = dir.join("access.log");
    let proxy = Proxy::start(&format!(
        r#"access_log: {{ path: "{}" }}
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: api
            match: {{ path: {{ prefix: /api }} }}
            route: {{ cluster: up }}
clusters:
{}"#,
        log.display(),
        cluster_yaml("up", &[up.addr]),
    ));
    let web = local(port);
    let r = send(
        web,
        &Req::new("POST", "/api/items?x=1")
            .host("shop.example")
            .header("x-request-id", "trace-123")
            .body(b"0123456789".to_vec()),
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(web, "shop.example", "/nothing").status, 404);

    let mut lines = Vec::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            lines = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect();
            lines.len() >= 2
        }),
        "access log has {} lines; proxy log:\n{}",
        lines.len(),
        proxy.log()
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    let a: serde_json::Value = serde_json::from_str(&lines[0]).expect("line 1 is JSON");
    assert_eq!(a["method"], "POST");
    assert_eq!(a["authority"], "shop.example");
    assert_eq!(a["path"], "/api/items?x=1");
    assert_eq!(a["status"], 200);
    assert_eq!(a["route"], "api");
    assert_eq!(a["request_id"], "trace-123");
    assert_eq!(a["upstream"], up.addr.to_string());
    assert!(
        a["bytes_received"].as_u64().unwrap() > 10,
        "head and body: {a}"
    );
    assert!(a["bytes_sent"].as_u64().unwrap() > 0);
    assert!(a["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(a["time"].as_str().unwrap().ends_with('Z'), "{a}");
    assert!(a["downstream"].as_str().unwrap().starts_with("127.0.0.1:"));

    let b: serde_json::Value = serde_json::from_str(&lines[1]).expect("line 2 is JSON");
    assert_eq!(
        (b["status"].as_u64(), b["route"].as_str()),
        (Some(404), Some(""))
    );
    assert!(b["upstream"].is_null());
    assert_eq!(
        b["request_id"].as_str().map(str::len),
        Some(32),
        "generated id: {b}"
    );
}
