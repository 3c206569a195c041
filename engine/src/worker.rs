//! One worker: a monoio event loop on its own thread that owns its listening
//! sockets, connections, upstream pools, load-balancer state and counters.
//! It follows config epochs: per request it compares one atomic epoch number,
//! and a 100 ms tick picks up listener changes and drains on shutdown.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::access_log::AccessLog;
use crate::authz::Decision;
use crate::bufpool::BufPool;
use crate::config::{Config, ListenerKind};
use crate::metrics::{label, Counter, Gauge, Registry};
use crate::notify::Notify;
use crate::router::Route;
use crate::shared::Shared;
use crate::upstream::{ClusterState, ClusterStats};

/// Size of the buffers a connection rents while moving bytes.
pub const BUF_SIZE: usize = 16 * 1024;
/// A transfer whose reads fill `BUF_SIZE` is a bulk stream: it switches to
/// buffers this large, a quarter of the operations per byte (L4 bulk on
/// io_uring: 0.98 -> 0.64 CPU-s/GB). Not pooled; freed when the transfer ends.
pub const BULK_BUF_SIZE: usize = 64 * 1024;
const TICK: Duration = Duration::from_millis(100);
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub enum TcpOutcome {
    Closed,
    IdleTimeout,
    Reset,
    ConnectFailed,
}

/// Counters of one listener in one worker.
pub struct ListenerStats {
    pub conns_total: Arc<Counter>,
    pub active: Arc<Gauge>,
    pub rx: Arc<Counter>,
    pub tx: Arc<Counter>,
    /// Connections closed by `limits.downstream_send_timeout`.
    pub send_timeouts: Arc<Counter>,
    accept_paused: Arc<Counter>,
    accept_errors: Arc<Counter>,
    tcp: Option<[Arc<Counter>; 4]>,
    /// Present for TLS and mTLS listeners.
    pub tls: Option<crate::tls::TlsStats>,
}

impl ListenerStats {
    fn new(reg: &Registry, name: &str, tcp: bool, tls: bool) -> Self {
        let l = format!("listener=\"{}\"", label(name));
        let outcome = |o: &str| {
            reg.counter(
                "ringmesh_tcp_connections_total",
                format!("{l},outcome=\"{o}\""),
            )
        };
        ListenerStats {
            conns_total: reg.counter("ringmesh_downstream_connections_total", l.clone()),
            active: reg.gauge("ringmesh_downstream_connections_active", l.clone()),
            rx: reg.counter("ringmesh_downstream_bytes_received_total", l.clone()),
            tx: reg.counter("ringmesh_downstream_bytes_sent_total", l.clone()),
            send_timeouts: reg.counter("ringmesh_downstream_send_timeouts_total", l.clone()),
            accept_paused: reg.counter("ringmesh_downstream_accept_paused_total", l.clone()),
            accept_errors: reg.counter("ringmesh_downstream_accept_errors_total", l.clone()),
            tls: tls.then(|| crate::tls::TlsStats {
                handshakes: reg.counter("ringmesh_tls_handshakes_total", l.clone()),
                failures: reg.counter("ringmesh_downstream_tls_failures_total", l.clone()),
            }),
            tcp: tcp.then(|| {
                [
                    outcome("closed"),
                    outcome("idle_timeout"),
                    outcome("reset"),
                    outcome("connect_failed"),
                ]
            }),
        }
    }

    pub fn tcp_outcome(&self, o: TcpOutcome) {
        if let Some(t) = &self.tcp {
            t[o as usize].inc();
        }
    }
}

/// What a worker derived from one config epoch. A request holds an
/// `Rc<EpochLocal>` from start to end, so it finishes on the epoch it began on.
pub struct EpochLocal {
    pub config: Arc<Config>,
    /// Aligned with `config.clusters`.
    pub clusters: Vec<Rc<ClusterState>>,
    /// Aligned with `config.listeners`.
    pub listeners: Vec<Rc<ListenerStats>>,
    by_addr: FxHashMap<SocketAddr, usize>,
    registry: Arc<Registry>,
    requests: RefCell<FxHashMap<RequestKey, Arc<Counter>>>,
    authz: RefCell<FxHashMap<AuthzKey, Arc<Counter>>>,
    grpc: RefCell<FxHashMap<GrpcKey, Arc<Counter>>>,
}

