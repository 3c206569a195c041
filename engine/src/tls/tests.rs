//! The record-bounded handshake (what a kTLS hand-off needs) in user space:
//! nothing the peer sent after its Finished leaves the socket, and the
//! session carries on from `into_parts` / `hand_off`.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use monoio::io::AsyncReadRentExt;
use monoio::net::{TcpListener, TcpStream};

use super::stream::{Handshake, TlsStream};
use crate::ktls::testing::{client_conn, configs, server_conn};
use crate::ktls::Suite;

const AFTER: &[u8] = b"app data written right behind the client's Finished";

/// A blocking mTLS client that sends its last flight (Certificate,
/// CertificateVerify, Finished) and its first application record in ONE
/// write, so they arrive together. Returns the ciphertext that followed the
/// Finished; keeps the socket open until `hold` ends.
fn client(
    addr: std::net::SocketAddr,
    ccfg: Arc<rustls::ClientConfig>,
    hold: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        let mut conn = client_conn(ccfg).unwrap();
        while conn.is_handshaking() {
            while conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            if conn.read_tls(&mut sock).unwrap() == 0 {
                panic!("server closed during the handshake");
            }
            conn.process_new_packets().unwrap();
        }
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        let flight = wire.len();
        conn.writer().write_all(AFTER).unwrap();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        sock.write_all(&wire).unwrap();
        let _ = hold.recv_timeout(Duration::from_secs(20));
        let mut rest = Vec::new();
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        let _ = sock.read_to_end(&mut rest);
        wire.split_off(flight)
    })
}

fn runtimes(f: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) {
    if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
    {
        rt.block_on(f());
    }
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f());
}

fn opts() -> Handshake {
    Handshake {
        timeout: Duration::from_secs(10),
        record_bounded: true,
    }
}

#[test]
fn record_bounded_handshake_leaves_the_bytes_after_finished_in_the_socket() {
    runtimes(|| {
        Box::pin(async {
            let (scfg, ccfg) = configs(Suite::Aes128Gcm, 0).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let (tx, hold) = std::sync::mpsc::channel();
            let peer = client(listener.local_addr().unwrap(), ccfg, hold);
            let (s, _) = listener.accept().await.unwrap();
            let tls = TlsStream::handshake(s, server_conn(scfg).unwrap(), opts())
                .await
                .unwrap();
            assert_eq!(
                tls.peer_identity().map(|s| &**s),
                Some("spiffe://cluster.local/ns/default/sa/productpage")
            );
            let (mut tcp, mut conn) = tls.into_parts();
            // rustls holds no plaintext: the app record is still in the kernel.
            assert_eq!(
                conn.process_new_packets()
                    .unwrap()
                    .plaintext_bytes_to_read(),
                0
            );
            let (tx_done, after) = (tx, peer);
            // Exactly the client's post-Finished ciphertext is on the socket.
            let (res, wire) = tcp.read_exact(vec![0u8; AFTER.len() + 22]).await;
            res.unwrap();
            let _ = tx_done.send(());
            let expected = after.join().unwrap();
            assert_eq!(wire, expected, "socket bytes after the handshake");
            // And they decrypt to what the client wrote.
            conn.read_tls(&mut &wire[..]).unwrap();
            conn.process_new_packets().unwrap();
            let mut got = vec![0u8; AFTER.len()];
            conn.reader().read_exact(&mut got).unwrap();
            assert_eq!(got, AFTER);
        })
    });
}

/// `hand_off` after a record-bounded handshake: kTLS when the kernel takes
/// it, else (here) declined and rebuilt in user space; either way the
/// connection reads the client's first bytes and keeps the peer identity.
#[test]
fn hand_off_after_a_record_bounded_handshake_keeps_the_session() {
    runtimes(|| {
        Box::pin(async {
            let (scfg, ccfg) = configs(Suite::Aes256Gcm, 0).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let (tx, hold) = std::sync::mpsc::channel();
            let peer = client(listener.local_addr().unwrap(), ccfg, hold);
            let (s, _): (TcpStream, _) = listener.accept().await.unwrap();
            let tls = TlsStream::handshake(s, server_conn(scfg).unwrap(), opts())
                .await
                .unwrap();
            let mut conn = super::hand_off(tls, true).unwrap();
            assert!(conn.is_tls());
            assert_eq!(
                conn.peer_identity().map(|s| &**s),
                Some("spiffe://cluster.local/ns/default/sa/productpage")
            );
            let (res, got) = conn.read_exact(vec![0u8; AFTER.len()]).await;
            res.unwrap();
            assert_eq!(got, AFTER);
            let _ = tx.send(());
            peer.join().unwrap();
        })
    });
}

#[test]
fn aes_128_gcm_is_offered_first() {
    let p = super::provider::provider();
    assert_eq!(
        p.cipher_suites[0].suite(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    // Nothing dropped: every ring suite is still there.
    assert_eq!(
        p.cipher_suites.len(),
        rustls::crypto::ring::default_provider().cipher_suites.len()
    );
}
