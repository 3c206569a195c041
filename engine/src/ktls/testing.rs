//! Test support shared by the unit tests and `examples/ktls_selftest.rs`: a
//! throwaway CA with rcgen, mTLS rustls configs pinned to one suite, and a
//! record-bounded handshake over blocking std sockets (the engine's own
//! monoio driver lives in `tls`). Not for production use.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::Suite;

pub const SERVER_NAME: &str = "reviews.ringmesh.test";

/// A server and a client config that trust each other (mTLS), TLS 1.3 only,
/// negotiating exactly `suite`, with secret extraction on. `tickets`: how many
/// NewSessionTickets the server sends after the handshake (0 on mesh hops;
/// more exercises the kTLS control-record path).
pub fn configs(
    suite: Suite,
    tickets: usize,
) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root_key = KeyPair::generate().map_err(|x| e(&x))?;
    let mut root = CertificateParams::default();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).map_err(|x| e(&x))?;
    let issuer = Issuer::new(root, root_key);
    let leaf =
        |san: SanType| -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
            let key = KeyPair::generate().map_err(|x| e(&x))?;
            let mut p = CertificateParams::default();
            p.subject_alt_names = vec![san];
            let cert = p.signed_by(&key, &issuer).map_err(|x| e(&x))?;
            Ok((
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            ))
        };
    let (server_chain, server_key) =
        leaf(SanType::DnsName(SERVER_NAME.try_into().map_err(|x| e(&x))?))?;
    let (client_chain, client_key) = leaf(SanType::URI(
        "spiffe://cluster.local/ns/default/sa/productpage"
            .try_into()
            .map_err(|x| e(&x))?,
    ))?;
    let mut roots = RootCertStore::empty();
    roots.add(root_cert.der().clone()).map_err(|x| e(&x))?;
    let roots = Arc::new(roots);

    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| Suite::of(*s) == Some(suite));
    let provider = Arc::new(provider);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|x| e(&x))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|x| e(&x))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server_chain, server_key)
        .map_err(|x| e(&x))?;
    server.enable_secret_extraction = true;
    server.send_tls13_tickets = tickets;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|x| e(&x))?
        .with_root_certificates(roots)
        .with_client_auth_cert(client_chain, client_key)
        .map_err(|x| e(&x))?;
    client.enable_secret_extraction = true;
    client.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(server), Arc::new(client)))
}

pub fn client_conn(cfg: Arc<ClientConfig>) -> Result<rustls::Connection, String> {
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
    rustls::ClientConnection::new(cfg, name)
        .map(Into::into)
        .map_err(|e| e.to_string())
}

pub fn server_conn(cfg: Arc<ServerConfig>) -> Result<rustls::Connection, String> {
    rustls::ServerConnection::new(cfg)
        .map(Into::into)
        .map_err(|e| e.to_string())
}

/// Runs the handshake on a blocking socket, reading one whole record at a
/// time (5-byte header, then exactly its body) so nothing past the last
/// handshake record is taken off the socket, and flushes what rustls queued
/// (the client's Finished, the server's tickets).
pub fn handshake_std<S: Read + Write>(
    sock: &mut S,
    conn: &mut rustls::Connection,
) -> io::Result<()> {
    loop {
        while conn.wants_write() {
            conn.write_tls(sock)?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        let mut record = vec![0u8; 5];
        sock.read_exact(&mut record)?;
        let len = u16::from_be_bytes([record[3], record[4]]) as usize;
        record.resize(5 + len, 0);
        sock.read_exact(&mut record[5..])?;
        let mut rest = &record[..];
        while !rest.is_empty() {
            conn.read_tls(&mut rest)?;
        }
        conn.process_new_packets().map_err(io::Error::other)?;
    }
}

/// Runs a handshake between two in-memory connections.
pub fn handshake_in_memory(
    client: &mut rustls::Connection,
    server: &mut rustls::Connection,
) -> io::Result<()> {
    while client.is_handshaking()
        || server.is_handshaking()
        || client.wants_write()
        || server.wants_write()
    {
        transfer(client, server)?;
        transfer(server, client)?;
    }
    Ok(())
}

/// Moves whatever `from` has queued into `to` and lets `to` process it.
pub fn transfer(from: &mut rustls::Connection, to: &mut rustls::Connection) -> io::Result<()> {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire)?;
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest)?;
    }
    to.process_new_packets().map_err(io::Error::other)?;
    Ok(())
}
