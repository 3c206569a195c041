//! gRPC across the mesh end to end: the real `ringmesh-control`, real
//! `ringmesh-proxy` processes and a real tonic server (`ringmesh-testgrpc`'s
//! Echo) as the application of a service whose port is `protocol: grpc`.
//! A tonic client calls it through the `front` proxy's outbound listener
//! (h2c prior knowledge); the hop between the proxies is HTTP/2 over strict
//! mTLS; the echo proxy speaks HTTP/2 to the app. Every call shape, a status
//! chosen by the app, and a traffic-rule timeout answered by the proxy as
//! DEADLINE_EXCEEDED. An `http` service on the same mesh still serves an
//! HTTP/1.1 client (curl) whose app only speaks HTTP/1.1, across the HTTP/2
//! mesh hop.

mod mesh_support;
use mesh_support::*;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ringmesh_testgrpc::{Background, EchoClient, EchoService, Req};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// `echo` is gRPC; `web` is plain HTTP/1.1; `gone` is gRPC without any
/// instance; `front` calls all three. The route `slow` (requests carrying
/// `x-deadline-test`) has a 300 ms timeout; echo's proxy denies health
/// checks.
const MESH: &str = r#"mesh:
  mtls: strict
services:
  - name: front
    ports: [{ name: http, port: 8080, protocol: http }]
    calls: [echo, web, gone]
  - name: echo
    ports: [{ name: grpc, port: 50051, protocol: grpc }]
    calls: []
  - name: web
    ports: [{ name: http, port: 8090, protocol: http }]
    calls: []
  - name: gone
    ports: [{ name: grpc, port: 50052, protocol: grpc }]
    calls: []
traffic:
  - name: echo-deadline
    service: echo
    routes:
      - name: slow
        match:
          headers: [{ name: x-deadline-test, present: true }]
        timeout: 300ms
        split: [{ weight: 1 }]
policies:
  - name: no-health-checks
    service: echo
    action: deny
    rules:
      - paths: [{ exact: /grpc.health.v1.Health/Check }]
"#;

struct Mesh {
    _cp: ControlPlane,
    _grpc_app: Background,
    _apps: Vec<App>,
    front: MeshProxy,
    echo: MeshProxy,
    web: MeshProxy,
}

fn start_mesh(dir: &Path) -> Mesh {
    let cp = ControlPlane::start(dir, "10s");
    cp.write("mesh.yaml", MESH);
    assert!(
        cp.status()["config_error"].is_null(),
        "config refused: {}",
        cp.status()["config_error"]
    );
    let grpc_app = Background::start(
        local(0),
        2,
        EchoService {
            tag: b"echo-1:".to_vec(),
        },
    )
    .expect("start the tonic Echo server");
    let apps = vec![App::start("front"), App::start("web")];
    let start = |id: &str, service: &str, app_port: u16| {
        MeshProxy::start(
            dir,
            &cp,
            NodeSpec {
                id,
                service,
                app_port,
                labels: &[],
            },
        )
    };
    let front = start("front-1", "front", apps[0].port);
    let echo = start("echo-1", "echo", grpc_app.addr.port());
    let web = start("web-1", "web", apps[1].port);
    for p in [&front, &echo, &web] {
        p.wait_ready();
    }
    Mesh {
        _cp: cp,
        _grpc_app: grpc_app,
        _apps: apps,
        front,
        echo,
        web,
    }
}

