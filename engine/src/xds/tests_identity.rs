//! Unit tests of the identity flow (CSR, checks of an issued certificate,
//! renewal timing) and of the translation of the mTLS, authorization and
//! edge TLS fields.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use ringmesh_proto::v1 as pb;
use ringmesh_proto::v1::resource::Kind as PbKind;
use x509_parser::prelude::{FromDer, GeneralName, X509CertificationRequest};

use super::identity::{self, Pending};
use super::state::{Kind, State};
use super::translate::{build, translate};
use crate::config::model;

const TD: &str = "cluster.local";
const ME: &str = "spiffe://cluster.local/ns/default/sa/web";

fn node() -> pb::Node {
    pb::Node {
        id: "web-1".into(),
        service: "web".into(),
        namespace: "default".into(),
        ..Default::default()
    }
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(p, key),
        pem,
    }
}

/// A leaf for `id` over `public` (a key pair standing for the public key),
/// valid for `lifetime` from now.
fn leaf(ca: &Ca, public: &KeyPair, id: &str, lifetime: Duration) -> String {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(id.to_owned().try_into().unwrap())];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::seconds(1);
    p.not_after = now + lifetime;
    p.serial_number = Some(vec![1, 2, 3, fastrand::u8(..)].into());
    p.signed_by(public, &ca.issuer).unwrap().pem()
}

fn secret(name: &str, kind: pb::secret::Kind) -> (&str, PbKind) {
    (
        name,
        PbKind::Secret(pb::Secret {
            name: name.into(),
            kind: Some(kind),
        }),
    )
}

fn bundle(roots: &[&str]) -> pb::secret::Kind {
    pb::secret::Kind::TrustBundle(pb::TrustBundle {
        root_certificates_pem: roots.iter().map(|r| r.as_bytes().to_vec()).collect(),
        trust_domain: TD.into(),
    })
}

fn issued(chain: &str, id: &str, request_id: &str) -> pb::secret::Kind {
    pb::secret::Kind::IssuedCertificate(pb::IssuedCertificate {
        certificate_chain_pem: chain.as_bytes().to_vec(),
        spiffe_id: id.into(),
        not_before_unix: 0,
        not_after_unix: 0,
        request_id: request_id.into(),
    })
}

fn secrets(version: &str, resources: Vec<(&str, PbKind)>) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        r#type: pb::ResourceType::Secret as i32,
        version_info: version.into(),
        nonce: format!("n-{version}"),
        resources: resources
            .into_iter()
            .map(|(name, kind)| pb::Resource {
                name: name.into(),
                kind: Some(kind),
            })
            .collect(),
    }
}

/// What the client does with a SECRET response.
fn apply_secret(
    state: &State,
    pending: &Pending,
    resp: &pb::DiscoveryResponse,
) -> Result<State, String> {
    let mut next = state.apply(Kind::Secret, resp)?;
    identity::resolve(&mut next, pending, &node())?;
    Ok(next)
}

/// The key of an open CSR, as a key pair the test CA can sign for.
fn pending_key(pending: &Pending, request_id: &str) -> KeyPair {
    let pem = pending.get(request_id).unwrap().key.bytes().clone();
    KeyPair::from_pem(std::str::from_utf8(&pem).unwrap()).unwrap()
}

/// A state holding a bundle and an identity from `ca`.
fn with_identity(ca: &Ca) -> (State, Pending) {
    let mut pending = Pending::default();
    let s = apply_secret(
        &State::default(),
        &pending,
        &secrets("s1", vec![secret("trust-bundle", bundle(&[&ca.pem]))]),
    )
    .unwrap();
    assert!(s.identity.is_none());
    let csr = pending.new_csr(ME).unwrap();
    let key = pending_key(&pending, &csr.request_id);
    let chain = leaf(ca, &key, ME, Duration::from_secs(3600));
    let s = apply_secret(
        &s,
        &pending,
        &secrets(
            "s2",
            vec![
                secret("trust-bundle", bundle(&[&ca.pem])),
                secret("identity", issued(&chain, ME, &csr.request_id)),
            ],
        ),
    )
    .unwrap();
    pending.remove(&csr.request_id);
    (s, pending)
}

