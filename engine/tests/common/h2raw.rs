//! A tiny blocking HTTP/2 client over std::net for protocol and attack tests:
//! it writes exactly the frames a test asks for (preface, SETTINGS, HEADERS
//! with hand-encoded HPACK, CONTINUATION, DATA, RST_STREAM, PING, PRIORITY,
//! WINDOW_UPDATE) and reads frames back, decoding header blocks (HPACK with
//! the static and dynamic tables and Huffman strings) so GOAWAY, RST_STREAM
//! and response headers can be asserted on.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (RFC 9113 7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const INTERNAL_ERROR: u32 = 0x2;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// SETTINGS identifiers.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

// ---------------------------------------------------------------------------
// Writing frames.

/// One frame on the wire.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 1 << 24, "frame payload too large");
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of "literal header field without indexing, new name"
/// representations (RFC 7541 6.2.2), no Huffman: what the peer decodes is
/// exactly these bytes, whatever they are.
pub fn hpack_literal(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in headers {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, n.len());
        out.extend_from_slice(n.as_bytes());
        hpack_int(&mut out, 0, 7, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// HEADERS with END_HEADERS (and END_STREAM if `end_stream`).
pub fn headers_frame(stream: u32, headers: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
    frame(kind::HEADERS, flags, stream, &hpack_literal(headers))
}

/// The request pseudo-headers for `method path` (scheme http, authority localhost)
/// followed by `extra`.
pub fn request_headers<'a>(
    method: &'a str,
    path: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        (":method", method),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", path),
    ];
    h.extend_from_slice(extra);
    h
}

pub fn continuation_frame(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
    let flags = if end_headers { flag::END_HEADERS } else { 0 };
    frame(kind::CONTINUATION, flags, stream, block)
}

pub fn data_frame(stream: u32, data: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    frame(kind::DATA, flags, stream, data)
}

pub fn rst_frame(stream: u32, error: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &error.to_be_bytes())
}

pub fn ping_frame(data: [u8; 8], ack: bool) -> Vec<u8> {
    frame(kind::PING, if ack { flag::ACK } else { 0 }, 0, &data)
}

pub fn settings_frame(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &p)
}

pub fn settings_ack() -> Vec<u8> {
    frame(kind::SETTINGS, flag::ACK, 0, &[])
}

pub fn priority_frame(stream: u32, depends_on: u32, weight: u8) -> Vec<u8> {
    let mut p = (depends_on & 0x7fff_ffff).to_be_bytes().to_vec();
    p.push(weight);
    frame(kind::PRIORITY, 0, stream, &p)
}

