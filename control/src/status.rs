//! The operator's view: the `/status` JSON document (served by `admin`,
//! read back by `ringmesh-control status`) and its rendering as a table.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusJson {
    /// The content hash of the config directory in force.
    pub mesh_version: String,
    /// Set while the directory's last change is rejected.
    pub config_error: Option<ConfigErrorJson>,
    pub nodes: Vec<NodeJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigErrorJson {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigErrorJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeJson {
    pub id: String,
    pub service: String,
    pub namespace: String,
    pub address: String,
    pub connected: bool,
    /// Unix seconds.
    pub connected_since: u64,
    /// Unix seconds; set while in the grace period.
    pub disconnected_at: Option<u64>,
    /// Why the node gets no resources, e.g. an undeclared service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// `cluster`, `endpoints`, `listener`, `route_table` (and `secret`,
    /// `authorization_policy` when subscribed).
    pub types: BTreeMap<String, TypeJson>,
    /// The last certificate issued to the node (not kept across restarts).
    #[serde(default)]
    pub certificate: Option<CertificateJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateJson {
    /// Hex.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeJson {
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub last_nack: Option<NackJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NackJson {
    pub version: String,
    pub message: String,
    pub at: u64,
}

const COLUMNS: [(&str, &str); 4] = [
    ("cluster", "CLUSTER"),
    ("endpoints", "ENDPOINTS"),
    ("listener", "LISTENER"),
    ("route_table", "ROUTES"),
];

/// The human table `ringmesh-control status` prints.
pub fn render_table(s: &StatusJson, now: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mesh version: {}", s.mesh_version);
    match &s.config_error {
        None => out.push_str("config: ok\n"),
        Some(e) => {
            let _ = writeln!(
                out,
                "config: REJECTED: {e} (still serving version {})",
                s.mesh_version
            );
        }
    }
    out.push('\n');
    if s.nodes.is_empty() {
        out.push_str("no nodes registered\n");
        return out;
    }
    let mut rows: Vec<Vec<String>> = vec![[
        "NODE",
        "SERVICE",
        "ADDRESS",
        "STATE",
        "SINCE",
        "CLUSTER",
        "ENDPOINTS",
        "LISTENER",
        "ROUTES",
        "CERT EXPIRES",
        "LAST NACK",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect()];
    let mut pending = false;
    for n in &s.nodes {
        let (state, since) = match (n.connected, n.disconnected_at) {
            (true, _) | (false, None) => ("connected", n.connected_since),
            (false, Some(at)) => ("grace", at),
        };
        let mut row = vec![
            n.id.clone(),
            format!("{}.{}", n.service, n.namespace),
            n.address.clone(),
            state.to_string(),
            age(now.saturating_sub(since)),
        ];
        for (key, _) in COLUMNS {
            let cell = match n.types.get(key) {
                None => "-".to_string(),
                Some(t) => {
                    let acked = t.acked_version.as_deref().map_or("-", short);
                    if t.sent_version.is_some() && t.sent_version != t.acked_version {
                        pending = true;
                        format!("{acked}*")
                    } else {
                        acked.to_string()
                    }
                }
            };
            row.push(cell);
        }
        row.push(match &n.certificate {
            None => "-".to_string(),
            Some(c) => match u64::try_from(c.not_after) {
                Ok(at) if at > now => format!("in {}", age(at - now)),
                _ => "EXPIRED".to_string(),
            },
        });
        let last = n
            .types
            .iter()
            .filter_map(|(k, t)| t.last_nack.as_ref().map(|nk| (k, nk)))
            .max_by_key(|(_, nk)| nk.at);
        row.push(match last {
            None => "-".to_string(),
            Some((k, nk)) => format!(
                "{k} {} ({} ago): {}",
                short(&nk.version),
                age(now.saturating_sub(nk.at)),
                nk.message
            ),
        });
        rows.push(row);
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if pending {
        out.push_str("\n* sent, not yet ACKed (the column shows the ACKed version)\n");
    }
    let problems: Vec<&NodeJson> = s.nodes.iter().filter(|n| n.problem.is_some()).collect();
    if !problems.is_empty() {
        out.push('\n');
        for n in problems {
            let _ = writeln!(
                out,
                "{}: {}",
                n.id,
                n.problem.as_deref().unwrap_or_default()
            );
        }
    }
    out
}

/// The first 8 hex digits of a version.
fn short(v: &str) -> &str {
    v.get(..8).unwrap_or(v)
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sent: &str, acked: &str) -> TypeJson {
        TypeJson {
            sent_version: Some(sent.into()),
            acked_version: Some(acked.into()),
            last_nack: None,
        }
    }

    #[test]
    fn the_table_names_nodes_versions_and_errors() {
        let mut types = BTreeMap::new();
        types.insert(
            "cluster".to_string(),
            t("0123456789abcdef", "0123456789abcdef"),
        );
        types.insert(
            "endpoints".to_string(),
            t("1111111122222222", "1111111122222222"),
        );
        types.insert(
            "listener".to_string(),
            t("3333333344444444", "3333333344444444"),
        );
        let mut rt = t("5555555566666666", "7777777788888888");
        rt.last_nack = Some(NackJson {
            version: "5555555566666666".into(),
            message: "route outbound: unknown cluster x".into(),
            at: 990,
        });
        types.insert("route_table".to_string(), rt);
        let s = StatusJson {
            mesh_version: "abc".into(),
            config_error: Some(ConfigErrorJson {
                file: "/etc/mesh/b.yaml".into(),
                line: Some(7),
                field: "traffic[0].routes[0].split[1].weight".into(),
                message: "weights must sum to more than 0".into(),
            }),
            nodes: vec![NodeJson {
                id: "a-1".into(),
                service: "a".into(),
                namespace: "default".into(),
                address: "10.0.0.1".into(),
                connected: false,
                connected_since: 900,
                disconnected_at: Some(995),
                problem: None,
                types,
                certificate: Some(CertificateJson {
                    serial: "0a".into(),
                    not_after: 1000 + 3 * 3600,
                }),
            }],
        };
        let text = render_table(&s, 1000);
        assert!(text.contains(
            "config: REJECTED: /etc/mesh/b.yaml:7: traffic[0].routes[0].split[1].weight: weights must sum to more than 0 (still serving version abc)"
        ), "{text}");
        let row = text.lines().find(|l| l.starts_with("a-1")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cells[..11],
            [
                "a-1",
                "a.default",
                "10.0.0.1",
                "grace",
                "5s",
                "01234567",
                "11111111",
                "33333333",
                "77777777*",
                "in",
                "3h"
            ]
        );
        assert!(row.ends_with("route_table 55555555 (10s ago): route outbound: unknown cluster x"));
        assert!(text.contains("* sent, not yet ACKed"));
    }
}
