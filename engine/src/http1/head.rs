//! Writing heads: the request head sent upstream (hop-by-hop headers dropped,
//! forwarding headers set, route header edits applied, prefix rewritten) and the
//! response head sent downstream.

use super::codec::{BodyFraming, Header, HeaderKind, RequestHead, ResponseHead};
use crate::router::Route;

/// Choices the connection loop made that change the head.
pub struct RequestEdits<'a> {
    pub route: &'a Route,
    /// (matched prefix length, replacement) when the route rewrites the prefix.
    pub rewrite: Option<(usize, &'a [u8])>,
    /// The client's IP as text, rendered once per connection.
    pub client_ip: &'a [u8],
    pub request_id: &'a [u8],
    /// We answered `Expect: 100-continue` ourselves; do not forward it.
    pub strip_expect: bool,
    /// mTLS listeners: any incoming x-forwarded-client-cert is removed, and
    /// this value (when not empty) added.
    pub xfcc: Option<&'a [u8]>,
    /// The client spoke TLS to us.
    pub https: bool,
}

fn in_list(list: &[Box<[u8]>], name: &[u8]) -> bool {
    list.iter().any(|n| n.eq_ignore_ascii_case(name))
}

pub(super) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub fn upstream_request(out: &mut Vec<u8>, buf: &[u8], h: &RequestHead, e: &RequestEdits<'_>) {
    out.extend_from_slice(h.method_span.get(buf));
    out.push(b' ');
    // Origin-form from here on: for an absolute-form target, the path onward.
    let target_end = h.target.end as usize;
    let origin = buf.get(h.path.start as usize..target_end).unwrap_or(b"/");
    if h.path.is_empty() && h.authority.is_some() {
        // `http://host` and `http://host?q` have no path; origin-form needs one
        // (RFC 9112 §3.2.1), else the request line would be "GET  HTTP/1.1".
        out.push(b'/');
    }
    match e.rewrite {
        Some((matched, new_prefix)) => {
            out.extend_from_slice(new_prefix);
            out.extend_from_slice(origin.get(matched..).unwrap_or_default());
        }
        None => out.extend_from_slice(origin),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut xff: Option<&[u8]> = None;
    for hd in &h.headers {
        let name = hd.name.get(buf);
        match hd.kind {
            HeaderKind::XForwardedFor => {
                xff = Some(hd.value.get(buf));
                continue;
            }
            HeaderKind::XForwardedProto | HeaderKind::XRequestId => continue,
            HeaderKind::Expect if e.strip_expect => continue,
            // Written once below, from the framing the codec decided on.
            HeaderKind::ContentLength => continue,
            // RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host;
            // we routed on it, so the upstream must see it too.
            HeaderKind::Host if h.authority.is_some() => continue,
            _ => {}
        }
        if hd.hop_by_hop || in_list(&e.route.request_headers_to_remove, name) {
            continue;
        }
        if e.xfcc.is_some() && name.eq_ignore_ascii_case(b"x-forwarded-client-cert") {
            continue;
        }
        put_header(out, name, hd.value.get(buf));
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prev) = xff {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(e.client_ip);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(if e.https {
        b"x-forwarded-proto: https\r\n"
    } else {
        b"x-forwarded-proto: http\r\n"
    });
    if let Some(v) = e.xfcc.filter(|v| !v.is_empty()) {
        put_header(out, b"x-forwarded-client-cert", v);
    }
    put_header(out, b"x-request-id", e.request_id);
    for (n, v) in &e.route.request_headers_to_add {
        put_header(out, n, v);
    }
    match (h.authority, h.host) {
        (Some(authority), _) => put_header(out, b"host", authority.get(buf)),
        // An HTTP/1.0 request may come without Host; HTTP/1.1 requires one, empty
        // when the authority is unknown (RFC 9112 §3.2).
        (None, None) => out.extend_from_slice(b"host: \r\n"),
        (None, Some(_)) => {}
    }
    // One canonical framing field, whatever the client wrote ("5, 5", two equal
    // Content-Length lines, "005"): a recipient may refuse those forms or read them
    // its own way (RFC 9110 §8.6).
    match h.framing {
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::ContentLength(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::None | BodyFraming::UntilClose => {}
    }
    if let Some(up) = h.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
        put_header(out, b"upgrade", up.get(buf));
    }
    out.extend_from_slice(b"\r\n");
}

pub struct ResponseEdits<'a> {
    pub route: &'a Route,
    pub request_id: &'a [u8],
    /// We close the downstream connection after this response.
    pub close: bool,
    /// The client spoke HTTP/1.0 and asked for keep-alive.
    pub http10_keep_alive: bool,
    /// This is a 101 to an Upgrade request: keep Upgrade/Connection.
    pub upgrade: bool,
    /// The body is de-chunked for an HTTP/1.0 client (close-delimited).
    pub dechunk: bool,
}

pub fn downstream_response(out: &mut Vec<u8>, buf: &[u8], r: &ResponseHead, e: &ResponseEdits<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, r.status);
    out.push(b' ');
    out.extend_from_slice(r.reason.get(buf));
    out.extend_from_slice(b"\r\n");
    let mut has_id = false;
    let mut has_length = false;
    for hd in &r.headers {
        let name = hd.name.get(buf);
        if e.upgrade && matches!(hd.kind, HeaderKind::Upgrade | HeaderKind::Connection) {
            put_header(out, name, hd.value.get(buf));
            continue;
        }
        if hd.hop_by_hop || in_list(&e.route.response_headers_to_remove, name) {
            continue;
        }
        if hd.kind == HeaderKind::ContentLength {
            // Once, canonical: the codec accepted "02" or "2, 2" or two equal lines,
            // which a client may refuse or read its own way (RFC 9110 §8.6).
            if !has_length {
                has_length = true;
                put_header(out, b"content-length", canonical_length(hd.value.get(buf)));
            }
            continue;
        }
        has_id |= hd.kind == HeaderKind::XRequestId;
        put_header(out, name, hd.value.get(buf));
    }
    for (n, v) in &e.route.response_headers_to_add {
        put_header(out, n, v);
    }
    if !has_id {
        put_header(out, b"x-request-id", e.request_id);
    }
    if r.framing == BodyFraming::Chunked && !e.dechunk {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if e.close && !e.upgrade {
        out.extend_from_slice(b"connection: close\r\n");
    } else if e.http10_keep_alive {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The number of a Content-Length value the codec accepted (digits, or a list of
/// equal numbers): its first element without leading zeros.
pub fn canonical_length(value: &[u8]) -> &[u8] {
    let first = value.split(|&b| b == b',').next().unwrap_or_default();
    let digits = first.trim_ascii();
    let zeros = digits.iter().take_while(|&&b| b == b'0').count();
    match digits.get(zeros.min(digits.len().saturating_sub(1))..) {
        Some(d) if !d.is_empty() => d,
        _ => b"0",
    }
}

fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes a status code; the codec admits only 100..=999, so three digits.
fn push_status(out: &mut Vec<u8>, status: u16) {
    let s = status.clamp(100, 999);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
}

/// Looks a request header up by lower-case name, for the router.
pub struct Lookup<'a> {
    pub buf: &'a [u8],
    pub headers: &'a [Header],
}

impl crate::router::HeaderLookup for Lookup<'_> {
    fn header(&self, lower_name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.get(self.buf).eq_ignore_ascii_case(lower_name))
            .map(|h| h.value.get(self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::codec::{parse_request_head, Limits};
    use crate::router::{Action, Direct, PathMatcher};

    fn route() -> Route {
        Route {
            id: 0,
            name: "r".into(),
            path: PathMatcher::Any,
            methods: Vec::new(),
            headers: Vec::new(),
            action: Action::Direct(Direct {
                status: 200,
                body: Box::default(),
                content_type: "text/plain".into(),
            }),
            request_headers_to_add: Vec::new(),
            request_headers_to_remove: Vec::new(),
            response_headers_to_add: Vec::new(),
            response_headers_to_remove: Vec::new(),
        }
    }

    /// The head we would send upstream for `raw`, as text.
    fn upstream(raw: &[u8]) -> String {
        let head = parse_request_head(raw, &Limits::default(), &mut Vec::new())
            .unwrap()
            .unwrap();
        let route = route();
        let mut out = Vec::new();
        upstream_request(
            &mut out,
            raw,
            &head,
            &RequestEdits {
                route: &route,
                rewrite: None,
                client_ip: b"10.0.0.1",
                request_id: b"id",
                strip_expect: head.expect_continue,
                xfcc: None,
                https: false,
            },
        );
        String::from_utf8(out).unwrap()
    }

    fn named<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }

    #[test]
    fn content_length_is_forwarded_once_and_canonical() {
        for cl in [
            "Content-Length: 5",
            "Content-Length: 5, 5",
            "Content-Length: 005",
            "Content-Length: 5\r\ncontent-length: 5",
        ] {
            let raw = format!("POST /x HTTP/1.1\r\nHost: a\r\n{cl}\r\n\r\nhello");
            let up = upstream(raw.as_bytes());
            assert_eq!(named(&up, "content-length"), ["5"], "{cl}: {up}");
        }
        let up = upstream(
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n",
        );
        assert_eq!(named(&up, "content-length"), ["18446744073709551615"]);
        let up = upstream(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(named(&up, "content-length"), ["0"]);
        let up = upstream(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(named(&up, "transfer-encoding"), ["chunked"]);
        assert!(named(&up, "content-length").is_empty());
        let up = upstream(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(
            named(&up, "content-length").is_empty() && named(&up, "transfer-encoding").is_empty()
        );
    }

    #[test]
    fn response_content_length_is_passed_on_once_and_canonical() {
        use crate::http1::codec::{parse_response_head, Method};
        let route = route();
        for (lines, want) in [
            ("Content-Length: 5", "5"),
            ("Content-Length: 005", "5"),
            ("Content-Length: 5, 5", "5"),
            ("Content-Length: 0", "0"),
            ("Content-Length: 000", "0"),
            ("Content-Length: 05\r\ncontent-length: 5 ,5", "5"),
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{lines}\r\n\r\n");
            for method in [Method::Get, Method::Head] {
                let head = parse_response_head(
                    raw.as_bytes(),
                    &Limits::default(),
                    method,
                    &mut Vec::new(),
                )
                .unwrap()
                .unwrap();
                let mut out = Vec::new();
                downstream_response(
                    &mut out,
                    raw.as_bytes(),
                    &head,
                    &ResponseEdits {
                        route: &route,
                        request_id: b"id",
                        close: false,
                        http10_keep_alive: false,
                        upgrade: false,
                        dechunk: false,
                    },
                );
                let out = String::from_utf8(out).unwrap();
                assert_eq!(named(&out, "content-length"), [want], "{lines:?}: {out}");
            }
        }
    }

    #[test]
    fn an_absolute_form_target_without_a_path_goes_as_slash() {
        // Found by the fuzz target http1_request (fuzz/seeds/http1_request/regress-no-path).
        let up = upstream(b"GET http://b.test HTTP/1.1\r\nHost: b.test\r\n\r\n");
        assert!(up.starts_with("GET / HTTP/1.1\r\n"), "{up}");
        let up = upstream(b"GET http://b.test?q=1 HTTP/1.1\r\nHost: b.test\r\n\r\n");
        assert!(up.starts_with("GET /?q=1 HTTP/1.1\r\n"), "{up}");
        let up = upstream(b"OPTIONS * HTTP/1.1\r\nHost: b.test\r\n\r\n");
        assert!(up.starts_with("OPTIONS * HTTP/1.1\r\n"), "{up}");
    }

    #[test]
    fn host_is_the_routed_authority() {
        // Absolute-form: the authority replaces whatever Host said (RFC 9112 §3.2.2).
        let up = upstream(b"GET http://b.test:8080/p?q HTTP/1.1\r\nHost: a.test\r\n\r\n");
        assert!(up.starts_with("GET /p?q HTTP/1.1\r\n"), "{up}");
        assert_eq!(named(&up, "host"), ["b.test:8080"], "{up}");
        // Origin-form: Host as sent, once.
        let up = upstream(b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n");
        assert_eq!(named(&up, "host"), ["a.test"]);
        // HTTP/1.0 without Host goes upstream as HTTP/1.1, which needs one: empty.
        let up = upstream(b"GET /p HTTP/1.0\r\n\r\n");
        assert_eq!(named(&up, "host"), [""], "{up}");
        let up = upstream(b"GET http://b.test/p HTTP/1.0\r\n\r\n");
        assert_eq!(named(&up, "host"), ["b.test"], "{up}");
    }
}
