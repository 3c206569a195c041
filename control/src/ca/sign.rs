//! Issuing an X.509-SVID from a proxy's CSR. The CSR contributes its public
//! key and nothing else: the certificate is built from our own parameters,
//! so a CSR asking for cA=true, other usages or other names gets none of
//! them.

use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose,
    IsCa, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;

use super::{random_serial, Ca};

/// The longest clock skew a new certificate tolerates: it is valid from
/// this long before it was issued (never more than its lifetime).
pub const BACKDATE: Duration = Duration::from_secs(300);

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A well-formed CSR for an identity the node may not have.
    Identity(String),
    /// Unparsable, a bad signature, an unsupported key, or not exactly one
    /// URI SAN.
    Invalid(String),
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Identity(_) => "identity",
            Refusal::Invalid(_) => "invalid",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Refusal::Identity(m) | Refusal::Invalid(m) => m,
        }
    }
}

/// A signed certificate for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Leaf, then the CA's intermediates (PEM).
    pub chain_pem: String,
    pub spiffe_id: String,
    pub not_before: i64,
    pub not_after: i64,
    /// Lower-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
}

impl Ca {
    /// Checks `csr_pem` and signs a leaf for `spiffe_id` valid from
    /// `now - min(BACKDATE, lifetime)` to `now + lifetime`.
    pub fn sign(
        &self,
        csr_pem: &[u8],
        spiffe_id: &str,
        now: OffsetDateTime,
    ) -> Result<Issued, Refusal> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem)
            .map_err(|e| Refusal::Invalid(format!("the CSR is not PEM: {e}")))?;
        let csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| Refusal::Invalid(format!("the CSR does not verify: {e}")))?;
        check_key(&der)?;
        let uri = match csr.params.subject_alt_names.as_slice() {
            [SanType::URI(u)] => u.as_str().to_owned(),
            sans => {
                return Err(Refusal::Invalid(format!(
                    "the CSR must carry exactly one URI SAN ({spiffe_id}); it has {} SANs",
                    sans.len()
                )))
            }
        };
        if uri != spiffe_id {
            return Err(Refusal::Identity(format!(
                "the CSR asks for {uri:?}; this node may only have {spiffe_id}"
            )));
        }
        let backdate = BACKDATE.min(self.lifetime);
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names =
            vec![SanType::URI(uri.try_into().map_err(|_| {
                Refusal::Invalid("the SPIFFE ID is not an IA5 string".into())
            })?)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        p.not_before = now - backdate;
        p.not_after = now + self.lifetime;
        let serial = random_serial();
        let serial_hex = serial.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        p.serial_number = Some(serial);
        let leaf = p
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| Refusal::Invalid(format!("cannot sign this CSR: {e}")))?;
        let mut chain_pem = leaf.pem();
        chain_pem.push_str(&self.chain_pem);
        Ok(Issued {
            chain_pem,
            spiffe_id: spiffe_id.to_owned(),
            not_before: p.not_before.unix_timestamp(),
            not_after: p.not_after.unix_timestamp(),
            serial: serial_hex,
        })
    }
}

/// Only ECDSA P-256 and Ed25519 keys: what every proxy's TLS stack verifies.
fn check_key(der: &CertificateSigningRequestDer<'_>) -> Result<(), Refusal> {
    let (_, req) = X509CertificationRequest::from_der(der)
        .map_err(|e| Refusal::Invalid(format!("the CSR does not parse: {e}")))?;
    let alg = &req.certification_request_info.subject_pki.algorithm;
    let ok = if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        alg.parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| curve == OID_EC_P256)
    } else {
        alg.algorithm == OID_SIG_ED25519
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::Invalid(
            "the CSR's key is neither ECDSA P-256 nor Ed25519".into(),
        ))
    }
}
