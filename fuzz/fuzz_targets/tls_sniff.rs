//! The ClientHello peek of PERMISSIVE listeners: `tls::sniff::classify`.
//!
//! Properties: never panics; the verdict on a prefix never changes once
//! given (`NeedMore` only for an empty input or a short one that may still
//! become a handshake record); only a handshake record is TLS, so no
//! plaintext request (HTTP/1 method, HTTP/2 preface) is; whatever rustls
//! itself accepts as a ClientHello (in a record of TLS 1.0 to 1.3) is TLS;
//! and real ClientHellos made by
//! rustls (TLS 1.3 and 1.2, with and without ALPN), with anything after
//! them, are TLS.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ringmesh_engine::tls::sniff::{classify, Sniff};

/// ClientHellos as rustls clients send them.
fn hellos() -> &'static [Vec<u8>] {
    static HELLOS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    HELLOS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut out = Vec::new();
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
            rustls::DEFAULT_VERSIONS,
        ] {
            for alpn in [Vec::new(), vec![b"h2".to_vec(), b"http/1.1".to_vec()]] {
                let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(versions)
                    .expect("versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                config.alpn_protocols = alpn;
                let name = "reviews.default.svc".try_into().expect("a server name");
                let mut conn =
                    rustls::ClientConnection::new(Arc::new(config), name).expect("client");
                let mut hello = Vec::new();
                conn.write_tls(&mut hello).expect("write the ClientHello");
                out.push(hello);
            }
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let verdict = classify(data);

    // A verdict, once given, stays; NeedMore only while it may still change.
    for k in 0..data.len().min(8) {
        let v = classify(&data[..k]);
        if v != Sniff::NeedMore {
            assert_eq!(
                v,
                verdict,
                "prefix of {k} bytes said {v:?}, {} bytes say {verdict:?}",
                data.len()
            );
        }
    }
    match verdict {
        Sniff::NeedMore => assert!(data.is_empty() || (data[0] == 0x16 && data.len() < 6)),
        Sniff::Tls => assert_eq!(data[0], 0x16, "only a handshake record is TLS"),
        Sniff::Plain => {}
    }
    if data.first().is_some_and(u8::is_ascii_alphabetic) {
        assert_eq!(verdict, Sniff::Plain, "a plaintext request taken for TLS");
    }

    // What rustls takes for a ClientHello is TLS, in a record of a real
    // TLS version (3.0 to 1.3; rustls is lenient about the record version
    // of a first ClientHello, no client sends another).
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = data;
    let real_version = data.get(1) == Some(&0x03) && data.get(2).is_some_and(|&m| m <= 0x04);
    if real_version && acceptor.read_tls(&mut rd).is_ok() {
        if let Ok(Some(_)) = acceptor.accept() {
            assert_eq!(
                verdict,
                Sniff::Tls,
                "rustls reads a ClientHello the sniffer calls {verdict:?}"
            );
        }
    }

    // A real ClientHello with anything after it is TLS, from 6 bytes on.
    let hello = &hellos()[usize::from(data.first().copied().unwrap_or(0)) % hellos().len()];
    let mut joined = hello.clone();
    joined.extend_from_slice(data);
    assert_eq!(classify(&joined), Sniff::Tls);
    for k in 0..6 {
        assert_eq!(classify(&joined[..k]), Sniff::NeedMore);
    }
    assert_eq!(classify(&joined[..6]), Sniff::Tls);
});