impl Mesh {
    /// Every proxy's log, for failure messages.
    fn logs(&self) -> String {
        [&self.front, &self.echo, &self.web]
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.id, p.proc.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A tonic client speaking h2c to `outbound` with `:authority: echo:50051`
/// (a virtual host of the front proxy's outbound route table).
async fn client(outbound: SocketAddr) -> EchoClient<Channel> {
    EchoClient::new(channel(outbound, "echo:50051").await)
}

/// An h2c channel to `outbound` whose calls carry `:authority: authority`.
async fn channel(outbound: SocketAddr, authority: &str) -> Channel {
    Endpoint::from_shared(format!("http://{outbound}"))
        .unwrap()
        .origin(format!("http://{authority}").parse().unwrap())
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect to the front proxy's outbound listener")
}

fn req(payload: &[u8]) -> Req {
    Req {
        payload: payload.to_vec(),
        ..Default::default()
    }
}

/// Waits (up to 20 s) until a unary call gets through: the front proxy learns
/// the echo endpoint and the echo proxy its certificate a moment after both
/// report ready.
async fn wait_for_echo(c: &mut EchoClient<Channel>, m: &Mesh) {
    let end = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < end {
        match c.unary(req(b"ping")).await {
            Ok(r) => {
                assert_eq!(r.into_inner().payload, b"echo-1:ping");
                return;
            }
            Err(s) => last = Some(s),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no unary call got through in 20 s; last status: {last:?}\n{}",
        m.logs()
    );
}

/// The value of the first metric line starting with `prefix` and holding
/// every one of `labels`.
fn metric(text: &str, prefix: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn unary_calls_and_chosen_failures_cross_the_mesh() {
    let dir = scratch("grpc-unary");
    let m = start_mesh(&dir);
    runtime().block_on(async {
        let mut c = client(m.front.outbound).await;
        wait_for_echo(&mut c, &m).await;

        // Metadata both ways, and a payload bigger than every default
        // HTTP/2 window (256 KiB stream, 1 MiB connection): flow control
        // on both hops.
        let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let mut r = tonic::Request::new(req(&big));
        r.metadata_mut()
            .insert("x-test-id", "unary-big".parse().unwrap());
        let reply = c.unary(r).await.expect("3 MiB unary call");
        let got = reply.into_inner().payload;
        assert_eq!(got.len(), big.len() + b"echo-1:".len());
        assert!(got.starts_with(b"echo-1:") && got[7..] == big[..]);

        // Many small calls on one connection (multiplexed streams).
        let calls = (0..200).map(|i| {
            let mut c = c.clone();
            async move {
                let p = format!("n{i}");
                let r = c.unary(req(p.as_bytes())).await;
                (p, r)
            }
        });
        for (p, r) in futures_join_all(calls).await {
            let r = r.unwrap_or_else(|s| panic!("call {p}: {s:?}"));
            assert_eq!(r.into_inner().payload, format!("echo-1:{p}").as_bytes());
        }

        // A status the app chose comes back unchanged: code and message.
        let failing = Req {
            fail_code: Code::ResourceExhausted as i32,
            fail_message: "quota used up: 10/10 calls".into(),
            ..Default::default()
        };
        let s = c
            .unary(failing)
            .await
            .expect_err("the app answers an error");
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        assert_eq!(s.message(), "quota used up: 10/10 calls");
        let failing = Req {
            fail_code: Code::NotFound as i32,
            fail_message: "no such thing".into(),
            ..Default::default()
        };
        let s = c
            .server_stream(failing)
            .await
            .expect_err("a streaming call failing before any message");
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "no such thing"),
            "{s:?}"
        );
    });

    // The front proxy counts gRPC answers by status.
    let text = m.front.metrics();
    let ok = metric(
        &text,
        "ringmesh_grpc_responses_total{",
        &[
            "listener=\"outbound\"",
            "cluster=\"echo.default:50051\"",
            "grpc_status=\"0\"",
        ],
    );
    assert!(ok.is_some_and(|n| n >= 202.0), "{text}");
    let exhausted = metric(
        &text,
        "ringmesh_grpc_responses_total{",
        &["cluster=\"echo.default:50051\"", "grpc_status=\"8\""],
    );
    assert_eq!(exhausted, Some(1.0), "{text}");
}

/// `futures::future::join_all` without the dependency: spawn each call.
async fn futures_join_all<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[test]
fn ten_thousand_server_streamed_messages_arrive_in_order() {
    let dir = scratch("grpc-server-stream");
    let m = start_mesh(&dir);
    runtime().block_on(async {
        let mut c = client(m.front.outbound).await;
        wait_for_echo(&mut c, &m).await;
        let r = Req {
            count: 10_000,
            size: 100,
            ..Default::default()
        };
        let mut stream = tokio::time::timeout(Duration::from_secs(30), c.server_stream(r))
            .await
            .expect("headers within 30 s")
            .expect("server stream starts")
            .into_inner();
        let mut n = 0u64;
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, stream.message())
                .await
                .unwrap_or_else(|_| panic!("stalled after {n} messages\n{}", m.logs()))
                .unwrap_or_else(|s| panic!("stream failed after {n} messages: {s:?}"));
            let Some(msg) = msg else { break };
            assert_eq!(msg.seq, n, "out of order");
            assert_eq!(msg.payload.len(), 100);
            n += 1;
        }
        assert_eq!(n, 10_000, "the stream ended early (status OK)");
    });
}