#[test]
fn the_csr_has_an_empty_subject_and_exactly_our_uri_san() {
    let mut pending = Pending::default();
    let a = pending.new_csr(ME).unwrap();
    let b = pending.new_csr(ME).unwrap();
    assert_ne!(a.request_id, b.request_id);
    assert_eq!(pending.len(), 2);
    let text = std::str::from_utf8(&a.csr_pem).unwrap();
    assert!(text.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&a.csr_pem).unwrap();
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents).unwrap();
    assert_eq!(csr.certification_request_info.subject.iter().count(), 0);
    let mut uris = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    other => panic!("unexpected SAN {other:?}"),
                }
            }
        }
    }
    assert_eq!(uris, [ME]);
    // Each CSR has its own key.
    let spki = |r: &str| pending.get(r).unwrap().spki.clone();
    assert_ne!(spki(&a.request_id), spki(&b.request_id));
    assert_eq!(
        csr.certification_request_info.subject_pki.raw,
        spki(&a.request_id).as_slice()
    );
    // The key never shows in Debug output.
    let dbg = format!("{pending:?}");
    assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
}

#[test]
fn open_csrs_are_bounded() {
    let mut pending = Pending::default();
    let first = pending.new_csr(ME).unwrap();
    for _ in 0..6 {
        pending.new_csr(ME).unwrap();
    }
    assert!(pending.len() <= 4);
    assert!(pending.get(&first.request_id).is_none());
}

#[test]
fn an_issued_certificate_for_our_key_and_id_is_put_in_force() {
    let ca = ca("root");
    let (s, _) = with_identity(&ca);
    let a = s.identity.as_ref().expect("identity in force");
    assert_eq!(a.spiffe_id, ME);
    assert!(!a.serial.is_empty());
    assert!(a.not_after - a.not_before >= 3600);
    assert_eq!(s.version(Kind::Secret), "s2");
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("PRIVATE KEY"), "state Debug shows the key");
}

#[test]
fn a_certificate_for_another_identity_is_refused() {
    let ca = ca("root");
    let (s, mut pending) = with_identity(&ca);
    let before = s.identity.clone();
    let csr = pending.new_csr(ME).unwrap();
    let key = pending_key(&pending, &csr.request_id);
    let other = "spiffe://cluster.local/ns/default/sa/admin";
    // The SAN is wrong even though the spiffe_id field says ours.
    let chain = leaf(&ca, &key, other, Duration::from_secs(3600));
    let resp = secrets(
        "s3",
        vec![
            secret("trust-bundle", bundle(&[&ca.pem])),
            secret("identity", issued(&chain, ME, &csr.request_id)),
        ],
    );
    let err = apply_secret(&s, &pending, &resp).unwrap_err();
    assert_eq!(
        err,
        format!(
            "secret \"identity\": the certificate's URI SANs are [{other:?}], this proxy is {ME:?}"
        )
    );
    // The field naming another identity is refused before parsing.
    let resp = secrets(
        "s3",
        vec![
            secret("trust-bundle", bundle(&[&ca.pem])),
            secret("identity", issued(&chain, other, &csr.request_id)),
        ],
    );
    let err = apply_secret(&s, &pending, &resp).unwrap_err();
    assert!(err.contains("this proxy is"), "{err}");
    assert_eq!(s.identity, before);
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let ca = ca("root");
    let (s, mut pending) = with_identity(&ca);
    let csr = pending.new_csr(ME).unwrap();
    let stranger = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let chain = leaf(&ca, &stranger, ME, Duration::from_secs(3600));
    let resp = secrets(
        "s3",
        vec![
            secret("trust-bundle", bundle(&[&ca.pem])),
            secret("identity", issued(&chain, ME, &csr.request_id)),
        ],
    );
    let err = apply_secret(&s, &pending, &resp).unwrap_err();
    assert_eq!(
        err,
        format!(
            "secret \"identity\": the certificate's public key is not the key of CSR {:?}",
            csr.request_id
        )
    );
    // The CSR stays open: the right certificate is still taken.
    let key = pending_key(&pending, &csr.request_id);
    let good = leaf(&ca, &key, ME, Duration::from_secs(3600));
    let resp = secrets(
        "s4",
        vec![
            secret("trust-bundle", bundle(&[&ca.pem])),
            secret("identity", issued(&good, ME, &csr.request_id)),
        ],
    );
    let next = apply_secret(&s, &pending, &resp).unwrap();
    assert_eq!(next.identity.unwrap().request_id, csr.request_id);
}

