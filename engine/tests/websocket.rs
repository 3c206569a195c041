//! Connection upgrades (WebSocket): tunnel after 101, no tunnel without it.

mod common;
use common::*;

use std::thread;
use std::time::Duration;

fn config(port: u16, up: &Upstream) -> String {
    format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: ws
        domains: ["ws.test"]
        routes:
          - name: ws
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: ws }}
clusters:
{}"#,
        cluster_yaml("ws", &[up.addr])
    )
}

fn upgrade_request(path: &str) -> Req {
    Req::get(path)
        .host("ws.test")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "13")
}

#[test]
fn websocket_upgrade_tunnels_bytes_both_ways() {
    let up = Upstream::start("ws");
    let port = free_port();
    let _proxy = Proxy::start(&config(port, &up));
    let mut c = Conn::connect(local(port));
    let r = c.request(&upgrade_request("/chat")).unwrap();
    assert_eq!(r.status, 101, "{:?}", r.headers);
    assert!(
        r.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "{:?}",
        r.headers
    );
    assert!(
        r.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "101 must carry Connection: upgrade: {:?}",
        r.headers
    );
    let seen = up.last_request("/chat").unwrap();
    assert!(
        seen.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "upstream must see Upgrade: {:?}",
        seen.headers
    );

    // Arbitrary bytes, including ones that look like HTTP, come back verbatim.
    for msg in [
        &b"\x81\x85hello"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\xff\r\n\r\n",
    ] {
        c.send(msg).unwrap();
        let back = c.read_exact_bytes(msg.len()).unwrap();
        assert_eq!(back, msg);
    }
    // A bigger burst (1 MiB) written from another thread while we read.
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut writer = c.stream.try_clone().unwrap();
    let to_send = big.clone();
    let t = thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&to_send).unwrap();
    });
    let back = c.read_exact_bytes(big.len()).unwrap();
    t.join().unwrap();
    assert!(back == big, "1 MiB echoed through the tunnel differs");

    // Client half-closes: the upstream sees EOF and closes; the client sees EOF.
    c.shutdown_write();
    c.assert_closed("after the client closed its side of the tunnel");
}

#[test]
fn refused_upgrade_does_not_become_a_tunnel() {
    let up = Upstream::start("ws");
    let port = free_port();
    let _proxy = Proxy::start(&config(port, &up));
    let mut c = Conn::connect(local(port));
    // The upstream answers 200 to /refuse. The bytes after the request are a second
    // request for a Host no virtual host serves: the proxy must parse it (404
    // no_route) or reject it, never pipe it raw to the upstream.
    let mut bytes = upgrade_request("/refuse").to_bytes();
    bytes.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: internal.test\r\n\r\n");
    c.send(&bytes).unwrap();
    let r = c.read_response("GET").unwrap();
    assert_eq!(
        r.status,
        200,
        "upstream refused the upgrade with 200: {}",
        r.text()
    );
    assert_eq!(r.upstream(), Some("ws"));
    match c.read_response("GET") {
        Ok(second) => {
            assert_eq!(
                second.status,
                404,
                "second request: {:?} {}",
                second.headers,
                second.text()
            );
            assert_eq!(second.error_reason(), Some("no_route"));
        }
        Err(e) => eprintln!("proxy closed/rejected the connection after the refused upgrade: {e}"),
    }
    thread::sleep(Duration::from_millis(300));
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert!(
        !paths.iter().any(|p| p == "/smuggled"),
        "raw bytes were forwarded to the upstream: it saw {paths:?}"
    );
    assert_eq!(paths, vec!["/refuse".to_string()]);
}
