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

/// What ended a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both sides closed their write side.
    Closed,
    /// No byte moved in either direction for the idle timeout.
    Idle,
    /// A read or write failed (reset).
    Error,
}

/// Bytes moved by a tunnel: (a to b, b to a).
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Copies bytes both ways until both directions are done. EOF on one side's
/// read becomes a write shutdown on the other (half-close); the tunnel ends
/// when neither direction moved a byte for `idle`.
pub async fn tunnel(
    a: Conn,
    b: Conn,
    idle: Duration,
    bufs: (Vec<u8>, Vec<u8>),
) -> (TunnelEnd, Moved, (Vec<u8>, Vec<u8>)) {
    let last = Rc::new(Cell::new(Instant::now()));
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let one = pump(&mut ar, &mut bw, idle, last.clone(), bufs.0);
    let two = pump(&mut br, &mut aw, idle, last, bufs.1);
    let ((e1, n1, b1), (e2, n2, b2)) = monoio::join!(one, two);
    let end = match (e1, e2) {
        (TunnelEnd::Error, _) | (_, TunnelEnd::Error) => TunnelEnd::Error,
        (TunnelEnd::Idle, _) | (_, TunnelEnd::Idle) => TunnelEnd::Idle,
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

async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    r: &mut R,
    w: &mut W,
    idle: Duration,
    last: Rc<Cell<Instant>>,
    mut buf: Vec<u8>,
) -> (TunnelEnd, u64, Vec<u8>) {
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
            return (TunnelEnd::Idle, moved, buf);
        }
        let cap = buf.capacity();
        let read = monoio::time::timeout(idle - since, r.read(SliceMut::new(buf, 0, cap))).await;
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
                return (TunnelEnd::Closed, moved, buf);
            }
            Ok(n) => {
                last_full = n == buf.capacity();
                last.set(Instant::now());
                let (res, b) = w.write_all(buf).await;
                buf = b;
                if res.is_err() {
                    return (TunnelEnd::Error, moved, buf);
                }
                moved += n as u64;
            }
            Err(_) => {
                let _ = w.shutdown().await;
                return (TunnelEnd::Error, moved, buf);
            }
        }
    }
}
