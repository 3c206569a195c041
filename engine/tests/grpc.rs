//! gRPC through ringmesh-proxy: a real tonic Echo server (crate
//! ringmesh-testgrpc) behind one proxy or two chained over mesh mTLS, driven by
//! a real tonic client. Every call shape, statuses and messages end to end,
//! deadlines (route timeout, grpc-timeout), the health service, a 100 MB stream
//! in bounded memory, the grpc_status metric and a graceful drain.

mod common;
use common::pki::{id, Pki};
use common::*;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringmesh_testgrpc::{Background, EchoClient, EchoService, Req};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

/// Fails a test that takes longer than this, whatever it waits for.
const TEST_LIMIT: Duration = Duration::from_secs(60);

fn server(tag: &str) -> Background {
    Background::start(
        local(0),
        2,
        EchoService {
            tag: tag.as_bytes().to_vec(),
        },
    )
    .expect("start the tonic Echo server")
}

/// One proxy: listener `web` on a fresh port, one route `r` (with `route_extra`,
/// e.g. `, timeout: 200ms`) to cluster `grpc` (HTTP/2 to `upstream`).
/// `top`: YAML placed before `listeners:` (limits, access_log).
fn grpc_proxy(upstream: SocketAddr, route_extra: &str, top: &str) -> (Proxy, u16) {
    let port = free_port();
    let p = Proxy::start(&format!(
        r#"{top}listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: grpc{route_extra} }}
clusters:
  - name: grpc
    endpoints: ["{upstream}"]
    protocol: http2
"#
    ));
    (p, port)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a fresh runtime, failing after TEST_LIMIT.
fn run<F: std::future::Future>(f: F) -> F::Output {
    rt().block_on(async {
        tokio::time::timeout(TEST_LIMIT, f)
            .await
            .expect("the test ran out of time")
    })
}

async fn channel(port: u16) -> Channel {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("gRPC connect to 127.0.0.1:{port}: {e:?}"))
}

async fn client(port: u16) -> EchoClient<Channel> {
    EchoClient::new(channel(port).await).max_decoding_message_size(64 << 20)
}

