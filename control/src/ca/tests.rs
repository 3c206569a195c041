use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, IsCa, KeyPair, SanType,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{pem, store, Ca, Refusal};
use std::time::Duration;

const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

fn generated() -> Ca {
    let (cert, key) = store::generate_root("cluster.local").unwrap();
    Ca::from_pem(
        &cert,
        "root.pem",
        &key,
        "root.key.pem",
        None,
        Duration::from_secs(3600),
    )
    .unwrap()
}

fn csr(alg: &'static rcgen::SignatureAlgorithm, sans: &[&str], ca: bool) -> String {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI((*s).try_into().unwrap()))
        .collect();
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p.serialize_request(&key).unwrap().pem().unwrap()
}

#[test]
fn signs_a_fresh_leaf_from_our_params() {
    let ca = generated();
    let now = OffsetDateTime::now_utc();
    let issued = ca
        .sign(
            csr(&PKCS_ECDSA_P256_SHA256, &[ID], true).as_bytes(),
            ID,
            now,
        )
        .unwrap();
    assert_eq!(issued.not_after - issued.not_before, 3600 + 300);
    assert_eq!(issued.serial.len(), 32);
    let certs = pem::decode_certs(issued.chain_pem.as_bytes()).unwrap();
    assert_eq!(certs.len(), 1, "a root never travels in the chain");
    let (_, leaf) = X509Certificate::from_der(&certs[0]).unwrap();
    assert!(!leaf.is_ca());
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.key_encipherment());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names, vec![GeneralName::URI(ID)]);
    let roots = pem::decode_certs(ca.roots[0].as_bytes()).unwrap();
    let (_, root) = X509Certificate::from_der(&roots[0]).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();
}

#[test]
fn ed25519_is_accepted_and_p384_is_not() {
    let ca = generated();
    let now = OffsetDateTime::now_utc();
    ca.sign(csr(&PKCS_ED25519, &[ID], false).as_bytes(), ID, now)
        .unwrap();
    let r = ca
        .sign(
            csr(&PKCS_ECDSA_P384_SHA384, &[ID], false).as_bytes(),
            ID,
            now,
        )
        .unwrap_err();
    assert_eq!(r.reason(), "invalid", "{r:?}");
}

#[test]
fn refusals() {
    let ca = generated();
    let now = OffsetDateTime::now_utc();
    let other = "spiffe://cluster.local/ns/default/sa/ratings";
    let r = ca
        .sign(
            csr(&PKCS_ECDSA_P256_SHA256, &[other], false).as_bytes(),
            ID,
            now,
        )
        .unwrap_err();
    assert!(matches!(r, Refusal::Identity(_)), "{r:?}");
    let r = ca
        .sign(
            csr(&PKCS_ECDSA_P256_SHA256, &[ID, other], false).as_bytes(),
            ID,
            now,
        )
        .unwrap_err();
    assert!(matches!(r, Refusal::Invalid(_)), "{r:?}");
    let r = ca
        .sign(csr(&PKCS_ECDSA_P256_SHA256, &[], false).as_bytes(), ID, now)
        .unwrap_err();
    assert!(matches!(r, Refusal::Invalid(_)), "{r:?}");
    let r = ca.sign(b"garbage", ID, now).unwrap_err();
    assert!(matches!(r, Refusal::Invalid(_)), "{r:?}");
}

#[test]
fn backdate_never_exceeds_the_lifetime() {
    let (cert, key) = store::generate_root("td").unwrap();
    let ca = Ca::from_pem(&cert, "c", &key, "k", None, Duration::from_secs(3)).unwrap();
    let issued = ca
        .sign(
            csr(&PKCS_ECDSA_P256_SHA256, &[ID], false).as_bytes(),
            ID,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    assert_eq!(issued.not_after - issued.not_before, 6);
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let (cert, _) = store::generate_root("td").unwrap();
    let (_, key) = store::generate_root("td").unwrap();
    let e = Ca::from_pem(&cert, "c.pem", &key, "k.pem", None, Duration::from_secs(3))
        .err()
        .unwrap();
    assert!(e.starts_with("k.pem: this key does not belong"), "{e}");
}
