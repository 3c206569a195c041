//! HTTP/1.1 semantics through the proxy: bodiless responses, 100-continue,
//! Connection: close, request ids, forwarding headers, hop-by-hop headers.

mod common;
use common::*;

use std::net::SocketAddr;
use std::time::Duration;

fn start() -> (Upstream, Proxy, SocketAddr) {
    let up = Upstream::start("up");
    let port = free_port();
    let proxy = Proxy::start(&catch_all(port, "up", &[up.addr]));
    (up, proxy, local(port))
}

#[test]
fn head_204_304_have_no_body() {
    let (_up, _p, web) = start();
    let mut c = Conn::connect(web);
    // Each bodiless response is followed on the same connection by a GET whose
    // response must parse cleanly: any stray body byte would corrupt it.
    let cases = [
        ("HEAD", "/bytes/1000"),
        ("HEAD", "/chunked/1000"),
        ("GET", "/status/204"),
        ("GET", "/status/304"),
        ("HEAD", "/x"),
    ];
    for (method, path) in cases {
        let r = c
            .request(&Req::new(method, path))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let want = path
            .strip_prefix("/status/")
            .map_or(200, |c| c.parse().unwrap());
        assert_eq!(r.status, want, "{method} {path}");
        if method == "HEAD" && path == "/bytes/1000" {
            assert_eq!(
                r.header("content-length"),
                Some("1000"),
                "HEAD keeps the GET's content-length"
            );
        }
        if want == 204 {
            assert_eq!(
                r.header("transfer-encoding"),
                None,
                "204 with transfer-encoding: {:?}",
                r.headers
            );
        }
        let next = c
            .request(&Req::get("/next"))
            .unwrap_or_else(|e| panic!("GET after {method} {path}: {e}"));
        assert_eq!(next.status, 200, "GET after {method} {path}");
        assert_eq!(
            next.json()["path"],
            "/next",
            "GET after {method} {path}: stray body bytes?"
        );
    }
}

