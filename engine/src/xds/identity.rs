//! The proxy's mesh identity, obtained by CSR on the control stream: a fresh
//! P-256 key per request (held only in memory, keyed by the request id), the
//! CSR for `spiffe://<trust domain>/ns/<namespace>/sa/<service>`, the checks
//! an issued certificate must pass before it is put in force, and when to
//! renew it (half its lifetime, with jitter).
//!
//! The private key never leaves this process: it is not logged (its `Debug`
//! is redacted), not serialized (the model's `Pem.inline` is skipped by
//! serde) and never written to disk.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType, PKCS_ECDSA_P256_SHA256,
};
use ringmesh_proto::v1 as pb;
use ringmesh_proto::v1::secret::Kind as SecretKind;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use super::state::State;

/// Resource names of the node's SECRET set (contract).
pub const IDENTITY: &str = "identity";
pub const TRUST_BUNDLE: &str = "trust-bundle";

/// CSRs kept open at once; an older one is forgotten (its answer is refused).
const MAX_PENDING: usize = 4;
/// Renewal point as a fraction of the lifetime after `not_before`.
const RENEW_FROM: f64 = 0.45;
const RENEW_SPREAD: f64 = 0.10;
/// Never renew sooner than this from now.
pub const MIN_RENEW_DELAY: Duration = Duration::from_secs(1);
/// An unanswered CSR is sent again (with a new key) after this, or sooner
/// when the certificate in force has less life left.
pub const CSR_RETRY: Duration = Duration::from_secs(30);

/// PEM of a private key. Cloning shares the bytes; `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPem(Arc<[u8]>);

impl KeyPem {
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.0
    }
}

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPem(<redacted>)")
    }
}

/// The certificate in force, with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// The CSR it answered.
    pub request_id: String,
    pub spiffe_id: String,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// Unix seconds, from the leaf itself.
    pub not_before: i64,
    pub not_after: i64,
    /// Leaf first, then intermediates.
    pub chain_pem: Arc<[u8]>,
    pub key: KeyPem,
}

impl Active {
    pub fn expired_at(&self, now_unix: i64) -> bool {
        now_unix >= self.not_after
    }
}

/// A CSR sent and not answered yet.
#[derive(Debug, Clone)]
pub struct PendingKey {
    pub key: KeyPem,
    /// The key's SubjectPublicKeyInfo, DER: the issued leaf must carry it.
    pub spki: Vec<u8>,
    pub sent: Instant,
}

/// Open CSRs by request id.
#[derive(Debug, Default)]
pub struct Pending {
    keys: BTreeMap<String, PendingKey>,
    counter: u64,
}