#[test]
fn an_answer_to_no_open_csr_and_expired_certificates_are_refused() {
    let ca = ca("root");
    let (s, mut pending) = with_identity(&ca);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let chain = leaf(&ca, &key, ME, Duration::from_secs(3600));
    let resp = secrets(
        "s3",
        vec![
            secret("trust-bundle", bundle(&[&ca.pem])),
            secret("identity", issued(&chain, ME, "nobody")),
        ],
    );
    assert_eq!(
        apply_secret(&s, &pending, &resp).unwrap_err(),
        "secret \"identity\": request_id \"nobody\" answers no CSR this proxy has open"
    );
    let csr = pending.new_csr(ME).unwrap();
    let key = pending_key(&pending, &csr.request_id);
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(ME.to_owned().try_into().unwrap())];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::seconds(100);
    p.not_after = now - time::Duration::seconds(10);
    let old = p.signed_by(&key, &ca.issuer).unwrap().pem();
    let resp = secrets(
        "s3",
        vec![
            secret("trust-bundle", bundle(&[&ca.pem])),
            secret("identity", issued(&old, ME, &csr.request_id)),
        ],
    );
    let err = apply_secret(&s, &pending, &resp).unwrap_err();
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn a_bundle_only_change_keeps_the_identity() {
    let ca1 = ca("root1");
    let ca2 = ca("root2");
    let (s, pending) = with_identity(&ca1);
    let current = s.identity.clone().unwrap();
    let Some(pb::secret::Kind::IssuedCertificate(ic)) = s.secrets["identity"].kind.clone() else {
        panic!()
    };
    let resp = secrets(
        "s3",
        vec![
            secret("trust-bundle", bundle(&[&ca1.pem, &ca2.pem])),
            secret("identity", pb::secret::Kind::IssuedCertificate(ic)),
        ],
    );
    let next = apply_secret(&s, &pending, &resp).unwrap();
    assert_eq!(next.identity.as_ref(), Some(&current));
    assert_ne!(next, s, "a new bundle is a new state (a new epoch)");
    // The bundle is every root, concatenated.
    let t = translate(&model::File::default(), &next).unwrap();
    let id = t.file.identity.expect("model identity");
    let bundle = String::from_utf8(id.trust_bundle.inline.clone().unwrap().to_vec()).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(bundle.contains(ca1.pem.trim()) && bundle.contains(ca2.pem.trim()));
    let key = String::from_utf8(id.private_key.inline.clone().unwrap().to_vec()).unwrap();
    assert!(key.contains("PRIVATE KEY"));
    let chain = id.certificate.inline.clone().unwrap();
    assert_eq!(&*chain, &*current.chain_pem);
    // And none of it is serialized.
    let json = serde_json::to_string(&model::Identity {
        certificate: id.certificate.clone(),
        private_key: model::Pem {
            file: None,
            inline: Some(key.into_bytes().into()),
        },
        trust_bundle: id.trust_bundle.clone(),
    })
    .unwrap();
    assert!(!json.contains("PRIVATE KEY"), "{json}");
}

#[test]
fn the_secret_set_is_checked() {
    let ca = ca("root");
    let pending = Pending::default();
    let s = State::default();
    let cases: Vec<(pb::DiscoveryResponse, &str)> = vec![
        (
            secrets("x", vec![]),
            "the secret set has no \"trust-bundle\"",
        ),
        (
            secrets(
                "x",
                vec![secret(
                    "trust-bundle",
                    pb::secret::Kind::TrustBundle(pb::TrustBundle {
                        root_certificates_pem: vec![ca.pem.clone().into_bytes()],
                        trust_domain: String::new(),
                    }),
                )],
            ),
            "secret \"trust-bundle\": trust_domain is empty",
        ),
        (
            secrets("x", vec![secret("trust-bundle", bundle(&[]))]),
            "secret \"trust-bundle\": holds no root certificate",
        ),
        (
            secrets("x", vec![secret("trust-bundle", bundle(&["junk"]))]),
            "secret \"trust-bundle\": root [0]: no PEM certificate",
        ),
        (
            secrets("x", vec![secret("roots", bundle(&[&ca.pem]))]),
            "secret \"roots\": a trust bundle must be named \"trust-bundle\"",
        ),
        (
            secrets(
                "x",
                vec![secret(
                    "edge",
                    pb::secret::Kind::TlsCertificate(pb::TlsCertificate {
                        certificate_chain_pem: b"x".to_vec(),
                        private_key_pem: Vec::new(),
                    }),
                )],
            ),
            "secret \"edge\": private_key_pem is empty",
        ),
    ];
    for (resp, want) in cases {
        assert_eq!(apply_secret(&s, &pending, &resp).unwrap_err(), want);
    }
}

