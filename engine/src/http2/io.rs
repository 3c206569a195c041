//! The bridge between monoio's owned-buffer I/O and the poll-based
//! `tokio::io` traits the `h2` crate speaks.
//!
//! A connection is split into its read and write halves. Each half is either
//! idle (we hold it) or busy inside one boxed future that owns it and its
//! buffer; polling the trait methods polls that future. Reads fill a buffer
//! that `poll_read` copies out of; writes are taken into a buffer and written
//! behind (the caller's bytes are accepted at once, the next write or flush
//! waits for the one in flight). The cost is one copy each way and one small
//! allocation per operation — measured in bench/RESULTS.md ("HTTP/2 bridge").
//!
//! On downstream connections the read side also feeds every byte to a
//! [`Guard`], which follows the frame headers (not the payloads) and trips
//! on the abuse h2 itself does not bound: rapid reset and control-frame
//! floods. A tripped guard stops reading; the server then sends GOAWAY.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use tokio::io::ReadBuf;

use crate::conn::{Conn, ConnRead, ConnWrite};

const READ_BUF: usize = 16 * 1024;

type ReadFut = Pin<Box<dyn Future<Output = (ConnRead, io::Result<usize>, Vec<u8>)>>>;
type WriteFut = Pin<Box<dyn Future<Output = (ConnWrite, io::Result<()>, Vec<u8>)>>>;
type ShutFut = Pin<Box<dyn Future<Output = (ConnWrite, io::Result<()>)>>>;

enum ReadSide {
    Idle(ConnRead),
    Busy(ReadFut),
    Gone,
}

enum WriteSide {
    Idle(ConnWrite),
    Busy(WriteFut),
    Closing(ShutFut),
    Gone,
}

/// A [`Conn`] as `tokio::io::{AsyncRead, AsyncWrite}`.
pub struct H2Io {
    read: ReadSide,
    rbuf: Vec<u8>,
    rpos: usize,
    write: WriteSide,
    /// The write buffer, kept between writes.
    wbuf: Vec<u8>,
    /// A write that failed behind the caller's back: reported next time.
    werr: Option<io::Error>,
    guard: Option<Rc<Guard>>,
    stats: Option<Rc<crate::worker::ListenerStats>>,
    /// A write that makes no progress for this long fails (downstream
    /// connections: `limits.downstream_send_timeout`).
    send_timeout: Option<Duration>,
}

impl H2Io {
    /// `prefix`: bytes already read from the connection (the h2c preface
    /// found by the HTTP/1 reader), delivered first.
    pub fn new(conn: Conn, prefix: Vec<u8>) -> Self {
        let (r, w) = conn.into_split();
        H2Io {
            read: ReadSide::Idle(r),
            rbuf: prefix,
            rpos: 0,
            write: WriteSide::Idle(w),
            wbuf: Vec::new(),
            werr: None,
            guard: None,
            stats: None,
            send_timeout: None,
        }
    }

    pub fn with_send_timeout(mut self, t: Duration) -> Self {
        self.send_timeout = Some(t);
        self
    }

    pub fn with_guard(mut self, g: Rc<Guard>) -> Self {
        self.guard = Some(g);
        self
    }

    /// Counts bytes in the listener's rx/tx counters.
    pub fn with_stats(mut self, s: Rc<crate::worker::ListenerStats>) -> Self {
        self.stats = Some(s);
        self
    }

    /// Completes the write in flight, if any; an error is kept in `werr`.
    fn poll_busy(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let WriteSide::Busy(f) = &mut self.write {
            let (w, res, mut buf) = std::task::ready!(f.as_mut().poll(cx));
            buf.clear();
            self.wbuf = buf;
            self.write = match res {
                Ok(()) => WriteSide::Idle(w),
                Err(e) => {
                    if e.kind() == io::ErrorKind::TimedOut {
                        if let Some(s) = &self.stats {
                            s.send_timeouts.inc();
                        }
                    }
                    self.werr = Some(e);
                    WriteSide::Gone
                }
            };
        }
        Poll::Ready(())
    }

    fn poll_write_done(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_busy(cx));
        match self.werr.take() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl tokio::io::AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.rpos < this.rbuf.len() {
                if let Some(g) = &this.guard {
                    if g.tripped() {
                        // Stop reading: the server sends GOAWAY and closes.
                        return Poll::Pending;
                    }
                }
                let n = (this.rbuf.len() - this.rpos).min(out.remaining());
                let chunk = &this.rbuf[this.rpos..this.rpos + n];
                if let Some(g) = &this.guard {
                    g.inspect(chunk);
                }
                out.put_slice(chunk);
                this.rpos += n;
                return Poll::Ready(Ok(()));
            }
            match std::mem::replace(&mut this.read, ReadSide::Gone) {
                ReadSide::Gone => return Poll::Ready(Ok(())),
                ReadSide::Idle(mut r) => {
                    let mut buf = std::mem::take(&mut this.rbuf);
                    buf.clear();
                    if buf.capacity() < READ_BUF {
                        buf.reserve(READ_BUF);
                    }
                    this.rpos = 0;
                    this.read = ReadSide::Busy(Box::pin(async move {
                        let (res, buf) = r.read(buf).await;
                        (r, res, buf)
                    }));
                }
                ReadSide::Busy(mut f) => match f.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.read = ReadSide::Busy(f);
                        return Poll::Pending;
                    }
                    Poll::Ready((r, res, buf)) => {
                        this.rbuf = buf;
                        match res {
                            Ok(0) => {
                                // EOF: h2 sees a read of nothing.
                                this.read = ReadSide::Gone;
                                return Poll::Ready(Ok(()));
                            }
                            Ok(n) => {
                                if let Some(s) = &this.stats {
                                    s.rx.add(n as u64);
                                }
                                this.read = ReadSide::Idle(r);
                            }
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                },
            }
        }
    }
}

