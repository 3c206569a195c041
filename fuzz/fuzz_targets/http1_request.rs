//! HTTP/1.1 request heads: `parse_request_head`, the framing decision, and
//! the head the proxy would forward (`http1::head::upstream_request`, then
//! `http1::to_request` for an HTTP/2 upstream).
//!
//! Properties:
//! - never panics; every span lies inside the head; the method span holds the
//!   method; path and authority lie inside the request-target;
//! - framing: never Content-Length and Transfer-Encoding together, chunked
//!   only on HTTP/1.1, a Content-Length framing matches every CL field;
//! - reading incrementally agrees with reading at once: no prefix of a valid
//!   head is refused or taken for a (shorter) head, a refused prefix means the
//!   whole input is refused, and bytes after the head change nothing;
//! - what the proxy forwards is exactly one head that our own parser reads
//!   back with the same method, path, routing host and framing, with at most
//!   one plain Content-Length; the HTTP/2 form keeps method, path and host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmesh_engine::http1::codec::{
    parse_request_head, BodyFraming, HeadError, HeaderKind, Limits, Method, RequestHead, Span,
};
use ringmesh_engine::http1::head::{upstream_request, RequestEdits};
use ringmesh_engine::router::{Action, Direct, PathMatcher, Route};
use ringmesh_fuzz::split_points;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut scratch = Vec::new();
    let whole = parse_request_head(data, &limits, &mut scratch);
    match &whole {
        Ok(Some(head)) => {
            check_head(data, head);
            check_incremental(data, head, &limits);
            check_forwarded(data, head);
        }
        Ok(None) => {
            // Incomplete: no prefix may have been refused either (a refused
            // prefix would make the whole input refused).
            check_prefixes_not_refused(data, data.len(), &limits);
        }
        Err(_) => {}
    }
    // A limit exactly at the head's length accepts it; one byte less refuses.
    if let Ok(Some(head)) = &whole {
        let exact = Limits {
            max_head_bytes: head.head_len,
            max_headers: head.headers.len().max(1),
        };
        let again = parse_request_head(data, &exact, &mut Vec::new());
        assert_eq!(again.as_ref().ok().and_then(Option::as_ref), Some(head));
        if head.head_len > 1 {
            let tight = Limits {
                max_head_bytes: head.head_len - 1,
                ..limits
            };
            assert!(
                matches!(
                    parse_request_head(data, &tight, &mut Vec::new()),
                    Err(HeadError::TooLarge(_))
                ),
                "a head longer than max_head_bytes was not refused as too large"
            );
        }
    }
});

fn inside(s: Span, end: usize) {
    assert!(s.start <= s.end, "span {s:?} is reversed");
    assert!(s.end as usize <= end, "span {s:?} goes past {end}");
}

fn within(inner: Span, outer: Span) {
    assert!(
        inner.start >= outer.start && inner.end <= outer.end,
        "{inner:?} is not inside {outer:?}"
    );
}

fn check_head(data: &[u8], h: &RequestHead) {
    let n = h.head_len;
    assert!(n <= data.len() && n >= 4, "head_len {n} of {}", data.len());
    assert_eq!(&data[n - 4..n], b"\r\n\r\n", "a head ends with CRLFCRLF");
    inside(h.method_span, n);
    inside(h.target, n);
    inside(h.path, n);
    within(h.path, h.target);
    if let Some(a) = h.authority {
        inside(a, n);
        within(a, h.target);
    }
    if let Some(host) = h.host {
        inside(host, n);
    }
    if let Some(u) = h.upgrade {
        inside(u, n);
    }
    for hd in &h.headers {
        inside(hd.name, n);
        inside(hd.value, n);
        assert!(!hd.name.is_empty());
    }
    assert_eq!(Method::from_token(h.method_span.get(data)), h.method);
    assert!(h.version_minor <= 1);
    if h.method == Method::Connect {
        assert!(h.authority.is_some());
    }

    // The framing decision against the fields themselves.
    let cl: Vec<&[u8]> = h
        .headers
        .iter()
        .filter(|f| f.kind == HeaderKind::ContentLength)
        .map(|f| f.value.get(data))
        .collect();
    let te = h
        .headers
        .iter()
        .any(|f| f.kind == HeaderKind::TransferEncoding);
    match h.framing {
        BodyFraming::None => assert!(cl.is_empty() && !te),
        BodyFraming::Chunked => {
            assert!(cl.is_empty(), "chunked with a Content-Length");
            assert!(te);
            assert_eq!(h.version_minor, 1, "chunked on HTTP/1.0");
        }
        BodyFraming::ContentLength(len) => {
            assert!(!te, "Content-Length with a Transfer-Encoding");
            assert!(!cl.is_empty());
            for v in cl {
                for element in v.split(|&b| b == b',') {
                    let digits = element.trim_ascii();
                    assert!(digits.iter().all(u8::is_ascii_digit));
                    assert_eq!(std::str::from_utf8(digits).unwrap().parse::<u64>(), Ok(len));
                }
            }
        }
        BodyFraming::UntilClose => panic!("a request is never close-delimited"),
    }
    if h.version_minor == 1 {
        assert!(h.host.is_some(), "HTTP/1.1 without Host");
    }
}

