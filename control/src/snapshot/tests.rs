use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ringmesh_proto::v1::{self, resource::Kind, ResourceType as T};

use super::*;
use crate::mesh::*;
use crate::node::{NodeInfo, ServiceName};
use crate::world::World;

fn key(name: &str) -> ServiceKey {
    ServiceKey {
        name: name.into(),
        namespace: "default".into(),
    }
}

fn port(name: &str, port: u16, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        protocol,
    }
}

fn service(name: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        key: key(name),
        ports,
        subsets: vec![],
        static_endpoints: vec![],
        calls: None,
        lb_policy: LbPolicy::RoundRobin,
        connect_timeout: None,
        mtls: MtlsMode::Permissive,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// a (HTTP 8080) calls b; b (HTTP 9080, subsets v1/v2); c (TCP 5432,
/// static); d (HTTP 7000, HTTP 7001, TCP 7002).
fn mesh() -> Mesh {
    let mut a = service("a", vec![port("http", 8080, Protocol::Http)]);
    a.calls = Some(vec![key("b")]);
    let mut b = service("b", vec![port("http", 9080, Protocol::Http)]);
    b.subsets = vec![
        Subset {
            name: "v1".into(),
            labels: labels(&[("version", "v1")]),
        },
        Subset {
            name: "v2".into(),
            labels: labels(&[("version", "v2")]),
        },
    ];
    b.lb_policy = LbPolicy::LeastRequest;
    b.connect_timeout = Some(Duration::from_millis(1500));
    let mut c = service("c", vec![port("pg", 5432, Protocol::Tcp)]);
    c.static_endpoints = vec![StaticEndpoint {
        address: "10.9.9.9:5432".parse().unwrap(),
        labels: BTreeMap::new(),
        zone: "z9".into(),
    }];
    let d = service(
        "d",
        vec![
            port("web", 7000, Protocol::Http),
            port("admin", 7001, Protocol::Http),
            port("raw", 7002, Protocol::Tcp),
        ],
    );
    Mesh {
        trust_domain: "cluster.local".into(),
        services: vec![a, b, c, d],
        traffic: vec![],
        policies: vec![],
        mtls: MtlsMode::Permissive,
        version: "m1".into(),
    }
}

fn node(id: &str, svc: &str, addr: &str, l: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        service: ServiceName {
            name: svc.into(),
            namespace: "default".into(),
        },
        address: addr.parse::<IpAddr>().unwrap(),
        inbound_port: 15006,
        outbound_port: 15001,
        app_port: None,
        zone: "z1".into(),
        labels: labels(l),
    }
}

fn world(mesh: &Mesh, nodes: &[&NodeInfo]) -> World {
    let mut instances: BTreeMap<ServiceKey, Vec<Arc<NodeInfo>>> = BTreeMap::new();
    for n in nodes {
        instances
            .entry(n.service_key())
            .or_default()
            .push(Arc::new((*n).clone()));
    }
    World::new(1, 1, Arc::new(mesh.clone()), instances, None)
}

fn cluster<'s>(s: &'s Snapshot, name: &str) -> &'s v1::Cluster {
    match &s.get(T::Cluster).get(name).unwrap().kind {
        Some(Kind::Cluster(c)) => c,
        other => panic!("{other:?}"),
    }
}

fn endpoints(s: &Snapshot, name: &str) -> Vec<(String, String)> {
    match &s.get(T::Endpoints).get(name).unwrap().kind {
        Some(Kind::Endpoints(e)) => {
            assert_eq!(e.cluster, name);
            e.endpoints
                .iter()
                .map(|e| (e.address.clone(), e.node_id.clone()))
                .collect()
        }
        other => panic!("{other:?}"),
    }
}

fn listener<'s>(s: &'s Snapshot, name: &str) -> &'s v1::Listener {
    match &s.get(T::Listener).get(name).unwrap().kind {
        Some(Kind::Listener(l)) => l,
        other => panic!("{other:?}"),
    }
}

