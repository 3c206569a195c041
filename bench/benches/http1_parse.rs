//! Cost of the HTTP/1 codec work done on every request: parsing heads and walking a
//! chunked body. Heads are parsed the way the proxy does it, recycling the header Vec.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmesh_engine::http1::codec::{
    parse_request_head, parse_response_head, ChunkedState, Header, Limits, Method,
};

/// What `curl https://api.example.com/v1/items?id=42` sends.
const CURL_GET: &[u8] = b"GET /v1/items?id=42 HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\
\r\n";

/// A browser fetching a script: 12 header fields, ~700 bytes.
const BROWSER_GET: &[u8] = b"GET /static/js/app.3f9c2b1e.js?v=20240611 HTTP/1.1\r\n\
Host: www.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"125\", \"Not.A/Brand\";v=\"24\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Accept: */*\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Referer: https://www.example.com/products/widgets?page=2\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; _ga=GA1.2.1234567890.1718000000\r\n\
\r\n";

/// A typical upstream answer to an API call.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 11 Jun 2024 10:15:42 GMT\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1834\r\n\
Connection: keep-alive\r\n\
Cache-Control: private, max-age=0, must-revalidate\r\n\
ETag: \"5f2b-18a3c9e4d2f\"\r\n\
Vary: Accept-Encoding\r\n\
X-Request-Id: 7b3e2a1c-9d4f-4e8a-b6c5-2f1e0d9c8b7a\r\n\
Server: example-app/2.3\r\n\
\r\n";

/// 64 KiB of payload as 16 chunks of 4 KiB, then the last chunk.
fn chunked_body() -> Vec<u8> {
    let mut body = Vec::with_capacity(64 * 1024 + 256);
    for _ in 0..16 {
        body.extend_from_slice(b"1000\r\n");
        body.resize(body.len() + 4096, b'x');
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

fn request_heads(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("http1_parse");
    for (name, buf) in [
        ("request_curl_get", CURL_GET),
        ("request_browser_get", BROWSER_GET),
    ] {
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(name, |b| {
            let mut scratch: Vec<Header> = Vec::with_capacity(32);
            b.iter(|| {
                let head = parse_request_head(black_box(buf), &limits, &mut scratch)
                    .expect("valid request")
                    .expect("complete request");
                let head_len = head.head_len;
                scratch = head.headers;
                head_len
            });
        });
    }
    group.finish();
}

fn response_heads(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("http1_parse");
    group.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    group.bench_function("response_typical", |b| {
        let mut scratch: Vec<Header> = Vec::with_capacity(32);
        b.iter(|| {
            let head = parse_response_head(black_box(RESPONSE), &limits, Method::Get, &mut scratch)
                .expect("valid response")
                .expect("complete response");
            let head_len = head.head_len;
            scratch = head.headers;
            head_len
        });
    });
    group.finish();
}

fn chunked(c: &mut Criterion) {
    let body = chunked_body();
    let mut group = c.benchmark_group("http1_parse");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("chunked_feed_64k", |b| {
        b.iter(|| {
            let mut state = ChunkedState::default();
            let progress = state.feed(black_box(&body)).expect("valid body");
            assert!(progress.done);
            progress.consumed
        });
    });
    // The same body as it arrives from a socket, in 16 KiB reads.
    group.bench_function("chunked_feed_64k_16k_reads", |b| {
        b.iter(|| {
            let mut state = ChunkedState::default();
            let mut consumed = 0;
            for read in black_box(&body).chunks(16 * 1024) {
                consumed += state.feed(read).expect("valid body").consumed;
            }
            assert!(state.is_done());
            consumed
        });
    });
    group.finish();
}

criterion_group!(benches, request_heads, response_heads, chunked);
criterion_main!(benches);