fn check_incremental(data: &[u8], h: &RequestHead, limits: &Limits) {
    for k in split_points(data, h.head_len) {
        let prefix = parse_request_head(&data[..k], limits, &mut Vec::new());
        assert_eq!(
            prefix,
            Ok(None),
            "prefix of {k} bytes of a {}-byte head",
            h.head_len
        );
    }
    // Whatever follows the head (body, next request) does not change it.
    let alone = parse_request_head(&data[..h.head_len], limits, &mut Vec::new());
    assert_eq!(alone.as_ref().ok().and_then(Option::as_ref), Some(h));
}

fn check_prefixes_not_refused(data: &[u8], end: usize, limits: &Limits) {
    for k in split_points(data, end) {
        if let Err(e) = parse_request_head(&data[..k], limits, &mut Vec::new()) {
            panic!("prefix of {k} bytes refused ({e}) but the whole input is only incomplete");
        }
    }
}

fn route() -> Route {
    Route {
        id: 0,
        name: "fuzz".into(),
        path: PathMatcher::Any,
        methods: Vec::new(),
        headers: Vec::new(),
        action: Action::Direct(Direct {
            status: 200,
            body: Box::default(),
            content_type: "text/plain".into(),
        }),
        request_headers_to_add: vec![(b"x-added".as_slice().into(), b"1".as_slice().into())],
        request_headers_to_remove: vec![b"x-remove-me".as_slice().into()],
        response_headers_to_add: Vec::new(),
        response_headers_to_remove: Vec::new(),
    }
}

fn check_forwarded(data: &[u8], h: &RequestHead) {
    // CONNECT is answered 405 by the proxy, never forwarded.
    if h.method == Method::Connect {
        return;
    }
    let route = route();
    let mut out = Vec::new();
    upstream_request(
        &mut out,
        data,
        h,
        &RequestEdits {
            route: &route,
            rewrite: None,
            client_ip: b"192.0.2.1",
            request_id: b"0123456789abcdef0123456789abcdef",
            strip_expect: h.expect_continue,
            xfcc: None,
            https: false,
        },
    );
    let big = Limits {
        max_head_bytes: out.len() + 1,
        max_headers: 10_000,
    };
    let fwd = match parse_request_head(&out, &big, &mut Vec::new()) {
        Ok(Some(f)) => f,
        other => panic!(
            "forwarded head does not parse back: {other:?}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    let show = || String::from_utf8_lossy(&out).into_owned();
    assert_eq!(fwd.head_len, out.len(), "more than one head: {}", show());
    assert_eq!(
        fwd.method_span.get(&out),
        h.method_span.get(data),
        "{}",
        show()
    );
    let path = h.path.get(data);
    let want_path: &[u8] = if path.is_empty() { b"/" } else { path };
    assert_eq!(fwd.path.get(&out), want_path, "{}", show());
    assert!(
        fwd.authority.is_none(),
        "forwarded in origin-form: {}",
        show()
    );
    let routed = h.authority.or(h.host).map(|s| s.get(data));
    let sent = fwd.host.map(|s| s.get(&out));
    assert_eq!(
        sent.filter(|s| !s.is_empty()),
        routed.filter(|s| !s.is_empty()),
        "upstream sees another host than the one routed on: {}",
        show()
    );
    assert_eq!(fwd.framing, h.framing, "framing changed: {}", show());
    let cls: Vec<&[u8]> = fwd
        .headers
        .iter()
        .filter(|f| f.kind == HeaderKind::ContentLength)
        .map(|f| f.value.get(&out))
        .collect();
    assert!(
        cls.len() <= 1,
        "several Content-Length fields forwarded: {}",
        show()
    );
    if let Some(v) = cls.first() {
        assert!(
            !v.is_empty() && v.iter().all(u8::is_ascii_digit),
            "Content-Length forwarded as a list: {}",
            show()
        );
    }

    // The same head towards an HTTP/2 upstream.
    if let Some(req) = ringmesh_engine::http1::to_request(&out, "http", false) {
        assert_eq!(req.method().as_str().as_bytes(), h.method_span.get(data));
        if path == b"*" {
            // Asterisk-form: h2 sends `:path: *`.
            assert_eq!(req.uri().path_and_query().map(|p| p.as_str()), Some("*"));
        } else {
            assert_eq!(req.uri().path().as_bytes(), want_path, "{}", show());
        }
        if let Some(host) = sent.filter(|s| !s.is_empty()) {
            assert_eq!(
                req.uri().authority().map(|a| a.as_str().as_bytes()),
                Some(host)
            );
        }
    }
}
