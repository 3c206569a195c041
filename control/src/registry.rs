//! The registry of proxy instances: who announced itself on a stream, who is
//! connected, who is within the grace period after its stream ended, and
//! per node the record of what was sent, ACKed and NACKed. Synchronous; the
//! caller (`state`) holds it under a mutex and owns the timers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::mesh::ServiceKey;
use crate::node::NodeInfo;
use crate::snapshot::TYPES;

/// Identifies one stream of a node; a newer stream of the same node id gets
/// a new one, so the old stream's end does not disconnect the node.
pub type ConnId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The version the proxy refused.
    pub version: String,
    pub message: String,
    /// Unix seconds.
    pub at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeRecord {
    pub subscribed: bool,
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    /// Unix seconds.
    pub sent_at: Option<u64>,
    pub acked_version: Option<String>,
    pub last_nack: Option<Nack>,
}

#[derive(Debug, Default)]
pub struct NodeRecords {
    /// Indexed like `snapshot::TYPES`.
    pub types: [TypeRecord; TYPES.len()],
    /// Why the node gets nothing (e.g. its service is not in the mesh).
    pub problem: Option<String>,
    /// The last certificate issued to the node: (serial hex, not_after).
    pub certificate: Option<(String, i64)>,
}

pub struct Entry {
    pub info: Arc<NodeInfo>,
    /// The live stream, if any.
    pub conn: Option<ConnId>,
    /// Unix seconds: start of the current (or last) stream.
    pub connected_since: u64,
    /// Unix seconds: end of the last stream while disconnected.
    pub disconnected_at: Option<u64>,
    /// Bumped on each disconnect; a removal timer acts only if it matches.
    removal_seq: u64,
    pub records: Arc<Mutex<NodeRecords>>,
    /// Ends the live stream when a newer one replaces it.
    kick: Option<oneshot::Sender<()>>,
}

/// What a new stream gets from `Registry::connect`.
pub struct Connected {
    pub conn: ConnId,
    /// Fires when a newer stream of the same node id replaces this one.
    pub kicked: oneshot::Receiver<()>,
    pub records: Arc<Mutex<NodeRecords>>,
    /// The registry generation that includes this node as announced.
    pub generation: u64,
    /// The node was not registered (or announced different details).
    pub changed: bool,
    /// A live stream of the same node was replaced.
    pub replaced: bool,
}

#[derive(Default)]
pub struct Registry {
    nodes: BTreeMap<String, Entry>,
    next_conn: ConnId,
    /// Bumped whenever the set of registered instances or their details
    /// change: what the world and `nodes.json` are built from.
    generation: u64,
}