pub fn window_update_frame(stream: u32, increment: u32) -> Vec<u8> {
    frame(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn goaway_frame(last_stream: u32, error: u32) -> Vec<u8> {
    let mut p = last_stream.to_be_bytes().to_vec();
    p.extend_from_slice(&error.to_be_bytes());
    frame(kind::GOAWAY, 0, 0, &p)
}

// ---------------------------------------------------------------------------
// Frames read back.

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
    /// HEADERS / PUSH_PROMISE: the decoded header list (CONTINUATIONs merged).
    pub headers: Vec<(String, String)>,
}

impl Frame {
    pub fn is(&self, kind: u8) -> bool {
        self.kind == kind
    }
    pub fn end_stream(&self) -> bool {
        matches!(self.kind, kind::DATA | kind::HEADERS) && self.flags & flag::END_STREAM != 0
    }
    /// GOAWAY: (last stream id, error code).
    pub fn goaway(&self) -> Option<(u32, u32)> {
        if self.kind != kind::GOAWAY || self.payload.len() < 8 {
            return None;
        }
        let last = u32::from_be_bytes(self.payload[0..4].try_into().unwrap()) & 0x7fff_ffff;
        let code = u32::from_be_bytes(self.payload[4..8].try_into().unwrap());
        Some((last, code))
    }
    /// GOAWAY debug data.
    pub fn goaway_debug(&self) -> String {
        String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default()).into_owned()
    }
    /// RST_STREAM: the error code.
    pub fn rst(&self) -> Option<u32> {
        if self.kind != kind::RST_STREAM || self.payload.len() != 4 {
            return None;
        }
        Some(u32::from_be_bytes(self.payload[..4].try_into().unwrap()))
    }
    /// SETTINGS parameters (empty for an ACK).
    pub fn settings(&self) -> Vec<(u16, u32)> {
        if self.kind != kind::SETTINGS {
            return Vec::new();
        }
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }
    pub fn setting(&self, id: u16) -> Option<u32> {
        self.settings()
            .into_iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| v)
    }
    /// A decoded header's value (HEADERS frames).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// `:status` of a response HEADERS frame.
    pub fn status(&self) -> Option<u16> {
        self.header(":status").and_then(|s| s.parse().ok())
    }
    /// DATA: the data without padding.
    pub fn data(&self) -> &[u8] {
        if self.kind != kind::DATA {
            return &[];
        }
        strip_padding(self.flags, &self.payload).unwrap_or_default()
    }
    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        match self.kind {
            kind::GOAWAY => {
                let (l, c) = self.goaway().unwrap_or_default();
                format!("GOAWAY(last={l}, code={c:#x}, {:?})", self.goaway_debug())
            }
            kind::RST_STREAM => format!(
                "RST_STREAM(stream={}, code={:#x})",
                self.stream,
                self.rst().unwrap_or(u32::MAX)
            ),
            kind::HEADERS => format!(
                "HEADERS(stream={}, flags={:#x}, {:?})",
                self.stream, self.flags, self.headers
            ),
            kind::DATA => format!(
                "DATA(stream={}, flags={:#x}, {} bytes)",
                self.stream,
                self.flags,
                self.payload.len()
            ),
            kind::SETTINGS => format!("SETTINGS(flags={:#x}, {:?})", self.flags, self.settings()),
            kind::PING => format!("PING(flags={:#x})", self.flags),
            kind::WINDOW_UPDATE => format!("WINDOW_UPDATE(stream={})", self.stream),
            k => format!(
                "frame type {k:#x} (stream={}, flags={:#x}, {} bytes)",
                self.stream,
                self.flags,
                self.payload.len()
            ),
        }
    }
}

fn strip_padding(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & flag::PADDED == 0 {
        return Some(payload);
    }
    let pad = *payload.first()? as usize;
    payload.get(1..payload.len().checked_sub(pad)?)
}

/// A response as read by `H2Client::read_response`.
#[derive(Debug, Default, Clone)]
pub struct H2Response {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// The stream was reset with this code.
    pub reset: Option<u32>,
    /// A GOAWAY seen meanwhile: (last stream, code).
    pub goaway: Option<(u32, u32)>,
    /// The stream ended (END_STREAM) normally.
    pub complete: bool,
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a read loop ended with.
#[derive(Debug, Default)]
pub struct Seen {
    pub frames: Vec<Frame>,
    /// The peer closed the connection (EOF or reset).
    pub closed: bool,
    /// The time ran out with the connection still open.
    pub timed_out: bool,
}

impl Seen {
    pub fn goaway(&self) -> Option<(u32, u32)> {
        self.frames.iter().find_map(Frame::goaway)
    }
    pub fn rst(&self, stream: u32) -> Option<u32> {
        self.frames
            .iter()
            .filter(|f| f.stream == stream)
            .find_map(Frame::rst)
    }
    pub fn headers(&self, stream: u32) -> Option<&Frame> {
        self.frames
            .iter()
            .find(|f| f.kind == kind::HEADERS && f.stream == stream)
    }
    pub fn describe(&self) -> String {
        let mut s: Vec<String> = self.frames.iter().map(Frame::describe).collect();
        if s.len() > 40 {
            let n = s.len();
            s.drain(20..n - 20);
            s.insert(20, format!("... ({} frames left out) ...", n - 40));
        }
        format!(
            "[{}] closed={} timed_out={}",
            s.join(", "),
            self.closed,
            self.timed_out
        )
    }
}

// ---------------------------------------------------------------------------
// The client.

pub struct H2Client {
    pub stream: TcpStream,
    rbuf: Vec<u8>,
    decoder: Decoder,
    /// Answer the peer's SETTINGS and PINGs (on by default).
    pub auto_ack: bool,
    /// The peer closed (EOF or reset) while reading.
    pub closed: bool,
    /// Non-blocking reads (poll_frames): no data is "no frame now".
    polling: bool,
}

impl H2Client {
    /// TCP connect, client preface and an empty SETTINGS frame.
    pub fn connect(addr: SocketAddr) -> io::Result<H2Client> {
        H2Client::connect_with_settings(addr, &[])
    }

