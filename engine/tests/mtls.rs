//! mTLS between proxies, PERMISSIVE/STRICT inbound, mTLS over TCP, edge TLS
//! by SNI with ALPN, and the config errors of the TLS fields. Certificates
//! come from a test CA made here with rcgen; traffic is real (curl, proxies).

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use common::pki::{ca, id, spiffe, Pki};
use rcgen::SanType;

fn http_listener(name: &str, port: u16, cluster: &str, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    address: 127.0.0.1:{port}
{extra}    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: {cluster} }}
"#
    )
}

/// Proxy B: inbound listener with mTLS `mode` in front of `app`.
fn proxy_b(pki: &Pki, mode: &str, app: SocketAddr) -> (Proxy, u16) {
    proxy_b_with(pki, mode, app, &[])
}

fn proxy_b_with(pki: &Pki, mode: &str, app: SocketAddr, args: &[&str]) -> (Proxy, u16) {
    let port = free_port();
    let body = format!(
        "{}listeners:\n{}clusters:\n{}",
        pki.identity("b"),
        http_listener(
            "inbound",
            port,
            "app",
            &format!("    mtls: {{ mode: {mode} }}\n")
        ),
        cluster_yaml("app", &[app])
    );
    (Proxy::start_with(&body, args), port)
}

/// Proxy A: plaintext outbound listener to cluster `b` at `b_port` over mTLS,
/// requiring `expected`.
fn proxy_a(pki: &Pki, b_port: u16, expected: &str) -> (Proxy, u16) {
    proxy_a_with(pki, b_port, expected, &[])
}

fn proxy_a_with(pki: &Pki, b_port: u16, expected: &str, args: &[&str]) -> (Proxy, u16) {
    let port = free_port();
    let body = format!(
        "{}listeners:\n{}clusters:\n  - name: b\n    endpoints: [\"127.0.0.1:{b_port}\"]\n    mtls: {{ identity: \"{expected}\" }}\n",
        pki.identity("a"),
        http_listener("outbound", port, "b", ""),
    );
    (Proxy::start_with(&body, args), port)
}

fn ok(r: &Ran) -> bool {
    r.status.is_some_and(|s| s.success())
}

#[test]
fn mtls_call_carries_both_identities_to_the_app() {
    let pki = Pki::new();
    let app = Upstream::start("app");
    let (b, b_port) = proxy_b(&pki, "strict", app.addr);
    let (a, a_port) = proxy_a(&pki, b_port, &id("b"));
    let url = format!("http://127.0.0.1:{a_port}/hello");
    for _ in 0..3 {
        let r = curl(&[
            "-sS",
            "-H",
            "x-forwarded-client-cert: By=evil;URI=evil",
            &url,
        ]);
        assert!(ok(&r), "curl failed: {}", r.stderr);
        assert!(
            r.stdout.contains("\"path\":\"/hello\""),
            "body: {}",
            r.stdout
        );
    }
    let seen = app.last_request("/hello").expect("the app saw the request");
    assert_eq!(
        seen.headers_all("x-forwarded-client-cert"),
        vec![format!("By={};URI={}", id("b"), id("a")).as_str()]
    );
    // Pooled: three requests, at most one handshake per worker (2 workers).
    let m = a.metrics();
    let hs = metric_value(&m, "ringmesh_tls_handshakes_total{cluster=\"b\"}").unwrap();
    assert!((1.0..=2.0).contains(&hs), "handshakes: {hs}");
    assert_metric_line(&m, "ringmesh_upstream_tls_failures_total{cluster=\"b\"} 0");
    let inbound = b
        .metric("ringmesh_tls_handshakes_total{listener=\"inbound\"}")
        .unwrap();
    assert_eq!(inbound, hs);
}

#[test]
fn wrong_server_identity_is_a_counted_503() {
    let pki = Pki::new();
    let app = Upstream::start("app");
    let (_b, b_port) = proxy_b(&pki, "strict", app.addr);
    let (a, a_port) = proxy_a(&pki, b_port, &id("c"));
    let r = curl(&[
        "-sS",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{a_port}/x"),
    ]);
    assert!(r.stdout.ends_with("503"), "got {}", r.stdout);
    assert!(
        r.stdout.contains("upstream_tls_handshake_failed"),
        "body: {}",
        r.stdout
    );
    assert_eq!(app.request_count(), 0);
    a.wait_metric(
        "ringmesh_upstream_tls_failures_total{cluster=\"b\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    assert_metric_line(
        &a.metrics(),
        "ringmesh_upstream_tls_failures_total{cluster=\"b\"} 1",
    );
    assert!(a.log().contains("is not the expected"), "log: {}", a.log());
}