impl Pending {
    /// A fresh key and the CSR for `spiffe_id`; the key is kept under the
    /// returned request's id.
    pub fn new_csr(&mut self, spiffe_id: &str) -> Result<pb::CertificateSigningRequest, String> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("generating a key: {e}"))?;
        let mut params = CertificateParams::default();
        // The identity is the URI SAN alone; rcgen marks the SAN critical
        // for an empty subject, as RFC 5280 requires.
        params.distinguished_name = DistinguishedName::new();
        let uri = spiffe_id
            .to_owned()
            .try_into()
            .map_err(|e| format!("{spiffe_id:?} is not a URI: {e}"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr_pem = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| format!("building the CSR: {e}"))?;
        self.counter += 1;
        let request_id = format!(
            "{:x}-{}-{:08x}",
            unix_now(),
            self.counter,
            fastrand::u32(..)
        );
        let pending = PendingKey {
            key: KeyPem(key.serialize_pem().into_bytes().into()),
            spki: key.subject_public_key_info(),
            sent: Instant::now(),
        };
        while self.keys.len() >= MAX_PENDING {
            let oldest = self
                .keys
                .iter()
                .min_by_key(|(_, p)| p.sent)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.keys.remove(&id),
                None => break,
            };
        }
        self.keys.insert(request_id.clone(), pending);
        Ok(pb::CertificateSigningRequest {
            csr_pem: csr_pem.into_bytes(),
            request_id,
        })
    }

    pub fn get(&self, request_id: &str) -> Option<&PendingKey> {
        self.keys.get(request_id)
    }

    pub fn remove(&mut self, request_id: &str) {
        self.keys.remove(request_id);
    }

    /// A new stream: the control plane cannot answer CSRs of the old one.
    pub fn clear(&mut self) {
        self.keys.clear();
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// `spiffe://<td>/ns/<namespace>/sa/<service>` of a node.
pub fn spiffe_id(trust_domain: &str, node: &pb::Node) -> String {
    format!(
        "spiffe://{trust_domain}/ns/{}/sa/{}",
        node.namespace, node.service
    )
}

/// The trust bundle of the SECRET set, if any.
pub fn trust_bundle(state: &State) -> Option<&pb::TrustBundle> {
    match state.secrets.get(TRUST_BUNDLE)?.kind.as_ref()? {
        SecretKind::TrustBundle(b) => Some(b),
        _ => None,
    }
}

/// Every root of the bundle, concatenated as one PEM text.
pub fn bundle_pem(bundle: &pb::TrustBundle) -> Arc<[u8]> {
    let mut out = Vec::new();
    for root in &bundle.root_certificates_pem {
        out.extend_from_slice(root);
        if !root.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out.into()
}

/// Checks the shape of one SECRET resource (called by `State::apply`).
pub fn check_secret(r: &pb::Resource, s: &pb::Secret) -> Result<pb::Secret, String> {
    let ctx = |m: &str| format!("secret {:?}: {m}", r.name);
    if !s.name.is_empty() && s.name != r.name {
        return Err(ctx(&format!(
            "secret.name is {:?}, not the resource name",
            s.name
        )));
    }
    match &s.kind {
        None => return Err(ctx("holds no kind")),
        Some(SecretKind::TrustBundle(b)) => {
            if r.name != TRUST_BUNDLE {
                return Err(ctx(&format!(
                    "a trust bundle must be named {TRUST_BUNDLE:?}"
                )));
            }
            if b.trust_domain.is_empty() {
                return Err(ctx("trust_domain is empty"));
            }
            if b.root_certificates_pem.is_empty() {
                return Err(ctx("holds no root certificate"));
            }
            for (i, root) in b.root_certificates_pem.iter().enumerate() {
                let certs = parse_chain(root).map_err(|e| ctx(&format!("root [{i}]: {e}")))?;
                if certs.is_empty() {
                    return Err(ctx(&format!("root [{i}]: no PEM certificate")));
                }
            }
        }
        Some(SecretKind::IssuedCertificate(_)) => {
            if r.name != IDENTITY {
                return Err(ctx(&format!(
                    "an issued certificate must be named {IDENTITY:?}"
                )));
            }
        }
        Some(SecretKind::TlsCertificate(t)) => {
            if t.certificate_chain_pem.is_empty() {
                return Err(ctx("certificate_chain_pem is empty"));
            }
            if t.private_key_pem.is_empty() {
                return Err(ctx("private_key_pem is empty"));
            }
        }
    }
    let mut s = s.clone();
    s.name.clone_from(&r.name);
    Ok(s)
}

/// After a SECRET response: decides which identity `next` holds. Returns the
/// request id whose key the new certificate consumed, if any.
pub fn resolve(
    next: &mut State,
    pending: &Pending,
    node: &pb::Node,
) -> Result<Option<String>, String> {
    let Some(bundle) = trust_bundle(next) else {
        return Err(format!("the secret set has no {TRUST_BUNDLE:?}"));
    };
    let expected = spiffe_id(&bundle.trust_domain, node);
    let issued = match next.secrets.get(IDENTITY).and_then(|s| s.kind.as_ref()) {
        None => return Ok(None),
        Some(SecretKind::IssuedCertificate(ic)) => ic.clone(),
        // check_secret only lets an issued certificate be called "identity".
        Some(_) => return Err(format!("secret {IDENTITY:?}: not an issued certificate")),
    };
    if next
        .identity
        .as_ref()
        .is_some_and(|a| a.request_id == issued.request_id)
    {
        // The certificate in force, sent again (with a new bundle, say).
        return Ok(None);
    }
    let Some(key) = pending.get(&issued.request_id) else {
        return Err(format!(
            "secret {IDENTITY:?}: request_id {:?} answers no CSR this proxy has open",
            issued.request_id
        ));
    };
    let active = verify(&issued, key, &expected, unix_now())
        .map_err(|e| format!("secret {IDENTITY:?}: {e}"))?;
    next.identity = Some(active);
    Ok(Some(issued.request_id))
}

/// The issued certificate as the identity in force, or why it is refused.
pub fn verify(
    ic: &pb::IssuedCertificate,
    key: &PendingKey,
    expected: &str,
    now_unix: i64,
) -> Result<Active, String> {
    if ic.spiffe_id != expected {
        return Err(format!(
            "issued for {:?}, this proxy is {expected:?}",
            ic.spiffe_id
        ));
    }
    let chain = parse_chain(&ic.certificate_chain_pem)?;
    let Some(leaf_pem) = chain.first() else {
        return Err("certificate_chain_pem holds no certificate".into());
    };
    let leaf = leaf_pem
        .parse_x509()
        .map_err(|e| format!("leaf certificate: {e}"))?;
    if leaf.public_key().raw != key.spki.as_slice() {
        return Err(format!(
            "the certificate's public key is not the key of CSR {:?}",
            ic.request_id
        ));
    }
    let uris: Vec<&str> = match leaf.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("leaf certificate: subjectAltName: {e}")),
    };
    if uris != [expected] {
        return Err(format!(
            "the certificate's URI SANs are {uris:?}, this proxy is {expected:?}"
        ));
    }
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    if not_after <= not_before {
        return Err("the certificate's validity is empty".into());
    }
    if not_after <= now_unix {
        return Err(format!("the certificate expired at {not_after} (unix)"));
    }
    let serial = leaf
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok(Active {
        request_id: ic.request_id.clone(),
        spiffe_id: expected.to_owned(),
        serial,
        not_before,
        not_after,
        chain_pem: ic.certificate_chain_pem.clone().into(),
        key: key.key.clone(),
    })
}

