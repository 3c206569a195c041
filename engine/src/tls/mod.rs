//! TLS: mesh mTLS between proxies (SPIFFE identities, TLS 1.3 only) and edge
//! TLS for ingress (certificates by SNI, ALPN). Configs are built on the
//! control thread when a config is compiled; workers only clone `Arc`s.

pub mod provider;
pub mod sniff;
pub mod stream;
pub mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::model;
pub use stream::{TlsRead, TlsStream, TlsWrite};

type CResult<T> = Result<T, (String, String)>;

/// How a listener takes TLS, compiled.
#[derive(Debug)]
pub enum DownstreamTls {
    /// Inbound mesh listener: mTLS with the proxy's identity.
    Mesh {
        config: Arc<ServerConfig>,
        /// PERMISSIVE: plaintext is accepted too; how long to wait for the
        /// first bytes before deciding (no bytes: plaintext).
        permissive: Option<Duration>,
        /// Our own SPIFFE ID (`By=` of x-forwarded-client-cert).
        own_id: Arc<str>,
    },
    /// Edge listener: server certificates by SNI, no client certificate.
    Edge { config: Arc<ServerConfig> },
}

impl DownstreamTls {
    pub fn is_mesh(&self) -> bool {
        matches!(self, DownstreamTls::Mesh { .. })
    }
}

/// How a cluster's endpoints are reached over mTLS, compiled.
#[derive(Debug)]
pub struct UpstreamTls {
    /// None while the proxy waits for its certificate: connections fail.
    /// Offers ALPN `http/1.1` (HTTP/1.1 Upgrade requests to mesh peers).
    pub config: Option<Arc<ClientConfig>>,
    /// The same, offering ALPN `h2`: the mesh hop.
    pub config_h2: Option<Arc<ClientConfig>>,
    pub server_name: ServerName<'static>,
    /// The SPIFFE ID the peer must present (checked in the verifier).
    pub expected: Arc<str>,
    /// Endpoints outside the mesh, reached in plaintext.
    pub plaintext: Vec<SocketAddr>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, o: &Self) -> bool {
        (match (&self.config, &o.config) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }) && self.server_name == o.server_name
            && self.expected == o.expected
            && self.plaintext == o.plaintext
    }
}
impl Eq for UpstreamTls {}

impl UpstreamTls {
    /// Whether `addr` is reached with mTLS.
    pub fn applies_to(&self, addr: SocketAddr) -> bool {
        !self.plaintext.contains(&addr)
    }
}

/// TLS counters of one listener or cluster in one worker.
#[derive(Debug)]
pub struct TlsStats {
    pub handshakes: Arc<crate::metrics::Counter>,
    pub failures: Arc<crate::metrics::Counter>,
}

/// Takes an accepted connection through the listener's TLS: a PERMISSIVE
/// listener first peeks for a ClientHello (plaintext otherwise). None when
/// the handshake failed (counted and logged; the connection is dropped).
pub async fn accept(
    t: &DownstreamTls,
    s: monoio::net::TcpStream,
    timeout: Duration,
    stats: Option<&TlsStats>,
    listener: &str,
) -> Option<crate::conn::Conn> {
    let config = match t {
        DownstreamTls::Mesh {
            config, permissive, ..
        } => {
            if let Some(detect) = permissive {
                if !sniff::detect(&s, *detect).await {
                    return Some(crate::conn::Conn::Plain(s));
                }
            }
            config
        }
        DownstreamTls::Edge { config } => config,
    };
    let peer = s.peer_addr().ok();
    let ktls = crate::ktls::wanted();
    let res = match rustls::ServerConnection::new(config.clone()) {
        Ok(c) => {
            let opts = stream::Handshake {
                timeout,
                record_bounded: ktls,
            };
            TlsStream::handshake(s, c.into(), opts)
                .await
                .map_err(|e| describe(&e))
                .and_then(|tls| hand_off(tls, ktls))
        }
        Err(e) => Err(e.to_string()),
    };
    match res {
        Ok(conn) => {
            if let Some(st) = stats {
                st.handshakes.inc();
            }
            Some(conn)
        }
        Err(why) => {
            if let Some(st) = stats {
                st.failures.inc();
            }
            crate::log::warn_limited(&format!(
                "listener {listener}: TLS handshake from {} failed: {why}",
                peer.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ));
            None
        }
    }
}

