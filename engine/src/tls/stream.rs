//! Our TLS stream over monoio's owned buffers: a rustls `Connection` plus a
//! ciphertext buffer that exists only while ciphertext is in hand (released
//! when the connection idles). The handshake can read one record at a time
//! (`record_bounded`) so no byte past the handshake leaves the socket, which
//! is what a kernel TLS hand-off (`into_parts`) needs.

use std::cell::RefCell;
use std::io::{self, BufRead, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf,
    OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::Connection;

/// Ciphertext read per socket read: one full TLS record and its overhead.
const CIPHER_BUF: usize = 16 * 1024 + 512;
const RECORD_HEADER: usize = 5;
const MAX_RECORD: usize = 16 * 1024 + 2048;

/// Ciphertext read from the socket and not yet given to rustls.
#[derive(Debug, Default)]
struct Cipher {
    buf: Vec<u8>,
    pos: usize,
}

impl Cipher {
    fn pending(&self) -> bool {
        self.pos < self.buf.len()
    }

    fn release(&mut self) {
        if !self.pending() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }
}

/// Access to the rustls connection, owned (a whole stream) or shared by the
/// two halves of a split one (borrowed only in synchronous sections).
trait TlsCell {
    fn with<R>(&mut self, f: impl FnOnce(&mut Connection) -> R) -> R;
}

impl TlsCell for Connection {
    fn with<R>(&mut self, f: impl FnOnce(&mut Connection) -> R) -> R {
        f(self)
    }
}

impl TlsCell for Rc<RefCell<Connection>> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Connection) -> R) -> R {
        f(&mut self.borrow_mut())
    }
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Gives rustls pending ciphertext until plaintext comes out or the
/// ciphertext is used up.
fn feed(tls: &mut Connection, c: &mut Cipher) -> io::Result<()> {
    while c.pending() {
        let mut rd = &c.buf[c.pos..];
        let n = tls.read_tls(&mut rd)?;
        c.pos += n;
        let st = tls.process_new_packets().map_err(tls_err)?;
        if st.plaintext_bytes_to_read() > 0 || n == 0 {
            break;
        }
    }
    if !c.pending() {
        c.buf.clear();
        c.pos = 0;
    }
    Ok(())
}

