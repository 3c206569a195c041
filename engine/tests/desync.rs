//! HTTP/1 request desync (smuggling): raw-byte vectors sent to the proxy in front
//! of a recording upstream that keeps the exact bytes of every connection and
//! parses them strictly (RFC 9112, nothing tolerated).
//!
//! Every vector ends one of two ways:
//! - rejected: a 4xx from the proxy, the connection closed, and the upstream
//!   saw no byte of it (no connection at all);
//! - forwarded as exactly one unambiguous request: the upstream received one
//!   request (method, target, body as expected) with a single well-formed
//!   framing (one `content-length: DIGITS`, or one `transfer-encoding: chunked`,
//!   or none), nothing after it on that connection, and the client connection is
//!   either closed or still in step (a probe request gets its own answer).
//!
//! A few vectors announce more body than is sent (huge lengths); the client then
//! half-closes and the only acceptable outcome is a cut-off single request: the
//! upstream saw the head of one request and an EOF, never anything more.
//!
//! framing.rs checks statuses of the classic smuggling vectors; this suite adds
//! what the upstream actually received for each of them and many more vectors.
//! Run with `--nocapture` to see the table of outcomes.

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The recording upstream

/// One request as the recording upstream parsed it.
#[derive(Debug, Clone)]
struct Seen {
    conn: usize,
    /// The exact bytes of the request, head and body.
    raw: Vec<u8>,
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    /// "none", "cl:N" or "chunked".
    framing: String,
    /// The body after de-chunking.
    body: Vec<u8>,
    /// Trailer lines (chunked only).
    trailers: Vec<(String, String)>,
}