impl tokio::io::AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_write_done(cx))?;
        let WriteSide::Idle(mut w) = std::mem::replace(&mut this.write, WriteSide::Gone) else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        let mut buf = std::mem::take(&mut this.wbuf);
        buf.extend_from_slice(data);
        if let Some(s) = &this.stats {
            s.tx.add(data.len() as u64);
        }
        let timeout = this.send_timeout;
        this.write = WriteSide::Busy(Box::pin(async move {
            let (res, buf) = match timeout {
                Some(t) => crate::io::write_all_within(&mut w, buf, t).await,
                None => {
                    let (res, buf) = w.write_all(buf).await;
                    (res.map(|_| ()), buf)
                }
            };
            (w, res, buf)
        }));
        // Start the write now so the bytes leave without waiting for a flush.
        let _ = this.poll_busy(cx);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_done(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_write_done(cx))?;
        loop {
            match std::mem::replace(&mut this.write, WriteSide::Gone) {
                WriteSide::Idle(mut w) => {
                    this.write = WriteSide::Closing(Box::pin(async move {
                        let res = w.shutdown().await;
                        (w, res)
                    }));
                }
                WriteSide::Closing(mut f) => {
                    return match f.as_mut().poll(cx) {
                        Poll::Pending => {
                            this.write = WriteSide::Closing(f);
                            Poll::Pending
                        }
                        Poll::Ready((_w, res)) => Poll::Ready(res),
                    };
                }
                WriteSide::Busy(_) | WriteSide::Gone => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// A stream reset by the client within this long of opening it counts as a
/// rapid reset.
const RAPID: Duration = Duration::from_secs(1);
/// Streams whose opening time is remembered (a ring; stream ids only grow).
const OPENED: usize = 512;

/// Why a guard tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    RapidReset,
    ControlFlood,
}

/// Follows the client's frames on a downstream HTTP/2 connection and trips
/// on rapid reset (CVE-2023-44487) and SETTINGS/PING/PRIORITY/empty-frame
/// floods (CVE-2019-9512/9515/9516/9518). h2 bounds the rest itself:
/// CONTINUATION floods and header-list size (CVE-2024-27316 class),
/// resets of streams not yet accepted, locally caused resets
/// ("MadeYouReset"), and data-frame floods.
pub struct Guard {
    state: RefCell<GuardState>,
    tripped: Cell<Option<Abuse>>,
    /// The connection task waiting in [`Guard::wait`].
    waiter: RefCell<Option<std::task::Waker>>,
    max_resets: u32,
    reset_window: Duration,
    max_control: u32,
}

struct GuardState {
    /// The 24-byte client preface still to skip.
    preface_left: usize,
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    /// (stream id, opened at), oldest first.
    opened: std::collections::VecDeque<(u32, Instant)>,
    resets: u32,
    resets_since: Instant,
    control: u32,
    control_since: Instant,
}

impl Guard {
    pub fn new(l: &crate::config::Http2Limits) -> Self {
        let now = Instant::now();
        Guard {
            state: RefCell::new(GuardState {
                preface_left: 24,
                head: [0; 9],
                head_len: 0,
                skip: 0,
                opened: std::collections::VecDeque::with_capacity(16),
                resets: 0,
                resets_since: now,
                control: 0,
                control_since: now,
            }),
            tripped: Cell::new(None),
            waiter: RefCell::new(None),
            max_resets: l.max_rapid_resets,
            reset_window: l.rapid_reset_window,
            max_control: l.max_control_frames_per_second,
        }
    }

    pub fn tripped(&self) -> bool {
        self.tripped.get().is_some()
    }

    pub fn abuse(&self) -> Option<Abuse> {
        self.tripped.get()
    }

    /// Resolves once the guard has tripped.
    pub async fn wait(&self) -> Abuse {
        std::future::poll_fn(|cx| match self.tripped.get() {
            Some(a) => Poll::Ready(a),
            None => {
                *self.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Feeds bytes the client sent, in order.
    pub fn inspect(&self, mut b: &[u8]) {
        let mut s = self.state.borrow_mut();
        while !b.is_empty() && self.tripped.get().is_none() {
            if s.preface_left > 0 {
                let n = s.preface_left.min(b.len());
                s.preface_left -= n;
                b = &b[n..];
                continue;
            }
            if s.skip > 0 {
                let n = s.skip.min(b.len());
                s.skip -= n;
                b = &b[n..];
                continue;
            }
            let n = (9 - s.head_len).min(b.len());
            let at = s.head_len;
            s.head[at..at + n].copy_from_slice(&b[..n]);
            s.head_len += n;
            b = &b[n..];
            if s.head_len == 9 {
                s.head_len = 0;
                let h = s.head;
                let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                s.skip = len;
                let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                if let Some(a) = self.frame(&mut s, h[3], h[4], len, id) {
                    self.tripped.set(Some(a));
                    if let Some(w) = self.waiter.borrow_mut().take() {
                        w.wake();
                    }
                }
            }
        }
    }

    fn frame(&self, s: &mut GuardState, kind: u8, flags: u8, len: usize, id: u32) -> Option<Abuse> {
        let control = match kind {
            SETTINGS | PING => flags & ACK == 0,
            PRIORITY => true,
            DATA => len == 0 && flags & END_STREAM == 0,
            HEADERS => {
                if s.opened.back().is_none_or(|&(last, _)| id > last) {
                    if s.opened.len() == OPENED {
                        s.opened.pop_front();
                    }
                    s.opened.push_back((id, Instant::now()));
                }
                len == 0 && flags & (END_STREAM | END_HEADERS) != (END_STREAM | END_HEADERS)
            }
            CONTINUATION => len == 0 && flags & END_HEADERS == 0,
            RST_STREAM => {
                let now = Instant::now();
                let rapid = s
                    .opened
                    .binary_search_by_key(&id, |&(i, _)| i)
                    .ok()
                    .is_some_and(|i| now.duration_since(s.opened[i].1) < RAPID);
                if rapid {
                    if now.duration_since(s.resets_since) > self.reset_window {
                        s.resets = 0;
                        s.resets_since = now;
                    }
                    s.resets += 1;
                    if s.resets > self.max_resets {
                        return Some(Abuse::RapidReset);
                    }
                }
                false
            }
            _ => false,
        };
        if control {
            let now = Instant::now();
            if now.duration_since(s.control_since) >= Duration::from_secs(1) {
                s.control = 0;
                s.control_since = now;
            }
            s.control += 1;
            if s.control > self.max_control {
                return Some(Abuse::ControlFlood);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(9 + payload.len());
        let n = payload.len();
        f.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn limits() -> crate::config::Http2Limits {
        crate::config::Http2Limits {
            max_concurrent_streams: 100,
            initial_stream_window: 65535,
            initial_connection_window: 65535,
            max_frame_size: 16384,
            max_header_list_size: 65536,
            max_rapid_resets: 10,
            rapid_reset_window: Duration::from_secs(10),
            max_control_frames_per_second: 20,
        }
    }

    #[test]
    fn rapid_resets_trip_the_guard_and_slow_ones_do_not_count() {
        let g = Guard::new(&limits());
        g.inspect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let mut bytes = Vec::new();
        for i in 0..10u32 {
            let id = 2 * i + 1;
            bytes.extend(frame(HEADERS, END_HEADERS, id, &[0x82, 0x84, 0x86]));
            bytes.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        // Fed one byte at a time: frame headers split anywhere.
        for b in &bytes {
            g.inspect(std::slice::from_ref(b));
        }
        assert!(!g.tripped(), "10 resets is the limit, not over it");
        g.inspect(&frame(HEADERS, END_HEADERS, 21, &[0x82]));
        g.inspect(&frame(RST_STREAM, 0, 21, &8u32.to_be_bytes()));
        assert_eq!(g.abuse(), Some(Abuse::RapidReset));
        // A reset of a stream never seen opened (or long gone) is not rapid.
        let g = Guard::new(&limits());
        g.inspect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        for i in 0..50u32 {
            g.inspect(&frame(RST_STREAM, 0, 2 * i + 1, &8u32.to_be_bytes()));
        }
        assert!(!g.tripped());
    }

    #[test]
    fn ping_settings_and_empty_frame_floods_trip_the_guard_acks_do_not() {
        for (kind, flags, len) in [
            (PING, 0, 8),
            (SETTINGS, 0, 0),
            (PRIORITY, 0, 5),
            (DATA, 0, 0),
            (CONTINUATION, 0, 0),
        ] {
            let g = Guard::new(&limits());
            g.inspect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            for _ in 0..20 {
                g.inspect(&frame(kind, flags, 1, &vec![0; len]));
            }
            assert!(!g.tripped(), "type {kind}: 20 is the limit");
            g.inspect(&frame(kind, flags, 1, &vec![0; len]));
            assert_eq!(g.abuse(), Some(Abuse::ControlFlood), "type {kind}");
        }
        let g = Guard::new(&limits());
        g.inspect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        for _ in 0..1000 {
            g.inspect(&frame(PING, ACK, 0, &[0; 8]));
            g.inspect(&frame(SETTINGS, ACK, 0, &[]));
            g.inspect(&frame(DATA, END_STREAM, 1, &[]));
            g.inspect(&frame(DATA, 0, 1, b"payload"));
        }
        assert!(!g.tripped());
    }
}
