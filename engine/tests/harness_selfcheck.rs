//! Checks the test harness itself (client, test upstream, checksums) without the
//! proxy, so a failure elsewhere can be blamed on the proxy with confidence.

mod common;
use common::*;

use std::io::Write;

#[test]
fn upstream_behaviours_direct() {
    let up = Upstream::start("u");
    let mut c = Conn::connect(up.addr);
    let r = c.request(&Req::get("/hello?x=1")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream(), Some("u"));
    assert_eq!(r.json()["path"], "/hello?x=1");
    let r = c.request(&Req::get("/status/418")).unwrap();
    assert_eq!(r.status, 418);
    let r = c.request(&Req::get("/status/204")).unwrap();
    assert_eq!((r.status, r.body.len()), (204, 0));
    let r = c.request(&Req::new("HEAD", "/bytes/10")).unwrap();
    assert_eq!(
        (r.status, r.body.len(), r.header("content-length")),
        (200, 0, Some("10"))
    );
    let r = c.request(&Req::get("/bytes/100000")).unwrap();
    let mut pc = PatternCheck::new();
    pc.update(&r.body);
    assert_eq!((pc.offset, pc.first_mismatch), (100_000, None));
    let r = c.request(&Req::get("/chunked/70000")).unwrap();
    let mut pc = PatternCheck::new();
    pc.update(&r.body);
    assert_eq!((pc.offset, pc.first_mismatch), (70_000, None));
    assert_eq!(
        r.trailers,
        vec![("x-trailer".to_string(), "done".to_string())]
    );
    let body = vec![7u8; 12345];
    let r = c
        .request(&Req::new("POST", "/up").body(body.clone()))
        .unwrap();
    let mut sum = Checksum::new();
    sum.update(&body);
    assert_eq!(r.json()["body_len"], 12345);
    assert_eq!(r.json()["body_sum"].as_str(), Some(sum.hex().as_str()));
    c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n").unwrap();
    let r = c.read_response("POST").unwrap();
    assert_eq!(r.json()["body_len"], 5);
    let r = c.request(&Req::get("/close")).unwrap();
    assert_eq!(r.text(), "closed-body from u");
    assert_eq!(up.accepted(), 1);
    assert_eq!(up.request_count(), 9);
    assert_eq!(up.requests()[0].conn, 0);
}

#[test]
fn checksum_is_independent_of_split_points() {
    let data: Vec<u8> = (0..100_003u32).map(|i| (i * 31 % 256) as u8).collect();
    let mut whole = Checksum::new();
    whole.update(&data);
    for step in [1usize, 3, 7, 8, 9, 4096, 65_537] {
        let mut parts = Checksum::new();
        for piece in data.chunks(step) {
            parts.update(piece);
        }
        assert_eq!(parts.hex(), whole.hex(), "step {step}");
    }
    let mut p = Checksum::new();
    let mut v = Vec::new();
    write_pattern(&mut v, 1_000_000).unwrap();
    p.update(&v);
    assert_eq!(p.hex(), pattern_checksum(1_000_000));
    let mut other = v.clone();
    other[999_999] ^= 1;
    let mut q = Checksum::new();
    q.update(&other);
    assert_ne!(q.hex(), p.hex());
}

#[test]
fn upstream_expect_upgrade_and_raw() {
    let up = Upstream::start("u");
    let mut c = Conn::connect(up.addr);
    c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let (start, _) = c.read_head_raw().unwrap();
    assert!(start.starts_with("HTTP/1.1 100"));
    c.send(b"abc").unwrap();
    assert_eq!(c.read_response("POST").unwrap().json()["body_len"], 3);
    let r = c
        .request(
            &Req::get("/ws")
                .header("Connection", "Upgrade")
                .header("Upgrade", "websocket"),
        )
        .unwrap();
    assert_eq!(r.status, 101);
    c.send(b"raw bytes").unwrap();
    assert_eq!(c.read_exact_bytes(9).unwrap(), b"raw bytes");
    c.shutdown_write();
    c.assert_closed("ws echo after client EOF");

    let raw = Upstream::raw("raw", |mut s, i| {
        if read_request_head(&mut s).is_some() {
            let _ =
                s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{i}").as_bytes());
        }
    });
    assert_eq!(send(raw.addr, &Req::get("/")).text(), "0");
    assert_eq!(send(raw.addr, &Req::get("/")).text(), "1");
    assert!(connect_refused(dead_addr()));
}

#[test]
fn curl_against_upstream_directly() {
    let up = Upstream::start("u");
    let out = curl(&["-sS", "-i", &format!("http://{}/status/201", up.addr)]);
    assert!(
        out.stdout.starts_with("HTTP/1.1 201"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    let out = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        &format!("http://{}/chunked/5000", up.addr),
    ]);
    assert_eq!(out.stdout, "200 5000");
}
