//! HTTP/1.1 message heads and chunked bodies as the proxy meets them on the wire (RFC 9112).
//! Network bytes become typed values and byte spans here; anything two parsers could read
//! differently is refused rather than guessed at, because that disagreement is request smuggling.

use std::fmt;
use std::mem::MaybeUninit;

/// Size limits applied while a head is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted head, from the first byte through the final CRLFCRLF.
    pub max_head_bytes: usize,
    /// Most header field lines accepted in one head.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 61_440,
            max_headers: 100,
        }
    }
}

/// Why a head was refused; each maps to one HTTP status the proxy answers with, then closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head breaks HTTP/1.1 syntax or framing rules: 400.
    Malformed(&'static str),
    /// The head, or its number of fields, is over a configured limit: 431.
    TooLarge(&'static str),
}

impl HeadError {
    /// The status to answer a client with. For a refused upstream response the proxy
    /// sends 502 instead; the variant still tells it what went wrong.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::TooLarge(_) => 431,
        }
    }

    /// A short fixed description, for logs; never built from request bytes.
    pub fn reason(&self) -> &'static str {
        match *self {
            Self::Malformed(reason) | Self::TooLarge(reason) => reason,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HeadError {}

/// Returned when an offset httparse gave back does not lie inside the buffer. It cannot
/// happen with a correct httparse, but a typed error is cheaper than trusting that.
const INTERNAL: HeadError = HeadError::Malformed("internal: offset outside head");

/// Byte range into the buffer the head was parsed from (u32 offsets, Copy).
///
/// Offsets instead of slices keep parsed heads free of borrows, so the proxy can keep
/// a head while it refills or compacts its read buffer (then it adjusts by the shift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes this span covers in `buf`; empty rather than a panic if `buf` is not
    /// the buffer the span came from.
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    fn from_range(start: usize, end: usize) -> Result<Self, HeadError> {
        match (u32::try_from(start), u32::try_from(end)) {
            (Ok(start), Ok(end)) if start <= end => Ok(Self { start, end }),
            _ => Err(INTERNAL),
        }
    }

    fn empty_at(pos: u32) -> Self {
        Self {
            start: pos,
            end: pos,
        }
    }
}

/// Header names the proxy acts on; everything else is `Other` and passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    XForwardedFor,
    XForwardedProto,
    XRequestId,
    Expect,
    Other,
}

impl HeaderKind {
    /// Matches by length first so that most names are rejected without looking at bytes.
    fn classify(name: &[u8]) -> Self {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is(b"te") => Self::Te,
            4 if is(b"host") => Self::Host,
            6 if is(b"expect") => Self::Expect,
            7 if is(b"trailer") => Self::Trailer,
            7 if is(b"upgrade") => Self::Upgrade,
            10 if is(b"connection") => Self::Connection,
            10 if is(b"keep-alive") => Self::KeepAlive,
            12 if is(b"x-request-id") => Self::XRequestId,
            14 if is(b"content-length") => Self::ContentLength,
            15 if is(b"x-forwarded-for") => Self::XForwardedFor,
            16 if is(b"proxy-connection") => Self::ProxyConnection,
            17 if is(b"transfer-encoding") => Self::TransferEncoding,
            17 if is(b"x-forwarded-proto") => Self::XForwardedProto,
            _ => Self::Other,
        }
    }

    /// The fields RFC 9110 §7.6.1 and RFC 9112 make connection-specific regardless of
    /// what the Connection header says.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Self::Connection
                | Self::KeepAlive
                | Self::ProxyConnection
                | Self::Te
                | Self::Trailer
                | Self::TransferEncoding
                | Self::Upgrade
        )
    }
}

/// One header field line. `value` has surrounding whitespace trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub name: Span,
    pub value: Span,
    pub kind: HeaderKind,
    /// Not to be forwarded: a hop-by-hop kind, or named by a Connection option.
    pub hop_by_hop: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Connect,
    Trace,
    /// Any other token; `RequestHead::method_span` has its bytes.
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1), so "get" is `Other`.
    pub fn from_token(token: &[u8]) -> Self {
        match token {
            b"GET" => Self::Get,
            b"HEAD" => Self::Head,
            b"POST" => Self::Post,
            b"PUT" => Self::Put,
            b"DELETE" => Self::Delete,
            b"OPTIONS" => Self::Options,
            b"PATCH" => Self::Patch,
            b"CONNECT" => Self::Connect,
            b"TRACE" => Self::Trace,
            _ => Self::Other,
        }
    }
}

impl Method {
    /// Methods RFC 9110 §9.2.2 calls idempotent: safe to send twice when a
    /// reused connection fails before any response byte.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Trace
                | Method::Put
                | Method::Delete
        )
    }
}

/// How the message body following the head is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body follows the head.
    None,
    ContentLength(u64),
    Chunked,
    /// The body runs until the server closes the connection (responses only).
    UntilClose,
}

/// A complete, validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head including the final CRLFCRLF (and any empty lines before the
    /// request line, which RFC 9112 §2.2 says to skip); the body or next request follows.
    pub head_len: usize,
    pub method: Method,
    pub method_span: Span,
    /// The request-target as sent.
    pub target: Span,
    /// The target's path, up to and excluding '?'. For absolute-form it is the path part
    /// of the URI, which is empty for `http://host` or `http://host?q` (forward it as "/").
    /// For authority-form (CONNECT) it is empty; for `*` it is the `*`.
    pub path: Span,
    /// The authority of an absolute-form or authority-form target. RFC 9112 §3.2.2 says
    /// it replaces the Host header for routing when present.
    pub authority: Option<Span>,
    /// 0 or 1.
    pub version_minor: u8,
    /// All header fields in order; see [`parse_request_head`] for reusing this Vec.
    pub headers: Vec<Header>,
    /// Value of the Host header (which may be empty, RFC 9110 §7.2).
    pub host: Option<Span>,
    /// `None` when the request has neither Content-Length nor Transfer-Encoding.
    pub framing: BodyFraming,
    /// HTTP/1.1: unless Connection has "close"; HTTP/1.0: only with "keep-alive".
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1 says ignore it on 1.0).
    pub expect_continue: bool,
    /// The Upgrade header value, only if Connection lists "upgrade" and the version is 1.1.
    pub upgrade: Option<Span>,
}

/// A complete, validated response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub head_len: usize,
    /// 100..=999.
    pub status: u16,
    /// The reason phrase as sent (possibly empty, possibly obs-text).
    pub reason: Span,
    pub version_minor: u8,
    pub headers: Vec<Header>,
    pub framing: BodyFraming,
    /// Whether the connection to the upstream may be reused after this response; always
    /// false for `UntilClose` framing and for 101, after which the connection is no
    /// longer HTTP.
    pub keep_alive: bool,
}

/// httparse header slots live on the stack up to this many; only a configuration with a
/// larger `max_headers` pays for a heap array, and then only for heads long enough to
/// hold that many fields.
const STACK_HEADER_SLOTS: usize = 128;

/// The shortest possible field line is "a:" CRLF, so a head of `n` bytes cannot hold
/// `n / 4 + 1` fields; no need for more slots than that.
const MIN_FIELD_LINE: usize = 4;