fn req(payload: &[u8]) -> Req {
    Req {
        payload: payload.to_vec(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// The call shapes, each checked the way a user would.

async fn check_unary(c: &mut EchoClient<Channel>, tag: &str) {
    for i in 0..3 {
        let msg = format!("hello {i}");
        let r = c
            .unary(req(msg.as_bytes()))
            .await
            .unwrap_or_else(|s| panic!("unary {i}: {s:?}"));
        assert_eq!(
            String::from_utf8_lossy(&r.get_ref().payload),
            format!("{tag}{msg}")
        );
    }
}

async fn check_server_stream(c: &mut EchoClient<Channel>, count: u32, size: u32) {
    let mut s = c
        .server_stream(Req {
            count,
            size,
            ..Default::default()
        })
        .await
        .expect("server stream call")
        .into_inner();
    let mut next = 0u64;
    while let Some(m) = s.next().await {
        let m = m.unwrap_or_else(|st| panic!("server stream broke after {next} messages: {st:?}"));
        assert_eq!(m.seq, next, "messages out of order");
        assert_eq!(m.payload.len(), size as usize, "message {next} size");
        next += 1;
    }
    assert_eq!(next, u64::from(count), "messages received");
}

async fn check_client_stream(c: &mut EchoClient<Channel>) {
    let msgs: Vec<Req> = (0..1000u32)
        .map(|i| req(&vec![b'c'; (i % 100) as usize]))
        .collect();
    let bytes: u64 = (0..1000u64).map(|i| i % 100).sum();
    let r = c
        .client_stream(tokio_stream::iter(msgs))
        .await
        .expect("client stream call")
        .into_inner();
    assert_eq!(r.messages, 1000);
    assert_eq!(r.bytes, bytes);
}

async fn check_bidi(c: &mut EchoClient<Channel>, rounds: u64) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Req>(1);
    tx.send(req(b"0")).await.unwrap();
    let mut replies = c
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bidi call")
        .into_inner();
    for i in 0..rounds {
        let m = replies
            .next()
            .await
            .unwrap_or_else(|| panic!("bidi: stream ended after {i} replies"))
            .unwrap_or_else(|s| panic!("bidi: reply {i}: {s:?}"));
        assert_eq!(m.payload, i.to_string().as_bytes(), "reply {i} payload");
        assert_eq!(m.seq, i + 1, "reply {i} seq");
        if i + 1 < rounds {
            // The next message only after its predecessor's reply: interleaved.
            tx.send(req((i + 1).to_string().as_bytes())).await.unwrap();
        }
    }
    drop(tx);
    assert!(
        replies.next().await.is_none(),
        "bidi: the stream must end after the client's end"
    );
}

async fn check_failure_preserved(c: &mut EchoClient<Channel>) {
    let st = c
        .unary(Req {
            fail_code: 5,
            fail_message: "no such echo: item 42".into(),
            ..Default::default()
        })
        .await
        .expect_err("the server answers NOT_FOUND");
    assert_eq!(st.code(), Code::NotFound, "{st:?}");
    assert_eq!(st.message(), "no such echo: item 42");
}

async fn check_health(ch: Channel) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let mut h = HealthClient::new(ch);
    for svc in ["", "ringmesh.testing.v1.Echo"] {
        let r = h
            .check(HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check {svc:?}: {s:?}"));
        assert_eq!(
            r.get_ref().status,
            ServingStatus::Serving as i32,
            "health of {svc:?}"
        );
    }
}

/// The checks above straight against the server: the client side of these
/// tests works without any proxy.
#[test]
fn direct_to_server_sanity() {
    let s = server("s:");
    let port = s.addr.port();
    run(async {
        let mut c = client(port).await;
        check_unary(&mut c, "s:").await;
        check_server_stream(&mut c, 100, 10).await;
        check_client_stream(&mut c).await;
        check_bidi(&mut c, 20).await;
        check_failure_preserved(&mut c).await;
        check_health(channel(port).await).await;
    });
}

#[test]
fn unary_through_the_proxy() {
    let s = server("s1:");
    let (_p, port) = grpc_proxy(s.addr, "", "");
    run(async {
        let mut c = client(port).await;
        check_unary(&mut c, "s1:").await;
    });
}

#[test]
fn server_streaming_10000_messages_in_order() {
    let s = server("");
    let (_p, port) = grpc_proxy(s.addr, "", "");
    run(async {
        let mut c = client(port).await;
        check_server_stream(&mut c, 10_000, 32).await;
    });
}

#[test]
fn client_streaming_sum_arrives() {
    let s = server("");
    let (_p, port) = grpc_proxy(s.addr, "", "");
    run(async {
        let mut c = client(port).await;
        check_client_stream(&mut c).await;
    });
}

#[test]
fn bidi_streaming_1000_interleaved_round_trips() {
    let s = server("");
    let (_p, port) = grpc_proxy(s.addr, "", "");
    run(async {
        let mut c = client(port).await;
        check_bidi(&mut c, 1000).await;
    });
}

#[test]
fn grpc_status_and_message_are_preserved() {
    let s = server("");
    let (p, port) = grpc_proxy(s.addr, "", "");
    run(async {
        let mut c = client(port).await;
        check_failure_preserved(&mut c).await;
    });
    p.wait_metric(
        "ringmesh_grpc_responses_total{listener=\"web\",route=\"r\",cluster=\"grpc\",grpc_status=\"5\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    assert_metric_line(
        &p.metrics(),
        "ringmesh_grpc_responses_total{listener=\"web\",route=\"r\",cluster=\"grpc\",grpc_status=\"5\"} 1",
    );
}

#[test]
fn health_service_is_serving_through_the_proxy() {
    let s = server("");
    let (_p, port) = grpc_proxy(s.addr, "", "");
    run(async { check_health(channel(port).await).await });
}

#[test]
fn route_timeout_is_deadline_exceeded_and_counted() {
    let s = server("");
    let (p, port) = grpc_proxy(s.addr, ", timeout: 200ms", "");
    run(async {
        let mut c = client(port).await;
        let t = Instant::now();
        let st = c
            .unary(Req {
                payload: b"slow".to_vec(),
                delay_ms: 2000,
                ..Default::default()
            })
            .await
            .expect_err("the route timeout (200ms) is shorter than the server's delay (2s)");
        let took = t.elapsed();
        assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
        assert!(
            took < Duration::from_millis(1500),
            "DEADLINE_EXCEEDED came after {took:?}; the route timeout is 200ms"
        );
        // The connection and the proxy keep working.
        check_unary(&mut c, "").await;
    });
    let series = "ringmesh_grpc_responses_total{listener=\"web\",route=\"r\",cluster=\"grpc\",grpc_status=\"4\"}";
    let text = p.wait_metric(series, Duration::from_secs(5), |v| v >= 1.0);
    assert_metric_line(&text, &format!("{series} 1"));
    assert_metric_line(
        &text,
        "ringmesh_grpc_responses_total{listener=\"web\",route=\"r\",cluster=\"grpc\",grpc_status=\"0\"} 3",
    );
}

/// A tonic client's own deadline (`Request::set_timeout`, sent as
/// `grpc-timeout`) shorter than the server's delay: the call ends at the
/// deadline and the proxy keeps serving. tonic enforces the deadline itself
/// too and then reports CANCELLED ("Timeout expired") rather than
/// DEADLINE_EXCEEDED, so either code is the client's answer here; the proxy's
/// own handling of grpc-timeout is checked exactly with a raw client below.
#[test]
fn client_deadline_ends_the_call_and_the_proxy_keeps_serving() {
    let s = server("");
    // The route allows 10 s: only the client's grpc-timeout is short.
    let (_p, port) = grpc_proxy(s.addr, ", timeout: 10s", "");
    run(async {
        let mut c = client(port).await;
        let mut r = Request::new(Req {
            payload: b"slow".to_vec(),
            delay_ms: 3000,
            ..Default::default()
        });
        r.set_timeout(Duration::from_millis(300));
        let t = Instant::now();
        let st = c
            .unary(r)
            .await
            .expect_err("the deadline is 300ms, the server takes 3s");
        let took = t.elapsed();
        assert!(
            matches!(st.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{st:?}"
        );
        assert!(took < Duration::from_millis(1500), "answer after {took:?}");
        check_unary(&mut c, "").await;
        let mut c2 = client(port).await;
        check_unary(&mut c2, "").await;
    });
}

/// The proxy ends a call at its `grpc-timeout` (shorter than the route
/// timeout) with a trailers-only DEADLINE_EXCEEDED, even when the upstream
/// ignores the header (here the h2 test upstream, which sleeps 3 s).
#[test]
fn grpc_timeout_header_shortens_the_route_timeout() {
    let up = H2Upstream::start();
    let (_p, port) = grpc_proxy(up.addr, ", timeout: 10s", "");
    let mut c = common::h2raw::H2Client::connect(local(port)).unwrap();
    let t = Instant::now();
    c.send_request(
        1,
        "POST",
        "/sleep/3000",
        &[
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "300m"),
        ],
        Some(&[0, 0, 0, 0, 0]),
    )
    .unwrap();
    let r = c.read_response(1, Duration::from_secs(5)).unwrap();
    let took = t.elapsed();
    assert_eq!(r.status, Some(200), "{r:?}");
    let status = r.header("grpc-status").or(r.trailer("grpc-status"));
    assert_eq!(status, Some("4"), "{r:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "grpc-timeout 300m answered after {took:?}"
    );
    assert!(r.complete, "{r:?}");
}

#[test]
fn grpc_responses_metric_is_exact() {
    let s = server("");
    let (p, port) = grpc_proxy(s.addr, "", "");
    run(async {
        let mut c = client(port).await;
        for i in 0..7 {
            c.unary(req(b"m"))
                .await
                .unwrap_or_else(|s| panic!("unary {i}: {s:?}"));
        }
    });
    let series = "ringmesh_grpc_responses_total{listener=\"web\",route=\"r\",cluster=\"grpc\",grpc_status=\"0\"}";
    let text = p.wait_metric(series, Duration::from_secs(5), |v| v >= 7.0);
    assert_metric_line(&text, &format!("{series} 7"));
    assert_metric_line(
        &text,
        "ringmesh_requests_total{listener=\"web\",route=\"r\",cluster=\"grpc\",status_class=\"2xx\"} 7",
    );
}

/// Answers the proxy makes itself to gRPC clients are gRPC statuses (HTTP 200,
/// trailers-only): no upstream -> UNAVAILABLE, no route -> UNIMPLEMENTED.
#[test]
fn proxy_made_answers_are_grpc_statuses() {
    let port = free_port();
    let _p = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: echo
            match: {{ path: {{ prefix: /ringmesh.testing.v1.Echo/ }} }}
            route: {{ cluster: gone }}
clusters:
  - name: gone
    endpoints: ["{}"]
    protocol: http2
    connect_timeout: 1s
"#,
        dead_addr()
    ));
    run(async {
        let mut c = client(port).await;
        let st = c.unary(req(b"x")).await.expect_err("no upstream");
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(!st.message().is_empty(), "grpc-message says why: {st:?}");
        let mut h = tonic_health::pb::health_client::HealthClient::new(channel(port).await);
        let st = h
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect_err("no route for grpc.health.v1");
        assert_eq!(st.code(), Code::Unimplemented, "{st:?}");
    });
}

