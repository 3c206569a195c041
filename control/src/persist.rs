//! `nodes.json` in the data directory: the registered nodes, so that a
//! restarted control plane keeps every instance as an endpoint (disconnected,
//! removed only if it does not come back) instead of pushing empty endpoint
//! sets to proxies that reconnect before their peers do. Written atomically
//! (temporary file, fsync, rename), readable by the owner only.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::node::NodeInfo;

const FILE: &str = "nodes.json";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    saved_at: u64,
    nodes: Vec<NodeInfo>,
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Uses `dir`, creating it (mode 0700) if missing.
    pub fn open(dir: &Path) -> io::Result<Self> {
        if !dir.is_dir() {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        // Fail now, not at the first save, if we cannot write there.
        let probe = dir.join(".write-probe");
        File::create(&probe)?;
        let _ = fs::remove_file(&probe);
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved nodes; none if the file does not exist.
    pub fn load(&self) -> Result<Vec<NodeInfo>, String> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let disk: OnDisk =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if disk.format != FORMAT {
            return Err(format!(
                "{}: format {} is not {FORMAT}",
                path.display(),
                disk.format
            ));
        }
        Ok(disk.nodes)
    }

    pub fn save(&self, nodes: Vec<NodeInfo>, now: u64) -> io::Result<()> {
        let body = serde_json::to_vec_pretty(&OnDisk {
            format: FORMAT,
            saved_at: now,
            nodes,
        })
        .map_err(io::Error::other)?;
        let tmp = self.dir.join(format!(".{FILE}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.path())?;
        // The rename itself must survive a crash.
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::node::ServiceName;

    #[test]
    fn saves_and_loads_nodes_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let store = Store::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(store.load().unwrap(), vec![]);
        let node = NodeInfo {
            id: "b-1".into(),
            service: ServiceName {
                name: "b".into(),
                namespace: "default".into(),
            },
            address: "10.0.0.2".parse().unwrap(),
            inbound_port: 15006,
            outbound_port: 15001,
            app_port: Some(8080),
            zone: "z1".into(),
            labels: [("version".to_string(), "v2".to_string())].into(),
        };
        store.save(vec![node.clone()], 7).unwrap();
        let meta = fs::metadata(store.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(store.load().unwrap(), vec![node]);
        fs::write(store.path(), "{").unwrap();
        assert!(store.load().unwrap_err().contains("nodes.json"));
    }
}
