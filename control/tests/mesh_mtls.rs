//! Identity and mTLS end to end: the real `ringmesh-control` as the mesh CA
//! and real `ringmesh-proxy` processes that get their certificates by CSR,
//! call each other over mTLS, rotate certificates and roots under load, and
//! enforce authorization policies. Outside clients are curl (with and
//! without client certificates) and plain sockets.

mod mesh_support;
use mesh_support::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

const TD: &str = "cluster.local";

fn id(service: &str) -> String {
    format!("spiffe://{TD}/ns/default/sa/{service}")
}

fn services(reviews_mtls: &str) -> String {
    format!(
        r#"services:
  - name: front
    ports: [{{ name: http, port: 8080, protocol: http }}]
    calls: [reviews]
  - name: ratings
    ports: [{{ name: http, port: 8081, protocol: http }}]
    calls: [reviews]
  - name: reviews
    mtls: {reviews_mtls}
    ports: [{{ name: http, port: 9080, protocol: http }}]
    calls: []
"#
    )
}

/// A CA made by the test: (certificate PEM, key PEM, issuer).
struct TestCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn test_root(cn: &str) -> TestCa {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(30);
    let cert = p.self_signed(&key).unwrap();
    let key_pem = key.serialize_pem();
    TestCa {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(p, key),
    }
}

/// The control plane's own generated root, read from its CA directory.
fn mesh_root(cp: &ControlPlane) -> TestCa {
    let dir = cp.data_dir.join("ca");
    let cert_pem = std::fs::read_to_string(dir.join("root.pem")).unwrap();
    let key_pem = std::fs::read_to_string(dir.join("root.key.pem")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, KeyPair::from_pem(&key_pem).unwrap()).unwrap();
    TestCa {
        cert_pem,
        key_pem,
        issuer,
    }
}

