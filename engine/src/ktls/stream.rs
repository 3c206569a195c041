//! `KtlsStream`: a TCP socket whose TLS records the kernel en/decrypts. Reads
//! and writes are plain monoio ops (io_uring or epoll); only non-data records
//! (EIO on read) and close_notify take a synchronous cmsg syscall.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Split};
use monoio::net::TcpStream;
use monoio::BufResult;

use super::record::{self, Control};

/// Read side after `into_split()` (monoio's `Splitable`).
pub type ReadHalf = OwnedReadHalf<KtlsStream>;
/// Write side after `into_split()`.
pub type WriteHalf = OwnedWriteHalf<KtlsStream>;

/// The kernel writes at most this much plaintext per record.
const MAX_RECORD: u64 = 1 << 14;

/// How many records this connection's key has protected, against the limit
/// of its AEAD. The kernel does not re-key (and we never send KeyUpdate), so
/// a connection near the limit must be retired: taken out of the pool and
/// closed. A handle stays valid after the stream is split.
#[derive(Debug, Clone)]
pub struct KeyUsage(Rc<Usage>);

#[derive(Debug)]
struct Usage {
    records: Cell<u64>,
    limit: u64,
}

impl KeyUsage {
    pub(crate) fn new(first_seq: u64, limit: u64) -> Self {
        KeyUsage(Rc::new(Usage {
            records: Cell::new(first_seq),
            limit,
        }))
    }

    /// Records sent under the current key (an upper bound: each write
    /// counts as ceil(len / 16 KiB) records, which is what the kernel makes
    /// of a write without MSG_MORE).
    pub fn records(&self) -> u64 {
        self.0.records.get()
    }

    pub fn near_limit(&self) -> bool {
        self.0.records.get() >= self.0.limit
    }

    fn add_write(&self, bytes: usize) {
        let recs = (bytes as u64).div_ceil(MAX_RECORD);
        self.0
            .records
            .set(self.0.records.get().saturating_add(recs));
    }
}

/// Retire at half the AEAD's confidentiality limit (RFC 8446 §5.5; rustls
/// gives 2^24.5 records for AES-GCM and no limit for ChaCha20-Poly1305).
pub(crate) fn retire_after(confidentiality_limit: u64) -> u64 {
    confidentiality_limit / 2
}

/// A TLS 1.3 connection after the hand-off to the kernel.
#[derive(Debug)]
pub struct KtlsStream {
    tcp: TcpStream,
    /// Read side only: close_notify seen.
    rx_eof: bool,
    /// Write side only: close_notify sent.
    tx_closed: bool,
    usage: KeyUsage,
}

// SAFETY: reads touch `tcp` reads and `rx_eof`; writes touch `tcp` writes,
// `tx_closed` and `usage`. The two never share state (TcpStream is Split).
unsafe impl Split for KtlsStream {}

impl KtlsStream {
    /// Wraps a socket on which TLS_TX and TLS_RX are already set.
    pub(crate) fn new(tcp: TcpStream, usage: KeyUsage) -> Self {
        KtlsStream {
            tcp,
            rx_eof: false,
            tx_closed: false,
            usage,
        }
    }

    pub fn key_usage(&self) -> KeyUsage {
        self.usage.clone()
    }

    /// The connection should not be reused: its key is near its usage limit.
    pub fn near_key_limit(&self) -> bool {
        self.usage.near_limit()
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// After an EIO: take the control record. Ok(true) = EOF, Ok(false) = read again.
    fn on_eio(&mut self) -> io::Result<bool> {
        match record::take(self.tcp.as_raw_fd())? {
            Control::Eof => {
                self.rx_eof = true;
                Ok(true)
            }
            Control::Skip => Ok(false),
        }
    }
}

fn is_eio(r: &io::Result<usize>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EIO))
}

impl AsRawFd for KtlsStream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl AsyncReadRent for KtlsStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        let mut buf = buf;
        loop {
            if self.rx_eof {
                return (Ok(0), buf);
            }
            let (res, b) = self.tcp.read(buf).await;
            buf = b;
            if !is_eio(&res) {
                return (res, buf);
            }
            if let Err(e) = self.on_eio() {
                return (Err(e), buf);
            }
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        let mut buf = buf;
        loop {
            if self.rx_eof {
                return (Ok(0), buf);
            }
            let (res, b) = self.tcp.readv(buf).await;
            buf = b;
            if !is_eio(&res) {
                return (res, buf);
            }
            if let Err(e) = self.on_eio() {
                return (Err(e), buf);
            }
        }
    }
}

impl AsyncWriteRent for KtlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let (res, buf) = self.tcp.write(buf).await;
        if let Ok(n) = res {
            self.usage.add_write(n);
        }
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let (res, buf) = self.tcp.writev(buf).await;
        if let Ok(n) = res {
            self.usage.add_write(n);
        }
        (res, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush().await
    }

    /// Sends close_notify (an alert record through the TLS_SET_RECORD_TYPE
    /// cmsg), then shuts the write side of the socket.
    async fn shutdown(&mut self) -> io::Result<()> {
        if !self.tx_closed {
            let fd = self.tcp.as_raw_fd();
            loop {
                // level warning (1), close_notify (0)
                let mut alert = [1u8, 0];
                match ktls_core::ffi::send_tls_control_message(
                    fd,
                    ktls_core::tls::ContentType::Alert,
                    &mut alert,
                ) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.tcp.writable(false).await?
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.tx_closed = true;
        }
        self.tcp.shutdown().await
    }
}