fn routes<'s>(s: &'s Snapshot, name: &str) -> &'s v1::RouteTable {
    match &s.get(T::RouteTable).get(name).unwrap().kind {
        Some(Kind::RouteTable(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn forward(r: &v1::Route) -> Vec<(String, u32)> {
    match &r.action {
        Some(v1::route::Action::Forward(f)) => f
            .clusters
            .iter()
            .map(|c| (c.cluster.clone(), c.weight))
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn a_caller_gets_its_inbound_side_and_the_services_it_calls() {
    let m = mesh();
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let s = build(&world(&m, &[&a1]), &a1);
    assert_eq!(s.problem, None);
    assert_eq!(
        s.get(T::Cluster).names(),
        ["b.default:9080", "inbound:8080"]
    );
    assert_eq!(
        s.get(T::Endpoints).names(),
        ["b.default:9080", "inbound:8080"]
    );
    assert_eq!(s.get(T::Listener).names(), ["inbound:8080", "outbound"]);
    assert_eq!(s.get(T::RouteTable).names(), ["inbound:8080", "outbound"]);
    assert!(s.get(T::Secret).resources.is_empty());

    let b = cluster(&s, "b.default:9080");
    assert_eq!(
        b.expected_identity,
        "spiffe://cluster.local/ns/default/sa/b"
    );
    assert_eq!(b.lb_policy, v1::LbPolicy::LeastRequest as i32);
    assert_eq!(
        b.connect_timeout,
        Some(prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000
        })
    );
    let inbound = listener(&s, "inbound:8080");
    assert_eq!(inbound.address, "10.0.0.1:15006");
    assert_eq!(inbound.direction, v1::Direction::Inbound as i32);
    assert_eq!(inbound.route_table, "inbound:8080");
    assert_eq!(
        endpoints(&s, "inbound:8080"),
        pairs(&[("127.0.0.1:8080", "a-1")])
    );
    let rt = routes(&s, "inbound:8080");
    assert_eq!(rt.virtual_hosts[0].domains, ["*"]);
    assert_eq!(
        forward(&rt.virtual_hosts[0].routes[0]),
        [("inbound:8080".to_string(), 1)]
    );
    let out = listener(&s, "outbound");
    assert_eq!(
        (out.address.as_str(), out.route_table.as_str()),
        ("127.0.0.1:15001", "outbound")
    );
    assert_eq!(out.direction, v1::Direction::Outbound as i32);
}

#[test]
fn virtual_hosts_answer_every_spelling_of_the_service_name() {
    let m = mesh();
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let s = build(&world(&m, &[&a1]), &a1);
    let rt = routes(&s, "outbound");
    assert_eq!(rt.virtual_hosts.len(), 1);
    let vh = &rt.virtual_hosts[0];
    assert_eq!(vh.name, "b.default:9080");
    assert_eq!(
        vh.domains,
        [
            "b:9080",
            "b",
            "b.default:9080",
            "b.default",
            "b.default.svc:9080",
            "b.default.svc",
            "b.default.svc.cluster.local:9080",
            "b.default.svc.cluster.local"
        ]
    );
    assert_eq!(vh.routes.len(), 1);
    assert_eq!(vh.routes[0].name, "default");
    assert_eq!(forward(&vh.routes[0]), [("b.default:9080".to_string(), 1)]);
}

#[test]
fn every_registered_instance_of_a_called_service_is_an_endpoint() {
    let m = mesh();
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let b1 = node("b-1", "b", "10.0.0.2", &[]);
    let mut b2 = node("b-2", "b", "10.0.0.3", &[]);
    b2.inbound_port = 20000;
    let s = build(&world(&m, &[&a1, &b1, &b2]), &a1);
    assert_eq!(
        endpoints(&s, "b.default:9080"),
        pairs(&[("10.0.0.2:15006", "b-1"), ("10.0.0.3:20000", "b-2")])
    );
}

#[test]
fn subsets_select_instances_by_label_and_exist_only_when_a_rule_names_them() {
    let mut m = mesh();
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let b1 = node("b-1", "b", "10.0.0.2", &[("version", "v1")]);
    let b2 = node("b-2", "b", "10.0.0.3", &[("version", "v2"), ("x", "y")]);
    let s = build(&world(&m, &[&a1, &b1, &b2]), &a1);
    assert_eq!(
        s.get(T::Cluster).names(),
        ["b.default:9080", "inbound:8080"]
    );

    m.traffic.push(TrafficRule {
        name: "b-canary".into(),
        service: key("b"),
        port: None,
        routes: vec![HttpRoute {
            name: "canary".into(),
            matcher: RouteMatch {
                path: Some(PathMatch::Prefix("/api".into())),
                methods: vec!["GET".into()],
                headers: vec![HeaderMatch {
                    name: "x-user".into(),
                    kind: HeaderMatchKind::Exact("alice".into()),
                }],
            },
            split: vec![
                Destination {
                    service: key("b"),
                    subset: Some("v1".into()),
                    weight: 90,
                },
                Destination {
                    service: key("b"),
                    subset: Some("v2".into()),
                    weight: 10,
                },
            ],
            timeout: Some(Duration::from_secs(2)),
            retries: Some(Retries {
                attempts: 2,
                on: vec!["5xx".into()],
                per_try_timeout: Some(Duration::from_millis(500)),
            }),
            prefix_rewrite: Some("/v2/".into()),
        }],
    });
    let s = build(&world(&m, &[&a1, &b1, &b2]), &a1);
    assert_eq!(
        s.get(T::Cluster).names(),
        [
            "b.default:9080",
            "b.default:9080/v1",
            "b.default:9080/v2",
            "inbound:8080"
        ]
    );
    assert_eq!(
        endpoints(&s, "b.default:9080/v1"),
        pairs(&[("10.0.0.2:15006", "b-1")])
    );
    assert_eq!(
        endpoints(&s, "b.default:9080/v2"),
        pairs(&[("10.0.0.3:15006", "b-2")])
    );
    assert_eq!(endpoints(&s, "b.default:9080").len(), 2);
    let vh = &routes(&s, "outbound").virtual_hosts[0];
    assert_eq!(vh.routes.len(), 2);
    let canary = &vh.routes[0];
    assert_eq!(canary.name, "canary");
    assert_eq!(
        forward(canary),
        [
            ("b.default:9080/v1".to_string(), 90),
            ("b.default:9080/v2".to_string(), 10)
        ]
    );
    let mt = canary.r#match.as_ref().unwrap();
    assert_eq!(mt.path, Some(v1::route_match::Path::Prefix("/api".into())));
    assert_eq!(mt.methods, ["GET"]);
    assert_eq!(
        mt.headers[0].r#match,
        Some(v1::header_match::Match::Exact("alice".into()))
    );
    let Some(v1::route::Action::Forward(f)) = &canary.action else {
        panic!()
    };
    assert_eq!(f.prefix_rewrite, "/v2/");
    assert_eq!(
        f.timeout,
        Some(prost_types::Duration {
            seconds: 2,
            nanos: 0
        })
    );
    let retry = f.retry.as_ref().unwrap();
    assert_eq!(
        (retry.retries, retry.retry_on.as_slice()),
        (2, ["5xx".to_string()].as_slice())
    );
    assert_eq!(vh.routes[1].name, "default");
}

#[test]
fn a_split_to_another_service_uses_its_matching_or_first_http_port() {
    let mut m = mesh();
    // e has no 9080: the split goes to its first HTTP port.
    m.services.push(service(
        "e",
        vec![
            port("raw", 1000, Protocol::Tcp),
            port("web", 8000, Protocol::Http),
        ],
    ));
    m.traffic.push(TrafficRule {
        name: "b-ab".into(),
        service: key("b"),
        port: Some(9080),
        routes: vec![HttpRoute {
            name: "ab".into(),
            matcher: RouteMatch::default(),
            split: vec![
                Destination {
                    service: key("b"),
                    subset: None,
                    weight: 50,
                },
                Destination {
                    service: key("e"),
                    subset: None,
                    weight: 50,
                },
            ],
            timeout: None,
            retries: None,
            prefix_rewrite: None,
        }],
    });
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let e1 = node("e-1", "e", "10.0.0.5", &[]);
    let s = build(&world(&m, &[&a1, &e1]), &a1);
    // a does not call e, but its route names e's cluster: it must have it.
    assert_eq!(
        s.get(T::Cluster).names(),
        ["b.default:9080", "e.default:8000", "inbound:8080"]
    );
    assert_eq!(
        endpoints(&s, "e.default:8000"),
        pairs(&[("10.0.0.5:15007", "e-1")])
    );
    let vh = &routes(&s, "outbound").virtual_hosts[0];
    assert_eq!(
        forward(&vh.routes[0]),
        [
            ("b.default:9080".to_string(), 50),
            ("e.default:8000".to_string(), 50)
        ]
    );
    // e's own vhosts are not in a's table: a does not call e.
    assert_eq!(routes(&s, "outbound").virtual_hosts.len(), 1);
}

#[test]
fn calls_absent_means_every_service_including_tcp_and_static_ones() {
    let m = mesh();
    let b1 = node("b-1", "b", "10.0.0.2", &[]);
    let s = build(&world(&m, &[&b1]), &b1);
    assert_eq!(
        s.get(T::Cluster).names(),
        [
            "a.default:8080",
            "b.default:9080",
            "c.default:5432",
            "d.default:7000",
            "d.default:7001",
            "d.default:7002",
            "inbound:9080"
        ]
    );
    assert_eq!(
        endpoints(&s, "c.default:5432"),
        pairs(&[("10.9.9.9:5432", "")])
    );
    // It calls itself too.
    assert_eq!(
        endpoints(&s, "b.default:9080"),
        pairs(&[("10.0.0.2:15006", "b-1")])
    );
    assert_eq!(endpoints(&s, "a.default:8080"), vec![]);
    assert_eq!(
        s.get(T::Listener).names(),
        [
            "inbound:9080",
            "outbound",
            "outbound:c.default:5432",
            "outbound:d.default:7002"
        ]
    );
    let pg = listener(&s, "outbound:c.default:5432");
    assert_eq!(pg.address, "127.0.0.1:5432");
    assert_eq!(pg.protocol, v1::Protocol::Tcp as i32);
    assert_eq!(pg.cluster, "c.default:5432");
    let names: Vec<&str> = routes(&s, "outbound")
        .virtual_hosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "a.default:8080",
            "b.default:9080",
            "d.default:7000",
            "d.default:7001"
        ]
    );
}

#[test]
fn a_caller_of_only_tcp_services_has_no_http_outbound_listener() {
    let mut m = mesh();
    m.services[0].calls = Some(vec![key("c")]);
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let s = build(&world(&m, &[&a1]), &a1);
    assert_eq!(
        s.get(T::Listener).names(),
        ["inbound:8080", "outbound:c.default:5432"]
    );
    assert_eq!(s.get(T::RouteTable).names(), ["inbound:8080"]);
}

#[test]
fn multi_port_services_use_consecutive_inbound_ports() {
    let m = mesh();
    let mut d1 = node("d-1", "d", "10.0.0.4", &[]);
    d1.app_port = Some(17000);
    let w = world(&m, &[&d1]);
    let s = build(&w, &d1);
    assert_eq!(listener(&s, "inbound:7000").address, "10.0.0.4:15006");
    assert_eq!(listener(&s, "inbound:7001").address, "10.0.0.4:15007");
    let raw = listener(&s, "inbound:7002");
    assert_eq!(raw.address, "10.0.0.4:15008");
    assert_eq!(
        (raw.cluster.as_str(), raw.route_table.as_str()),
        ("inbound:7002", "")
    );
    assert_eq!(raw.protocol, v1::Protocol::Tcp as i32);
    // The app port replaces the first port only.
    assert_eq!(
        endpoints(&s, "inbound:7000"),
        pairs(&[("127.0.0.1:17000", "d-1")])
    );
    assert_eq!(
        endpoints(&s, "inbound:7001"),
        pairs(&[("127.0.0.1:7001", "d-1")])
    );
    assert_eq!(
        s.get(T::RouteTable).names(),
        ["inbound:7000", "inbound:7001", "outbound"]
    );

    // A caller sees port i of each instance at inbound + i.
    let b1 = node("b-1", "b", "10.0.0.2", &[]);
    let s = build(&w, &b1);
    assert_eq!(
        endpoints(&s, "d.default:7001"),
        pairs(&[("10.0.0.4:15007", "d-1")])
    );
    assert_eq!(
        endpoints(&s, "d.default:7002"),
        pairs(&[("10.0.0.4:15008", "d-1")])
    );
    let vh = routes(&s, "outbound")
        .virtual_hosts
        .iter()
        .find(|v| v.name == "d.default:7001")
        .unwrap();
    // Not the first HTTP port: only spellings with the port.
    assert!(
        vh.domains.iter().all(|d| d.ends_with(":7001")),
        "{:?}",
        vh.domains
    );
}

#[test]
fn static_endpoints_of_later_ports_keep_the_ip_with_the_declared_port() {
    let mut m = mesh();
    m.services[3].static_endpoints = vec![StaticEndpoint {
        address: "10.8.8.8:7000".parse().unwrap(),
        labels: BTreeMap::new(),
        zone: String::new(),
    }];
    let b1 = node("b-1", "b", "10.0.0.2", &[]);
    let s = build(&world(&m, &[&b1]), &b1);
    assert_eq!(
        endpoints(&s, "d.default:7000"),
        pairs(&[("10.8.8.8:7000", "")])
    );
    assert_eq!(
        endpoints(&s, "d.default:7002"),
        pairs(&[("10.8.8.8:7002", "")])
    );
}

#[test]
fn a_node_of_an_unknown_service_gets_empty_resources_and_a_reason() {
    let m = mesh();
    let x = node("x-1", "nope", "10.0.0.9", &[]);
    let s = build(&world(&m, &[&x]), &x);
    for t in TYPES {
        assert!(s.get(t).resources.is_empty(), "{t:?}");
    }
    assert!(s.problem.unwrap().contains("nope.default is not declared"));
}

#[test]
fn the_short_name_belongs_to_the_callers_namespace() {
    let mut m = mesh();
    let mut other = service("b", vec![port("http", 9080, Protocol::Http)]);
    other.key.namespace = "aaa".into();
    m.services.insert(0, other);
    m.services.sort_by(|a, b| a.key.cmp(&b.key));
    m.services
        .iter_mut()
        .find(|s| s.key == key("a"))
        .unwrap()
        .calls = Some(vec![
        key("b"),
        ServiceKey {
            name: "b".into(),
            namespace: "aaa".into(),
        },
    ]);
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let s = build(&world(&m, &[&a1]), &a1);
    let rt = routes(&s, "outbound");
    let aaa = rt
        .virtual_hosts
        .iter()
        .find(|v| v.name == "b.aaa:9080")
        .unwrap();
    let dflt = rt
        .virtual_hosts
        .iter()
        .find(|v| v.name == "b.default:9080")
        .unwrap();
    assert!(!aaa.domains.iter().any(|d| d == "b" || d == "b:9080"));
    assert!(dflt.domains.iter().any(|d| d == "b"));
}

#[test]
fn policies_and_mtls_ride_in_the_inbound_listeners() {
    let mut m = mesh();
    m.policies.push(Policy {
        name: "allow-a".into(),
        service: key("b"),
        action: PolicyAction::Allow,
        rules: vec![
            PolicyRule {
                source_identities: vec!["spiffe://cluster.local/ns/default/sa/a".into()],
                source_namespaces: vec![],
                methods: vec!["GET".into()],
                paths: vec![(false, "/api".into()), (true, "/health".into())],
                ports: vec![9080],
            },
            PolicyRule {
                source_identities: vec![],
                source_namespaces: vec!["other".into()],
                methods: vec![],
                paths: vec![],
                ports: vec![9081],
            },
        ],
    });
    m.services[1].mtls = MtlsMode::Strict;
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let b1 = node("b-1", "b", "10.0.0.2", &[]);
    let w = world(&m, &[&a1, &b1]);
    let sa = build(&w, &a1);
    assert!(sa.get(T::AuthorizationPolicy).resources.is_empty());
    let Some(Kind::Listener(l)) = &sa.get(T::Listener).get("inbound:8080").unwrap().kind else {
        panic!()
    };
    assert!(l.authorization_policies.is_empty());
    assert_eq!(l.mtls_mode, v1::MtlsMode::Permissive as i32);
    let s = build(&w, &b1);
    assert!(s.get(T::AuthorizationPolicy).resources.is_empty());
    let Some(Kind::Listener(l)) = &s.get(T::Listener).get("inbound:9080").unwrap().kind else {
        panic!()
    };
    assert_eq!(l.mtls_mode, v1::MtlsMode::Strict as i32);
    let p = &l.authorization_policies[0];
    assert_eq!(p.name, "allow-a");
    assert_eq!(p.service, "b.default");
    assert_eq!(p.action, v1::authorization_policy::Action::Allow as i32);
    assert_eq!(p.rules[0].paths.len(), 2);
    // Ports name service ports; the proxy sees its listener's port. A rule
    // for this listener's port applies to all of it, a rule for another port
    // is left out of this listener.
    assert_eq!(p.rules.len(), 1, "{p:?}");
    assert!(p.rules[0].ports.is_empty());
}

#[test]
fn disabled_mtls_gives_plaintext_listeners_and_endpoints() {
    let mut m = mesh();
    m.services[1].mtls = MtlsMode::Disable;
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let b1 = node("b-1", "b", "10.0.0.2", &[]);
    let w = world(&m, &[&a1, &b1]);
    let sb = build(&w, &b1);
    let Some(Kind::Listener(l)) = &sb.get(T::Listener).get("inbound:9080").unwrap().kind else {
        panic!()
    };
    assert_eq!(l.mtls_mode, v1::MtlsMode::Unspecified as i32);
    let sa = build(&w, &a1);
    let Some(Kind::Endpoints(e)) = &sa.get(T::Endpoints).get("b.default:9080").unwrap().kind else {
        panic!()
    };
    assert!(!e.endpoints[0].mtls);
    m.services[1].mtls = MtlsMode::Permissive;
    let sa = build(&world(&m, &[&a1, &b1]), &a1);
    let Some(Kind::Endpoints(e)) = &sa.get(T::Endpoints).get("b.default:9080").unwrap().kind else {
        panic!()
    };
    assert!(e.endpoints[0].mtls);
}

#[test]
fn versions_change_only_for_the_types_whose_content_changed() {
    let mut m = mesh();
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let b1 = node("b-1", "b", "10.0.0.2", &[("version", "v1")]);
    let b2 = node("b-2", "b", "10.0.0.3", &[("version", "v2")]);
    let s1 = build(&world(&m, &[&a1, &b1]), &a1);
    // Deterministic: the same inputs give the same versions.
    assert_eq!(s1, build(&world(&m, &[&a1, &b1]), &a1));
    for t in TYPES {
        assert_eq!(s1.get(t).version.len(), 16);
    }

    let s2 = build(&world(&m, &[&a1, &b1, &b2]), &a1);
    let changed = |x: &Snapshot, y: &Snapshot| -> Vec<T> {
        TYPES
            .into_iter()
            .filter(|&t| x.get(t).version != y.get(t).version)
            .collect()
    };
    assert_eq!(changed(&s1, &s2), [T::Endpoints]);

    // A node of a service a does not call changes nothing for a.
    let d1 = node("d-1", "d", "10.0.0.4", &[]);
    assert_eq!(
        changed(&s2, &build(&world(&m, &[&a1, &b1, &b2, &d1]), &a1)),
        []
    );

    // A split: new subset clusters and their endpoints, new routes.
    m.traffic.push(TrafficRule {
        name: "b-canary".into(),
        service: key("b"),
        port: None,
        routes: vec![HttpRoute {
            name: "canary".into(),
            matcher: RouteMatch::default(),
            split: vec![
                Destination {
                    service: key("b"),
                    subset: Some("v1".into()),
                    weight: 100,
                },
                Destination {
                    service: key("b"),
                    subset: Some("v2".into()),
                    weight: 0,
                },
            ],
            timeout: None,
            retries: None,
            prefix_rewrite: None,
        }],
    });
    let s3 = build(&world(&m, &[&a1, &b1, &b2]), &a1);
    assert_eq!(changed(&s2, &s3), [T::Cluster, T::Endpoints, T::RouteTable]);
    // Only the weights: only the routes.
    m.traffic[0].routes[0].split[0].weight = 50;
    m.traffic[0].routes[0].split[1].weight = 50;
    let s4 = build(&world(&m, &[&a1, &b1, &b2]), &a1);
    assert_eq!(changed(&s3, &s4), [T::RouteTable]);
    // The mesh version string alone changes nothing.
    m.version = "other".into();
    assert_eq!(changed(&s4, &build(&world(&m, &[&a1, &b1, &b2]), &a1)), []);
}

#[test]
fn a_world_records_which_services_changed_instances_and_snapshots_name_their_deps() {
    let m = Arc::new(mesh());
    let instances = |nodes: &[&NodeInfo]| {
        let mut m: BTreeMap<ServiceKey, Vec<Arc<NodeInfo>>> = BTreeMap::new();
        for n in nodes {
            m.entry(n.service_key())
                .or_default()
                .push(Arc::new((*n).clone()));
        }
        m
    };
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let b1 = node("b-1", "b", "10.0.0.2", &[("version", "v1")]);
    let b2 = node("b-2", "b", "10.0.0.3", &[("version", "v2")]);
    let w1 = World::new(1, 1, m.clone(), instances(&[&a1, &b1]), None);
    let w2 = World::new(2, 2, m.clone(), instances(&[&a1, &b1, &b2]), Some(&w1));
    let ia = w2.service_index(&a1.service_key()).unwrap();
    let ib = w2.service_index(&b1.service_key()).unwrap();
    assert_eq!(w1.instances_changed[ia], 1);
    assert_eq!(w2.instances_changed[ia], 1, "a's instances did not change");
    assert_eq!(w2.instances_changed[ib], 2, "b gained an instance");
    // Another mesh: every service counts as changed.
    let w3 = World::new(
        3,
        3,
        Arc::new(mesh()),
        instances(&[&a1, &b1, &b2]),
        Some(&w2),
    );
    assert!(w3.instances_changed.iter().all(|&g| g == 3));

    // A node of `a` (which calls b) depends on b, whose endpoints it was
    // given.
    let s = build(&w2, &a1);
    assert!(s.deps.contains(&(ib as u32)), "{:?}", s.deps);
    assert!(s.deps.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
}

/// g: gRPC 50051 (subsets v1/v2), HTTP/2 8443, HTTP 8080, TCP 5000.
fn mesh_with_grpc() -> Mesh {
    let mut m = mesh();
    let mut g = service(
        "g",
        vec![
            port("grpc", 50051, Protocol::Grpc),
            port("h2", 8443, Protocol::Http2),
            port("web", 8080, Protocol::Http),
            port("raw", 5000, Protocol::Tcp),
        ],
    );
    g.subsets = vec![
        Subset {
            name: "v1".into(),
            labels: labels(&[("version", "v1")]),
        },
        Subset {
            name: "v2".into(),
            labels: labels(&[("version", "v2")]),
        },
    ];
    m.services.push(g);
    m
}

#[test]
fn inbound_listeners_carry_the_port_protocol_and_the_app_cluster_its_http_version() {
    let m = mesh_with_grpc();
    let g1 = node("g-1", "g", "10.0.0.7", &[]);
    let s = build(&world(&m, &[&g1]), &g1);
    let want = [
        (
            "inbound:50051",
            v1::Protocol::Grpc,
            v1::UpstreamProtocol::Http2,
        ),
        (
            "inbound:8443",
            v1::Protocol::Http2,
            v1::UpstreamProtocol::Http2,
        ),
        // The app of an http port gets HTTP/1.1 whatever the client spoke.
        (
            "inbound:8080",
            v1::Protocol::Http,
            v1::UpstreamProtocol::Http1,
        ),
        (
            "inbound:5000",
            v1::Protocol::Tcp,
            v1::UpstreamProtocol::Http1,
        ),
    ];
    for (name, listener_protocol, cluster_protocol) in want {
        let l = listener(&s, name);
        assert_eq!(l.protocol, listener_protocol as i32, "{name}");
        assert_eq!(
            cluster(&s, name).protocol,
            cluster_protocol as i32,
            "{name}"
        );
    }
    // The three HTTP-family ports are routed; the TCP port is not.
    for name in ["inbound:50051", "inbound:8443", "inbound:8080"] {
        let l = listener(&s, name);
        assert_eq!((l.route_table.as_str(), l.cluster.as_str()), (name, ""));
        assert_eq!(
            forward(&routes(&s, name).virtual_hosts[0].routes[0]),
            [(name.to_string(), 1)]
        );
    }
    let raw = listener(&s, "inbound:5000");
    assert_eq!(
        (raw.route_table.as_str(), raw.cluster.as_str()),
        ("", "inbound:5000")
    );
    assert_eq!(listener(&s, "inbound:50051").address, "10.0.0.7:15006");
    assert_eq!(listener(&s, "inbound:8443").address, "10.0.0.7:15007");
}

#[test]
fn outbound_clusters_speak_http2_to_http2_and_grpc_ports() {
    let mut m = mesh_with_grpc();
    m.traffic.push(TrafficRule {
        name: "g-canary".into(),
        service: key("g"),
        port: Some(50051),
        routes: vec![HttpRoute {
            name: "canary".into(),
            matcher: RouteMatch {
                path: Some(PathMatch::Prefix("/ringmesh.testing.v1.Echo/".into())),
                methods: vec![],
                headers: vec![],
            },
            split: vec![
                Destination {
                    service: key("g"),
                    subset: Some("v1".into()),
                    weight: 90,
                },
                Destination {
                    service: key("g"),
                    subset: Some("v2".into()),
                    weight: 10,
                },
            ],
            timeout: Some(Duration::from_millis(300)),
            retries: None,
            prefix_rewrite: None,
        }],
    });
    let b1 = node("b-1", "b", "10.0.0.2", &[]);
    let g1 = node("g-1", "g", "10.0.0.7", &[("version", "v1")]);
    let s = build(&world(&m, &[&b1, &g1]), &b1);
    for (name, want) in [
        ("g.default:50051", v1::UpstreamProtocol::Http2),
        ("g.default:50051/v1", v1::UpstreamProtocol::Http2),
        ("g.default:50051/v2", v1::UpstreamProtocol::Http2),
        ("g.default:8443", v1::UpstreamProtocol::Http2),
        ("g.default:8080", v1::UpstreamProtocol::Http1),
        ("b.default:9080", v1::UpstreamProtocol::Http1),
        // TCP clusters never speak HTTP; the field keeps its default.
        ("g.default:5000", v1::UpstreamProtocol::Http1),
    ] {
        assert_eq!(cluster(&s, name).protocol, want as i32, "{name}");
    }
    // The one outbound HTTP listener serves every HTTP-family port.
    assert_eq!(listener(&s, "outbound").protocol, v1::Protocol::Http as i32);
    assert_eq!(
        listener(&s, "outbound:g.default:5000").protocol,
        v1::Protocol::Tcp as i32
    );
    let rt = routes(&s, "outbound");
    let vh = |n: &str| rt.virtual_hosts.iter().find(|v| v.name == n).unwrap();
    // The gRPC port is g's first HTTP-family port: it owns the bare names.
    assert!(vh("g.default:50051").domains.contains(&"g".to_string()));
    assert!(vh("g.default:8443")
        .domains
        .iter()
        .all(|d| d.ends_with(":8443")));
    assert!(vh("g.default:8080")
        .domains
        .iter()
        .all(|d| d.ends_with(":8080")));
    let grpc = vh("g.default:50051");
    assert_eq!(grpc.routes.len(), 2);
    assert_eq!(
        forward(&grpc.routes[0]),
        [
            ("g.default:50051/v1".to_string(), 90),
            ("g.default:50051/v2".to_string(), 10)
        ]
    );
    let Some(v1::route::Action::Forward(f)) = &grpc.routes[0].action else {
        panic!()
    };
    assert_eq!(
        f.timeout,
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 300_000_000
        })
    );
    // The mesh hop to g's proxies is mTLS; the engine makes it HTTP/2.
    assert_eq!(
        endpoints(&s, "g.default:50051/v1"),
        pairs(&[("10.0.0.7:15006", "g-1")])
    );
}

#[test]
fn a_split_to_a_grpc_only_service_uses_its_first_http_family_port() {
    let mut m = mesh();
    m.services
        .push(service("h", vec![port("grpc", 50051, Protocol::Grpc)]));
    m.traffic.push(TrafficRule {
        name: "b-to-h".into(),
        service: key("b"),
        port: None,
        routes: vec![HttpRoute {
            name: "to-h".into(),
            matcher: RouteMatch::default(),
            split: vec![Destination {
                service: key("h"),
                subset: None,
                weight: 1,
            }],
            timeout: None,
            retries: None,
            prefix_rewrite: None,
        }],
    });
    let a1 = node("a-1", "a", "10.0.0.1", &[]);
    let s = build(&world(&m, &[&a1]), &a1);
    assert_eq!(
        forward(&routes(&s, "outbound").virtual_hosts[0].routes[0]),
        [("h.default:50051".to_string(), 1)]
    );
    assert_eq!(
        cluster(&s, "h.default:50051").protocol,
        v1::UpstreamProtocol::Http2 as i32
    );
}
