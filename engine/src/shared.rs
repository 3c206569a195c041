//! State shared by the control thread, the admin thread and the workers: the
//! current config epoch (one lock-free pointer swap to publish), the listening
//! sockets bound for each worker, and process-wide flags.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use crate::config::Config;
use crate::metrics::Registry;

pub struct Shared {
    config: ArcSwap<Config>,
    /// Mirrors `config.epoch`: a worker compares it per request (one relaxed
    /// load) and only touches the `ArcSwap` when it changed.
    epoch: AtomicU64,
    pub draining: AtomicBool,
    pub ready: AtomicBool,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// The control-plane stream, in control mode (`--control`).
    pub xds: crate::xds::Status,
    /// One listening socket per worker per listener address, bound by the
    /// control thread; a worker takes its own when it starts that listener.
    pub sockets: Mutex<FxHashMap<SocketAddr, Vec<Option<TcpListener>>>>,
    pub workers: Vec<WorkerInfo>,
}

pub struct WorkerInfo {
    pub registry: Arc<Registry>,
    /// "io_uring" or "epoll", set by the worker when its runtime is built.
    pub driver: Mutex<&'static str>,
    /// Listeners (by address) this worker has running, for readiness.
    pub listening: Mutex<Vec<SocketAddr>>,
}

impl Shared {
    pub fn new(mut config: Config, workers: usize) -> Self {
        config.epoch = 1;
        Shared {
            config: ArcSwap::from_pointee(config),
            epoch: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            xds: crate::xds::Status::default(),
            sockets: Mutex::new(FxHashMap::default()),
            workers: (0..workers)
                .map(|_| WorkerInfo {
                    registry: Arc::default(),
                    driver: Mutex::new("starting"),
                    listening: Mutex::new(Vec::new()),
                })
                .collect(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Publishes `config` as the next epoch and returns its number. Only the
    /// control thread calls this, so numbering needs no compare-and-swap.
    pub fn publish(&self, mut config: Config) -> u64 {
        let n = self.epoch.load(Ordering::Relaxed) + 1;
        config.epoch = n;
        self.config.store(Arc::new(config));
        self.epoch.store(n, Ordering::Release);
        n
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
