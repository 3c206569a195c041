//! A proxied connection: plain TCP, TLS (rustls in user space) or kernel TLS
//! (after the hand-off; the kernel en/decrypts). Every byte-moving path
//! (HTTP/1 both ways, L4, the pool, tunnels) works on this type; for
//! plaintext an operation costs one enum match more than before.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;

use crate::ktls::KtlsStream;
use crate::tls::{TlsRead, TlsStream, TlsWrite};

#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    Ktls(Box<KtlsConn>),
}

/// Plaintext rustls had already decrypted when the session moved to the
/// kernel: read before anything from the socket.
#[derive(Debug, Default)]
struct Prefix {
    buf: Vec<u8>,
    pos: usize,
}

impl Prefix {
    fn pending(&self) -> bool {
        self.pos < self.buf.len()
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        if !self.pending() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    fn copy_into<T: IoBufMut>(&mut self, buf: &mut T) -> usize {
        let n = (self.buf.len() - self.pos).min(buf.bytes_total());
        // SAFETY: write_ptr is valid for bytes_total bytes of the owned
        // buffer; the source is our own distinct Vec.
        unsafe {
            std::ptr::copy_nonoverlapping(self.buf.as_ptr().add(self.pos), buf.write_ptr(), n);
            buf.set_init(n);
        }
        self.advance(n);
        n
    }

    fn copy_into_vec<T: IoVecBufMut>(&mut self, buf: &mut T) -> usize {
        let (p, cnt) = (buf.write_iovec_ptr(), buf.write_iovec_len());
        let mut total = 0;
        for i in 0..cnt {
            let left = self.buf.len() - self.pos - total;
            if left == 0 {
                break;
            }
            // SAFETY: the iovec array is valid for `cnt` entries while we own
            // `buf`, and each entry for iov_len bytes.
            unsafe {
                let v = *p.add(i);
                let n = left.min(v.iov_len);
                std::ptr::copy_nonoverlapping(
                    self.buf.as_ptr().add(self.pos + total),
                    v.iov_base.cast::<u8>(),
                    n,
                );
                total += n;
            }
        }
        // SAFETY: `total` bytes were written from the first iovec on.
        unsafe { buf.set_init(total) };
        self.advance(total);
        total
    }
}

/// A TLS 1.3 session moved to the kernel, with what the hand-off left over:
/// the plaintext rustls had already decrypted and the verified peer identity
/// (rustls, which held it, is gone).
#[derive(Debug)]
pub struct KtlsConn {
    stream: KtlsStream,
    prefix: Prefix,
    peer: Option<Arc<str>>,
    /// ALPN settled on `h2`.
    h2: bool,
}

impl KtlsConn {
    pub fn new(stream: KtlsStream, plaintext: Vec<u8>, peer: Option<Arc<str>>) -> Self {
        KtlsConn {
            stream,
            prefix: Prefix {
                buf: plaintext,
                pos: 0,
            },
            peer,
            h2: false,
        }
    }

    pub fn with_h2(mut self, h2: bool) -> Self {
        self.h2 = h2;
        self
    }

    pub fn stream(&self) -> &KtlsStream {
        &self.stream
    }
}

impl AsyncReadRent for KtlsConn {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if self.prefix.pending() {
            let n = self.prefix.copy_into(&mut buf);
            return (Ok(n), buf);
        }
        self.stream.read(buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if self.prefix.pending() {
            let n = self.prefix.copy_into_vec(&mut buf);
            return (Ok(n), buf);
        }
        self.stream.readv(buf).await
    }
}

impl AsyncWriteRent for KtlsConn {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.stream.write(buf).await
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.stream.writev(buf).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

/// The read half of a split kTLS connection.
pub struct KtlsRead {
    half: crate::ktls::ReadHalf,
    prefix: Prefix,
}

impl AsyncReadRent for KtlsRead {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if self.prefix.pending() {
            let n = self.prefix.copy_into(&mut buf);
            return (Ok(n), buf);
        }
        self.half.read(buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if self.prefix.pending() {
            let n = self.prefix.copy_into_vec(&mut buf);
            return (Ok(n), buf);
        }
        self.half.readv(buf).await
    }
}

impl Conn {
    /// The SPIFFE ID of a verified mTLS peer.
    pub fn peer_identity(&self) -> Option<&Arc<str>> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(t) => t.peer_identity(),
            Conn::Ktls(k) => k.peer.as_ref(),
        }
    }

