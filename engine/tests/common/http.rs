//! A small blocking HTTP/1.1 client over std::net, good enough to look at exactly
//! what the proxy puts on the wire (status, headers, framing, connection close).

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Default read/write timeout of every test socket: nothing may hang a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest head our own parsers accept (client side and test upstream).
const MAX_HEAD: usize = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// 1xx interim responses seen before the final one (e.g. 100).
    pub interim: Vec<u16>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }
    /// The `ringmesh-error` header of a response the proxy made itself.
    pub fn error_reason(&self) -> Option<&str> {
        self.header("ringmesh-error")
    }
    /// Which test upstream answered (its `x-upstream` header).
    pub fn upstream(&self) -> Option<&str> {
        self.header("x-upstream")
    }
}

pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads one message head (up to and including the empty line).
/// `Ok(None)`: clean EOF before the first byte.
pub fn read_head<R: BufRead>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!(
                    "EOF inside a message head: {:?}",
                    String::from_utf8_lossy(&head)
                ),
            ));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            // Tolerate leading empty lines (RFC 9112 2.2) only before the start line.
            if before == 0 {
                head.clear();
                continue;
            }
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "message head too large",
            ));
        }
    }
}

/// Splits a head into its start line and headers (lenient: test-side parser).
pub fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    (start, headers)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// How the body of a message with these headers is framed.
/// `is_response`: a response without CL/TE runs until close, a request has no body.
pub fn body_kind(headers: &[(String, String)], is_response: bool) -> io::Result<BodyKind> {
    if let Some(te) = find_header(headers, "transfer-encoding") {
        if te.to_ascii_lowercase().trim().ends_with("chunked") {
            return Ok(BodyKind::Chunked);
        }
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("transfer-encoding {te:?}"),
        ));
    }
    if let Some(cl) = find_header(headers, "content-length") {
        let n = cl.trim().parse::<u64>().map_err(|_| {
            io::Error::new(ErrorKind::InvalidData, format!("content-length {cl:?}"))
        })?;
        return Ok(BodyKind::Length(n));
    }
    Ok(if is_response {
        BodyKind::UntilClose
    } else {
        BodyKind::None
    })
}

/// Streams a body to `on_data` without holding it; returns the trailers.
pub fn read_body<R: BufRead>(
    r: &mut R,
    kind: BodyKind,
    on_data: &mut dyn FnMut(&[u8]),
) -> io::Result<Vec<(String, String)>> {
    match kind {
        BodyKind::None => Ok(Vec::new()),
        BodyKind::Length(n) => {
            copy_exact(r, n, on_data)?;
            Ok(Vec::new())
        }
        BodyKind::UntilClose => {
            loop {
                let buf = match r.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                    Err(e) => return Err(e),
                };
                if buf.is_empty() {
                    break;
                }
                let n = buf.len();
                on_data(buf);
                r.consume(n);
            }
            Ok(Vec::new())
        }
        BodyKind::Chunked => loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            if !line.ends_with(b"\n") {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "EOF in chunk size line",
                ));
            }
            let s = String::from_utf8_lossy(&line);
            let size_str = s.trim().split(';').next().unwrap_or("").trim().to_string();
            let size = u64::from_str_radix(&size_str, 16).map_err(|_| {
                io::Error::new(ErrorKind::InvalidData, format!("bad chunk size line {s:?}"))
            })?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t)?;
                    if !t.ends_with(b"\n") {
                        return Err(io::Error::new(ErrorKind::UnexpectedEof, "EOF in trailers"));
                    }
                    if t == b"\r\n" || t == b"\n" {
                        return Ok(trailers);
                    }
                    let (_, mut h) = parse_head(&[b"X\r\n".as_slice(), &t, b"\r\n"].concat());
                    trailers.append(&mut h);
                }
            }
            copy_exact(r, size, on_data)?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
            if &crlf != b"\r\n" {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "chunk not followed by CRLF",
                ));
            }
        },
    }
}

