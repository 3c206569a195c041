//! Unit tests of the control client: translation of every field, cluster
//! retention, and the reasons NACKs carry.

use std::path::Path;
use std::time::Duration;

use ringmesh_proto::v1 as pb;
use ringmesh_proto::v1::resource::Kind as PbKind;

use super::state::{Kind, State};
use super::translate::{build, opt_duration, translate};
use crate::config::model;
use crate::config::ListenerKind;

fn dur(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

fn response(kind: Kind, version: &str, resources: Vec<(&str, PbKind)>) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        r#type: kind.proto() as i32,
        version_info: version.into(),
        nonce: format!("n-{version}"),
        resources: resources
            .into_iter()
            .map(|(name, kind)| pb::Resource {
                name: name.into(),
                kind: Some(kind),
            })
            .collect(),
    }
}

fn cluster(name: &str) -> PbKind {
    PbKind::Cluster(pb::Cluster {
        name: name.into(),
        ..Default::default()
    })
}

fn endpoints(name: &str, addrs: &[&str]) -> PbKind {
    PbKind::Endpoints(pb::ClusterEndpoints {
        cluster: name.into(),
        endpoints: addrs
            .iter()
            .map(|a| pb::Endpoint {
                address: (*a).into(),
                node_id: "n".into(),
                zone: String::new(),
                mtls: false,
            })
            .collect(),
    })
}

fn http_listener(name: &str, addr: &str, table: &str) -> PbKind {
    PbKind::Listener(pb::Listener {
        name: name.into(),
        address: addr.into(),
        protocol: pb::Protocol::Http as i32,
        direction: pb::Direction::Outbound as i32,
        route_table: table.into(),
        ..Default::default()
    })
}

fn tcp_listener(name: &str, addr: &str, cluster: &str) -> PbKind {
    PbKind::Listener(pb::Listener {
        name: name.into(),
        address: addr.into(),
        protocol: pb::Protocol::Tcp as i32,
        direction: pb::Direction::Inbound as i32,
        cluster: cluster.into(),
        idle_timeout: dur(30, 0),
        ..Default::default()
    })
}

