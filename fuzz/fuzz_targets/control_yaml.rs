//! The control plane's mesh YAML: `mesh::load_texts` (the directory loader
//! without the directory) on arbitrary text, cut into up to eight files at
//! NUL bytes; then, for a mesh it accepts, the snapshot each service's proxy
//! would get, pushed through the proxy's own apply and compile.
//!
//! Properties: never panics; a refusal names one of the files and a field
//! or a line inside it, with a message; an accepted mesh is consistent
//! (services sorted and unique, every reference resolved, splits weighted,
//! loading again gives the same mesh); and every snapshot the control plane
//! builds from it is accepted by the proxy (`State::apply` and
//! `translate::build`): what the control plane validated, the proxy
//! compiles.
#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringmesh_control::mesh::{load_texts, Mesh};
use ringmesh_control::node::{NodeInfo, ServiceName};
use ringmesh_control::snapshot;
use ringmesh_control::world::World;
use ringmesh_engine::config::model;
use ringmesh_engine::xds::{translate, Kind, State};
use ringmesh_fuzz::check_yaml_error;
use ringmesh_proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    let mut files = Vec::new();
    for (i, part) in data.split(|&b| b == 0).take(8).enumerate() {
        let Ok(text) = std::str::from_utf8(part) else {
            return;
        };
        files.push((PathBuf::from(format!("{i:02}.yaml")), text.to_owned()));
    }
    match load_texts(&files) {
        Err(e) => {
            let Some((_, text)) = files.iter().find(|(p, _)| *p == e.file) else {
                panic!("the error names no file given: {e}");
            };
            check_yaml_error(&e, text);
        }
        Ok(mesh) => {
            check_mesh(&mesh);
            assert!(
                matches!(load_texts(&files), Ok(again) if again == mesh),
                "loading is deterministic"
            );
            check_snapshots(mesh);
        }
    }
});

fn check_mesh(m: &Mesh) {
    for w in m.services.windows(2) {
        assert!(w[0].key < w[1].key, "services sorted and unique");
    }
    let known = |k| m.services.binary_search_by(|s| s.key.cmp(k)).is_ok();
    for s in &m.services {
        assert!(!s.ports.is_empty());
        for c in s.calls.iter().flatten() {
            assert!(known(c), "calls {c}");
        }
    }
    for t in &m.traffic {
        assert!(known(&t.service));
        for r in &t.routes {
            assert!(!r.split.is_empty());
            let total: u64 = r.split.iter().map(|d| u64::from(d.weight)).sum();
            assert!(total > 0 && total <= 1_000_000, "split weights {total}");
            for d in &r.split {
                assert!(known(&d.service), "destination {}", d.service);
            }
        }
    }
    for p in &m.policies {
        assert!(known(&p.service));
    }
}

/// Each of the first few services' proxies gets its snapshot; the proxy
/// applies every type and compiles the result.
fn check_snapshots(mesh: Mesh) {
    let mesh = Arc::new(mesh);
    let nodes: Vec<Arc<NodeInfo>> = mesh
        .services
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, s)| {
            Arc::new(NodeInfo {
                id: format!("node-{i}"),
                service: ServiceName {
                    name: s.key.name.clone(),
                    namespace: s.key.namespace.clone(),
                },
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)),
                inbound_port: 15006,
                outbound_port: 15001,
                app_port: None,
                zone: String::new(),
                labels: s
                    .subsets
                    .first()
                    .map(|ss| ss.labels.clone())
                    .unwrap_or_default(),
            })
        })
        .collect();
    let mut instances: BTreeMap<_, Vec<Arc<NodeInfo>>> = BTreeMap::new();
    for n in &nodes {
        instances
            .entry(n.service.key())
            .or_default()
            .push(n.clone());
    }
    let world = World::new(1, 1, mesh, instances, None);
    let bootstrap = model::File::default();
    for node in &nodes {
        let snap = snapshot::build(&world, node);
        assert!(snap.problem.is_none(), "{:?}", snap.problem);
        let mut state = State::default();
        for kind in [
            Kind::Cluster,
            Kind::Endpoints,
            Kind::Listener,
            Kind::RouteTable,
        ] {
            let t = kind.proto();
            let resp = pb::DiscoveryResponse {
                r#type: t as i32,
                version_info: snap.get(t).version.clone(),
                nonce: "1".into(),
                resources: snap
                    .get(t)
                    .resources
                    .iter()
                    .map(|h| h.resource.clone())
                    .collect(),
            };
            state = state.apply(kind, &resp).unwrap_or_else(|e| {
                panic!(
                    "the proxy refuses the {} the control plane sent: {e}",
                    kind.name()
                )
            });
        }
        if let Err(e) = translate::build(&bootstrap, Path::new("control"), &state) {
            panic!("the proxy cannot compile the snapshot for {}: {e}", node.id);
        }
    }
}