impl Seen {
    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Everything one upstream connection carried.
#[derive(Debug, Clone, Default)]
struct ConnLog {
    /// Every byte received, in order.
    bytes: Vec<u8>,
    /// Requests parsed (strictly) from `bytes`.
    requests: usize,
    /// Bytes received that are not part of a complete request: after the last
    /// request (close mode), or an incomplete request at EOF.
    leftover: Vec<u8>,
    /// What the strict parser refused, if anything.
    violation: Option<String>,
    /// EOF (or an error) was seen: nothing more will be recorded.
    finished: bool,
}

#[derive(Default)]
struct Record {
    conns: Vec<ConnLog>,
    requests: Vec<Seen>,
}

struct Recorder {
    addr: SocketAddr,
    rec: Arc<Mutex<Record>>,
    accepted: Arc<AtomicUsize>,
}

impl Recorder {
    /// `keep_alive`: answer without `connection: close` and keep reading (for
    /// pipelining); otherwise every response closes its connection, so each
    /// upstream connection carries exactly one request and anything after it
    /// is recorded as leftover.
    fn start(keep_alive: bool) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let rec = Arc::new(Mutex::new(Record::default()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (r2, a2) = (rec.clone(), accepted.clone());
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let idx = {
                    let mut r = r2.lock().unwrap();
                    r.conns.push(ConnLog::default());
                    r.conns.len() - 1
                };
                a2.fetch_add(1, Ordering::SeqCst);
                let rec = r2.clone();
                thread::spawn(move || record_conn(s, idx, &rec, keep_alive));
            }
        });
        Recorder {
            addr,
            rec,
            accepted,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until every connection accepted so far has finished (EOF), then
    /// returns the connections and requests from index `conns_from` on.
    fn settle(&self, conns_from: usize, timeout: Duration) -> (Vec<ConnLog>, Vec<Seen>) {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let r = self.rec.lock().unwrap();
                let done = r.conns.len() == self.accepted()
                    && r.conns.iter().skip(conns_from).all(|c| c.finished);
                if done || Instant::now() >= deadline {
                    let conns = r.conns[conns_from.min(r.conns.len())..].to_vec();
                    let reqs = r
                        .requests
                        .iter()
                        .filter(|s| s.conn >= conns_from)
                        .cloned()
                        .collect();
                    return (conns, reqs);
                }
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

fn record_conn(mut s: TcpStream, idx: usize, rec: &Mutex<Record>, keep_alive: bool) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = s.set_nodelay(true);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let finish = |leftover: &[u8], violation: Option<String>| {
        let mut r = rec.lock().unwrap();
        let c = &mut r.conns[idx];
        c.leftover.extend_from_slice(leftover);
        if c.violation.is_none() {
            c.violation = violation;
        }
        c.finished = true;
    };
    loop {
        // Parse whatever complete requests are buffered.
        loop {
            match parse_strict(&pending) {
                Ok(Some((mut seen, used))) => {
                    seen.conn = idx;
                    let target = seen.target.clone();
                    {
                        let mut r = rec.lock().unwrap();
                        r.conns[idx].requests += 1;
                        r.requests.push(seen);
                    }
                    pending.drain(..used);
                    let close = if keep_alive { "" } else { "connection: close\r\n" };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-seen: {target}\r\n{close}\r\nok"
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        finish(&pending, None);
                        return;
                    }
                    if !keep_alive {
                        // Anything the proxy still sends on this connection is
                        // recorded as leftover: it must be nothing.
                        let _ = s.shutdown(Shutdown::Write);
                        let mut rest = std::mem::take(&mut pending);
                        loop {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    rec.lock().unwrap().conns[idx]
                                        .bytes
                                        .extend_from_slice(&buf[..n]);
                                    rest.extend_from_slice(&buf[..n]);
                                }
                            }
                        }
                        finish(&rest, None);
                        return;
                    }
                }
                Ok(None) => break,
                Err(why) => {
                    let _ = s.write_all(
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    finish(&pending, Some(why));
                    return;
                }
            }
        }
        match s.read(&mut buf) {
            Ok(0) => {
                finish(&pending, None);
                return;
            }
            Ok(n) => {
                rec.lock().unwrap().conns[idx]
                    .bytes
                    .extend_from_slice(&buf[..n]);
                pending.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                finish(&pending, Some(format!("read error: {e}")));
                return;
            }
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A strict RFC 9112 request parser: `Ok(None)` = incomplete, `Err` = anything
/// a lenient parser might read differently (which is a finding: the proxy must
/// never forward such bytes).
fn parse_strict(buf: &[u8]) -> Result<Option<(Seen, usize)>, String> {
    // Line endings: every LF preceded by CR, every CR followed by LF.
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let scan_to = head_end.map_or(buf.len(), |e| e + 4);
    for (i, &b) in buf[..scan_to].iter().enumerate() {
        if b == b'\n' && (i == 0 || buf[i - 1] != b'\r') {
            return Err(format!("bare LF at {i}"));
        }
        if b == b'\r' && i + 1 < scan_to && buf[i + 1] != b'\n' {
            return Err(format!("bare CR at {i}"));
        }
    }
    let Some(head_end) = head_end else {
        return Ok(None);
    };
    let head = &buf[..head_end];
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next().unwrap_or_default();
    let parts: Vec<&[u8]> = start.split(|&b| b == b' ').collect();
    if parts.len() != 3 {
        return Err(format!(
            "request line {:?} is not METHOD SP TARGET SP VERSION",
            String::from_utf8_lossy(start)
        ));
    }
    if parts[0].is_empty() || !parts[0].iter().all(|&b| is_tchar(b)) {
        return Err("method is not a token".into());
    }
    if parts[1].is_empty() || !parts[1].iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err("bad request-target bytes".into());
    }
    if parts[2] != b"HTTP/1.1" {
        return Err(format!(
            "version {:?} (the proxy speaks HTTP/1.1 upstream)",
            String::from_utf8_lossy(parts[2])
        ));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err("obs-fold".into());
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!("field line without colon: {:?}", String::from_utf8_lossy(line)));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(format!("field name {:?} is not a token", String::from_utf8_lossy(name)));
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80)
        {
            return Err(format!("control byte in the value of {}", String::from_utf8_lossy(name)));
        }
        let value = String::from_utf8_lossy(value)
            .trim_matches(|c| c == ' ' || c == '\t')
            .to_string();
        headers.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    let named = |n: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(h, _)| h.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (n, _) in &headers {
        let dashed = n.replace('_', "-");
        if n.contains('_')
            && (dashed.eq_ignore_ascii_case("content-length")
                || dashed.eq_ignore_ascii_case("transfer-encoding"))
        {
            return Err(format!("{n}: a framing field in disguise (CGI maps _ to -)"));
        }
    }
    if named("host").len() != 1 {
        return Err(format!("{} Host fields", named("host").len()));
    }
    let cl = named("content-length");
    let te = named("transfer-encoding");
    if !cl.is_empty() && !te.is_empty() {
        return Err("both Content-Length and Transfer-Encoding".into());
    }
    if cl.len() > 1 || te.len() > 1 {
        return Err(format!("{} Content-Length and {} Transfer-Encoding fields", cl.len(), te.len()));
    }
    let body_start = head_end + 4;
    let mut trailers = Vec::new();
    let (framing, body, used) = if let Some(v) = cl.first() {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || (v.len() > 1 && v.starts_with('0')) {
            return Err(format!("content-length {v:?} is not a canonical number"));
        }
        let n: usize = v.parse().map_err(|_| format!("content-length {v:?} too big"))?;
        if buf.len().saturating_sub(body_start) < n {
            return Ok(None);
        }
        (format!("cl:{n}"), buf[body_start..body_start + n].to_vec(), body_start + n)
    } else if let Some(v) = te.first() {
        if *v != "chunked" {
            return Err(format!("transfer-encoding {v:?} (want exactly \"chunked\")"));
        }
        match decode_chunked_strict(&buf[body_start..], &mut trailers)? {
            None => return Ok(None),
            Some((body, n)) => ("chunked".to_string(), body, body_start + n),
        }
    } else {
        ("none".to_string(), Vec::new(), body_start)
    };
    Ok(Some((
        Seen {
            conn: 0,
            raw: buf[..used].to_vec(),
            method: String::from_utf8_lossy(parts[0]).into_owned(),
            target: String::from_utf8_lossy(parts[1]).into_owned(),
            version: String::from_utf8_lossy(parts[2]).into_owned(),
            headers,
            framing,
            body,
            trailers,
        },
        used,
    )))
}

/// Strict chunked decoding: `1*HEXDIG [;ext] CRLF data CRLF ... 0 CRLF trailers CRLF`.
fn decode_chunked_strict(
    b: &[u8],
    trailers: &mut Vec<(String, String)>,
) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    let line = |from: usize| -> Result<Option<(usize, usize)>, String> {
        // (end of content, start of next line)
        let rest = &b[from..];
        match rest.iter().position(|&x| x == b'\n' || x == b'\r') {
            None => Ok(None),
            Some(i) if rest[i] == b'\n' => Err("bare LF in chunked body".into()),
            Some(i) if i + 1 >= rest.len() => Ok(None),
            Some(i) if rest[i + 1] != b'\n' => Err("bare CR in chunked body".into()),
            Some(i) => Ok(Some((from + i, from + i + 2))),
        }
    };
    loop {
        let Some((end, next)) = line(pos)? else {
            return Ok(None);
        };
        let size_line = &b[pos..end];
        let digits = size_line
            .iter()
            .position(|&x| x == b';')
            .map_or(size_line, |i| &size_line[..i]);
        if digits.is_empty() || digits.len() > 16 || !digits.iter().all(|x| x.is_ascii_hexdigit()) {
            return Err(format!("chunk size {:?}", String::from_utf8_lossy(size_line)));
        }
        let ext = &size_line[digits.len()..];
        if ext.iter().any(|&x| x < 0x20 && x != b'\t' || x == 0x7f) {
            return Err("control byte in a chunk extension".into());
        }
        let size = u64::from_str_radix(std::str::from_utf8(digits).unwrap(), 16).unwrap();
        pos = next;
        if size == 0 {
            loop {
                let Some((end, next)) = line(pos)? else {
                    return Ok(None);
                };
                if end == pos {
                    return Ok(Some((body, next)));
                }
                let t = &b[pos..end];
                let colon = t.iter().position(|&x| x == b':').ok_or("trailer without colon")?;
                if colon == 0 || !t[..colon].iter().all(|&x| is_tchar(x)) {
                    return Err("trailer name is not a token".into());
                }
                trailers.push((
                    String::from_utf8_lossy(&t[..colon]).into_owned(),
                    String::from_utf8_lossy(&t[colon + 1..]).trim().to_string(),
                ));
                pos = next;
            }
        }
        let size = usize::try_from(size).map_err(|_| "chunk size over usize")?;
        if b.len().saturating_sub(pos) < size.saturating_add(2) {
            return Ok(None);
        }
        body.extend_from_slice(&b[pos..pos + size]);
        pos += size;
        if &b[pos..pos + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        pos += 2;
    }
}

// ---------------------------------------------------------------------------
// Vectors

#[derive(Clone, Copy)]
enum Want {
    /// A 4xx from the proxy (one of these statuses), the connection closed,
    /// and not one byte at the upstream.
    Reject(&'static [u16]),
    /// Exactly one request upstream with this method, target and de-chunked body.
    One {
        method: &'static str,
        target: &'static str,
        body: &'static [u8],
        /// Further checks of what the upstream saw.
        check: Option<fn(&Seen) -> Result<(), String>>,
    },
    /// The body announced is more than is sent; the client half-closes. At most
    /// one request reached the upstream, cut off (never complete, never two).
    CutOff { target: &'static str },
    /// The first `split` bytes (a valid head and maybe some body) are sent, then,
    /// once the proxy has forwarded them, the rest, whose chunked framing is bad:
    /// a 400 and a closed connection; the upstream saw one cut-off request at
    /// most, never a complete one. (`usize::MAX`: all at once, for a body too big
    /// to come with the head.)
    LateReject { split: usize, target: &'static str },
}

struct Vector {
    cat: &'static str,
    name: &'static str,
    bytes: Vec<u8>,
    want: Want,
}

const R400: Want = Want::Reject(&[400]);
const R431: Want = Want::Reject(&[431]);

fn one(method: &'static str, target: &'static str, body: &'static [u8]) -> Want {
    Want::One {
        method,
        target,
        body,
        check: None,
    }
}

fn one_check(
    method: &'static str,
    target: &'static str,
    body: &'static [u8],
    check: fn(&Seen) -> Result<(), String>,
) -> Want {
    Want::One {
        method,
        target,
        body,
        check: Some(check),
    }
}

/// A request with the given extra header lines (each without CRLF) and raw body.
fn post(target: &str, lines: &[&str], body: &[u8]) -> Vec<u8> {
    let mut v = format!("POST {target} HTTP/1.1\r\nHost: a.test\r\n").into_bytes();
    for l in lines {
        v.extend_from_slice(l.as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    v
}

fn get(target: &str, lines: &[&str]) -> Vec<u8> {
    let mut v = format!("GET {target} HTTP/1.1\r\nHost: a.test\r\n").into_bytes();
    for l in lines {
        v.extend_from_slice(l.as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"\r\n");
    v
}

const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n";

fn with_smuggled(prefix: &[u8]) -> Vec<u8> {
    [prefix, SMUGGLED].concat()
}

fn no_upgrade(s: &Seen) -> Result<(), String> {
    if !s.headers_named("upgrade").is_empty()
        || s.headers_named("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("upgrade"))
    {
        return Err(format!("upgrade forwarded: {:?}", s.headers));
    }
    Ok(())
}

fn host_is_authority(s: &Seen) -> Result<(), String> {
    match s.headers_named("host")[..] {
        ["b.test"] => Ok(()),
        ref h => Err(format!("Host {h:?}, want the absolute-form authority b.test")),
    }
}

fn trailer_passed_on(s: &Seen) -> Result<(), String> {
    match &s.trailers[..] {
        [(n, v)] if n == "X-T" && v == "1" => Ok(()),
        t => Err(format!("trailers {t:?}, want X-T: 1")),
    }
}

fn no_expect(s: &Seen) -> Result<(), String> {
    if s.headers_named("expect").is_empty() {
        Ok(())
    } else {
        Err(format!("Expect forwarded although the proxy handled it: {:?}", s.headers))
    }
}

fn vectors() -> Vec<Vector> {
    let v = |cat, name, bytes: Vec<u8>, want| Vector {
        cat,
        name,
        bytes,
        want,
    };
    let chunked = "Transfer-Encoding: chunked";
    let big_head = format!("X-Big: {}", "a".repeat(9000));
    let many: Vec<String> = (0..60).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let long_target = format!("/{}", "t".repeat(9000));
    vec![
        // ---- CL.TE / TE.CL: both framings in one message --------------------------
        v("CL.TE", "CL then TE, smuggled GET in body", with_smuggled(&post("/v", &["Content-Length: 6", chunked], b"0\r\n\r\n")), R400),
        v("TE.CL", "TE then CL, smuggled GET in chunk", post("/v", &[chunked, "Content-Length: 3"], &[b"2c\r\n".as_slice(), SMUGGLED, b"\r\n0\r\n\r\n"].concat()), R400),
        v("CL.TE", "CL 0 with TE chunked", post("/v", &["Content-Length: 0", chunked], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.CL", "TE obfuscated (xchunked) with CL", post("/v", &["Content-Length: 5", "Transfer-Encoding: xchunked"], b"hello"), R400),
        // ---- TE.TE: obfuscated Transfer-Encoding --------------------------------
        v("TE.TE", "TE: xchunked", post("/v", &["Transfer-Encoding: xchunked"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE: chunked, identity", post("/v", &["Transfer-Encoding: chunked, identity"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE: identity, chunked", post("/v", &["Transfer-Encoding: identity, chunked"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE: gzip, chunked (a coding we would drop)", post("/v", &["Transfer-Encoding: gzip, chunked"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE split over two lines (chunked + identity)", post("/v", &[chunked, "Transfer-Encoding: identity"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE duplicated (chunked twice)", post("/v", &[chunked, chunked], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE space before colon", post("/v", &["Transfer-Encoding : chunked"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE tab before colon", post("/v", &["Transfer-Encoding\t: chunked"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE value in obs-fold", post("/v", &["Transfer-Encoding:", " chunked"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE line folded into the previous field", post("/v", &["X-A: b", " Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE: \"chunked\" (quoted)", post("/v", &["Transfer-Encoding: \"chunked\""], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE: chunked;q=1 (parameter)", post("/v", &["Transfer-Encoding: chunked;q=1"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "TE with vertical tab", post("/v", &["Transfer-Encoding:\x0bchunked"], b"5\r\nhello\r\n0\r\n\r\n"), R400),
        v("TE.TE", "Transfer_Encoding (underscore)", with_smuggled(&post("/v", &["Transfer_Encoding: chunked"], b"0\r\n\r\n")), R400),
        v("TE.TE", "TE on an HTTP/1.0 request", b"POST /v HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(), R400),
        v("TE.TE", "TE: \\tchunked (tab is OWS)", post("/te-tab", &["Transfer-Encoding:\tchunked"], b"5\r\nhello\r\n0\r\n\r\n"), one("POST", "/te-tab", b"hello")),
        v("TE.TE", "TE:  chunked (leading spaces)", post("/te-sp", &["Transfer-Encoding:   chunked"], b"5\r\nhello\r\n0\r\n\r\n"), one("POST", "/te-sp", b"hello")),
        v("TE.TE", "TE: CHUNKED (upper case)", post("/te-uc", &["TRANSFER-ENCODING: CHUNKED"], b"5\r\nhello\r\n0\r\n\r\n"), one("POST", "/te-uc", b"hello")),
        v("TE.TE", "TE: chunked, (empty list element)", post("/te-comma", &["Transfer-Encoding: chunked, "], b"5\r\nhello\r\n0\r\n\r\n"), one("POST", "/te-comma", b"hello")),
        // ---- Content-Length: duplicated, malformed, huge --------------------------
        v("CL", "CL: 1, 2", post("/v", &["Content-Length: 1, 2"], b"ab"), R400),
        v("CL", "CL twice, different", with_smuggled(&post("/v", &["Content-Length: 5", "Content-Length: 44"], b"hello")), R400),
        v("CL", "CL: +5", post("/v", &["Content-Length: +5"], b"hello"), R400),
        v("CL", "CL: -1", post("/v", &["Content-Length: -1"], b"hello"), R400),
        v("CL", "CL: 0x10", post("/v", &["Content-Length: 0x10"], b"0123456789abcdef"), R400),
        v("CL", "CL: 5.0", post("/v", &["Content-Length: 5.0"], b"hello"), R400),
        v("CL", "CL: 5 5", post("/v", &["Content-Length: 5 5"], b"hello"), R400),
        v("CL", "CL: (empty)", post("/v", &["Content-Length: "], b"hello"), R400),
        v("CL", "CL: 99999999999999999999 (overflows u64)", post("/v", &["Content-Length: 99999999999999999999"], b"hello"), R400),
        v("CL", "CL: 18446744073709551616 (u64::MAX + 1)", post("/v", &["Content-Length: 18446744073709551616"], b"hello"), R400),
        v("CL", "CL with NUL", post("/v", &["Content-Length: 5\0"], b"hello"), R400),
        v("CL", "CL space before colon", with_smuggled(&post("/v", &["Content-Length : 5"], b"hello")), R400),
        v("CL", "Content_Length (underscore)", post("/v", &["Content_Length: 5"], b"hello"), R400),
        v("CL", "CL: 5, (trailing comma)", post("/v", &["Content-Length: 5,"], b"hello"), R400),
        v("CL", "CL:  5 (leading OWS)", post("/cl-ows", &["Content-Length:    5"], b"hello"), one("POST", "/cl-ows", b"hello")),
        v("CL", "CL: 5, 5 (identical list)", post("/cl-list", &["Content-Length: 5, 5"], b"hello"), one("POST", "/cl-list", b"hello")),
        v("CL", "CL twice, identical", post("/cl-twice", &["Content-Length: 5", "content-length: 5"], b"hello"), one("POST", "/cl-twice", b"hello")),
        v("CL", "CL: 005 (leading zeros)", post("/cl-zeros", &["Content-Length: 005"], b"hello"), one("POST", "/cl-zeros", b"hello")),
        v("CL", "CL: 4294967301 (2^32 + 5), 5 bytes sent", post("/cl-2p32", &["Content-Length: 4294967301"], b"hello"), Want::CutOff { target: "/cl-2p32" }),
        v("CL", "CL: u64::MAX, 5 bytes sent", post("/cl-max", &["Content-Length: 18446744073709551615"], b"hello"), Want::CutOff { target: "/cl-max" }),
        // ---- chunk-size tricks -------------------------------------------------
        v("chunk", "size 0x5", post("/v", &[chunked], b"0x5\r\nhello\r\n0\r\n\r\n"), R400),
        v("chunk", "size with space before CRLF", post("/v", &[chunked], b"5 \r\nhello\r\n0\r\n\r\n"), R400),
        v("chunk", "size with leading space", post("/v", &[chunked], b" 5\r\nhello\r\n0\r\n\r\n"), R400),
        v("chunk", "size -5", post("/v", &[chunked], b"-5\r\nhello\r\n0\r\n\r\n"), R400),
        v("chunk", "size 17 hex digits", post("/v", &[chunked], b"00000000000000005\r\nhello\r\n0\r\n\r\n"), R400),
        v("chunk", "size line LF only", post("/v", &[chunked], b"5\nhello\r\n0\r\n\r\n"), R400),
        v("chunk", "data not followed by CRLF", with_smuggled(&post("/v", &[chunked], b"3\r\nhello\r\n0\r\n\r\n")), R400),
        v("chunk", "data followed by LF only", post("/v", &[chunked], b"5\r\nhello\n0\r\n\r\n"), R400),
        v("chunk", "last chunk LF only", post("/v", &[chunked], b"5\r\nhello\r\n0\n\n"), R400),
        v("chunk", "extension with bare CR", post("/v", &[chunked], b"5;a=\"x\ry\"\r\nhello\r\n0\r\n\r\n"), R400),
        v("chunk", "extension with space in name", post("/v", &[chunked], b"5;a b\r\nhello\r\n0\r\n\r\n"), R400),
        v("chunk", "request line as trailer (no final CRLF)", post("/v", &[chunked], &with_smuggled(b"0\r\n")), R400),
        v("chunk", "obs-fold in trailer", post("/v", &[chunked], b"0\r\nX-T: a\r\n b\r\n\r\n"), R400),
        v("chunk", "bad chunk after the head went upstream", post("/late-bad", &[chunked], b"5\r\nhello\r\nzz\r\n"), Want::LateReject { split: 75, target: "/late-bad" }),
        v("chunk", "smuggled GET after a bad late chunk", post("/late-smuggle", &[chunked], &with_smuggled(b"5\r\nhello\r\n3\r\nabcde\r\n0\r\n\r\n")), Want::LateReject { split: 87, target: "/late-smuggle" }),
        v("chunk", "chunk extension over 4 KiB", post("/v", &[chunked], format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000)).as_bytes()), R400),
        // Over 16 KiB the body cannot all come with the head: the head may already be
        // upstream when the limit is hit.
        v("chunk", "trailer section over 16 KiB", post("/big-trailer", &[chunked], format!("5\r\nhello\r\n0\r\nX-T: {}\r\n\r\n", "t".repeat(17000)).as_bytes()), Want::LateReject { split: usize::MAX, target: "/big-trailer" }),
        v("chunk", "size 5;ext", post("/ck-ext", &[chunked], b"5;ext\r\nhello\r\n0\r\n\r\n"), one("POST", "/ck-ext", b"hello")),
        v("chunk", "size 5;a=\"q;x\"", post("/ck-quoted", &[chunked], b"5;a=\"q;x\"\r\nhello\r\n0\r\n\r\n"), one("POST", "/ck-quoted", b"hello")),
        v("chunk", "size 05", post("/ck-05", &[chunked], b"05\r\nhello\r\n0\r\n\r\n"), one("POST", "/ck-05", b"hello")),
        v("chunk", "size 0000000000000005 (16 digits)", post("/ck-16", &[chunked], b"0000000000000005\r\nhello\r\n0\r\n\r\n"), one("POST", "/ck-16", b"hello")),
        v("chunk", "upper-case hex A", post("/ck-hex", &[chunked], b"A\r\n0123456789\r\n0\r\n\r\n"), one("POST", "/ck-hex", b"0123456789")),
        v("chunk", "trailer field", post("/ck-trailer", &[chunked], b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), one_check("POST", "/ck-trailer", b"hello", trailer_passed_on)),
        v("chunk", "size ffffffffffffffff, 5 bytes sent", post("/ck-huge", &[chunked], b"ffffffffffffffff\r\nhello"), Want::CutOff { target: "/ck-huge" }),
        // ---- line endings, NUL, invalid names --------------------------------------
        v("line", "bare LF line endings", b"GET /v HTTP/1.1\nHost: a.test\n\n".to_vec(), R400),
        v("line", "bare LF in one header line", b"GET /v HTTP/1.1\r\nHost: a.test\nX-A: b\r\n\r\n".to_vec(), R400),
        v("line", "bare LF ends the head", with_smuggled(b"POST /v HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\nhello"), R400),
        v("line", "bare CR line endings", b"GET /v HTTP/1.1\rHost: a.test\r\r\n\r\n".to_vec(), R400),
        v("line", "bare CR in a value", get("/v", &["X-A: b\rTransfer-Encoding: chunked"]), R400),
        v("line", "obs-fold", get("/v", &["X-A: b", "\tc"]), R400),
        v("line", "NUL in value", get("/v", &["X-A: b\0c"]), R400),
        v("line", "NUL in name", get("/v", &["X\0A: b"]), R400),
        v("line", "NUL in target", b"GET /v\0x HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(), R400),
        v("name", "space inside name", get("/v", &["X A: b"]), R400),
        v("name", "empty name (leading colon)", get("/v", &[":authority: b"]), R400),
        v("name", "non-tchar in name (@)", get("/v", &["X@A: b"]), R400),
        v("name", "non-tchar in name ({)", get("/v", &["X{A}: b"]), R400),
        v("name", "obs-text in name", get("/v", &["X\u{e9}A: b"]), R400),
        v("name", "line without colon", get("/v", &["Transfer-Encoding chunked"]), R400),
        v("name", "two Host fields", get("/v", &["Host: b.test"]), R400),
        v("name", "Host with userinfo", b"GET /v HTTP/1.1\r\nHost: u@a.test\r\n\r\n".to_vec(), R400),
        v("name", "Host: a.test, b.test", b"GET /v HTTP/1.1\r\nHost: a.test, b.test\r\n\r\n".to_vec(), R400),
        v("name", "Host with a space", b"GET /v HTTP/1.1\r\nHost: a.test b.test\r\n\r\n".to_vec(), R400),
        v("name", "empty Host is allowed", b"GET /empty-host HTTP/1.1\r\nHost:\r\n\r\n".to_vec(), one("GET", "/empty-host", b"")),
        v("name", "colon inside a value is fine", get("/colon-value", &["X-A: b: c"]), one("GET", "/colon-value", b"")),
        // ---- request line --------------------------------------------------------
        v("reqline", "two spaces after method", b"GET  /v HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(), R400),
        v("reqline", "tab as separator", b"GET\t/v HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(), R400),
        v("reqline", "space after version", b"GET /v HTTP/1.1 \r\nHost: a.test\r\n\r\n".to_vec(), R400),
        v("reqline", "leading space", b" GET /v HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(), R400),
        v("reqline", "HTTP/1.2", b"GET /v HTTP/1.2\r\nHost: a.test\r\n\r\n".to_vec(), R400),
        v("reqline", "HTTP/2.0 in an HTTP/1 line", b"GET /v HTTP/2.0\r\nHost: a.test\r\n\r\n".to_vec(), R400),
        v("reqline", "HTTP/0.9 (no version)", b"GET /v\r\n\r\n".to_vec(), R400),
        v("reqline", "lower-case http/1.1", b"GET /v http/1.1\r\nHost: a.test\r\n\r\n".to_vec(), R400),
        v("reqline", "HTTP/1.1 without Host", b"GET /v HTTP/1.1\r\n\r\n".to_vec(), R400),
        v("reqline", "fragment in target", b"GET /v#x HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(), R400),
        v("reqline", "CONNECT", b"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n".to_vec(), Want::Reject(&[400, 403, 404, 405])),
        v("reqline", "absolute-form with another Host", b"GET http://b.test/abs?q=1 HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(), one_check("GET", "/abs?q=1", b"", host_is_authority)),
        v("reqline", "absolute-form with userinfo", b"GET http://u@b.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n".to_vec(), R400),
        v("reqline", "absolute-form, unknown scheme", b"GET ftp://b.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n".to_vec(), R400),
        v("reqline", "lower-case method is another method", b"get /lower-method HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(), one("get", "/lower-method", b"")),
        v("reqline", "HTTP/1.0 without Host", b"GET /h10 HTTP/1.0\r\n\r\n".to_vec(), one("GET", "/h10", b"")),
        v("reqline", "leading empty lines", b"\r\n\r\nGET /leading-crlf HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(), one("GET", "/leading-crlf", b"")),
        // ---- Upgrade / Connection tricks -------------------------------------------
        v("upgrade", "Upgrade: h2c (h2c smuggling)", get("/h2c", &["Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]), one_check("GET", "/h2c", b"", no_upgrade)),
        v("upgrade", "Upgrade without Connection: upgrade", get("/upg-noconn", &["Upgrade: websocket"]), one_check("GET", "/upg-noconn", b"", no_upgrade)),
        v("upgrade", "Upgrade on HTTP/1.0", b"GET /upg10 HTTP/1.0\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec(), one_check("GET", "/upg10", b"", no_upgrade)),
        v("conn", "Connection: Content-Length (must not drop CL)", post("/conn-cl", &["Connection: Content-Length", "Content-Length: 5"], b"hello"), one("POST", "/conn-cl", b"hello")),
        v("conn", "Connection: Transfer-Encoding", post("/conn-te", &["Connection: Transfer-Encoding", chunked], b"5\r\nhello\r\n0\r\n\r\n"), one("POST", "/conn-te", b"hello")),
        v("conn", "Connection: Host (must not drop Host)", get("/conn-host", &["Connection: Host"]), one("GET", "/conn-host", b"")),
        // ---- Expect games ------------------------------------------------------------
        v("expect", "100-continue with the body already sent", post("/exp-body", &["Expect: 100-continue", "Content-Length: 5"], b"hello"), one_check("POST", "/exp-body", b"hello", no_expect)),
        v("expect", "100-continue on a bodiless GET", get("/exp-get", &["Expect: 100-continue"]), one_check("GET", "/exp-get", b"", no_expect)),
        v("expect", "100-continue chunked, body sent", post("/exp-chunked", &["Expect: 100-Continue", chunked], b"5\r\nhello\r\n0\r\n\r\n"), one_check("POST", "/exp-chunked", b"hello", no_expect)),
        // ---- oversized heads -----------------------------------------------------
        v("size", "field over max_request_head_bytes", get("/v", &[&big_head]), R431),
        v("size", "more than max_headers fields", get("/v", &many), R431),
        v("size", "request-target over max_request_head_bytes", get(&long_target, &[]), R431),
        // ---- a second request hidden in a body ---------------------------------------
        v("hidden", "GET inside a CL body", post("/hidden-cl", &["Content-Length: 40"], SMUGGLED), one("POST", "/hidden-cl", SMUGGLED)),
        v("hidden", "GET inside a chunk", post("/hidden-ck", &[chunked], &[b"28\r\n".as_slice(), SMUGGLED, b"\r\n0\r\n\r\n"].concat()), one("POST", "/hidden-ck", SMUGGLED)),
        v("hidden", "GET with a CL body", b"GET /get-body HTTP/1.1\r\nHost: a.test\r\nContent-Length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(), one("GET", "/get-body", SMUGGLED)),
    ]
}

// ---------------------------------------------------------------------------
// Running one vector

/// Bytes for a failure message, cut to a readable length.
fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 400 {
        format!("{}... ({} bytes)", &s[..s.floor_char_boundary(400)], b.len())
    } else {
        s.into_owned()
    }
}

struct Outcome {
    kind: &'static str,
    detail: String,
}

fn start(recorder: &Recorder) -> (Proxy, SocketAddr) {
    let port = free_port();
    let proxy = Proxy::start_with(
        &format!(
            r#"limits:
  max_request_head_bytes: 8192
  max_headers: 50
  request_head_timeout: 3s
  downstream_idle_timeout: 5s
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: rec }}
clusters:
{}"#,
            cluster_yaml("rec", &[recorder.addr])
        ),
        &["--workers", "1"],
    );
    (proxy, local(port))
}

/// Checks that hold for every request the upstream got: a single well-formed
/// framing that matches the body actually sent, HTTP/1.1, one Host.
fn check_forwarded(s: &Seen, method: &str, target: &str, body: &[u8]) -> Result<(), String> {
    if s.method != method || s.target != target {
        return Err(format!("upstream got {} {}, want {method} {target}", s.method, s.target));
    }
    if s.body != body {
        return Err(format!(
            "upstream body {:?}, want {:?}",
            show(&s.body),
            show(body)
        ));
    }
    let ok_framing = match s.framing.as_str() {
        "none" => body.is_empty(),
        "chunked" => true,
        cl => cl == format!("cl:{}", body.len()),
    };
    if !ok_framing {
        return Err(format!("framing {} for a {}-byte body", s.framing, body.len()));
    }
    Ok(())
}

fn run_vector(web: SocketAddr, rec: &Recorder, v: &Vector) -> Result<Outcome, String> {
    let conns_before = rec.accepted();
    let mut c = Conn::connect(web);
    c.set_read_timeout(Duration::from_secs(5));
    if let Want::LateReject { split, .. } = v.want {
        let split = split.min(v.bytes.len());
        c.send(&v.bytes[..split]).map_err(|e| format!("send: {e}"))?;
        if split < v.bytes.len() {
            thread::sleep(Duration::from_millis(150));
            c.send(&v.bytes[split..]).map_err(|e| format!("send: {e}"))?;
        }
    } else {
        c.send(&v.bytes).map_err(|e| format!("send: {e}"))?;
    }
    if matches!(v.want, Want::CutOff { .. }) {
        // Give the proxy the time to forward what it accepted, then end the body early.
        thread::sleep(Duration::from_millis(200));
        c.shutdown_write();
    }
    let first = c.read_response("GET");
    let mut client = String::new();
    let mut closed = false;
    let mut status = None;
    match &first {
        Err(e) => {
            client = format!("no response ({e})");
            closed = true;
        }
        Ok(r) => {
            status = Some(r.status);
            let says_close = r
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            if r.status >= 400 || says_close || matches!(v.want, Want::CutOff { .. }) {
                match c.read_until_closed(Duration::from_secs(5)) {
                    Ok(rest) if rest.is_empty() => closed = true,
                    Ok(rest) => {
                        return Err(format!(
                            "after the {} the proxy sent more: {:?}",
                            r.status,
                            show(&rest)
                        ))
                    }
                    Err(e) => return Err(format!("connection not closed after the {}: {e}", r.status)),
                }
            } else {
                // Still open: the proxy must be in step with the client.
                c.send(&get("/probe", &[])).map_err(|e| format!("probe send: {e}"))?;
                let p = c.read_response("GET").map_err(|e| format!("probe: {e}"))?;
                if p.status != 200 || p.header("x-seen") != Some("/probe") {
                    return Err(format!(
                        "probe on the same connection got {} x-seen={:?}: the proxy is out of step",
                        p.status,
                        p.header("x-seen")
                    ));
                }
            }
        }
    }
    drop(c);
    // The upstream's view, once every connection it accepted has ended.
    thread::sleep(Duration::from_millis(20));
    let (conns, reqs) = rec.settle(conns_before, Duration::from_secs(5));
    let reqs: Vec<Seen> = reqs.into_iter().filter(|s| s.target != "/probe").collect();
    for (i, cl) in conns.iter().enumerate() {
        if let Some(why) = &cl.violation {
            return Err(format!(
                "upstream connection {i} carried bytes a strict parser refuses ({why}): {:?}",
                show(&cl.bytes)
            ));
        }
        let is_probe_only = cl.requests == 1 && cl.bytes.starts_with(b"GET /probe ");
        let cut_off = matches!(v.want, Want::CutOff { .. } | Want::LateReject { .. });
        if !cl.leftover.is_empty() && !cut_off && !is_probe_only {
            return Err(format!(
                "upstream connection {i} got bytes beyond its request: {:?}",
                show(&cl.leftover)
            ));
        }
    }
    let upstream_bytes: usize = conns
        .iter()
        .filter(|c| !c.bytes.starts_with(b"GET /probe "))
        .map(|c| c.bytes.len())
        .sum();

    match v.want {
        Want::Reject(statuses) => {
            let s = status.ok_or_else(|| format!("want a 4xx, got {client}"))?;
            if !statuses.contains(&s) {
                return Err(format!("want one of {statuses:?}, got {s}"));
            }
            if !closed {
                return Err("connection left open after the rejection".into());
            }
            if !conns.is_empty() || upstream_bytes > 0 {
                return Err(format!(
                    "rejected with {s}, but the upstream saw {} connection(s), {} request(s): {:?}",
                    conns.len(),
                    reqs.len(),
                    conns.iter().map(|c| show(&c.bytes)).collect::<Vec<_>>()
                ));
            }
            let reason = first.as_ref().ok().and_then(|r| r.error_reason()).unwrap_or("-").to_string();
            Ok(Outcome {
                kind: "rejected",
                detail: format!("{s} {reason}, closed, upstream saw nothing"),
            })
        }
        Want::One {
            method,
            target,
            body,
            check,
        } => {
            let s = status.ok_or_else(|| format!("want the upstream's 200, got {client}"))?;
            if reqs.len() != 1 {
                return Err(format!(
                    "want exactly one request upstream, got {}: {:?}",
                    reqs.len(),
                    reqs.iter().map(|r| format!("{} {}", r.method, r.target)).collect::<Vec<_>>()
                ));
            }
            let seen = &reqs[0];
            if s != 200 || first.as_ref().ok().and_then(|r| r.header("x-seen")) != Some(target) {
                return Err(format!("client got {s} instead of the upstream's answer for {target}"));
            }
            check_forwarded(seen, method, target, body)?;
            if let Some(f) = check {
                f(seen)?;
            }
            Ok(Outcome {
                kind: "forwarded-as-one",
                detail: format!(
                    "{} {} framing={} body={}B{}",
                    seen.method,
                    seen.target,
                    seen.framing,
                    seen.body.len(),
                    if closed { ", client closed" } else { ", client in step" }
                ),
            })
        }
        Want::LateReject { target, .. } => {
            let s = status.ok_or_else(|| format!("want a 400, got {client}"))?;
            if s != 400 || !closed {
                return Err(format!("want 400 and a closed connection, got {s} (closed: {closed})"));
            }
            if !reqs.is_empty() || conns.len() > 1 {
                return Err(format!(
                    "late bad chunk: upstream got {} complete request(s) on {} connection(s)",
                    reqs.len(),
                    conns.len()
                ));
            }
            let want = format!("POST {target} HTTP/1.1\r\n");
            if let Some(cl) = conns.first() {
                if !cl.bytes.starts_with(want.as_bytes()) {
                    return Err(format!("upstream saw {:?}", show(&cl.bytes)));
                }
            }
            Ok(Outcome {
                kind: "rejected-late",
                detail: format!("400, closed; upstream saw {upstream_bytes} bytes of one cut-off request"),
            })
        }
        Want::CutOff { target } => {
            if !reqs.is_empty() {
                return Err(format!(
                    "a cut-off body became {} complete request(s) upstream",
                    reqs.len()
                ));
            }
            if let Some(s) = status {
                if !(400..500).contains(&s) {
                    return Err(format!("cut-off body answered with {s}"));
                }
            }
            if conns.len() > 1 {
                return Err(format!("{} upstream connections for one request", conns.len()));
            }
            if let Some(cl) = conns.first() {
                let want = format!("POST {target} HTTP/1.1\r\n");
                if !cl.bytes.starts_with(want.as_bytes()) {
                    return Err(format!(
                        "upstream saw {:?}",
                        String::from_utf8_lossy(&cl.bytes[..cl.bytes.len().min(80)])
                    ));
                }
            }
            Ok(Outcome {
                kind: "cut-off",
                detail: format!(
                    "{}; upstream saw {} bytes of one request then EOF",
                    status.map_or("no answer, closed".to_string(), |s| format!("{s}, closed")),
                    upstream_bytes
                ),
            })
        }
    }
}

#[test]
fn desync_vectors() {
    let rec = Recorder::start(false);
    let (proxy, web) = start(&rec);
    let t0 = Instant::now();
    let vs = vectors();
    assert!(vs.len() >= 40, "only {} vectors", vs.len());
    let mut rows = Vec::new();
    let mut kinds = Vec::new();
    let mut failures = Vec::new();
    for (i, v) in vs.iter().enumerate() {
        let tv = Instant::now();
        let res = run_vector(web, &rec, v);
        let ms = tv.elapsed().as_millis();
        kinds.push(res.as_ref().map_or("FAIL", |o| o.kind));
        match res {
            Ok(o) => rows.push(format!("{:>3} {:<8} {:<48} {:<17} {} [{ms} ms]", i + 1, v.cat, v.name, o.kind, o.detail)),
            Err(e) => {
                rows.push(format!("{:>3} {:<8} {:<48} {:<17} {}", i + 1, v.cat, v.name, "FAIL", e));
                failures.push(format!("#{} [{}] {}: {e}", i + 1, v.cat, v.name));
            }
        }
    }
    let count = |k: &str| kinds.iter().filter(|&&x| x == k).count();
    println!("\n  # category name                                             outcome           detail");
    for r in &rows {
        println!("{r}");
    }
    println!(
        "{} vectors: {} rejected, {} rejected after streaming began, {} forwarded as one, {} cut off, {} failed ({:?})",
        vs.len(),
        count("rejected"),
        count("rejected-late"),
        count("forwarded-as-one"),
        count("cut-off"),
        failures.len(),
        t0.elapsed()
    );
    // The proxy survived all of it and still serves.
    let mut c = Conn::connect(web);
    c.send(&get("/after-all", &[])).unwrap();
    let r = c.read_response("GET").unwrap();
    assert_eq!(r.header("x-seen"), Some("/after-all"));
    assert!(
        !proxy.log().contains("panicked"),
        "the proxy panicked:\n{}",
        proxy.log()
    );
    assert!(failures.is_empty(), "{} vector(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn pipelining_still_works() {
    // A keep-alive upstream: the proxy may reuse its connection, and must send
    // each pipelined request exactly once, in order, with its own body.
    let rec = Recorder::start(true);
    let (_proxy, web) = start(&rec);
    let mut c = Conn::connect(web);
    let mut bytes = get("/p1", &[]);
    bytes.extend(post("/p2", &["Content-Length: 11"], b"hello world"));
    bytes.extend(post("/p3", &["Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n"));
    c.send(&bytes).unwrap();
    for want in ["/p1", "/p2", "/p3"] {
        let r = c.read_response("GET").unwrap_or_else(|e| panic!("response for {want}: {e}"));
        assert_eq!(r.status, 200, "{want}");
        assert_eq!(r.header("x-seen"), Some(want), "responses out of order");
        assert_eq!(r.text(), "ok");
    }
    // Still in step for a fourth, non-pipelined request.
    c.send(&get("/p4", &[])).unwrap();
    let r = c.read_response("GET").unwrap();
    assert_eq!(r.header("x-seen"), Some("/p4"));
    drop(c);
    thread::sleep(Duration::from_millis(100));
    let r = rec.rec.lock().unwrap();
    let seen: Vec<(&str, &str, &[u8])> = r
        .requests
        .iter()
        .map(|s| (s.method.as_str(), s.target.as_str(), s.body.as_slice()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET", "/p1", &b""[..]),
            ("POST", "/p2", &b"hello world"[..]),
            ("POST", "/p3", &b"abc"[..]),
            ("GET", "/p4", &b""[..]),
        ],
        "the upstream must see each request once, in order"
    );
    for cl in &r.conns {
        assert_eq!(cl.violation, None, "{:?}", show(&cl.bytes));
    }
    let s = &r.requests[2];
    assert_eq!(s.framing, "chunked");
    assert!(
        s.raw.ends_with(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        "chunked body forwarded byte for byte: {:?}",
        String::from_utf8_lossy(&s.raw)
    );
    assert_eq!(s.version, "HTTP/1.1");
}
