//! A test CA and its leaves (rcgen), written as PEM files: SPIFFE SVIDs for
//! mesh mTLS between proxies and DNS-named certificates for edge TLS. The same
//! recipe for every test that needs one.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

pub const TD: &str = "td.test";

/// The SPIFFE ID of service account `sa` in the test trust domain.
pub fn id(sa: &str) -> String {
    format!("spiffe://{TD}/ns/default/sa/{sa}")
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(1);
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(p, key),
        pem,
    }
}

/// A leaf signed by `ca` (server and client auth), valid for two hours.
pub fn leaf(ca: &Ca, san: SanType) -> (String, String) {
    leaf_with(ca, san, false)
}

/// [`leaf`]; `expired`: its validity ended an hour ago.
pub fn leaf_with(ca: &Ca, san: SanType, expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![san];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = OffsetDateTime::now_utc();
    if expired {
        p.not_before = now - time::Duration::hours(3);
        p.not_after = now - time::Duration::hours(1);
    } else {
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::hours(2);
    }
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub fn spiffe(sa: &str) -> SanType {
    SanType::URI(id(sa).try_into().unwrap())
}

pub fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

/// The PEM files of one test under a scratch directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Ca,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        Pki {
            dir: super::scratch_dir("pki"),
            ca: ca("mesh root"),
        }
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    }

    /// The CA certificate file.
    pub fn bundle(&self) -> String {
        self.write("bundle.pem", &self.ca.pem)
    }

    /// (cert file, key file) of a new leaf with `san`.
    pub fn pair(&self, name: &str, san: SanType) -> (String, String) {
        self.pair_from(name, &self.ca, san, false)
    }

    /// (cert file, key file) of a leaf of `ca` (perhaps another root),
    /// expired or not.
    pub fn pair_from(&self, name: &str, ca: &Ca, san: SanType, expired: bool) -> (String, String) {
        let (c, k) = leaf_with(ca, san, expired);
        (
            self.write(&format!("{name}.pem"), &c),
            self.write(&format!("{name}.key"), &k),
        )
    }

    /// The config's `identity:` section for service account `sa`.
    pub fn identity(&self, sa: &str) -> String {
        let (c, k) = self.pair(sa, spiffe(sa));
        format!(
            "identity:\n  certificate: {{ file: {c} }}\n  private_key: {{ file: {k} }}\n  trust_bundle: {{ file: {} }}\n",
            self.bundle()
        )
    }
}