#[test]
fn client_and_bidirectional_streams_cross_the_mesh() {
    let dir = scratch("grpc-client-bidi");
    let m = start_mesh(&dir);
    runtime().block_on(async {
        let mut c = client(m.front.outbound).await;
        wait_for_echo(&mut c, &m).await;

        // Client streaming: 1,000 messages of 1 KiB, one summary.
        let msgs = (0..1000).map(|_| req(&[7u8; 1024]));
        let summary = tokio::time::timeout(
            Duration::from_secs(30),
            c.client_stream(tokio_stream::iter(msgs)),
        )
        .await
        .expect("client stream within 30 s")
        .expect("client stream")
        .into_inner();
        assert_eq!((summary.messages, summary.bytes), (1000, 1000 * 1024));

        // Bidi, in lock step: each reply must arrive before the next request
        // is sent, so neither proxy may hold a direction back.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(req(b"m0")).await.unwrap();
        let mut replies =
            tokio::time::timeout(Duration::from_secs(10), c.bidi(ReceiverStream::new(rx)))
                .await
                .expect("bidi headers within 10 s")
                .expect("bidi starts")
                .into_inner();
        for i in 0..100u64 {
            if i > 0 {
                tx.send(req(format!("m{i}").as_bytes())).await.unwrap();
            }
            let r = tokio::time::timeout(Duration::from_secs(5), replies.message())
                .await
                .unwrap_or_else(|_| panic!("no reply to message {i} in 5 s\n{}", m.logs()))
                .expect("bidi reply")
                .expect("a reply, not the end");
            assert_eq!((r.seq, r.payload), (i + 1, format!("m{i}").into_bytes()));
        }
        drop(tx);
        let end = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("the end of the bidi stream within 5 s");
        assert!(matches!(end, Ok(None)), "{end:?}");
    });
}

#[test]
fn a_traffic_rule_timeout_is_deadline_exceeded() {
    let dir = scratch("grpc-deadline");
    let m = start_mesh(&dir);
    runtime().block_on(async {
        let mut c = client(m.front.outbound).await;
        wait_for_echo(&mut c, &m).await;

        let slow = |delay_ms: u32, marked: bool| {
            let mut r = tonic::Request::new(Req {
                payload: b"slow".to_vec(),
                delay_ms,
                ..Default::default()
            });
            if marked {
                r.metadata_mut()
                    .insert("x-deadline-test", "1".parse().unwrap());
            }
            r
        };
        // The `slow` route (300 ms) answers itself long before the app.
        let t = Instant::now();
        let s = c
            .unary(slow(3000, true))
            .await
            .expect_err("the route timeout fires");
        let took = t.elapsed();
        assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
        assert!(
            took < Duration::from_millis(2500),
            "answered after {took:?}: the app answered, not the proxy"
        );
        // Unmarked calls take the default route (no timeout).
        let r = c
            .unary(slow(800, false))
            .await
            .expect("no timeout on the default route");
        assert_eq!(r.into_inner().payload, b"echo-1:slow");
        // Marked but quick: fine.
        c.unary(slow(0, true))
            .await
            .expect("a quick call on `slow`");
    });
    let text = m.front.metrics();
    let deadline = metric(
        &text,
        "ringmesh_grpc_responses_total{",
        &[
            "route=\"slow\"",
            "cluster=\"echo.default:50051\"",
            "grpc_status=\"4\"",
        ],
    );
    // The proxy's own DEADLINE_EXCEEDED is counted under the route and
    // cluster that timed out, like ringmesh_requests_total counts it.
    assert_eq!(
        deadline,
        Some(1.0),
        "no grpc_status=\"4\" under route=\"slow\": {text}"
    );
}

