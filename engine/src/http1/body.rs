//! Streams one message body from a source to a destination without holding it
//! whole: the bytes are written out of the same buffer they were read into.
//! Chunked bodies are validated on the way (a bad chunk stops the transfer) but
//! forwarded byte for byte, trailers included.

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::codec::{BodyFraming, ChunkedState};
use crate::io::{read_append, write_range_within};

/// Trailer section limit for chunked bodies.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The source closed before the body ended.
    SrcClosed,
    SrcError,
    SrcTimeout,
    DstError,
    /// A write to the destination made no progress for `dst_timeout`.
    DstTimeout,
    /// Invalid chunked framing from the source.
    Framing,
}

/// Bytes a body transfer moved.
#[derive(Debug, Default, Clone, Copy)]
pub struct Transfer {
    /// Written to the destination (this body only).
    pub written: u64,
    /// Newly read from the source (may include bytes after the body).
    pub read: u64,
}

/// Moves the body described by `framing`. `buf` starts with bytes already read
/// from `src` (possibly more than this body). Returns the bytes moved and the
/// buffer, holding whatever followed the body. `idle` bounds each read from
/// `src`, `dst_timeout` each write to `dst` (no progress: `DstTimeout`).
pub async fn forward<S: AsyncReadRent, D: AsyncWriteRent>(
    src: &mut S,
    dst: &mut D,
    mut buf: Vec<u8>,
    framing: BodyFraming,
    idle: Duration,
    dst_timeout: Duration,
    dechunk: bool,
) -> (Result<Transfer, BodyError>, Vec<u8>) {
    let mut t = Transfer::default();
    // Set once a read fills the buffer: the rest moves in bulk-size reads.
    let mut bulk = false;
    let mut chunked = ChunkedState::new(MAX_TRAILER_BYTES);
    // De-chunked payload for an HTTP/1.0 peer; only allocated on that path.
    let mut plain: Vec<u8> = Vec::new();
    let mut remaining = match framing {
        BodyFraming::None => return (Ok(t), buf),
        BodyFraming::ContentLength(n) => n,
        BodyFraming::Chunked | BodyFraming::UntilClose => u64::MAX,
    };
    loop {
        if !buf.is_empty() {
            let (take, done) = match framing {
                BodyFraming::ContentLength(_) => {
                    let take = remaining.min(buf.len() as u64) as usize;
                    remaining -= take as u64;
                    (take, remaining == 0)
                }
                BodyFraming::Chunked if dechunk => {
                    plain.clear();
                    let p = match chunked.feed_with(&buf, |d| plain.extend_from_slice(d)) {
                        Ok(p) => p,
                        Err(_) => return (Err(BodyError::Framing), buf),
                    };
                    let n = plain.len();
                    let (res, p2) =
                        write_range_within(dst, std::mem::take(&mut plain), 0, n, dst_timeout)
                            .await;
                    plain = p2;
                    if let Err(e) = res {
                        return (Err(dst_error(&e)), buf);
                    }
                    t.written += n as u64;
                    buf.drain(..p.consumed);
                    if p.done {
                        return (Ok(t), buf);
                    }
                    (0, false)
                }
                BodyFraming::Chunked => match chunked.feed(&buf) {
                    Ok(p) => (p.consumed, p.done),
                    Err(_) => return (Err(BodyError::Framing), buf),
                },
                _ => (buf.len(), false),
            };
            let (res, b) = write_range_within(dst, buf, 0, take, dst_timeout).await;
            buf = b;
            if let Err(e) = res {
                return (Err(dst_error(&e)), buf);
            }
            t.written += take as u64;
            buf.drain(..take);
            if done {
                return (Ok(t), buf);
            }
        } else if remaining == 0 {
            return (Ok(t), buf);
        }
        // Everything buffered was body and is written: read more.
        buf.clear();
        let cap = buf.capacity().max(crate::worker::BUF_SIZE);
        let want = if bulk {
            crate::worker::BULK_BUF_SIZE
        } else {
            cap
        };
        match monoio::time::timeout(idle, read_append(src, buf, want)).await {
            Err(_) => return (Err(BodyError::SrcTimeout), Vec::new()),
            Ok((res, b)) => {
                buf = b;
                match res {
                    Ok(0) if framing == BodyFraming::UntilClose => return (Ok(t), buf),
                    Ok(0) => return (Err(BodyError::SrcClosed), buf),
                    Ok(n) => {
                        t.read += n as u64;
                        bulk |= n >= cap;
                    }
                    Err(_) => return (Err(BodyError::SrcError), buf),
                }
            }
        }
    }
}

fn dst_error(e: &std::io::Error) -> BodyError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        BodyError::DstTimeout
    } else {
        BodyError::DstError
    }
}
