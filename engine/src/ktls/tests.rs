use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::pin::Pin;

use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};

use super::crypto::iv_salt;
use super::testing::{
    client_conn, configs, handshake_in_memory, handshake_std, server_conn, transfer,
};
use super::*;

/// This kernel has kTLS when the tls module is loaded (it then creates
/// /proc/net/tls_stat). The build machines lack CONFIG_TLS.
fn kernel_has_ktls() -> bool {
    Path::new("/proc/net/tls_stat").exists()
}

/// Runs `f` under io_uring (when the kernel allows it) and under epoll.
fn on_both_drivers(f: impl Fn() -> Pin<Box<dyn Future<Output = ()>>>) {
    match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build() {
        Ok(mut rt) => rt.block_on(f()),
        Err(e) => eprintln!("io_uring unavailable here ({e}); epoll only"),
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .build()
        .expect("epoll runtime");
    rt.block_on(f());
}

#[test]
fn mode_parses_the_flag_values() {
    assert_eq!("auto".parse::<Mode>(), Ok(Mode::Auto));
    assert_eq!("on".parse::<Mode>(), Ok(Mode::On));
    assert_eq!("off".parse::<Mode>(), Ok(Mode::Off));
    assert_eq!(
        "yes".parse::<Mode>(),
        Err("--ktls \"yes\": expected auto, on or off".to_owned())
    );
    assert_eq!(Mode::Auto.to_string(), "auto");
}

#[test]
fn on_refuses_to_start_without_ktls_auto_and_off_fall_back() {
    let unsupported =
        || Err("the kernel has no TLS ULP (CONFIG_TLS / module tls not loaded): x".to_owned());
    assert_eq!(
        decide(Mode::On, unsupported).unwrap_err(),
        "--ktls on: kernel TLS is not available on this host: the kernel has no TLS ULP \
         (CONFIG_TLS / module tls not loaded): x (load it with `modprobe tls`, or run with \
         --ktls auto|off)"
    );
    assert_eq!(decide(Mode::Auto, unsupported), Ok(None));
    assert_eq!(
        decide(Mode::Off, || -> Result<Support, String> {
            panic!("off must not probe")
        }),
        Ok(None)
    );
    let all = Support {
        aes_128_gcm: true,
        aes_256_gcm: false,
        chacha20_poly1305: true,
    };
    assert_eq!(decide(Mode::On, || Ok(all)), Ok(Some(all)));
    assert_eq!(
        all.to_string(),
        "TLS13_AES_128_GCM_SHA256, TLS13_CHACHA20_POLY1305_SHA256"
    );
}

#[test]
fn init_on_fails_here_with_a_clear_message() {
    if kernel_has_ktls() {
        return;
    }
    let e = probe().unwrap_err();
    assert!(
        e.starts_with("the kernel has no TLS ULP (CONFIG_TLS / module tls not loaded): "),
        "{e}"
    );
    let e = init(Mode::On).unwrap_err();
    assert!(
        e.starts_with(
            "--ktls on: kernel TLS is not available on this host: the kernel has no TLS ULP"
        ),
        "{e}"
    );
    assert_eq!(init(Mode::Auto), Ok(None));
    assert_eq!(enabled(), None);
}

#[test]
fn metrics_lines() {
    let mut extra = Vec::new();
    metrics(&mut extra);
    let out = crate::metrics::render(&[], &extra);
    assert!(
        out.contains("# TYPE ringmesh_ktls_enabled gauge\nringmesh_ktls_enabled 0\n"),
        "{out}"
    );
    assert!(
        out.contains("# TYPE ringmesh_ktls_offloads_total counter\nringmesh_ktls_offloads_total "),
        "{out}"
    );
    assert!(out.contains("# TYPE ringmesh_ktls_offload_failures_total counter\nringmesh_ktls_offload_failures_total "), "{out}");
}

fn raw(s: &rustls::ConnectionTrafficSecrets) -> (Vec<u8>, Vec<u8>) {
    match s {
        rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | rustls::ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | rustls::ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (key.as_ref().to_vec(), iv.as_ref().to_vec())
        }
        _ => panic!("unexpected secrets"),
    }
}

