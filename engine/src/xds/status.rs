//! What the control client tells the admin thread: whether the stream is up,
//! the version applied per type, ACK/NACK counts and the last NACK reason.
//! Written only by the control client's thread; read when scraped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::state::Kind;

#[derive(Debug, Default)]
pub struct Status {
    /// Control mode (`--control`); the rest is meaningless without it.
    pub enabled: AtomicBool,
    pub connected: AtomicBool,
    /// The control plane's URL and our node id.
    pub server: Mutex<String>,
    pub node_id: Mutex<String>,
    versions: Mutex<[String; 4]>,
    last_nack: Mutex<[Option<String>; 4]>,
    acks: [AtomicU64; 4],
    nacks: [AtomicU64; 4],
}

impl Status {
    pub fn enable(&self, server: &str, node_id: &str) {
        *lock(&self.server) = server.to_owned();
        *lock(&self.node_id) = node_id.to_owned();
        self.enabled.store(true, Ordering::Release);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
    }

    pub fn set_versions(&self, v: &[String; 4]) {
        lock(&self.versions).clone_from(v);
    }

    pub fn versions(&self) -> [String; 4] {
        lock(&self.versions).clone()
    }

    pub fn ack(&self, kind: Kind) {
        self.acks[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn nack(&self, kind: Kind, reason: &str) {
        self.nacks[kind.index()].fetch_add(1, Ordering::Relaxed);
        lock(&self.last_nack)[kind.index()] = Some(reason.to_owned());
    }

    pub fn acks(&self, kind: Kind) -> u64 {
        self.acks[kind.index()].load(Ordering::Relaxed)
    }

    pub fn nacks(&self, kind: Kind) -> u64 {
        self.nacks[kind.index()].load(Ordering::Relaxed)
    }

    pub fn last_nack(&self, kind: Kind) -> Option<String> {
        lock(&self.last_nack)[kind.index()].clone()
    }

    /// The `"control"` section of `/config_dump`.
    pub fn to_json(&self) -> serde_json::Value {
        let versions = self.versions();
        let mut v = serde_json::Map::new();
        let mut nacks = serde_json::Map::new();
        for k in Kind::ALL {
            v.insert(k.name().into(), versions[k.index()].clone().into());
            nacks.insert(k.name().into(), self.last_nack(k).into());
        }
        serde_json::json!({
            "server": lock(&self.server).clone(),
            "node_id": lock(&self.node_id).clone(),
            "connected": self.is_connected(),
            "versions": v,
            "last_nack": nacks,
        })
    }

    /// Process-wide series for `/stats/prometheus`.
    pub fn metrics(&self, out: &mut Vec<(&'static str, String, f64)>) {
        out.push((
            "ringmesh_control_connected",
            String::new(),
            if self.is_connected() { 1.0 } else { 0.0 },
        ));
        for k in Kind::ALL {
            for (result, n) in [("ack", self.acks(k)), ("nack", self.nacks(k))] {
                out.push((
                    "ringmesh_control_updates_total",
                    format!("type=\"{}\",result=\"{result}\"", k.name()),
                    n as f64,
                ));
            }
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the strings are still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
