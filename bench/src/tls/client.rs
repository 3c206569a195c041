//! The harness's own TLS client (rustls, ring, blocking std sockets):
//!
//! - [`handshake_gen`] (`__tls-handshakes`, a subprocess pinned to CPU 1):
//!   T threads, each in a loop of new TCP connection → full TLS 1.3 handshake
//!   (client certificate when given, no resumption) → one `Connection: close`
//!   request → close. To keep the client from being the bottleneck it does not
//!   verify the server (no chain or CertificateVerify checks: those are
//!   the server's costs we measure, not the client's); [`preflight`] does.
//! - [`preflight`]: before measuring, one request per endpoint that checks the
//!   endpoint really speaks what the row claims (TLS 1.3, the pinned server
//!   leaf, 200) — so a proxy that ignored its TLS config would fail the run
//!   instead of being measured as plaintext.

use super::certs::Pair;
use crate::load::http_get;
use crate::stats::percentile_sorted;
use crate::Res;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The one request of a handshake-heavy connection.
pub const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

/// Accepts the server leaf equal to `pinned` (any leaf when `None`) and checks
/// the handshake signatures only when `check_signatures`.
#[derive(Debug)]
struct Pinned {
    pinned: Option<Vec<u8>>,
    check_signatures: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(p) if p.as_slice() != end_entity.as_ref() => Err(rustls::Error::General(
                "the server presented another certificate than the one configured".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !self.check_signatures {
            return Ok(HandshakeSignatureValid::assertion());
        }
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !self.check_signatures {
            return Ok(HandshakeSignatureValid::assertion());
        }
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A TLS 1.3-only client config, resumption off, ALPN http/1.1.
pub fn client_config(
    client_cert: Option<(&Path, &Path)>,
    pinned: Option<Vec<u8>>,
    check_signatures: bool,
) -> Res<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let v = Pinned {
        pinned,
        check_signatures,
        algs: provider.signature_verification_algorithms,
    };
    let b = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("rustls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(v));
    let mut c = match client_cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            b.with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => b.with_no_client_auth(),
    };
    c.resumption = rustls::client::Resumption::disabled();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// One connection: TCP connect, handshake, `req`, the response; returns the
/// status and the negotiated protocol version.
pub fn tls_request(
    cfg: &Arc<ClientConfig>,
    port: u16,
    sni: &str,
    buf: &mut Vec<u8>,
    req: &[u8],
) -> std::io::Result<(u16, Option<rustls::ProtocolVersion>)> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let conn = ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    let code = http_get(&mut s, buf, req)?;
    Ok((code, s.conn.protocol_version()))
}

/// `__tls-handshakes PORT THREADS SECS CERT KEY`: the handshake load (see the
/// module doc). `CERT`/`KEY` `-` for no client certificate. Prints `RMBENCH`
/// lines: completed connections, errors, p50/p99 of connect → response.
pub fn handshake_gen(port: u16, threads: usize, secs: u64, cert: &str, key: &str) -> Res<()> {
    let cc = (cert != "-").then(|| (Path::new(cert), Path::new(key)));
    let cfg = client_config(cc, None, false)?;
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let cfg = cfg.clone();
            std::thread::spawn(move || -> (Vec<u64>, u64) {
                let mut lat = Vec::with_capacity(4096);
                let mut errors = 0u64;
                let mut buf = Vec::with_capacity(1024);
                while Instant::now() < end {
                    let t = Instant::now();
                    match tls_request(&cfg, port, "b", &mut buf, GET_CLOSE) {
                        Ok((200, _)) => lat.push(t.elapsed().as_micros() as u64),
                        _ => {
                            errors += 1;
                            // Do not spin on a refused port.
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = vec![];
    let mut errors = 0;
    for h in hs {
        let (l, e) = h.join().unwrap_or_default();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    println!(
        "RMBENCH requests {}\nRMBENCH duration_us {}\nRMBENCH errors {errors}\nRMBENCH p50_us {}\nRMBENCH p99_us {}\nRMBENCH p999_us {}",
        all.len(),
        start.elapsed().as_micros(),
        percentile_sorted(&all, 50.0),
        percentile_sorted(&all, 99.0),
        percentile_sorted(&all, 99.9)
    );
    Ok(())
}

/// What [`preflight`] checks on one endpoint.
pub enum Expect<'a> {
    /// Plain HTTP answers 200.
    Plain,
    /// Plain HTTP gets no 200 (a strict mTLS listener).
    NotPlain,
    /// TLS 1.3 with this server leaf, optionally presenting a client pair; 200.
    Tls {
        server: &'a Pair,
        client: Option<&'a Pair>,
    },
}

/// Checks one endpoint; the error names `what`.
pub fn preflight(what: &str, port: u16, expect: Expect<'_>) -> Res<()> {
    let mut buf = Vec::new();
    let plain = || -> std::io::Result<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        http_get(&mut s, &mut Vec::new(), GET_CLOSE)
    };
    match expect {
        Expect::Plain => match plain() {
            Ok(200) => Ok(()),
            r => Err(format!("{what} (:{port}): plain GET gave {r:?}, not 200")),
        },
        Expect::NotPlain => match plain() {
            Ok(200) => Err(format!(
                "{what} (:{port}) answered plaintext HTTP: its TLS settings are not in force (is the TLS data path in this build?)"
            )),
            _ => Ok(()),
        },
        Expect::Tls { server, client } => {
            let cfg = client_config(
                client.map(|c| (c.cert.as_path(), c.key.as_path())),
                Some(server.leaf_der.clone()),
                true,
            )?;
            match tls_request(&cfg, port, "b", &mut buf, GET_CLOSE) {
                Ok((200, Some(rustls::ProtocolVersion::TLSv1_3))) => Ok(()),
                r => Err(format!(
                    "{what} (:{port}): TLS 1.3 GET gave {r:?} (expected 200 over TLS 1.3 with the configured certificate)"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build() {
        let dir = std::env::temp_dir().join(format!("rm-bench-client-{}", std::process::id()));
        let c = crate::tls::certs::generate(&dir).unwrap();
        let cfg = client_config(Some((&c.a.cert, &c.a.key)), None, false).unwrap();
        assert!(cfg.client_auth_cert_resolver.has_certs());
        assert!(client_config(None, Some(c.b.leaf_der.clone()), true).is_ok());
        assert!(client_config(Some((&c.a.key, &c.a.key)), None, false).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
