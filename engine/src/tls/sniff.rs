//! PERMISSIVE listeners: tell a TLS ClientHello from plaintext by peeking at
//! the first bytes (MSG_PEEK leaves them queued for whoever reads next).

use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    Tls,
    Plain,
    NeedMore,
}

/// A handshake record (0x16 0x03 0x0{0..4}, 2-byte length) holding a
/// ClientHello (0x01). Any other first byte is plaintext.
pub fn classify(b: &[u8]) -> Sniff {
    match b {
        [] => Sniff::NeedMore,
        [first, ..] if *first != 0x16 => Sniff::Plain,
        _ if b.len() < 6 => Sniff::NeedMore,
        _ if b[1] == 0x03 && b[2] <= 0x04 && b[5] == 0x01 => Sniff::Tls,
        _ => Sniff::Plain,
    }
}

fn peek(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: recv on the stream's own fd into a stack buffer; MSG_PEEK and
    // MSG_DONTWAIT neither consume data nor block.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether the client starts with a TLS ClientHello. Nothing within
/// `timeout` (a server-speaks-first protocol), EOF or an error: plaintext;
/// the plaintext path then sees the EOF or error itself.
pub async fn detect(s: &TcpStream, timeout: Duration) -> bool {
    let work = async {
        let mut b = [0u8; 6];
        loop {
            match peek(s, &mut b) {
                Ok(0) => return false,
                Ok(n) => match classify(&b[..n]) {
                    Sniff::Tls => return true,
                    Sniff::Plain => return false,
                    // A partial header: readiness would fire at once again.
                    Sniff::NeedMore => {
                        monoio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
            if s.readable(false).await.is_err() {
                return false;
            }
        }
    };
    monoio::time::timeout(timeout, work).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(b""), Sniff::NeedMore);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Sniff::Plain);
        assert_eq!(classify(&[0x16, 0x03]), Sniff::NeedMore);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), Sniff::Tls);
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x02]),
            Sniff::Plain
        );
        assert_eq!(
            classify(&[0x16, 0x09, 0x01, 0x02, 0x00, 0x01]),
            Sniff::Plain
        );
    }
}
