//! The control plane's shared state: the registry, the mesh in force, the
//! current `World` published on a watch channel that every stream task
//! observes, the config error, metrics and persistence. Changes mark the
//! world dirty; one rebuilder task coalesces them (at most one rebuild per
//! `REBUILD_INTERVAL`), so a thousand proxies connecting at once cost a few
//! rebuilds, not a thousand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::ca::{Ca, Source as CaSource};
use crate::log::unix_now;
use crate::mesh::{Mesh, MeshError};
use crate::metrics::{Gauges, Metrics};
use crate::node::NodeInfo;
use crate::persist::Store;
use crate::registry::{lock, ConnId, Connected, Registry};
use crate::snapshot::{type_name, TYPES};
use crate::status::{CertificateJson, ConfigErrorJson, NackJson, NodeJson, StatusJson, TypeJson};
use crate::world::World;
use crate::{log_info, log_warn};

/// Minimum time between two world rebuilds; the first change after a quiet
/// period is rebuilt at once.
pub const REBUILD_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct Options {
    /// How long a node's endpoints outlive its stream.
    pub grace: Duration,
    /// How long nodes loaded from `nodes.json` wait for their proxy after a
    /// restart.
    pub restart_grace: Duration,
}

/// The CA in force and where it was loaded from (SIGHUP reloads it).
pub struct CaConfig {
    pub ca: Ca,
    pub source: CaSource,
    pub lifetime: Duration,
}

pub struct Shared {
    pub opts: Options,
    pub metrics: Metrics,
    registry: Mutex<Registry>,
    mesh: Mutex<Arc<Mesh>>,
    config_error: Mutex<Option<ConfigErrorJson>>,
    world_tx: watch::Sender<Arc<World>>,
    dirty: Notify,
    store: Option<Store>,
    shutdown_tx: watch::Sender<bool>,
    nonce_prefix: String,
    nonce_seq: AtomicU64,
    world_generation: AtomicU64,
    ca_tx: watch::Sender<Arc<Ca>>,
    ca_source: CaSource,
    cert_lifetime: Duration,
}

impl Shared {
    pub fn new(mesh: Mesh, opts: Options, store: Option<Store>, ca: CaConfig) -> Arc<Self> {
        let (ca_tx, _) = watch::channel(Arc::new(ca.ca));
        let mesh = Arc::new(mesh);
        let world = World::new(0, 0, mesh.clone(), BTreeMap::new(), None);
        let (world_tx, _) = watch::channel(Arc::new(world));
        let (shutdown_tx, _) = watch::channel(false);
        Arc::new(Self {
            opts,
            metrics: Metrics::default(),
            registry: Mutex::new(Registry::default()),
            mesh: Mutex::new(mesh),
            config_error: Mutex::new(None),
            world_tx,
            dirty: Notify::new(),
            store,
            shutdown_tx,
            nonce_prefix: format!("{:08x}", fastrand::u32(..)),
            nonce_seq: AtomicU64::new(0),
            world_generation: AtomicU64::new(0),
            ca_tx,
            ca_source: ca.source,
            cert_lifetime: ca.lifetime,
        })
    }

    /// Registers nodes saved before a restart as disconnected; each is
    /// removed after max(grace, restart grace) unless its proxy returns.
    pub fn restore(self: &Arc<Self>, nodes: Vec<NodeInfo>) {
        let wait = self.opts.grace.max(self.opts.restart_grace);
        let now = unix_now();
        let mut restored = 0;
        for n in nodes {
            let id = n.id.clone();
            let seq = lock(&self.registry).restore(n, now);
            if let Some(seq) = seq {
                restored += 1;
                self.schedule_removal(id, seq, wait);
            }
        }
        if restored > 0 {
            log_info!("restored {restored} nodes from nodes.json; each is removed after {wait:?} unless its proxy reconnects");
            self.rebuild();
        }
    }

    pub fn world(&self) -> watch::Receiver<Arc<World>> {
        self.world_tx.subscribe()
    }