/// Connection options beyond this are refused: each one is compared with every field
/// name, and real clients send one or two.
const MAX_CONNECTION_OPTIONS: usize = 64;

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)` = incomplete, read more. `Ok(Some)` = a complete, valid head.
///
/// `headers` is scratch space: it is cleared, filled, and on success moved into
/// [`RequestHead::headers`] (leaving `headers` empty). To reuse the allocation across the
/// requests of a keep-alive connection, give it back when done with the head:
/// `scratch = head.headers;`. On `Ok(None)` and `Err` it keeps its capacity (its
/// contents are then unspecified).
pub fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
    headers: &mut Vec<Header>,
) -> Result<Option<RequestHead>, HeadError> {
    let Some(bounds) = find_head(buf, limits.max_head_bytes)? else {
        return Ok(None);
    };
    let head = buf.get(..bounds.head_len).ok_or(INTERNAL)?;
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADER_SLOTS];
    let mut heap = Vec::new();
    let slots = header_slots(&mut stack, &mut heap, limits.max_headers, head.len());

    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        // The head was already found to end at `head_len`; httparse seeing it end
        // elsewhere would mean the two disagree on framing, so refuse.
        Ok(_) => return Err(HeadError::Malformed("head end mismatch")),
        Err(e) => return Err(map_httparse_error(e)),
    }

    let method_token = req.method.ok_or(INTERNAL)?.as_bytes();
    let method = Method::from_token(method_token);
    let method_span = span_of(buf, method_token)?;
    let target = span_of(buf, req.path.ok_or(INTERNAL)?.as_bytes())?;
    let version_minor = req.version.ok_or(INTERNAL)?;
    let Target { path, authority } = parse_target(buf, target, method)?;
    let fields = collect_fields(buf, req.headers, headers, Role::Request)?;

    if version_minor == 1 && fields.host.is_none() {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }
    let framing = if fields.te_seen {
        if fields.content_length.is_some() {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        if version_minor == 0 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        // RFC 9112 §6.3 rule 4: without chunked last, a request body has no knowable end.
        if !fields.te_last_chunked {
            return Err(HeadError::Malformed("final transfer-coding is not chunked"));
        }
        // The forwarded request says `transfer-encoding: chunked` only: a coding such as
        // gzip before it would be silently dropped, so the upstream would take the coded
        // bytes for the content. Refused rather than passed on, as nginx and Envoy do.
        if fields.te_other_coding {
            return Err(HeadError::Malformed("transfer-coding other than chunked"));
        }
        BodyFraming::Chunked
    } else if let Some(n) = fields.content_length {
        BodyFraming::ContentLength(n)
    } else {
        BodyFraming::None
    };

    let http11 = version_minor == 1;
    Ok(Some(RequestHead {
        head_len: bounds.head_len,
        method,
        method_span,
        target,
        path,
        authority,
        version_minor,
        headers: std::mem::take(headers),
        host: fields.host,
        framing,
        keep_alive: fields.keep_alive(version_minor),
        expect_continue: http11 && fields.expect_continue,
        // An h2c upgrade is never passed on (Envoy strips it too): an upstream that
        // accepted it would take every later request on the connection as HTTP/2 frames
        // in a tunnel, out of reach of our routing and authorization (h2c smuggling).
        // Without `upgrade` the Upgrade field is dropped as hop-by-hop and the request
        // goes on as a plain one.
        upgrade: if http11 && fields.upgrade_option {
            fields
                .upgrade
                .filter(|u| !is_token_list_member(u.get(buf), b"h2c"))
        } else {
            None
        },
    }))
}

/// Parses a response head at the start of `buf`; `request_method` is the method of the
/// request it answers, which decides whether a body follows.
///
/// `Ok(None)` = incomplete, read more. `headers` is scratch space exactly as for
/// [`parse_request_head`].
///
/// Framing: HEAD requests, 1xx (101 included), 204, 304 and 2xx answers to CONNECT have
/// no body (`None`); else Transfer-Encoding `chunked` is `Chunked`; else Content-Length;
/// else `UntilClose`. A body under any other transfer-coding (`gzip, chunked`, `gzip`) is
/// refused: the proxy passes bodies on chunked or by length, so the coding would be
/// lost and the client would take coded bytes for the content (nginx answers such an
/// upstream 502 too). Content-Length together with Transfer-Encoding, and
/// Transfer-Encoding in an HTTP/1.0 response, are refused even where no body follows,
/// since either means the upstream and the proxy may not agree on where the message ends.
pub fn parse_response_head(
    buf: &[u8],
    limits: &Limits,
    request_method: Method,
    headers: &mut Vec<Header>,
) -> Result<Option<ResponseHead>, HeadError> {
    let Some(bounds) = find_head(buf, limits.max_head_bytes)? else {
        // A peer that does not speak HTTP/1 (a server that talks first, TLS, binary)
        // is refused as soon as its first bytes show it, not waited on until the
        // route timeout as if it were slow.
        if !may_start_status_line(buf) {
            return Err(HeadError::Malformed("not an HTTP/1.x status line"));
        }
        return Ok(None);
    };
    let head = buf.get(..bounds.head_len).ok_or(INTERNAL)?;
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADER_SLOTS];
    let mut heap = Vec::new();
    let slots = header_slots(&mut stack, &mut heap, limits.max_headers, head.len());

    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, head, slots)
    {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(HeadError::Malformed("head end mismatch")),
        Err(e) => return Err(map_httparse_error(e)),
    }

    let status = res.code.ok_or(INTERNAL)?;
    if !(100..=999).contains(&status) {
        return Err(HeadError::Malformed("status code out of range"));
    }
    let version_minor = res.version.ok_or(INTERNAL)?;
    // httparse replaces a reason with obs-text by "", which is not inside `buf`; so the
    // span is taken from the status line's fixed layout, which httparse did check:
    // "HTTP/1.x" SP 3DIGIT [SP reason] CRLF, single spaces.
    let reason_start = bounds.start + "HTTP/1.1 200 ".len();
    let reason = if bounds.line_end >= reason_start {
        Span::from_range(reason_start, bounds.line_end)?
    } else {
        Span::from_range(bounds.line_end, bounds.line_end)?
    };
    let fields = collect_fields(buf, res.headers, headers, Role::Response)?;

    if fields.te_seen && fields.content_length.is_some() {
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if fields.te_seen && version_minor == 0 {
        return Err(HeadError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 response",
        ));
    }
    let no_body = request_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        // RFC 9112 §6.3 rule 2: the connection becomes a tunnel after the head.
        || (request_method == Method::Connect && (200..300).contains(&status));
    let framing = if no_body {
        BodyFraming::None
    } else if fields.te_seen {
        if fields.te_other_coding {
            return Err(HeadError::Malformed("transfer-coding other than chunked"));
        }
        // Only "chunked" is left, once (a repeat was refused), so it is the last.
        debug_assert!(fields.te_last_chunked);
        BodyFraming::Chunked
    } else if let Some(n) = fields.content_length {
        BodyFraming::ContentLength(n)
    } else {
        BodyFraming::UntilClose
    };
    let keep_alive =
        fields.keep_alive(version_minor) && framing != BodyFraming::UntilClose && status != 101;

    Ok(Some(ResponseHead {
        head_len: bounds.head_len,
        status,
        reason,
        version_minor,
        headers: std::mem::take(headers),
        framing,
        keep_alive,
    }))
}

/// True if `token` is one of the comma-separated elements of `value`, compared
/// case-insensitively after trimming optional whitespace (RFC 9110 §5.6.1).
pub fn is_token_list_member(value: &[u8], token: &[u8]) -> bool {
    !token.is_empty() && list_elements(value).any(|e| e.eq_ignore_ascii_case(token))
}

// ---------------------------------------------------------------------------------------
// Head internals
// ---------------------------------------------------------------------------------------

/// Where the head sits in the buffer.
struct Bounds {
    /// First byte of the start line, after skipped empty lines.
    start: usize,
    /// Offset of the CR ending the start line.
    line_end: usize,
    head_len: usize,
}

/// Finds the CRLFCRLF ending the head and checks every line ending on the way.
///
/// httparse accepts a bare LF as a line ending; an upstream that does not would see
/// different header lines than the proxy, so every CR must be followed by LF and every
/// LF preceded by CR. Checking here also rejects such heads before they are complete, and
/// means httparse only ever sees a whole head.
fn find_head(buf: &[u8], max_head_bytes: usize) -> Result<Option<Bounds>, HeadError> {
    // Spans are u32 offsets, so no head may reach past u32::MAX whatever the limit says.
    let max = max_head_bytes.min(u32::MAX as usize);
    let window = buf.get(..max).unwrap_or(buf);

    // RFC 9112 §2.2: empty lines before the start line are to be ignored.
    let mut start = 0;
    while window.get(start..start + 2) == Some(b"\r\n".as_slice()) {
        start += 2;
    }

    let mut line_start = start;
    let mut first_line_end = None;
    // Jump from line ending to line ending; each must be a CRLF pair, so an LF found
    // here is one that no CR came before.
    while let Some(at) = find_cr_or_lf(window, line_start) {
        match window.get(at..) {
            Some([b'\r', b'\n', ..]) => {}
            // The LF may still arrive.
            Some([b'\r']) => break,
            Some([b'\r', ..]) => return Err(HeadError::Malformed("bare CR in head")),
            _ => return Err(HeadError::Malformed("bare LF in head")),
        }
        if at == line_start {
            // An empty line ends the head. The start line is never empty, since leading
            // empty lines were skipped.
            return Ok(Some(Bounds {
                start,
                line_end: first_line_end.unwrap_or(at),
                head_len: at + 2,
            }));
        }
        first_line_end.get_or_insert(at);
        line_start = at + 2;
    }

    // A full window without an end means the head is over the limit. Saying so now,
    // rather than asking for more, matters when the caller's buffer is exactly that size.
    if !buf.is_empty() && buf.len() >= max {
        Err(HeadError::TooLarge("head larger than max_head_bytes"))
    } else {
        Ok(None)
    }
}

/// False once the bytes received so far cannot begin `HTTP/1.x NNN` followed by SP or
/// CR (after the empty lines `find_head` skips), the only status line we accept.
fn may_start_status_line(buf: &[u8]) -> bool {
    let mut rest = buf;
    while let Some(after) = rest.strip_prefix(b"\r\n") {
        rest = after;
    }
    if rest == b"\r" {
        return true;
    }
    const TEMPLATE: &[u8; 13] = b"HTTP/1.# ###_";
    rest.iter().zip(TEMPLATE).all(|(&b, &t)| match t {
        b'#' => b.is_ascii_digit(),
        b'_' => b == b' ' || b == b'\r',
        _ => b == t,
    })
}

/// Offset of the first CR or LF in `haystack` at or after `from`, eight bytes at a time:
/// most head bytes are neither.
fn find_cr_or_lf(haystack: &[u8], from: usize) -> Option<usize> {
    let rest = haystack.get(from..)?;
    let mut offset = 0;
    while let Some(word) = rest.get(offset..).and_then(|r| r.first_chunk::<8>()) {
        if let Some(at) = first_cr_or_lf(u64::from_le_bytes(*word)) {
            return Some(from + offset + at);
        }
        offset += 8;
    }
    rest.get(offset..)?
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|at| from + offset + at)
}

/// Index of the first CR or LF byte of a little-endian `word`, if any.
///
/// The classic SWAR zero-byte test: `(v - 0x01..) & !v & 0x80..` flags every zero byte
/// and may flag bytes above one (borrows run upward), never below; so its lowest flag is
/// exactly the first zero byte of `word ^ CR` or of `word ^ LF`.
fn first_cr_or_lf(word: u64) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mask =
        zero_bytes(word ^ (ONES * u64::from(b'\r'))) | zero_bytes(word ^ (ONES * u64::from(b'\n')));
    if mask == 0 {
        None
    } else {
        Some((mask.trailing_zeros() / 8) as usize)
    }
}

fn header_slots<'s, 'b>(
    stack: &'s mut [MaybeUninit<httparse::Header<'b>>; STACK_HEADER_SLOTS],
    heap: &'s mut Vec<MaybeUninit<httparse::Header<'b>>>,
    max_headers: usize,
    head_len: usize,
) -> &'s mut [MaybeUninit<httparse::Header<'b>>] {
    // httparse reports TooManyHeaders when every slot is used and another field follows,
    // so exactly `max_headers` slots enforce the limit; capping by what the head could
    // hold keeps a huge configured limit from turning into a huge allocation.
    let n = max_headers.min(head_len / MIN_FIELD_LINE + 1);
    if n <= STACK_HEADER_SLOTS {
        stack.get_mut(..n).unwrap_or_default()
    } else {
        heap.resize(n, MaybeUninit::uninit());
        heap.as_mut_slice()
    }
}

fn map_httparse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge("too many header fields"),
        // A name error is also what obs-fold (a line starting with SP/HTAB), whitespace
        // before the colon, an empty name and control bytes in a name come out as.
        httparse::Error::HeaderName => HeadError::Malformed("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status line"),
        httparse::Error::Token => HeadError::Malformed("invalid request line"),
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
    }
}

/// Turns a sub-slice httparse returned back into offsets within `buf`.
fn span_of(buf: &[u8], sub: &[u8]) -> Result<Span, HeadError> {
    let start = (sub.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .ok_or(INTERNAL)?;
    let end = start.checked_add(sub.len()).ok_or(INTERNAL)?;
    if end > buf.len() {
        return Err(INTERNAL);
    }
    Span::from_range(start, end)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Request,
    Response,
}

/// What the proxy needs to know from the fields, gathered in one pass.
#[derive(Default)]
struct Fields {
    host: Option<Span>,
    content_length: Option<u64>,
    te_seen: bool,
    te_any_coding: bool,
    te_chunked_seen: bool,
    te_last_chunked: bool,
    /// A transfer-coding other than chunked was listed.
    te_other_coding: bool,
    close: bool,
    keep_alive_option: bool,
    upgrade_option: bool,
    /// A Connection option that may name some other field.
    names_fields: bool,
    expect_continue: bool,
    upgrade: Option<Span>,
}

impl Fields {
    fn keep_alive(&self, version_minor: u8) -> bool {
        !self.close && (version_minor == 1 || self.keep_alive_option)
    }
}

fn collect_fields(
    buf: &[u8],
    raw: &[httparse::Header<'_>],
    out: &mut Vec<Header>,
    role: Role,
) -> Result<Fields, HeadError> {
    out.clear();
    out.reserve(raw.len());
    let mut f = Fields::default();
    let mut connection_options = 0usize;

    for h in raw {
        let name_bytes = h.name.as_bytes();
        // httparse requires a token name; kept so this module's guarantee does not
        // rest on that detail.
        if name_bytes.is_empty() {
            return Err(HeadError::Malformed("empty header field name"));
        }
        let name = span_of(buf, name_bytes)?;
        let value = span_of(buf, h.value)?;
        let kind = HeaderKind::classify(name_bytes);
        match kind {
            HeaderKind::Host if role == Role::Request => {
                // RFC 9112 §3.2: two Host fields could route two different ways.
                if f.host.is_some() {
                    return Err(HeadError::Malformed("more than one Host"));
                }
                if !h.value.is_empty() {
                    validate_authority(h.value, false)
                        .map_err(|_| HeadError::Malformed("invalid Host"))?;
                }
                f.host = Some(value);
            }
            HeaderKind::ContentLength => {
                let n = parse_content_length(h.value)?;
                if f.content_length.is_some_and(|prev| prev != n) {
                    return Err(HeadError::Malformed("conflicting Content-Length values"));
                }
                f.content_length = Some(n);
            }
            HeaderKind::TransferEncoding => {
                f.te_seen = true;
                scan_transfer_codings(h.value, &mut f)?;
            }
            HeaderKind::Connection => {
                for option in list_elements(h.value) {
                    connection_options += 1;
                    if connection_options > MAX_CONNECTION_OPTIONS {
                        return Err(HeadError::Malformed("too many Connection options"));
                    }
                    if option.eq_ignore_ascii_case(b"keep-alive") {
                        f.keep_alive_option = true;
                    } else if option.eq_ignore_ascii_case(b"upgrade") {
                        f.upgrade_option = true;
                    } else {
                        // "close" too: RFC 9110 §7.6.1 treats every option as a field
                        // name to drop, and a field actually named "close" is possible.
                        f.close |= option.eq_ignore_ascii_case(b"close");
                        f.names_fields = true;
                    }
                }
            }
            HeaderKind::Expect if role == Role::Request => {
                f.expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
            }
            HeaderKind::Upgrade if f.upgrade.is_none() && !h.value.is_empty() => {
                f.upgrade = Some(value);
            }
            HeaderKind::Other if role == Role::Request && is_framing_in_disguise(name_bytes) => {
                return Err(HeadError::Malformed(
                    "Content_Length or Transfer_Encoding field name",
                ));
            }
            _ => {}
        }
        out.push(Header {
            name,
            value,
            kind,
            hop_by_hop: kind.is_hop_by_hop(),
        });
    }

    if f.te_seen && !f.te_any_coding {
        return Err(HeadError::Malformed("empty Transfer-Encoding"));
    }
    if f.names_fields {
        mark_connection_named(buf, out);
    }
    Ok(f)
}

/// `Content_Length` or `Transfer_Encoding` in any case: a valid token that means
/// nothing to us, but CGI-style servers (and frameworks on top of them) map '_' to '-'
/// and would take it for the framing field, reading a body we did not forward as one.
fn is_framing_in_disguise(name: &[u8]) -> bool {
    let same = |known: &[u8]| {
        name.len() == known.len()
            && name.contains(&b'_')
            && name
                .iter()
                .zip(known)
                .all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    };
    same(b"content-length") || same(b"transfer-encoding")
}

/// Marks fields named by a Connection option as hop-by-hop (RFC 9110 §7.6.1).
///
/// Host and Content-Length are never marked: dropping them because the client asked
/// would forward a message whose routing or framing differs from what the proxy read.
fn mark_connection_named(buf: &[u8], headers: &mut [Header]) {
    for i in 0..headers.len() {
        let Some(connection) = headers.get(i).copied() else {
            break;
        };
        if connection.kind != HeaderKind::Connection {
            continue;
        }
        for option in list_elements(connection.value.get(buf)) {
            for h in headers.iter_mut() {
                if !h.hop_by_hop
                    && !matches!(h.kind, HeaderKind::Host | HeaderKind::ContentLength)
                    && h.name.get(buf).eq_ignore_ascii_case(option)
                {
                    h.hop_by_hop = true;
                }
            }
        }
    }
}

/// Content-Length = 1*DIGIT, possibly repeated as a list of identical values
/// (RFC 9110 §8.6 lets a recipient accept "5, 5"). Signs, spaces, hex and empty
/// elements are refused: each is read differently by some implementation.
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    let mut result = None;
    for element in value.split(|&b| b == b',') {
        let element = trim_ows(element);
        if element.is_empty() {
            return Err(HeadError::Malformed("empty Content-Length"));
        }
        let mut n: u64 = 0;
        for &b in element {
            if !b.is_ascii_digit() {
                return Err(HeadError::Malformed("Content-Length is not a number"));
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or(HeadError::Malformed("Content-Length overflows"))?;
        }
        if result.is_some_and(|prev| prev != n) {
            return Err(HeadError::Malformed("conflicting Content-Length values"));
        }
        result = Some(n);
    }
    result.ok_or(HeadError::Malformed("empty Content-Length"))
}

/// Reads one Transfer-Encoding line into the running summary; the codings of several
/// lines form one list in order (RFC 9110 §5.3).
fn scan_transfer_codings(value: &[u8], f: &mut Fields) -> Result<(), HeadError> {
    for element in list_elements(value) {
        let (coding, has_params) = match element.iter().position(|&b| b == b';') {
            Some(semi) => (trim_ows(element.get(..semi).unwrap_or_default()), true),
            None => (element, false),
        };
        if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::Malformed("invalid transfer-coding"));
        }
        let chunked = coding.eq_ignore_ascii_case(b"chunked");
        if chunked {
            // RFC 9112 §6.1: a sender must not apply chunked twice; a recipient that
            // de-chunked once would see the body end where another sees data.
            if f.te_chunked_seen {
                return Err(HeadError::Malformed("chunked applied more than once"));
            }
            if has_params {
                return Err(HeadError::Malformed("chunked with parameters"));
            }
            f.te_chunked_seen = true;
        }
        f.te_last_chunked = chunked;
        f.te_other_coding |= !chunked;
        f.te_any_coding = true;
    }
    Ok(())
}

struct Target {
    path: Span,
    authority: Option<Span>,
}

/// Checks the request-target's form against the method (RFC 9112 §3.2).
fn parse_target(buf: &[u8], target: Span, method: Method) -> Result<Target, HeadError> {
    let bytes = target.get(buf);
    // httparse lets UTF-8 through; a URI is ASCII (RFC 3986), and a fragment is never
    // sent (RFC 9112 §3.2), so either is a sign of a confused or hostile client.
    if !bytes
        .iter()
        .all(|&b| (0x21..=0x7e).contains(&b) && b != b'#')
    {
        return Err(HeadError::Malformed("invalid byte in request-target"));
    }
    let start = target.start as usize;
    match bytes.first() {
        Some(b'/') => {
            if method == Method::Connect {
                return Err(HeadError::Malformed("CONNECT needs authority-form"));
            }
            let path_len = bytes.iter().position(|&b| b == b'?').unwrap_or(bytes.len());
            Ok(Target {
                path: Span::from_range(start, start + path_len)?,
                authority: None,
            })
        }
        Some(b'*') if bytes.len() == 1 => {
            if method != Method::Options {
                return Err(HeadError::Malformed("asterisk-form is only for OPTIONS"));
            }
            Ok(Target {
                path: target,
                authority: None,
            })
        }
        _ if method == Method::Connect => {
            validate_authority(bytes, true)?;
            Ok(Target {
                path: Span::empty_at(target.end),
                authority: Some(target),
            })
        }
        _ => {
            let scheme_len = if starts_with_ignore_case(bytes, b"http://") {
                "http://".len()
            } else if starts_with_ignore_case(bytes, b"https://") {
                "https://".len()
            } else {
                return Err(HeadError::Malformed("unsupported request-target form"));
            };
            let rest = bytes.get(scheme_len..).unwrap_or_default();
            let authority_len = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            let (authority, after) = rest.split_at_checked(authority_len).ok_or(INTERNAL)?;
            if authority.is_empty() {
                return Err(HeadError::Malformed("absolute-form without authority"));
            }
            validate_authority(authority, false)?;
            let path_len = if after.first() == Some(&b'/') {
                after.iter().position(|&b| b == b'?').unwrap_or(after.len())
            } else {
                0
            };
            let authority_start = start + scheme_len;
            let path_start = authority_start + authority_len;
            Ok(Target {
                path: Span::from_range(path_start, path_start + path_len)?,
                authority: Some(Span::from_range(authority_start, path_start)?),
            })
        }
    }
}

/// `host [":" port]` where host is a reg-name or a bracketed IP literal. Userinfo ('@')
/// is refused (RFC 9110 §4.2.4 says treat it as an error), and so are ',' and other
/// delimiters some routers split on.
fn validate_authority(bytes: &[u8], port_required: bool) -> Result<(), HeadError> {
    const BAD: HeadError = HeadError::Malformed("invalid authority");
    let (host, port) = if let Some(literal) = bytes.strip_prefix(b"[") {
        let close = literal.iter().position(|&b| b == b']').ok_or(BAD)?;
        let (inner, after) = literal.split_at_checked(close).ok_or(BAD)?;
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(BAD);
        }
        // `after` starts with the ']'.
        match after.get(1..).unwrap_or_default().split_first() {
            None => (inner, None),
            Some((b':', port)) => (inner, Some(port)),
            Some(_) => return Err(BAD),
        }
    } else {
        let (host, port) = match bytes.iter().rposition(|&b| b == b':') {
            Some(colon) => {
                let (host, port) = bytes.split_at_checked(colon).ok_or(BAD)?;
                (host, port.get(1..))
            }
            None => (bytes, None),
        };
        if host.is_empty() || !host.iter().all(|&b| is_reg_name_byte(b)) {
            return Err(BAD);
        }
        (host, port)
    };
    debug_assert!(!host.is_empty());
    match port {
        None if port_required => Err(BAD),
        None => Ok(()),
        Some([]) if port_required => Err(BAD),
        Some(port) => {
            let mut n: u32 = 0;
            for &b in port {
                if !b.is_ascii_digit() {
                    return Err(BAD);
                }
                n = n * 10 + u32::from(b - b'0');
                if n > 65_535 {
                    return Err(BAD);
                }
            }
            Ok(())
        }
    }
}

/// unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2), minus ','.
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b';'
                | b'='
        )
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Non-empty elements of a comma-separated list, whitespace-trimmed (RFC 9110 §5.6.1
/// says recipients ignore empty elements).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// tchar from RFC 9110 §5.6.2, as a table because it runs on every chunk extension and
/// trailer byte.
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// An RFC 9110 token character; the config compiler checks header names with it too.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

// ---------------------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------------------

/// Why a chunked body was refused; the proxy closes the connection on any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    BadExtension,
    BadLineEnding,
    TrailerTooLarge,
    BadTrailer,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadSize => "invalid chunk size",
            Self::BadExtension => "invalid chunk extension",
            Self::BadLineEnding => "invalid line ending in chunked body",
            Self::TrailerTooLarge => "chunked trailer section too large",
            Self::BadTrailer => "invalid trailer field",
        })
    }
}

impl std::error::Error for ChunkError {}

/// Trailer bytes accepted by `ChunkedState::default()`.
pub const DEFAULT_MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Bytes of chunk extensions allowed on one chunk-size line, counted from the first ';'.
const MAX_CHUNK_EXT_BYTES: u16 = 4096;

/// A chunk size has at most 16 hex digits, so it always fits in a u64.
const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// What one [`ChunkedState::feed`] call saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkProgress {
    /// Bytes of the input that belong to the chunked body: all of it unless `done`.
    pub consumed: usize,
    /// The body (last chunk, trailers, final CRLF) ended at `consumed`.
    pub done: bool,
    /// How many of the consumed bytes were chunk data (payload), for body-size limits.
    pub data: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading hex digits of a chunk size.
    Size,
    Ext(Ext),
    /// Saw the CR ending a chunk-size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// Saw the CR of the final empty line.
    FinalLf,
    Done,
    /// Refused; stays refused so a caller that ignores one error cannot resume mid-body.
    Failed(ChunkError),
}

/// Where in `;name[=token|quoted-string]` a chunk-size line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    NameStart,
    Name,
    ValueStart,
    Token,
    Quoted,
    QuotedPair,
    QuotedEnd,
}

impl Ext {
    fn may_end_line(self) -> bool {
        matches!(self, Self::Name | Self::Token | Self::QuotedEnd)
    }
}

/// Validating pass-through reader of a chunked body (RFC 9112 §7.1).
///
/// It does not transform: the proxy forwards exactly the bytes it read, and this only
/// says how many of them belong to the body and whether they are well-formed. Input may
/// be split anywhere, down to one byte per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedState {
    phase: Phase,
    /// Hex digits of the current chunk size seen so far.
    digits: u8,
    ext_bytes: u16,
    /// The chunk size being read, then the chunk data still to come.
    remaining: u64,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

impl Default for ChunkedState {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TRAILER_BYTES)
    }
}

impl ChunkedState {
    /// `max_trailer_bytes` bounds the trailer field lines, CRLFs included; the final
    /// empty line is not counted, so 0 accepts bodies without trailers only.
    pub fn new(max_trailer_bytes: usize) -> Self {
        Self {
            phase: Phase::Size,
            digits: 0,
            ext_bytes: 0,
            remaining: 0,
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Feed the next bytes of the body. Returns how many bytes of `input` belong to the
    /// chunked body; if `done`, the body (last chunk, trailers, final CRLF) ended at
    /// `consumed` and the rest of `input` is the next message.
    pub fn feed(&mut self, input: &[u8]) -> Result<ChunkProgress, ChunkError> {
        self.feed_with(input, |_| {})
    }

    /// As [`feed`](Self::feed), also handing each run of chunk data to `on_data`, for a
    /// proxy that must de-chunk (e.g. towards an HTTP/1.0 client).
    pub fn feed_with(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<ChunkProgress, ChunkError> {
        if let Phase::Failed(e) = self.phase {
            return Err(e);
        }
        let mut rest = input;
        let mut data = 0;
        loop {
            if self.phase == Phase::Done {
                break;
            }
            if self.phase == Phase::Data {
                // Fast path: chunk data needs no per-byte look.
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                let Some((run, tail)) = rest.split_at_checked(take) else {
                    break;
                };
                if run.is_empty() {
                    break;
                }
                on_data(run);
                data += run.len();
                self.remaining -= run.len() as u64;
                if self.remaining == 0 {
                    self.phase = Phase::DataCr;
                }
                rest = tail;
                continue;
            }
            let Some((&b, tail)) = rest.split_first() else {
                break;
            };
            if let Err(e) = self.step(b) {
                self.phase = Phase::Failed(e);
                return Err(e);
            }
            rest = tail;
        }
        Ok(ChunkProgress {
            consumed: input.len() - rest.len(),
            done: self.phase == Phase::Done,
            data,
        })
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// One byte of anything but chunk data.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.phase = match self.phase {
            Phase::Size => match hex_value(b) {
                Some(v) => {
                    if self.digits == MAX_CHUNK_SIZE_DIGITS {
                        return Err(ChunkError::BadSize);
                    }
                    self.digits += 1;
                    self.remaining = (self.remaining << 4) | u64::from(v);
                    Phase::Size
                }
                None if self.digits == 0 => return Err(ChunkError::BadSize),
                None => match b {
                    b'\r' => Phase::SizeLf,
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    b';' => {
                        self.ext_bytes = 1;
                        Phase::Ext(Ext::NameStart)
                    }
                    // Includes whitespace: "5 ;x" and "5 " are refused, not trimmed.
                    _ => return Err(ChunkError::BadSize),
                },
            },
            Phase::Ext(ext) => self.step_ext(ext, b)?,
            Phase::SizeLf => match b {
                b'\n' if self.remaining == 0 => {
                    self.trailer_bytes = 0;
                    Phase::TrailerStart
                }
                b'\n' => Phase::Data,
                _ => return Err(ChunkError::BadLineEnding),
            },
            // feed_with handles data in bulk and never gets here; counting the byte as
            // data keeps the state consistent anyway.
            Phase::Data => {
                self.remaining = self.remaining.saturating_sub(1);
                if self.remaining == 0 {
                    Phase::DataCr
                } else {
                    Phase::Data
                }
            }
            Phase::DataCr if b == b'\r' => Phase::DataLf,
            Phase::DataLf if b == b'\n' => {
                self.digits = 0;
                self.remaining = 0;
                Phase::Size
            }
            Phase::DataCr | Phase::DataLf => return Err(ChunkError::BadLineEnding),
            Phase::TrailerStart if b == b'\r' => Phase::FinalLf,
            Phase::TrailerStart => {
                self.count_trailer_byte()?;
                match b {
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ if is_tchar(b) => Phase::TrailerName,
                    // Includes SP/HTAB, i.e. obs-fold, and ':' with no name.
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            Phase::TrailerName => {
                self.count_trailer_byte()?;
                match b {
                    b':' => Phase::TrailerValue,
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ if is_tchar(b) => Phase::TrailerName,
                    // Includes whitespace before the colon and a line with no colon.
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            Phase::TrailerValue => {
                self.count_trailer_byte()?;
                match b {
                    b'\r' => Phase::TrailerLf,
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => Phase::TrailerValue,
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            Phase::TrailerLf => {
                self.count_trailer_byte()?;
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnding);
                }
                Phase::TrailerStart
            }
            Phase::FinalLf if b == b'\n' => Phase::Done,
            Phase::FinalLf => return Err(ChunkError::BadLineEnding),
            // feed_with stops before these.
            Phase::Done => Phase::Done,
            Phase::Failed(e) => return Err(e),
        };
        Ok(())
    }

    /// One byte of a chunk-size line after the first ';'.
    fn step_ext(&mut self, ext: Ext, b: u8) -> Result<Phase, ChunkError> {
        if b == b'\r' || b == b'\n' {
            if !ext.may_end_line() {
                return Err(ChunkError::BadExtension);
            }
            if b == b'\n' {
                return Err(ChunkError::BadLineEnding);
            }
            return Ok(Phase::SizeLf);
        }
        self.ext_bytes += 1;
        if self.ext_bytes > MAX_CHUNK_EXT_BYTES {
            return Err(ChunkError::BadExtension);
        }
        let next = match ext {
            Ext::NameStart if is_tchar(b) => Ext::Name,
            Ext::Name | Ext::Token | Ext::QuotedEnd if b == b';' => Ext::NameStart,
            Ext::Name if is_tchar(b) => Ext::Name,
            Ext::Name if b == b'=' => Ext::ValueStart,
            Ext::ValueStart if is_tchar(b) => Ext::Token,
            Ext::ValueStart if b == b'"' => Ext::Quoted,
            Ext::Token if is_tchar(b) => Ext::Token,
            Ext::Quoted if b == b'"' => Ext::QuotedEnd,
            Ext::Quoted if b == b'\\' => Ext::QuotedPair,
            Ext::Quoted if is_qdtext(b) => Ext::Quoted,
            Ext::QuotedPair if is_quoted_pair_byte(b) => Ext::Quoted,
            _ => return Err(ChunkError::BadExtension),
        };
        Ok(Phase::Ext(next))
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.max_trailer_bytes {
            return Err(ChunkError::TrailerTooLarge);
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 §5.6.4).
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ).
fn is_quoted_pair_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}

/// Reference decoder for tests and fuzzing: the payload (chunk data concatenated) and
/// bytes consumed; `None` = incomplete.
///
/// Written line by line over the whole input, independently of [`ChunkedState`], so that
/// comparing the two checks the state machine. It reports the same error as the state
/// machine would: the one for the earliest offending byte.
pub fn decode_chunked(
    input: &[u8],
    max_trailer_bytes: usize,
) -> Result<Option<(Vec<u8>, usize)>, ChunkError> {
    let mut payload = Vec::new();
    let mut pos = 0;
    loop {
        let rest = input.get(pos..).unwrap_or_default();
        let line_len = rest.iter().position(|&b| b == b'\r' || b == b'\n');
        let content = rest
            .get(..line_len.unwrap_or(rest.len()))
            .unwrap_or_default();
        let line = reference_size_line(content)?;
        let Some(line_len) = line_len else {
            return Ok(None);
        };
        if line.digits == 0 {
            return Err(ChunkError::BadSize);
        }
        if !line.may_end {
            return Err(ChunkError::BadExtension);
        }
        match rest.get(line_len..) {
            Some([b'\r', b'\n', ..]) => {}
            Some([b'\r']) => return Ok(None),
            _ => return Err(ChunkError::BadLineEnding),
        }
        pos += line_len + 2;
        if line.size == 0 {
            break;
        }
        // A size that does not fit in usize cannot be present in `input` either.
        let size = match usize::try_from(line.size) {
            Ok(size) if size <= input.len() - pos => size,
            _ => return Ok(None),
        };
        payload.extend_from_slice(input.get(pos..pos + size).unwrap_or_default());
        pos += size;
        match input.get(pos..) {
            Some([]) | Some([b'\r']) | None => return Ok(None),
            Some([b'\r', b'\n', ..]) => pos += 2,
            Some(_) => return Err(ChunkError::BadLineEnding),
        }
    }

    let mut trailer_bytes = 0usize;
    let mut count = || {
        trailer_bytes += 1;
        if trailer_bytes > max_trailer_bytes {
            Err(ChunkError::TrailerTooLarge)
        } else {
            Ok(())
        }
    };
    loop {
        let rest = input.get(pos..).unwrap_or_default();
        match rest {
            [] | [b'\r'] => return Ok(None),
            [b'\r', b'\n', ..] => return Ok(Some((payload, pos + 2))),
            [b'\r', ..] => return Err(ChunkError::BadLineEnding),
            _ => {}
        }
        let line_len = rest.iter().position(|&b| b == b'\r' || b == b'\n');
        let content = rest
            .get(..line_len.unwrap_or(rest.len()))
            .unwrap_or_default();
        let mut seen_colon = false;
        for (i, &b) in content.iter().enumerate() {
            count()?;
            let ok = if seen_colon {
                matches!(b, b'\t' | 0x20..=0x7e | 0x80..=0xff)
            } else if b == b':' {
                seen_colon = i > 0;
                i > 0
            } else {
                is_tchar(b)
            };
            if !ok {
                return Err(ChunkError::BadTrailer);
            }
        }
        let Some(line_len) = line_len else {
            return Ok(None);
        };
        count()?;
        match rest.get(line_len..) {
            Some([b'\n', ..]) => return Err(ChunkError::BadLineEnding),
            _ if !seen_colon => return Err(ChunkError::BadTrailer),
            Some([b'\r']) => return Ok(None),
            Some([b'\r', b'\n', ..]) => count()?,
            _ => {
                count()?;
                return Err(ChunkError::BadLineEnding);
            }
        }
        pos += line_len + 2;
    }
}

struct SizeLine {
    digits: usize,
    size: u64,
    /// The line may end here (no half-written extension).
    may_end: bool,
}

/// Checks a chunk-size line's content (without CRLF), possibly only a prefix of it.
fn reference_size_line(content: &[u8]) -> Result<SizeLine, ChunkError> {
    let digits = content.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        if content.is_empty() {
            return Ok(SizeLine {
                digits,
                size: 0,
                may_end: true,
            });
        }
        return Err(ChunkError::BadSize);
    }
    if digits > usize::from(MAX_CHUNK_SIZE_DIGITS) {
        return Err(ChunkError::BadSize);
    }
    let (hex, after) = content
        .split_at_checked(digits)
        .ok_or(ChunkError::BadSize)?;
    let size = hex
        .iter()
        .filter_map(|&b| hex_value(b))
        .fold(0u64, |acc, v| (acc << 4) | u64::from(v));
    let may_end = match after.first() {
        None => true,
        Some(b';') => reference_extensions(after)?,
        Some(_) => return Err(ChunkError::BadSize),
    };
    Ok(SizeLine {
        digits,
        size,
        may_end,
    })
}

/// Checks `*( ";" token [ "=" ( token / quoted-string ) ] )`, possibly cut short;
/// returns whether it is complete.
fn reference_extensions(ext: &[u8]) -> Result<bool, ChunkError> {
    if ext.len() > usize::from(MAX_CHUNK_EXT_BYTES) {
        return Err(ChunkError::BadExtension);
    }
    let token_len = |s: &[u8]| s.iter().take_while(|&&b| is_tchar(b)).count();
    let mut rest = ext;
    loop {
        let Some(after_semi) = rest.strip_prefix(b";") else {
            return Err(ChunkError::BadExtension);
        };
        let name_len = token_len(after_semi);
        if name_len == 0 {
            return if after_semi.is_empty() {
                Ok(false)
            } else {
                Err(ChunkError::BadExtension)
            };
        }
        let after_name = after_semi.get(name_len..).unwrap_or_default();
        rest = match after_name.split_first() {
            None => return Ok(true),
            Some((b';', _)) => after_name,
            Some((b'=', value)) => match value.split_first() {
                None => return Ok(false),
                Some((b'"', quoted)) => {
                    let mut i = 0;
                    loop {
                        match quoted.get(i) {
                            None => return Ok(false),
                            Some(b'"') => break,
                            Some(b'\\') => match quoted.get(i + 1) {
                                None => return Ok(false),
                                Some(&b) if is_quoted_pair_byte(b) => i += 2,
                                Some(_) => return Err(ChunkError::BadExtension),
                            },
                            Some(&b) if is_qdtext(b) => i += 1,
                            Some(_) => return Err(ChunkError::BadExtension),
                        }
                    }
                    quoted.get(i + 1..).unwrap_or_default()
                }
                Some((&b, _)) if is_tchar(b) => value.get(token_len(value)..).unwrap_or_default(),
                Some(_) => return Err(ChunkError::BadExtension),
            },
            Some(_) => return Err(ChunkError::BadExtension),
        };
        if rest.is_empty() {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- helpers -----------------------------------------------------------------------

    fn req(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        parse_request_head(buf, &Limits::default(), &mut Vec::new())
    }

    fn req_ok(buf: &[u8]) -> RequestHead {
        match req(buf) {
            Ok(Some(head)) => head,
            other => panic!(
                "expected a head for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn req_err(buf: &[u8]) -> HeadError {
        match req(buf) {
            Err(e) => e,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn assert_malformed(buf: &[u8]) {
        let e = req_err(buf);
        assert_eq!(
            e.status(),
            400,
            "{e:?} for {:?}",
            String::from_utf8_lossy(buf)
        );
    }

    fn resp(buf: &[u8], method: Method) -> Result<Option<ResponseHead>, HeadError> {
        parse_response_head(buf, &Limits::default(), method, &mut Vec::new())
    }

    fn resp_ok(buf: &[u8], method: Method) -> ResponseHead {
        match resp(buf, method) {
            Ok(Some(head)) => head,
            other => panic!(
                "expected a head for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn resp_malformed(buf: &[u8]) {
        match resp(buf, Method::Get) {
            Err(HeadError::Malformed(_)) => {}
            other => panic!(
                "expected Malformed for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    /// A GET with the given extra header lines (each without CRLF).
    fn get_with(lines: &[&str]) -> Vec<u8> {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: example.com\r\n");
        for line in lines {
            s.push_str(line);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    fn resp_with(status_line: &str, lines: &[&str]) -> Vec<u8> {
        let mut s = String::from(status_line);
        s.push_str("\r\n");
        for line in lines {
            s.push_str(line);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    fn header_named<'a>(head: &'a [Header], buf: &[u8], name: &str) -> &'a Header {
        head.iter()
            .find(|h| h.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .unwrap_or_else(|| panic!("no header {name}"))
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    // ---- request basics ----------------------------------------------------------------

    #[test]
    fn simple_get() {
        let buf = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
        let head = req_ok(buf);
        assert_eq!(head.head_len, buf.len());
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.method_span.get(buf), b"GET");
        assert_eq!(head.target.get(buf), b"/index.html?q=1");
        assert_eq!(head.path.get(buf), b"/index.html");
        assert_eq!(head.authority, None);
        assert_eq!(head.version_minor, 1);
        assert_eq!(head.host.map(|s| s.get(buf)), Some(&b"example.com"[..]));
        assert_eq!(head.framing, BodyFraming::None);
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
        assert_eq!(head.upgrade, None);
        assert_eq!(head.headers.len(), 3);
        assert_eq!(head.headers[0].kind, HeaderKind::Host);
        assert_eq!(head.headers[1].name.get(buf), b"User-Agent");
        assert_eq!(head.headers[1].value.get(buf), b"curl/8.5.0");
        assert_eq!(head.headers[2].kind, HeaderKind::Other);
        assert!(head.headers.iter().all(|h| !h.hop_by_hop));
    }

    #[test]
    fn methods_are_case_sensitive_tokens() {
        for (m, expected) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("PATCH", Method::Patch),
            ("TRACE", Method::Trace),
            ("get", Method::Other),
            ("PROPFIND", Method::Other),
        ] {
            let buf = format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n");
            let head = req_ok(buf.as_bytes());
            assert_eq!(head.method, expected, "{m}");
            assert_eq!(head.method_span.get(buf.as_bytes()), m.as_bytes());
        }
        assert_malformed(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn header_values_are_trimmed_and_kinds_classified() {
        let buf = get_with(&[
            "X-Forwarded-For:   10.0.0.1 \t",
            "x-forwarded-proto: https",
            "X-REQUEST-ID: abc",
            "Content-Length: 0",
            "Expect: 100-continue",
            "Empty:",
        ]);
        let head = req_ok(&buf);
        let kinds: Vec<_> = head.headers.iter().map(|h| h.kind).collect();
        assert_eq!(
            kinds,
            [
                HeaderKind::Host,
                HeaderKind::XForwardedFor,
                HeaderKind::XForwardedProto,
                HeaderKind::XRequestId,
                HeaderKind::ContentLength,
                HeaderKind::Expect,
                HeaderKind::Other
            ]
        );
        assert_eq!(head.headers[1].value.get(&buf), b"10.0.0.1");
        assert!(head.headers[6].value.is_empty());
        assert_eq!(head.framing, BodyFraming::ContentLength(0));
    }

    #[test]
    fn obs_text_and_tab_allowed_in_values() {
        let buf = get_with(&["X-A: caf\u{e9}\tx"]);
        let head = req_ok(&buf);
        assert_eq!(head.headers[1].value.get(&buf), "caf\u{e9}\tx".as_bytes());
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let head = req_ok(buf);
        assert_eq!(head.head_len, buf.len());
        assert_eq!(head.method_span.get(buf), b"GET");
        assert_eq!(req(b"\r\n\r\n"), Ok(None));
    }

    // ---- line endings and bytes --------------------------------------------------------

    #[test]
    fn bare_lf_rejected() {
        assert_malformed(b"GET / HTTP/1.1\nHost: a\r\n\r\n");
        assert_malformed(b"GET / HTTP/1.1\r\nHost: a\n\r\n");
        assert_malformed(b"GET / HTTP/1.1\r\nHost: a\r\n\n");
        assert_malformed(b"GET / HTTP/1.1\r\nHost: a\n\n");
        // Rejected as soon as it is seen, without waiting for the end of the head.
        assert_malformed(b"GET / HTTP/1.1\r\nX: a\nY");
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", Method::Get),
            Err(HeadError::Malformed("bare LF in head"))
        );
        // Positive: CRLF everywhere.
        req_ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn bare_cr_rejected() {
        assert_malformed(b"GET / HTTP/1.1\rHost: a\r\n\r\n");
        assert_malformed(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n");
        assert_malformed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n");
        assert_malformed(b"GET / HTTP/1.1\r\nX: a\r\r\n\r\n");
        resp_malformed(b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n");
        // A CR at the very end may still be followed by LF.
        assert_eq!(req(b"GET / HTTP/1.1\r\nHost: a\r"), Ok(None));
        assert_eq!(req(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), Ok(None));
    }

    #[test]
    fn control_bytes_rejected_in_names_and_values() {
        for ctl in (0u8..=0x08).chain(0x0a..=0x1f).chain([0x7f]) {
            let mut value = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a".to_vec();
            value.push(ctl);
            value.extend_from_slice(b"b\r\n\r\n");
            assert_malformed(&value);

            let mut name = b"GET / HTTP/1.1\r\nHost: a\r\nX-".to_vec();
            name.push(ctl);
            name.extend_from_slice(b"A: b\r\n\r\n");
            assert_malformed(&name);

            let mut response = b"HTTP/1.1 200 OK\r\nX-A: a".to_vec();
            response.push(ctl);
            response.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            resp_malformed(&response);

            let mut response_name = b"HTTP/1.1 200 OK\r\nX".to_vec();
            response_name.push(ctl);
            response_name.extend_from_slice(b"A: a\r\nContent-Length: 0\r\n\r\n");
            resp_malformed(&response_name);
        }
        // HTAB is the one control byte a value may hold.
        req_ok(&get_with(&["X-A: a\tb"]));
    }

    #[test]
    fn obs_fold_rejected() {
        assert_malformed(&get_with(&["X-A: a", " folded"]));
        assert_malformed(&get_with(&["X-A: a", "\tfolded"]));
        assert_malformed(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n");
        resp_malformed(&resp_with(
            "HTTP/1.1 200 OK",
            &["X-A: a", " folded", "Content-Length: 0"],
        ));
        req_ok(&get_with(&["X-A: a", "X-B: folded"]));
    }

    #[test]
    fn whitespace_before_colon_rejected() {
        assert_malformed(&get_with(&["X-A : a"]));
        assert_malformed(&get_with(&["X-A\t: a"]));
        assert_malformed(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n");
        resp_malformed(&resp_with("HTTP/1.1 200 OK", &["Content-Length : 0"]));
        req_ok(&get_with(&["X-A:a"]));
    }

    #[test]
    fn empty_header_name_rejected() {
        assert_malformed(&get_with(&[": a"]));
        assert_malformed(&get_with(&[":"]));
        resp_malformed(&resp_with("HTTP/1.1 200 OK", &[": a"]));
    }

    #[test]
    fn missing_colon_rejected() {
        assert_malformed(&get_with(&["X-A"]));
        assert_malformed(&get_with(&["X-A a"]));
    }

    // ---- Host --------------------------------------------------------------------------

    #[test]
    fn host_required_on_http11_only() {
        assert_eq!(
            req_err(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            HeadError::Malformed("HTTP/1.1 request without Host")
        );
        let head = req_ok(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n");
        assert_eq!(head.host, None);
        assert_eq!(head.version_minor, 0);
    }

    #[test]
    fn more_than_one_host_rejected() {
        assert_malformed(&get_with(&["Host: example.com"]));
        assert_malformed(&get_with(&["host: other.example"]));
        assert_malformed(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn host_value_is_validated() {
        for ok in [
            "a",
            "example.com:8080",
            "example.com:",
            "[::1]",
            "[::1]:443",
            "192.0.2.1:80",
            "",
        ] {
            let buf = format!("GET / HTTP/1.1\r\nHost: {ok}\r\n\r\n");
            let head = req_ok(buf.as_bytes());
            assert_eq!(
                head.host.map(|s| s.get(buf.as_bytes())),
                Some(ok.as_bytes())
            );
        }
        for bad in [
            "a b", "a/b", "user@a", "a,b", "a:80:80", "a:http", "a:65536", "[::1", "[zz]",
            "[::1]x", ":80",
        ] {
            let buf = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(
                req_err(buf.as_bytes()),
                HeadError::Malformed("invalid Host"),
                "{bad}"
            );
        }
    }

    // ---- request-target ----------------------------------------------------------------

    #[test]
    fn origin_form_paths() {
        let buf = b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(req_ok(buf).path.get(buf), b"/a/b");
        let buf = b"GET /? HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(req_ok(buf).path.get(buf), b"/");
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(req_ok(buf).path.get(buf), b"/");
    }

    #[test]
    fn target_bytes_validated() {
        assert_malformed("GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes());
        assert_malformed(b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n");
        assert_malformed(b"GET HTTP/1.1\r\nHost: a\r\n\r\n");
        req_ok(b"GET /a%20b;p=1/~x HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn asterisk_form_only_for_options() {
        let buf = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
        let head = req_ok(buf);
        assert_eq!(head.method, Method::Options);
        assert_eq!(head.path.get(buf), b"*");
        assert_malformed(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn authority_form_only_for_connect() {
        let buf = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        let head = req_ok(buf);
        assert_eq!(head.method, Method::Connect);
        assert_eq!(
            head.authority.map(|s| s.get(buf)),
            Some(&b"example.com:443"[..])
        );
        assert!(head.path.is_empty());
        req_ok(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n");
        // Port required; no origin-form or absolute-form for CONNECT.
        assert_malformed(b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_malformed(b"CONNECT example.com: HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_malformed(b"CONNECT / HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_malformed(b"CONNECT http://a:443/ HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"CONNECT u@a:443 HTTP/1.1\r\nHost: a\r\n\r\n");
        // Other methods may not use authority-form.
        assert_malformed(b"GET example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    }

    #[test]
    fn absolute_form_targets() {
        let buf = b"GET http://example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n";
        let head = req_ok(buf);
        assert_eq!(head.target.get(buf), b"http://example.com:8080/a/b?q=1");
        assert_eq!(head.path.get(buf), b"/a/b");
        assert_eq!(
            head.authority.map(|s| s.get(buf)),
            Some(&b"example.com:8080"[..])
        );

        let buf = b"GET HTTPS://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let head = req_ok(buf);
        assert!(head.path.is_empty());
        assert_eq!(
            head.authority.map(|s| s.get(buf)),
            Some(&b"example.com"[..])
        );

        let buf = b"GET http://example.com?x HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let head = req_ok(buf);
        assert!(head.path.is_empty());
        assert_eq!(
            head.authority.map(|s| s.get(buf)),
            Some(&b"example.com"[..])
        );

        assert_malformed(b"GET http:// HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_malformed(b"GET http:/a/ HTTP/1.1\r\nHost: a\r\n\r\n");
        // Host is still required on 1.1 (RFC 9112 §3.2).
        assert_malformed(b"GET http://a/ HTTP/1.1\r\n\r\n");
    }

    // ---- version -----------------------------------------------------------------------

    #[test]
    fn only_http10_and_http11() {
        req_ok(b"GET / HTTP/1.0\r\n\r\n");
        req_ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        for v in [
            "HTTP/1.2",
            "HTTP/2.0",
            "HTTP/0.9",
            "HTTP/1",
            "http/1.1",
            "HTTP/1.10",
        ] {
            let buf = format!("GET / {v}\r\nHost: a\r\n\r\n");
            assert_malformed(buf.as_bytes());
        }
        assert_malformed(b"GET /\r\n\r\n");
        resp_malformed(b"HTTP/2.0 200 OK\r\n\r\n");
        resp_malformed(b"HTTP/1.2 200 OK\r\n\r\n");
    }

    // ---- Content-Length ----------------------------------------------------------------

    #[test]
    fn content_length_values() {
        for (value, n) in [
            ("0", 0),
            ("5", 5),
            ("005", 5),
            ("5, 5", 5),
            ("5,5,5", 5),
            ("18446744073709551615", u64::MAX),
        ] {
            let head = req_ok(&get_with(&[&format!("Content-Length: {value}")]));
            assert_eq!(head.framing, BodyFraming::ContentLength(n), "{value}");
        }
        for value in [
            "",
            "+5",
            "-5",
            "0x5",
            "5 5",
            "5a",
            "a",
            "5.0",
            "5, 6",
            "5,",
            ",5",
            "5,,5",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let buf = get_with(&[&format!("Content-Length: {value}")]);
            assert_malformed(&buf);
        }
    }

    #[test]
    fn repeated_content_length() {
        let head = req_ok(&get_with(&["Content-Length: 5", "Content-Length: 5"]));
        assert_eq!(head.framing, BodyFraming::ContentLength(5));
        let head = req_ok(&get_with(&["Content-Length: 5", "content-length: 5, 5"]));
        assert_eq!(head.framing, BodyFraming::ContentLength(5));
        assert_eq!(
            req_err(&get_with(&["Content-Length: 5", "Content-Length: 6"])),
            HeadError::Malformed("conflicting Content-Length values")
        );
        resp_malformed(&resp_with(
            "HTTP/1.1 200 OK",
            &["Content-Length: 5", "Content-Length: 6"],
        ));
        assert_eq!(
            resp_ok(
                &resp_with(
                    "HTTP/1.1 200 OK",
                    &["Content-Length: 7", "Content-Length: 7"]
                ),
                Method::Get
            )
            .framing,
            BodyFraming::ContentLength(7)
        );
    }

    // ---- Transfer-Encoding -------------------------------------------------------------

    #[test]
    fn transfer_encoding_in_requests() {
        for value in ["chunked", "Chunked", "CHUNKED", "chunked, ", " ,chunked"] {
            let head = req_ok(&get_with(&[&format!("Transfer-Encoding: {value}")]));
            assert_eq!(head.framing, BodyFraming::Chunked, "{value}");
            assert!(head.headers[1].hop_by_hop);
        }
        // Codings other than chunked are refused, even before a final chunked: the
        // proxy forwards `transfer-encoding: chunked` and would drop them.
        for value in ["gzip, chunked", "gzip,chunked", "identity, chunked"] {
            assert_eq!(
                req_err(&get_with(&[&format!("Transfer-Encoding: {value}")])),
                HeadError::Malformed("transfer-coding other than chunked"),
                "{value}"
            );
        }
        // Split over lines: the list is the concatenation.
        assert_malformed(&get_with(&[
            "Transfer-Encoding: gzip",
            "Transfer-Encoding: chunked",
        ]));
        for value in [
            "gzip",
            "chunked, identity",
            "chunked, gzip",
            "chunked, chunked",
            "chunked,chunked",
            "",
            ",",
            "chunked;x=1",
            "ch unked",
            "\"chunked\"",
        ] {
            let buf = get_with(&[&format!("Transfer-Encoding: {value}")]);
            assert_malformed(&buf);
        }
        assert_malformed(&get_with(&[
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: chunked",
        ]));
        assert_malformed(&get_with(&[
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: gzip",
        ]));
    }

    #[test]
    fn transfer_encoding_on_http10_request_rejected() {
        assert_eq!(
            req_err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request")
        );
        let head = req_ok(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(head.framing, BodyFraming::ContentLength(3));
    }

    #[test]
    fn content_length_with_transfer_encoding_rejected() {
        assert_eq!(
            req_err(&get_with(&[
                "Content-Length: 5",
                "Transfer-Encoding: chunked"
            ])),
            HeadError::Malformed("both Content-Length and Transfer-Encoding")
        );
        assert_malformed(&get_with(&[
            "Transfer-Encoding: chunked",
            "Content-Length: 5",
        ]));
        resp_malformed(&resp_with(
            "HTTP/1.1 200 OK",
            &["Transfer-Encoding: chunked", "Content-Length: 5"],
        ));
        // Even where no body follows.
        resp_malformed(&resp_with(
            "HTTP/1.1 304 Not Modified",
            &["Transfer-Encoding: chunked", "Content-Length: 5"],
        ));
    }

    #[test]
    fn framing_field_names_with_underscores_rejected() {
        for name in [
            "Transfer_Encoding",
            "transfer_encoding",
            "TRANSFER_encoding",
            "Content_Length",
            "CONTENT_LENGTH",
        ] {
            assert_eq!(
                req_err(&get_with(&[&format!("{name}: 5")])),
                HeadError::Malformed("Content_Length or Transfer_Encoding field name"),
                "{name}"
            );
        }
        // Other names with underscores are fine, and so is one of these in a response.
        req_ok(&get_with(&["X_Content_Length: 5", "Content_Lengths: 5"]));
        resp_ok(
            &resp_with("HTTP/1.1 200 OK", &["Content-Length: 0", "Content_Length: 5"]),
            Method::Get,
        );
    }

    #[test]
    fn transfer_encoding_in_responses() {
        let ok = |lines: &[&str]| resp_ok(&resp_with("HTTP/1.1 200 OK", lines), Method::Get);
        assert_eq!(
            ok(&["Transfer-Encoding: chunked"]).framing,
            BodyFraming::Chunked
        );
        // A body under another coding could only be passed on without it: refused.
        for value in ["gzip, chunked", "gzip", "chunked, gzip", "identity"] {
            let buf = resp_with("HTTP/1.1 200 OK", &[&format!("Transfer-Encoding: {value}")]);
            assert_eq!(
                resp(&buf, Method::Get),
                Err(HeadError::Malformed("transfer-coding other than chunked")),
                "{value}"
            );
            // Where no body follows there is nothing to get wrong.
            assert_eq!(resp_ok(&buf, Method::Head).framing, BodyFraming::None);
        }
        resp_malformed(&resp_with(
            "HTTP/1.1 200 OK",
            &["Transfer-Encoding: chunked, chunked"],
        ));
        resp_malformed(&resp_with("HTTP/1.1 200 OK", &["Transfer-Encoding: "]));
        resp_malformed(&resp_with(
            "HTTP/1.0 200 OK",
            &["Transfer-Encoding: chunked"],
        ));
    }

    // ---- Connection, keep-alive, hop-by-hop -------------------------------------------

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
                true,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n", false),
        ];
        for (buf, expected) in cases {
            assert_eq!(
                req_ok(buf).keep_alive,
                *expected,
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
        let r = |s: &str, lines: &[&str]| resp_ok(&resp_with(s, lines), Method::Get).keep_alive;
        assert!(r("HTTP/1.1 200 OK", &["Content-Length: 0"]));
        assert!(!r(
            "HTTP/1.1 200 OK",
            &["Content-Length: 0", "Connection: close"]
        ));
        assert!(!r("HTTP/1.0 200 OK", &["Content-Length: 0"]));
        assert!(r(
            "HTTP/1.0 200 OK",
            &["Content-Length: 0", "Connection: keep-alive"]
        ));
        assert!(!r("HTTP/1.1 200 OK", &[]));
    }

    #[test]
    fn hop_by_hop_fields() {
        let buf = get_with(&[
            "Connection: close, X-Foo , x-bar",
            "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Trailer: X-Checksum",
            "Upgrade: websocket",
            "X-Foo: 1",
            "X-BAR: 2",
            "X-Baz: 3",
            "Content-Length: 0",
        ]);
        let head = req_ok(&buf);
        let hop: Vec<(&[u8], bool)> = head
            .headers
            .iter()
            .map(|h| (h.name.get(&buf), h.hop_by_hop))
            .collect();
        assert_eq!(
            hop,
            [
                (&b"Host"[..], false),
                (b"Connection", true),
                (b"Keep-Alive", true),
                (b"Proxy-Connection", true),
                (b"TE", true),
                (b"Trailer", true),
                (b"Upgrade", true),
                (b"X-Foo", true),
                (b"X-BAR", true),
                (b"X-Baz", false),
                (b"Content-Length", false),
            ]
        );
        assert!(!head.keep_alive);
    }

    #[test]
    fn connection_cannot_strip_host_or_content_length() {
        let buf = get_with(&[
            "Connection: host, content-length, x-a",
            "Content-Length: 3",
            "X-A: 1",
        ]);
        let head = req_ok(&buf);
        assert!(!header_named(&head.headers, &buf, "host").hop_by_hop);
        assert!(!header_named(&head.headers, &buf, "content-length").hop_by_hop);
        assert!(header_named(&head.headers, &buf, "x-a").hop_by_hop);
    }

    #[test]
    fn connection_option_count_is_bounded() {
        let many = vec!["x"; MAX_CONNECTION_OPTIONS].join(",");
        req_ok(&get_with(&[&format!("Connection: {many}")]));
        let too_many = vec!["x"; MAX_CONNECTION_OPTIONS + 1].join(",");
        assert_eq!(
            req_err(&get_with(&[&format!("Connection: {too_many}")])),
            HeadError::Malformed("too many Connection options")
        );
    }

    #[test]
    fn connection_named_fields_in_responses() {
        let buf = resp_with(
            "HTTP/1.1 200 OK",
            &[
                "Connection: x-internal",
                "X-Internal: 1",
                "Content-Length: 0",
            ],
        );
        let head = resp_ok(&buf, Method::Get);
        assert!(header_named(&head.headers, &buf, "x-internal").hop_by_hop);
        assert!(!header_named(&head.headers, &buf, "content-length").hop_by_hop);
        assert!(head.keep_alive);
    }

    #[test]
    fn token_list_membership() {
        assert!(is_token_list_member(b"close", b"close"));
        assert!(is_token_list_member(b" Keep-Alive ,\tUpgrade ", b"upgrade"));
        assert!(is_token_list_member(b"a,,b", b"b"));
        assert!(!is_token_list_member(b"closed", b"close"));
        assert!(!is_token_list_member(b"x-close", b"close"));
        assert!(!is_token_list_member(b"", b"close"));
        assert!(!is_token_list_member(b" , ", b""));
        assert!(!is_token_list_member(b"a b", b"a"));
    }

    // ---- Expect and Upgrade ------------------------------------------------------------

    #[test]
    fn expect_continue() {
        assert!(req_ok(&get_with(&["Expect: 100-continue"])).expect_continue);
        assert!(req_ok(&get_with(&["Expect: 100-Continue"])).expect_continue);
        assert!(!req_ok(&get_with(&["Expect: 100-continue-x"])).expect_continue);
        assert!(!req_ok(&get_with(&[])).expect_continue);
        // Ignored on HTTP/1.0 (RFC 9110 §10.1.1).
        assert!(!req_ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn upgrade_needs_connection_option_and_http11() {
        let buf = get_with(&["Connection: Upgrade", "Upgrade: websocket"]);
        assert_eq!(
            req_ok(&buf).upgrade.map(|s| s.get(&buf)),
            Some(&b"websocket"[..])
        );
        let buf = get_with(&["Connection: keep-alive, upgrade", "Upgrade: websocket, foo"]);
        assert_eq!(
            req_ok(&buf).upgrade.map(|s| s.get(&buf)),
            Some(&b"websocket, foo"[..])
        );
        // h2c is never an upgrade we pass on, alone or offered with others; the Upgrade
        // field stays hop-by-hop, so nothing of it is forwarded.
        for value in ["h2c", "H2C", "websocket, h2c"] {
            let buf = get_with(&["Connection: Upgrade, HTTP2-Settings", &format!("Upgrade: {value}")]);
            let head = req_ok(&buf);
            assert_eq!(head.upgrade, None, "{value}");
            assert!(head.headers.iter().all(|h| h.kind != HeaderKind::Upgrade || h.hop_by_hop));
        }
        assert_eq!(req_ok(&get_with(&["Upgrade: websocket"])).upgrade, None);
        assert_eq!(req_ok(&get_with(&["Connection: upgrade"])).upgrade, None);
        assert_eq!(
            req_ok(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade,
            None
        );
    }

    // ---- limits ------------------------------------------------------------------------

    #[test]
    fn head_size_limit() {
        let buf = get_with(&["X-A: aaaaaaaaaaaaaaaaaaaa"]);
        let exact = Limits {
            max_head_bytes: buf.len(),
            ..Limits::default()
        };
        let short = Limits {
            max_head_bytes: buf.len() - 1,
            ..Limits::default()
        };
        let mut scratch = Vec::new();
        assert!(matches!(
            parse_request_head(&buf, &exact, &mut scratch),
            Ok(Some(_))
        ));
        assert_eq!(
            parse_request_head(&buf, &short, &mut scratch),
            Err(HeadError::TooLarge("head larger than max_head_bytes"))
        );
        // Still incomplete but already over the limit.
        let partial = &buf[..buf.len() - 2];
        let tiny = Limits {
            max_head_bytes: 16,
            ..Limits::default()
        };
        assert_eq!(
            parse_request_head(partial, &tiny, &mut scratch).map_err(|e| e.status()),
            Err(431)
        );
        // Incomplete and under the limit.
        assert_eq!(
            parse_request_head(&buf[..15], &tiny, &mut scratch),
            Ok(None)
        );
        // The default limit against a never-ending head.
        let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
        endless.resize(70_000, b'a');
        assert_eq!(req(&endless).map_err(|e| e.status()), Err(431));
        assert_eq!(
            resp(&endless, Method::Get).map_err(|e| e.status()),
            Err(431)
        );
    }

    #[test]
    fn header_count_limit() {
        let lines: Vec<String> = (1..10).map(|i| format!("X-{i}: v")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let buf = get_with(&lines); // 10 fields with Host
        let at = Limits {
            max_headers: 10,
            ..Limits::default()
        };
        let below = Limits {
            max_headers: 9,
            ..Limits::default()
        };
        let mut scratch = Vec::new();
        let head = parse_request_head(&buf, &at, &mut scratch)
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.len(), 10);
        assert_eq!(
            parse_request_head(&buf, &below, &mut scratch),
            Err(HeadError::TooLarge("too many header fields"))
        );
        assert_eq!(
            parse_response_head(
                &resp_with("HTTP/1.1 200 OK", &lines),
                &Limits {
                    max_headers: 8,
                    ..Limits::default()
                },
                Method::Get,
                &mut scratch
            ),
            Err(HeadError::TooLarge("too many header fields"))
        );
        // Defaults: 100 fine, 101 refused.
        let many: Vec<String> = (1..100).map(|i| format!("X-{i}: v")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(req_ok(&get_with(&many)).headers.len(), 100);
        let too_many: Vec<String> = (1..101).map(|i| format!("X-{i}: v")).collect();
        let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
        assert_eq!(req_err(&get_with(&too_many)).status(), 431);
    }

    #[test]
    fn large_header_limit_uses_heap_slots() {
        let lines: Vec<String> = (0..300).map(|i| format!("X-{i}: v")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let buf = get_with(&lines);
        let limits = Limits {
            max_headers: 1000,
            ..Limits::default()
        };
        let head = parse_request_head(&buf, &limits, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.len(), 301);
        let limits = Limits {
            max_headers: 200,
            ..Limits::default()
        };
        assert_eq!(
            parse_request_head(&buf, &limits, &mut Vec::new()).map_err(|e| e.status()),
            Err(431)
        );
        let limits = Limits {
            max_headers: usize::MAX,
            max_head_bytes: usize::MAX,
        };
        assert!(parse_request_head(&buf, &limits, &mut Vec::new()).is_ok());
    }

    #[test]
    fn scratch_vec_is_reused() {
        let buf = get_with(&["X-A: 1", "X-B: 2"]);
        let mut scratch = Vec::with_capacity(32);
        let head = parse_request_head(&buf, &Limits::default(), &mut scratch)
            .unwrap()
            .unwrap();
        assert!(scratch.is_empty());
        assert_eq!(head.headers.len(), 3);
        let capacity = head.headers.capacity();
        scratch = head.headers;
        let head = parse_request_head(&buf, &Limits::default(), &mut scratch)
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.capacity(), capacity);
        // An incomplete read leaves the scratch (and its capacity) in place.
        scratch = head.headers;
        assert_eq!(
            parse_request_head(&buf[..10], &Limits::default(), &mut scratch),
            Ok(None)
        );
        assert_eq!(scratch.capacity(), capacity);
    }

    // ---- pipelining and incompleteness -------------------------------------------------

    #[test]
    fn pipelined_requests() {
        let first = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        let second = b"GET /b HTTP/1.1\r\nHost: b\r\n\r\n";
        let mut buf = first.to_vec();
        buf.extend_from_slice(b"hello");
        buf.extend_from_slice(second);
        buf.extend_from_slice(b"GET /c HT");

        let head = req_ok(&buf);
        assert_eq!(head.head_len, first.len());
        assert_eq!(head.framing, BodyFraming::ContentLength(5));
        let body_end = head.head_len + 5;
        assert_eq!(&buf[head.head_len..body_end], b"hello");

        let rest = &buf[body_end..];
        let head = req_ok(rest);
        assert_eq!(head.head_len, second.len());
        assert_eq!(head.path.get(rest), b"/b");
        assert_eq!(head.host.map(|s| s.get(rest)), Some(&b"b"[..]));

        assert_eq!(req(&rest[head.head_len..]), Ok(None));
    }

    #[test]
    fn pipelined_bodiless_requests() {
        let one = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let buf = [&one[..], &one[..], &one[..]].concat();
        let mut offset = 0;
        for _ in 0..3 {
            let head = req_ok(&buf[offset..]);
            assert_eq!(head.head_len, one.len());
            offset += head.head_len;
        }
        assert_eq!(offset, buf.len());
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let requests: [&[u8]; 3] = [
            b"GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Empty:\r\n\r\n",
            b"\r\nPOST http://a.example/p HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ];
        for buf in requests {
            for n in 0..buf.len() {
                assert_eq!(
                    req(&buf[..n]),
                    Ok(None),
                    "prefix {n} of {:?}",
                    String::from_utf8_lossy(buf)
                );
            }
            assert_eq!(req_ok(buf).head_len, buf.len());
        }
        let responses: [&[u8]; 2] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\n",
            b"HTTP/1.1 204\r\n\r\n",
        ];
        for buf in responses {
            for n in 0..buf.len() {
                assert_eq!(resp(&buf[..n], Method::Get), Ok(None), "prefix {n}");
            }
            assert_eq!(resp_ok(buf, Method::Get).head_len, buf.len());
        }
    }

    #[test]
    fn non_http_response_refused_before_the_head_is_complete() {
        // Not HTTP/1.x: refused from the first bytes that show it, no CRLFCRLF needed.
        for buf in [
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            b"\x15\x03\x01\x00\x02\x02\x46",
            b"\x00\x01",
            b"hello",
            b"HTTP/2 200\r\n",
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 2000",
            b"\r\nHTTPS",
            b"http/1.1 200 OK\r\n",
        ] {
            assert_eq!(
                resp(buf, Method::Get),
                Err(HeadError::Malformed("not an HTTP/1.x status line")),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        // Could still become a valid status line: wait for more.
        for buf in [
            &b""[..],
            b"H",
            b"HTTP/1.",
            b"HTTP/1.0 1",
            b"HTTP/1.1 200",
            b"HTTP/1.1 204\r",
            b"HTTP/1.1 200 OK, or anything \x80\r\nX: y\r\n",
            b"\r\n\r",
            b"\r\nHTTP/1.1 200 ",
        ] {
            assert_eq!(resp(buf, Method::Get), Ok(None), "{:?}", String::from_utf8_lossy(buf));
        }
    }

    // ---- responses ---------------------------------------------------------------------

    #[test]
    fn typical_response() {
        let buf = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\nnot found";
        let head = resp_ok(buf, Method::Get);
        assert_eq!(head.status, 404);
        assert_eq!(head.reason.get(buf), b"Not Found");
        assert_eq!(head.version_minor, 1);
        assert_eq!(head.framing, BodyFraming::ContentLength(9));
        assert_eq!(&buf[head.head_len..], b"not found");
        assert!(head.keep_alive);
    }

    #[test]
    fn reason_phrase_spans() {
        let buf = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
        assert!(resp_ok(buf, Method::Get).reason.is_empty());
        let buf = b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n";
        assert!(resp_ok(buf, Method::Get).reason.is_empty());
        let buf = "HTTP/1.1 200 D\u{e9}j\u{e0} vu\r\nContent-Length: 0\r\n\r\n";
        let head = resp_ok(buf.as_bytes(), Method::Get);
        assert_eq!(
            head.reason.get(buf.as_bytes()),
            "D\u{e9}j\u{e0} vu".as_bytes()
        );
        let buf = b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(resp_ok(buf, Method::Get).reason.get(buf), b"OK");
        resp_malformed(b"HTTP/1.1 200 O\x01K\r\n\r\n");
    }

    #[test]
    fn status_code_range() {
        assert_eq!(
            resp_ok(b"HTTP/1.1 100 Continue\r\n\r\n", Method::Get).status,
            100
        );
        assert_eq!(
            resp_ok(
                b"HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n",
                Method::Get
            )
            .status,
            999
        );
        for bad in [
            "HTTP/1.1 099 Low",
            "HTTP/1.1 000 Zero",
            "HTTP/1.1 1000 High",
            "HTTP/1.1 20 Short",
            "HTTP/1.1 2x0 X",
            "HTTP/1.1 -200 X",
            "HTTP/1.1  200 X",
            "HTTP/1.1 200\tX",
        ] {
            resp_malformed(&resp_with(bad, &["Content-Length: 0"]));
        }
    }

    #[test]
    fn response_framing() {
        let r = |status: &str, lines: &[&str], method: Method| {
            resp_ok(&resp_with(status, lines), method).framing
        };
        use BodyFraming as F;
        // No body regardless of headers.
        assert_eq!(
            r("HTTP/1.1 200 OK", &["Content-Length: 10"], Method::Head),
            F::None
        );
        assert_eq!(
            r(
                "HTTP/1.1 200 OK",
                &["Transfer-Encoding: chunked"],
                Method::Head
            ),
            F::None
        );
        assert_eq!(r("HTTP/1.1 204 No Content", &[], Method::Get), F::None);
        assert_eq!(
            r(
                "HTTP/1.1 304 Not Modified",
                &["Content-Length: 10"],
                Method::Get
            ),
            F::None
        );
        assert_eq!(r("HTTP/1.1 100 Continue", &[], Method::Post), F::None);
        assert_eq!(
            r("HTTP/1.1 103 Early Hints", &["Link: </a>"], Method::Get),
            F::None
        );
        assert_eq!(
            r(
                "HTTP/1.1 101 Switching Protocols",
                &["Connection: upgrade", "Upgrade: websocket"],
                Method::Get
            ),
            F::None
        );
        assert_eq!(
            r("HTTP/1.1 200 Connection Established", &[], Method::Connect),
            F::None
        );
        // A refused CONNECT does carry a body.
        assert_eq!(
            r("HTTP/1.1 407 Auth", &["Content-Length: 3"], Method::Connect),
            F::ContentLength(3)
        );
        // Bodies.
        assert_eq!(
            r("HTTP/1.1 200 OK", &["Content-Length: 10"], Method::Get),
            F::ContentLength(10)
        );
        assert_eq!(
            r(
                "HTTP/1.1 200 OK",
                &["Transfer-Encoding: chunked"],
                Method::Post
            ),
            F::Chunked
        );
        assert_eq!(r("HTTP/1.1 200 OK", &[], Method::Get), F::UntilClose);
        assert_eq!(r("HTTP/1.0 200 OK", &[], Method::Get), F::UntilClose);
        assert_eq!(
            r("HTTP/1.1 205 Reset", &["Content-Length: 0"], Method::Get),
            F::ContentLength(0)
        );
    }

    #[test]
    fn interim_and_switching_keep_alive() {
        assert!(resp_ok(b"HTTP/1.1 100 Continue\r\n\r\n", Method::Post).keep_alive);
        let buf = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let head = resp_ok(buf, Method::Get);
        assert!(!head.keep_alive);
        assert_eq!(head.headers[1].kind, HeaderKind::Upgrade);
        assert!(head.headers[1].hop_by_hop);
    }

    #[test]
    fn response_content_length_rules() {
        for bad in ["+1", "1 1", "0x1", "", "1, 2"] {
            resp_malformed(&resp_with(
                "HTTP/1.1 200 OK",
                &[&format!("Content-Length: {bad}")],
            ));
        }
        // Malformed even on a response that has no body.
        resp_malformed(&resp_with(
            "HTTP/1.1 304 Not Modified",
            &["Content-Length: x"],
        ));
    }

    #[test]
    fn pipelined_responses() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 204 No Content\r\n\r\n";
        let first = resp_ok(buf, Method::Post);
        assert_eq!(first.status, 100);
        let rest = &buf[first.head_len..];
        let second = resp_ok(rest, Method::Post);
        assert_eq!(second.status, 200);
        let rest = &rest[second.head_len + 2..];
        let third = resp_ok(rest, Method::Get);
        assert_eq!(third.status, 204);
        assert_eq!(third.head_len, rest.len());
    }

    #[test]
    fn head_error_mapping() {
        assert_eq!(HeadError::Malformed("x").status(), 400);
        assert_eq!(HeadError::TooLarge("y").status(), 431);
        assert_eq!(HeadError::TooLarge("y").reason(), "y");
        assert_eq!(HeadError::Malformed("x").to_string(), "x (400)");
    }

    #[test]
    fn span_helpers() {
        let s = Span { start: 2, end: 5 };
        assert_eq!(s.get(b"abcdefg"), b"cde");
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
        // Out of range or inverted spans are empty, never a panic.
        assert_eq!(s.get(b"abc"), b"");
        let inverted = Span { start: 5, end: 2 };
        assert!(inverted.is_empty());
        assert_eq!(inverted.len(), 0);
        assert_eq!(inverted.get(b"abcdefg"), b"");
    }

    #[test]
    fn swar_scan_matches_bytewise() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        // Bytes near CR and LF, with and without the high bit, are where SWAR tricks slip.
        let alphabet = [
            b'\r', b'\n', 0x0b, 0x0c, 0x0e, 0x09, 0x00, 0x01, 0x8a, 0x8d, 0xff, 0x80, b'a', b' ',
        ];
        for round in 0..20_000 {
            let word = if round % 2 == 0 {
                rng.next()
            } else {
                let mut bytes = [0u8; 8];
                for b in &mut bytes {
                    *b = alphabet[rng.below(alphabet.len())];
                }
                u64::from_le_bytes(bytes)
            };
            let expected = word
                .to_le_bytes()
                .iter()
                .position(|&b| b == b'\r' || b == b'\n');
            assert_eq!(first_cr_or_lf(word), expected, "{word:#x}");
        }
    }

    // ---- chunked -----------------------------------------------------------------------

    /// Feeds `input` in pieces of the given sizes (cycled), as the proxy would.
    fn feed_split(
        input: &[u8],
        max_trailer: usize,
        sizes: &mut dyn FnMut() -> usize,
    ) -> Result<(bool, usize, Vec<u8>), ChunkError> {
        let mut state = ChunkedState::new(max_trailer);
        let mut payload = Vec::new();
        let mut offset = 0;
        while offset < input.len() {
            let n = sizes().max(1).min(input.len() - offset);
            let piece = &input[offset..offset + n];
            let progress = state.feed_with(piece, |d| payload.extend_from_slice(d))?;
            assert!(progress.consumed <= piece.len());
            assert!(progress.data <= progress.consumed);
            offset += progress.consumed;
            if progress.done {
                assert!(state.is_done());
                return Ok((true, offset, payload));
            }
            assert_eq!(progress.consumed, piece.len());
        }
        Ok((false, offset, payload))
    }

    /// Checks the state machine against the reference decoder for whole, byte-by-byte
    /// and random splits; returns the reference result.
    fn check_chunked(
        input: &[u8],
        max_trailer: usize,
        rng: &mut XorShift,
    ) -> Result<Option<(Vec<u8>, usize)>, ChunkError> {
        let reference = decode_chunked(input, max_trailer);
        let expected = reference
            .clone()
            .map(|r| r.map(|(payload, consumed)| (true, consumed, payload)));
        let whole = feed_split(input, max_trailer, &mut || usize::MAX);
        let bytewise = feed_split(input, max_trailer, &mut || 1);
        let random = feed_split(input, max_trailer, &mut || rng.below(9) + 1);
        for (name, got) in [("whole", whole), ("bytewise", bytewise), ("random", random)] {
            let got = got.map(|(done, consumed, payload)| {
                if done {
                    Some((done, consumed, payload))
                } else {
                    None
                }
            });
            assert_eq!(
                got,
                expected,
                "{name} for {:?}",
                String::from_utf8_lossy(input)
            );
        }
        reference
    }

    fn chunked_ok(input: &[u8]) -> (Vec<u8>, usize) {
        let mut rng = XorShift(7);
        match check_chunked(input, DEFAULT_MAX_TRAILER_BYTES, &mut rng) {
            Ok(Some(r)) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn chunked_err(input: &[u8], max_trailer: usize) -> ChunkError {
        let mut rng = XorShift(11);
        match check_chunked(input, max_trailer, &mut rng) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn chunked_basic() {
        let body = b"4\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n";
        let (payload, consumed) = chunked_ok(body);
        assert_eq!(payload, b"Wikipedia in \r\n\r\nchunks.");
        assert_eq!(consumed, body.len());
        let (payload, consumed) = chunked_ok(b"0\r\n\r\n");
        assert!(payload.is_empty());
        assert_eq!(consumed, 5);
        chunked_ok(b"000\r\n\r\n");
        chunked_ok(b"a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n");
    }

    #[test]
    fn chunked_progress_counts() {
        let mut state = ChunkedState::default();
        let p = state.feed(b"5\r\nhel").unwrap();
        assert_eq!(
            p,
            ChunkProgress {
                consumed: 6,
                done: false,
                data: 3
            }
        );
        let p = state.feed(b"lo\r\n0\r\n\r\nGET / HTTP/1.1").unwrap();
        assert_eq!(
            p,
            ChunkProgress {
                consumed: 9,
                done: true,
                data: 2
            }
        );
        assert!(state.is_done());
        // Once done, nothing more belongs to the body.
        assert_eq!(
            state.feed(b"more").unwrap(),
            ChunkProgress {
                consumed: 0,
                done: true,
                data: 0
            }
        );
    }

    #[test]
    fn chunked_next_message_follows() {
        let input = b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nPOST /next HTTP/1.1\r\n";
        let (payload, consumed) = chunked_ok(input);
        assert_eq!(payload, b"abc");
        assert_eq!(&input[consumed..], b"POST /next HTTP/1.1\r\n");
    }

    #[test]
    fn chunk_size_rules() {
        let mut rng = XorShift(5);
        assert_eq!(
            check_chunked(b"ffffffffffffffff\r\n", 0, &mut rng),
            Ok(None)
        );
        chunked_ok(b"0000000000000001\r\nx\r\n0\r\n\r\n");
        for bad in [
            &b"00000000000000001\r\nx\r\n0\r\n\r\n"[..],
            b"10000000000000000\r\n",
            b"\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\t\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\n",
            b"g\r\n",
            b"5 ;a\r\nhello\r\n0\r\n\r\n",
            b";a\r\n",
        ] {
            assert_eq!(
                chunked_err(bad, 64),
                ChunkError::BadSize,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunk_extensions() {
        for ok in [
            &b"5;a\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a=b\r\nhello\r\n0;x\r\n\r\n",
            b"5;a=b;c;d=e\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"q u;o=t\\\"e\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\";b\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                chunked_ok(ok).0,
                b"hello",
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b"5;\r\nhello\r\n0\r\n\r\n"[..],
            b"5;;a\r\n",
            b"5;a=\r\n",
            b"5; a\r\n",
            b"5;a =b\r\n",
            b"5;a= b\r\n",
            b"5;a=\"unterminated\r\n",
            b"5;a=\"x\"y\r\n",
            b"5;a=\"\x01\"\r\n",
            b"5;a=\"\\\x01\"\r\n",
            b"5;a=b c\r\n",
            b"5;a@b\r\n",
            b"5;=b\r\n",
            b"5;a=\"x\n",
        ] {
            assert_eq!(
                chunked_err(bad, 64),
                ChunkError::BadExtension,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunk_extension_length_limit() {
        let at_limit = format!("1;{}\r\nx\r\n0\r\n\r\n", "a".repeat(4095));
        chunked_ok(at_limit.as_bytes());
        let quoted = format!("1;a=\"{}\"\r\nx\r\n0\r\n\r\n", "q".repeat(4090));
        chunked_ok(quoted.as_bytes());
        let over = format!("1;{}\r\nx\r\n0\r\n\r\n", "a".repeat(4096));
        assert_eq!(chunked_err(over.as_bytes(), 64), ChunkError::BadExtension);
        // The limit is per line, not per body.
        let two_lines = format!("1;{0}\r\nx\r\n0;{0}\r\n\r\n", "a".repeat(4000));
        chunked_ok(two_lines.as_bytes());
    }

    #[test]
    fn chunked_line_endings() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\rhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\n\rX",
            b"0\n\r\n",
            b"5;a\nhello\r\n",
            b"5;a=\"x\"\n",
            b"0\r\nX-T: 1\n\r\n",
            b"0\r\nX-T: 1\rX\r\n\r\n",
            b"0\r\n\n\r\n",
        ] {
            assert_eq!(
                chunked_err(bad, 64),
                ChunkError::BadLineEnding,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunked_trailers() {
        let input = b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other:\t v \r\n\r\n";
        let (payload, consumed) = chunked_ok(input);
        assert_eq!(payload, b"hello");
        assert_eq!(consumed, input.len());
        chunked_ok("0\r\nX-Obs: caf\u{e9}\r\n\r\n".as_bytes());
        for bad in [
            &b"0\r\nX-T : 1\r\n\r\n"[..],
            b"0\r\n X-T: 1\r\n\r\n",
            b"0\r\n\tX-T: 1\r\n\r\n",
            b"0\r\n: 1\r\n\r\n",
            b"0\r\nNoColon\r\n\r\n",
            b"0\r\nX-T: a\x00b\r\n\r\n",
            b"0\r\nX-T: a\x7fb\r\n\r\n",
            b"0\r\nX(T: 1\r\n\r\n",
            b"0\r\nX-T: 1\r\n folded\r\n\r\n",
        ] {
            assert_eq!(
                chunked_err(bad, 64),
                ChunkError::BadTrailer,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunked_trailer_size_limit() {
        let input = b"0\r\nX-T: 12345\r\n\r\n"; // trailer field line is 12 bytes with CRLF
        let mut rng = XorShift(3);
        assert!(check_chunked(input, 12, &mut rng).unwrap().is_some());
        assert_eq!(chunked_err(input, 11), ChunkError::TrailerTooLarge);
        // The final empty line does not count, so 0 still accepts a plain ending.
        assert!(check_chunked(b"0\r\n\r\n", 0, &mut rng).unwrap().is_some());
        assert_eq!(
            chunked_err(b"0\r\nX: 1\r\n\r\n", 0),
            ChunkError::TrailerTooLarge
        );
        // Many small trailer lines add up.
        let many = format!("0\r\n{}\r\n", "A: b\r\n".repeat(100));
        assert_eq!(
            chunked_err(many.as_bytes(), 599),
            ChunkError::TrailerTooLarge
        );
        assert!(check_chunked(many.as_bytes(), 600, &mut rng)
            .unwrap()
            .is_some());
    }

    #[test]
    fn chunked_errors_are_sticky() {
        let mut state = ChunkedState::default();
        assert_eq!(state.feed(b"5\nhello"), Err(ChunkError::BadLineEnding));
        assert_eq!(state.feed(b"\r\n0\r\n\r\n"), Err(ChunkError::BadLineEnding));
        assert!(!state.is_done());
    }

    #[test]
    fn chunked_incomplete_prefixes() {
        let input = b"5;a=\"b\"\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n";
        for n in 0..input.len() {
            assert_eq!(decode_chunked(&input[..n], 64), Ok(None), "prefix {n}");
            let mut state = ChunkedState::new(64);
            let p = state.feed(&input[..n]).unwrap();
            assert_eq!((p.consumed, p.done), (n, false));
        }
        assert!(decode_chunked(input, 64).unwrap().is_some());
    }

    #[test]
    fn chunked_large_body_fast_path() {
        let chunk = vec![b'x'; 8192];
        let mut body = Vec::new();
        for _ in 0..8 {
            body.extend_from_slice(b"2000\r\n");
            body.extend_from_slice(&chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let mut state = ChunkedState::default();
        let p = state.feed(&body).unwrap();
        assert_eq!(
            p,
            ChunkProgress {
                consumed: body.len(),
                done: true,
                data: 65_536
            }
        );
        let (payload, _) = chunked_ok(&body);
        assert_eq!(payload.len(), 65_536);
    }

    /// Builds a random valid chunked body: random sizes, extensions and trailers, and
    /// sometimes the start of a next message after it.
    fn random_chunked(rng: &mut XorShift) -> Vec<u8> {
        fn size_line(out: &mut Vec<u8>, rng: &mut XorShift, size: usize) {
            let digits = format!("{size:x}");
            let digits = if rng.below(4) == 0 {
                digits.to_uppercase()
            } else {
                digits
            };
            out.extend_from_slice(digits.as_bytes());
            match rng.below(5) {
                0 => out.extend_from_slice(b";ext"),
                1 => out.extend_from_slice(b";n=v;m=\"a \\\" b\""),
                _ => {}
            }
            out.extend_from_slice(b"\r\n");
        }
        let mut out = Vec::new();
        for _ in 0..rng.below(4) {
            let size = rng.below(20) + 1;
            size_line(&mut out, rng, size);
            for _ in 0..size {
                out.push(b"ab\r\n0;:"[rng.below(7)]);
            }
            out.extend_from_slice(b"\r\n");
        }
        size_line(&mut out, rng, 0);
        for _ in 0..rng.below(3) {
            out.extend_from_slice(b"X-Trailer-");
            out.extend_from_slice(rng.below(100).to_string().as_bytes());
            out.extend_from_slice(b": value\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if rng.below(2) == 0 {
            out.extend_from_slice(b"GET / HTTP/1.1\r\n");
        }
        out
    }

    #[test]
    fn chunked_state_machine_matches_reference() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let interesting = b"\r\n;=\"\\: \t0123456789abcdefABCDEFxg\x00\x7f\x80";
        let mut valid = 0;
        for _ in 0..3000 {
            let mut input = random_chunked(&mut rng);
            // About half stay valid; the rest get one to three mutations.
            if rng.below(2) == 0 {
                for _ in 0..=rng.below(3) {
                    let at = rng.below(input.len());
                    match rng.below(4) {
                        0 => input[at] = interesting[rng.below(interesting.len())],
                        1 => input.insert(at, interesting[rng.below(interesting.len())]),
                        2 => {
                            input.remove(at);
                        }
                        _ => input.truncate(at),
                    }
                    if input.is_empty() {
                        break;
                    }
                }
            }
            let max_trailer = [0, 8, 64, DEFAULT_MAX_TRAILER_BYTES][rng.below(4)];
            if let Ok(Some(_)) = check_chunked(&input, max_trailer, &mut rng) {
                valid += 1;
            }
        }
        // Make sure the generator exercised both outcomes.
        assert!(valid > 500, "only {valid} valid inputs");
    }

    // ---- robustness --------------------------------------------------------------------

    fn check_request_invariants(buf: &[u8], limits: &Limits, scratch: &mut Vec<Header>) {
        if let Ok(Some(head)) = parse_request_head(buf, limits, scratch) {
            assert!(head.head_len <= buf.len());
            assert!(head.head_len <= limits.max_head_bytes);
            assert!(head.headers.len() <= limits.max_headers);
            let spans = [head.method_span, head.target, head.path]
                .into_iter()
                .chain(head.host)
                .chain(head.upgrade)
                .chain(head.authority)
                .chain(head.headers.iter().flat_map(|h| [h.name, h.value]));
            for span in spans {
                assert!(span.start <= span.end && span.end as usize <= head.head_len);
            }
            *scratch = head.headers;
        }
    }

    fn check_response_invariants(
        buf: &[u8],
        limits: &Limits,
        method: Method,
        scratch: &mut Vec<Header>,
    ) {
        if let Ok(Some(head)) = parse_response_head(buf, limits, method, scratch) {
            assert!(head.head_len <= buf.len());
            assert!((100..=999).contains(&head.status));
            assert!(head.reason.end as usize <= head.head_len);
            for h in &head.headers {
                assert!(
                    h.name.end as usize <= head.head_len && h.value.end as usize <= head.head_len
                );
                assert!(!h.name.is_empty());
            }
            *scratch = head.headers;
        }
    }

    #[test]
    fn mutated_heads_never_panic() {
        let seeds: [&[u8]; 6] = [
            b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\n\r\n",
            b"POST http://h:80/p HTTP/1.1\r\nHost: h:80\r\nContent-Length: 5, 5\r\nExpect: 100-continue\r\n\r\nhello",
            b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            b"HTTP/1.0 101 Switching\r\nUpgrade: ws\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"OPTIONS * HTTP/1.0\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        ];
        let interesting = b"\r\n\x00\x01\x7f\x80\xff :;,\t/?*#@[]0123456789\"chunked";
        let limits = [
            Limits::default(),
            Limits {
                max_head_bytes: 48,
                max_headers: 2,
            },
            Limits {
                max_head_bytes: 0,
                max_headers: 0,
            },
            Limits {
                max_head_bytes: 4096,
                max_headers: 200,
            },
        ];
        let methods = [Method::Get, Method::Head, Method::Connect, Method::Post];
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        let mut scratch = Vec::new();
        let mut accepted = 0;
        for i in 0..5000 {
            let mut buf = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(buf.len() + 1);
                match rng.below(6) {
                    0 if at < buf.len() => buf[at] = interesting[rng.below(interesting.len())],
                    1 => buf.insert(at, interesting[rng.below(interesting.len())]),
                    2 if at < buf.len() => {
                        buf.remove(at);
                    }
                    3 => buf.truncate(at),
                    4 => {
                        // Duplicate a range, e.g. a whole header line.
                        let end = (at + rng.below(40)).min(buf.len());
                        let copy = buf[at..end].to_vec();
                        buf.splice(at..at, copy);
                    }
                    _ if at < buf.len() => buf[at] = rng.next() as u8,
                    _ => {}
                }
            }
            let limits = &limits[i % limits.len()];
            check_request_invariants(&buf, limits, &mut scratch);
            check_response_invariants(
                &buf,
                limits,
                methods[rng.below(methods.len())],
                &mut scratch,
            );
            if let Ok(Some(_)) = req(&buf) {
                accepted += 1;
            }
            // The chunked paths get the same bytes.
            let _ = decode_chunked(&buf, 32);
            let _ = ChunkedState::new(32).feed(&buf);
        }
        assert!(accepted > 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(42);
        let mut scratch = Vec::new();
        for _ in 0..2000 {
            let len = rng.below(64);
            let alphabet = b"GETPOST HTTP/1.1\r\n:Host0123456789;\"";
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            check_request_invariants(&buf, &Limits::default(), &mut scratch);
            check_response_invariants(&buf, &Limits::default(), Method::Get, &mut scratch);
            let _ = decode_chunked(&buf, 16);
            let mut state = ChunkedState::new(16);
            for b in &buf {
                if state.feed(std::slice::from_ref(b)).is_err() {
                    break;
                }
            }
        }
    }
}
