//! The generated mesh of the control-plane bench (pure functions, unit-tested):
//! the YAML the control plane reads, who calls whom, and the Node each
//! simulated proxy announces.
//!
//! Shape: `S` services `svc-0..svc-(S-1)`, one HTTP port 8080 each. Every
//! service calls the shared `svc-0` (an auth-like dependency that every
//! request touches) and its next 4 neighbours on the ring, `svc-(i+1..=i+4)`
//! (fewer when `S` is small); `svc-0` calls only its neighbours. So each proxy
//! carries 5 outbound services, and `svc-0` is called by every proxy of the
//! other services: a change to `svc-0`'s traffic rule reaches `(S-1)/S` of the
//! proxies, the widest fan-out a single change has in this mesh. `svc-0` and
//! every 10th service declare `v1`/`v2` subsets (label `version`); the one
//! traffic rule splits `svc-0`'s calls between `v1` and `v2`.
//!
//! Proxy `i` is service `svc-(i % S)`, node id `sim-i`, address
//! `127.1.H.L` where `H.L` is `i + 1` in base 256 (one IP per instance, as
//! pods have), inbound port 15006, outbound 15001, label `version: v1` for
//! even `i / S` and `v2` for odd.

use ringmesh_proto::v1::{NamedPort, Node};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The HTTP port every generated service declares.
pub const SERVICE_PORT: u16 = 8080;
/// The service the traffic rule, the join and the leave are about.
pub const TARGET: usize = 0;
/// Neighbours on the ring each service calls besides `svc-0`.
pub const NEIGHBOURS: usize = 4;
pub const INBOUND_PORT: u32 = 15006;
pub const OUTBOUND_PORT: u32 = 15001;
/// Proxies are numbered into 127.1.0.0/16 (the first address is for index 0).
pub const MAX_PROXIES: usize = 65_534;

pub fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

/// The cluster (and endpoint resource) name of service `i`'s port.
pub fn cluster_name(i: usize) -> String {
    format!("svc-{i}.default:{SERVICE_PORT}")
}

/// Whether service `i` declares the `v1`/`v2` subsets.
#[allow(clippy::manual_is_multiple_of)] // is_multiple_of is Rust 1.87; the workspace says 1.85
pub fn has_subsets(i: usize) -> bool {
    i % 10 == 0
}

/// The services service `i` calls (indices, sorted, never itself).
pub fn calls(i: usize, services: usize) -> Vec<usize> {
    let mut set = BTreeSet::new();
    if i != TARGET {
        set.insert(TARGET);
    }
    for d in 1..=NEIGHBOURS {
        set.insert((i + d) % services);
    }
    set.remove(&i);
    set.into_iter().collect()
}

/// The proxies (of `proxies`, over `services` services) whose service calls
/// service `target`: the nodes a change of `target`'s routes or endpoints
/// must reach.
pub fn callers_of(target: usize, proxies: usize, services: usize) -> Vec<usize> {
    let calling: Vec<bool> = (0..services)
        .map(|s| calls(s, services).contains(&target))
        .collect();
    (0..proxies).filter(|&p| calling[p % services]).collect()
}

/// `services.yaml`: every service with its port, subsets and calls.
pub fn services_yaml(services: usize) -> String {
    let mut s = String::from("services:\n");
    for i in 0..services {
        let _ = writeln!(s, "  - name: {}", service_name(i));
        let _ = writeln!(
            s,
            "    ports:\n      - {{name: http, port: {SERVICE_PORT}, protocol: http}}"
        );
        if has_subsets(i) {
            s.push_str(
                "    subsets:\n      - {name: v1, labels: {version: v1}}\n      - {name: v2, labels: {version: v2}}\n",
            );
        }
        let called: Vec<String> = calls(i, services).into_iter().map(service_name).collect();
        let _ = writeln!(s, "    calls: [{}]", called.join(", "));
    }
    s
}

/// The split of change `k` (0 = the initial file): `(v1, v2)` weights summing
/// to 100, each different from the one before.
pub fn split(k: usize) -> (u32, u32) {
    let v1 = 90 - (k % 80) as u32;
    (v1, 100 - v1)
}

/// `traffic.yaml`: one rule splitting every call to `svc-0` between its subsets.
pub fn traffic_yaml(k: usize) -> String {
    let (v1, v2) = split(k);
    format!(
        "traffic:\n  - name: svc-{TARGET}-canary\n    service: svc-{TARGET}\n    routes:\n      - name: split\n        match: {{path: {{prefix: /}}}}\n        split:\n          - {{subset: v1, weight: {v1}}}\n          - {{subset: v2, weight: {v2}}}\n"
    )
}

