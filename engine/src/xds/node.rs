//! Who this proxy says it is: the command-line flags of control mode checked
//! and turned into the `Node` of the first request on every stream.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ringmesh_proto::v1 as pb;

/// The node flags as given (`--node-id`, `--service`, ...).
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    pub service: String,
    pub namespace: String,
    pub address: IpAddr,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub app_port: Option<u16>,
    /// `k=v` each.
    pub labels: Vec<String>,
    pub zone: Option<String>,
}

impl NodeSpec {
    /// The announced node, or what is wrong with the flags.
    pub fn to_node(&self) -> Result<pb::Node, String> {
        for (flag, v) in [
            ("--node-id", &self.id),
            ("--service", &self.service),
            ("--namespace", &self.namespace),
        ] {
            if v.trim().is_empty() {
                return Err(format!("{flag} must not be empty"));
            }
            if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("{flag} {v:?} must not contain spaces"));
            }
        }
        let mut ports = Vec::new();
        for (name, port) in [
            ("inbound", Some(self.inbound_port)),
            ("outbound", Some(self.outbound_port)),
            ("app", self.app_port),
        ] {
            let Some(port) = port else { continue };
            if port == 0 {
                return Err(format!("--{name}-port must not be 0"));
            }
            ports.push(pb::NamedPort {
                name: name.into(),
                port: u32::from(port),
                protocol: pb::Protocol::Unspecified as i32,
            });
        }
        let mut labels = std::collections::HashMap::new();
        let mut seen = BTreeSet::new();
        for l in &self.labels {
            let Some((k, v)) = l.split_once('=') else {
                return Err(format!("--label {l:?} is not key=value"));
            };
            if k.is_empty() {
                return Err(format!("--label {l:?} has an empty key"));
            }
            if !seen.insert(k) {
                return Err(format!("--label {k:?} is given twice"));
            }
            labels.insert(k.to_owned(), v.to_owned());
        }
        Ok(pb::Node {
            id: self.id.clone(),
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            address: self.address.to_string(),
            ports,
            zone: self.zone.clone().unwrap_or_default(),
            labels,
        })
    }
}

/// `http://host:port` (an optional trailing `/`), returned without the slash.
pub fn check_url(url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("--control {url:?}: {why} (expected http://HOST:PORT)");
    if url.starts_with("https://") {
        return Err(bad("TLS to the control plane is not supported yet"));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(bad("not an http:// URL"));
    };
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains(['/', '?', '#', '@']) || hostport.is_empty() {
        return Err(bad("only a host and a port may follow http://"));
    }
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return Err(bad("the port is missing"));
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if !host_ok {
        return Err(bad("the host is not a name or an IP address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("the port is not a number between 1 and 65535")),
    }
    // tonic wants a URI it can parse; check here so the thread never fails on it.
    let url = format!("http://{hostport}");
    tonic::transport::Endpoint::from_shared(url.clone()).map_err(|e| bad(&e.to_string()))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            id: "web-1".into(),
            service: "web".into(),
            namespace: "default".into(),
            address: "10.0.0.7".parse().unwrap(),
            inbound_port: 15006,
            outbound_port: 15001,
            app_port: Some(8080),
            labels: vec!["version=v2".into(), "tier=front=end".into()],
            zone: Some("z1".into()),
        }
    }

    #[test]
    fn node_carries_every_flag() {
        let n = spec().to_node().unwrap();
        assert_eq!(n.id, "web-1");
        assert_eq!(n.service, "web");
        assert_eq!(n.namespace, "default");
        assert_eq!(n.address, "10.0.0.7");
        assert_eq!(n.zone, "z1");
        assert_eq!(n.labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(n.labels.get("tier").map(String::as_str), Some("front=end"));
        let ports: Vec<(&str, u32)> = n.ports.iter().map(|p| (p.name.as_str(), p.port)).collect();
        assert_eq!(
            ports,
            [("inbound", 15006), ("outbound", 15001), ("app", 8080)]
        );
        assert!(n.ports.iter().all(|p| p.protocol == 0));
    }

    #[test]
    fn app_port_is_optional() {
        let mut s = spec();
        s.app_port = None;
        assert_eq!(s.to_node().unwrap().ports.len(), 2);
    }

    #[test]
    fn bad_flags_are_named() {
        let mut s = spec();
        s.id = " ".into();
        assert_eq!(s.to_node().unwrap_err(), "--node-id must not be empty");
        let mut s = spec();
        s.service = String::new();
        assert_eq!(s.to_node().unwrap_err(), "--service must not be empty");
        let mut s = spec();
        s.labels = vec!["novalue".into()];
        assert!(s.to_node().unwrap_err().contains("key=value"));
        let mut s = spec();
        s.labels = vec!["a=1".into(), "a=2".into()];
        assert!(s.to_node().unwrap_err().contains("twice"));
        let mut s = spec();
        s.inbound_port = 0;
        assert!(s.to_node().unwrap_err().contains("--inbound-port"));
    }

    #[test]
    fn urls() {
        assert_eq!(
            check_url("http://127.0.0.1:15012").unwrap(),
            "http://127.0.0.1:15012"
        );
        assert_eq!(
            check_url("http://cp.mesh:15012/").unwrap(),
            "http://cp.mesh:15012"
        );
        assert!(check_url("http://[::1]:15012").is_ok());
        for bad in [
            "127.0.0.1:15012",
            "https://cp:15012",
            "http://cp",
            "http://cp:0",
            "http://cp:99999",
            "http://cp:15012/v1",
            "http://:15012",
            "http://user@cp:1",
            "grpc://cp:1",
        ] {
            assert!(check_url(bad).is_err(), "{bad} accepted");
        }
    }
}