/// Locks a mutex, ignoring poisoning: records stay usable if a holder
/// panicked, which is better than taking the whole server down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Registers a live stream of `info.id`, replacing any other.
    pub fn connect(&mut self, info: Arc<NodeInfo>, now: u64) -> Connected {
        self.next_conn += 1;
        let conn = self.next_conn;
        let (kick, kicked) = oneshot::channel();
        let id = info.id.clone();
        let mut changed = true;
        let mut replaced = false;
        match self.nodes.get_mut(&id) {
            Some(e) => {
                changed = *e.info != *info;
                if let Some(old) = e.kick.take() {
                    replaced = e.conn.is_some();
                    let _ = old.send(());
                }
                for t in &mut lock(&e.records).types {
                    t.subscribed = false;
                }
                // removal_seq carries over: a pending timer must not match
                // the next disconnect's number.
                e.info = info;
                e.conn = Some(conn);
                e.connected_since = now;
                e.disconnected_at = None;
                e.kick = Some(kick);
            }
            None => {
                self.nodes.insert(
                    id.clone(),
                    Entry {
                        info,
                        conn: Some(conn),
                        connected_since: now,
                        disconnected_at: None,
                        removal_seq: 0,
                        records: Arc::new(Mutex::new(NodeRecords::default())),
                        kick: Some(kick),
                    },
                );
            }
        }
        let records = match self.nodes.get(&id) {
            Some(e) => e.records.clone(),
            // Unreachable: inserted or updated just above.
            None => Arc::default(),
        };
        if changed {
            self.generation += 1;
        }
        Connected {
            conn,
            kicked,
            records,
            generation: self.generation,
            changed,
            replaced,
        }
    }

    /// The stream `conn` of `id` ended. Returns the sequence number a
    /// removal timer must present, or `None` if a newer stream owns the node.
    pub fn disconnect(&mut self, id: &str, conn: ConnId, now: u64) -> Option<u64> {
        let e = self.nodes.get_mut(id)?;
        if e.conn != Some(conn) {
            return None;
        }
        e.conn = None;
        e.kick = None;
        e.disconnected_at = Some(now);
        e.removal_seq += 1;
        Some(e.removal_seq)
    }

    /// Removes `id` if it is still disconnected since the disconnect that
    /// returned `seq`.
    pub fn remove_if_still_gone(&mut self, id: &str, seq: u64) -> bool {
        match self.nodes.get(id) {
            Some(e) if e.conn.is_none() && e.removal_seq == seq => {
                self.nodes.remove(id);
                self.generation += 1;
                true
            }
            _ => false,
        }
    }

    /// Adds a node loaded from `nodes.json` as disconnected; returns the
    /// sequence number for its removal timer (`None`: already registered).
    pub fn restore(&mut self, info: NodeInfo, now: u64) -> Option<u64> {
        if self.nodes.contains_key(&info.id) {
            return None;
        }
        self.nodes.insert(
            info.id.clone(),
            Entry {
                info: Arc::new(info),
                conn: None,
                connected_since: now,
                disconnected_at: Some(now),
                removal_seq: 1,
                records: Arc::new(Mutex::new(NodeRecords::default())),
                kick: None,
            },
        );
        self.generation += 1;
        Some(1)
    }

    /// Registered instances per announced service, sorted by node id.
    pub fn instances(&self) -> BTreeMap<ServiceKey, Vec<Arc<NodeInfo>>> {
        let mut out: BTreeMap<ServiceKey, Vec<Arc<NodeInfo>>> = BTreeMap::new();
        for e in self.nodes.values() {
            out.entry(e.info.service_key())
                .or_default()
                .push(e.info.clone());
        }
        out
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.nodes.values()
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.nodes.get(id)
    }

    pub fn connected(&self) -> usize {
        self.nodes.values().filter(|e| e.conn.is_some()).count()
    }

    /// Every registered node, for `nodes.json`.
    pub fn infos(&self) -> Vec<NodeInfo> {
        self.nodes.values().map(|e| (*e.info).clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ServiceName;

    fn info(id: &str, addr: &str) -> Arc<NodeInfo> {
        Arc::new(NodeInfo {
            id: id.into(),
            service: ServiceName {
                name: "b".into(),
                namespace: "default".into(),
            },
            address: addr.parse().unwrap(),
            inbound_port: 15006,
            outbound_port: 15001,
            app_port: None,
            zone: String::new(),
            labels: BTreeMap::new(),
        })
    }

    #[test]
    fn a_disconnected_node_stays_until_its_timer_and_a_reconnect_cancels_it() {
        let mut r = Registry::default();
        let c = r.connect(info("b-1", "10.0.0.1"), 100);
        assert!(c.changed && !c.replaced);
        let g = r.generation();
        let seq = r.disconnect("b-1", c.conn, 105).unwrap();
        assert_eq!(r.generation(), g, "a disconnect alone changes no endpoint");
        assert_eq!(r.instances().values().map(Vec::len).sum::<usize>(), 1);
        assert_eq!(r.get("b-1").unwrap().disconnected_at, Some(105));
        // Reconnect within the grace period: same details, no change.
        let c2 = r.connect(info("b-1", "10.0.0.1"), 106);
        assert!(!c2.changed);
        assert!(!r.remove_if_still_gone("b-1", seq));
        assert_eq!(r.connected(), 1);
        // Gone again: the timer of this disconnect removes it.
        let seq2 = r.disconnect("b-1", c2.conn, 110).unwrap();
        assert!(!r.remove_if_still_gone("b-1", seq));
        assert!(r.remove_if_still_gone("b-1", seq2));
        assert!(r.instances().is_empty());
        assert_eq!(r.generation(), g + 1);
    }

    #[test]
    fn a_second_stream_replaces_the_first() {
        let mut r = Registry::default();
        let mut c1 = r.connect(info("b-1", "10.0.0.1"), 100);
        let c2 = r.connect(info("b-1", "10.0.0.2"), 101);
        assert!(c2.replaced && c2.changed);
        assert!(c1.kicked.try_recv().is_ok());
        // The old stream's end does not disconnect the node.
        assert_eq!(r.disconnect("b-1", c1.conn, 102), None);
        assert_eq!(r.connected(), 1);
        assert!(Arc::ptr_eq(&c1.records, &c2.records));
        assert_eq!(r.get("b-1").unwrap().info.address.to_string(), "10.0.0.2");
    }

    #[test]
    fn restored_nodes_are_disconnected_until_they_return() {
        let mut r = Registry::default();
        let seq = r.restore((*info("b-1", "10.0.0.1")).clone(), 50).unwrap();
        assert_eq!(r.connected(), 0);
        assert_eq!(r.instances().values().map(Vec::len).sum::<usize>(), 1);
        let c = r.connect(info("b-1", "10.0.0.1"), 51);
        assert!(!c.changed);
        assert!(!r.remove_if_still_gone("b-1", seq));
    }
}
