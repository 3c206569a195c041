//! kTLS self-test for a VM whose kernel has `tls.ko` (deploy/ktls-vm-test.sh).
//! A TLS 1.3 mTLS handshake over loopback (record-bounded std reads), then
//! `ringmesh_engine::ktls::offload` on both ends, 1 MiB each way through
//! `KtlsStream` under io_uring and epoll, close_notify seen as EOF.
//!
//! `ktls_selftest`: expects kTLS and tests it. `ktls_selftest --expect-unsupported`:
//! expects no kTLS and checks the fallback (probe refuses, the hand-off gives
//! the session back, user-space rustls carries on).
//! Prints `KTLS-SELFTEST PASS` or `KTLS-SELFTEST FAIL: …` and exits 0/1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdTcp};
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use ringmesh_engine::ktls::{self, testing, KtlsStream, Mode, OffloadError, Suite};

type Res<T> = Result<T, String>;

fn main() {
    let expect_unsupported = std::env::args().any(|a| a == "--expect-unsupported");
    let res = if expect_unsupported {
        fallback()
    } else {
        full()
    };
    match res {
        Ok(()) => println!("KTLS-SELFTEST PASS"),
        Err(e) => {
            println!("KTLS-SELFTEST FAIL: {e}");
            std::process::exit(1);
        }
    }
}

/// A finished handshake on a loopback pair: (client, server) sockets + sessions.
fn handshake(
    suite: Suite,
    tickets: usize,
) -> Res<((StdTcp, rustls::Connection), (StdTcp, rustls::Connection))> {
    let (scfg, ccfg) = testing::configs(suite, tickets)?;
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let server = std::thread::spawn(move || -> Res<(StdTcp, rustls::Connection)> {
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        let mut conn = testing::server_conn(scfg)?;
        testing::handshake_std(&mut s, &mut conn).map_err(|e| format!("server handshake: {e}"))?;
        Ok((s, conn))
    });
    let mut c = StdTcp::connect(addr).map_err(|e| e.to_string())?;
    let mut conn = testing::client_conn(ccfg)?;
    testing::handshake_std(&mut c, &mut conn).map_err(|e| format!("client handshake: {e}"))?;
    let s = server
        .join()
        .map_err(|_| "server thread panicked".to_owned())??;
    Ok(((c, conn), s))
}

fn to_monoio(s: StdTcp) -> Res<TcpStream> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    TcpStream::from_std(s).map_err(|e| e.to_string())
}