/// Copies decrypted plaintext into `buf`: None when there is none yet;
/// Some(Ok(0)) at the end of the stream (close_notify or TCP EOF).
fn copy_plain<T: IoBufMut>(tls: &mut Connection, buf: &mut T) -> Option<io::Result<usize>> {
    let total = buf.bytes_total();
    let mut r = tls.reader();
    match r.fill_buf() {
        Ok([]) => Some(Ok(0)),
        Ok(chunk) => {
            let n = chunk.len().min(total);
            // SAFETY: write_ptr is valid for bytes_total bytes of the owned
            // buffer, and the source is a distinct rustls buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.write_ptr(), n);
                buf.set_init(n);
            }
            r.consume(n);
            Some(Ok(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(Ok(0)),
        Err(e) => Some(Err(e)),
    }
}

fn has_plain(tls: &mut Connection) -> bool {
    !matches!(tls.reader().fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

async fn read_plain<I: AsyncReadRent, C: TlsCell, T: IoBufMut>(
    io: &mut I,
    tls: &mut C,
    ci: &mut Cipher,
    mut buf: T,
) -> BufResult<usize, T> {
    if buf.bytes_total() == 0 {
        return (Ok(0), buf);
    }
    loop {
        // Some(result): done; None: fed ciphertext, look again; no ciphertext
        // in hand: read the socket.
        let step = tls.with(|t| {
            if let Some(r) = copy_plain(t, &mut buf) {
                return Some(Some(r));
            }
            if ci.pending() {
                return Some(feed(t, ci).err().map(Err));
            }
            None
        });
        match step {
            Some(Some(r)) => return (r, buf),
            Some(None) => continue,
            None => {}
        }
        let mut b = std::mem::take(&mut ci.buf);
        b.clear();
        if b.capacity() < CIPHER_BUF {
            b = Vec::with_capacity(CIPHER_BUF);
        }
        let (res, b) = io.read(b).await;
        ci.buf = b;
        ci.pos = 0;
        match res {
            // Tell rustls: it answers with close_notify seen or not.
            Ok(0) => {
                let r = tls.with(|t| t.read_tls(&mut &[][..]));
                if let Err(e) = r {
                    return (Err(e), buf);
                }
            }
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
}

/// Moves what rustls wants to send into `out`.
fn encode(tls: &mut Connection, out: &mut Vec<u8>) -> io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(out)?;
    }
    Ok(())
}

async fn send<I: AsyncWriteRent>(io: &mut I, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let (res, b) = io.write_all(std::mem::take(out)).await;
    *out = b;
    out.clear();
    res.map(|_| ())
}

async fn write_plain<I: AsyncWriteRent, C: TlsCell, T: IoBuf>(
    io: &mut I,
    tls: &mut C,
    out: &mut Vec<u8>,
    buf: T,
) -> BufResult<usize, T> {
    // SAFETY: read_ptr is valid for bytes_init bytes of the owned buffer.
    let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
    let r = tls.with(|t| {
        let n = t.writer().write(src)?;
        encode(t, out)?;
        Ok(n)
    });
    let n = match r {
        Ok(n) => n,
        Err(e) => return (Err(e), buf),
    };
    match send(io, out).await {
        Ok(()) => (Ok(n), buf),
        Err(e) => (Err(e), buf),
    }
}

async fn flush_tls<I: AsyncWriteRent, C: TlsCell>(
    io: &mut I,
    tls: &mut C,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    tls.with(|t| encode(t, out))?;
    send(io, out).await
}

async fn shutdown_tls<I: AsyncWriteRent, C: TlsCell>(
    io: &mut I,
    tls: &mut C,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    tls.with(|t| t.send_close_notify());
    flush_tls(io, tls, out).await?;
    io.shutdown().await
}

/// A raw view of one iovec, to run a vectored op as a plain one.
struct RawBuf(*mut u8, usize);

// SAFETY: points into a buffer the caller owns for the whole operation.
unsafe impl IoBuf for RawBuf {
    fn read_ptr(&self) -> *const u8 {
        self.0
    }
    fn bytes_init(&self) -> usize {
        self.1
    }
}

// SAFETY: as above.
unsafe impl IoBufMut for RawBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.0
    }
    fn bytes_total(&mut self) -> usize {
        self.1
    }
    unsafe fn set_init(&mut self, _: usize) {}
}

fn first_iovec_mut<T: IoVecBufMut>(buf: &mut T) -> RawBuf {
    let (p, n) = (buf.write_iovec_ptr(), buf.write_iovec_len());
    // SAFETY: the iovec array is valid for `n` entries while we own `buf`.
    let iov = (0..n).map(|i| unsafe { *p.add(i) }).find(|v| v.iov_len > 0);
    iov.map_or(RawBuf(std::ptr::null_mut(), 0), |v| {
        RawBuf(v.iov_base.cast(), v.iov_len)
    })
}

fn first_iovec<T: IoVecBuf>(buf: &T) -> RawBuf {
    let (p, n) = (buf.read_iovec_ptr(), buf.read_iovec_len());
    // SAFETY: as in first_iovec_mut.
    let iov = (0..n).map(|i| unsafe { *p.add(i) }).find(|v| v.iov_len > 0);
    iov.map_or(RawBuf(std::ptr::null_mut(), 0), |v| {
        RawBuf(v.iov_base.cast(), v.iov_len)
    })
}

/// Options for a handshake.
#[derive(Debug, Clone, Copy)]
pub struct Handshake {
    pub timeout: Duration,
    /// Read one TLS record at a time (header, then exactly its body), so
    /// nothing past the handshake leaves the socket (kTLS hand-off).
    pub record_bounded: bool,
}

/// A TLS connection over a TCP stream, after its handshake.
pub struct TlsStream {
    io: TcpStream,
    tls: Connection,
    cipher: Cipher,
    out: Vec<u8>,
    peer: Option<Arc<str>>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    /// Runs the handshake of `tls` over `io` within `opts.timeout`.
    pub async fn handshake(io: TcpStream, tls: Connection, opts: Handshake) -> io::Result<Self> {
        let mut s = TlsStream {
            io,
            tls,
            cipher: Cipher::default(),
            out: Vec::new(),
            peer: None,
        };
        match monoio::time::timeout(opts.timeout, s.drive(opts.record_bounded)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            }
        }
        s.peer = s
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| super::verify::spiffe_id(c))
            .map(Into::into);
        s.out = Vec::new();
        s.cipher.release();
        Ok(s)
    }

    async fn drive(&mut self, record_bounded: bool) -> io::Result<()> {
        loop {
            flush_tls(&mut self.io, &mut self.tls, &mut self.out).await?;
            if !self.tls.is_handshaking() {
                return Ok(());
            }
            if self.cipher.pending() {
                if let Err(e) = feed(&mut self.tls, &mut self.cipher) {
                    // Best effort: the alert rustls queued tells the peer why.
                    let _ = flush_tls(&mut self.io, &mut self.tls, &mut self.out).await;
                    return Err(e);
                }
                continue;
            }
            let got = if record_bounded {
                self.read_record().await?
            } else {
                let b = std::mem::take(&mut self.cipher.buf);
                let b = if b.capacity() < CIPHER_BUF {
                    Vec::with_capacity(CIPHER_BUF)
                } else {
                    b
                };
                let (res, b) = self.io.read(b).await;
                self.cipher.buf = b;
                self.cipher.pos = 0;
                res?
            };
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
        }
    }

    /// Reads exactly one TLS record into the ciphertext buffer.
    async fn read_record(&mut self) -> io::Result<usize> {
        let (res, hdr) = self.io.read_exact(Vec::with_capacity(RECORD_HEADER)).await;
        match res {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        if len > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS record too large",
            ));
        }
        let mut rec = hdr;
        rec.reserve(len);
        let (res, slice) = self
            .io
            .read_exact(monoio::buf::SliceMut::new(
                rec,
                RECORD_HEADER,
                RECORD_HEADER + len,
            ))
            .await;
        res?;
        self.cipher.buf = slice.into_inner();
        self.cipher.pos = 0;
        Ok(self.cipher.buf.len())
    }

    /// The SPIFFE ID of a verified peer certificate, if it carried one.
    pub fn peer_identity(&self) -> Option<&Arc<str>> {
        self.peer.as_ref()
    }

    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.io
    }

    /// The socket and the rustls state, for the kernel TLS hand-off. With a
    /// record-bounded handshake nothing past it was read from the socket.
    pub fn into_parts(self) -> (TcpStream, Connection) {
        debug_assert!(!self.cipher.pending(), "ciphertext left in user space");
        (self.io, self.tls)
    }

    /// Rebuilds a stream from `into_parts` (a kTLS hand-off that declined):
    /// the session goes on in user space where it stopped.
    pub fn from_parts(io: TcpStream, tls: Connection, peer: Option<Arc<str>>) -> Self {
        TlsStream {
            io,
            tls,
            cipher: Cipher::default(),
            out: Vec::new(),
            peer,
        }
    }

    /// Frees the ciphertext buffer while nothing is pending (idle).
    pub fn release_buffers(&mut self) {
        self.cipher.release();
        if self.out.is_empty() {
            self.out = Vec::new();
        }
    }

    /// Ready to read: decrypted or undecrypted bytes in hand, or the socket
    /// is readable.
    pub async fn readable(&mut self, relaxed: bool) -> io::Result<()> {
        if self.cipher.pending() || has_plain(&mut self.tls) {
            return Ok(());
        }
        self.io.readable(relaxed).await
    }

    pub fn into_split(self) -> (TlsRead, TlsWrite) {
        let tls = Rc::new(RefCell::new(self.tls));
        let (r, w) = self.io.into_split();
        (
            TlsRead {
                io: r,
                tls: tls.clone(),
                cipher: self.cipher,
            },
            TlsWrite {
                io: w,
                tls,
                out: self.out,
            },
        )
    }
}