#[test]
fn server_stream_of_100mb_in_bounded_memory() {
    const COUNT: u32 = 1600;
    const SIZE: u32 = 64 * 1024;
    const GROWTH_LIMIT_KB: u64 = 60 * 1024;
    let s = server("");
    let (p, port) = grpc_proxy(s.addr, ", timeout: 60s", "");
    // Warm up (connections, pools, buffers) before the baseline.
    run(async {
        let mut c = client(port).await;
        check_unary(&mut c, "").await;
    });
    let before = p.rss_kb();
    let sampler = RssPeak::start(p.pid());
    let t = Instant::now();
    run(async {
        let mut c = client(port).await;
        check_server_stream(&mut c, COUNT, SIZE).await;
    });
    let took = t.elapsed();
    let peak = sampler.finish();
    eprintln!(
        "{} MB in {took:?}; proxy RSS {before} KiB -> peak {peak} KiB",
        u64::from(COUNT * SIZE) >> 20
    );
    assert!(peak > 0, "could not sample the proxy's RSS");
    assert!(
        peak.saturating_sub(before) < GROWTH_LIMIT_KB,
        "proxy RSS grew from {before} KiB to {peak} KiB during a 100 MB gRPC stream (limit +{GROWTH_LIMIT_KB} KiB): it buffers"
    );
}