    pub fn current_world(&self) -> Arc<World> {
        self.world_tx.borrow().clone()
    }

    /// The CA in force; streams watch it for trust bundle changes.
    pub fn ca(&self) -> watch::Receiver<Arc<Ca>> {
        self.ca_tx.subscribe()
    }

    /// Loads the CA files again (SIGHUP). A failure keeps the CA in force.
    /// Every stream compares its SECRET set with the new CA's and pushes it
    /// when the trust bundle changed.
    pub async fn reload_ca(&self) {
        let source = self.ca_source.clone();
        let lifetime = self.cert_lifetime;
        let td = lock(&self.mesh).trust_domain.clone();
        let loaded = tokio::task::spawn_blocking(move || Ca::load(&source, &td, lifetime)).await;
        let ca = match loaded {
            Ok(Ok(ca)) => ca,
            Ok(Err(e)) => {
                self.metrics.ca_reloaded(false);
                log_warn!("CA reload failed: {e}; keeping the CA in force");
                return;
            }
            Err(e) => {
                self.metrics.ca_reloaded(false);
                log_warn!("CA reload failed: {e}; keeping the CA in force");
                return;
            }
        };
        self.metrics.ca_reloaded(true);
        let old = self.ca_tx.borrow().clone();
        if old.roots != ca.roots {
            log_info!(
                "CA reloaded from {}: signing with {}; the trust bundle now has {} roots (pushed to every proxy)",
                self.ca_source,
                ca.subject,
                ca.roots.len()
            );
        } else {
            log_info!(
                "CA reloaded from {}: signing with {}; trust bundle unchanged",
                self.ca_source,
                ca.subject
            );
        }
        self.ca_tx.send_replace(Arc::new(ca));
    }

    pub fn mesh_version(&self) -> String {
        lock(&self.mesh).version.clone()
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }

    /// Ends every stream (their proxies keep their config and reconnect).
    pub fn shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    /// A nonce unique within this process and, with high probability,
    /// across restarts.
    pub fn next_nonce(&self) -> String {
        let n = self.nonce_seq.fetch_add(1, Relaxed) + 1;
        format!("{}-{n}", self.nonce_prefix)
    }

    pub fn connect(self: &Arc<Self>, info: Arc<NodeInfo>) -> Connected {
        let c = lock(&self.registry).connect(info.clone(), unix_now());
        if c.replaced {
            log_info!("node {}: a new stream replaces the old one", info.id);
        }
        if c.changed {
            self.mark_dirty();
        }
        c
    }

    pub fn disconnect(self: &Arc<Self>, id: &str, conn: ConnId) {
        let seq = lock(&self.registry).disconnect(id, conn, unix_now());
        if let Some(seq) = seq {
            if !self.is_shutting_down() {
                log_info!(
                    "node {id}: stream ended; its endpoints stay for {:?}",
                    self.opts.grace
                );
            }
            self.schedule_removal(id.to_owned(), seq, self.opts.grace);
        }
    }

