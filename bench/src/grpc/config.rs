//! The config text of a `grpc` run: ports, the ringmesh YAML (a gRPC listener
//! whose cluster speaks HTTP/2 to the tonic server, and a plain HTTP listener
//! in front of the upstream nginx), the nginx under test (`grpc_pass` on an
//! h2c listener; `proxy_pass` on an HTTP/1.1 and an h2c listener), HAProxy
//! (`proto h2` on both sides) and the upstream nginx. Pure functions.

use crate::proxies::nginx_affinity;
use std::path::Path;

/// The ports of one run: `base` .. `base + 10`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ports {
    pub base: u16,
}

impl Ports {
    /// The tonic Echo server (`ringmesh-testgrpc`).
    pub fn grpc_up(self) -> u16 {
        self.base
    }
    pub fn rm_grpc(self) -> u16 {
        self.base + 1
    }
    pub fn nginx_grpc(self) -> u16 {
        self.base + 2
    }
    pub fn haproxy_grpc(self) -> u16 {
        self.base + 3
    }
    /// The upstream nginx of the plain-HTTP rows (`return 200`, 12 bytes).
    pub fn http_up(self) -> u16 {
        self.base + 4
    }
    /// ringmesh's HTTP listener: HTTP/1.1 and h2c on the same port.
    pub fn rm_http(self) -> u16 {
        self.base + 5
    }
    pub fn nginx_h1(self) -> u16 {
        self.base + 6
    }
    /// nginx 1.22 serves only HTTP/2 on a plaintext `listen … http2` port.
    pub fn nginx_h2c(self) -> u16 {
        self.base + 7
    }
    /// The upstream nginx again, h2c (`listen … http2`).
    pub fn http_up_h2(self) -> u16 {
        self.base + 8
    }
    /// ringmesh's HTTP listener whose cluster speaks h2c to [`Self::http_up_h2`].
    pub fn rm_http_h2(self) -> u16 {
        self.base + 9
    }
    pub fn admin(self) -> u16 {
        self.base + 10
    }
    /// Every port the run may bind.
    pub fn all(self) -> Vec<u16> {
        vec![
            self.grpc_up(),
            self.rm_grpc(),
            self.nginx_grpc(),
            self.haproxy_grpc(),
            self.http_up(),
            self.rm_http(),
            self.nginx_h1(),
            self.nginx_h2c(),
            self.http_up_h2(),
            self.rm_http_h2(),
            self.admin(),
        ]
    }
}

/// ringmesh: listener `grpc` → cluster `grpc` (`protocol: http2`, h2c prior
/// knowledge to the tonic server); listener `web` → cluster `web` (HTTP/1.1
/// to the upstream nginx). Both listeners are plain `http` listeners, which
/// serve HTTP/1.1 and h2c alike.
pub fn ringmesh_yaml(p: Ports) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: grpc
    address: 127.0.0.1:{rm_grpc}
    virtual_hosts:
      - name: g
        domains: [\"*\"]
        routes:
          - match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: grpc }}
  - name: web
    address: 127.0.0.1:{rm_http}
    virtual_hosts:
      - name: w
        domains: [\"*\"]
        routes:
          - match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: web }}
  - name: web2
    address: 127.0.0.1:{rm_http_h2}
    virtual_hosts:
      - name: w2
        domains: [\"*\"]
        routes:
          - match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: web2 }}
