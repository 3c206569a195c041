//! The HTTP/2 request path through our code: arbitrary client bytes after
//! the preface drive an `h2` server (tokio current-thread runtime, in-memory
//! duplex) set up as the proxy sets up its own; every request it accepts goes
//! through our conversions, and the same bytes through our frame `Guard`.
//!
//! Properties: never panics, never hangs;
//! - `strip_hop_by_hop` leaves no connection-specific field (nor one a
//!   Connection header named), `te` only as `trailers`;
//! - `grpc_timeout` is bounded;
//! - the HTTP/1.1 head built for an HTTP/1.1 upstream (`h1_request_head`) is
//!   exactly one head that our own parser reads back with the same method,
//!   path, host and body framing (no second Content-Length, no request
//!   smuggled into an HTTP/1.1 upstream), and read into an HTTP/2 request
//!   again (`http1::to_request`) keeps method, path and authority;
//! - the chunked body we would write upstream (data chunks, `last_chunk`
//!   with the request's trailers) is a valid chunked body whose payload is
//!   the data and whose trailers our `Dechunker` reads back, however the
//!   body's end is cut;
//! - the `Guard`'s verdict does not depend on how the bytes were cut.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use ringmesh_engine::config::Http2Limits;
use ringmesh_engine::http1::codec::{self, BodyFraming, ChunkedState, Limits};
use ringmesh_engine::http2::io::Guard;
use ringmesh_engine::http2::proxy::{
    grpc_timeout, h1_request_head, last_chunk, strip_hop_by_hop, Dechunker,
};
use ringmesh_engine::http2::PREFACE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy's defaults (`limits.http2`), with small control limits so the
/// guard trips within an input.
fn limits() -> Http2Limits {
    Http2Limits {
        max_concurrent_streams: 100,
        initial_stream_window: 256 * 1024,
        initial_connection_window: 1024 * 1024,
        max_frame_size: 16 * 1024,
        max_header_list_size: 64 * 1024,
        max_rapid_resets: 4,
        rapid_reset_window: Duration::from_secs(10),
        max_control_frames_per_second: 16,
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut wire = PREFACE.to_vec();
    wire.extend_from_slice(data);
    check_guard(&wire);
    runtime().block_on(async {
        // A hang is a finding: libFuzzer's -timeout reports it.
        let _ = tokio::time::timeout(Duration::from_secs(5), serve(wire)).await;
    });
});

fn check_guard(wire: &[u8]) {
    let start = Instant::now();
    let l = limits();
    let whole = Guard::new(&l);
    whole.inspect(wire);
    let bytewise = Guard::new(&l);
    for b in wire {
        bytewise.inspect(std::slice::from_ref(b));
    }
    // The guard's windows are a second long; a slow run may cross one.
    if start.elapsed() < Duration::from_millis(500) {
        assert_eq!(
            whole.abuse(),
            bytewise.abuse(),
            "the verdict depends on the cuts"
        );
    }
}

async fn serve(wire: Vec<u8>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut rd, mut wr) = tokio::io::split(client);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&wire).await;
        let _ = wr.shutdown().await;
    });
    // Drain what the server writes so it never blocks on a full pipe.
    let reader = tokio::spawn(async move {
        let mut sink = [0u8; 4096];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    let l = limits();
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(l.max_concurrent_streams)
        .initial_window_size(l.initial_stream_window)
        .initial_connection_window_size(l.initial_connection_window)
        .max_frame_size(l.max_frame_size)
        .max_header_list_size(l.max_header_list_size)
        .max_send_buffer_size(l.max_frame_size as usize * 4);
    let Ok(mut conn) = b.handshake::<_, Bytes>(server).await else {
        return;
    };
    let mut streams = Vec::new();
    while let Some(accepted) = conn.accept().await {
        let Ok((req, respond)) = accepted else {
            break;
        };
        streams.push(tokio::spawn(handle(req, respond)));
    }
    for s in streams {
        let _ = s.await;
    }
    writer.abort();
    reader.abort();
}

async fn handle(req: http::Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let (mut parts, mut body) = req.into_parts();
    if let Some(t) = grpc_timeout(&parts.headers) {
        assert!(t <= Duration::from_secs(99_999_999 * 3600));
    }
    check_strip(&mut parts.headers);
    let eos = body.is_end_stream();
    let (head, chunked) = h1_request_head(&parts, eos);
    check_h1_head(&parts, &head, chunked);

    // The body and trailers as the client sent them.
    let mut data = Vec::new();
    let mut chunks = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else {
            return;
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        chunks.push(chunk);
    }
    let Ok(trailers) = body.trailers().await else {
        return;
    };
    if chunked {
        check_chunked(&chunks, &data, trailers.as_ref());
    }
    let _ = respond.send_response(http::Response::new(()), true);
}

fn check_strip(h: &mut HeaderMap) {
    let named: Vec<String> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    strip_hop_by_hop(h);
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
    ] {
        assert!(!h.contains_key(n), "{n} survives strip_hop_by_hop");
    }
    if let Some(te) = h.get(http::header::TE) {
        assert_eq!(te.as_bytes(), b"trailers");
    }
    for n in named {
        if n == "te" && h.get(http::header::TE).is_some_and(|v| v == "trailers") {
            continue;
        }
        assert!(
            !h.contains_key(n.as_str()),
            "{n}, named by Connection, survives"
        );
    }
}