fn forward_route(name: &str, prefix: &str, clusters: &[(&str, u32)]) -> pb::Route {
    pb::Route {
        name: name.into(),
        r#match: Some(pb::RouteMatch {
            path: Some(pb::route_match::Path::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(pb::route::Action::Forward(pb::ForwardAction {
            clusters: clusters
                .iter()
                .map(|(c, w)| pb::WeightedCluster {
                    cluster: (*c).into(),
                    weight: *w,
                })
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn table(name: &str, routes: Vec<pb::Route>) -> PbKind {
    PbKind::RouteTable(pb::RouteTable {
        name: name.into(),
        virtual_hosts: vec![pb::VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes,
        }],
    })
}

/// Applies responses in order, panicking on a refusal.
fn apply_all(state: State, responses: &[pb::DiscoveryResponse]) -> State {
    responses.iter().fold(state, |s, r| {
        let kind = Kind::from_proto(r.r#type).unwrap();
        s.apply(kind, r).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A complete state: cluster `a` (one endpoint), an HTTP listener routing `/`
/// to it through table `outbound`.
fn base() -> State {
    apply_all(
        State::default(),
        &[
            response(Kind::Cluster, "c1", vec![("a", cluster("a"))]),
            response(
                Kind::Endpoints,
                "e1",
                vec![("a", endpoints("a", &["127.0.0.1:9001"]))],
            ),
            response(
                Kind::Listener,
                "l1",
                vec![(
                    "outbound",
                    http_listener("outbound", "127.0.0.1:15001", "outbound"),
                )],
            ),
            response(
                Kind::RouteTable,
                "r1",
                vec![(
                    "outbound",
                    table("outbound", vec![forward_route("r", "/", &[("a", 1)])]),
                )],
            ),
        ],
    )
}

fn boot() -> model::File {
    model::File::default()
}

fn compile(state: &State) -> Result<crate::config::Config, String> {
    build(&boot(), Path::new("cp"), state)
}

#[test]
fn complete_state_compiles_and_tracks_versions() {
    let s = base();
    // No SECRET yet, so no identity: not complete, but it compiles.
    assert!(!s.complete());
    assert_eq!(s.versions, ["", "c1", "e1", "l1", "r1"].map(String::from));
    let c = compile(&s).unwrap();
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(&*c.listeners[0].name, "outbound");
    assert_eq!(c.clusters.len(), 1);
    assert_eq!(c.clusters[0].endpoints, ["127.0.0.1:9001".parse().unwrap()]);
}

#[test]
fn a_cluster_without_endpoints_compiles() {
    let s = apply_all(base(), &[response(Kind::Endpoints, "e2", vec![])]);
    let c = compile(&s).unwrap();
    assert!(c.clusters[0].endpoints.is_empty());
}

#[test]
fn cluster_fields() {
    let s = apply_all(
        State::default(),
        &[
            response(
                Kind::Cluster,
                "1",
                vec![
                    (
                        "rr",
                        PbKind::Cluster(pb::Cluster {
                            name: String::new(),
                            lb_policy: pb::LbPolicy::RoundRobin as i32,
                            connect_timeout: dur(1, 500_000_000),
                            max_idle_per_endpoint: 7,
                            idle_timeout: dur(90, 0),
                            expected_identity: "spiffe://cluster.local/ns/default/sa/rr".into(),
                            protocol: pb::UpstreamProtocol::Http2 as i32,
                        }),
                    ),
                    (
                        "rand",
                        PbKind::Cluster(pb::Cluster {
                            lb_policy: pb::LbPolicy::Random as i32,
                            ..Default::default()
                        }),
                    ),
                    (
                        "lr",
                        PbKind::Cluster(pb::Cluster {
                            lb_policy: pb::LbPolicy::LeastRequest as i32,
                            ..Default::default()
                        }),
                    ),
                ],
            ),
            response(
                Kind::Endpoints,
                "1",
                vec![("rr", endpoints("rr", &["10.0.0.1:80", "[::1]:81"]))],
            ),
        ],
    );
    let t = translate(&boot(), &s).unwrap();
    let by = |n: &str| {
        t.file
            .clusters
            .iter()
            .find(|c| c.name == n)
            .unwrap()
            .clone()
    };
    let rr = by("rr");
    assert_eq!(rr.lb_policy, model::LbPolicy::RoundRobin);
    assert_eq!(rr.connect_timeout.0, Duration::from_millis(1500));
    assert_eq!(rr.max_idle_per_endpoint, 7);
    assert_eq!(rr.idle_timeout.0, Duration::from_secs(90));
    assert_eq!(rr.endpoints, ["10.0.0.1:80", "[::1]:81"]);
    let rand = by("rand");
    assert_eq!(rand.lb_policy, model::LbPolicy::Random);
    // Unset fields take the YAML defaults.
    assert_eq!(
        rand.connect_timeout,
        model::Cluster::default_connect_timeout()
    );
    assert_eq!(
        rand.max_idle_per_endpoint,
        model::Cluster::default_max_idle()
    );
    assert_eq!(rand.idle_timeout, model::Cluster::default_idle_timeout());
    assert!(rand.endpoints.is_empty());
    assert_eq!(by("lr").lb_policy, model::LbPolicy::LeastRequest);
    let c = compile(&s).unwrap();
    assert_eq!(c.clusters.len(), 3);
}

#[test]
fn listener_fields() {
    let s = apply_all(
        base(),
        &[response(
            Kind::Listener,
            "l2",
            vec![
                (
                    "outbound",
                    http_listener("outbound", "127.0.0.1:15001", "outbound"),
                ),
                ("tcp", tcp_listener("tcp", "127.0.0.1:15101", "a")),
            ],
        )],
    );
    let t = translate(&boot(), &s).unwrap();
    let tcp = t.file.listeners.iter().find(|l| l.name == "tcp").unwrap();
    assert_eq!(tcp.protocol, model::Protocol::Tcp);
    assert_eq!(tcp.address, "127.0.0.1:15101");
    assert_eq!(tcp.cluster.as_deref(), Some("a"));
    assert_eq!(tcp.idle_timeout.map(|d| d.0), Some(Duration::from_secs(30)));
    let http = t
        .file
        .listeners
        .iter()
        .find(|l| l.name == "outbound")
        .unwrap();
    assert_eq!(http.protocol, model::Protocol::Http);
    assert_eq!(http.virtual_hosts[0].name, "all");
    assert_eq!(http.virtual_hosts[0].domains, ["*"]);
    let c = compile(&s).unwrap();
    assert!(c
        .listeners
        .iter()
        .any(|l| matches!(l.kind, ListenerKind::Tcp { idle_timeout, .. } if idle_timeout == Duration::from_secs(30))));
}

#[test]
fn route_fields() {
    let full = pb::Route {
        name: "canary".into(),
        r#match: Some(pb::RouteMatch {
            path: Some(pb::route_match::Path::Prefix("/api/".into())),
            methods: vec!["GET".into(), "POST".into()],
            headers: vec![
                pb::HeaderMatch {
                    name: "x-user".into(),
                    r#match: Some(pb::header_match::Match::Exact("alice".into())),
                },
                pb::HeaderMatch {
                    name: "x-debug".into(),
                    r#match: Some(pb::header_match::Match::Present(false)),
                },
                pb::HeaderMatch {
                    name: "x-id".into(),
                    r#match: Some(pb::header_match::Match::Regex("[0-9]+".into())),
                },
            ],
        }),
        action: Some(pb::route::Action::Forward(pb::ForwardAction {
            clusters: vec![
                pb::WeightedCluster {
                    cluster: "a".into(),
                    weight: 90,
                },
                pb::WeightedCluster {
                    cluster: "b".into(),
                    weight: 10,
                },
            ],
            prefix_rewrite: "/v2/".into(),
            timeout: dur(2, 0),
            retry: Some(pb::RetryPolicy {
                retries: 2,
                retry_on: vec!["connect-failure".into(), "5xx".into()],
                per_try_timeout: dur(0, 500_000_000),
            }),
        })),
        request_headers_to_add: vec![pb::HeaderValue {
            name: "x-mesh".into(),
            value: "1".into(),
        }],
        request_headers_to_remove: vec!["x-secret".into()],
        response_headers_to_add: vec![pb::HeaderValue {
            name: "x-served-by".into(),
            value: "ringmesh".into(),
        }],
        response_headers_to_remove: vec!["server".into()],
    };
    let exact = pb::Route {
        name: String::new(),
        r#match: Some(pb::RouteMatch {
            path: Some(pb::route_match::Path::Exact("/health".into())),
            ..Default::default()
        }),
        action: Some(pb::route::Action::DirectResponse(pb::DirectResponse {
            status: 204,
            body: String::new(),
            content_type: String::new(),
        })),
        ..Default::default()
    };
    let regex = pb::Route {
        name: "re".into(),
        r#match: Some(pb::RouteMatch {
            path: Some(pb::route_match::Path::Regex("/x/[a-z]+".into())),
            ..Default::default()
        }),
        action: Some(pb::route::Action::DirectResponse(pb::DirectResponse {
            status: 418,
            body: "teapot".into(),
            content_type: "text/x-tea".into(),
        })),
        ..Default::default()
    };
    let any = pb::Route {
        name: "any".into(),
        r#match: None,
        ..forward_route("any", "/", &[("a", 0)])
    };
    let s = apply_all(
        base(),
        &[
            response(
                Kind::Cluster,
                "c2",
                vec![("a", cluster("a")), ("b", cluster("b"))],
            ),
            response(
                Kind::RouteTable,
                "r2",
                vec![("outbound", table("outbound", vec![full, exact, regex, any]))],
            ),
        ],
    );
    let t = translate(&boot(), &s).unwrap();
    let routes = &t.file.listeners[0].virtual_hosts[0].routes;
    let r = &routes[0];
    assert_eq!(r.name.as_deref(), Some("canary"));
    let p = r.matcher.path.as_ref().unwrap();
    assert_eq!(
        (p.prefix.as_deref(), p.exact.as_deref(), p.regex.as_deref()),
        (Some("/api/"), None, None)
    );
    assert_eq!(r.matcher.methods, ["GET", "POST"]);
    let h = &r.matcher.headers;
    assert_eq!(
        (h[0].name.as_str(), h[0].exact.as_deref()),
        ("x-user", Some("alice"))
    );
    assert_eq!((h[1].name.as_str(), h[1].present), ("x-debug", Some(false)));
    assert_eq!(
        (h[2].name.as_str(), h[2].regex.as_deref()),
        ("x-id", Some("[0-9]+"))
    );
    let a = r.route.as_ref().unwrap();
    assert_eq!(a.cluster, None);
    let w: Vec<(&str, u32)> = a
        .weighted_clusters
        .iter()
        .map(|w| (w.cluster.as_str(), w.weight))
        .collect();
    assert_eq!(w, [("a", 90), ("b", 10)]);
    assert_eq!(a.prefix_rewrite.as_deref(), Some("/v2/"));
    assert_eq!(a.timeout.map(|d| d.0), Some(Duration::from_secs(2)));
    let retry = a.retries.as_ref().unwrap();
    assert_eq!(retry.attempts, 2);
    assert_eq!(retry.on, ["connect-failure", "5xx"]);
    assert_eq!(
        retry.per_try_timeout.map(|d| d.0),
        Some(Duration::from_millis(500))
    );
    assert_eq!(r.request_headers_to_add[0].name, "x-mesh");
    assert_eq!(r.request_headers_to_add[0].value, "1");
    assert_eq!(r.request_headers_to_remove, ["x-secret"]);
    assert_eq!(r.response_headers_to_add[0].name, "x-served-by");
    assert_eq!(r.response_headers_to_remove, ["server"]);
    assert!(r.direct_response.is_none());

    let e = &routes[1];
    assert_eq!(e.name, None);
    assert_eq!(
        e.matcher.path.as_ref().unwrap().exact.as_deref(),
        Some("/health")
    );
    let d = e.direct_response.as_ref().unwrap();
    assert_eq!(
        (d.status, d.body.as_str(), d.content_type.as_deref()),
        (204, "", None)
    );
    assert!(e.route.is_none());

    let re = &routes[2];
    assert_eq!(
        re.matcher.path.as_ref().unwrap().regex.as_deref(),
        Some("/x/[a-z]+")
    );
    let d = re.direct_response.as_ref().unwrap();
    assert_eq!(
        (d.status, d.body.as_str(), d.content_type.as_deref()),
        (418, "teapot", Some("text/x-tea"))
    );

    // One cluster: no split, its weight does not matter.
    let any = &routes[3];
    assert!(any.matcher.path.is_none());
    let a = any.route.as_ref().unwrap();
    assert_eq!(a.cluster.as_deref(), Some("a"));
    assert!(a.weighted_clusters.is_empty());
    assert!(a.retries.is_none() && a.timeout.is_none() && a.prefix_rewrite.is_none());

    // And the whole thing compiles.
    compile(&s).unwrap();
}

#[test]
fn durations_are_checked() {
    assert_eq!(opt_duration("t", None).unwrap(), None);
    assert_eq!(
        opt_duration("t", dur(1, 5).as_ref()).unwrap().map(|d| d.0),
        Some(Duration::new(1, 5))
    );
    assert_eq!(
        opt_duration("t", dur(-1, 0).as_ref()).unwrap_err(),
        "t: must not be negative"
    );
    assert_eq!(
        opt_duration("t", dur(0, -1).as_ref()).unwrap_err(),
        "t: must not be negative"
    );
    assert_eq!(
        opt_duration("t", dur(0, 1_000_000_000).as_ref()).unwrap_err(),
        "t: nanos must be below 1e9"
    );
    assert_eq!(
        opt_duration("t", dur(8 * 24 * 3600, 0).as_ref()).unwrap_err(),
        "t: longer than a week"
    );
    assert!(opt_duration("t", dur(0, 0).as_ref())
        .unwrap_err()
        .contains("must be more than 0"));

    let mut s = base();
    s.clusters.get_mut("a").unwrap().connect_timeout = dur(-5, 0);
    assert_eq!(
        compile(&s).unwrap_err(),
        "cluster \"a\": connect_timeout: must not be negative"
    );
}

#[test]
fn http2_and_grpc_listeners_are_http_listeners() {
    for p in [pb::Protocol::Http2, pb::Protocol::Grpc] {
        let mut l = pb::Listener {
            name: "h2".into(),
            address: "127.0.0.1:15002".into(),
            route_table: "outbound".into(),
            ..Default::default()
        };
        l.set_protocol(p);
        let s = apply_all(
            base(),
            &[response(
                Kind::Listener,
                "l2",
                vec![("h2", PbKind::Listener(l))],
            )],
        );
        let c = compile(&s).unwrap();
        let l = c.listeners.iter().find(|l| &*l.name == "h2").unwrap();
        assert!(
            matches!(l.kind, crate::config::ListenerKind::Http(_)),
            "{p:?}"
        );
    }
}

#[test]
fn a_cluster_protocol_is_translated_and_an_unknown_one_refused() {
    let mut s = base();
    let c = compile(&s).unwrap();
    assert!(c
        .clusters
        .iter()
        .all(|c| c.protocol == model::UpstreamProtocol::Http1));
    let mut cl = pb::Cluster {
        name: "grpc".into(),
        ..Default::default()
    };
    cl.set_protocol(pb::UpstreamProtocol::Http2);
    s = apply_all(
        s,
        &[response(
            Kind::Cluster,
            "c2",
            vec![("grpc", PbKind::Cluster(cl.clone()))],
        )],
    );
    let c = compile(&s).unwrap();
    let g = c.clusters.iter().find(|c| &*c.name == "grpc").unwrap();
    assert_eq!(g.protocol, model::UpstreamProtocol::Http2);
    cl.protocol = 9;
    let s = apply_all(
        base(),
        &[response(
            Kind::Cluster,
            "c3",
            vec![("grpc", PbKind::Cluster(cl))],
        )],
    );
    assert!(compile(&s)
        .unwrap_err()
        .contains("protocol: unknown value 9"));
}

#[test]
fn a_listener_waits_for_its_route_table() {
    let s = apply_all(
        State::default(),
        &[
            response(Kind::Cluster, "c1", vec![("a", cluster("a"))]),
            response(
                Kind::Listener,
                "l1",
                vec![(
                    "outbound",
                    http_listener("outbound", "127.0.0.1:15001", "outbound"),
                )],
            ),
        ],
    );
    assert!(!s.complete());
    let c = compile(&s).unwrap();
    assert!(
        c.listeners.is_empty(),
        "a listener without its routes is not served"
    );
    let s = apply_all(
        s,
        &[response(
            Kind::RouteTable,
            "r1",
            vec![(
                "outbound",
                table("outbound", vec![forward_route("r", "/", &[("a", 1)])]),
            )],
        )],
    );
    assert_eq!(compile(&s).unwrap().listeners.len(), 1);
}

#[test]
fn a_route_to_an_unknown_cluster_is_refused_with_names() {
    let r = response(
        Kind::RouteTable,
        "r2",
        vec![(
            "outbound",
            table(
                "outbound",
                vec![forward_route("canary", "/", &[("a", 50), ("x", 50)])],
            ),
        )],
    );
    let before = base();
    assert_eq!(
        before.apply(Kind::RouteTable, &r).unwrap_err(),
        "route_table \"outbound\": route \"canary\": unknown cluster \"x\""
    );
    // An unnamed route is named like the compiler names it.
    let r = response(
        Kind::RouteTable,
        "r2",
        vec![(
            "outbound",
            table("outbound", vec![forward_route("", "/", &[("x", 1)])]),
        )],
    );
    assert_eq!(
        before.apply(Kind::RouteTable, &r).unwrap_err(),
        "route_table \"outbound\": route \"all/0\": unknown cluster \"x\""
    );
    let l = response(
        Kind::Listener,
        "l2",
        vec![("db", tcp_listener("db", "127.0.0.1:15102", "nope"))],
    );
    assert_eq!(
        before.apply(Kind::Listener, &l).unwrap_err(),
        "listener \"db\": unknown cluster \"nope\""
    );
}

#[test]
fn a_dropped_cluster_that_routes_name_is_retained_until_they_stop() {
    let s = apply_all(
        base(),
        &[
            response(Kind::Cluster, "c2", vec![("b", cluster("b"))]),
            // The endpoints of `a` go too.
            response(
                Kind::Endpoints,
                "e2",
                vec![("b", endpoints("b", &["127.0.0.1:9002"]))],
            ),
        ],
    );
    assert!(s.retained.contains_key("a"), "{s:?}");
    let c = compile(&s).unwrap();
    let a = c
        .clusters
        .iter()
        .find(|c| &*c.name == "a")
        .expect("a is kept");
    assert_eq!(
        a.endpoints,
        ["127.0.0.1:9001".parse().unwrap()],
        "with its last endpoints"
    );
    assert_eq!(s.version(Kind::Cluster), "c2");

    // Routes may still name it...
    let s = apply_all(
        s,
        &[response(
            Kind::RouteTable,
            "r2",
            vec![(
                "outbound",
                table(
                    "outbound",
                    vec![forward_route("r", "/", &[("a", 1), ("b", 1)])],
                ),
            )],
        )],
    );
    assert!(s.retained.contains_key("a"));
    // ...until they stop: then it goes.
    let s = apply_all(
        s,
        &[response(
            Kind::RouteTable,
            "r3",
            vec![(
                "outbound",
                table("outbound", vec![forward_route("r", "/", &[("b", 1)])]),
            )],
        )],
    );
    assert!(s.retained.is_empty());
    let c = compile(&s).unwrap();
    let names: Vec<&str> = c.clusters.iter().map(|c| &*c.name).collect();
    assert_eq!(names, ["b"]);
}

#[test]
fn a_retained_cluster_comes_back_with_the_control_planes_definition() {
    let s = apply_all(base(), &[response(Kind::Cluster, "c2", vec![])]);
    assert!(s.retained.contains_key("a"));
    let mut again = pb::Cluster {
        name: "a".into(),
        ..Default::default()
    };
    again.set_lb_policy(pb::LbPolicy::Random);
    let s = apply_all(
        s,
        &[response(
            Kind::Cluster,
            "c3",
            vec![("a", PbKind::Cluster(again))],
        )],
    );
    assert!(s.retained.is_empty());
    assert_eq!(s.cluster("a").unwrap().lb_policy(), pb::LbPolicy::Random);
}

#[test]
fn an_unreferenced_dropped_cluster_goes_at_once() {
    let s = apply_all(
        base(),
        &[response(
            Kind::Cluster,
            "c2",
            vec![("a", cluster("a")), ("b", cluster("b"))],
        )],
    );
    let s = apply_all(
        s,
        &[response(Kind::Cluster, "c3", vec![("a", cluster("a"))])],
    );
    assert!(s.retained.is_empty());
    assert!(s.cluster("b").is_none());
}

#[test]
fn a_tcp_listener_keeps_its_cluster_too() {
    let s = apply_all(
        base(),
        &[response(
            Kind::Listener,
            "l2",
            vec![
                (
                    "outbound",
                    http_listener("outbound", "127.0.0.1:15001", "outbound"),
                ),
                ("db", tcp_listener("db", "127.0.0.1:15102", "a")),
            ],
        )],
    );
    let s = apply_all(
        s,
        &[
            response(Kind::Cluster, "c2", vec![]),
            response(
                Kind::RouteTable,
                "r2",
                vec![("outbound", table("outbound", vec![]))],
            ),
        ],
    );
    assert!(
        s.retained.contains_key("a"),
        "the TCP listener still names it"
    );
    compile(&s).unwrap();
}

#[test]
fn resource_names_are_checked() {
    let s = State::default();
    let r = response(Kind::Cluster, "1", vec![("", cluster(""))]);
    assert_eq!(
        s.apply(Kind::Cluster, &r).unwrap_err(),
        "cluster resource [0]: name is empty"
    );
    let r = response(
        Kind::Cluster,
        "1",
        vec![("a", cluster("a")), ("a", cluster("a"))],
    );
    assert_eq!(
        s.apply(Kind::Cluster, &r).unwrap_err(),
        "cluster \"a\": listed twice"
    );
    let r = response(Kind::Cluster, "1", vec![("a", cluster("b"))]);
    assert_eq!(
        s.apply(Kind::Cluster, &r).unwrap_err(),
        "cluster \"a\": cluster.name is \"b\", not the resource name"
    );
    let r = response(Kind::Endpoints, "1", vec![("a", endpoints("b", &[]))]);
    assert_eq!(
        s.apply(Kind::Endpoints, &r).unwrap_err(),
        "endpoints \"a\": endpoints.cluster is \"b\", not the resource name"
    );
    let r = response(Kind::Listener, "1", vec![("a", cluster("a"))]);
    assert_eq!(
        s.apply(Kind::Listener, &r).unwrap_err(),
        "listener \"a\": resource holds a cluster, not a listener"
    );
    let mut r = response(Kind::RouteTable, "1", vec![]);
    r.resources.push(pb::Resource {
        name: "t".into(),
        kind: None,
    });
    assert_eq!(
        s.apply(Kind::RouteTable, &r).unwrap_err(),
        "route_table \"t\": resource holds nothing, not a route_table"
    );
}

#[test]
fn compile_errors_name_the_resource() {
    // A bad regex in a route.
    let mut bad = forward_route("re", "/", &[("a", 1)]);
    bad.r#match = Some(pb::RouteMatch {
        path: Some(pb::route_match::Path::Regex("(".into())),
        ..Default::default()
    });
    let s = apply_all(
        base(),
        &[response(
            Kind::RouteTable,
            "r2",
            vec![("outbound", table("outbound", vec![bad]))],
        )],
    );
    let e = compile(&s).unwrap_err();
    assert!(
        e.starts_with("route_table \"outbound\": route \"re\": match.path.regex: bad regex"),
        "{e}"
    );

    // Retry conditions live under forward.retry in the API.
    let mut bad = forward_route("retry", "/", &[("a", 1)]);
    if let Some(pb::route::Action::Forward(f)) = &mut bad.action {
        f.retry = Some(pb::RetryPolicy {
            retries: 1,
            retry_on: vec!["sometimes".into()],
            per_try_timeout: None,
        });
    }
    let s = apply_all(
        base(),
        &[response(
            Kind::RouteTable,
            "r2",
            vec![("outbound", table("outbound", vec![bad]))],
        )],
    );
    let e = compile(&s).unwrap_err();
    assert!(
        e.starts_with("route_table \"outbound\": route \"retry\": forward.retries.on[0]: unknown condition \"sometimes\""),
        "{e}"
    );

    // A domain claimed twice: the virtual host is named.
    let t = PbKind::RouteTable(pb::RouteTable {
        name: "outbound".into(),
        virtual_hosts: vec![
            pb::VirtualHost {
                name: "one".into(),
                domains: vec!["x".into()],
                routes: vec![],
            },
            pb::VirtualHost {
                name: "two".into(),
                domains: vec!["x".into()],
                routes: vec![],
            },
        ],
    });
    let s = apply_all(
        base(),
        &[response(Kind::RouteTable, "r2", vec![("outbound", t)])],
    );
    assert_eq!(
        compile(&s).unwrap_err(),
        "route_table \"outbound\": virtual_host \"two\": domains[0]: domain \"x\" is claimed by two virtual hosts"
    );

    // Two listeners on one address.
    let s = apply_all(
        base(),
        &[response(
            Kind::Listener,
            "l2",
            vec![
                (
                    "outbound",
                    http_listener("outbound", "127.0.0.1:15001", "outbound"),
                ),
                (
                    "second",
                    http_listener("second", "127.0.0.1:15001", "outbound"),
                ),
            ],
        )],
    );
    assert_eq!(
        compile(&s).unwrap_err(),
        "listener \"second\": address: 127.0.0.1:15001 is used twice in this config"
    );

    // Addresses are ip:port literals.
    let s = apply_all(
        base(),
        &[response(
            Kind::Endpoints,
            "e2",
            vec![("a", endpoints("a", &["localhost:80"]))],
        )],
    );
    assert_eq!(
        compile(&s).unwrap_err(),
        "cluster \"a\": endpoint \"localhost:80\": not an ip:port address"
    );

    // A direct response status out of range.
    let mut d = forward_route("d", "/", &[]);
    d.action = Some(pb::route::Action::DirectResponse(pb::DirectResponse {
        status: 700,
        ..Default::default()
    }));
    let s = apply_all(
        base(),
        &[response(
            Kind::RouteTable,
            "r2",
            vec![("outbound", table("outbound", vec![d]))],
        )],
    );
    assert_eq!(
        compile(&s).unwrap_err(),
        "route_table \"outbound\": route \"d\": direct_response.status: must be 200..599"
    );

    // A route with no action, a header match with no kind.
    let mut n = forward_route("n", "/", &[]);
    n.action = None;
    let s = apply_all(
        base(),
        &[response(
            Kind::RouteTable,
            "r2",
            vec![("outbound", table("outbound", vec![n]))],
        )],
    );
    assert_eq!(
        compile(&s).unwrap_err(),
        "route_table \"outbound\": route \"n\": set one of forward, direct_response"
    );
}

#[test]
fn the_bootstrap_is_merged_and_clashes_are_refused() {
    let mut b = boot();
    b.clusters.push(model::Cluster {
        name: "static".into(),
        endpoints: vec!["127.0.0.1:7000".into()],
        lb_policy: model::LbPolicy::RoundRobin,
        connect_timeout: model::Cluster::default_connect_timeout(),
        max_idle_per_endpoint: 1,
        idle_timeout: model::Cluster::default_idle_timeout(),
        mtls: None,
        protocol: model::UpstreamProtocol::Http1,
    });
    b.listeners.push(model::Listener {
        name: "static".into(),
        address: "127.0.0.1:7001".into(),
        protocol: model::Protocol::Tcp,
        virtual_hosts: vec![],
        cluster: Some("static".into()),
        idle_timeout: None,
        mtls: None,
        tls: None,
        authorization: vec![],
    });
    let s = base();
    let c = build(&b, Path::new("boot.yaml"), &s).unwrap();
    let l: Vec<&str> = c.listeners.iter().map(|l| &*l.name).collect();
    assert_eq!(l, ["static", "outbound"]);
    let cl: Vec<&str> = c.clusters.iter().map(|c| &*c.name).collect();
    assert_eq!(cl, ["static", "a"]);

    let s2 = apply_all(
        s.clone(),
        &[response(
            Kind::Cluster,
            "c2",
            vec![("a", cluster("a")), ("static", cluster("static"))],
        )],
    );
    assert_eq!(
        build(&b, Path::new("boot.yaml"), &s2).unwrap_err(),
        "cluster \"static\": name clashes with a cluster of the bootstrap config"
    );
    let s3 = apply_all(
        s.clone(),
        &[response(
            Kind::Listener,
            "l2",
            vec![("static", tcp_listener("static", "127.0.0.1:7002", "a"))],
        )],
    );
    assert_eq!(
        build(&b, Path::new("boot.yaml"), &s3).unwrap_err(),
        "listener \"static\": name clashes with a listener of the bootstrap config"
    );
    // A dynamic listener on a bootstrap listener's address.
    let s4 = apply_all(
        s,
        &[response(
            Kind::Listener,
            "l2",
            vec![("dup", tcp_listener("dup", "127.0.0.1:7001", "a"))],
        )],
    );
    assert_eq!(
        build(&b, Path::new("boot.yaml"), &s4).unwrap_err(),
        "listener \"dup\": address: 127.0.0.1:7001 is used twice in this config"
    );
}

#[test]
fn listener_shape_is_checked() {
    let mut tcp = pb::Listener {
        name: "t".into(),
        address: "127.0.0.1:1".into(),
        protocol: pb::Protocol::Tcp as i32,
        ..Default::default()
    };
    let check = |l: pb::Listener| {
        let mut s = base();
        s.listeners.insert(l.name.clone(), l);
        compile(&s).unwrap_err()
    };
    assert_eq!(
        check(tcp.clone()),
        "listener \"t\": a TCP listener needs a cluster"
    );
    tcp.cluster = "a".into();
    tcp.route_table = "outbound".into();
    assert_eq!(
        check(tcp.clone()),
        "listener \"t\": a TCP listener has no route_table"
    );
    tcp.route_table.clear();
    tcp.address = "nowhere".into();
    assert_eq!(
        check(tcp.clone()),
        "listener \"t\": address \"nowhere\": not an ip:port address"
    );
    let http = pb::Listener {
        name: "h".into(),
        address: "127.0.0.1:2".into(),
        protocol: pb::Protocol::Http as i32,
        ..Default::default()
    };
    assert_eq!(
        check(http.clone()),
        "listener \"h\": an HTTP listener needs a route_table"
    );
    let mut odd = http;
    odd.protocol = 42;
    assert_eq!(check(odd), "listener \"h\": protocol: unknown value 42");
}
