//! The hand-off: a finished rustls session becomes a `KtlsStream`.
//! Precondition (the TLS driver's record-bounded handshake): no ciphertext past
//! the handshake left the socket, so the kernel's receive queue starts exactly
//! at the record rustls' rx sequence number points to.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd};

use monoio::net::TcpStream;

use super::crypto::{crypto_info, Suite};
use super::stream::{retire_after, KeyUsage, KtlsStream};

/// Why `offload` did not produce a `KtlsStream`.
#[derive(Debug)]
pub enum OffloadError {
    /// Nothing was taken from the session: carry on in user-space rustls with
    /// the socket and connection as they are.
    Declined(Box<Declined>),
    /// The secrets had already left rustls when the kernel refused them; the
    /// session cannot continue anywhere. Close the socket.
    Failed(io::Error),
}

/// The pieces given back by a declined hand-off.
#[derive(Debug)]
pub struct Declined {
    pub tcp: TcpStream,
    pub conn: rustls::Connection,
    pub error: io::Error,
}

impl OffloadError {
    pub fn error(&self) -> &io::Error {
        match self {
            OffloadError::Declined(d) => &d.error,
            OffloadError::Failed(error) => error,
        }
    }
}

/// Moves a finished TLS 1.3 session into the kernel. On success also returns
/// the plaintext rustls had already decrypted (deliver it before reading the
/// stream). Everything that can be checked without touching the session is
/// checked first, so the common refusals (no kTLS, a suite the kernel lacks)
/// give the pieces back.
pub fn offload(
    tcp: TcpStream,
    mut conn: rustls::Connection,
) -> Result<(KtlsStream, Vec<u8>), OffloadError> {
    let decline = |tcp, conn, kind, msg: String| {
        super::count_offload(false);
        Err(OffloadError::Declined(Box::new(Declined {
            tcp,
            conn,
            error: io::Error::new(kind, msg),
        })))
    };
    if conn.is_handshaking() {
        return decline(
            tcp,
            conn,
            io::ErrorKind::InvalidInput,
            "the handshake is not finished".into(),
        );
    }
    if conn.wants_write() {
        return decline(
            tcp,
            conn,
            io::ErrorKind::InvalidInput,
            "rustls still holds TLS records to send; flush before the hand-off".into(),
        );
    }
    let negotiated = conn.negotiated_cipher_suite();
    let (suite, limit) = match negotiated.and_then(|s| Some((Suite::of(s)?, s))) {
        Some((suite, rustls::SupportedCipherSuite::Tls13(s))) => {
            (suite, s.common.confidentiality_limit)
        }
        _ => {
            let name = negotiated.map_or_else(|| "none".to_owned(), |s| format!("{:?}", s.suite()));
            return decline(
                tcp,
                conn,
                io::ErrorKind::Unsupported,
                format!("cipher suite {name} is not offloaded (TLS 1.3 AEADs only)"),
            );
        }
    };
    if let Some(support) = super::enabled() {
        if !support.has(suite) {
            return decline(
                tcp,
                conn,
                io::ErrorKind::Unsupported,
                format!("the kernel refused {} at the probe", suite.name()),
            );
        }
    }
    let pending = match conn.process_new_packets() {
        Ok(state) if state.peer_has_closed() => {
            return decline(
                tcp,
                conn,
                io::ErrorKind::UnexpectedEof,
                "the peer already sent close_notify".into(),
            );
        }
        Ok(state) => state.plaintext_bytes_to_read(),
        Err(e) => {
            return decline(
                tcp,
                conn,
                io::ErrorKind::InvalidData,
                format!("rustls: {e}"),
            )
        }
    };
    // SAFETY: `tcp` owns the descriptor and outlives every use of `fd` below
    // (they all end before `tcp` is moved into the stream or dropped).
    let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
    if let Err(e) = ktls_core::setup_ulp(&fd) {
        // An ULP without keys leaves the socket a plain TCP socket, and a
        // failed setsockopt changed nothing: user space can go on.
        let kind = if e.is_ktls_unsupported() {
            io::ErrorKind::Unsupported
        } else {
            io::ErrorKind::Other
        };
        return decline(tcp, conn, kind, format!("kTLS: {e}"));
    }
    // From here on the session is committed to the kernel.
    let fail = |msg: String| {
        super::count_offload(false);
        Err(OffloadError::Failed(io::Error::other(msg)))
    };
    let mut plaintext = vec![0u8; pending];
    if let Err(e) = conn.reader().read_exact(&mut plaintext) {
        return fail(format!("draining rustls plaintext: {e}"));
    }
    let secrets = match conn.dangerous_extract_secrets() {
        Ok(s) => s,
        Err(e) => return fail(format!("extracting TLS secrets: {e}")),
    };
    let info = match crypto_info(suite, secrets) {
        Ok(i) => i,
        Err(e) => return fail(format!("kTLS crypto info: {e}")),
    };
    let tx_seq = info.tx_seq;
    let (tx, rx) = match info.into_kernel() {
        Ok(k) => k,
        Err(e) => return fail(format!("kTLS crypto info: {e}")),
    };
    if let Err(e) = tx.set(&fd) {
        return fail(format!("kTLS TLS_TX: {e}"));
    }
    if let Err(e) = rx.set(&fd) {
        return fail(format!("kTLS TLS_RX: {e}"));
    }
    super::count_offload(true);
    let usage = KeyUsage::new(tx_seq, retire_after(limit));
    Ok((KtlsStream::new(tcp, usage), plaintext))
}