fn offload(side: &str, s: StdTcp, conn: rustls::Connection) -> Res<KtlsStream> {
    match ktls::offload(to_monoio(s)?, conn) {
        Ok((stream, plaintext)) if plaintext.is_empty() => Ok(stream),
        Ok((_, p)) => Err(format!(
            "{side}: {} bytes of plaintext left in rustls",
            p.len()
        )),
        Err(e) => Err(format!("{side}: offload: {}", e.error())),
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `out` in 64 KiB writes and reads `expect_len` bytes, concurrently;
/// then sends close_notify and expects the peer's close_notify as EOF.
async fn exchange(stream: KtlsStream, out: Vec<u8>, expect: Vec<u8>) -> Res<()> {
    let (mut r, mut w) = stream.into_split();
    let writer = async move {
        for chunk in out.chunks(64 * 1024) {
            let (res, _) = w.write_all(chunk.to_vec()).await;
            res.map_err(|e| format!("write: {e}"))?;
        }
        w.shutdown()
            .await
            .map_err(|e| format!("shutdown (close_notify): {e}"))?;
        Ok::<_, String>(())
    };
    let reader = async move {
        let (res, got) = r.read_exact(vec![0u8; expect.len()]).await;
        res.map_err(|e| format!("read: {e}"))?;
        if got != expect {
            return Err("bytes differ".to_owned());
        }
        let (res, _) = r.read(Vec::with_capacity(64)).await;
        match res {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!(
                "{n} bytes after the data, expected close_notify EOF"
            )),
            Err(e) => Err(format!("expected close_notify EOF, got {e}")),
        }
    };
    let (a, b) = monoio::join!(writer, reader);
    a.and(b)
}

fn run_on(driver: &str, suite: Suite, len: usize, tickets: usize) -> Res<()> {
    let t = Instant::now();
    let ((c, cconn), (s, sconn)) = handshake(suite, tickets)?;
    let body = async move {
        let client = offload("client", c, cconn)?;
        let server = offload("server", s, sconn)?;
        let (a, b) = monoio::join!(
            exchange(client, pattern(1, len), pattern(2, len)),
            exchange(server, pattern(2, len), pattern(1, len))
        );
        a.map_err(|e| format!("client: {e}"))?;
        b.map_err(|e| format!("server: {e}"))
    };
    match driver {
        "io_uring" => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .build()
            .map_err(|e| format!("io_uring runtime: {e}"))?
            .block_on(body),
        _ => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .map_err(|e| format!("epoll runtime: {e}"))?
            .block_on(body),
    }?;
    println!(
        "ok {} {driver}: {len} bytes each way, tickets={tickets}, close_notify -> EOF ({} ms)",
        suite.name(),
        t.elapsed().as_millis()
    );
    Ok(())
}

fn full() -> Res<()> {
    let support = ktls::init(Mode::On)?.ok_or("kTLS off")?;
    println!("probe: kTLS supported ({support})");
    for driver in ["io_uring", "epoll"] {
        // One session ticket from the server: the client's kernel meets it
        // as a control record (EIO) and must skip it.
        run_on(driver, Suite::Aes128Gcm, 1 << 20, 1)?;
        for suite in [Suite::Aes256Gcm, Suite::Chacha20Poly1305] {
            if support.has(suite) {
                run_on(driver, suite, 256 << 10, 0)?;
            }
        }
    }
    // Each tickets=1 run leaves one NewSessionTicket for the client's kernel:
    // EIO, recvmsg with the record-type cmsg, skipped.
    println!(
        "session tickets skipped on the control-record path: {}",
        ktls::tickets_skipped()
    );
    if ktls::tickets_skipped() < 2 {
        return Err("the session tickets never reached the control-record path".into());
    }
    let mut extra = Vec::new();
    ktls::metrics(&mut extra);
    for (name, _, v) in extra {
        println!("{name} {v}");
    }
    Ok(())
}

fn fallback() -> Res<()> {
    match ktls::probe() {
        Ok(s) => return Err(format!("probe says kTLS works ({s}); expected unsupported")),
        Err(e) => println!("probe: unsupported ({e})"),
    }
    if ktls::init(Mode::On).is_ok() {
        return Err("--ktls on started without kTLS".into());
    }
    let ((c, mut cconn), (mut s, mut sconn)) = handshake(Suite::Aes128Gcm, 0)?;
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .map_err(|e| format!("io_uring runtime: {e}"))?;
    let (tcp, conn) = rt.block_on(async move {
        match ktls::offload(to_monoio(c)?, cconn) {
            Err(OffloadError::Declined(d)) => {
                println!("offload declined: {}", d.error);
                Ok((d.tcp, d.conn))
            }
            Err(OffloadError::Failed(e)) => Err(format!("offload lost the session: {e}")),
            Ok(_) => Err("offload succeeded without kTLS".to_owned()),
        }
    })?;
    // Continue in user space: one request/response through rustls.
    cconn = conn;
    let mut c = std::net::TcpStream::from(tcp_into_std(tcp)?);
    c.set_nonblocking(false).map_err(|e| e.to_string())?;
    cconn
        .writer()
        .write_all(b"ping")
        .map_err(|e| e.to_string())?;
    while cconn.wants_write() {
        cconn.write_tls(&mut c).map_err(|e| e.to_string())?;
    }
    let got = read_plain(&mut s, &mut sconn, 4)?;
    if got != b"ping" {
        return Err("server got the wrong bytes".into());
    }
    println!("user-space rustls continued after the declined hand-off");
    Ok(())
}

fn tcp_into_std(tcp: TcpStream) -> Res<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: into_raw_fd hands over ownership of the descriptor.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(tcp.into_raw_fd()) })
}

fn read_plain(s: &mut StdTcp, conn: &mut rustls::Connection, n: usize) -> Res<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut have = 0;
    while have < n {
        match conn.reader().read(&mut out[have..]) {
            Ok(k) => have += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                conn.read_tls(s).map_err(|e| e.to_string())?;
                conn.process_new_packets().map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}
