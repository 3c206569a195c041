//! The certificates of a `tls` run, made fresh by rcgen (ECDSA P-256): a
//! self-signed mesh root, an X.509-SVID for proxy A (`sa/a`, also the
//! handshake client's) and for proxy B (`sa/b`), and an edge server
//! certificate for `localhost` / `bench.local` / 127.0.0.1 that ringmesh's
//! edge listener and nginx `listen ssl` both serve. PEM files under `dir`,
//! world-readable (nginx workers run as nobody; they are throwaway keys).

use crate::{write_file, Res};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

pub const TRUST_DOMAIN: &str = "cluster.local";

/// `spiffe://cluster.local/ns/default/sa/NAME`.
pub fn spiffe_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{name}")
}

/// A certificate (chain, leaf first) and its key, as files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf's DER, to pin what a server presents.
    pub leaf_der: Vec<u8>,
}

/// Every file of a run.
#[derive(Clone, Debug)]
pub struct Certs {
    pub root: PathBuf,
    pub a: Pair,
    pub b: Pair,
    pub edge: Pair,
}

fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("certificates ({what}): {e}")
}

/// Makes the root, the two SVIDs and the edge certificate under `dir`.
pub fn generate(dir: &Path) -> Res<Certs> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let now = OffsetDateTime::now_utc();
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err("root key"))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, TRUST_DOMAIN);
    dn.push(DnType::CommonName, "ringmesh-bench root");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(30);
    let root_cert = p.self_signed(&root_key).map_err(err("root"))?;
    let root = dir.join("root.pem");
    write_file(&root, &root_cert.pem())?;
    let issuer = Issuer::new(p, root_key);

    let svid = |name: &str| -> Res<Pair> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err(name))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(spiffe_id(name).try_into().map_err(err(name))?)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + Duration::days(1);
        let c = p.signed_by(&key, &issuer).map_err(err(name))?;
        write_pair(dir, name, &c, &key)
    };
    let a = svid("a")?;
    let b = svid("b")?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err("edge"))?;
    let mut p = CertificateParams::new(vec!["localhost".to_string(), "bench.local".to_string()])
        .map_err(err("edge"))?;
    p.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "bench.local");
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(1);
    let c = p.signed_by(&key, &issuer).map_err(err("edge"))?;
    let edge = write_pair(dir, "edge", &c, &key)?;
    Ok(Certs { root, a, b, edge })
}

fn write_pair(dir: &Path, name: &str, c: &rcgen::Certificate, key: &KeyPair) -> Res<Pair> {
    let cert = dir.join(format!("{name}.pem"));
    let keyf = dir.join(format!("{name}.key"));
    write_file(&cert, &c.pem())?;
    write_file(&keyf, &key.serialize_pem())?;
    Ok(Pair {
        cert,
        key: keyf,
        leaf_der: c.der().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_every_file() {
        let dir = std::env::temp_dir().join(format!("rm-bench-certs-{}", std::process::id()));
        let c = generate(&dir).unwrap();
        for f in [
            &c.root,
            &c.a.cert,
            &c.a.key,
            &c.b.cert,
            &c.b.key,
            &c.edge.cert,
        ] {
            let s = std::fs::read_to_string(f).unwrap();
            assert!(s.starts_with("-----BEGIN "), "{}", f.display());
        }
        assert!(std::fs::read_to_string(&c.b.key)
            .unwrap()
            .contains("PRIVATE KEY"));
        assert_ne!(c.a.leaf_der, c.b.leaf_der);
        assert_eq!(spiffe_id("b"), "spiffe://cluster.local/ns/default/sa/b");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