#[test]
fn expect_100_continue_with_curl() {
    let (up, _p, web) = start();
    let dir = scratch_dir("expect");
    let file = dir.join("body.bin");
    let mut f = std::fs::File::create(&file).unwrap();
    write_pattern(&mut f, 3 * 1024 * 1024).unwrap();
    drop(f);
    let url = format!("http://{web}/upload");
    let data = format!("@{}", file.display());
    let t0 = std::time::Instant::now();
    let out = curl(&[
        "-sS",
        "--http1.1",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &data,
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    let took = t0.elapsed();
    assert_eq!(
        out.status.map(|s| s.success()),
        Some(true),
        "curl failed: {}",
        out.stderr
    );
    let (body, code) = out.stdout.rsplit_once('\n').unwrap();
    assert_eq!(code, "200", "{}", out.stdout);
    let j: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(j["body_len"].as_u64(), Some(3 * 1024 * 1024));
    assert_eq!(
        j["body_sum"].as_str(),
        Some(pattern_checksum(3 * 1024 * 1024).as_str())
    );
    assert_eq!(up.request_count(), 1);
    eprintln!("curl with Expect: 100-continue took {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn expect_100_continue_gets_interim_response() {
    // A client waiting for 100 Continue before sending the body must get it
    // (from the proxy or relayed from the upstream), then the final 200.
    let (_up, _p, web) = start();
    let mut c = Conn::connect(web);
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    c.set_read_timeout(Duration::from_secs(3));
    let (start, _) = c
        .read_head_raw()
        .expect("expected an interim 100 Continue within 3 s");
    assert!(
        start.starts_with("HTTP/1.1 100"),
        "got {start:?} instead of 100 Continue"
    );
    c.set_read_timeout(Duration::from_secs(10));
    c.send(b"hello").unwrap();
    let r = c.read_response("POST").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_len"], 5);
}

#[test]
fn connection_close_is_honoured() {
    let (up, _p, web) = start();
    let mut c = Conn::connect(web);
    let r = c
        .request(&Req::get("/a").header("Connection", "close"))
        .unwrap();
    assert_eq!(r.status, 200);
    c.assert_closed("after a request with Connection: close");
    // The upstream connection was not closed because of the client's header.
    let seen = up.last_request("/a").unwrap();
    assert!(
        !seen
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "client's Connection: close leaked to the upstream: {:?}",
        seen.headers
    );
    // HTTP/1.0 without keep-alive: also closed after the response.
    let mut c = Conn::connect(web);
    c.send(b"GET /b HTTP/1.0\r\nHost: a\r\n\r\n").unwrap();
    let r = c.read_response("GET").unwrap();
    assert_eq!(r.status, 200);
    c.assert_closed("after an HTTP/1.0 request");
    // Upstream answers close-delimited and closes. The proxy either re-frames the
    // body (chunked/content-length) and keeps the client connection usable, or
    // passes it through close-delimited and must then close the client connection.
    let mut c = Conn::connect(web);
    let r = c.request(&Req::get("/close")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "closed-body from up");
    let framed = r.header("content-length").is_some() || r.header("transfer-encoding").is_some();
    let says_close = r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if framed && !says_close {
        let r = c.request(&Req::get("/again")).unwrap();
        assert_eq!(
            r.status, 200,
            "client connection after the upstream closed its own"
        );
    } else {
        c.assert_closed("after a close-delimited response");
    }
}

#[test]
fn request_id_generated_or_kept() {
    let (up, _p, web) = start();
    let r = get(web, "localhost", "/no-id");
    assert_eq!(r.status, 200);
    let seen = up.last_request("/no-id").unwrap();
    let generated = seen
        .header("x-request-id")
        .expect("upstream must get a generated x-request-id");
    assert!(
        generated.len() >= 8,
        "generated id {generated:?} looks too short"
    );
    assert_eq!(
        r.header("x-request-id"),
        Some(generated),
        "response echoes the generated id"
    );

    let r2 = get(web, "localhost", "/no-id-2");
    let second = up.last_request("/no-id-2").unwrap();
    assert_ne!(
        second.header("x-request-id"),
        Some(generated),
        "generated ids must differ"
    );
    assert_eq!(r2.header("x-request-id"), second.header("x-request-id"));

    let r = send(
        web,
        &Req::get("/with-id").header("X-Request-Id", "my-id-123"),
    );
    let seen = up.last_request("/with-id").unwrap();
    assert_eq!(seen.headers_all("x-request-id"), vec!["my-id-123"]);
    assert_eq!(r.header("x-request-id"), Some("my-id-123"));
}

#[test]
fn forwarding_headers() {
    let (up, _p, web) = start();
    get(web, "localhost", "/xff");
    let seen = up.last_request("/xff").unwrap();
    let xff = seen.headers_all("x-forwarded-for").join(",");
    assert!(xff.contains("127.0.0.1"), "x-forwarded-for {xff:?}");
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));

    send(
        web,
        &Req::get("/xff2").header("X-Forwarded-For", "10.1.2.3"),
    );
    let seen = up.last_request("/xff2").unwrap();
    let xff: Vec<String> = seen
        .headers_all("x-forwarded-for")
        .join(",")
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    assert_eq!(
        xff,
        vec!["10.1.2.3", "127.0.0.1"],
        "client IP appended to the existing list"
    );
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let (up, _p, web) = start();
    let r = send(
        web,
        &Req::get("/hop")
            .header("Connection", "keep-alive, X-Hop")
            .header("X-Hop", "1")
            .header("Keep-Alive", "timeout=5")
            .header("X-End-To-End", "1"),
    );
    assert_eq!(r.status, 200);
    let seen = up.last_request("/hop").unwrap();
    for h in ["x-hop", "keep-alive"] {
        assert_eq!(
            seen.header(h),
            None,
            "hop-by-hop header {h} reached the upstream: {:?}",
            seen.headers
        );
    }
    if let Some(c) = seen.header("connection") {
        assert!(!c.to_ascii_lowercase().contains("x-hop"), "Connection: {c}");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("1"));
    assert_eq!(
        seen.header("host"),
        Some("localhost"),
        "Host is passed through"
    );
}

#[test]
fn chunked_response_trailers_are_forwarded() {
    let (_up, _p, web) = start();
    let r = get(web, "localhost", "/chunked/100000");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 100_000);
    let mut check = PatternCheck::new();
    check.update(&r.body);
    assert_eq!(check.first_mismatch, None);
    assert_eq!(
        r.trailers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-trailer"))
            .map(|(_, v)| v.as_str()),
        Some("done"),
        "trailers: {:?}",
        r.trailers
    );
}

#[test]
fn close_delimited_upstream_response_reaches_client() {
    let (_up, _p, web) = start();
    let r = get(web, "localhost", "/close");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "closed-body from up");
}

#[test]
fn http10_client_gets_chunked_upstream_body_dechunked() {
    let (_up, _p, web) = start();
    let mut c = Conn::connect(web);
    c.send(b"GET /chunked/5000 HTTP/1.0\r\nHost: a\r\n\r\n")
        .unwrap();
    let raw = c.read_until_closed(Duration::from_secs(5)).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        !head.contains("transfer-encoding"),
        "an HTTP/1.0 client cannot read chunked: {head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    let body = &raw[split..];
    assert_eq!(body.len(), 5000, "the payload alone, close-delimited");
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_byte(i as u64)));
}
