//! The ringmesh control-plane API, package `ringmesh.v1`: the aggregated
//! discovery stream between `ringmesh-control` and every `ringmesh-proxy`, and
//! the resources it carries. Generated from `ringmesh/v1/ringmesh.proto`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ringmesh.v1");
}

/// `ringmesh.testing.v1`: the Echo service used by tests and benchmarks.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod testing {
    tonic::include_proto!("ringmesh.testing.v1");
}

/// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ringmesh_v1_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::v1::*;

    #[test]
    fn a_response_round_trips_through_the_wire_format() {
        let route = Route {
            name: "canary".into(),
            r#match: Some(RouteMatch {
                path: Some(route_match::Path::Prefix("/api".into())),
                methods: vec!["GET".into()],
                headers: vec![HeaderMatch {
                    name: "x-canary".into(),
                    r#match: Some(header_match::Match::Exact("1".into())),
                }],
            }),
            action: Some(route::Action::Forward(ForwardAction {
                clusters: vec![
                    WeightedCluster {
                        cluster: "web-v1".into(),
                        weight: 90,
                    },
                    WeightedCluster {
                        cluster: "web-v2".into(),
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
        let resp = DiscoveryResponse {
            r#type: ResourceType::RouteTable as i32,
            version_info: "7".into(),
            nonce: "n-7".into(),
            resources: vec![Resource {
                name: "web".into(),
                kind: Some(resource::Kind::RouteTable(RouteTable {
                    name: "web".into(),
                    virtual_hosts: vec![VirtualHost {
                        name: "web".into(),
                        domains: vec!["*".into()],
                        routes: vec![route],
                    }],
                })),
            }],
        };
        let bytes = resp.encode_to_vec();
        let back = DiscoveryResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, resp);
        assert_eq!(back.r#type(), ResourceType::RouteTable);
    }

    #[test]
    fn a_nack_carries_its_reason() {
        let nack = DiscoveryRequest {
            node: None,
            r#type: ResourceType::Cluster as i32,
            version_info: "3".into(),
            response_nonce: "n-4".into(),
            error_detail: Some(Status {
                code: 3,
                message: "route web/0: unknown cluster \"x\"".into(),
            }),
            csr: None,
        };
        let back = DiscoveryRequest::decode(nack.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            back.error_detail.unwrap().message,
            "route web/0: unknown cluster \"x\""
        );
    }

    #[test]
    fn descriptor_set_names_the_service_for_reflection() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let file = fds
            .file
            .iter()
            .find(|f| f.package() == "ringmesh.v1")
            .unwrap();
        assert_eq!(file.service[0].name(), "AggregatedDiscovery");
        assert_eq!(file.service[0].method[0].name(), "StreamResources");
    }
}