/// A client SVID signed by `ca`, valid from `from` to `to` (relative to
/// now), written as `<tag>.pem` / `<tag>.key` in `dir`.
fn client_cert(
    dir: &Path,
    tag: &str,
    ca: &TestCa,
    spiffe: &str,
    from: time::Duration,
    to: time::Duration,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(spiffe.try_into().unwrap())];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now + from;
    p.not_after = now + to;
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let (c, k) = (
        dir.join(format!("{tag}.pem")),
        dir.join(format!("{tag}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// `curl` over mTLS straight to a proxy's inbound listener, as an outside
/// client holding `cert`. The proxy's certificate has no DNS name (it is an
/// SVID), so curl does not check it (`-k`): what is tested is whether the
/// proxy accepts the client. Returns (HTTP status or 0, body, curl's stderr).
fn curl_mtls(
    addr: std::net::SocketAddr,
    cert: &Path,
    key: &Path,
    path: &str,
) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--max-time",
            "5",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("-H")
        .arg("host: reviews")
        .arg(format!("https://{addr}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether a plaintext HTTP request to `addr` gets any HTTP answer.
fn plaintext_answer(addr: std::net::SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    s.write_all(b"GET /plain HTTP/1.1\r\nhost: reviews\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.starts_with("HTTP/1.1").then_some(text)
}

struct Mesh {
    _apps: Vec<App>,
    front: MeshProxy,
    ratings: MeshProxy,
    reviews: MeshProxy,
}

fn start_mesh(dir: &Path, cp: &ControlPlane) -> Mesh {
    let apps = vec![
        App::start("front"),
        App::start("ratings"),
        App::start_echo_client_cert("r1"),
    ];
    let start = |id: &str, service: &str, app: &App| {
        MeshProxy::start(
            dir,
            cp,
            NodeSpec {
                id,
                service,
                app_port: app.port,
                labels: &[],
            },
        )
    };
    let front = start("front-1", "front", &apps[0]);
    let ratings = start("ratings-1", "ratings", &apps[1]);
    let reviews = start("reviews-1", "reviews", &apps[2]);
    for p in [&front, &ratings, &reviews] {
        p.wait_ready();
    }
    Mesh {
        _apps: apps,
        front,
        ratings,
        reviews,
    }
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The version of `ty` node `id` last ACKed.
fn acked(cp: &ControlPlane, id: &str, ty: &str) -> String {
    cp.node(id)
        .and_then(|n| n["types"][ty]["acked_version"].as_str().map(String::from))
        .unwrap_or_default()
}

fn wait_acked_change(cp: &ControlPlane, id: &str, ty: &str, before: &str) {
    assert!(
        wait_until(Duration::from_secs(15), || {
            let now = acked(cp, id, ty);
            !now.is_empty() && now != before
        }),
        "{id} never ACKed a new {ty}; status: {}",
        cp.status()
    );
}

#[test]
fn a_call_between_services_is_mutual_tls_carrying_the_callers_identity() {
    let dir = scratch("mtls-call");
    let cp = ControlPlane::start(&dir, "10s");
    cp.write("services.yaml", &services("strict"));
    let m = start_mesh(&dir, &cp);

    // The reviews app sees who called, as its proxy verified it; a header
    // the caller made up does not survive.
    let mut c = Client::new(m.front.outbound);
    let r = c
        .request(
            "GET",
            "reviews",
            "/who",
            &[("x-forwarded-client-cert", "URI=spiffe://evil/ns/x/sa/y")],
        )
        .expect("GET through front-1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        format!("r1 xfcc=By={};URI={}", id("reviews"), id("front"))
    );
    let r = http_get(m.ratings.outbound, "reviews", "/who").unwrap();
    assert_eq!(
        r.text(),
        format!("r1 xfcc=By={};URI={}", id("reviews"), id("ratings"))
    );

    // STRICT: plaintext gets no HTTP answer at all.
    assert_eq!(plaintext_answer(m.reviews.inbound), None);

    // An outside client with a certificate from the mesh root gets in...
    let root = mesh_root(&cp);
    let hour = time::Duration::hours(1);
    let (c, k) = client_cert(&dir, "good", &root, &id("ratings"), -hour, hour);
    let (status, body, err) = curl_mtls(m.reviews.inbound, &c, &k, "/who");
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            format!("r1 xfcc=By={};URI={}", id("reviews"), id("ratings")).as_str()
        ),
        "{err}"
    );
    // ...one from another root does not...
    let other = test_root("not the mesh");
    let (c, k) = client_cert(&dir, "other-root", &other, &id("ratings"), -hour, hour);
    let (status, body, err) = curl_mtls(m.reviews.inbound, &c, &k, "/who");
    assert_eq!(status, 0, "a foreign root got an answer: {body}");
    assert!(!err.is_empty());
    // ...nor does an expired one from the mesh root.
    let (c, k) = client_cert(&dir, "expired", &root, &id("ratings"), -hour * 2, -hour);
    let (status, body, err) = curl_mtls(m.reviews.inbound, &c, &k, "/who");
    assert_eq!(status, 0, "an expired certificate got an answer: {body}");
    assert!(!err.is_empty());

    // The refusals are counted on the reviews proxy.
    let text = m.reviews.metrics();
    let failures = metric(
        &text,
        "ringmesh_downstream_tls_failures_total{listener=\"inbound:9080\"}",
    )
    .unwrap_or(0.0);
    assert!(failures >= 2.0, "{text}");
}

#[test]
fn permissive_takes_plaintext_and_mtls_on_one_port_and_strict_then_refuses_plaintext() {
    let dir = scratch("mtls-modes");
    let cp = ControlPlane::start(&dir, "10s");
    cp.write("services.yaml", &services("permissive"));
    let m = start_mesh(&dir, &cp);

    let plain = http_get(m.reviews.inbound, "reviews", "/p").expect("plaintext GET");
    assert_eq!(
        (plain.status, plain.text()),
        (200, "r1 xfcc=none".to_string())
    );
    let r = http_get(m.front.outbound, "reviews", "/m").unwrap();
    assert_eq!(
        r.text(),
        format!("r1 xfcc=By={};URI={}", id("reviews"), id("front"))
    );

    let before = acked(&cp, "reviews-1", "listener");
    let load = Load::start(m.front.outbound, "reviews");
    load.wait_more(50);
    cp.write("services.yaml", &services("strict"));
    wait_acked_change(&cp, "reviews-1", "listener", &before);
    assert_eq!(plaintext_answer(m.reviews.inbound), None);
    load.wait_more(100);
    let t = load.finish();
    assert_eq!(t.failures, Vec::<String>::new(), "failed mTLS requests");
}

#[test]
fn certificates_rotate_under_load_without_a_failed_request() {
    let dir = scratch("mtls-rotate");
    let cp = ControlPlane::start_with(&dir, "10s", &["--cert-lifetime", "4s"]);
    cp.write("services.yaml", &services("strict"));
    let m = start_mesh(&dir, &cp);
    let load = Load::start(m.front.outbound, "reviews");
    // Four lifetimes: every proxy renews at least three times.
    thread::sleep(Duration::from_secs(16));
    load.wait_more(100);
    let t = load.finish();
    assert_eq!(t.failures, Vec::<String>::new(), "failed requests");
    for p in [&m.front, &m.reviews] {
        let text = p.metrics();
        let renewals = metric(&text, "ringmesh_identity_renewals_total").unwrap_or(0.0);
        assert!(renewals >= 3.0, "{}: {renewals} renewals\n{text}", p.id);
    }
    let issued = metric(&cp.metrics(), "ringmesh_control_certificates_issued_total").unwrap_or(0.0);
    assert!(issued >= 3.0 * 4.0, "{issued} certificates issued");
}

#[test]
fn a_root_is_rotated_without_a_failed_request() {
    let dir = scratch("mtls-root");
    let a = test_root("root A");
    let b = test_root("root B");
    let (ca_cert, ca_key, bundle) = (
        dir.join("ca.pem"),
        dir.join("ca.key"),
        dir.join("bundle.pem"),
    );
    let set_signing = |ca: &TestCa| {
        // The control plane refuses a CA key others can read.
        let tmp = dir.join(".ca.key.tmp");
        std::fs::write(&tmp, &ca.key_pem).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::rename(&tmp, &ca_key).unwrap();
        write_atomic(&ca_cert, &ca.cert_pem);
    };
    set_signing(&a);
    write_atomic(&bundle, &a.cert_pem);
    let cp = ControlPlane::start_with(
        &dir,
        "10s",
        &[
            "--ca-cert",
            ca_cert.to_str().unwrap(),
            "--ca-key",
            ca_key.to_str().unwrap(),
            "--ca-bundle",
            bundle.to_str().unwrap(),
            "--cert-lifetime",
            "4s",
        ],
    );
    cp.write("services.yaml", &services("strict"));
    let m = start_mesh(&dir, &cp);
    let load = Load::start(m.front.outbound, "reviews");
    load.wait_more(50);
    let nodes = ["front-1", "reviews-1", "ratings-1"];
    let hup_and_wait = |what: &str| {
        let before: Vec<String> = nodes.iter().map(|n| acked(&cp, n, "secret")).collect();
        cp.hup();
        for (n, v) in nodes.iter().zip(&before) {
            wait_acked_change(&cp, n, "secret", v);
        }
        load.wait_more(20);
        assert_eq!(
            load.snapshot().failures,
            Vec::<String>::new(),
            "after {what}"
        );
    };

    // 1. Trust both roots.
    write_atomic(&bundle, &format!("{}{}", a.cert_pem, b.cert_pem));
    hup_and_wait("bundle A+B");
    assert_eq!(
        metric(&cp.metrics(), "ringmesh_control_trust_bundle_roots"),
        Some(2.0)
    );
    // 2. Sign with the new root; wait until every certificate was renewed
    //    (renewal at half of a 4 s lifetime: two lifetimes are plenty).
    set_signing(&b);
    cp.hup();
    thread::sleep(Duration::from_secs(8));
    load.wait_more(20);
    // 3. Trust only the new root.
    write_atomic(&bundle, &b.cert_pem);
    hup_and_wait("bundle B only");
    load.wait_more(200);
    let t = load.finish();
    assert_eq!(t.failures, Vec::<String>::new(), "failed requests");

    // The old root is out: a client certificate from A is refused, one
    // from B is accepted.
    let hour = time::Duration::hours(1);
    let (c, k) = client_cert(&dir, "from-a", &a, &id("ratings"), -hour, hour);
    assert_eq!(curl_mtls(m.reviews.inbound, &c, &k, "/").0, 0);
    let (c, k) = client_cert(&dir, "from-b", &b, &id("ratings"), -hour, hour);
    assert_eq!(curl_mtls(m.reviews.inbound, &c, &k, "/").0, 200);
}

const POLICIES: &str = r#"policies:
  - name: allow-callers
    service: reviews
    action: allow
    rules:
      - sources: { identities: [spiffe://cluster.local/ns/default/sa/front] }
      - sources: { identities: [spiffe://cluster.local/ns/default/sa/ratings] }
        methods: [GET]
  - name: deny-admin
    service: reviews
    action: deny
    rules:
      - paths: [{ prefix: /admin }]
"#;

#[test]
fn policies_decide_by_identity_method_and_path_and_deny_wins() {
    let dir = scratch("authz");
    let cp = ControlPlane::start(&dir, "10s");
    cp.write("services.yaml", &services("permissive"));
    cp.write("policies.yaml", POLICIES);
    let m = start_mesh(&dir, &cp);
    let call = |p: &MeshProxy, method: &str, path: &str| {
        let r = Client::new(p.outbound)
            .request(method, "reviews", path, &[])
            .expect("request");
        (r.status, r.text())
    };
    assert_eq!(call(&m.front, "GET", "/x").0, 200);
    assert_eq!(call(&m.front, "POST", "/x").0, 200);
    assert_eq!(call(&m.ratings, "GET", "/x").0, 200);
    assert_eq!(
        call(&m.ratings, "POST", "/x"),
        (
            403,
            "RBAC: access denied: no ALLOW policy matched (allow-callers)\n".to_string()
        )
    );
    // DENY beats ALLOW, also for paths written to slip past it.
    for path in ["/admin/users", "//admin", "/x/../admin", "/%61dmin"] {
        assert_eq!(
            call(&m.front, "GET", path),
            (
                403,
                "RBAC: access denied by policy \"deny-admin\"\n".to_string()
            ),
            "{path}"
        );
    }
    // A plaintext caller has no identity: no ALLOW rule matches.
    let r = http_get(m.reviews.inbound, "reviews", "/x").unwrap();
    assert_eq!(r.status, 403);

    let text = m.reviews.metrics();
    let l = "listener=\"inbound:9080\"";
    assert_eq!(
        metric(
            &text,
            &format!("ringmesh_authz_denied_total{{{l},policy=\"deny-admin\"}}")
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("ringmesh_authz_denied_total{{{l},policy=\"\"}}")
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("ringmesh_authz_allowed_total{{{l},policy=\"allow-callers\"}}")
        ),
        Some(3.0),
        "{text}"
    );
}

#[test]
fn a_tcp_policy_denial_closes_the_connection() {
    let dir = scratch("authz-tcp");
    // A TCP echo service `db` behind its proxy; `ratings` calls it.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    thread::spawn(move || {
        for c in echo.incoming().flatten() {
            thread::spawn(move || {
                let mut c = c;
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let db_port = free_port();
    let yaml = |deny: bool| {
        let mut y = format!(
            r#"services:
  - name: ratings
    ports: [{{ name: http, port: 8081, protocol: http }}]
    calls: [db]
  - name: db
    mtls: strict
    ports: [{{ name: pg, port: {db_port}, protocol: tcp }}]
    calls: []
"#
        );
        if deny {
            y.push_str(
                "policies:\n  - name: no-ratings\n    service: db\n    action: deny\n    rules:\n      - sources: { identities: [spiffe://cluster.local/ns/default/sa/ratings] }\n",
            );
        }
        y
    };
    let cp = ControlPlane::start(&dir, "10s");
    cp.write("services.yaml", &yaml(true));
    let app = App::start("ratings");
    let ratings = MeshProxy::start(
        &dir,
        &cp,
        NodeSpec {
            id: "ratings-1",
            service: "ratings",
            app_port: app.port,
            labels: &[],
        },
    );
    let db = MeshProxy::start(
        &dir,
        &cp,
        NodeSpec {
            id: "db-1",
            service: "db",
            app_port: echo_port,
            labels: &[],
        },
    );
    ratings.wait_ready();
    db.wait_ready();
    let echo_once = || -> Option<Vec<u8>> {
        let mut s = TcpStream::connect(local(db_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"ping").ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).ok()?;
        Some(buf.to_vec())
    };
    assert_eq!(echo_once(), None, "a denied connection was relayed");
    let text = db.metrics();
    assert_eq!(
        metric(
            &text,
            &format!(
                "ringmesh_authz_denied_total{{listener=\"inbound:{db_port}\",policy=\"no-ratings\"}}"
            )
        ),
        Some(1.0),
        "{text}"
    );
    let before = acked(&cp, "db-1", "listener");
    cp.write("services.yaml", &yaml(false));
    wait_acked_change(&cp, "db-1", "listener", &before);
    assert_eq!(echo_once(), Some(b"ping".to_vec()));
}
