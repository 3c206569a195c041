//! Upstream HTTP/2: per worker, per endpoint, a few multiplexed connections.
//! A stream goes on the first connection with room under the peer's
//! SETTINGS_MAX_CONCURRENT_STREAMS; when all are full another connection is
//! opened, up to [`MAX_CONNS`]; past that, streams queue in h2 for a slot on
//! the least busy one. Each connection is driven by its own task; one that
//! ends (GOAWAY, error, idle close) is dropped from the pool.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;

use crate::upstream::{ClusterState, ConnectError, Endpoint};

/// Connections per endpoint per worker.
pub const MAX_CONNS: usize = 4;

/// One upstream HTTP/2 connection.
pub struct UpConn {
    send: SendRequest<Bytes>,
    streams: Cell<usize>,
    /// The peer's stream limit, updated by the driver task.
    max: Rc<Cell<usize>>,
    closed: Rc<Cell<bool>>,
    tls: bool,
    last_used: Cell<Instant>,
}

/// The connections of one endpoint (lives in [`Endpoint`]).
#[derive(Default)]
pub struct Pool {
    conns: RefCell<Vec<Rc<UpConn>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "h2::Pool({})", self.conns.borrow().len())
    }
}

impl Pool {
    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops connections without streams idle for `idle` (their driver
    /// tasks end once the last handle is gone) and ended ones.
    pub fn sweep(&self, idle: Duration) {
        self.conns.borrow_mut().retain(|c| {
            !c.closed.get() && (c.streams.get() > 0 || c.last_used.get().elapsed() < idle)
        });
    }

    pub fn clear(&self) {
        self.conns.borrow_mut().clear();
    }
}

/// A stream slot on an upstream connection; frees it when dropped.
pub struct Slot(Rc<UpConn>);

impl Drop for Slot {
    fn drop(&mut self) {
        let c = &self.0;
        c.streams.set(c.streams.get().saturating_sub(1));
        c.last_used.set(Instant::now());
    }
}

impl Slot {
    /// The connection failed under this stream: do not pick it again.
    pub fn broken(&self) {
        self.0.closed.set(true);
    }
}

/// A handle ready to send one request, and the slot it occupies.
pub async fn acquire(
    cs: &ClusterState,
    ep: &Endpoint,
    limits: &crate::config::Http2Limits,
) -> Result<(SendRequest<Bytes>, Slot), ConnectError> {
    let tls = cs
        .config
        .tls
        .as_ref()
        .is_some_and(|t| t.applies_to(ep.addr));
    let pool = &ep.h2;
    // A pooled connection the peer has sent GOAWAY on fails `ready`: it is
    // dropped and the next one (or a new one) is tried.
    for _ in 0..=MAX_CONNS {
        let pick = {
            let mut conns = pool.conns.borrow_mut();
            conns.retain(|c| !c.closed.get() && c.tls == tls);
            let room = conns
                .iter()
                .find(|c| c.streams.get() < c.max.get())
                .cloned();
            match room {
                Some(c) => Some(c),
                None if conns.len() < MAX_CONNS => None,
                None => conns.iter().min_by_key(|c| c.streams.get()).cloned(),
            }
        };
        let fresh = pick.is_none();
        let conn = match pick {
            Some(c) => {
                cs.stats.pool_hits.inc();
                c
            }
            None => {
                cs.stats.pool_misses.inc();
                let c = open(cs, ep, limits, tls).await?;
                pool.conns.borrow_mut().push(c.clone());
                c
            }
        };
        conn.streams.set(conn.streams.get() + 1);
        conn.last_used.set(Instant::now());
        let slot = Slot(conn.clone());
        match conn.send.clone().ready().await {
            Ok(send) => return Ok((send, slot)),
            Err(e) => {
                slot.broken();
                if fresh {
                    return Err(refused(&e));
                }
            }
        }
    }
    Err(ConnectError::Refused(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "every pooled HTTP/2 connection was going away",
    )))
}

fn refused(e: &h2::Error) -> ConnectError {
    ConnectError::Refused(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        e.to_string(),
    ))
}

/// Whether the upstream certainly did not process a stream that failed with
/// `e` (RFC 9113 §8.7), so that it may be sent again on another connection:
/// it was refused (REFUSED_STREAM), or, for a request that is safe to repeat
/// anyway (`idempotent`), it fell to a GOAWAY (a graceful shutdown's streams
/// above the last one the peer took).
pub fn unprocessed(e: &h2::Error, idempotent: bool) -> bool {
    if !e.is_remote() {
        return false;
    }
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (idempotent && e.is_go_away())
}

async fn open(
    cs: &ClusterState,
    ep: &Endpoint,
    limits: &crate::config::Http2Limits,
    tls: bool,
) -> Result<Rc<UpConn>, ConnectError> {
    let conn = crate::upstream::connect_for(cs, ep, true).await?;
    if tls && !conn.alpn_h2() {
        ep.connect_failed();
        return Err(ConnectError::Tls(
            "the peer did not negotiate ALPN h2".into(),
        ));
    }
    let io = super::io::H2Io::new(conn, Vec::new());
    let mut b = h2::client::Builder::new();
    b.enable_push(false)
        .initial_window_size(limits.initial_stream_window)
        .initial_connection_window_size(limits.initial_connection_window)
        .max_frame_size(limits.max_frame_size)
        .max_header_list_size(limits.max_header_list_size)
        .max_send_buffer_size(limits.max_frame_size as usize * 4);
    let handshake = b.handshake::<_, Bytes>(io);
    let (send, mut connection) =
        match monoio::time::timeout(cs.config.connect_timeout, handshake).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                ep.connect_failed();
                return Err(ConnectError::Refused(std::io::Error::other(e.to_string())));
            }
            Err(_) => {
                ep.connect_failed();
                return Err(ConnectError::Timeout);
            }
        };
    // Until the peer's SETTINGS arrive, assume the RFC's suggested minimum.
    let max = Rc::new(Cell::new(100));
    let closed = Rc::new(Cell::new(false));
    let (m, c) = (max.clone(), closed.clone());
    monoio::spawn(async move {
        let _ = std::future::poll_fn(|cx| {
            let r = std::pin::Pin::new(&mut connection).poll(cx);
            m.set(connection.max_concurrent_send_streams().max(1));
            r
        })
        .await;
        c.set(true);
    });
    Ok(Rc::new(UpConn {
        send,
        streams: Cell::new(0),
        max,
        closed,
        tls,
        last_used: Cell::new(Instant::now()),
    }))
}

use std::future::Future as _;