#[test]
fn renewal_is_at_half_life_with_jitter_and_at_least_a_second_away() {
    let nb = 1_000_000;
    let na = nb + 4;
    let at = |unix: f64| UNIX_EPOCH + Duration::from_secs_f64(unix);
    let d = identity::renewal_delay_at(nb, na, 0.5, at(nb as f64));
    assert_eq!(d, Duration::from_secs(2));
    let lo = identity::renewal_delay_at(nb, na, 0.45, at(nb as f64));
    let hi = identity::renewal_delay_at(nb, na, 0.55, at(nb as f64));
    assert!((lo.as_secs_f64() - 1.8).abs() < 1e-6, "{lo:?}");
    assert!((hi.as_secs_f64() - 2.2).abs() < 1e-6, "{hi:?}");
    // Past the renewal point (e.g. after a long disconnect): one second.
    let late = identity::renewal_delay_at(nb, na, 0.5, at(nb as f64 + 3.5));
    assert_eq!(late, identity::MIN_RENEW_DELAY);
    // 24 h certificates renew around 12 h.
    let day = identity::renewal_delay_at(nb, nb + 86_400, 0.5, at(nb as f64));
    assert_eq!(day, Duration::from_secs(43_200));
    // The jittered delay stays within the window.
    let ca = ca("root");
    let (s, _) = with_identity(&ca);
    let a = s.identity.unwrap();
    let now = SystemTime::now();
    let life = (a.not_after - a.not_before) as f64;
    let since_nb = now.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() - a.not_before as f64;
    for _ in 0..50 {
        let d = identity::renewal_delay(&a, now).as_secs_f64() + since_nb;
        assert!(d >= life * 0.45 - 1e-6 && d <= life * 0.55 + 1e-6, "{d}");
    }
    // An unanswered CSR is retried within half the life left.
    assert_eq!(identity::retry_delay(None, 0), identity::CSR_RETRY);
    let mut short = a.clone();
    short.not_after = identity::unix_now() + 4;
    assert!(identity::retry_delay(Some(&short), identity::unix_now()) <= Duration::from_secs(2));
}

// ----- translation of the issue-5 fields ------------------------------------------

fn cluster_res<'a>(name: &'a str, expected: &str) -> (&'a str, PbKind) {
    (
        name,
        PbKind::Cluster(pb::Cluster {
            name: name.into(),
            expected_identity: expected.into(),
            ..Default::default()
        }),
    )
}

fn eps<'a>(name: &'a str, list: &[(&str, bool)]) -> (&'a str, PbKind) {
    (
        name,
        PbKind::Endpoints(pb::ClusterEndpoints {
            cluster: name.into(),
            endpoints: list
                .iter()
                .map(|(a, mtls)| pb::Endpoint {
                    address: (*a).into(),
                    mtls: *mtls,
                    ..Default::default()
                })
                .collect(),
        }),
    )
}

fn response(kind: Kind, version: &str, resources: Vec<(&str, PbKind)>) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        r#type: kind.proto() as i32,
        version_info: version.into(),
        nonce: format!("n-{version}"),
        resources: resources
            .into_iter()
            .map(|(name, kind)| pb::Resource {
                name: name.into(),
                kind: Some(kind),
            })
            .collect(),
    }
}