#[test]
fn sigterm_lets_an_in_flight_call_finish() {
    let s = server("d:");
    let (p, port) = grpc_proxy(s.addr, "", "limits:\n  drain_timeout: 5s\n");
    run(async {
        let mut c = client(port).await;
        check_unary(&mut c, "d:").await;
        let call = tokio::spawn(async move {
            c.unary(Req {
                payload: b"late".to_vec(),
                delay_ms: 1500,
                ..Default::default()
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        p.sigterm();
        let r = call
            .await
            .unwrap()
            .unwrap_or_else(|s| panic!("the in-flight call failed during the drain: {s:?}"));
        assert_eq!(r.get_ref().payload, b"d:late");
    });
    let st = p.wait_exit(Duration::from_secs(7));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "exit after the drain: {st:?}"
    );
}

// ---------------------------------------------------------------------------
// Two proxies: client -> A (plaintext) -> mTLS mesh hop -> B -> server.

/// What a TCP relay saw of the first TLS record the client sent.
#[derive(Default)]
struct Tap {
    hellos: Mutex<Vec<Vec<u8>>>,
}

/// A TCP relay to `to` that keeps the first TLS record of every connection.
fn tap(to: SocketAddr) -> (Upstream, Arc<Tap>) {
    let seen = Arc::new(Tap::default());
    let seen2 = seen.clone();
    let up = Upstream::raw("tap", move |mut a: TcpStream, _| {
        let _ = a.set_read_timeout(Some(Duration::from_secs(30)));
        let Ok(mut b) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
            return;
        };
        let mut first = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        // The first record: 5-byte header, then its length.
        while first.len() < 5 || first.len() < 5 + u16::from_be_bytes([first[3], first[4]]) as usize
        {
            match a.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => first.extend_from_slice(&buf[..n]),
            }
        }
        seen2.hellos.lock().unwrap().push(first.clone());
        if b.write_all(&first).is_err() {
            return;
        }
        let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        let back = thread::spawn(move || {
            let _ = std::io::copy(&mut b2, &mut a2);
            let _ = a2.shutdown(Shutdown::Write);
        });
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(Shutdown::Write);
        let _ = back.join();
    });
    (up, seen)
}

/// The ALPN protocols offered in a TLS ClientHello record.
fn client_hello_alpn(rec: &[u8]) -> Option<Vec<String>> {
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h.to_vec())
    };
    let u16_at = |v: &[u8]| u16::from_be_bytes([v[0], v[1]]) as usize;
    let mut b = rec;
    let hdr = take(&mut b, 5)?;
    if hdr[0] != 0x16 {
        return None;
    }
    let hs = take(&mut b, 4)?;
    if hs[0] != 0x01 {
        return None;
    }
    take(&mut b, 2 + 32)?; // version, random
    let sid = take(&mut b, 1)?[0] as usize;
    take(&mut b, sid)?;
    let cs = u16_at(&take(&mut b, 2)?);
    take(&mut b, cs)?;
    let comp = take(&mut b, 1)?[0] as usize;
    take(&mut b, comp)?;
    let ext_len = u16_at(&take(&mut b, 2)?);
    let mut ext = &take(&mut b, ext_len)?[..];
    while ext.len() >= 4 {
        let h = take(&mut ext, 4)?;
        let (ty, len) = (u16_at(&h[0..2]), u16_at(&h[2..4]));
        let body = take(&mut ext, len)?;
        if ty == 16 {
            let mut l = &body[2..];
            let mut out = Vec::new();
            while let Some(&n) = l.first() {
                let p = take(&mut l, 1 + n as usize)?;
                out.push(String::from_utf8_lossy(&p[1..]).into_owned());
            }
            return Some(out);
        }
    }
    Some(Vec::new())
}