/// The read half of a split TLS stream.
pub struct TlsRead {
    io: OwnedReadHalf<TcpStream>,
    tls: Rc<RefCell<Connection>>,
    cipher: Cipher,
}

/// The write half of a split TLS stream.
pub struct TlsWrite {
    io: OwnedWriteHalf<TcpStream>,
    tls: Rc<RefCell<Connection>>,
    out: Vec<u8>,
}

/// The reading side over fields `io`, `tls` and `cipher` (the whole stream
/// and its read half share it).
macro_rules! tls_read {
    ($t:ty) => {
        impl AsyncReadRent for $t {
            async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
                read_plain(&mut self.io, &mut self.tls, &mut self.cipher, buf).await
            }

            async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
                let raw = first_iovec_mut(&mut buf);
                let (res, _) = read_plain(&mut self.io, &mut self.tls, &mut self.cipher, raw).await;
                if let Ok(n) = res {
                    // SAFETY: n bytes were written into the first non-empty iovec.
                    unsafe { buf.set_init(n) };
                }
                (res, buf)
            }
        }
    };
}

/// The writing side over fields `io`, `tls` and `out`.
macro_rules! tls_write {
    ($t:ty) => {
        impl AsyncWriteRent for $t {
            async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                write_plain(&mut self.io, &mut self.tls, &mut self.out, buf).await
            }

            async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                let raw = first_iovec(&buf);
                let (res, _) = write_plain(&mut self.io, &mut self.tls, &mut self.out, raw).await;
                (res, buf)
            }

            async fn flush(&mut self) -> io::Result<()> {
                flush_tls(&mut self.io, &mut self.tls, &mut self.out).await
            }

            async fn shutdown(&mut self) -> io::Result<()> {
                shutdown_tls(&mut self.io, &mut self.tls, &mut self.out).await
            }
        }
    };
}

tls_read!(TlsStream);
tls_write!(TlsStream);
tls_read!(TlsRead);
tls_write!(TlsWrite);
