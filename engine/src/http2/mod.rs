//! HTTP/2 on both sides of the proxy, with the `h2` crate on monoio.
//!
//! - Downstream ([`serve`]): a connection that negotiated `h2` by ALPN, or a
//!   plaintext one whose first bytes are the HTTP/2 preface (h2c with prior
//!   knowledge), is served here. The connection task drives h2 (accepting
//!   streams, reading and writing frames); each stream runs in its own task
//!   (`proxy::stream`) on the same worker. Limits come from `limits.http2`;
//!   a [`io::Guard`] watches the client's frames for rapid reset and control
//!   floods and the connection is closed with GOAWAY(ENHANCE_YOUR_CALM).
//! - Upstream (`client`): per worker, per endpoint, a few multiplexed
//!   connections, used while the peer's stream limit allows.
//! - Translation: an HTTP/2 stream may go to an HTTP/1.1 upstream
//!   (`proxy`), and an HTTP/1.1 request to an HTTP/2 upstream
//!   (`http1::to_h2`).

pub mod client;
pub mod io;
pub mod proxy;
pub use proxy::strip_hop_by_hop;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;

use crate::conn::Conn;
use crate::upstream::ClusterState;
use crate::worker::{EpochLocal, Worker};

/// The HTTP/2 connection preface a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Carried across the mesh hop when the original client spoke HTTP/1.1, so
/// the receiving proxy hands its application what the client spoke (the
/// idea of Linkerd's `l5d-orig-proto`).
pub const ORIG_PROTO: &str = "ringmesh-orig-proto";

/// How long a connection closed for abuse may take to flush its GOAWAY.
const GOAWAY_FLUSH: Duration = Duration::from_secs(1);

/// Whether `buf` (the first bytes of a plaintext connection) is, or may still
/// become, the HTTP/2 preface.
pub fn preface_prefix(buf: &[u8]) -> bool {
    let n = buf.len().min(PREFACE.len());
    n > 0 && buf[..n] == PREFACE[..n]
}

/// The protocol the downstream client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// Whether a request to `addr` of cluster `cs` goes out as HTTP/2.
/// `down`: what the client spoke (after a mesh hop, the original client).
pub fn upstream_h2(cs: &ClusterState, addr: SocketAddr, down: Proto) -> bool {
    use crate::config::model::UpstreamProtocol as P;
    let tls = cs.config.tls.as_ref().is_some_and(|t| t.applies_to(addr));
    if tls {
        // The mesh hop: ringmesh proxies always speak HTTP/2 to each other.
        return true;
    }
    match cs.config.protocol {
        P::Http1 => false,
        P::Http2 => true,
        P::Auto => down == Proto::Http2,
    }
}

/// What every stream of one downstream connection shares.
pub(crate) struct Downstream {
    pub worker: Rc<Worker>,
    pub peer: SocketAddr,
    pub client_ip: Box<str>,
    pub listener_addr: SocketAddr,
    /// The client's SPIFFE ID (mTLS).
    pub identity: Option<Arc<str>>,
    /// mTLS listeners: the x-forwarded-client-cert value (empty: remove
    /// only); None elsewhere.
    pub xfcc: Option<Box<[u8]>>,
    pub https: bool,
    /// Streams in progress, and when the last one ended (idle timeout).
    pub active: Cell<usize>,
    pub idle_since: Cell<Instant>,
}