    /// TLS settled on ALPN `h2`.
    pub fn alpn_h2(&self) -> bool {
        match self {
            Conn::Plain(_) => false,
            Conn::Tls(t) => t.alpn_protocol() == Some(b"h2"),
            Conn::Ktls(k) => k.h2,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Conn::Plain(_))
    }

    /// May go back to a keep-alive pool: false for a kTLS connection whose
    /// key is near its usage limit (the kernel does not re-key; retire it).
    pub fn reusable(&self) -> bool {
        match self {
            Conn::Ktls(k) => !k.stream.near_key_limit(),
            _ => true,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.tcp(),
            Conn::Ktls(k) => k.stream.tcp(),
        }
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }

    /// Waits until a read would make progress.
    pub async fn readable(&mut self, relaxed: bool) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.readable(relaxed).await,
            Conn::Tls(t) => t.readable(relaxed).await,
            Conn::Ktls(k) if k.prefix.pending() => Ok(()),
            Conn::Ktls(k) => k.stream.tcp().readable(relaxed).await,
        }
    }

    /// Drops per-connection buffers while idle (TLS ciphertext buffer).
    pub fn release_buffers(&mut self) {
        if let Conn::Tls(t) = self {
            t.release_buffers();
        }
    }

    pub fn into_split(self) -> (ConnRead, ConnWrite) {
        match self {
            Conn::Plain(s) => {
                let (r, w) = s.into_split();
                (ConnRead::Plain(r), ConnWrite::Plain(w))
            }
            Conn::Tls(t) => {
                let (r, w) = t.into_split();
                (ConnRead::Tls(r), ConnWrite::Tls(w))
            }
            Conn::Ktls(k) => {
                let k = *k;
                let (r, w) = k.stream.into_split();
                (
                    ConnRead::Ktls(KtlsRead {
                        half: r,
                        prefix: k.prefix,
                    }),
                    ConnWrite::Ktls(w),
                )
            }
        }
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl From<TcpStream> for Conn {
    fn from(s: TcpStream) -> Self {
        Conn::Plain(s)
    }
}

impl AsyncReadRent for Conn {
    #[inline]
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(t) => t.read(buf).await,
            Conn::Ktls(k) => k.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.readv(buf).await,
            Conn::Tls(t) => t.readv(buf).await,
            Conn::Ktls(k) => k.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Conn {
    #[inline]
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.write(buf).await,
            Conn::Tls(t) => t.write(buf).await,
            Conn::Ktls(k) => k.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.writev(buf).await,
            Conn::Tls(t) => t.writev(buf).await,
            Conn::Ktls(k) => k.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush().await,
            Conn::Tls(t) => t.flush().await,
            Conn::Ktls(k) => k.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(t) => t.shutdown().await,
            Conn::Ktls(k) => k.shutdown().await,
        }
    }
}

/// The read half of a split connection (tunnels).
pub enum ConnRead {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(TlsRead),
    Ktls(KtlsRead),
}

/// The write half of a split connection (tunnels).
pub enum ConnWrite {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(TlsWrite),
    Ktls(crate::ktls::WriteHalf),
}

