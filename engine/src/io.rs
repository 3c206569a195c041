//! Small I/O helpers over monoio's owned-buffer model: append-reads into a
//! `Vec`, and the bidirectional byte tunnel used by L4 listeners and by
//! HTTP/1.1 Upgrade.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::conn::Conn;

/// Reads once, appending to `buf` after its current length. Grows the buffer
/// only when it is full (by at least `min_spare` bytes).
pub async fn read_append<R: AsyncReadRent>(
    r: &mut R,
    mut buf: Vec<u8>,
    min_spare: usize,
) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let len = buf.len();
    let cap = buf.capacity();
    let (res, slice) = r.read(SliceMut::new(buf, len, cap)).await;
    (res, slice.into_inner())
}

/// Writes `buf[range]` fully.
pub async fn write_range<W: AsyncWriteRent, B: IoBuf>(
    w: &mut W,
    buf: B,
    start: usize,
    end: usize,
) -> (io::Result<()>, B) {
    if start >= end {
        return (Ok(()), buf);
    }
    let (res, slice) = w.write_all(buf.slice(start..end)).await;
    (res.map(|_| ()), slice.into_inner())
}

/// Writes `buf[start..end]` fully unless one write makes no progress for
/// `timeout` (a peer that does not read): then the error is `TimedOut`, the
/// buffer went with the cancelled write and an empty one is returned. The
/// caller closes the connection: how much of the range went out is unknown.
pub async fn write_range_within<W: AsyncWriteRent, B: IoBuf + Default>(
    w: &mut W,
    mut buf: B,
    start: usize,
    end: usize,
    timeout: Duration,
) -> (io::Result<()>, B) {
    let mut pos = start;
    while pos < end {
        match monoio::time::timeout(timeout, w.write(buf.slice(pos..end))).await {
            Err(_) => return (Err(io::ErrorKind::TimedOut.into()), B::default()),
            Ok((res, slice)) => {
                buf = slice.into_inner();
                match res {
                    Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                    Ok(n) => pos += n,
                    Err(e) => return (Err(e), buf),
                }
            }
        }
    }
    (Ok(()), buf)
}

/// `write_range_within` of a whole `Vec`.
pub async fn write_all_within<W: AsyncWriteRent>(
    w: &mut W,
    buf: Vec<u8>,
    timeout: Duration,
) -> (io::Result<()>, Vec<u8>) {
    let n = buf.len();
    write_range_within(w, buf, 0, n, timeout).await
}

/// What ended a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both sides closed their write side.
    Closed,
    /// No byte moved in either direction for the idle timeout.
    Idle,
    /// A read or write failed (reset).
    Error,
    /// A write to one side made no progress for the send timeout (that side
    /// does not read): the whole tunnel was closed. `to_a`: the stalled
    /// writes were to `a`.
    SendTimeout { to_a: bool },
}

/// Bytes moved by a tunnel: (a to b, b to a).
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Copies bytes both ways until both directions are done. EOF on one side's
/// read becomes a write shutdown on the other (half-close); the tunnel ends
/// when neither direction moved a byte for `idle`, or at once when a write
/// made no progress for `send_timeout`.
pub async fn tunnel(
    a: Conn,
    b: Conn,
    idle: Duration,
    send_timeout: Duration,
    bufs: (Vec<u8>, Vec<u8>),
) -> (TunnelEnd, Moved, (Vec<u8>, Vec<u8>)) {
    let last = Rc::new(Cell::new(Instant::now()));
    let abort = crate::notify::Notify::default();
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let t = Timeouts { idle, send_timeout };
    let one = pump(&mut ar, &mut bw, t, last.clone(), &abort, bufs.0);
    let two = pump(&mut br, &mut aw, t, last, &abort, bufs.1);
    let ((e1, n1, b1), (e2, n2, b2)) = monoio::join!(one, two);
    let end = match (e1, e2) {
        (Pumped::SendTimeout, _) => TunnelEnd::SendTimeout { to_a: false },
        (_, Pumped::SendTimeout) => TunnelEnd::SendTimeout { to_a: true },
        (Pumped::End(TunnelEnd::Error), _) | (_, Pumped::End(TunnelEnd::Error)) => TunnelEnd::Error,
        (Pumped::End(TunnelEnd::Idle), _) | (_, Pumped::End(TunnelEnd::Idle)) => TunnelEnd::Idle,
        _ => TunnelEnd::Closed,
    };
    (
        end,
        Moved {
            a_to_b: n1,
            b_to_a: n2,
        },
        (b1, b2),
    )
}

#[derive(Clone, Copy)]
struct Timeouts {
    idle: Duration,
    send_timeout: Duration,
}

/// How one direction of a tunnel ended.
enum Pumped {
    End(TunnelEnd),
    /// Its write stalled; the other direction was told to stop.
    SendTimeout,
}

async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    r: &mut R,
    w: &mut W,
    t: Timeouts,
    last: Rc<Cell<Instant>>,
    abort: &crate::notify::Notify,
    mut buf: Vec<u8>,
) -> (Pumped, u64, Vec<u8>) {
    let idle = t.idle;
    let mut last_full = false;
    let mut moved = 0u64;
    loop {
        buf.clear();
        // A read that filled the buffer marks a bulk stream: read more per op.
        if last_full && buf.capacity() < crate::worker::BULK_BUF_SIZE {
            buf = Vec::with_capacity(crate::worker::BULK_BUF_SIZE);
        }
        let since = last.get().elapsed();
        if since >= idle {
            let _ = w.shutdown().await;
            return (Pumped::End(TunnelEnd::Idle), moved, buf);
        }
        let cap = buf.capacity();
        let read = monoio::select! {
            r = monoio::time::timeout(idle - since, r.read(SliceMut::new(buf, 0, cap))) => r,
            // The other direction's peer stopped reading: the tunnel is over.
            _ = abort.fired() => {
                return (Pumped::End(TunnelEnd::Error), moved, Vec::with_capacity(cap));
            }
        };
        let (res, slice) = match read {
            Ok(r) => r,
            // The read was cancelled with its buffer; the other direction may
            // still be busy, so loop and re-check the shared activity clock.
            Err(_) => {
                buf = Vec::with_capacity(cap);
                continue;
            }
        };
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                let _ = w.shutdown().await;
                return (Pumped::End(TunnelEnd::Closed), moved, buf);
            }
            Ok(n) => {
                last_full = n == buf.capacity();
                last.set(Instant::now());
                let (res, b) = monoio::select! {
                    r = write_all_within(w, buf, t.send_timeout) => r,
                    _ = abort.fired() => {
                        return (Pumped::End(TunnelEnd::Error), moved, Vec::with_capacity(cap));
                    }
                };
                buf = b;
                match res {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        abort.fire();
                        return (Pumped::SendTimeout, moved, Vec::with_capacity(cap));
                    }
                    Err(_) => return (Pumped::End(TunnelEnd::Error), moved, buf),
                }
                moved += n as u64;
                last.set(Instant::now());
            }
            Err(_) => {
                let _ = w.shutdown().await;
                return (Pumped::End(TunnelEnd::Error), moved, buf);
            }
        }
    }
}
