//! A proxied connection: plain TCP or TLS (rustls in user space). Every
//! byte-moving path (HTTP/1 both ways, L4, the pool, tunnels) works on this
//! type; for plaintext an operation costs one enum match more than before.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;

use crate::tls::{TlsRead, TlsStream, TlsWrite};

#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Conn {
    /// The SPIFFE ID of a verified mTLS peer.
    pub fn peer_identity(&self) -> Option<&Arc<str>> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(t) => t.peer_identity(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.tcp(),
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
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.readv(buf).await,
            Conn::Tls(t) => t.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Conn {
    #[inline]
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.write(buf).await,
            Conn::Tls(t) => t.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.writev(buf).await,
            Conn::Tls(t) => t.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush().await,
            Conn::Tls(t) => t.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(t) => t.shutdown().await,
        }
    }
}

/// The read half of a split connection (tunnels).
pub enum ConnRead {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(TlsRead),
}

/// The write half of a split connection (tunnels).
pub enum ConnWrite {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(TlsWrite),
}

impl AsyncReadRent for ConnRead {
    #[inline]
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnRead::Plain(s) => s.read(buf).await,
            ConnRead::Tls(t) => t.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnRead::Plain(s) => s.readv(buf).await,
            ConnRead::Tls(t) => t.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for ConnWrite {
    #[inline]
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnWrite::Plain(s) => s.write(buf).await,
            ConnWrite::Tls(t) => t.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnWrite::Plain(s) => s.writev(buf).await,
            ConnWrite::Tls(t) => t.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            ConnWrite::Plain(s) => s.flush().await,
            ConnWrite::Tls(t) => t.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            ConnWrite::Plain(s) => s.shutdown().await,
            ConnWrite::Tls(t) => t.shutdown().await,
        }
    }
}