/// curl straight to B's inbound port with a client certificate (`-k`: SVIDs
/// have no DNS name to check).
fn curl_mtls(port: u16, cert: &str, key: &str) -> Ran {
    curl(&[
        "-sS",
        "-k",
        "--cert",
        cert,
        "--key",
        key,
        &format!("https://127.0.0.1:{port}/direct"),
    ])
}

#[test]
fn strict_refuses_foreign_root_expired_and_plaintext() {
    let pki = Pki::new();
    let app = Upstream::start("app");
    let (b, b_port) = proxy_b(&pki, "strict", app.addr);

    let (c, k) = pki.pair_from("good", &pki.ca, spiffe("a"), false);
    let r = curl_mtls(b_port, &c, &k);
    assert!(ok(&r), "a valid SVID was refused: {}", r.stderr);

    let other = ca("other root");
    let (c, k) = pki.pair_from("foreign", &other, spiffe("a"), false);
    let r = curl_mtls(b_port, &c, &k);
    assert!(
        !ok(&r) && r.stdout.is_empty(),
        "foreign root accepted: {}",
        r.stdout
    );

    let (c, k) = pki.pair_from("expired", &pki.ca, spiffe("a"), true);
    let r = curl_mtls(b_port, &c, &k);
    assert!(
        !ok(&r) && r.stdout.is_empty(),
        "expired cert accepted: {}",
        r.stdout
    );

    // STRICT: plaintext gets no HTTP response at all.
    let r = curl(&["-sS", &format!("http://127.0.0.1:{b_port}/plain")]);
    assert!(
        !ok(&r) && r.stdout.is_empty(),
        "plaintext answered: {}",
        r.stdout
    );

    assert_eq!(app.request_count(), 1);
    let v = b
        .metric("ringmesh_downstream_tls_failures_total{listener=\"inbound\"}")
        .unwrap();
    assert!(v >= 3.0, "failures counted: {v}");
}

#[test]
fn permissive_takes_plaintext_and_mtls_on_one_port() {
    let pki = Pki::new();
    let app = Upstream::start("app");
    let (_b, b_port) = proxy_b(&pki, "permissive", app.addr);

    let r = curl(&[
        "-sS",
        "-H",
        "x-forwarded-client-cert: By=evil;URI=evil",
        &format!("http://127.0.0.1:{b_port}/plain"),
    ]);
    assert!(ok(&r), "plaintext refused: {}", r.stderr);
    let seen = app.last_request("/plain").unwrap();
    assert!(seen.headers_all("x-forwarded-client-cert").is_empty());

    let (c, k) = pki.pair_from("a", &pki.ca, spiffe("a"), false);
    let r = curl_mtls(b_port, &c, &k);
    assert!(ok(&r), "mTLS refused: {}", r.stderr);
    let seen = app.last_request("/direct").unwrap();
    assert_eq!(
        seen.header("x-forwarded-client-cert"),
        Some(format!("By={};URI={}", id("b"), id("a")).as_str())
    );
}

#[test]
fn tcp_listeners_with_mtls_on_both_sides() {
    let pki = Pki::new();
    let echo = Upstream::raw("echo", |mut s, _| {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    });
    let b_port = free_port();
    let _b = Proxy::start(&format!(
        "{}listeners:\n  - name: inbound\n    address: 127.0.0.1:{b_port}\n    protocol: tcp\n    cluster: echo\n    mtls: {{ mode: strict }}\nclusters:\n{}",
        pki.identity("b"),
        cluster_yaml("echo", &[echo.addr])
    ));
    let a_port = free_port();
    let _a = Proxy::start(&format!(
        "{}listeners:\n  - name: out\n    address: 127.0.0.1:{a_port}\n    protocol: tcp\n    cluster: b\nclusters:\n  - name: b\n    endpoints: [\"127.0.0.1:{b_port}\"]\n    mtls: {{ identity: \"{}\" }}\n",
        pki.identity("a"),
        id("b")
    ));
    let mut s = std::net::TcpStream::connect(local(a_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let msg = vec![b'x'; 100_000];
    s.write_all(&msg).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), msg.len());
    assert!(got == msg);
}

