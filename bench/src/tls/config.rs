//! The config text of a `tls` run: ports, the ringmesh YAML of the mesh pair
//! (A: plain listener → cluster `b`; B: inbound listener → the upstream), of
//! the edge proxy, the nginx under test (edge `listen ssl` and an mTLS server
//! with `ssl_verify_client on`) and the upstream nginx. Pure functions.

use super::certs::{spiffe_id, Certs};
use crate::proxies::nginx_affinity;
use std::path::Path;

/// The ports of one run: `base` .. `base + 16`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ports {
    pub base: u16,
}

impl Ports {
    pub fn up(self) -> u16 {
        self.base
    }
    pub fn a_plain(self) -> u16 {
        self.base + 1
    }
    pub fn b_plain(self) -> u16 {
        self.base + 2
    }
    pub fn a_mtls(self) -> u16 {
        self.base + 3
    }
    pub fn b_mtls(self) -> u16 {
        self.base + 4
    }
    pub fn edge(self) -> u16 {
        self.base + 5
    }
    pub fn nginx_edge(self) -> u16 {
        self.base + 6
    }
    pub fn nginx_mtls(self) -> u16 {
        self.base + 7
    }
    /// Admin port of ringmesh process `i` (0..5).
    pub fn admin(self, i: u16) -> u16 {
        self.base + 10 + i
    }
}

fn identity(c: &Certs, pair: &super::certs::Pair) -> String {
    format!(
        "identity:
  certificate: {{ file: {} }}
  private_key: {{ file: {} }}
  trust_bundle: {{ file: {} }}
",
        pair.cert.display(),
        pair.key.display(),
        c.root.display()
    )
}

fn routes_to(cluster: &str) -> String {
    format!(
        "    virtual_hosts:
      - name: v
        domains: [\"*\"]
        routes:
          - match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: {cluster} }}
"
    )
}

/// Proxy A: a plaintext HTTP listener whose cluster is proxy B (with mTLS and
/// B's identity required when `mtls`).
pub fn mesh_a_yaml(c: &Certs, mtls: bool, port: u16, b_port: u16, admin: u16) -> String {
    let mut y = format!("admin: {{ address: 127.0.0.1:{admin} }}\n");
    if mtls {
        y.push_str(&identity(c, &c.a));
    }
    y.push_str(&format!(
        "listeners:\n  - name: outbound\n    address: 127.0.0.1:{port}\n{}clusters:\n  - name: b\n    endpoints: [\"127.0.0.1:{b_port}\"]\n",
        routes_to("b")
    ));
    if mtls {
        y.push_str(&format!(
            "    mtls: {{ identity: \"{}\", sni: b }}\n",
            spiffe_id("b")
        ));
    }
    y
}

/// Proxy B: the inbound listener (mTLS strict when `mtls`) → the upstream.
pub fn mesh_b_yaml(c: &Certs, mtls: bool, port: u16, up: u16, admin: u16) -> String {
    let mut y = format!("admin: {{ address: 127.0.0.1:{admin} }}\n");
    if mtls {
        y.push_str(&identity(c, &c.b));
    }
    y.push_str(&format!(
        "listeners:\n  - name: inbound\n    address: 127.0.0.1:{port}\n"
    ));
    if mtls {
        y.push_str("    mtls: { mode: strict }\n");
    }
    y.push_str(&routes_to("app"));
    y.push_str(&format!(
        "clusters:\n  - {{ name: app, endpoints: [\"127.0.0.1:{up}\"] }}\n"
    ));
    y
}

/// The edge proxy: TLS with the edge certificate (default, any SNI), ALPN
/// http/1.1 → the upstream.
pub fn edge_yaml(c: &Certs, port: u16, up: u16, admin: u16) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: edge
    address: 127.0.0.1:{port}
    tls:
      certificates:
        - certificate: {{ file: {} }}
          private_key: {{ file: {} }}
      alpn: [http/1.1]
{}clusters:
  - {{ name: up, endpoints: [\"127.0.0.1:{up}\"] }}
",
        c.edge.cert.display(),
        c.edge.key.display(),
        routes_to("up")
    )
}

/// The upstream: nginx, 1 worker on CPU 1, `return 200 "hello world\n"` on
/// `/` and static files from `dir/www` (`/b16k`, written by the caller).
pub fn upstream_conf(dir: &Path, up: u16) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1; worker_cpu_affinity 10; daemon off; pid {d}/up.pid; error_log {d}/up.err;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s; sendfile on;
  server {{ listen 127.0.0.1:{up} reuseport backlog=4096; root {d}/www;
    location = / {{ return 200 \"hello world\\n\"; }}
    location / {{ }} }} }}
"
    )
}

