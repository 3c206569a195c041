//! A proxy instance as announced in the first request of its stream, parsed
//! once at the border: everything past `NodeInfo::from_proto` works on typed,
//! bounded values (an IP address, port numbers, a service key).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ringmesh_proto::v1;
use serde::{Deserialize, Serialize};

use crate::mesh::ServiceKey;

/// The inbound listener of the service's port i is `address:(inbound + i)`.
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// The local HTTP outbound listener.
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;

/// Longest id, service, namespace, zone, label key or value accepted.
const MAX_NAME: usize = 253;
const MAX_LABELS: usize = 64;
const MAX_LABEL_VALUE: usize = 1024;
const MAX_PORTS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub service: ServiceName,
    /// The IP its inbound listeners bind and its peers connect to.
    pub address: IpAddr,
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// The local application's port for the service's first port; `None`:
    /// the declared service port.
    pub app_port: Option<u16>,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
}

/// The (name, namespace) a node announces, serialisable for `nodes.json`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceName {
    pub name: String,
    pub namespace: String,
}

impl ServiceName {
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

impl NodeInfo {
    /// Parses the announced node; the error is the message of the
    /// InvalidArgument status the stream is refused with.
    pub fn from_proto(node: &v1::Node) -> Result<Self, String> {
        let id = bounded("node.id", &node.id, true)?;
        let name = bounded("node.service", &node.service, true)?;
        let namespace = match bounded("node.namespace", &node.namespace, false)? {
            ns if ns.is_empty() => "default".to_owned(),
            ns => ns,
        };
        let address = if node.address.is_empty() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            node.address.parse::<IpAddr>().map_err(|_| {
                format!(
                    "node.address: {:?} is not an IP address",
                    clip(&node.address)
                )
            })?
        };
        if node.ports.len() > MAX_PORTS {
            return Err(format!("node.ports: more than {MAX_PORTS} ports"));
        }
        let mut inbound_port = DEFAULT_INBOUND_PORT;
        let mut outbound_port = DEFAULT_OUTBOUND_PORT;
        let mut app_port = None;
        for p in &node.ports {
            let port = u16::try_from(p.port)
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| {
                    format!(
                        "node.ports[{}]: port {} out of range",
                        clip(&p.name),
                        p.port
                    )
                })?;
            // Other names are ignored: newer proxies may announce more ports.
            match p.name.as_str() {
                "inbound" => inbound_port = port,
                "outbound" => outbound_port = port,
                "app" => app_port = Some(port),
                _ => {}
            }
        }
        let zone = bounded("node.zone", &node.zone, false)?;
        if node.labels.len() > MAX_LABELS {
            return Err(format!("node.labels: more than {MAX_LABELS} labels"));
        }
        let mut labels = BTreeMap::new();
        for (k, v) in &node.labels {
            let k = bounded("node.labels key", k, true)?;
            if v.len() > MAX_LABEL_VALUE {
                return Err(format!(
                    "node.labels[{k}]: value longer than {MAX_LABEL_VALUE} bytes"
                ));
            }
            labels.insert(k, v.clone());
        }
        Ok(Self {
            id,
            service: ServiceName { name, namespace },
            address,
            inbound_port,
            outbound_port,
            app_port,
            zone,
            labels,
        })
    }

    /// `name.namespace` of the node's service.
    pub fn service_key(&self) -> ServiceKey {
        self.service.key()
    }
}

fn bounded(field: &str, value: &str, required: bool) -> Result<String, String> {
    if required && value.is_empty() {
        return Err(format!("{field} is required"));
    }
    if value.len() > MAX_NAME {
        return Err(format!("{field}: longer than {MAX_NAME} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field}: control characters are not allowed"));
    }
    Ok(value.to_owned())
}

/// At most 64 bytes of a peer's string for an error message.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> v1::Node {
        v1::Node {
            id: "a-1".into(),
            service: "a".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_what_the_node_left_out() {
        let n = NodeInfo::from_proto(&node()).unwrap();
        assert_eq!(n.service.namespace, "default");
        assert_eq!(n.address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            (n.inbound_port, n.outbound_port, n.app_port),
            (15006, 15001, None)
        );
    }

    #[test]
    fn named_ports_are_read() {
        let mut p = node();
        p.address = "10.0.0.7".into();
        for (name, port) in [
            ("inbound", 20000),
            ("outbound", 20001),
            ("app", 8080),
            ("other", 9),
        ] {
            p.ports.push(v1::NamedPort {
                name: name.into(),
                port,
                protocol: 0,
            });
        }
        let n = NodeInfo::from_proto(&p).unwrap();
        assert_eq!(n.address.to_string(), "10.0.0.7");
        assert_eq!(
            (n.inbound_port, n.outbound_port, n.app_port),
            (20000, 20001, Some(8080))
        );
    }

    #[test]
    fn bad_nodes_are_refused_with_the_field_named() {
        let mut p = node();
        p.id.clear();
        assert_eq!(NodeInfo::from_proto(&p).unwrap_err(), "node.id is required");
        let mut p = node();
        p.service.clear();
        assert_eq!(
            NodeInfo::from_proto(&p).unwrap_err(),
            "node.service is required"
        );
        let mut p = node();
        p.address = "nope".into();
        assert!(NodeInfo::from_proto(&p)
            .unwrap_err()
            .starts_with("node.address"));
        let mut p = node();
        p.ports.push(v1::NamedPort {
            name: "inbound".into(),
            port: 70000,
            protocol: 0,
        });
        assert!(NodeInfo::from_proto(&p)
            .unwrap_err()
            .contains("out of range"));
        let mut p = node();
        p.id = "x".repeat(300);
        assert!(NodeInfo::from_proto(&p)
            .unwrap_err()
            .contains("longer than"));
    }
}
