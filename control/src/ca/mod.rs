//! The mesh certificate authority: the signing certificate and key (a
//! generated root kept in `--ca-dir`, or an operator's root or intermediate
//! from `--ca-cert`/`--ca-key`), the trust bundle handed to proxies, and
//! X.509-SVID issuance from proxies' CSRs (`sign`). A `Ca` is immutable;
//! SIGHUP loads a new one from the same source.

pub mod pem;
pub mod sign;
pub mod store;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{Issuer, KeyPair, SerialNumber};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

pub use sign::{Issued, Refusal};

/// Where the CA's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A root generated on first start and kept in this directory.
    Generated { dir: PathBuf },
    /// The operator's files: the signing certificate (optionally followed
    /// by its intermediates), its key, and the roots to trust.
    Files {
        cert: PathBuf,
        key: PathBuf,
        bundle: Option<PathBuf>,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Generated { dir } => write!(f, "generated root in {}", dir.display()),
            Source::Files { cert, .. } => write!(f, "{}", cert.display()),
        }
    }
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// What follows the leaf in an issued chain: the signing certificate
    /// when it is not a root, then its intermediates (PEM).
    chain_pem: String,
    /// Every root to trust, one PEM certificate each, in file order.
    pub roots: Vec<String>,
    /// The signing certificate's subject, for logs.
    pub subject: String,
    pub lifetime: Duration,
    /// Unique per load in this process: streams tell a reloaded CA apart.
    pub generation: u64,
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

impl Ca {
    /// Loads (or on first start generates) the CA from `source`. Errors name
    /// the file at fault.
    pub fn load(source: &Source, trust_domain: &str, lifetime: Duration) -> Result<Ca, String> {
        match source {
            Source::Generated { dir } => {
                let (cert, key) = store::load_or_generate(dir, trust_domain)?;
                let cert_path = dir.join(store::ROOT_CERT);
                let key_path = dir.join(store::ROOT_KEY);
                Self::from_pem(
                    &cert,
                    &cert_path.display().to_string(),
                    &key,
                    &key_path.display().to_string(),
                    None,
                    lifetime,
                )
            }
            Source::Files { cert, key, bundle } => {
                let cert_pem = std::fs::read_to_string(cert)
                    .map_err(|e| format!("{} (--ca-cert): {e}", cert.display()))?;
                let key_pem = store::read_key(key)?;
                let bundle_pem = match bundle {
                    None => None,
                    Some(b) => Some((
                        std::fs::read(b)
                            .map_err(|e| format!("{} (--ca-bundle): {e}", b.display()))?,
                        b.display().to_string(),
                    )),
                };
                Self::from_pem(
                    &cert_pem,
                    &cert.display().to_string(),
                    &key_pem,
                    &key.display().to_string(),
                    bundle_pem.as_ref().map(|(b, n)| (&b[..], n.as_str())),
                    lifetime,
                )
            }
        }
    }

    /// Builds the CA from PEM text; `*_name` name the sources in errors.
    pub fn from_pem(
        cert_pem: &str,
        cert_name: &str,
        key_pem: &str,
        key_name: &str,
        bundle: Option<(&[u8], &str)>,
        lifetime: Duration,
    ) -> Result<Ca, String> {
        let chain =
            pem::decode_certs(cert_pem.as_bytes()).map_err(|e| format!("{cert_name}: {e}"))?;
        let parsed = chain
            .iter()
            .enumerate()
            .map(|(i, der)| {
                X509Certificate::from_der(der)
                    .map(|(_, c)| c)
                    .map_err(|e| format!("{cert_name}: certificate {}: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let signing = &parsed[0];
        if !signing.is_ca() {
            return Err(format!(
                "{cert_name}: the signing certificate ({}) is not a CA (basicConstraints cA=false)",
                signing.subject()
            ));
        }
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| format!("{key_name}: not a usable PEM private key: {e}"))?;
        if key.public_key_raw() != &*signing.public_key().subject_public_key.data {
            return Err(format!(
                "{key_name}: this key does not belong to the certificate in {cert_name}"
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&chain[0], key)
            .map_err(|e| format!("{cert_name}: cannot sign with this certificate: {e}"))?;
        let self_signed =
            |c: &X509Certificate<'_>| c.subject() == c.issuer() && c.verify_signature(None).is_ok();
        // The root a proxy trusts is never sent in the chain.
        let mut sent: Vec<&CertificateDer<'_>> = Vec::new();
        let mut last_root = None;
        for (i, c) in parsed.iter().enumerate() {
            if self_signed(c) {
                if i + 1 != parsed.len() {
                    return Err(format!(
                        "{cert_name}: certificate {} is self-signed but not the last one",
                        i + 1
                    ));
                }
                last_root = Some(&chain[i]);
            } else {
                sent.push(&chain[i]);
            }
        }
        let roots = match bundle {
            Some((bytes, name)) => {
                let certs = pem::decode_certs(bytes).map_err(|e| format!("{name}: {e}"))?;
                for (i, der) in certs.iter().enumerate() {
                    X509Certificate::from_der(der)
                        .map_err(|e| format!("{name}: certificate {}: {e}", i + 1))?;
                }
                certs
            }
            None => match last_root {
                Some(r) => vec![r.clone()],
                None => {
                    return Err(format!(
                        "{cert_name} is an intermediate: give the roots to trust with --ca-bundle"
                    ))
                }
            },
        };
        Ok(Ca {
            issuer,
            chain_pem: sent.iter().map(|d| pem::encode_cert(d)).collect(),
            roots: roots.iter().map(|d| pem::encode_cert(d)).collect(),
            subject: signing.subject().to_string(),
            lifetime,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }
}

/// A random positive 16-byte serial (the top bit cleared keeps the DER
/// INTEGER positive without a padding byte).
pub fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    // SystemRandom reads the OS generator; it fails only if the OS has none,
    // and then a time-derived serial still keeps serials unique.
    if SystemRandom::new().fill(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = nanos.to_be_bytes();
    }
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

#[cfg(test)]
mod tests;
