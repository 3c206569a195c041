//! HTTP/1.1 response heads from upstreams: `parse_response_head` for the
//! request method the first byte picks, and the head the proxy sends
//! downstream (`http1::head::downstream_response`).
//!
//! Properties: never panics; spans inside the head; the framing follows RFC
//! 9112 §6.3 for that method and status (no body for HEAD, 1xx, 204, 304 and
//! a 2xx to CONNECT; never CL with TE; keep-alive never on a close-delimited
//! body or a 101); reading incrementally agrees with reading at once; the
//! head sent downstream is one head that parses back with the same status
//! and body framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmesh_engine::http1::codec::{
    parse_response_head, BodyFraming, HeaderKind, Limits, Method, ResponseHead, Span,
};
use ringmesh_engine::http1::head::{downstream_response, ResponseEdits};
use ringmesh_engine::router::{Action, Direct, PathMatcher, Route};
use ringmesh_fuzz::split_points;

const METHODS: [Method; 10] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Options,
    Method::Patch,
    Method::Connect,
    Method::Trace,
    Method::Other,
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let method = METHODS[usize::from(selector) % METHODS.len()];
    let limits = Limits {
        max_head_bytes: 64 * 1024,
        max_headers: 200,
    };
    let whole = parse_response_head(data, &limits, method, &mut Vec::new());
    if let Ok(Some(head)) = &whole {
        check_head(data, head, method);
        for k in split_points(data, head.head_len) {
            assert_eq!(
                parse_response_head(&data[..k], &limits, method, &mut Vec::new()),
                Ok(None),
                "prefix of {k} bytes of a {}-byte head",
                head.head_len
            );
        }
        let alone = parse_response_head(&data[..head.head_len], &limits, method, &mut Vec::new());
        assert_eq!(alone.as_ref().ok().and_then(Option::as_ref), Some(head));
        check_downstream(data, head, method);
    }
    if let Ok(None) = &whole {
        for k in split_points(data, data.len()) {
            assert!(
                parse_response_head(&data[..k], &limits, method, &mut Vec::new()).is_ok(),
                "prefix of {k} bytes refused but the whole input is only incomplete"
            );
        }
    }
});

fn inside(s: Span, end: usize) {
    assert!(
        s.start <= s.end && s.end as usize <= end,
        "span {s:?} past {end}"
    );
}

fn check_head(data: &[u8], h: &ResponseHead, method: Method) {
    let n = h.head_len;
    assert!(n <= data.len());
    assert_eq!(&data[n - 4..n], b"\r\n\r\n");
    assert!((100..=999).contains(&h.status));
    assert!(h.version_minor <= 1);
    inside(h.reason, n);
    for hd in &h.headers {
        inside(hd.name, n);
        inside(hd.value, n);
    }
    let cl = h
        .headers
        .iter()
        .filter(|f| f.kind == HeaderKind::ContentLength)
        .count();
    let te = h
        .headers
        .iter()
        .any(|f| f.kind == HeaderKind::TransferEncoding);
    assert!(
        !(te && cl > 0),
        "Content-Length with Transfer-Encoding accepted"
    );
    assert!(
        !(te && h.version_minor == 0),
        "Transfer-Encoding on HTTP/1.0"
    );
    let no_body = method == Method::Head
        || (100..200).contains(&h.status)
        || h.status == 204
        || h.status == 304
        || (method == Method::Connect && (200..300).contains(&h.status));
    if no_body {
        assert_eq!(h.framing, BodyFraming::None);
    } else {
        assert_ne!(h.framing, BodyFraming::None);
        match h.framing {
            BodyFraming::Chunked => assert!(te),
            BodyFraming::ContentLength(_) => assert!(cl > 0 && !te),
            BodyFraming::UntilClose => assert!(!h.keep_alive),
            BodyFraming::None => unreachable!(),
        }
    }
    if h.status == 101 {
        assert!(!h.keep_alive);
    }
}

fn check_downstream(data: &[u8], h: &ResponseHead, method: Method) {
    let route = Route {
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
        request_headers_to_add: Vec::new(),
        request_headers_to_remove: Vec::new(),
        response_headers_to_add: vec![(b"x-added".as_slice().into(), b"1".as_slice().into())],
        response_headers_to_remove: vec![b"x-remove-me".as_slice().into()],
    };
    let mut out = Vec::new();
    downstream_response(
        &mut out,
        data,
        h,
        &ResponseEdits {
            route: &route,
            request_id: b"0123456789abcdef0123456789abcdef",
            close: !h.keep_alive,
            http10_keep_alive: false,
            upgrade: false,
            dechunk: false,
        },
    );
    let show = || String::from_utf8_lossy(&out).into_owned();
    let back = parse_response_head(
        &out,
        &Limits {
            max_head_bytes: out.len() + 1,
            max_headers: 10_000,
        },
        method,
        &mut Vec::new(),
    );
    let back = match back {
        Ok(Some(b)) => b,
        other => panic!("downstream head does not parse back: {other:?}\n{}", show()),
    };
    assert_eq!(back.head_len, out.len(), "more than one head: {}", show());
    assert_eq!(back.status, h.status);
    // A close-delimited body stays close-delimited (connection: close is sent).
    assert_eq!(back.framing, h.framing, "framing changed: {}", show());
}