/// The IP proxy `i` announces.
pub fn node_ip(i: usize) -> Ipv4Addr {
    let n = i + 1;
    Ipv4Addr::new(127, 1, (n >> 8) as u8, (n & 255) as u8)
}

/// The endpoint address other proxies see for proxy `i`.
pub fn endpoint_address(i: usize) -> String {
    format!("{}:{INBOUND_PORT}", node_ip(i))
}

/// The Node proxy `i` announces on its stream's first request.
#[allow(clippy::manual_is_multiple_of)] // as above
pub fn node(i: usize, services: usize) -> Node {
    let version = if (i / services) % 2 == 0 { "v1" } else { "v2" };
    node_of_service(i, i % services, version)
}

/// A Node for proxy number `i` of service `svc`, labelled `version`.
pub fn node_of_service(i: usize, svc: usize, version: &str) -> Node {
    Node {
        id: format!("sim-{i}"),
        service: service_name(svc),
        namespace: "default".into(),
        address: node_ip(i).to_string(),
        ports: vec![
            NamedPort {
                name: "inbound".into(),
                port: INBOUND_PORT,
                protocol: 0,
            },
            NamedPort {
                name: "outbound".into(),
                port: OUTBOUND_PORT,
                protocol: 0,
            },
        ],
        zone: String::new(),
        labels: [("version".to_string(), version.to_string())].into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_graph() {
        assert_eq!(calls(0, 50), vec![1, 2, 3, 4]);
        assert_eq!(calls(7, 50), vec![0, 8, 9, 10, 11]);
        assert_eq!(calls(48, 50), vec![0, 1, 2, 49]);
        // Small meshes: neighbours wrap, never the service itself.
        assert_eq!(calls(1, 3), vec![0, 2]);
        assert_eq!(calls(0, 3), vec![1, 2]);
        assert_eq!(calls(0, 1), Vec::<usize>::new());
        // Every service but svc-0 calls svc-0.
        assert_eq!(callers_of(TARGET, 1000, 50).len(), 980);
        assert_eq!(callers_of(TARGET, 5, 3), vec![1, 2, 4]);
        // svc-5 is called by svc-1..=svc-4 (svc-0 calls 1..=4 only).
        let c = callers_of(5, 100, 50);
        assert_eq!(c, vec![1, 2, 3, 4, 51, 52, 53, 54]);
    }

    #[test]
    fn yaml() {
        let s = services_yaml(12);
        assert!(s.starts_with("services:\n  - name: svc-0\n    ports:\n      - {name: http, port: 8080, protocol: http}\n    subsets:\n      - {name: v1, labels: {version: v1}}\n      - {name: v2, labels: {version: v2}}\n    calls: [svc-1, svc-2, svc-3, svc-4]\n  - name: svc-1\n    ports:"), "{s}");
        assert!(s.contains("  - name: svc-11\n    ports:\n      - {name: http, port: 8080, protocol: http}\n    calls: [svc-0, svc-1, svc-2, svc-3]\n"), "{s}");
        assert_eq!(s.matches("subsets:").count(), 2);
        let t = traffic_yaml(0);
        assert!(t.contains("service: svc-0\n"));
        assert!(t.ends_with("- {subset: v1, weight: 90}\n          - {subset: v2, weight: 10}\n"));
    }

    #[test]
    fn splits_change_every_time() {
        assert_eq!(split(0), (90, 10));
        assert_eq!(split(1), (89, 11));
        for k in 1..500 {
            assert_ne!(split(k), split(k - 1));
            assert_eq!(split(k).0 + split(k).1, 100);
            assert!(split(k).0 >= 11);
        }
    }

    #[test]
    fn nodes() {
        let n = node(57, 50);
        assert_eq!(n.id, "sim-57");
        assert_eq!(n.service, "svc-7");
        assert_eq!(n.address, "127.1.0.58");
        assert_eq!(n.labels["version"], "v2");
        assert_eq!(node(3, 50).labels["version"], "v1");
        assert_eq!(n.ports[0].name, "inbound");
        assert_eq!(n.ports[1].port, 15001);
        assert_eq!(endpoint_address(255), "127.1.1.0:15006");
        assert_eq!(node_ip(MAX_PROXIES), Ipv4Addr::new(127, 1, 255, 255));
        // Distinct addresses for every proxy.
        let ips: BTreeSet<_> = (0..=MAX_PROXIES).map(node_ip).collect();
        assert_eq!(ips.len(), MAX_PROXIES + 1);
    }
}