#[test]
fn two_proxies_over_the_mtls_mesh_hop() {
    let pki = Pki::new();
    let s = server("m:");
    let app = Upstream::start("app");
    // B: inbound mTLS; gRPC to the tonic server over h2c, the rest to an HTTP/1.1 app.
    let b_port = free_port();
    let b = Proxy::start(&format!(
        r#"{}listeners:
  - name: inbound
    address: 127.0.0.1:{b_port}
    mtls: {{ mode: strict }}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: grpc
            match: {{ path: {{ prefix: /ringmesh.testing.v1.Echo/ }} }}
            route: {{ cluster: grpc }}
          - name: app
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: app }}
clusters:
  - name: grpc
    endpoints: ["{}"]
    protocol: http2
  - name: app
    endpoints: ["{}"]
"#,
        pki.identity("b"),
        s.addr,
        app.addr
    ));
    let (relay, seen) = tap(local(b_port));
    // A: plaintext outbound; its cluster has no protocol set: the mesh hop is
    // HTTP/2 anyway.
    let a_port = free_port();
    let a = Proxy::start(&format!(
        r#"{}listeners:
  - name: outbound
    address: 127.0.0.1:{a_port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: mesh
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: b }}
clusters:
  - name: b
    endpoints: ["{}"]
    mtls: {{ identity: "{}" }}
"#,
        pki.identity("a"),
        relay.addr,
        id("b")
    ));
    run(async {
        let mut c = client(a_port).await;
        check_unary(&mut c, "m:").await;
        check_server_stream(&mut c, 2000, 100).await;
        check_client_stream(&mut c).await;
        check_bidi(&mut c, 200).await;
        check_failure_preserved(&mut c).await;
    });
    // An HTTP/1.1 client through the same hop reaches the HTTP/1.1 app, which
    // sees neither the mesh's protocol header nor anything odd.
    let r = curl(&[
        "-sS",
        "--http1.1",
        "-w",
        "\n%{http_version}",
        &format!("http://127.0.0.1:{a_port}/plain"),
    ]);
    assert!(r.status.is_some_and(|s| s.success()), "curl: {}", r.stderr);
    assert!(
        r.stdout.contains("\"path\":\"/plain\""),
        "body: {}",
        r.stdout
    );
    assert!(r.stdout.ends_with("\n1.1"), "{}", r.stdout);
    let seen_app = app.last_request("/plain").expect("the app saw /plain");
    assert_eq!(seen_app.header("ringmesh-orig-proto"), None);

    // A offered h2 on the mesh hop.
    let hellos = seen.hellos.lock().unwrap().clone();
    assert!(
        !hellos.is_empty(),
        "A never connected to B through the relay"
    );
    for h in &hellos {
        let alpn = client_hello_alpn(h).expect("a TLS ClientHello from A");
        assert_eq!(
            alpn.first().map(String::as_str),
            Some("h2"),
            "A's ClientHello to B offers ALPN {alpn:?}: the mesh hop must be HTTP/2"
        );
    }
    // A multiplexes: the gRPC calls and the HTTP/1.1 request need at most one
    // mesh connection per worker (2).
    assert!(
        hellos.len() <= 2,
        "{} TLS connections from A to B",
        hellos.len()
    );
    let series = "ringmesh_grpc_responses_total{listener=\"inbound\",route=\"grpc\",cluster=\"grpc\",grpc_status=\"0\"}";
    let text = b.wait_metric(series, Duration::from_secs(5), |v| v >= 6.0);
    // 3 unary + server stream + client stream + bidi, all OK.
    assert_metric_line(&text, &format!("{series} 6"));
    let text = a.metrics();
    assert_metric_line(
        &text,
        "ringmesh_grpc_responses_total{listener=\"outbound\",route=\"mesh\",cluster=\"b\",grpc_status=\"5\"} 1",
    );
}

/// The relay and the ClientHello parser on their own: curl offers h2 and
/// http/1.1 to a TLS "server" behind the relay.
#[test]
fn tap_reads_the_alpn_of_a_client_hello() {
    let sink = Upstream::raw("sink", |mut s, _| {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
    });
    let (relay, seen) = tap(sink.addr);
    let _ = curl(&[
        "-sS",
        "-k",
        "--http2",
        "--max-time",
        "3",
        &format!("https://127.0.0.1:{}/", relay.addr.port()),
    ]);
    let hellos = seen.hellos.lock().unwrap().clone();
    assert_eq!(hellos.len(), 1);
    assert_eq!(
        client_hello_alpn(&hellos[0]),
        Some(vec!["h2".to_string(), "http/1.1".to_string()])
    );
}