/// nginx under test, 1 worker on CPU 0, TLS 1.3 only, upstream keep-alive:
/// the edge server (same certificate and key as ringmesh's edge listener,
/// nginx's default session settings) and the mTLS server (B's SVID,
/// `ssl_verify_client on` against the mesh root, no session tickets or cache
/// — like ringmesh's inbound listener).
pub fn nginx_conf(dir: &Path, c: &Certs, p: Ports) -> String {
    let d = dir.display();
    let loc = "location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }";
    format!(
        "worker_processes 1; worker_cpu_affinity {}; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s; ssl_protocols TLSv1.3;
  upstream up {{ server 127.0.0.1:{}; keepalive 64; }}
  server {{ listen 127.0.0.1:{} ssl backlog=4096; ssl_certificate {}; ssl_certificate_key {};
    {loc} }}
  server {{ listen 127.0.0.1:{} ssl backlog=4096; ssl_certificate {}; ssl_certificate_key {};
    ssl_client_certificate {}; ssl_verify_client on; ssl_session_tickets off; ssl_session_cache off;
    {loc} }} }}
",
        nginx_affinity(1),
        p.up(),
        p.nginx_edge(),
        c.edge.cert.display(),
        c.edge.key.display(),
        p.nginx_mtls(),
        c.b.cert.display(),
        c.b.key.display(),
        c.root.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::generate;

    #[test]
    fn ports() {
        let p = Ports { base: 20100 };
        assert_eq!(
            [
                p.up(),
                p.a_plain(),
                p.b_plain(),
                p.a_mtls(),
                p.b_mtls(),
                p.edge(),
                p.nginx_edge(),
                p.nginx_mtls(),
                p.admin(0),
                p.admin(4)
            ],
            [20100, 20101, 20102, 20103, 20104, 20105, 20106, 20107, 20110, 20114]
        );
    }

    /// The text, and the engine's own loader accepts every YAML (with the
    /// certificate files present, since compiling reads them).
    #[test]
    fn configs_load() {
        let dir = std::env::temp_dir().join(format!("rm-bench-tlscfg-{}", std::process::id()));
        let c = generate(&dir).unwrap();
        let a = mesh_a_yaml(&c, true, 1, 2, 3);
        assert!(a.contains("identity:\n  certificate: { file: "));
        assert!(a.contains(
            "    endpoints: [\"127.0.0.1:2\"]\n    mtls: { identity: \"spiffe://cluster.local/ns/default/sa/b\", sni: b }\n"
        ));
        assert!(!mesh_a_yaml(&c, false, 1, 2, 3).contains("mtls"));
        let b = mesh_b_yaml(&c, true, 2, 9, 4);
        assert!(b.contains("    address: 127.0.0.1:2\n    mtls: { mode: strict }\n"));
        assert!(!mesh_b_yaml(&c, false, 2, 9, 4).contains("identity"));
        let e = edge_yaml(&c, 5, 9, 6);
        assert!(e.contains("      alpn: [http/1.1]\n"));
        for (name, y) in [
            ("a", a),
            ("a plain", mesh_a_yaml(&c, false, 1, 2, 3)),
            ("b", b),
            ("b plain", mesh_b_yaml(&c, false, 2, 9, 4)),
            ("edge", e),
        ] {
            ringmesh_engine::config::load_str(Path::new("bench.yaml"), &y)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{y}"));
        }
        let n = nginx_conf(&dir, &c, Ports { base: 20100 });
        assert!(n.starts_with("worker_processes 1; worker_cpu_affinity 01;"));
        assert!(n.contains("listen 127.0.0.1:20106 ssl backlog=4096;"));
        assert!(n.contains("ssl_verify_client on;"));
        assert!(n.contains("ssl_protocols TLSv1.3;"));
        assert!(upstream_conf(&dir, 20100).contains("listen 127.0.0.1:20100 reuseport"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
