//! The mesh CA through the real control plane: CSRs on the discovery
//! stream, the issued X.509-SVID checked with x509-parser, refusals, the
//! generated root on disk, a bring-your-own intermediate, and a trust
//! bundle change on SIGHUP.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use ringmesh_proto::v1::{
    resource::Kind, secret, CertificateSigningRequest, DiscoveryRequest, DiscoveryResponse,
    IssuedCertificate, ResourceType, TrustBundle,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

const SECS5: Duration = Duration::from_secs(5);

const MESH: &str = "\
services:
  - name: a
    ports:
      - {name: http, port: 8080, protocol: http}
    calls: [b]
  - name: b
    mtls: strict
    ports:
      - {name: http, port: 9080, protocol: http}
    calls: []
policies:
  - name: allow-a
    service: b
    action: allow
    rules:
      - sources: {identities: [spiffe://cluster.local/ns/default/sa/a]}
";

const ID_B: &str = "spiffe://cluster.local/ns/default/sa/b";

fn csr(id: &str, ca: bool) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn secret_request(p: &Proxy, with_node: bool, csr_pem: Option<&str>, id: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: with_node.then(|| p.node.clone()),
        r#type: ResourceType::Secret as i32,
        version_info: String::new(),
        response_nonce: String::new(),
        error_detail: None,
        csr: csr_pem.map(|c| CertificateSigningRequest {
            csr_pem: c.as_bytes().to_vec(),
            request_id: id.into(),
        }),
    }
}

/// SECRET then the four types, as a proxy subscribes; returns the SECRET
/// response and the four (ACKed).
async fn subscribe_all(p: &mut Proxy) -> (DiscoveryResponse, Vec<DiscoveryResponse>) {
    p.send(secret_request(p, true, None, "")).await;
    for t in FOUR {
        p.send(DiscoveryRequest {
            node: None,
            r#type: t as i32,
            ..Default::default()
        })
        .await;
    }
    let secret = p.recv(SECS5).await;
    assert_eq!(secret.r#type(), ResourceType::Secret, "SECRET comes first");
    p.ack(&secret).await;
    let mut rest = Vec::new();
    for t in FOUR {
        let r = p.recv(SECS5).await;
        assert_eq!(r.r#type(), t);
        p.ack(&r).await;
        rest.push(r);
    }
    (secret, rest)
}

fn bundle(r: &DiscoveryResponse) -> TrustBundle {
    for res in &r.resources {
        if let Some(Kind::Secret(s)) = &res.kind {
            if let Some(secret::Kind::TrustBundle(b)) = &s.kind {
                assert_eq!(res.name, "trust-bundle");
                return b.clone();
            }
        }
    }
    panic!("no trust bundle in {r:?}")
}

fn identity(r: &DiscoveryResponse) -> Option<IssuedCertificate> {
    r.resources.iter().find_map(|res| match &res.kind {
        Some(Kind::Secret(s)) => match &s.kind {
            Some(secret::Kind::IssuedCertificate(c)) => {
                assert_eq!(res.name, "identity");
                Some(c.clone())
            }
            _ => None,
        },
        _ => None,
    })
}

fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|p| p.unwrap().contents)
        .collect()
}

fn spki_of(der: &[u8]) -> Vec<u8> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.public_key().raw.to_vec()
}

fn verify(child: &[u8], parent_spki: &[u8]) {
    let (_, c) = X509Certificate::from_der(child).unwrap();
    let (_, spki) = SubjectPublicKeyInfo::from_der(parent_spki).unwrap();
    c.verify_signature(Some(&spki)).unwrap();
}