fn tcp_listener(name: &str, f: impl FnOnce(&mut pb::Listener)) -> (&str, PbKind) {
    let mut l = pb::Listener {
        name: name.into(),
        address: "127.0.0.1:15006".into(),
        protocol: pb::Protocol::Tcp as i32,
        direction: pb::Direction::Inbound as i32,
        cluster: "inbound:9080".into(),
        ..Default::default()
    };
    f(&mut l);
    (name, PbKind::Listener(l))
}

/// A state with an identity, cluster `inbound:9080` and `listener` applied.
fn with_listener(
    ca: &Ca,
    extra_secrets: Vec<(&str, PbKind)>,
    listener: (&str, PbKind),
) -> Result<State, String> {
    let (s, _) = with_identity(ca);
    let mut all = vec![
        secret("trust-bundle", bundle(&[&ca.pem])),
        ("identity", PbKind::Secret(s.secrets["identity"].clone())),
    ];
    all.extend(extra_secrets);
    let s = s.apply(Kind::Secret, &secrets("s3", all))?;
    let s = s.apply(
        Kind::Cluster,
        &response(Kind::Cluster, "c1", vec![cluster_res("inbound:9080", "")]),
    )?;
    s.apply(
        Kind::Listener,
        &response(Kind::Listener, "l1", vec![listener]),
    )
}

fn the_listener(s: &State) -> Result<model::Listener, String> {
    let t = translate(&model::File::default(), s)?;
    Ok(t.file.listeners.into_iter().next().expect("a listener"))
}

#[test]
fn cluster_mtls_follows_the_expected_identity_and_the_endpoints() {
    let id = "spiffe://cluster.local/ns/default/sa/reviews";
    let s = State::default()
        .apply(
            Kind::Cluster,
            &response(
                Kind::Cluster,
                "c1",
                vec![
                    cluster_res("reviews.default:9080/v2", id),
                    cluster_res("plain.default:80", id),
                    cluster_res("static:80", ""),
                ],
            ),
        )
        .unwrap()
        .apply(
            Kind::Endpoints,
            &response(
                Kind::Endpoints,
                "e1",
                vec![
                    eps(
                        "reviews.default:9080/v2",
                        &[("127.0.0.1:15006", true), ("10.0.0.9:9080", false)],
                    ),
                    eps("plain.default:80", &[("10.0.0.1:80", false)]),
                    eps("static:80", &[("10.0.0.2:80", true)]),
                ],
            ),
        )
        .unwrap();
    let t = translate(&model::File::default(), &s).unwrap();
    let get = |n: &str| t.file.clusters.iter().find(|c| c.name == n).unwrap();
    let m = get("reviews.default:9080/v2").mtls.as_ref().expect("mtls");
    assert_eq!(m.identity, id);
    assert_eq!(m.sni.as_deref(), Some("reviews.default"));
    assert_eq!(m.plaintext_endpoints, ["10.0.0.9:9080"]);
    assert!(
        get("plain.default:80").mtls.is_none(),
        "every endpoint plaintext"
    );
    assert!(get("static:80").mtls.is_none(), "no expected identity");
    assert!(build(&model::File::default(), Path::new("cp"), &s).is_ok());
}

#[test]
fn listener_mtls_modes() {
    let ca = ca("root");
    for (mode, want) in [
        (pb::MtlsMode::Strict, Some(model::MtlsMode::Strict)),
        (pb::MtlsMode::Permissive, Some(model::MtlsMode::Permissive)),
        (pb::MtlsMode::Unspecified, None),
    ] {
        let s = with_listener(
            &ca,
            vec![],
            tcp_listener("inbound:9080", |l| {
                l.set_mtls_mode(mode);
            }),
        )
        .unwrap();
        let l = the_listener(&s).unwrap();
        assert_eq!(l.mtls.as_ref().map(|m| m.mode), want, "{mode:?}");
        assert!(l.mtls.as_ref().is_none_or(|m| m.detect_timeout.is_none()));
    }
    let s = with_listener(
        &ca,
        vec![],
        tcp_listener("inbound:9080", |l| l.mtls_mode = 9),
    )
    .unwrap();
    assert_eq!(
        the_listener(&s).unwrap_err(),
        "listener \"inbound:9080\": mtls_mode: unknown value 9"
    );
}