#[test]
fn edge_tls_picks_certificate_by_sni_and_negotiates_alpn() {
    let pki = Pki::new();
    let app = Upstream::start("app");
    let ca_file = pki.bundle();
    let (ac, ak) = pki.pair_from(
        "a.test",
        &pki.ca,
        SanType::DnsName("a.test".try_into().unwrap()),
        false,
    );
    let (bc, bk) = pki.pair_from(
        "w",
        &pki.ca,
        SanType::DnsName("x.b.test".try_into().unwrap()),
        false,
    );
    let port = free_port();
    let _p = Proxy::start(&format!(
        "listeners:\n{}clusters:\n{}",
        http_listener(
            "edge",
            port,
            "app",
            &format!(
                "    tls:\n      certificates:\n        - server_names: [a.test]\n          certificate: {{ file: {ac} }}\n          private_key: {{ file: {ak} }}\n        - server_names: [\"*.b.test\"]\n          certificate: {{ file: {bc} }}\n          private_key: {{ file: {bk} }}\n"
            )
        ),
        cluster_yaml("app", &[app.addr])
    ));
    for host in ["a.test", "x.b.test"] {
        let r = curl(&[
            "-sS",
            "-v",
            "--cacert",
            &ca_file,
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            &format!("https://{host}:{port}/edge"),
        ]);
        assert!(ok(&r), "{host}: {}", r.stderr);
        // Without `tls.alpn`, an edge listener offers h2 then http/1.1.
        assert!(
            r.stderr.contains("ALPN: server accepted h2"),
            "{host}: {}",
            r.stderr
        );
        assert!(r
            .stderr
            .contains(&format!("subjectAltName: host \"{host}\" matched")));
    }
    let seen = app.last_request("/edge").unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    // A client that offers only http/1.1 gets it.
    let r = curl(&[
        "-sS",
        "-v",
        "--http1.1",
        "--cacert",
        &ca_file,
        "--resolve",
        &format!("a.test:{port}:127.0.0.1"),
        &format!("https://a.test:{port}/edge"),
    ]);
    assert!(ok(&r), "{}", r.stderr);
    assert!(
        r.stderr.contains("ALPN: server accepted http/1.1"),
        "{}",
        r.stderr
    );
}

fn validate(body: &str) -> String {
    let dir = scratch_dir("mtls-check");
    let path = dir.join("c.yaml");
    std::fs::write(&path, config_text(local(free_port()), body)).unwrap();
    let out = run_proxy(
        &["--config", path.to_str().unwrap(), "--validate"],
        Duration::from_secs(10),
    );
    assert!(!out.status.unwrap().success(), "accepted: {body}");
    format!("{}{}", out.stderr, out.stdout)
}

#[test]
fn tls_config_errors_name_the_field() {
    let pki = Pki::new();
    let p1 = free_port();
    let out = validate(&format!(
        "listeners:\n{}clusters:\n{}",
        http_listener(
            "edge",
            p1,
            "app",
            "    tls:\n      certificates:\n        - certificate: { file: /nonexistent/x.pem }\n          private_key: { file: /nonexistent/x.key }\n"
        ),
        cluster_yaml("app", &[local(1)])
    ));
    assert!(
        out.contains(
            "listeners[0].tls.certificates[0].certificate.file: cannot read /nonexistent/x.pem"
        ),
        "{out}"
    );
    let out = validate(&format!(
        "clusters:\n  - name: x\n    endpoints: [\"127.0.0.1:1\"]\n  - name: y\n    endpoints: [\"127.0.0.1:1\"]\n  - name: z\n    endpoints: [\"127.0.0.1:1\"]\n    mtls: {{ identity: \"{}\" }}\n",
        id("b")
    ));
    assert!(
        out.contains("clusters[2].mtls: the config has no identity"),
        "{out}"
    );
    let out = validate(&format!(
        "{}listeners:\n{}{}clusters:\n{}",
        pki.identity("b"),
        http_listener("one", free_port(), "app", ""),
        http_listener(
            "two",
            free_port(),
            "app",
            "    mtls: {}\n    tls: { certificates: [] }\n"
        ),
        cluster_yaml("app", &[local(1)])
    ));
    assert!(
        out.contains("listeners[1]: mtls and tls cannot both be set"),
        "{out}"
    );
}

/// Whether this kernel has kTLS (the tls module creates /proc/net/tls_stat).
/// The build machines do not; the real path runs in deploy/ktls-vm-test.sh.
fn kernel_has_ktls() -> bool {
    std::path::Path::new("/proc/net/tls_stat").exists()
}

/// Runs `n` requests through A and checks each reached the app.
fn calls_work(a_port: u16, n: usize) {
    let url = format!("http://127.0.0.1:{a_port}/k");
    for _ in 0..n {
        let r = curl(&["-sS", &url]);
        assert!(ok(&r), "curl failed: {}", r.stderr);
        assert!(r.stdout.contains("\"path\":\"/k\""), "body: {}", r.stdout);
    }
}

