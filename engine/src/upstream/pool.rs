//! Idle keep-alive connections to one endpoint, owned by one worker. A pooled
//! connection the upstream has closed (or that holds unexpected bytes) is found
//! by a non-blocking peek before reuse and discarded.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::conn::Conn;

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    idle: RefCell<VecDeque<(Conn, Instant)>>,
    active: Cell<u32>,
    /// Consecutive connect failures.
    failures: Cell<u32>,
    /// Set after a connect failure: the load balancer passes this endpoint
    /// over until then (unless every endpoint is down).
    down_until: Cell<Option<Instant>>,
    /// Multiplexed HTTP/2 connections to this endpoint.
    pub h2: crate::http2::client::Pool,
}

/// Ejection after the first connect failure; doubles per consecutive failure.
const EJECT_BASE: Duration = Duration::from_millis(500);
const EJECT_MAX: Duration = Duration::from_secs(30);

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            idle: RefCell::new(VecDeque::new()),
            active: Cell::new(0),
            failures: Cell::new(0),
            down_until: Cell::new(None),
            h2: Default::default(),
        }
    }

    /// A connect to this endpoint failed: eject it for a while (500 ms,
    /// doubling per consecutive failure, at most 30 s). Its pooled
    /// connections are of no use either.
    pub fn connect_failed(&self) {
        let n = self.failures.get().saturating_add(1);
        self.failures.set(n);
        let backoff = EJECT_BASE
            .saturating_mul(1 << (n - 1).min(16))
            .min(EJECT_MAX);
        self.down_until.set(Some(Instant::now() + backoff));
        self.idle.borrow_mut().clear();
        self.h2.clear();
    }

    pub fn connect_ok(&self) {
        if self.failures.get() != 0 {
            self.failures.set(0);
            self.down_until.set(None);
        }
    }

    /// Ejected after a connect failure and not yet due for another try.
    pub fn is_down(&self) -> bool {
        match self.down_until.get() {
            None => false,
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                self.down_until.set(None);
                false
            }
        }
    }

    pub fn active(&self) -> u32 {
        self.active.get()
    }

    pub fn begin(&self) {
        self.active.set(self.active.get() + 1);
    }

    pub fn end(&self) {
        self.active.set(self.active.get().saturating_sub(1));
    }

    /// The most recently used live idle connection, if any. A connection
    /// idle for less than `trust_for` is taken without the liveness peek (a
    /// syscall per request); callers pass a non-zero `trust_for` only when the
    /// request can be retried on a fresh connection should it turn out stale.
    pub fn checkout(&self, idle_timeout: Duration, trust_for: Duration) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        while let Some((conn, since)) = idle.pop_back() {
            let idle_for = since.elapsed();
            if idle_for < idle_timeout && (idle_for < trust_for || still_open(&conn)) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for reuse; a kTLS connection near its key's usage limit
    /// is closed instead (retired: the kernel cannot re-key it).
    pub fn checkin(&self, mut conn: Conn, max_idle: usize) {
        if !conn.reusable() {
            return;
        }
        conn.release_buffers();
        let mut idle = self.idle.borrow_mut();
        if idle.len() < max_idle {
            idle.push_back((conn, Instant::now()));
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }

    pub fn sweep(&self, idle_timeout: Duration) {
        self.h2.sweep(idle_timeout);
        let mut idle = self.idle.borrow_mut();
        // Oldest are at the front.
        while idle
            .front()
            .is_some_and(|(_, since)| since.elapsed() >= idle_timeout)
        {
            idle.pop_front();
        }
    }
}

/// True if the peer has neither closed the connection nor sent anything: an
/// idle HTTP/1.1 upstream must be silent, so EOF or stray bytes both disqualify.
fn still_open(conn: &Conn) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv on a valid, owned socket fd into a 1-byte stack buffer;
    // MSG_PEEK|MSG_DONTWAIT neither consumes data nor blocks.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}