    fn schedule_removal(self: &Arc<Self>, id: String, seq: u64, after: Duration) {
        let shared = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.is_shutting_down() {
                return;
            }
            let removed = lock(&shared.registry).remove_if_still_gone(&id, seq);
            if removed {
                log_info!("node {id}: removed after its grace period");
                shared.mark_dirty();
            }
        });
    }

    /// A new valid mesh.
    pub fn set_mesh(&self, mesh: Mesh) {
        let old = std::mem::replace(&mut *lock(&self.mesh), Arc::new(mesh));
        *lock(&self.config_error) = None;
        self.metrics.reloaded(true);
        let new = self.mesh_version();
        if old.version != new {
            log_info!("config loaded: version {new}");
            self.mark_dirty();
        }
    }

    /// A change of the config directory that does not validate.
    pub fn reject_config(&self, e: &MeshError) {
        log_warn!(
            "config rejected: {e}; keeping version {}",
            self.mesh_version()
        );
        *lock(&self.config_error) = Some(ConfigErrorJson {
            file: e.file.display().to_string(),
            line: e.line,
            field: e.field.clone(),
            message: e.message.clone(),
        });
        self.metrics.reloaded(false);
    }

    pub fn mark_dirty(&self) {
        self.dirty.notify_one();
    }

    /// Publishes a world from the current mesh and registry.
    pub fn rebuild(&self) -> u64 {
        let (registry_generation, instances) = {
            let r = lock(&self.registry);
            (r.generation(), r.instances())
        };
        let mesh = lock(&self.mesh).clone();
        let generation = self.world_generation.fetch_add(1, Relaxed) + 1;
        let prev = self.world_tx.borrow().clone();
        let world = World::new(
            generation,
            registry_generation,
            mesh,
            instances,
            Some(&prev),
        );
        self.world_tx.send_replace(Arc::new(world));
        registry_generation
    }

    /// Rebuilds the world when marked dirty, and saves `nodes.json` when the
    /// set of nodes changed. Runs until shutdown.
    pub async fn run_rebuilder(self: Arc<Self>) {
        let mut saved_generation = None;
        let mut last: Option<Instant> = None;
        let mut shutdown = self.shutdown_signal();
        loop {
            tokio::select! {
                () = self.dirty.notified() => {}
                _ = shutdown.changed() => return,
            }
            if let Some(since) = last.map(|l| l.elapsed()) {
                if since < REBUILD_INTERVAL {
                    tokio::time::sleep(REBUILD_INTERVAL - since).await;
                }
            }
            last = Some(Instant::now());
            let generation = self.rebuild();
            if saved_generation != Some(generation) {
                self.save().await;
                saved_generation = Some(generation);
            }
        }
    }

    /// Writes `nodes.json` (off the async threads).
    pub async fn save(&self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let nodes = lock(&self.registry).infos();
        let result = tokio::task::spawn_blocking(move || store.save(nodes, unix_now())).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log_warn!("cannot save nodes.json: {e}"),
            Err(e) => log_warn!("cannot save nodes.json: {e}"),
        }
    }

    pub fn gauges(&self) -> Gauges {
        let connected_proxies = lock(&self.registry).connected();
        let world = self.current_world();
        let endpoints = world
            .mesh
            .services
            .iter()
            .map(|s| (s.key.to_string(), world.endpoint_count(s)))
            .collect();
        Gauges {
            connected_proxies,
            endpoints,
            trust_bundle_roots: self.ca_tx.borrow().roots.len(),
        }
    }

    pub fn status(&self) -> StatusJson {
        let mesh_version = self.mesh_version();
        let config_error = lock(&self.config_error).clone();
        let registry = lock(&self.registry);
        let nodes = registry
            .entries()
            .map(|e| {
                let records = lock(&e.records);
                let mut types = BTreeMap::new();
                for (i, t) in TYPES.iter().enumerate() {
                    let r = &records.types[i];
                    if i >= 4 && !r.subscribed && r.sent_version.is_none() {
                        continue;
                    }
                    types.insert(
                        type_name(*t).to_string(),
                        TypeJson {
                            sent_version: r.sent_version.clone(),
                            acked_version: r.acked_version.clone(),
                            last_nack: r.last_nack.as_ref().map(|n| NackJson {
                                version: n.version.clone(),
                                message: n.message.clone(),
                                at: n.at,
                            }),
                        },
                    );
                }
                NodeJson {
                    id: e.info.id.clone(),
                    service: e.info.service.name.clone(),
                    namespace: e.info.service.namespace.clone(),
                    address: e.info.address.to_string(),
                    connected: e.conn.is_some(),
                    connected_since: e.connected_since,
                    disconnected_at: e.disconnected_at,
                    problem: records.problem.clone(),
                    types,
                    certificate: records.certificate.as_ref().map(|(serial, not_after)| {
                        CertificateJson {
                            serial: serial.clone(),
                            not_after: *not_after,
                        }
                    }),
                }
            })
            .collect();
        StatusJson {
            mesh_version,
            config_error,
            nodes,
        }
    }
}
