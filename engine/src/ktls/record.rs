//! Non-data TLS records on a kTLS socket. Once TLS_RX is set, a read that
//! meets an alert or handshake record fails with EIO; the record is then taken
//! with `recvmsg` and its type comes back in a TLS_GET_RECORD_TYPE cmsg.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Session tickets the kernel met after a hand-off and we skipped (process-wide).
pub(crate) static TICKETS_SKIPPED: AtomicU64 = AtomicU64::new(0);

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const ALERT_CLOSE_NOTIFY: u8 = 0;
const HANDSHAKE_NEW_SESSION_TICKET: u8 = 4;
const HANDSHAKE_KEY_UPDATE: u8 = 24;
/// The largest TLS plaintext record (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;

/// What a control record means for the reader.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// close_notify: end of stream.
    Eof,
    /// Nothing for the application (a session ticket; no record after all).
    Skip,
}

/// Takes the record at the head of the socket's receive queue (after an EIO)
/// and says what it means. Synchronous: the record is already queued.
pub(crate) fn take(fd: RawFd) -> io::Result<Control> {
    let mut buf = vec![0u8; MAX_RECORD + 256];
    match recv_record(fd, &mut buf) {
        Ok((kind, n)) => classify(kind, &buf[..n]),
        // Another reader took it first, or the EIO was not a record: retry.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Control::Skip),
        Err(e) => Err(e),
    }
}

/// The meaning of one record of `kind` with `payload` (the kernel strips the
/// record header; a handshake payload starts with its 4-byte message header).
pub(crate) fn classify(kind: u8, payload: &[u8]) -> io::Result<Control> {
    match kind {
        CONTENT_ALERT => match payload {
            [_, ALERT_CLOSE_NOTIFY] => Ok(Control::Eof),
            [level, desc] => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("peer sent TLS alert {desc} (level {level})"),
            )),
            _ => Err(invalid("malformed TLS alert record")),
        },
        CONTENT_HANDSHAKE => match payload.first() {
            Some(&HANDSHAKE_NEW_SESSION_TICKET) => {
                TICKETS_SKIPPED.fetch_add(1, Ordering::Relaxed);
                Ok(Control::Skip)
            }
            Some(&HANDSHAKE_KEY_UPDATE) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "peer key update unsupported on this kernel",
            )),
            Some(t) => Err(invalid(&format!(
                "unexpected TLS handshake message {t} after the handshake"
            ))),
            None => Err(invalid("empty TLS handshake record")),
        },
        // The kernel hands application data to plain reads; seeing it here
        // would mean the EIO was something else.
        CONTENT_APPLICATION_DATA => Err(invalid("unexpected application data on the control path")),
        other => Err(invalid(&format!("unexpected TLS record type {other}"))),
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// `recvmsg` of one record with its TLS_GET_RECORD_TYPE cmsg:
/// (record type, payload length). ktls-core's `recv_tls_record` does the same
/// but keeps the payload where its public API cannot read it.
fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(u8, usize)> {
    // u64 storage keeps the cmsg buffer aligned for `cmsghdr`.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths); the
    // fields set below point to `iov`, `buf` and `control`, which outlive the
    // call, with their true lengths.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: see above; recvmsg writes at most iov_len / msg_controllen bytes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("TLS record type cmsg truncated"));
    }
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR stay
    // within msg_control/msg_controllen and return null past the end.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_TLS && (*c).cmsg_type == libc::TLS_GET_RECORD_TYPE {
                return Ok((*libc::CMSG_DATA(c), n as usize));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // No cmsg: a plain data read (the socket is not kTLS, or the record was
    // application data); hand the bytes back as such.
    Ok((CONTENT_APPLICATION_DATA, n as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_notify_is_eof() {
        assert_eq!(classify(CONTENT_ALERT, &[1, 0]).unwrap(), Control::Eof);
    }

    #[test]
    fn other_alert_is_an_error() {
        let e = classify(CONTENT_ALERT, &[2, 40]).unwrap_err();
        assert_eq!(e.to_string(), "peer sent TLS alert 40 (level 2)");
        assert!(classify(CONTENT_ALERT, &[2]).is_err());
    }

    #[test]
    fn session_ticket_is_skipped_key_update_refused() {
        assert_eq!(
            classify(CONTENT_HANDSHAKE, &[4, 0, 0, 1, 0]).unwrap(),
            Control::Skip
        );
        let e = classify(CONTENT_HANDSHAKE, &[24, 0, 0, 1, 0]).unwrap_err();
        assert_eq!(e.to_string(), "peer key update unsupported on this kernel");
        assert!(classify(CONTENT_HANDSHAKE, &[]).is_err());
        assert!(classify(CONTENT_HANDSHAKE, &[1, 0, 0, 0]).is_err());
    }

    #[test]
    fn data_and_unknown_types_are_errors() {
        assert!(classify(CONTENT_APPLICATION_DATA, b"x").is_err());
        assert!(classify(20, &[1]).is_err());
    }
}