/// The crypto info for each suite comes from a real rustls session: what one
/// side sends with is what the other receives with, the sequence numbers
/// count the records already exchanged, and the IV is split the way the
/// kernel's `tls12_crypto_info_*` wants it.
#[test]
fn crypto_info_from_a_real_session() {
    // The kernel ABI (include/uapi/linux/tls.h): info(4) iv key salt rec_seq(8).
    assert_eq!(
        std::mem::size_of::<libc::tls12_crypto_info_aes_gcm_128>(),
        4 + 8 + 16 + 4 + 8
    );
    assert_eq!(
        std::mem::size_of::<libc::tls12_crypto_info_aes_gcm_256>(),
        4 + 8 + 32 + 4 + 8
    );
    assert_eq!(
        std::mem::size_of::<libc::tls12_crypto_info_chacha20_poly1305>(),
        4 + 12 + 32 + 8
    );
    for (suite, key_len) in [
        (Suite::Aes128Gcm, 16),
        (Suite::Aes256Gcm, 32),
        (Suite::Chacha20Poly1305, 32),
    ] {
        let (scfg, ccfg) = configs(suite, 0).unwrap();
        let mut client = client_conn(ccfg).unwrap();
        let mut server = server_conn(scfg).unwrap();
        handshake_in_memory(&mut client, &mut server).unwrap();
        assert_eq!(
            client.negotiated_cipher_suite().and_then(Suite::of),
            Some(suite)
        );
        // One record client -> server, two server -> client.
        client.writer().write_all(b"ping").unwrap();
        transfer(&mut client, &mut server).unwrap();
        server.writer().write_all(b"po").unwrap();
        transfer(&mut server, &mut client).unwrap();
        server.writer().write_all(b"ng").unwrap();
        transfer(&mut server, &mut client).unwrap();
        let mut got = [0u8; 4];
        server.reader().read_exact(&mut got).unwrap();
        client.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");

        let c = client.dangerous_extract_secrets().unwrap();
        let s = server.dangerous_extract_secrets().unwrap();
        assert_eq!((c.tx.0, c.rx.0, s.tx.0, s.rx.0), (1, 2, 2, 1), "{suite:?}");
        let (c_tx, c_rx, s_tx, s_rx) = (raw(&c.tx.1), raw(&c.rx.1), raw(&s.tx.1), raw(&s.rx.1));
        assert_eq!(c_tx, s_rx, "client tx == server rx ({suite:?})");
        assert_eq!(c_rx, s_tx, "client rx == server tx ({suite:?})");
        assert_ne!(c_tx, c_rx);
        assert_eq!((c_tx.0.len(), c_tx.1.len()), (key_len, 12));

        let ci = crypto_info(suite, c).unwrap();
        let si = crypto_info(suite, s).unwrap();
        assert_eq!((ci.suite, ci.tx_seq, ci.rx_seq), (suite, 1, 2));
        assert_eq!((si.tx_seq, si.rx_seq), (2, 1));
        let (iv, salt) = iv_salt(&ci.tx);
        match suite {
            // AES-GCM: nonce = salt(4) || iv(8), salt first.
            Suite::Aes128Gcm | Suite::Aes256Gcm => {
                assert_eq!(salt, c_tx.1[..4]);
                assert_eq!(iv, c_tx.1[4..]);
            }
            // ChaCha20-Poly1305: the whole 12-byte nonce is the iv.
            Suite::Chacha20Poly1305 => {
                assert!(salt.is_empty());
                assert_eq!(iv, c_tx.1);
            }
        }
        assert_eq!(iv_salt(&ci.tx), iv_salt(&si.rx));
        assert_eq!(iv_salt(&ci.rx), iv_salt(&si.tx));
        assert!(format!("{ci:?}").starts_with("CryptoInfo { suite"));
        ci.into_kernel().unwrap();
        si.into_kernel().unwrap();
    }
}

/// Flushes rustls' queued TLS records to the socket.
async fn flush_tls(tcp: &mut TcpStream, conn: &mut rustls::Connection) {
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    let (res, _) = tcp.write_all(wire).await;
    res.unwrap();
}

