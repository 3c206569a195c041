//! Authorization policies from a static config: method and path rules on an
//! HTTP listener (identities need mTLS; see control/tests/mesh_mtls.rs for
//! the whole mesh), port rules on a TCP listener, the 403 a user sees, the
//! closed connection, and the counters.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn http_policies_deny_first_then_require_an_allow_and_count_per_policy() {
    let up = Upstream::start("app");
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    authorization:
      - name: reads
        action: allow
        rules:
          - methods: [GET, HEAD]
      - name: uploads
        action: allow
        rules:
          - methods: [POST]
            paths: [{{ prefix: /upload/ }}]
      - name: no-admin
        action: deny
        rules:
          - paths: [{{ prefix: /admin }}, {{ exact: /metrics }}]
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: app }}
clusters:
{}"#,
        cluster_yaml("app", &[up.addr])
    ));
    let addr = local(port);
    let mut c = Conn::connect(addr);
    let ok = c.request(&Req::get("/products")).unwrap();
    assert_eq!((ok.status, ok.upstream()), (200, Some("app")));
    let ok = c.request(&Req::new("POST", "/upload/a").body("x")).unwrap();
    assert_eq!(ok.status, 200);

    // No ALLOW matches a DELETE: 403, keep-alive, nothing reaches the app.
    let before = up.request_count();
    let r = c.request(&Req::new("DELETE", "/products/1")).unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text(),
        "RBAC: access denied: no ALLOW policy matched (reads, uploads)\n"
    );
    assert_eq!(r.header("ringmesh-error"), Some("rbac_access_denied"));
    // DENY wins over the GET that `reads` allows, however the path is spelt.
    for path in [
        "/admin",
        "/admin/users",
        "//admin",
        "/./x/../admin",
        "/%61dmin",
        "/metrics?x=1",
    ] {
        let r = c.request(&Req::get(path)).unwrap();
        assert_eq!(
            (r.status, r.text()),
            (
                403,
                "RBAC: access denied by policy \"no-admin\"\n".to_string()
            ),
            "{path}"
        );
    }
    // The connection is still usable and the app saw none of the denials.
    assert_eq!(c.request(&Req::get("/ok")).unwrap().status, 200);
    assert_eq!(up.request_count(), before + 1);

    let m = proxy.metrics();
    assert_metric_line(
        &m,
        "ringmesh_authz_allowed_total{listener=\"web\",policy=\"reads\"} 2",
    );
    assert_metric_line(
        &m,
        "ringmesh_authz_allowed_total{listener=\"web\",policy=\"uploads\"} 1",
    );
    assert_metric_line(
        &m,
        "ringmesh_authz_denied_total{listener=\"web\",policy=\"no-admin\"} 6",
    );
    assert_metric_line(
        &m,
        "ringmesh_authz_denied_total{listener=\"web\",policy=\"\"} 1",
    );
}

#[test]
fn a_tcp_listener_denied_by_port_closes_without_reaching_the_upstream() {
    let up = Upstream::raw("echo", |mut s, _| {
        let mut b = [0u8; 4];
        if s.read_exact(&mut b).is_ok() {
            let _ = s.write_all(&b);
        }
    });
    let (open, closed) = (free_port(), free_port());
    let proxy = Proxy::start(&format!(
        r#"listeners:
  - name: open
    address: 127.0.0.1:{open}
    protocol: tcp
    cluster: echo
  - name: closed
    address: 127.0.0.1:{closed}
    protocol: tcp
    cluster: echo
    authorization:
      - name: only-open-port
        action: allow
        rules:
          - ports: [{open}]
      - name: no-http-deny
        action: deny
        rules:
          - methods: [POST]
            ports: [{closed}]
clusters:
{}"#,
        cluster_yaml("echo", &[up.addr])
    ));
    let echo = |port: u16| -> Option<[u8; 4]> {
        let mut s = TcpStream::connect(local(port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"ping").ok()?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).ok()?;
        Some(b)
    };
    assert_eq!(echo(open), Some(*b"ping"));
    let accepted = up.accepted();
    // A DENY rule's HTTP-only fields cannot be known for TCP: it denies.
    assert_eq!(echo(closed), None);
    assert_eq!(
        up.accepted(),
        accepted,
        "a denied connection reached the upstream"
    );
    assert_metric_line(
        &proxy.metrics(),
        "ringmesh_authz_denied_total{listener=\"closed\",policy=\"no-http-deny\"} 1",
    );
}

#[test]
fn a_bad_policy_is_refused_with_its_field() {
    let ran = run_proxy(
        &["--validate", "--config", &{
            let dir = scratch_dir("authz-bad");
            let p = dir.join("c.yaml");
            std::fs::write(
                &p,
                r#"listeners:
  - name: web
    address: 127.0.0.1:1
    authorization:
      - name: p
        action: allow
        rules:
          - identities: [frontend]
    virtual_hosts: []
"#,
            )
            .unwrap();
            p.display().to_string()
        }],
        Duration::from_secs(10),
    );
    assert_eq!(ran.status.and_then(|s| s.code()), Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("listeners[0].authorization[0].rules[0].identities[0]")
            && ran.stderr.contains("is not a spiffe:// ID"),
        "{}",
        ran.stderr
    );
}