fn copy_exact<R: BufRead>(r: &mut R, mut n: u64, on_data: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    while n > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("EOF with {n} body bytes still expected"),
            ));
        }
        let take = buf.len().min(n as usize);
        on_data(&buf[..take]);
        r.consume(take);
        n -= take as u64;
    }
    Ok(())
}

/// A request to be written byte for byte. `Host: localhost` unless told otherwise;
/// a body gets a Content-Length unless a Transfer-Encoding/Content-Length was given.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, target: &str) -> Req {
        Req {
            method: method.to_string(),
            target: target.to_string(),
            headers: vec![("Host".to_string(), "localhost".to_string())],
            body: Vec::new(),
        }
    }
    pub fn get(target: &str) -> Req {
        Req::new("GET", target)
    }
    pub fn host(mut self, host: &str) -> Req {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        self.headers
            .insert(0, ("Host".to_string(), host.to_string()));
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = body.into();
        self
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        let framed = find_header(&self.headers, "content-length").is_some()
            || find_header(&self.headers, "transfer-encoding").is_some();
        if !framed && (!self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT")) {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// One client connection.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
        Ok(Conn { stream, reader })
    }

    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Sends `req` and reads the response.
    pub fn request(&mut self, req: &Req) -> io::Result<Response> {
        self.send(&req.to_bytes())?;
        self.read_response(&req.method)
    }

    /// Reads one response (skipping 1xx other than 101), body collected in memory.
    pub fn read_response(&mut self, method: &str) -> io::Result<Response> {
        let mut body = Vec::new();
        let mut resp = self.read_response_streaming(method, &mut |d| body.extend_from_slice(d))?;
        resp.body = body;
        Ok(resp)
    }

    /// Reads one response, handing the body to `on_data` (for very large bodies).
    pub fn read_response_streaming(
        &mut self,
        method: &str,
        on_data: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let head = read_head(&mut self.reader)?.ok_or_else(|| {
                io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                )
            })?;
            let (start, headers) = parse_head(&head);
            let mut parts = start.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
                io::Error::new(ErrorKind::InvalidData, format!("bad status line {start:?}"))
            })?;
            if !version.starts_with("HTTP/1.") {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("bad status line {start:?}"),
                ));
            }
            let reason = parts.next().unwrap_or("").to_string();
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let no_body = method.eq_ignore_ascii_case("HEAD")
                || status == 101
                || status == 204
                || status == 304
                || (100..200).contains(&status);
            let kind = if no_body {
                BodyKind::None
            } else {
                body_kind(&headers, true)?
            };
            let trailers = read_body(&mut self.reader, kind, on_data)?;
            return Ok(Response {
                status,
                reason,
                headers,
                body: Vec::new(),
                trailers,
                interim,
            });
        }
    }

    /// Reads one raw message head: (start line, headers).
    pub fn read_head_raw(&mut self) -> io::Result<(String, Vec<(String, String)>)> {
        let head = read_head(&mut self.reader)?
            .ok_or_else(|| io::Error::new(ErrorKind::UnexpectedEof, "connection closed"))?;
        Ok(parse_head(&head))
    }

    /// Reads whatever arrives until EOF (a reset counts as EOF) within `timeout`.
    pub fn read_until_closed(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "connection still open after {timeout:?}; got {:?}",
                        String::from_utf8_lossy(&out)
                    ),
                ));
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut buf = [0u8; 8192];
            match self.reader.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(out)
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Asserts the peer closes the connection (within 5 s) without sending more bytes.
    pub fn assert_closed(&mut self, what: &str) {
        match self.read_until_closed(Duration::from_secs(5)) {
            Ok(rest) => assert!(
                rest.is_empty(),
                "{what}: expected the connection to be closed, but got more bytes: {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) => panic!("{what}: expected the connection to be closed: {e}"),
        }
    }

    /// Raw read of up to `max` bytes (test-driven protocols such as tunnels).
    pub fn read_some(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; max];
        let n = self.reader.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Raw read of exactly `n` bytes.
    pub fn read_exact_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.reader.read_exact(&mut buf)?;
        Ok(buf)
    }
}