/// After a handshake: with `ktls` (kTLS enabled, the handshake was record
/// bounded) the session moves to the kernel when it can. A declined hand-off
/// (TLS 1.2 edge session, a suite the kernel lacks) goes on in user space
/// from the pieces given back; a failed one lost the session (counted in
/// `ringmesh_ktls_offload_failures_total`) and the connection is closed.
pub fn hand_off(tls: TlsStream, ktls: bool) -> Result<crate::conn::Conn, String> {
    use crate::conn::{Conn, KtlsConn};
    if !ktls {
        return Ok(Conn::Tls(Box::new(tls)));
    }
    let peer = tls.peer_identity().cloned();
    let h2 = tls.alpn_protocol() == Some(b"h2");
    let (tcp, conn) = tls.into_parts();
    match crate::ktls::offload(tcp, conn) {
        Ok((k, plaintext)) => Ok(Conn::Ktls(Box::new(
            KtlsConn::new(k, plaintext, peer).with_h2(h2),
        ))),
        Err(crate::ktls::OffloadError::Declined(d)) => Ok(Conn::Tls(Box::new(
            TlsStream::from_parts(d.tcp, d.conn, peer),
        ))),
        Err(crate::ktls::OffloadError::Failed(e)) => Err(format!("kTLS hand-off failed: {e}")),
    }
}

/// The proxy's mesh identity, loaded once per compile.
#[derive(Debug)]
pub struct MeshIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    pub id: Arc<str>,
}

fn read_pem(f: &str, p: &model::Pem) -> CResult<Arc<[u8]>> {
    if let Some(b) = &p.inline {
        return Ok(b.clone());
    }
    let Some(path) = &p.file else {
        return Err((format!("{f}.file"), "set the PEM file".into()));
    };
    std::fs::read(path)
        .map(Into::into)
        .map_err(|e| (format!("{f}.file"), format!("cannot read {path}: {e}")))
}

fn certs(f: &str, p: &model::Pem) -> CResult<Vec<CertificateDer<'static>>> {
    let pem = read_pem(f, p)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| (f.to_owned(), format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err((f.to_owned(), "no certificate in the PEM".into()));
    }
    Ok(certs)
}

fn key(f: &str, p: &model::Pem) -> CResult<PrivateKeyDer<'static>> {
    let pem = read_pem(f, p)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        (
            f.to_owned(),
            format!("no usable private key in the PEM: {e}"),
        )
    })
}