fn check_h1_head(parts: &http::request::Parts, head: &[u8], chunked: bool) {
    let show = || String::from_utf8_lossy(head).into_owned();
    let limits = Limits {
        max_head_bytes: head.len() + 1,
        max_headers: 10_000,
    };
    let h = match codec::parse_request_head(head, &limits, &mut Vec::new()) {
        Ok(Some(h)) => h,
        other => panic!(
            "the HTTP/1.1 head does not parse back: {other:?}\n{}",
            show()
        ),
    };
    assert_eq!(h.head_len, head.len(), "more than one head: {}", show());
    assert_eq!(h.method_span.get(head), parts.method.as_str().as_bytes());
    assert_eq!(h.path.get(head), parts.uri.path().as_bytes(), "{}", show());
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| parts.headers.get(http::header::HOST).map(|v| v.as_bytes()))
        .unwrap_or_default();
    assert_eq!(h.host.map(|s| s.get(head)), Some(authority), "{}", show());
    let want = if chunked {
        BodyFraming::Chunked
    } else {
        match parts.headers.get(http::header::CONTENT_LENGTH) {
            Some(v) => BodyFraming::ContentLength(
                std::str::from_utf8(v.as_bytes())
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or_else(|| panic!("content-length {v:?} went upstream: {}", show())),
            ),
            None if parts.method == http::Method::GET || parts.method == http::Method::HEAD => {
                BodyFraming::None
            }
            None => BodyFraming::ContentLength(0),
        }
    };
    assert_eq!(h.framing, want, "{}", show());

    // The same head read into an HTTP/2 request (the HTTP/1 side's code).
    if let Some(req) = ringmesh_engine::http1::to_request(head, "http", false) {
        assert_eq!(req.method(), parts.method);
        assert_eq!(req.uri().path(), parts.uri.path());
        if !authority.is_empty() {
            assert_eq!(
                req.uri().authority().map(|a| a.as_str().as_bytes()),
                Some(authority)
            );
        }
    }
}

fn check_chunked(chunks: &[Bytes], data: &[u8], trailers: Option<&HeaderMap>) {
    // As h2_body_to_h1 writes it.
    let mut body = Vec::new();
    for c in chunks.iter().filter(|c| !c.is_empty()) {
        body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        body.extend_from_slice(c);
        body.extend_from_slice(b"\r\n");
    }
    last_chunk(&mut body, trailers);
    let mut st = ChunkedState::new(usize::MAX);
    let mut payload = Vec::new();
    let p = st
        .feed_with(&body, |d| payload.extend_from_slice(d))
        .unwrap_or_else(|e| panic!("we would send an invalid chunked body ({e}): {body:?}"));
    assert!(p.done && p.consumed == body.len());
    assert_eq!(payload, data);

    // Read back as an HTTP/1.1 upstream's body is (h1_body_to_h2), whole and
    // cut in two at every point of its end.
    let mut want: Vec<(String, Vec<u8>)> = trailers
        .into_iter()
        .flatten()
        .map(|(n, v)| (n.to_string(), v.as_bytes().trim_ascii().to_vec()))
        .collect();
    want.sort();
    let from = body.len().saturating_sub(64);
    for cut in std::iter::once(body.len()).chain(from..body.len()) {
        let mut d = Dechunker::new(usize::MAX);
        let mut payload = Vec::new();
        let (a, _) = d
            .feed(&body[..cut], &mut payload)
            .expect("our own chunked body");
        let (b, done) = d
            .feed(&body[cut..], &mut payload)
            .expect("our own chunked body");
        assert!(done && a + b == body.len() && payload == data);
        let mut got: Vec<(String, Vec<u8>)> = d
            .trailers()
            .iter()
            .flatten()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        got.sort();
        assert_eq!(
            got, want,
            "trailers lost on the way (cut at {cut}): {body:?}"
        );
    }
}