    pub fn connect_with_settings(addr: SocketAddr, params: &[(u16, u32)]) -> io::Result<H2Client> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        let mut c = H2Client::from_stream(s)?;
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings_frame(params));
        c.write(&hello)?;
        Ok(c)
    }

    /// A client on an already connected socket that has sent nothing yet.
    pub fn from_stream(s: TcpStream) -> io::Result<H2Client> {
        s.set_nodelay(true)?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(H2Client {
            stream: s,
            rbuf: Vec::new(),
            decoder: Decoder::new(),
            auto_ack: true,
            closed: false,
            polling: false,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a request on `stream`: HEADERS (END_STREAM if there is no body),
    /// then the body in DATA frames of at most 16 KiB, the last with END_STREAM.
    pub fn send_request(
        &mut self,
        stream: u32,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<()> {
        let h = request_headers(method, path, extra);
        let mut out = headers_frame(stream, &h, body.is_none());
        if let Some(b) = body {
            if b.is_empty() {
                out.extend_from_slice(&data_frame(stream, &[], true));
            }
            let mut chunks = b.chunks(16 * 1024).peekable();
            while let Some(c) = chunks.next() {
                out.extend_from_slice(&data_frame(stream, c, chunks.peek().is_none()));
            }
        }
        self.write(&out)
    }

    /// Fills the read buffer until it holds `n` bytes. Ok(false): EOF/reset first.
    fn fill(&mut self, n: usize, deadline: Instant) -> io::Result<bool> {
        let mut buf = [0u8; 64 * 1024];
        while self.rbuf.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(ErrorKind::TimedOut, "no frame in time"));
            }
            if !self.polling {
                self.stream
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(false);
                }
                Ok(k) => self.rbuf.extend_from_slice(&buf[..k]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::BrokenPipe
                    ) =>
                {
                    self.closed = true;
                    return Ok(false);
                }
                Err(e) if self.polling && e.kind() == ErrorKind::WouldBlock => {
                    return Err(io::Error::new(ErrorKind::TimedOut, "no frame now"))
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// One frame as it is on the wire. Ok(None): the connection closed.
    fn next_raw(&mut self, deadline: Instant) -> io::Result<Option<Frame>> {
        if !self.fill(9, deadline)? {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, self.rbuf[0], self.rbuf[1], self.rbuf[2]]) as usize;
        if !self.fill(9 + len, deadline)? {
            return Ok(None);
        }
        let head: Vec<u8> = self.rbuf.drain(..9 + len).collect();
        Ok(Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload: head[9..].to_vec(),
            headers: Vec::new(),
        }))
    }

    /// The next frame (HEADERS with their CONTINUATIONs merged and decoded)
    /// within `timeout`. Ok(None): the peer closed the connection. A timeout is
    /// an `ErrorKind::TimedOut` error.
    pub fn read_frame(&mut self, timeout: Duration) -> io::Result<Option<Frame>> {
        let deadline = Instant::now() + timeout;
        let Some(mut f) = self.next_raw(deadline)? else {
            return Ok(None);
        };
        if matches!(f.kind, kind::HEADERS | kind::PUSH_PROMISE) {
            let mut block = header_block_fragment(&f)?;
            let mut flags = f.flags;
            while flags & flag::END_HEADERS == 0 {
                let Some(c) = self.next_raw(deadline)? else {
                    return Ok(None);
                };
                if c.kind != kind::CONTINUATION || c.stream != f.stream {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!("peer sent {} inside a header block", c.describe()),
                    ));
                }
                block.extend_from_slice(&c.payload);
                flags = c.flags;
            }
            f.flags |= flag::END_HEADERS;
            f.headers = self.decoder.decode(&block)?;
        }
        if self.auto_ack && f.flags & flag::ACK == 0 {
            let ack = match f.kind {
                kind::SETTINGS => Some(settings_ack()),
                kind::PING => Some(ping_frame(
                    f.payload[..8.min(f.payload.len())]
                        .try_into()
                        .unwrap_or([0; 8]),
                    true,
                )),
                _ => None,
            };
            if let Some(a) = ack {
                // The peer may be closing: a failed ack is not this read's error.
                let _ = self.write(&a);
            }
        }
        Ok(Some(f))
    }

    /// Reads frames until `stop` says so, the connection closes or `timeout`
    /// passes; everything read is returned.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        mut stop: impl FnMut(&Frame) -> bool,
    ) -> io::Result<Seen> {
        let deadline = Instant::now() + timeout;
        let mut seen = Seen::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                seen.timed_out = true;
                return Ok(seen);
            }
            match self.read_frame(left) {
                Ok(Some(f)) => {
                    let done = stop(&f);
                    seen.frames.push(f);
                    if done {
                        return Ok(seen);
                    }
                }
                Ok(None) => {
                    seen.closed = true;
                    return Ok(seen);
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    seen.timed_out = true;
                    return Ok(seen);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until the connection is closed or `timeout` passes.
    pub fn read_to_close(&mut self, timeout: Duration) -> io::Result<Seen> {
        self.read_until(timeout, |_| false)
    }

    /// The frames that have already arrived, without waiting (a poll between
    /// the writes of a flood).
    pub fn poll_frames(&mut self) -> io::Result<Seen> {
        self.stream.set_nonblocking(true)?;
        self.polling = true;
        let r = self.read_until(Duration::from_secs(5), |_| false);
        self.polling = false;
        self.stream.set_nonblocking(false)?;
        r
    }

    /// Reads the response on `stream`: headers, body (acknowledged with
    /// WINDOW_UPDATEs so any size flows), trailers; stops at END_STREAM, a reset
    /// of the stream, or the connection's end.
    pub fn read_response(&mut self, stream: u32, timeout: Duration) -> io::Result<H2Response> {
        let deadline = Instant::now() + timeout;
        let mut r = H2Response::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("no complete response on stream {stream} in {timeout:?}; so far {r:?}"),
                ));
            }
            let f = match self.read_frame(left) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(r),
                Err(e) if e.kind() == ErrorKind::TimedOut => continue,
                Err(e) => return Err(e),
            };
            if let Some(g) = f.goaway() {
                r.goaway = Some(g);
                continue;
            }
            if f.stream != stream {
                continue;
            }
            match f.kind {
                kind::HEADERS => {
                    let interim = f.status().is_some_and(|s| (100..200).contains(&s));
                    if r.status.is_none() && !interim {
                        r.status = f.status();
                        r.headers = f.headers.clone();
                    } else if !interim {
                        r.trailers = f.headers.clone();
                    }
                }
                kind::DATA => {
                    r.body.extend_from_slice(f.data());
                    let n = f.payload.len() as u32;
                    if n > 0 {
                        let mut wu = window_update_frame(0, n);
                        if !f.end_stream() {
                            wu.extend_from_slice(&window_update_frame(stream, n));
                        }
                        let _ = self.write(&wu);
                    }
                }
                kind::RST_STREAM => {
                    r.reset = f.rst();
                    return Ok(r);
                }
                _ => {}
            }
            if f.end_stream() {
                r.complete = true;
                return Ok(r);
            }
        }
    }

    /// Reads frames until the peer's first SETTINGS (the server preface).
    pub fn read_server_settings(&mut self, timeout: Duration) -> io::Result<Frame> {
        let seen = self.read_until(timeout, |f| {
            f.kind == kind::SETTINGS && f.flags & flag::ACK == 0
        })?;
        seen.frames
            .into_iter()
            .find(|f| f.kind == kind::SETTINGS && f.flags & flag::ACK == 0)
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "no SETTINGS from the server"))
    }
}

