//! Helpers shared by the fuzz targets (`fuzz_targets/`) and the seed writer
//! (`examples/make_seeds.rs`): the framing of multi-message inputs, the
//! control-plane responses the `xds_decode` target starts from, the split
//! points of the HTTP/1 head targets and the YAML error check of the config
//! targets.

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

/// Split points worth trying in an HTTP/1 head ending at `end`: around its
/// end and at every line end.
pub fn split_points(data: &[u8], end: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (1..=4).filter_map(|d| end.checked_sub(d)).collect();
    for (i, &b) in data[..end].iter().enumerate() {
        if b == b'\r' || b == b'\n' {
            points.extend([i, i + 1]);
        }
        if points.len() > 64 {
            break;
        }
    }
    points.retain(|&k| k < end);
    points.sort_unstable();
    points.dedup();
    points
}

/// A refused YAML `text` (proxy config or control-plane file): the error
/// says something and names a field or a line inside the text.
pub fn check_yaml_error(e: &ringmesh_yaml::ConfigError, text: &str) {
    assert!(!e.message.is_empty(), "{e:?}");
    // A stream of several documents is the whole file's fault; the loaders
    // give the line of the second document when yaml-rust2 sees one
    // (libyaml, under serde_yaml, also splits on some indentation mistakes
    // that yaml-rust2 calls syntax errors).
    assert!(
        !e.field.is_empty() || e.line.is_some() || e.message.contains("more than one document"),
        "an error names neither a field nor a line: {e}"
    );
    if let Some(line) = e.line {
        let lines = yaml_lines(text);
        assert!(
            line >= 1 && line <= lines,
            "line {line} of a {lines}-line text: {e}"
        );
    }
}

/// Lines as libyaml counts them (CR, LF, CRLF, NEL, LS and PS each end
/// one), plus the one after the last, where it puts an error at the end of
/// the input.
fn yaml_lines(text: &str) -> usize {
    let mut lines = 2;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => lines += 1,
            _ => {}
        }
    }
    lines
}