#[test]
fn an_mtls_listener_waits_for_the_identity() {
    let s = State::default()
        .apply(
            Kind::Cluster,
            &response(Kind::Cluster, "c1", vec![cluster_res("inbound:9080", "")]),
        )
        .unwrap()
        .apply(
            Kind::Listener,
            &response(
                Kind::Listener,
                "l1",
                vec![
                    tcp_listener("inbound:9080", |l| l.set_mtls_mode(pb::MtlsMode::Strict)),
                    tcp_listener("plain", |l| l.address = "127.0.0.1:15007".into()),
                ],
            ),
        )
        .unwrap();
    let t = translate(&model::File::default(), &s).unwrap();
    let names: Vec<&str> = t.file.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["plain"]);
    assert!(t.file.identity.is_none());
}

#[test]
fn authorization_policies_are_translated() {
    let ca = ca("root");
    let s = with_listener(
        &ca,
        vec![],
        tcp_listener("inbound:9080", |l| {
            l.authorization_policies = vec![
                pb::AuthorizationPolicy {
                    name: "deny-admin".into(),
                    service: "web".into(),
                    action: pb::authorization_policy::Action::Deny as i32,
                    rules: vec![pb::AuthorizationRule {
                        source_identities: vec!["spiffe://cluster.local/ns/x/sa/bad".into()],
                        paths: vec![pb::PathMatch {
                            kind: Some(pb::path_match::Kind::Prefix("/admin".into())),
                        }],
                        ..Default::default()
                    }],
                },
                pb::AuthorizationPolicy {
                    name: "allow-front".into(),
                    service: "web".into(),
                    action: pb::authorization_policy::Action::Allow as i32,
                    rules: vec![pb::AuthorizationRule {
                        source_namespaces: vec!["default".into()],
                        methods: vec!["GET".into()],
                        paths: vec![pb::PathMatch {
                            kind: Some(pb::path_match::Kind::Exact("/health".into())),
                        }],
                        ports: vec![9080],
                        ..Default::default()
                    }],
                },
            ];
        }),
    )
    .unwrap();
    let l = the_listener(&s).unwrap();
    assert_eq!(l.authorization.len(), 2);
    let deny = &l.authorization[0];
    assert_eq!(deny.name, "deny-admin");
    assert_eq!(deny.action, model::AuthzAction::Deny);
    assert_eq!(
        deny.rules[0].identities,
        ["spiffe://cluster.local/ns/x/sa/bad"]
    );
    assert_eq!(deny.rules[0].paths[0].prefix.as_deref(), Some("/admin"));
    assert!(deny.rules[0].paths[0].exact.is_none());
    let allow = &l.authorization[1];
    assert_eq!(allow.action, model::AuthzAction::Allow);
    assert_eq!(allow.rules[0].namespaces, ["default"]);
    assert_eq!(allow.rules[0].methods, ["GET"]);
    assert_eq!(allow.rules[0].paths[0].exact.as_deref(), Some("/health"));
    assert_eq!(allow.rules[0].ports, [9080]);
}

#[test]
fn bad_authorization_policies_are_refused_by_name() {
    let ca = ca("root");
    let policy = |f: &dyn Fn(&mut pb::AuthorizationPolicy)| {
        let mut p = pb::AuthorizationPolicy {
            name: "p1".into(),
            service: "web".into(),
            action: pb::authorization_policy::Action::Allow as i32,
            rules: vec![pb::AuthorizationRule::default()],
        };
        f(&mut p);
        p
    };
    let cases: Vec<(pb::AuthorizationPolicy, &str)> = vec![
        (
            policy(&|p| p.rules[0].ports = vec![80, 70000]),
            "listener \"inbound:9080\": authorization policy \"p1\": rules[0].ports: 70000 is not a port",
        ),
        (
            policy(&|p| p.rules[0].ports = vec![0]),
            "listener \"inbound:9080\": authorization policy \"p1\": rules[0].ports: 0 is not a port",
        ),
        (
            policy(&|p| p.action = 0),
            "listener \"inbound:9080\": authorization policy \"p1\": action is unspecified",
        ),
        (
            policy(&|p| p.action = 7),
            "listener \"inbound:9080\": authorization policy \"p1\": action: unknown value 7",
        ),
        (
            policy(&|p| p.rules[0].paths = vec![pb::PathMatch { kind: None }]),
            "listener \"inbound:9080\": authorization policy \"p1\": rules[0].paths[0]: set one of exact, prefix",
        ),
        (
            policy(&|p| p.name.clear()),
            "listener \"inbound:9080\": an authorization policy has no name",
        ),
    ];
    for (p, want) in cases {
        let s = with_listener(
            &ca,
            vec![],
            tcp_listener("inbound:9080", |l| {
                l.authorization_policies = vec![p.clone()]
            }),
        )
        .unwrap();
        assert_eq!(the_listener(&s).unwrap_err(), want);
        // The client NACKs with the same text (build = translate + compile).
        assert_eq!(
            build(&model::File::default(), Path::new("cp"), &s).unwrap_err(),
            want
        );
    }
}