/// The header block fragment of a HEADERS/PUSH_PROMISE frame (padding and
/// priority removed).
fn header_block_fragment(f: &Frame) -> io::Result<Vec<u8>> {
    let bad = || {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("malformed {}", f.describe()),
        )
    };
    let mut p = strip_padding(f.flags, &f.payload).ok_or_else(bad)?;
    if f.kind == kind::HEADERS && f.flags & flag::PRIORITY != 0 {
        p = p.get(5..).ok_or_else(bad)?;
    }
    if f.kind == kind::PUSH_PROMISE {
        p = p.get(4..).ok_or_else(bad)?;
    }
    Ok(p.to_vec())
}

// ---------------------------------------------------------------------------
// HPACK decoding (RFC 7541).

struct Decoder {
    dynamic: VecDeque<(String, String)>,
    size: usize,
    max_size: usize,
}

impl Decoder {
    fn new() -> Decoder {
        Decoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: 4096,
        }
    }

    fn get(&self, index: usize) -> io::Result<(String, String)> {
        if index == 0 {
            return Err(hpack_err("index 0"));
        }
        if index <= STATIC.len() {
            let (n, v) = STATIC[index - 1];
            return Ok((n.to_string(), v.to_string()));
        }
        self.dynamic
            .get(index - STATIC.len() - 1)
            .cloned()
            .ok_or_else(|| hpack_err(&format!("index {index} out of the tables")))
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            let Some((n, v)) = self.dynamic.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }

    fn insert(&mut self, n: String, v: String) {
        self.size += n.len() + v.len() + 32;
        self.dynamic.push_front((n, v));
        self.evict();
    }

    fn decode(&mut self, mut b: &[u8]) -> io::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        while let Some(&first) = b.first() {
            if first & 0x80 != 0 {
                let i = read_int(&mut b, 7)?;
                out.push(self.get(i)?);
            } else if first & 0xc0 == 0x40 {
                let (n, v) = self.literal(&mut b, 6)?;
                self.insert(n.clone(), v.clone());
                out.push((n, v));
            } else if first & 0xe0 == 0x20 {
                let size = read_int(&mut b, 5)?;
                self.max_size = size;
                self.evict();
            } else {
                // Without indexing (0000) or never indexed (0001).
                out.push(self.literal(&mut b, 4)?);
            }
        }
        Ok(out)
    }

    fn literal(&self, b: &mut &[u8], prefix: u8) -> io::Result<(String, String)> {
        let i = read_int(b, prefix)?;
        let name = if i == 0 {
            read_string(b)?
        } else {
            self.get(i)?.0
        };
        let value = read_string(b)?;
        Ok((name, value))
    }
}