fn metric_line(cp: &ControlPlane, line: &str) -> bool {
    cp.metrics().lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_for_the_nodes_own_identity_gets_an_svid_chaining_to_the_bundle() {
    let cp = ControlPlane::start(&[("mesh.yaml", MESH)], &["--cert-lifetime", "1h"]);
    let mut b = Proxy::open(&cp.url(), node("b-1", "b", "127.0.0.21", &[])).await;
    let (secret, rest) = subscribe_all(&mut b).await;
    let tb = bundle(&secret);
    assert_eq!(tb.trust_domain, "cluster.local");
    assert_eq!(tb.root_certificates_pem.len(), 1);
    assert!(identity(&secret).is_none(), "no certificate before a CSR");

    // Listeners carry the service's mode and its policies.
    let Some(Kind::Listener(l)) = &rest[2]
        .resources
        .iter()
        .find(|r| r.name == "inbound:9080")
        .unwrap()
        .kind
    else {
        panic!()
    };
    assert_eq!(l.mtls_mode, ringmesh_proto::v1::MtlsMode::Strict as i32);
    assert_eq!(l.authorization_policies.len(), 1);
    assert_eq!(l.authorization_policies[0].name, "allow-a");

    // A CSR asking for cA=true rides on the SECRET ACK.
    let mut ack = secret_request(&b, false, Some(&csr(ID_B, true)), "req-1");
    ack.version_info = secret.version_info.clone();
    ack.response_nonce = secret.nonce.clone();
    b.send(ack).await;
    let issued = b.recv(SECS5).await;
    assert_eq!(issued.r#type(), ResourceType::Secret);
    assert_ne!(issued.version_info, secret.version_info);
    assert_ne!(issued.nonce, secret.nonce);
    assert_eq!(bundle(&issued), tb);
    let id = identity(&issued).unwrap();
    assert_eq!(id.request_id, "req-1");
    assert_eq!(id.spiffe_id, ID_B);
    assert_eq!(id.not_after_unix - id.not_before_unix, 3600 + 300);

    let chain = ders(&id.certificate_chain_pem);
    assert_eq!(chain.len(), 1, "a generated root signs leaves directly");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert!(!leaf.is_ca(), "cA=true in the CSR is ignored");
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert_eq!(ku.flags, 1, "digitalSignature only");
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any && !eku.code_signing);
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names, vec![GeneralName::URI(ID_B)]);
    assert_eq!(leaf.validity().not_after.timestamp(), id.not_after_unix);
    let root = ders(&tb.root_certificates_pem[0]);
    verify(&chain[0], &spki_of(&root[0]));

    // Only SECRET was pushed.
    b.ack(&issued).await;
    b.expect_nothing(Duration::from_millis(300)).await;
    assert!(metric_line(
        &cp,
        "ringmesh_control_certificates_issued_total 1"
    ));
    assert!(metric_line(&cp, "ringmesh_control_trust_bundle_roots 1"));
    let st = cp
        .wait_status("certificate in status", |s| {
            !s["nodes"][0]["certificate"].is_null()
        })
        .await;
    assert_eq!(
        st["nodes"][0]["certificate"]["not_after"].as_i64(),
        Some(id.not_after_unix)
    );

    // A renewal gets a new serial and a new version.
    b.send(secret_request(&b, false, Some(&csr(ID_B, false)), "req-2"))
        .await;
    let renewed = b.recv(SECS5).await;
    assert_ne!(renewed.version_info, issued.version_info);
    let id2 = identity(&renewed).unwrap();
    assert_eq!(id2.request_id, "req-2");
    let chain2 = ders(&id2.certificate_chain_pem);
    let (_, leaf2) = X509Certificate::from_der(&chain2[0]).unwrap();
    assert_ne!(leaf2.raw_serial(), leaf.raw_serial());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_for_another_service_ends_the_stream_permission_denied() {
    let cp = ControlPlane::start(&[("mesh.yaml", MESH)], &[]);
    let mut a = Proxy::open(&cp.url(), node("a-1", "a", "127.0.0.22", &[])).await;
    subscribe_all(&mut a).await;
    a.send(secret_request(&a, false, Some(&csr(ID_B, false)), "x"))
        .await;
    let st = a.recv_error(SECS5).await;
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains(ID_B), "{st:?}");
    assert!(metric_line(
        &cp,
        "ringmesh_control_csr_refused_total{reason=\"identity\"} 1"
    ));
    assert!(metric_line(
        &cp,
        "ringmesh_control_certificates_issued_total 0"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_csr_ends_the_stream_invalid_argument() {
    let cp = ControlPlane::start(&[("mesh.yaml", MESH)], &[]);
    let mut b = Proxy::open(&cp.url(), node("b-1", "b", "127.0.0.23", &[])).await;
    subscribe_all(&mut b).await;
    // Flip one bit of the DER inside the PEM.
    let good = csr(ID_B, false);
    let der = &ders(good.as_bytes())[0];
    let mut bad = der.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x01;
    let pem = x509_parser::pem::Pem {
        label: "CERTIFICATE REQUEST".into(),
        contents: bad,
    };
    let text = pem_encode(&pem);
    b.send(secret_request(&b, false, Some(&text), "x")).await;
    let st = b.recv_error(SECS5).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(metric_line(
        &cp,
        "ringmesh_control_csr_refused_total{reason=\"invalid\"} 1"
    ));
}

fn pem_encode(p: &x509_parser::pem::Pem) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in p.contents.chunks(3) {
        let v = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            s.push(if i <= c.len() {
                B64[((v >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    let body: Vec<String> = s
        .as_bytes()
        .chunks(64)
        .map(|l| String::from_utf8(l.to_vec()).unwrap())
        .collect();
    format!(
        "-----BEGIN {0}-----\n{1}\n-----END {0}-----\n",
        p.label,
        body.join("\n")
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_root_is_stored_with_safe_modes_and_reused() {
    let mut cp = ControlPlane::start(&[("mesh.yaml", MESH)], &[]);
    let dir = cp.data_dir.join("ca");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("root.pem")), 0o644);
    assert_eq!(mode(&dir.join("root.key.pem")), 0o600);
    let root = std::fs::read(dir.join("root.pem")).unwrap();
    let root_der = ders(&root);
    let (_, c) = X509Certificate::from_der(&root_der[0]).unwrap();
    assert!(c.is_ca());
    assert_eq!(
        c.subject().to_string(),
        "O=cluster.local, CN=ringmesh root cluster.local"
    );
    let years = (c.validity().not_after.timestamp() - c.validity().not_before.timestamp())
        / (365 * 24 * 3600);
    assert_eq!(years, 10);

    let mut b = Proxy::open(&cp.url(), node("b-1", "b", "127.0.0.24", &[])).await;
    let (s1, _) = subscribe_all(&mut b).await;
    drop(b);
    assert!(cp.stop().success());
    cp.spawn();
    assert_eq!(std::fs::read(dir.join("root.pem")).unwrap(), root);
    let mut b = Proxy::open(&cp.url(), node("b-1", "b", "127.0.0.24", &[])).await;
    let (s2, _) = subscribe_all(&mut b).await;
    assert_eq!(bundle(&s1), bundle(&s2));
    assert_eq!(s1.version_info, s2.version_info, "a content hash");
}

#[test]
fn a_group_readable_key_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("mesh");
    std::fs::create_dir(&cfg).unwrap();
    std::fs::write(cfg.join("mesh.yaml"), MESH).unwrap();
    let ca = tmp.path().join("ca");
    let run = || {
        Command::new(BIN)
            .args(["serve", "--config-dir"])
            .arg(&cfg)
            .args(["--listen", &free_port().to_string()])
            .args(["--admin", &free_port().to_string()])
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .arg("--ca-dir")
            .arg(&ca)
            .output()
            .unwrap()
    };
    // Generate the root once (then stop it): the key is 0600.
    let mut child = Command::new(BIN)
        .args(["serve", "--config-dir"])
        .arg(&cfg)
        .args(["--listen", &free_port().to_string()])
        .args(["--admin", &free_port().to_string()])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--ca-dir")
        .arg(&ca)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let key = ca.join("root.key.pem");
    for _ in 0..500 {
        if key.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: the CA private key is readable by group or others (mode 0640)",
            key.display()
        )),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: not a usable PEM private key", key.display())),
        "{err}"
    );
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// (root cert PEM, root key, root params).
fn root(cn: &str) -> (String, KeyPair, CertificateParams) {
    let key = KeyPair::generate().unwrap();
    let p = ca_params(cn);
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), key, p)
}

fn write_key(path: &Path, pem: &str) {
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byo_intermediate_sends_a_two_certificate_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let (root_pem, root_key, root_params) = root("corp root");
    let issuer = Issuer::new(root_params, root_key);
    let int_key = KeyPair::generate().unwrap();
    let int = ca_params("mesh intermediate")
        .signed_by(&int_key, &issuer)
        .unwrap();
    let cert = tmp.path().join("int.pem");
    std::fs::write(&cert, format!("{}{}", int.pem(), root_pem)).unwrap();
    let key = tmp.path().join("int.key.pem");
    write_key(&key, &int_key.serialize_pem());
    let cp = ControlPlane::start(
        &[("mesh.yaml", MESH)],
        &[
            "--ca-cert",
            cert.to_str().unwrap(),
            "--ca-key",
            key.to_str().unwrap(),
        ],
    );
    let mut b = Proxy::open(&cp.url(), node("b-1", "b", "127.0.0.25", &[])).await;
    let (secret, _) = subscribe_all(&mut b).await;
    let tb = bundle(&secret);
    assert_eq!(tb.root_certificates_pem.len(), 1);
    let root_der = &ders(&tb.root_certificates_pem[0])[0];
    assert_eq!(root_der, &ders(root_pem.as_bytes())[0]);
    b.send(secret_request(&b, false, Some(&csr(ID_B, false)), "r"))
        .await;
    let issued = b.recv(SECS5).await;
    let chain = ders(&identity(&issued).unwrap().certificate_chain_pem);
    assert_eq!(chain.len(), 2, "leaf + intermediate, never the root");
    verify(&chain[0], &spki_of(&chain[1]));
    verify(&chain[1], &spki_of(root_der));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_bundle_pushes_secret_with_both_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let (old_pem, old_key, _) = root("old root");
    let (new_pem, _, _) = root("new root");
    let cert = tmp.path().join("ca.pem");
    std::fs::write(&cert, &old_pem).unwrap();
    let key = tmp.path().join("ca.key.pem");
    write_key(&key, &old_key.serialize_pem());
    let bundle_path = tmp.path().join("bundle.pem");
    std::fs::write(&bundle_path, &old_pem).unwrap();
    let cp = ControlPlane::start(
        &[("mesh.yaml", MESH)],
        &[
            "--ca-cert",
            cert.to_str().unwrap(),
            "--ca-key",
            key.to_str().unwrap(),
            "--ca-bundle",
            bundle_path.to_str().unwrap(),
        ],
    );
    let mut b = Proxy::open(&cp.url(), node("b-1", "b", "127.0.0.26", &[])).await;
    let (s1, _) = subscribe_all(&mut b).await;
    assert_eq!(bundle(&s1).root_certificates_pem.len(), 1);
    b.send(secret_request(&b, false, Some(&csr(ID_B, false)), "r"))
        .await;
    let issued = b.recv(SECS5).await;
    b.ack(&issued).await;
    let cert_before = identity(&issued).unwrap();

    // A broken bundle: the reload fails and nothing is pushed.
    std::fs::write(&bundle_path, "garbage").unwrap();
    hup(&cp);
    b.expect_nothing(Duration::from_millis(500)).await;
    assert!(metric_line(
        &cp,
        "ringmesh_control_ca_reloads_total{result=\"failed\"} 1"
    ));

    std::fs::write(&bundle_path, format!("{old_pem}{new_pem}")).unwrap();
    hup(&cp);
    let pushed = b.recv(SECS5).await;
    assert_eq!(pushed.r#type(), ResourceType::Secret);
    let tb = bundle(&pushed);
    assert_eq!(tb.root_certificates_pem.len(), 2);
    assert_eq!(
        identity(&pushed).unwrap(),
        cert_before,
        "the identity stays"
    );
    b.ack(&pushed).await;
    b.expect_nothing(Duration::from_millis(300)).await;
    assert!(metric_line(
        &cp,
        "ringmesh_control_ca_reloads_total{result=\"ok\"} 1"
    ));
    assert!(metric_line(&cp, "ringmesh_control_trust_bundle_roots 2"));
}

fn hup(cp: &ControlPlane) {
    let st = Command::new("kill")
        .args(["-HUP", &cp.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}