/// Reads until rustls has `n` bytes of plaintext.
async fn read_tls(tcp: &mut TcpStream, conn: &mut rustls::Connection, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut have = 0;
    while have < n {
        match conn.reader().read(&mut out[have..]) {
            Ok(k) => have += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let (res, buf) = tcp.read(Vec::with_capacity(4096)).await;
                assert!(res.unwrap() > 0, "eof");
                let mut rest = &buf[..];
                while !rest.is_empty() {
                    conn.read_tls(&mut rest).unwrap();
                }
                conn.process_new_packets().unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
    out
}

/// On a kernel without kTLS the hand-off gives the socket and the session
/// back untouched, and the TLS session goes on in user space.
#[test]
fn offload_declined_continues_in_user_space() {
    if kernel_has_ktls() {
        return;
    }
    on_both_drivers(|| {
        Box::pin(async {
            let (scfg, ccfg) = configs(Suite::Aes256Gcm, 1).unwrap();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                let (mut sock, _) = listener.accept().unwrap();
                let mut conn = server_conn(scfg).unwrap();
                handshake_std(&mut sock, &mut conn).unwrap();
                let mut got = [0u8; 4];
                let mut have = 0;
                while have < 4 {
                    match conn.reader().read(&mut got[have..]) {
                        Ok(n) => have += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            conn.read_tls(&mut sock).unwrap();
                            conn.process_new_packets().unwrap();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                conn.writer().write_all(b"pong").unwrap();
                conn.send_close_notify();
                while conn.wants_write() {
                    conn.write_tls(&mut sock).unwrap();
                }
                got
            });
            let mut sock = std::net::TcpStream::connect(addr).unwrap();
            let mut conn = client_conn(ccfg).unwrap();
            handshake_std(&mut sock, &mut conn).unwrap();
            sock.set_nonblocking(true).unwrap();
            let tcp = TcpStream::from_std(sock).unwrap();
            let (mut tcp, mut conn, error) = match offload(tcp, conn) {
                Err(OffloadError::Declined(d)) => (d.tcp, d.conn, d.error),
                Err(OffloadError::Failed(e)) => panic!("lost the session: {e}"),
                Ok(_) => panic!("kTLS on a kernel without it"),
            };
            assert_eq!(error.kind(), std::io::ErrorKind::Unsupported, "{error}");
            assert!(
                error.to_string().contains("No such file or directory"),
                "{error}"
            );
            conn.writer().write_all(b"ping").unwrap();
            flush_tls(&mut tcp, &mut conn).await;
            // The server's session ticket, which arrived after the handshake,
            // is handled by rustls in user space.
            assert_eq!(read_tls(&mut tcp, &mut conn, 4).await, b"pong");
            assert_eq!(&server.join().unwrap(), b"ping");
            assert!(OFFLOAD_FAILURES.load(Ordering::Relaxed) >= 1);
        })
    });
}

#[test]
fn offload_declines_an_unfinished_handshake() {
    on_both_drivers(|| {
        Box::pin(async {
            let (_, ccfg) = configs(Suite::Aes128Gcm, 0).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let tcp = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let conn = client_conn(ccfg).unwrap();
            match offload(tcp, conn) {
                Err(OffloadError::Declined(d)) => {
                    assert_eq!(d.error.to_string(), "the handshake is not finished");
                    assert!(d.conn.is_handshaking());
                }
                _ => panic!("expected Declined"),
            }
        })
    });
}

/// Without a TLS ULP the stream is a plain TCP stream; this checks the
/// monoio plumbing (read, write, split, shutdown, record counting) on both
/// drivers. The kTLS path itself runs in the VM (deploy/ktls-vm-test.sh).
#[test]
fn stream_plumbing_on_both_drivers() {
    on_both_drivers(|| {
        Box::pin(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let peer = monoio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut all = Vec::new();
                loop {
                    let (res, buf) = s.read(Vec::with_capacity(65536)).await;
                    if res.unwrap() == 0 {
                        break;
                    }
                    all.extend_from_slice(&buf);
                }
                let (res, _) = s.write_all(b"bye".to_vec()).await;
                res.unwrap();
                all
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            // 3 records' worth of key usage before retirement.
            let stream = KtlsStream::new(tcp, KeyUsage::new(0, 3));
            let usage = stream.key_usage();
            let (mut r, mut w) = stream.into_split();
            let (res, _) = w.write_all(vec![7u8; 16 * 1024 + 1]).await;
            res.unwrap();
            assert_eq!(usage.records(), 2);
            assert!(!usage.near_limit());
            let (res, _) = w.write(b"x".to_vec()).await;
            res.unwrap();
            assert!(usage.near_limit());
            w.shutdown().await.unwrap();
            let (res, buf) = r.read_exact(vec![0u8; 3]).await;
            res.unwrap();
            assert_eq!(buf, b"bye");
            let (res, _) = r.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 0);
            let all = peer.await;
            // Without the ULP, TCP ignores the record-type cmsg and the alert
            // body (warning, close_notify) arrives as two plain bytes.
            assert_eq!(all.len(), 16 * 1024 + 1 + 1 + 2);
            assert_eq!(&all[all.len() - 2..], &[1, 0]);
        })
    });
}