/// The CERTIFICATE blocks of a PEM text, in order.
fn parse_chain(pem: &[u8]) -> Result<Vec<Pem>, String> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("bad PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!("PEM block {:?} is not a CERTIFICATE", block.label));
        }
        block
            .parse_x509()
            .map_err(|e| format!("bad certificate: {e}"))?;
        out.push(block);
    }
    Ok(out)
}

/// When to send the renewal CSR for `a`: `not_before + lifetime * U(0.45,
/// 0.55)`, at least `MIN_RENEW_DELAY` from now.
pub fn renewal_delay(a: &Active, now: SystemTime) -> Duration {
    let frac = RENEW_FROM + fastrand::f64() * RENEW_SPREAD;
    renewal_delay_at(a.not_before, a.not_after, frac, now)
}

pub fn renewal_delay_at(not_before: i64, not_after: i64, frac: f64, now: SystemTime) -> Duration {
    let lifetime = (not_after - not_before).max(0) as f64;
    let at = not_before as f64 + lifetime * frac;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let delay = Duration::try_from_secs_f64(at - now).unwrap_or(Duration::ZERO);
    delay.max(MIN_RENEW_DELAY)
}

/// How long to wait for an answer to a CSR before sending another: at most
/// `CSR_RETRY`, at most half the life left of the certificate in force.
pub fn retry_delay(current: Option<&Active>, now_unix: i64) -> Duration {
    let Some(a) = current else { return CSR_RETRY };
    let left = Duration::from_secs(u64::try_from(a.not_after - now_unix).unwrap_or(0));
    (left / 2).clamp(MIN_RENEW_DELAY, CSR_RETRY)
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