impl AsyncReadRent for ConnRead {
    #[inline]
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnRead::Plain(s) => s.read(buf).await,
            ConnRead::Tls(t) => t.read(buf).await,
            ConnRead::Ktls(k) => k.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnRead::Plain(s) => s.readv(buf).await,
            ConnRead::Tls(t) => t.readv(buf).await,
            ConnRead::Ktls(k) => k.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for ConnWrite {
    #[inline]
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnWrite::Plain(s) => s.write(buf).await,
            ConnWrite::Tls(t) => t.write(buf).await,
            ConnWrite::Ktls(k) => k.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnWrite::Plain(s) => s.writev(buf).await,
            ConnWrite::Tls(t) => t.writev(buf).await,
            ConnWrite::Ktls(k) => k.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            ConnWrite::Plain(s) => s.flush().await,
            ConnWrite::Tls(t) => t.flush().await,
            ConnWrite::Ktls(k) => k.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            ConnWrite::Plain(s) => s.shutdown().await,
            ConnWrite::Tls(t) => t.shutdown().await,
            ConnWrite::Ktls(k) => k.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    //! `Conn::Ktls` over a plain socket (no kernel TLS needed: the kernel
    //! would only en/decrypt beneath these reads and writes).

    use std::io::{Read, Write};

    use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};

    use super::*;
    use crate::ktls::KeyUsage;

    fn pair() -> (TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (TcpStream::from_std(s).unwrap(), c)
    }

    fn ktls(tcp: TcpStream, prefix: &[u8], limit: u64) -> Conn {
        let stream = KtlsStream::new(tcp, KeyUsage::new(0, limit));
        let id: Arc<str> = "spiffe://td/ns/default/sa/a".into();
        Conn::Ktls(Box::new(KtlsConn::new(stream, prefix.to_vec(), Some(id))))
    }

    fn runtimes(f: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) {
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build() {
            rt.block_on(f());
        }
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap()
            .block_on(f());
    }

    #[test]
    fn ktls_conn_reads_the_handoff_plaintext_first() {
        runtimes(|| {
            Box::pin(async {
                let (tcp, mut peer) = pair();
                let mut c = ktls(tcp, b"decrypted-by-rustls|", 1 << 20);
                assert!(c.is_tls() && c.reusable());
                assert_eq!(
                    c.peer_identity().map(|s| &**s),
                    Some("spiffe://td/ns/default/sa/a")
                );
                peer.write_all(b"from-the-kernel").unwrap();
                // Prefix pending: ready without touching the socket.
                c.readable(false).await.unwrap();
                // A small buffer takes the prefix in pieces.
                let (r, b) = c.read(Vec::with_capacity(9)).await;
                assert_eq!((r.unwrap(), &b[..]), (9, &b"decrypted"[..]));
                let (r, b) = c.read_exact(vec![0u8; 11 + 15]).await;
                r.unwrap();
                assert_eq!(&b[..], b"-by-rustls|from-the-kernel");
                let (r, _) = c.write_all(b"pong".to_vec()).await;
                r.unwrap();
                let mut got = [0u8; 4];
                peer.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"pong");

                // Split: the read half starts with the prefix too.
                let (tcp, mut peer) = pair();
                let (mut r, mut w) = ktls(tcp, b"first|", 1 << 20).into_split();
                peer.write_all(b"second").unwrap();
                let (res, b) = r.read_exact(vec![0u8; 12]).await;
                res.unwrap();
                assert_eq!(&b[..], b"first|second");
                let (res, _) = w.write_all(b"ok".to_vec()).await;
                res.unwrap();
                let mut got = [0u8; 2];
                peer.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"ok");
            })
        });
    }

    #[test]
    fn a_ktls_conn_at_its_key_limit_is_not_pooled() {
        runtimes(|| {
            Box::pin(async {
                let ep = crate::upstream::Endpoint::new("127.0.0.1:1".parse().unwrap());
                let (tcp, _peer) = pair();
                let fresh = ktls(tcp, b"", 1 << 20);
                ep.checkin(fresh, 8);
                assert_eq!(ep.idle_count(), 1);
                let (tcp, _peer2) = pair();
                let mut worn = ktls(tcp, b"", 2);
                // Two records written: the limit (2) is reached.
                let (r, _) = worn.write_all(vec![0u8; 20_000]).await;
                r.unwrap();
                assert!(!worn.reusable());
                ep.checkin(worn, 8);
                assert_eq!(ep.idle_count(), 1, "retired, not pooled");
            })
        });
    }
}