/// `curl --http1.1` to `addr` with `host`; (status, body, HTTP version,
/// stderr).
fn curl_http1(addr: SocketAddr, host: &str, path: &str) -> (u16, String, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{http_version}",
            "-H",
        ])
        .arg(format!("host: {host}"))
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
    let (code, version) = tail.split_once(' ').unwrap_or(("0", "0"));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        version.trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_http1_client_reaches_an_http1_app_across_the_http2_mesh_hop() {
    let dir = scratch("grpc-http1");
    let m = start_mesh(&dir);
    // The web app speaks only HTTP/1.1: it answers at all only if the
    // echo proxy's `auto` cluster went back to the client's HTTP/1.1.
    let got = wait_until(Duration::from_secs(20), || {
        curl_http1(m.front.outbound, "web", "/hello").0 == 200
    });
    let (status, body, version, err) = curl_http1(m.front.outbound, "web", "/hello");
    assert!(
        got && status == 200,
        "{status} {body:?} {err}\n{}",
        m.logs()
    );
    assert_eq!((body.as_str(), version.as_str()), ("web", "1.1"));
    // Keep-alive and the port-qualified name, several times over.
    for i in 0..20 {
        let (status, body, _, err) = curl_http1(m.front.outbound, "web:8090", &format!("/n/{i}"));
        assert_eq!((status, body.as_str()), (200, "web"), "request {i}: {err}");
    }
    let mut c = Client::new(m.front.outbound);
    for i in 0..50 {
        let r = c
            .request("POST", "web.default", &format!("/post/{i}"), &[])
            .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", m.logs()));
        assert_eq!(
            (r.status, r.text()),
            (200, "web".to_string()),
            "request {i}"
        );
    }
    // The gRPC service is still there beside it.
    runtime().block_on(async {
        let mut c = client(m.front.outbound).await;
        wait_for_echo(&mut c, &m).await;
    });
}

#[test]
fn the_proxies_own_answers_are_grpc_statuses() {
    let dir = scratch("grpc-local");
    let m = start_mesh(&dir);
    runtime().block_on(async {
        let mut c = client(m.front.outbound).await;
        wait_for_echo(&mut c, &m).await;

        // echo's proxy denies the health check by policy: PERMISSION_DENIED,
        // made by the echo proxy and carried back through front.
        let mut health = HealthClient::new(channel(m.front.outbound, "echo:50051").await);
        let s = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect_err("the policy denies health checks");
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("no-health-checks"), "{s:?}");

        // An authority front has no virtual host for: UNIMPLEMENTED.
        let mut nowhere = EchoClient::new(channel(m.front.outbound, "nowhere:1").await);
        let s = nowhere
            .unary(req(b"x"))
            .await
            .expect_err("no route to nowhere");
        assert_eq!(s.code(), Code::Unimplemented, "{s:?}");

        // A service without a single instance: UNAVAILABLE.
        let mut gone = EchoClient::new(channel(m.front.outbound, "gone:50052").await);
        let s = gone
            .unary(req(b"x"))
            .await
            .expect_err("gone has no endpoints");
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");

        // Echo itself is still fine on the same connection.
        let r = c
            .unary(req(b"after"))
            .await
            .expect("echo after the refusals");
        assert_eq!(r.into_inner().payload, b"echo-1:after");
    });
    let text = m.echo.metrics();
    let denied = metric(
        &text,
        "ringmesh_authz_denied_total{",
        &["policy=\"no-health-checks\""],
    );
    assert_eq!(denied, Some(1.0), "{text}");
}
