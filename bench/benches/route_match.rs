//! Route matching cost per request: a small table (the common sidecar case) and
//! a large one (an ingress with hundreds of routes), hitting early, late and
//! regex routes.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use ringmesh_engine::config::{load_str, ListenerKind};
use ringmesh_engine::router::HeaderLookup;

struct Headers(&'static [(&'static str, &'static str)]);

impl HeaderLookup for Headers {
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

fn config(routes: usize) -> ringmesh_engine::config::Config {
    let mut y = String::from(
        "listeners:\n  - name: web\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: api\n        domains: [\"api.example.com\", \"*.svc.cluster.local\"]\n        routes:\n",
    );
    for i in 0..routes {
        y.push_str(&format!(
            "          - match: {{ path: {{ prefix: /svc{i}/ }} }}\n            route: {{ cluster: c }}\n"
        ));
    }
    y.push_str(
        "          - match: { path: { regex: \"/users/[0-9]+/orders\" }, methods: [GET] }\n            route: { cluster: c }\n          - match: { path: { prefix: / }, headers: [{ name: x-canary, exact: \"1\" }] }\n            route: { weighted_clusters: [{ cluster: c, weight: 90 }, { cluster: c, weight: 10 }] }\n          - match: { path: { prefix: / } }\n            route: { cluster: c }\n      - name: other\n        domains: [\"*\"]\n        routes:\n          - match: {}\n            direct_response: { status: 404 }\nclusters:\n  - { name: c, endpoints: [\"127.0.0.1:2\"] }\n",
    );
    load_str(Path::new("bench.yaml"), &y).expect("bench config compiles")
}

fn bench(c: &mut Criterion) {
    let hdrs = Headers(&[
        ("user-agent", "curl/8"),
        ("accept", "*/*"),
        ("x-canary", "1"),
    ]);
    for n in [8usize, 500] {
        let cfg = config(n);
        let ListenerKind::Http(table) = &cfg.listeners[0].kind else {
            unreachable!("listener 0 is http")
        };
        let mut g = c.benchmark_group(format!("route_match/{n}_routes"));
        g.bench_function("first_prefix", |b| {
            b.iter(|| {
                table.select(
                    black_box(b"api.example.com"),
                    b"GET",
                    black_box(b"/svc0/x"),
                    &hdrs,
                )
            })
        });
        g.bench_function("last_prefix", |b| {
            let path = format!("/svc{}/x", n - 1);
            b.iter(|| {
                table.select(
                    black_box(b"api.example.com:8080"),
                    b"GET",
                    black_box(path.as_bytes()),
                    &hdrs,
                )
            })
        });
        g.bench_function("regex", |b| {
            b.iter(|| {
                table.select(
                    black_box(b"api.example.com"),
                    b"GET",
                    black_box(b"/users/42/orders"),
                    &hdrs,
                )
            })
        });
        g.bench_function("header_split", |b| {
            b.iter(|| {
                table.select(
                    black_box(b"api.example.com"),
                    b"GET",
                    black_box(b"/other"),
                    &hdrs,
                )
            })
        });
        g.bench_function("wildcard_host", |b| {
            b.iter(|| {
                table.select(
                    black_box(b"orders.svc.cluster.local"),
                    b"GET",
                    black_box(b"/svc0/x"),
                    &hdrs,
                )
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
