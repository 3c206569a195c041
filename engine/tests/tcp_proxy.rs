//! L4 TCP listeners: byte-exact relay, half-close, idle timeout, connect failure.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn tcp_proxy(endpoint: SocketAddr, idle: &str) -> (Proxy, SocketAddr) {
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"listeners:
  - name: db
    address: 127.0.0.1:{port}
    protocol: tcp
    cluster: backend
    idle_timeout: {idle}
clusters:
{}"#,
        cluster_yaml("backend", &[endpoint]),
    ));
    (proxy, local(port))
}

/// Echoes everything until EOF, then closes.
fn echo_upstream() -> Upstream {
    Upstream::raw("echo", |mut s, _| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    })
}

#[test]
fn tcp_echo_through_proxy() {
    let up = echo_upstream();
    let (proxy, addr) = tcp_proxy(up.addr, "30s");
    let mut c = Conn::connect(addr);
    for msg in [
        &b"ping"[..],
        b"\x00\x01\x02\xff",
        b"GET / HTTP/1.1\r\n\r\n",
        b"SELECT 1;",
    ] {
        c.send(msg).unwrap();
        assert_eq!(c.read_exact_bytes(msg.len()).unwrap(), msg);
    }
    // 4 MiB in both directions at once.
    let big: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(7) % 256) as u8)
        .collect();
    let mut w = c.stream.try_clone().unwrap();
    let to_send = big.clone();
    let t = thread::spawn(move || w.write_all(&to_send).unwrap());
    let back = c.read_exact_bytes(big.len()).unwrap();
    t.join().unwrap();
    assert!(back == big, "4 MiB echoed through the TCP listener differ");
    // Several concurrent connections.
    let hs: Vec<_> = (0..8)
        .map(|i| {
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                let msg = format!("conn-{i}").repeat(100);
                for _ in 0..20 {
                    c.send(msg.as_bytes()).unwrap();
                    assert_eq!(c.read_exact_bytes(msg.len()).unwrap(), msg.as_bytes());
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(up.accepted(), 9);
    let text = proxy.wait_metric(
        "ringmesh_downstream_connections_total{listener=\"db\"}",
        Duration::from_secs(3),
        |v| v >= 9.0,
    );
    assert_eq!(
        metric_value(
            &text,
            "ringmesh_downstream_connections_total{listener=\"db\"}"
        ),
        Some(9.0)
    );
}

#[test]
fn tcp_half_close_is_propagated() {
    // The upstream answers only after it sees EOF from the client.
    let up = Upstream::raw("halfclose", |mut s, _| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut n = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(_) => return,
            }
        }
        thread::sleep(Duration::from_millis(200));
        let _ = s.write_all(format!("bye:{n}").as_bytes());
        let _ = s.write_all(&vec![b'z'; 100_000]);
    });
    let (_proxy, addr) = tcp_proxy(up.addr, "30s");
    let mut c = Conn::connect(addr);
    c.send(b"hello world").unwrap();
    c.shutdown_write();
    let got = c
        .read_until_closed(Duration::from_secs(5))
        .expect("reply after half-close");
    let text = String::from_utf8_lossy(&got[..got.len().min(16)]).to_string();
    assert!(
        text.starts_with("bye:11"),
        "got {text:?} ({} bytes)",
        got.len()
    );
    assert_eq!(
        got.len(),
        "bye:11".len() + 100_000,
        "whole reply delivered after the client's half-close"
    );
}

#[test]
fn tcp_upstream_half_close_is_propagated() {
    // The upstream sends and half-closes; the client still sends afterwards.
    let received = Arc::new(AtomicUsize::new(usize::MAX));
    let seen = received.clone();
    let up = Upstream::raw("serverfirst", move |mut s, _| {
        let _ = s.write_all(b"greeting");
        let _ = s.shutdown(Shutdown::Write);
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        seen.store(got.len(), Ordering::SeqCst);
    });
    let (_proxy, addr) = tcp_proxy(up.addr, "30s");
    let mut c = Conn::connect(addr);
    let got = c
        .read_until_closed(Duration::from_secs(5))
        .expect("greeting then EOF");
    assert_eq!(got, b"greeting");
    // Our direction is still open.
    c.send(b"after-eof").unwrap();
    c.shutdown_write();
    assert!(
        wait_until(Duration::from_secs(3), || received.load(Ordering::SeqCst)
            == 9),
        "upstream did not receive the client's bytes sent after its own half-close"
    );
}

#[test]
fn tcp_idle_timeout_closes() {
    let up = echo_upstream();
    let (_proxy, addr) = tcp_proxy(up.addr, "1s");
    let mut c = Conn::connect(addr);
    // Activity every 300 ms for 2 s keeps the connection open.
    for i in 0..7 {
        let msg = format!("tick{i}");
        c.send(msg.as_bytes()).unwrap();
        assert_eq!(
            c.read_exact_bytes(msg.len()).unwrap(),
            msg.as_bytes(),
            "connection closed despite activity"
        );
        thread::sleep(Duration::from_millis(300));
    }
    let t0 = Instant::now();
    let rest = c
        .read_until_closed(Duration::from_secs(5))
        .expect("idle connection closed");
    let idle = t0.elapsed();
    assert!(rest.is_empty());
    assert!(
        idle >= Duration::from_millis(500),
        "closed after only {idle:?} idle (timeout 1s)"
    );
    assert!(
        idle < Duration::from_millis(3000),
        "closed after {idle:?} idle (timeout 1s)"
    );
}

#[test]
fn tcp_connect_failure_closes_client() {
    let (_proxy, addr) = tcp_proxy(dead_addr(), "30s");
    let mut c = Conn::connect(addr);
    let t0 = Instant::now();
    let _ = c.send(b"hello?");
    let rest = c
        .read_until_closed(Duration::from_secs(5))
        .expect("client connection closed when the upstream is down");
    assert!(rest.is_empty(), "got bytes {rest:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        t0.elapsed()
    );
}
