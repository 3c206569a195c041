//! What the control client tells the admin thread: whether the stream is up,
//! the version applied per type, ACK/NACK counts and the last NACK reason,
//! and the identity in force (never its key). Written only by the control
//! client's thread; read when scraped.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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
    versions: Mutex<[String; Kind::COUNT]>,
    last_nack: Mutex<[Option<String>; Kind::COUNT]>,
    acks: [AtomicU64; Kind::COUNT],
    nacks: [AtomicU64; Kind::COUNT],
    identity: Mutex<Option<IdentityInfo>>,
    /// Unix seconds the identity in force expires (0: none held).
    identity_not_after: AtomicI64,
    csr_sent: AtomicU64,
    renewals: AtomicU64,
}

/// What `/config_dump` shows of the identity in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityInfo {
    pub spiffe_id: String,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub trust_domain: String,
    pub trust_roots: usize,
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

    pub fn set_versions(&self, v: &[String; Kind::COUNT]) {
        lock(&self.versions).clone_from(v);
    }

    pub fn versions(&self) -> [String; Kind::COUNT] {
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

    pub fn set_identity(&self, info: Option<IdentityInfo>) {
        let not_after = info.as_ref().map_or(0, |i| i.not_after);
        *lock(&self.identity) = info;
        self.identity_not_after.store(not_after, Ordering::Release);
    }

    pub fn identity(&self) -> Option<IdentityInfo> {
        lock(&self.identity).clone()
    }

    /// An identity is held and has not expired at `now_unix`.
    pub fn identity_valid(&self, now_unix: i64) -> bool {
        let not_after = self.identity_not_after.load(Ordering::Acquire);
        not_after > 0 && now_unix < not_after
    }

    pub fn csr_sent(&self) {
        self.csr_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn renewed(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
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
        let identity = self.identity().map(|i| {
            serde_json::json!({
                "spiffe_id": i.spiffe_id,
                "serial": i.serial,
                "not_before": i.not_before,
                "not_after": i.not_after,
                "expired": !self.identity_valid(super::identity::unix_now()),
                "trust_domain": i.trust_domain,
                "trust_roots": i.trust_roots,
            })
        });
        serde_json::json!({
            "server": lock(&self.server).clone(),
            "node_id": lock(&self.node_id).clone(),
            "connected": self.is_connected(),
            "versions": v,
            "last_nack": nacks,
            "identity": identity,
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
        let not_after = self.identity_not_after.load(Ordering::Acquire);
        if not_after > 0 {
            out.push((
                "ringmesh_identity_expiry_timestamp_seconds",
                String::new(),
                not_after as f64,
            ));
        }
        out.push((
            "ringmesh_identity_renewals_total",
            String::new(),
            self.renewals.load(Ordering::Relaxed) as f64,
        ));
        out.push((
            "ringmesh_identity_csr_sent_total",
            String::new(),
            self.csr_sent.load(Ordering::Relaxed) as f64,
        ));
    }
}

/// A poisoned lock only means a panic elsewhere; the strings are still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