/// One request on a fresh connection.
pub fn send(addr: SocketAddr, req: &Req) -> Response {
    let mut c = Conn::connect(addr);
    c.request(req)
        .unwrap_or_else(|e| panic!("{} {} via {addr}: {e}", req.method, req.target))
}

/// `GET path` with the given Host on a fresh connection.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    send(addr, &Req::get(path).host(host))
}

/// Sends raw bytes on a fresh connection and reads one response to `method`.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], method: &str) -> (Conn, io::Result<Response>) {
    let mut c = Conn::connect(addr);
    let r = c.send(bytes).and_then(|_| c.read_response(method));
    (c, r)
}

// ---------------------------------------------------------------------------
// Test payloads: a deterministic byte pattern and a cheap streaming checksum.

/// Byte `i` of every generated payload.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// 251*261 bytes: writing it repeatedly continues the pattern seamlessly.
pub fn pattern_block() -> Vec<u8> {
    (0..251u64 * 261).map(pattern_byte).collect()
}

/// Writes `n` pattern bytes to `w` in blocks.
pub fn write_pattern<W: Write>(w: &mut W, n: u64) -> io::Result<()> {
    let block = pattern_block();
    let mut left = n;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        w.write_all(&block[..take])?;
        left -= take as u64;
    }
    Ok(())
}

/// Checks streamed data against the pattern with memcmp (fast in debug builds).
pub struct PatternCheck {
    reference: Vec<u8>,
    pub offset: u64,
    pub first_mismatch: Option<u64>,
}

impl Default for PatternCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl PatternCheck {
    pub fn new() -> PatternCheck {
        // Long enough for any read of up to 256 KiB at any phase.
        PatternCheck {
            reference: (0..251u64 * 1200).map(pattern_byte).collect(),
            offset: 0,
            first_mismatch: None,
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        for piece in data.chunks(256 * 1024) {
            let phase = (self.offset % 251) as usize;
            if self.first_mismatch.is_none() && piece != &self.reference[phase..phase + piece.len()]
            {
                let i = piece
                    .iter()
                    .zip(&self.reference[phase..])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                self.first_mismatch = Some(self.offset + i as u64);
            }
            self.offset += piece.len() as u64;
        }
    }
}

/// Order-sensitive checksum over 8-byte words (Fletcher-like), streamable across
/// arbitrary read boundaries. Hex of the final value is what the upstream reports.
#[derive(Default, Clone)]
pub struct Checksum {
    carry: [u8; 8],
    carry_len: usize,
    a: u64,
    b: u64,
    pub len: u64,
}

impl Checksum {
    pub fn new() -> Checksum {
        Checksum::default()
    }
    fn word(&mut self, w: u64) {
        self.a = self.a.wrapping_add(w ^ 0x9e37_79b9_7f4a_7c15);
        self.b = self.b.wrapping_add(self.a);
    }
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.carry_len > 0 {
            let take = (8 - self.carry_len).min(data.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&data[..take]);
            self.carry_len += take;
            data = &data[take..];
            if self.carry_len < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.carry);
            self.word(w);
            self.carry_len = 0;
        }
        let mut it = data.chunks_exact(8);
        for c in &mut it {
            self.word(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = it.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
    }
    pub fn hex(&self) -> String {
        let mut c = self.clone();
        if c.carry_len > 0 {
            let mut last = [0u8; 8];
            last[..c.carry_len].copy_from_slice(&c.carry[..c.carry_len]);
            c.word(u64::from_le_bytes(last) ^ ((c.carry_len as u64) << 56));
        }
        format!("{:016x}{:016x}", c.a, c.b)
    }
}

/// Checksum of `n` pattern bytes.
pub fn pattern_checksum(n: u64) -> String {
    let block = pattern_block();
    let mut c = Checksum::new();
    let mut left = n;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        c.update(&block[..take]);
        left -= take as u64;
    }
    c.hex()
}