fn hpack_err(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("HPACK: {what}"))
}

fn read_int(b: &mut &[u8], prefix: u8) -> io::Result<usize> {
    let max = (1usize << prefix) - 1;
    let (&first, rest) = b
        .split_first()
        .ok_or_else(|| hpack_err("truncated integer"))?;
    *b = rest;
    let mut v = (first as usize) & max;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let (&c, rest) = b
            .split_first()
            .ok_or_else(|| hpack_err("truncated integer"))?;
        *b = rest;
        v += ((c & 0x7f) as usize) << shift;
        shift += 7;
        if c & 0x80 == 0 {
            return Ok(v);
        }
        if shift > 28 {
            return Err(hpack_err("integer too large"));
        }
    }
}

fn read_string(b: &mut &[u8]) -> io::Result<String> {
    let huffman = b.first().is_some_and(|c| c & 0x80 != 0);
    let len = read_int(b, 7)?;
    if b.len() < len {
        return Err(hpack_err("truncated string"));
    }
    let (s, rest) = b.split_at(len);
    *b = rest;
    let bytes = if huffman {
        huffman_decode(s)?
    } else {
        s.to_vec()
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn huffman_decode(s: &[u8]) -> io::Result<Vec<u8>> {
    static MAP: OnceLock<HashMap<(u8, u32), u8>> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        HUFFMAN
            .iter()
            .enumerate()
            .map(|(sym, &(c, l))| ((l, c), sym as u8))
            .collect()
    });
    let mut out = Vec::new();
    let (mut code, mut len) = (0u32, 0u8);
    for byte in s {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if let Some(&sym) = map.get(&(len, code)) {
                out.push(sym);
                code = 0;
                len = 0;
            } else if len > 30 {
                return Err(hpack_err("bad Huffman code"));
            }
        }
    }
    // What is left must be padding: fewer than 8 bits, all ones.
    if len >= 8 || code != (1u32 << len) - 1 {
        return Err(hpack_err("bad Huffman padding"));
    }
    Ok(out)
}

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// RFC 7541 Appendix B: (code, bit length) of bytes 0..=255.
const HUFFMAN: [(u32, u8); 256] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
];