/// Serves one downstream HTTP/2 connection. `prefix`: bytes the HTTP/1
/// reader already took off the connection (the preface, or part of it).
pub async fn serve(
    worker: Rc<Worker>,
    epoch: Rc<EpochLocal>,
    listener: usize,
    conn: Conn,
    peer: SocketAddr,
    prefix: Vec<u8>,
) {
    let _ = conn.set_nodelay(true);
    let l = &epoch.config.listeners[listener];
    let limits = epoch.config.limits.http2.clone();
    let head_timeout = epoch.config.limits.request_head_timeout;
    let idle_timeout = epoch.config.limits.downstream_idle_timeout;
    let send_timeout = epoch.config.limits.downstream_send_timeout;
    let identity = conn.peer_identity().cloned();
    let xfcc = match &l.tls {
        Some(crate::tls::DownstreamTls::Mesh { own_id, .. }) => Some(match &identity {
            Some(p) => format!("By={own_id};URI={p}").into_bytes().into(),
            None => Box::default(),
        }),
        _ => None,
    };
    let https = conn.is_tls() && xfcc.is_none();
    let stats = epoch.listeners[listener].clone();
    let listener_name = l.name.clone();
    let d = Rc::new(Downstream {
        worker: worker.clone(),
        peer,
        client_ip: peer.ip().to_string().into(),
        listener_addr: l.addr,
        identity,
        xfcc,
        https,
        active: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
    });
    drop(epoch);

    let guard = Rc::new(io::Guard::new(&limits));
    let io = io::H2Io::new(conn, prefix)
        .with_guard(guard.clone())
        .with_stats(stats)
        .with_send_timeout(send_timeout);
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(limits.max_concurrent_streams)
        .initial_window_size(limits.initial_stream_window)
        .initial_connection_window_size(limits.initial_connection_window)
        .max_frame_size(limits.max_frame_size)
        .max_header_list_size(limits.max_header_list_size)
        // Responses wait for window instead of piling up in h2's buffer.
        .max_send_buffer_size(limits.max_frame_size as usize * 4);
    let mut h2c = match monoio::time::timeout(head_timeout, b.handshake::<_, Bytes>(io)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            crate::log::warn_limited(&format!("http2 {peer}: handshake: {e}"));
            return;
        }
        Err(_) => return,
    };

    let mut draining = false;
    loop {
        if let Some(a) = guard.abuse() {
            crate::log::warn_limited(&format!(
                "http2 {peer}: {a:?}: closing the connection with GOAWAY(ENHANCE_YOUR_CALM)"
            ));
            let kind = match a {
                io::Abuse::RapidReset => "rapid_reset",
                io::Abuse::ControlFlood => "control_flood",
            };
            worker
                .registry
                .counter(
                    "ringmesh_http2_goaway_abuse_total",
                    format!(
                        "listener=\"{}\",abuse=\"{kind}\"",
                        crate::metrics::label(&listener_name)
                    ),
                )
                .inc();
            h2c.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
            let closed = std::future::poll_fn(|cx| h2c.poll_closed(cx));
            let _ = monoio::time::timeout(GOAWAY_FLUSH, closed).await;
            return;
        }
        let idle_left = if d.active.get() == 0 {
            idle_timeout.saturating_sub(d.idle_since.get().elapsed())
        } else {
            idle_timeout
        };
        let accepted = monoio::select! {
            a = std::future::poll_fn(|cx| h2c.poll_accept(cx)) => a,
            // The guard trips inside h2's read; its reads then stay pending.
            _ = guard.wait() => continue,
            _ = worker.drain.fired(), if !draining => {
                draining = true;
                h2c.graceful_shutdown();
                continue;
            }
            _ = monoio::time::sleep(idle_left) => {
                if d.active.get() == 0 && d.idle_since.get().elapsed() >= idle_timeout {
                    h2c.graceful_shutdown();
                    draining = true;
                }
                continue;
            }
        };
        match accepted {
            Some(Ok((req, respond))) => {
                d.active.set(d.active.get() + 1);
                monoio::spawn(proxy::stream(d.clone(), req, respond));
            }
            Some(Err(e)) => {
                if guard.abuse().is_some() {
                    continue;
                }
                crate::log::warn_limited(&format!("http2 {peer}: {e}"));
                break;
            }
            None => break,
        }
    }
    // Let streams in progress finish (their frames go out through the
    // connection, which must keep being polled).
    let _ = std::future::poll_fn(|cx| h2c.poll_closed(cx)).await;
}

/// The gRPC status a proxy-made answer carries for an HTTP status.
pub fn grpc_status_for(status: u16) -> u32 {
    match status {
        // DEADLINE_EXCEEDED (the route timeout, as the issue asks).
        504 | 408 => 4,
        // PERMISSION_DENIED
        403 => 7,
        // UNIMPLEMENTED: nothing serves this method here.
        404 | 405 => 12,
        // UNAUTHENTICATED
        401 => 16,
        // RESOURCE_EXHAUSTED
        429 | 431 => 8,
        // INTERNAL
        400 => 13,
        // UNAVAILABLE: 502, 503 and the rest.
        _ => 14,
    }
}

/// Whether a request's content-type makes it a gRPC call.
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|c| c.len() >= 16 && c[..16].eq_ignore_ascii_case(b"application/grpc"))
}
