//! Helpers shared by the fuzz targets (`fuzz_targets/`) and the seed writer
//! (`examples/make_seeds.rs`): the framing of multi-message inputs and the
//! control-plane responses the `xds_decode` target starts from.

use ringmesh_proto::v1 as pb;
use ringmesh_proto::v1::resource::Kind as PbKind;

/// Splits `data` into messages, each `[selector, len_lo, len_hi, bytes..]`;
/// a short last message takes what is left.
pub fn frames(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&sel, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [lo, hi, rest @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), rest),
            _ => (rest.len(), rest),
        };
        let (msg, tail) = rest.split_at(len.min(rest.len()));
        data = tail;
        Some((sel, msg))
    })
}

/// The inverse of [`frames`].
pub fn frame(out: &mut Vec<u8>, sel: u8, msg: &[u8]) {
    out.push(sel);
    out.extend_from_slice(
        &u16::try_from(msg.len())
            .expect("a seed message under 64 KiB")
            .to_le_bytes(),
    );
    out.extend_from_slice(msg);
}

fn resource(name: &str, kind: PbKind) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        kind: Some(kind),
    }
}

/// A response of `t` holding `resources`.
pub fn response(
    t: pb::ResourceType,
    version: &str,
    resources: Vec<pb::Resource>,
) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        r#type: t as i32,
        version_info: version.into(),
        nonce: format!("n-{version}"),
        resources,
    }
}

/// A complete control-plane state in four responses: clusters `a` and `b`
/// (`b` split 90/10 with `a`), their endpoints, an HTTP listener routing
/// through table `outbound`, a TCP listener to `b`.
pub fn xds_base() -> Vec<pb::DiscoveryResponse> {
    use pb::ResourceType as T;
    let cluster = |name: &str| {
        resource(
            name,
            PbKind::Cluster(pb::Cluster {
                name: name.into(),
                connect_timeout: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        )
    };
    let endpoints = |name: &str, addr: &str| {
        resource(
            name,
            PbKind::Endpoints(pb::ClusterEndpoints {
                cluster: name.into(),
                endpoints: vec![pb::Endpoint {
                    address: addr.into(),
                    node_id: "n1".into(),
                    zone: "z".into(),
                    mtls: false,
                }],
            }),
        )
    };
    let route = pb::Route {
        name: "split".into(),
        r#match: Some(pb::RouteMatch {
            path: Some(pb::route_match::Path::Prefix("/".into())),
            methods: vec!["GET".into()],
            headers: vec![pb::HeaderMatch {
                name: "x-canary".into(),
                r#match: Some(pb::header_match::Match::Present(false)),
            }],
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
            timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    vec![
        response(T::Cluster, "c1", vec![cluster("a"), cluster("b")]),
        response(
            T::Endpoints,
            "e1",
            vec![
                endpoints("a", "127.0.0.1:9001"),
                endpoints("b", "[::1]:9002"),
            ],
        ),
        response(
            T::Listener,
            "l1",
            vec![
                resource(
                    "outbound",
                    PbKind::Listener(pb::Listener {
                        name: "outbound".into(),
                        address: "127.0.0.1:15001".into(),
                        protocol: pb::Protocol::Http as i32,
                        direction: pb::Direction::Outbound as i32,
                        route_table: "outbound".into(),
                        ..Default::default()
                    }),
                ),
                resource(
                    "tcp",
                    PbKind::Listener(pb::Listener {
                        name: "tcp".into(),
                        address: "127.0.0.1:15002".into(),
                        protocol: pb::Protocol::Tcp as i32,
                        cluster: "b".into(),
                        ..Default::default()
                    }),
                ),
            ],
        ),
        response(
            T::RouteTable,
            "r1",
            vec![resource(
                "outbound",
                PbKind::RouteTable(pb::RouteTable {
                    name: "outbound".into(),
                    virtual_hosts: vec![pb::VirtualHost {
                        name: "all".into(),
                        domains: vec!["*".into()],
                        routes: vec![route],
                    }],
                }),
            )],
        ),
    ]
}