/// A certificate chain with its key, checked to belong together.
fn certified_key(
    f: &str,
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> CResult<Arc<CertifiedKey>> {
    let signing = provider::provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| (format!("{f}.private_key"), format!("unusable key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        (
            format!("{f}.private_key"),
            format!("does not match the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(ck))
}

impl MeshIdentity {
    pub fn load(id: &model::Identity) -> CResult<Self> {
        let chain = certs("identity.certificate", &id.certificate)?;
        let key = key("identity.private_key", &id.private_key)?;
        certified_key("identity", chain.clone(), &key)?;
        let spiffe = verify::spiffe_id(&chain[0]).ok_or_else(|| {
            (
                "identity.certificate".to_owned(),
                "the leaf has no single spiffe:// URI SAN".to_owned(),
            )
        })?;
        let mut roots = RootCertStore::empty();
        for (i, c) in certs("identity.trust_bundle", &id.trust_bundle)?
            .into_iter()
            .enumerate()
        {
            roots.add(c).map_err(|e| {
                (
                    "identity.trust_bundle".to_owned(),
                    format!("certificate {i}: {e}"),
                )
            })?;
        }
        Ok(MeshIdentity {
            chain,
            key,
            roots: Arc::new(roots),
            id: spiffe.into(),
        })
    }

    /// Inbound mesh listeners: TLS 1.3, client certificate required and
    /// checked by SPIFFE rules, no session tickets, secrets extractable (kTLS).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let p = provider::provider();
        let verifier = verify::SpiffeClientVerifier::new(self.roots.clone(), p.clone())?;
        let mut c = ServerConfig::builder_with_provider(p)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
        c.send_tls13_tickets = 0;
        c.enable_secret_extraction = true;
        // The mesh hop speaks HTTP/2; HTTP/1.1 for Upgrade requests and for
        // peers that offer no ALPN.
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(c))
    }

    /// Outbound to a mesh cluster whose proxies must be `expected`.
    /// (ALPN http/1.1, ALPN h2) client configs that present our SVID and
    /// require `expected` from the server.
    pub fn client_configs(
        &self,
        expected: &str,
    ) -> Result<(Arc<ClientConfig>, Arc<ClientConfig>), String> {
        let mut h1 = Arc::unwrap_or_clone(self.client_config(expected)?);
        let mut h2 = h1.clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok((Arc::new(h1), Arc::new(h2)))
    }

    pub fn client_config(&self, expected: &str) -> Result<Arc<ClientConfig>, String> {
        let p = provider::provider();
        let verifier =
            verify::SpiffeServerVerifier::new(self.roots.clone(), expected.to_owned(), &p);
        let mut c = ClientConfig::builder_with_provider(p)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
        c.resumption = rustls::client::Resumption::disabled();
        c.enable_secret_extraction = true;
        Ok(Arc::new(c))
    }
}

/// Edge certificates by SNI: exact names, then `*.suffix` (one label), then
/// the default (a certificate with no server names).
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// (".example.com", key), longest first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        for (suffix, k) in &self.wildcard {
            if let Some(label) = name.strip_suffix(suffix.as_str()) {
                if !label.is_empty() && !label.contains('.') {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

/// An edge listener's server config (TLS 1.2 and 1.3).
pub fn edge_server_config(f: &str, t: &model::ListenerTls) -> CResult<Arc<ServerConfig>> {
    let mut r = SniResolver {
        exact: HashMap::new(),
        wildcard: Vec::new(),
        default: None,
    };
    if t.certificates.is_empty() {
        return Err((
            format!("{f}.certificates"),
            "needs at least one certificate".into(),
        ));
    }
    for (i, c) in t.certificates.iter().enumerate() {
        let cf = format!("{f}.certificates[{i}]");
        let chain = certs(&format!("{cf}.certificate"), &c.certificate)?;
        let k = key(&format!("{cf}.private_key"), &c.private_key)?;
        let ck = certified_key(&cf, chain, &k)?;
        if c.server_names.is_empty() {
            if r.default.replace(ck).is_some() {
                return Err((
                    format!("{cf}.server_names"),
                    "two default certificates (empty server_names)".into(),
                ));
            }
            continue;
        }
        for (j, n) in c.server_names.iter().enumerate() {
            let nf = format!("{cf}.server_names[{j}]");
            let n = n.to_ascii_lowercase();
            let dup = if let Some(suffix) = n.strip_prefix('*') {
                if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
                    return Err((nf, "a wildcard name is written *.example.com".into()));
                }
                let dup = r.wildcard.iter().any(|(s, _)| s == suffix);
                r.wildcard.push((suffix.to_owned(), ck.clone()));
                dup
            } else {
                if n.is_empty() || n.contains('*') {
                    return Err((nf, "a server name is exact or *.suffix".into()));
                }
                r.exact.insert(n.clone(), ck.clone()).is_some()
            };
            if dup {
                return Err((nf, format!("{n:?} is claimed by two certificates")));
            }
        }
    }
    r.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
    let mut c = ServerConfig::builder_with_provider(provider::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| (f.to_owned(), e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(r));
    // TLS 1.3 edge sessions move to the kernel too (TLS 1.2 ones stay in
    // user space: `ktls::offload` declines them before touching anything).
    c.enable_secret_extraction = crate::ktls::wanted();
    c.alpn_protocols = if t.alpn.is_empty() {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        t.alpn.iter().map(|a| a.as_bytes().to_vec()).collect()
    };
    Ok(Arc::new(c))
}

/// The first line of a TLS failure, for logs and 503 bodies: the rustls
/// error when there is one (e.g. "peer identity X is not the expected Y").
pub fn describe(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::General(s)) => s.clone(),
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}