fn tls_secret(name: &str) -> (&str, PbKind) {
    secret(
        name,
        pb::secret::Kind::TlsCertificate(pb::TlsCertificate {
            certificate_chain_pem: format!("CHAIN {name}").into_bytes(),
            private_key_pem: format!("KEY {name}").into_bytes(),
        }),
    )
}

#[test]
fn sni_certificates_come_inline_from_the_secret_set() {
    let ca = ca("root");
    let s = with_listener(
        &ca,
        vec![tls_secret("edge-a"), tls_secret("edge-default")],
        tcp_listener("edge", |l| {
            l.sni_certificates = vec![
                pb::SniCertificate {
                    server_names: vec!["a.example.com".into(), "*.a.example.com".into()],
                    secret: "edge-a".into(),
                },
                pb::SniCertificate {
                    server_names: vec![],
                    secret: "edge-default".into(),
                },
            ];
            l.alpn = vec!["h2".into(), "http/1.1".into()];
        }),
    )
    .unwrap();
    let l = the_listener(&s).unwrap();
    let tls = l.tls.expect("edge tls");
    assert_eq!(tls.alpn, ["h2", "http/1.1"]);
    assert_eq!(tls.certificates.len(), 2);
    let a = &tls.certificates[0];
    assert_eq!(a.server_names, ["a.example.com", "*.a.example.com"]);
    assert_eq!(&**a.certificate.inline.as_ref().unwrap(), b"CHAIN edge-a");
    assert_eq!(&**a.private_key.inline.as_ref().unwrap(), b"KEY edge-a");
    assert!(a.certificate.file.is_none());
    assert!(tls.certificates[1].server_names.is_empty());
    assert!(l.mtls.is_none());
}

#[test]
fn an_unknown_or_wrong_secret_is_refused() {
    let ca = ca("root");
    let sni = |name: &str| {
        let name = name.to_owned();
        tcp_listener("edge", move |l| {
            l.sni_certificates = vec![pb::SniCertificate {
                server_names: vec![],
                secret: name,
            }];
        })
    };
    assert_eq!(
        with_listener(&ca, vec![], sni("nope")).unwrap_err(),
        "listener \"edge\": unknown secret \"nope\""
    );
    assert_eq!(
        with_listener(&ca, vec![], sni("trust-bundle")).unwrap_err(),
        "listener \"edge\": secret \"trust-bundle\" is not a tls_certificate"
    );
    // A SECRET update dropping a secret a listener uses is refused too.
    let s = with_listener(&ca, vec![tls_secret("edge-a")], sni("edge-a")).unwrap();
    let pending = Pending::default();
    let err = apply_secret(
        &s,
        &pending,
        &secrets(
            "s9",
            vec![
                secret("trust-bundle", bundle(&[&ca.pem])),
                ("identity", PbKind::Secret(s.secrets["identity"].clone())),
            ],
        ),
    )
    .unwrap_err();
    assert_eq!(err, "listener \"edge\": unknown secret \"edge-a\"");
    // ALPN alone means nothing.
    let s = with_listener(
        &ca,
        vec![],
        tcp_listener("edge", |l| l.alpn = vec!["h2".into()]),
    )
    .unwrap();
    assert_eq!(
        the_listener(&s).unwrap_err(),
        "listener \"edge\": alpn without sni_certificates"
    );
}