#[test]
fn ktls_auto_falls_back_to_user_space_with_one_line_and_a_metric() {
    if kernel_has_ktls() {
        return;
    }
    let pki = Pki::new();
    let app = Upstream::start("app");
    let (b, b_port) = proxy_b_with(&pki, "strict", app.addr, &["--ktls", "auto"]);
    let (a, a_port) = proxy_a_with(&pki, b_port, &id("b"), &["--ktls", "auto"]);
    calls_work(a_port, 3);
    for p in [&a, &b] {
        let log = p.log();
        assert_eq!(
            log.matches("kTLS unavailable").count(),
            1,
            "one fallback line; log: {log}"
        );
        assert!(log.contains("using user-space rustls"), "log: {log}");
        let m = p.metrics();
        assert_metric_line(&m, "ringmesh_ktls_enabled 0");
        assert_metric_line(&m, "ringmesh_ktls_offloads_total 0");
        assert_metric_line(&m, "ringmesh_ktls_offload_declined_total 0");
    }
    assert_eq!(
        b.metric("ringmesh_tls_handshakes_total{listener=\"inbound\"}"),
        a.metric("ringmesh_tls_handshakes_total{cluster=\"b\"}")
    );
}

/// The kTLS code path without the kernel part: both proxies run their mTLS
/// handshakes record by record and hand every session to the kTLS hand-off,
/// which declines here (no TLS ULP); the sessions go on in user space from
/// the pieces given back. Traffic must not notice.
#[test]
fn record_bounded_handshakes_and_declined_handoffs_carry_traffic() {
    if kernel_has_ktls() {
        return;
    }
    let pki = Pki::new();
    let app = Upstream::start("app");
    let args = ["--ktls", "auto", "--ktls-test-handoff"];
    let (b, b_port) = proxy_b_with(&pki, "strict", app.addr, &args);
    let (a, a_port) = proxy_a_with(&pki, b_port, &id("b"), &args);
    calls_work(a_port, 5);
    // Many short connections too (curl closes; the pool may keep one).
    let url = format!("http://127.0.0.1:{a_port}/k");
    let r = curl(&["-sS", "-H", "connection: close", &url, &url, &url]);
    assert!(ok(&r), "curl failed: {}", r.stderr);
    let seen = app.last_request("/k").expect("the app saw the requests");
    assert_eq!(
        seen.headers_all("x-forwarded-client-cert"),
        vec![format!("By={};URI={}", id("b"), id("a")).as_str()]
    );
    for (p, series) in [
        (&a, "ringmesh_tls_handshakes_total{cluster=\"b\"}"),
        (&b, "ringmesh_tls_handshakes_total{listener=\"inbound\"}"),
    ] {
        let hs = p.metric(series).unwrap();
        assert!(hs >= 1.0, "handshakes {hs}");
        let m = p.metrics();
        assert_eq!(
            metric_value(&m, "ringmesh_ktls_offload_declined_total"),
            Some(hs),
            "every session went through the hand-off; metrics:\n{m}"
        );
        assert_metric_line(&m, "ringmesh_ktls_offload_failures_total 0");
        assert_metric_line(&m, "ringmesh_ktls_offloads_total 0");
    }
}

#[test]
fn ktls_on_without_kernel_support_exits_1_with_a_clear_message() {
    if kernel_has_ktls() {
        return;
    }
    let pki = Pki::new();
    let app = Upstream::start("app");
    let port = free_port();
    let body = format!(
        "{}listeners:\n{}clusters:\n{}",
        pki.identity("b"),
        http_listener("inbound", port, "app", "    mtls: { mode: strict }\n"),
        cluster_yaml("app", &[app.addr])
    );
    let admin = local(free_port());
    let path = pki.write("proxy.yaml", &config_text(admin, &body));
    let r = run_proxy(
        &["--config", &path, "--ktls", "on"],
        Duration::from_secs(20),
    );
    assert_eq!(
        r.status.and_then(|s| s.code()),
        Some(1),
        "{:?} {}",
        r.status,
        r.stderr
    );
    assert!(
        r.stderr
            .contains("--ktls on: kernel TLS is not available on this host"),
        "stderr: {}",
        r.stderr
    );
    assert!(r.stderr.contains("modprobe tls"), "stderr: {}", r.stderr);
    assert!(connect_refused(local(port)), "no listener may be bound");
}