clusters:
  - {{ name: grpc, protocol: http2, endpoints: [\"127.0.0.1:{grpc_up}\"] }}
  - {{ name: web, endpoints: [\"127.0.0.1:{http_up}\"] }}
  - {{ name: web2, protocol: http2, endpoints: [\"127.0.0.1:{http_up_h2}\"] }}
",
        admin = p.admin(),
        rm_grpc = p.rm_grpc(),
        rm_http = p.rm_http(),
        grpc_up = p.grpc_up(),
        http_up = p.http_up(),
        rm_http_h2 = p.rm_http_h2(),
        http_up_h2 = p.http_up_h2(),
    )
}

/// The most upstream connections nginx keeps idle per worker. nginx's
/// `grpc_pass` sends one request per upstream HTTP/2 connection at a time,
/// so this must cover every stream in flight or nginx would open and close
/// connections during the run.
pub const NGINX_KEEPALIVE: usize = 1024;

/// nginx under test: 1 worker on CPU 0; `grpc_pass` on an h2c listener
/// (`listen … http2`, the nginx 1.22 syntax; 1.25+ would say `http2 on`),
/// and `proxy_pass` (HTTP/1.1 upstream keep-alive) on an HTTP/1.1 and an h2c
/// listener. `keepalive_requests` also bounds requests per HTTP/2
/// connection since 1.19.7 (its default of 1000 would make nginx GOAWAY the
/// load generator's connections every 1000 requests).
pub fn nginx_conf(dir: &Path, p: Ports) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1; worker_cpu_affinity {aff}; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  upstream grpc_up {{ server 127.0.0.1:{grpc_up}; keepalive {NGINX_KEEPALIVE}; keepalive_requests 100000000; keepalive_timeout 300s; }}
  upstream web {{ server 127.0.0.1:{http_up}; keepalive {NGINX_KEEPALIVE}; keepalive_requests 100000000; keepalive_timeout 300s; }}
  server {{ listen 127.0.0.1:{ng_grpc} http2 backlog=4096; location / {{ grpc_pass grpc://grpc_up; }} }}
  server {{ listen 127.0.0.1:{ng_h1} backlog=4096; location / {{ proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}
  server {{ listen 127.0.0.1:{ng_h2c} http2 backlog=4096; location / {{ proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}
}}
",
        aff = nginx_affinity(1),
        grpc_up = p.grpc_up(),
        http_up = p.http_up(),
        ng_grpc = p.nginx_grpc(),
        ng_h1 = p.nginx_h1(),
        ng_h2c = p.nginx_h2c(),
    )
}

/// HAProxy under test: 1 thread on CPU 0, HTTP/2 on both sides (`proto h2`
/// on the bind and the server line), idle server connections reused by
/// every stream (`http-reuse always`).
pub fn haproxy_cfg(p: Ports) -> String {
    format!(
        "global
  nbthread 1
  cpu-map auto:1/1-1 0-0
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  http-reuse always
  timeout http-keep-alive 300s
frontend g
  bind 127.0.0.1:{} proto h2
  default_backend g
backend g
  server s1 127.0.0.1:{} proto h2
",
        p.haproxy_grpc(),
        p.grpc_up()
    )
}

/// The upstream nginx of the plain-HTTP rows: 1 worker on CPU 1, a 12-byte
/// body, over HTTP/1.1 and (another port) h2c.
pub fn upstream_conf(dir: &Path, p: Ports) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1; worker_cpu_affinity 10; daemon off; pid {d}/up.pid; error_log {d}/up.err;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  server {{ listen 127.0.0.1:{} reuseport backlog=4096; location / {{ return 200 \"hello world\\n\"; }} }}
  server {{ listen 127.0.0.1:{} http2 reuseport backlog=4096; location / {{ return 200 \"hello world\\n\"; }} }} }}
",
        p.http_up(),
        p.http_up_h2()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Ports = Ports { base: 20200 };

    #[test]
    fn ports() {
        assert_eq!(P.grpc_up(), 20200);
        assert_eq!(P.nginx_h2c(), 20207);
        assert_eq!(P.admin(), 20210);
        let mut all = P.all();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 11);
    }

    #[test]
    fn nginx() {
        let c = nginx_conf(Path::new("/t"), P);
        assert!(c.starts_with("worker_processes 1; worker_cpu_affinity 01;"));
        assert!(c.contains(
            "listen 127.0.0.1:20202 http2 backlog=4096; location / { grpc_pass grpc://grpc_up; }"
        ));
        assert!(c.contains("upstream grpc_up { server 127.0.0.1:20200; keepalive 1024;"));
        assert!(
            c.contains("listen 127.0.0.1:20206 backlog=4096; location / { proxy_pass http://web;")
        );
        assert!(c.contains(
            "listen 127.0.0.1:20207 http2 backlog=4096; location / { proxy_pass http://web;"
        ));
        assert!(c.contains("access_log off; keepalive_requests 100000000;"));
        let u = upstream_conf(Path::new("/t"), P);
        assert!(u.starts_with("worker_processes 1; worker_cpu_affinity 10;"));
        assert!(u.contains("listen 127.0.0.1:20204 reuseport"));
        assert!(u.contains("listen 127.0.0.1:20208 http2 reuseport"));
    }

    #[test]
    fn haproxy() {
        let c = haproxy_cfg(P);
        assert!(c.contains("  bind 127.0.0.1:20203 proto h2\n"));
        assert!(c.contains("  server s1 127.0.0.1:20200 proto h2\n"));
        assert!(c.contains("  nbthread 1\n  cpu-map auto:1/1-1 0-0\n"));
    }

    #[test]
    fn ringmesh() {
        let y = ringmesh_yaml(P);
        assert!(y.contains("{ name: grpc, protocol: http2, endpoints: [\"127.0.0.1:20200\"] }"));
        assert!(y.contains("address: 127.0.0.1:20201"));
        assert!(y.contains("address: 127.0.0.1:20205"));
        assert!(y.contains("{ name: web2, protocol: http2, endpoints: [\"127.0.0.1:20208\"] }"));
    }

    /// The engine's own loader accepts what we hand the proxy.
    #[test]
    fn ringmesh_yaml_loads() {
        ringmesh_engine::config::load_str(Path::new("grpc.yaml"), &ringmesh_yaml(P))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