/// (listener index, route id, cluster index, grpc-status); `u32::MAX` for none.
type GrpcKey = (u32, u32, u32, u32);

/// (listener index, policy index or `u32::MAX` for "no ALLOW matched", allowed).
type AuthzKey = (u32, u32, bool);

/// (listener index, route id, cluster index, status class); `u32::MAX` for none.
type RequestKey = (u32, u32, u32, u8);
/// Cluster stats by (name, has mTLS).
type ClusterStatsMap = FxHashMap<(Arc<str>, bool), Rc<ClusterStats>>;
/// Listener stats by (name, is tcp, has tls): a listener that changes kind
/// gets fresh series.
type ListenerStatsMap = FxHashMap<(Arc<str>, bool, bool), Rc<ListenerStats>>;

impl EpochLocal {
    pub fn listener_at(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    /// Evaluates the listener's authorization policies and counts the
    /// decision: `ringmesh_authz_allowed_total{listener,policy}` for the
    /// ALLOW policy that matched, `ringmesh_authz_denied_total{listener,policy}`
    /// for the DENY policy that matched (`policy=""`: no ALLOW policy
    /// matched). Nothing is counted when the listener has no policy.
    pub fn authorize(&self, listener: usize, subject: &crate::authz::Subject) -> Decision {
        let policies = &self.config.listeners[listener].authz;
        let d = policies.evaluate(subject);
        let (policy, allowed) = match d {
            Decision::NoPolicy => return d,
            Decision::Allowed(i) => (i, true),
            Decision::Denied(i) => (i, false),
            Decision::NoAllowMatch => (u32::MAX, false),
        };
        let mut m = self.authz.borrow_mut();
        m.entry((listener as u32, policy, allowed))
            .or_insert_with(|| {
                let family = if allowed {
                    "ringmesh_authz_allowed_total"
                } else {
                    "ringmesh_authz_denied_total"
                };
                self.registry.counter(
                    family,
                    format!(
                        "listener=\"{}\",policy=\"{}\"",
                        label(&self.config.listeners[listener].name),
                        label(policies.name(policy))
                    ),
                )
            })
            .inc();
        d
    }

    /// Counts one answered gRPC call by its grpc-status:
    /// `ringmesh_grpc_responses_total{listener,route,cluster,grpc_status}`.
    pub fn count_grpc(
        &self,
        listener: usize,
        route: Option<&Route>,
        cluster: Option<usize>,
        status: u32,
    ) {
        let key = (
            listener as u32,
            route.map_or(u32::MAX, |r| r.id),
            cluster.map_or(u32::MAX, |c| c as u32),
            status,
        );
        let mut m = self.grpc.borrow_mut();
        m.entry(key)
            .or_insert_with(|| {
                let l = &self.config.listeners[listener].name;
                let r = route.map_or("", |r| &r.name);
                let c = cluster.map_or("", |c| &self.config.clusters[c].name);
                self.registry.counter(
                    "ringmesh_grpc_responses_total",
                    format!(
                        "listener=\"{}\",route=\"{}\",cluster=\"{}\",grpc_status=\"{status}\"",
                        label(l),
                        label(r),
                        label(c)
                    ),
                )
            })
            .inc();
    }

    /// Counts one answered request.
    pub fn count_request(
        &self,
        listener: usize,
        route: Option<&Route>,
        cluster: Option<usize>,
        status: u16,
    ) {
        let class = (status / 100).clamp(1, 5) as u8;
        let key = (
            listener as u32,
            route.map_or(u32::MAX, |r| r.id),
            cluster.map_or(u32::MAX, |c| c as u32),
            class,
        );
        let mut m = self.requests.borrow_mut();
        let c = m.entry(key).or_insert_with(|| {
            let l = &self.config.listeners[listener].name;
            let r = route.map_or("", |r| &r.name);
            let c = cluster.map_or("", |c| &self.config.clusters[c].name);
            self.registry.counter(
                "ringmesh_requests_total",
                format!(
                    "listener=\"{}\",route=\"{}\",cluster=\"{}\",status_class=\"{class}xx\"",
                    label(l),
                    label(r),
                    label(c)
                ),
            )
        });
        c.inc();
    }
}

pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub registry: Arc<Registry>,
    pub bufs: BufPool,
    /// Fired once when the process starts draining.
    pub drain: Notify,
    pub access_log: AccessLog,
    epoch: RefCell<Rc<EpochLocal>>,
    clusters: RefCell<FxHashMap<Arc<str>, Rc<ClusterState>>>,
    cluster_stats: RefCell<ClusterStatsMap>,
    listener_stats: RefCell<ListenerStatsMap>,
    /// Accept loops running, by address, with their stop signal.
    running: RefCell<FxHashMap<SocketAddr, Rc<Notify>>>,
    pub active_conns: Cell<usize>,
    /// Fired when a connection closes, for accept loops paused at the
    /// connection limit; a fresh one per pause.
    slot_freed: RefCell<Option<Rc<Notify>>>,
    /// `limits.max_connections_per_worker` when the config leaves it out,
    /// from the file-descriptor limit at start-up.
    auto_max_conns: usize,
    /// The worker runs on io_uring (else epoll).
    pub uring: bool,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>, access_log: AccessLog, uring: bool) -> Rc<Self> {
        let registry = shared.workers[id].registry.clone();
        let config = shared.config();
        let w = Rc::new(Worker {
            id,
            registry: registry.clone(),
            bufs: BufPool::new(BUF_SIZE, 64),
            drain: Notify::default(),
            access_log,
            epoch: RefCell::new(Rc::new(EpochLocal {
                config,
                clusters: Vec::new(),
                listeners: Vec::new(),
                by_addr: FxHashMap::default(),
                registry,
                requests: RefCell::default(),
                authz: RefCell::default(),
                grpc: RefCell::default(),
            })),
            clusters: RefCell::default(),
            cluster_stats: RefCell::default(),
            listener_stats: RefCell::default(),
            running: RefCell::default(),
            active_conns: Cell::new(0),
            slot_freed: RefCell::default(),
            auto_max_conns: crate::config::compile::auto_max_connections_per_worker(
                crate::runtime::nofile_limit(),
                shared.workers.len(),
            ),
            uring,
            shared,
        });
        // Force the first reconcile.
        w.build_epoch();
        w
    }

    /// The epoch to start a connection or request on.
    #[inline]
    pub fn current(self: &Rc<Self>) -> Rc<EpochLocal> {
        if self.shared.epoch() != self.epoch.borrow().config.epoch {
            self.reconcile();
        }
        self.epoch.borrow().clone()
    }

    fn build_epoch(&self) {
        let config = self.shared.config();
        let mut clusters = self.clusters.borrow_mut();
        let mut stats = self.cluster_stats.borrow_mut();
        let mut next = FxHashMap::default();
        let states: Vec<_> = config
            .clusters
            .iter()
            .map(|c| {
                let st = match clusters.get(&c.name) {
                    Some(old) if old.config == *c => old.clone(),
                    old => {
                        let tls = c.tls.is_some();
                        let s = stats
                            .entry((c.name.clone(), tls))
                            .or_insert_with(|| {
                                Rc::new(ClusterStats::new(&self.registry, &c.name, tls))
                            })
                            .clone();
                        Rc::new(ClusterState::new(c.clone(), old.map(|o| &**o), s))
                    }
                };
                next.insert(c.name.clone(), st.clone());
                st
            })
            .collect();
        *clusters = next;
        let mut ls = self.listener_stats.borrow_mut();
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let tcp = matches!(l.kind, ListenerKind::Tcp { .. });
                let tls = l.tls.is_some();
                ls.entry((l.name.clone(), tcp, tls))
                    .or_insert_with(|| {
                        Rc::new(ListenerStats::new(&self.registry, &l.name, tcp, tls))
                    })
                    .clone()
            })
            .collect();
        let by_addr = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (l.addr, i))
            .collect();
        *self.epoch.borrow_mut() = Rc::new(EpochLocal {
            config,
            clusters: states,
            listeners,
            by_addr,
            registry: self.registry.clone(),
            requests: RefCell::default(),
            authz: RefCell::default(),
            grpc: RefCell::default(),
        });
    }

    /// Moves this worker onto the newest epoch: cluster state carried over by
    /// name, listeners started and stopped to match.
    fn reconcile(self: &Rc<Self>) {
        self.build_epoch();
        if self.drain.is_fired() {
            return;
        }
        let epoch = self.epoch.borrow().clone();
        let mut running = self.running.borrow_mut();
        running.retain(|addr, stop| {
            let keep = epoch.by_addr.contains_key(addr);
            if !keep {
                stop.fire();
            }
            keep
        });
        for l in &epoch.config.listeners {
            // A socket waiting for this worker means the control thread bound
            // the address afresh (it was removed and re-added, perhaps within
            // one tick): serve the new socket, or its share of connections
            // would sit in a backlog nobody accepts from.
            let std_listener = {
                let mut sockets = self
                    .shared
                    .sockets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                sockets
                    .get_mut(&l.addr)
                    .and_then(|v| v.get_mut(self.id))
                    .and_then(Option::take)
            };
            let std_listener = match (std_listener, running.get(&l.addr)) {
                (None, Some(_)) => continue,
                (Some(fresh), Some(old)) => {
                    old.fire();
                    Some(fresh)
                }
                (fresh, None) => fresh,
            };
            let Some(std_listener) = std_listener else {
                crate::log::error(&format!(
                    "worker {}: no socket bound for listener {} ({})",
                    self.id, l.name, l.addr
                ));
                continue;
            };
            match monoio::net::TcpListener::from_std(std_listener) {
                Ok(listener) => {
                    let stop = Rc::new(Notify::default());
                    running.insert(l.addr, stop.clone());
                    monoio::spawn(self.clone().accept_loop(listener, l.addr, stop));
                }
                Err(e) => {
                    crate::log::error(&format!("worker {}: listener {}: {e}", self.id, l.addr))
                }
            }
        }
        *self.shared.workers[self.id]
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = running.keys().copied().collect();
    }

    /// The connection limit of the current epoch.
    pub fn max_connections(self: &Rc<Self>) -> usize {
        self.current()
            .config
            .limits
            .max_connections_per_worker
            .unwrap_or(self.auto_max_conns)
    }

    fn conn_opened(&self) {
        self.active_conns.set(self.active_conns.get() + 1);
    }

    fn conn_closed(&self) {
        self.active_conns.set(self.active_conns.get() - 1);
        if let Some(n) = self.slot_freed.borrow_mut().take() {
            n.fire();
        }
    }

    /// Waits until the worker is below its connection limit; false if the
    /// listener stopped or the worker drains meanwhile.
    async fn below_limit(self: &Rc<Self>, addr: SocketAddr, stop: &Notify) -> bool {
        if self.active_conns.get() < self.max_connections() {
            return true;
        }
        // New connections wait in the kernel's backlog (or are refused by
        // it when that is full) until one of ours closes.
        if let Some(stats) = self.listener_stats_at(addr) {
            stats.accept_paused.inc();
        }
        crate::log::warn_limited(&format!(
            "worker {}: {} connections open, the limit (limits.max_connections_per_worker): \
             not accepting on {addr} until one closes",
            self.id,
            self.active_conns.get()
        ));
        while self.active_conns.get() >= self.max_connections() {
            let freed = self
                .slot_freed
                .borrow_mut()
                .get_or_insert_with(Default::default)
                .clone();
            monoio::select! {
                _ = freed.fired() => {}
                // The limit may have been raised by a reload.
                _ = monoio::time::sleep(TICK) => {}
                _ = stop.fired() => return false,
                _ = self.drain.fired() => return false,
            }
        }
        true
    }

    fn listener_stats_at(self: &Rc<Self>, addr: SocketAddr) -> Option<Rc<ListenerStats>> {
        let epoch = self.current();
        epoch.listener_at(addr).map(|i| epoch.listeners[i].clone())
    }

    async fn accept_loop(
        self: Rc<Self>,
        listener: monoio::net::TcpListener,
        addr: SocketAddr,
        stop: Rc<Notify>,
    ) {
        loop {
            if !self.below_limit(addr, &stop).await {
                break;
            }
            let accepted = monoio::select! {
                r = listener.accept() => r,
                _ = stop.fired() => break,
                _ = self.drain.fired() => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    if let Some(stats) = self.listener_stats_at(addr) {
                        stats.accept_errors.inc();
                    }
                    // A connection reset while it waited in the backlog
                    // (ECONNABORTED) and the like: only that one is lost.
                    if !crate::upstream::local_shortage(&e) {
                        continue;
                    }
                    // EMFILE/ENFILE and friends: back off instead of spinning;
                    // the kernel keeps the connection in the backlog.
                    crate::log::warn_limited(&format!("worker {}: accept on {addr}: {e}", self.id));
                    monoio::select! {
                        _ = monoio::time::sleep(Duration::from_millis(50)) => {}
                        _ = stop.fired() => break,
                        _ = self.drain.fired() => break,
                    }
                    continue;
                }
            };
            let epoch = self.current();
            let Some(idx) = epoch.listener_at(addr) else {
                continue;
            };
            let w = self.clone();
            // Counted before the task first runs, so the limit holds even
            // when many connections are accepted in one go.
            w.conn_opened();
            let fut = async move {
                let stats = epoch.listeners[idx].clone();
                stats.conns_total.inc();
                stats.active.inc();
                let l = &epoch.config.listeners[idx];
                let conn = match &l.tls {
                    None => Some(crate::conn::Conn::Plain(stream)),
                    Some(t) => {
                        let timeout = epoch.config.limits.request_head_timeout;
                        let fut =
                            crate::tls::accept(t, stream, timeout, stats.tls.as_ref(), &l.name);
                        Box::pin(fut).await
                    }
                };
                match (conn, &epoch.config.listeners[idx].kind) {
                    (None, _) => {}
                    (Some(conn), ListenerKind::Http(_)) if conn.alpn_h2() => {
                        Box::pin(crate::http2::serve(
                            w.clone(),
                            epoch,
                            idx,
                            conn,
                            peer,
                            Vec::new(),
                        ))
                        .await
                    }
                    (Some(conn), ListenerKind::Http(_)) => {
                        crate::http1::serve(w.clone(), epoch, idx, conn, peer).await
                    }
                    (Some(conn), ListenerKind::Tcp { .. }) => {
                        Box::pin(crate::l4::serve(w.clone(), epoch, idx, conn)).await
                    }
                }
                w.conn_closed();
                stats.active.dec();
            };
            monoio::spawn(fut);
        }
    }

    /// The worker's life: follow epochs, sweep pools, and on shutdown stop
    /// accepting, let connections finish (up to the drain timeout), return.
    pub async fn run(self: Rc<Self>) {
        self.reconcile();
        let mut last_sweep = Instant::now();
        loop {
            monoio::time::sleep(TICK).await;
            if self.shared.is_draining() {
                break;
            }
            if self.shared.epoch() != self.epoch.borrow().config.epoch {
                self.reconcile();
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                for c in self.clusters.borrow().values() {
                    c.sweep();
                }
            }
        }
        self.drain.fire();
        for (_, stop) in self.running.borrow_mut().drain() {
            stop.fire();
        }
        self.shared.workers[self.id]
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let deadline = Instant::now() + self.epoch.borrow().config.limits.drain_timeout;
        while self.active_conns.get() > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.active_conns.get() > 0 {
            crate::log::warn(&format!(
                "worker {}: drain timeout with {} connections still open; closing them",
                self.id,
                self.active_conns.get()
            ));
        }
    }
}
