//! Peers that cost the proxy more than they cost themselves, against the real
//! binary: 1,000 slowloris connections, 1,000 slow readers, a flood of 20,000
//! connections opened and dropped, and running out of file descriptors
//! (the proxy started under a low `RLIMIT_NOFILE`). Each scenario checks that
//! a normal client keeps being served meanwhile (with a latency bound), that
//! the abusers are cut at the configured limits, that the proxy's memory
//! stays bounded and that it recovers afterwards.
//!
//! The scenarios run one at a time (they would otherwise skew each other's
//! latencies and memory): a lock serialises them. Bounds are generous for a
//! loaded 2-core machine and a debug build; the measured numbers are printed
//! (`cargo test --test abuse -- --nocapture`).

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// One scenario at a time; the test process may hold a few thousand sockets.
fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    raise_own_nofile();
    guard
}

/// The test process's soft RLIMIT_NOFILE up to its hard limit.
fn raise_own_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) };
    assert!(
        now.rlim_cur >= 4096,
        "these tests need RLIMIT_NOFILE >= 4096 (have {})",
        now.rlim_cur
    );
}

/// `limits:` lines (indented by two) plus a catch-all listener to `upstream`.
fn config(port: u16, upstream: SocketAddr, limits: &str) -> String {
    format!("limits:\n{limits}\n{}", catch_all(port, "up", &[upstream]))
}

fn series(family: &str) -> String {
    format!("{family}{{listener=\"web\"}}")
}

fn metric_or_zero(proxy: &Proxy, family: &str) -> f64 {
    proxy.metric(&series(family)).unwrap_or(0.0)
}

fn assert_alive(proxy: &Proxy) {
    if let Some(st) = proxy.wait_exit(Duration::ZERO) {
        panic!("the proxy exited with {st}; log:\n{}", proxy.log());
    }
}

/// A normal client on a thread: one GET per fresh connection, every 20 ms,
/// until stopped. Fresh connections exercise accept as well as serving.
struct Probe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<ProbeStats>,
}

#[derive(Debug)]
struct ProbeStats {
    ok: usize,
    failures: Vec<String>,
    latencies: Vec<Duration>,
}

impl ProbeStats {
    fn max(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    fn p99(&self) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(l.len() * 99 / 100).copied().unwrap_or_default()
    }

    /// At least `min_ok` answers, all 200, none slower than `bound`.
    fn check(&self, what: &str, min_ok: usize, bound: Duration) {
        assert!(
            self.failures.is_empty(),
            "{what}: the normal client failed {} time(s), e.g. {:?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
        assert!(
            self.ok >= min_ok,
            "{what}: the normal client got only {} answers",
            self.ok
        );
        assert!(
            self.max() < bound,
            "{what}: the normal client waited {:?} for an answer (bound {bound:?}; p99 {:?})",
            self.max(),
            self.p99()
        );
    }
}

impl Probe {
    fn start(addr: SocketAddr) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let mut st = ProbeStats {
                ok: 0,
                failures: Vec::new(),
                latencies: Vec::new(),
            };
            while !s.load(Ordering::SeqCst) {
                let t0 = Instant::now();
                let r = Conn::try_connect(addr).and_then(|mut c| {
                    c.set_read_timeout(Duration::from_secs(10));
                    c.request(&Req::get("/probe").host("svc").header("Connection", "close"))
                });
                let took = t0.elapsed();
                match r {
                    Ok(r) if r.status == 200 => {
                        st.ok += 1;
                        st.latencies.push(took);
                    }
                    Ok(r) => st
                        .failures
                        .push(format!("status {} after {took:?}", r.status)),
                    Err(e) => st.failures.push(format!("{e} after {took:?}")),
                }
                thread::sleep(Duration::from_millis(20));
            }
            st
        });
        Probe { stop, handle }
    }

    fn finish(self) -> ProbeStats {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("probe thread")
    }
}

/// Reads what is available without blocking: Some(bytes, eof) or None if
/// nothing was there.
fn read_available(s: &mut TcpStream, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A reset after the answer: closed as well.
            Err(_) => return true,
        }
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

// ----- slowloris ---------------------------------------------------------------

const SLOWLORIS: usize = 1000;

#[test]
fn slowloris_connections_are_cut_at_the_head_timeout_while_others_are_served() {
    let _serial = serial();
    let upstream = Upstream::start("u1");
    let port = free_port();
    let head_timeout = Duration::from_secs(3);
    let proxy = Proxy::start(&config(port, upstream.addr, "  request_head_timeout: 3s"));
    let addr = local(port);
    assert_eq!(get(addr, "svc", "/warm").status, 200);
    let rss_before = proxy.rss_kb();
    let peak = RssPeak::start(proxy.pid());

    // Every connection sends its first byte at once, then one more per second.
    let head = b"GET /slow HTTP/1.1\r\nHost: svc\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let t_open = Instant::now();
    let mut conns: Vec<(TcpStream, Instant, Vec<u8>, Option<Duration>)> = (0..SLOWLORIS)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect #{i}: {e}"));
            let at = Instant::now();
            s.write_all(&head[..1]).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, at, Vec::new(), None)
        })
        .collect();
    let opened_in = t_open.elapsed();
    let probe = Probe::start(addr);

    let mut sent = 1;
    let mut next_byte = Instant::now() + Duration::from_secs(1);
    let give_up = Instant::now() + head_timeout + Duration::from_secs(8);
    while conns.iter().any(|c| c.3.is_none()) && Instant::now() < give_up {
        if Instant::now() >= next_byte && sent < head.len() - 4 {
            for (s, _, _, closed) in conns.iter_mut() {
                if closed.is_none() {
                    // The proxy may have answered and closed already.
                    let _ = s.write(&head[sent..sent + 1]);
                }
            }
            sent += 1;
            next_byte += Duration::from_secs(1);
        }
        for (s, at, got, closed) in conns.iter_mut() {
            if closed.is_none() && read_available(s, got) {
                *closed = Some(at.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    let stats = probe.finish();
    let peak_kb = peak.finish();

    let still_open = conns.iter().filter(|c| c.3.is_none()).count();
    assert_eq!(
        still_open, 0,
        "{still_open} slowloris connections still open 8 s after the head timeout"
    );
    let mut times: Vec<Duration> = conns.iter().map(|c| c.3.unwrap()).collect();
    times.sort();
    for (i, (_, _, got, _)) in conns.iter().enumerate() {
        assert!(
            got.starts_with(b"HTTP/1.1 408 "),
            "slowloris #{i} got {:?}",
            String::from_utf8_lossy(got)
        );
    }
    let (first, last) = (times[0], times[times.len() - 1]);
    println!(
        "slowloris: {SLOWLORIS} connections opened in {opened_in:?}, {} bytes each sent; \
         closed with 408 after {first:?}..{last:?} (median {:?}); normal client: {} answers, \
         max {:?}, p99 {:?}; RSS {:.1} MiB before, peak {:.1} MiB",
        sent,
        times[times.len() / 2],
        stats.ok,
        stats.max(),
        stats.p99(),
        mib(rss_before),
        mib(peak_kb)
    );
    // Cut at the head timeout (from the connection's start), not re-armed
    // by each byte: the trickle went on past it.
    assert!(
        first >= head_timeout - Duration::from_millis(150),
        "closed before the head timeout: {first:?}"
    );
    assert!(
        last <= head_timeout + Duration::from_secs(3),
        "closed long after the head timeout: {last:?}"
    );
    stats.check("slowloris", 50, Duration::from_secs(1));
    assert!(
        peak_kb < 100 * 1024,
        "RSS peaked at {:.1} MiB with {SLOWLORIS} slowloris connections",
        mib(peak_kb)
    );
    let m = proxy.metrics();
    assert_metric_line(
        &m,
        &format!(
            "ringmesh_requests_total{{listener=\"web\",route=\"\",cluster=\"\",status_class=\"4xx\"}} {SLOWLORIS}"
        ),
    );
    drop(conns);
    proxy.wait_metric(
        &series("ringmesh_downstream_connections_active"),
        Duration::from_secs(10),
        |v| v == 0.0,
    );
    assert_alive(&proxy);
}

// ----- slow readers ------------------------------------------------------------

const SLOW_READERS: usize = 1000;
/// Far more than the socket buffers on the way hold, so every response stalls.
const BIG_BODY: u64 = 1 << 20;

/// An upstream answering every request with `BIG_BODY` bytes, through a
/// small send buffer: on loopback the kernel would otherwise take a whole
/// body per connection off its hands (4 MiB send buffers), a gigabyte of
/// kernel memory for this test, and hide nothing about the proxy.
fn big_body_upstream() -> Upstream {
    Upstream::raw("big", |s, _| {
        let _ = socket2::SockRef::from(&s).set_send_buffer_size(16 * 1024);
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        while let Ok(Some(_)) = read_head(&mut r) {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BODY}\r\n\r\n");
            if w.write_all(head.as_bytes()).is_err() || write_pattern(&mut w, BIG_BODY).is_err() {
                return;
            }
        }
    })
}

/// A slow reader's socket: a small receive buffer and segment size, so the
/// proxy's write stalls after a few dozen KiB (loopback's 64 KiB segments
/// would give its socket a 4 MiB send buffer).
fn slow_reader(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_recv_buffer_size(4096)?;
    s.set_tcp_mss(1400)?;
    s.connect(&addr.into())?;
    Ok(s.into())
}

#[test]
fn slow_readers_are_cut_at_the_send_timeout_and_their_bodies_are_not_buffered() {
    let _serial = serial();
    let upstream = Upstream::start("u1");
    let big = big_body_upstream();
    let port = free_port();
    let send_timeout = Duration::from_secs(2);
    let proxy = Proxy::start(&format!(
        r#"limits:
  downstream_send_timeout: 2s
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: big
            match: {{ path: {{ prefix: /big }} }}
            route: {{ cluster: big }}
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: up }}
clusters:
{}{}"#,
        cluster_yaml("up", &[upstream.addr]),
        cluster_yaml("big", &[big.addr])
    ));
    let addr = local(port);
    assert_eq!(get(addr, "svc", "/warm").status, 200);
    let rss_before = proxy.rss_kb();
    let peak = RssPeak::start(proxy.pid());

    let req = b"GET /big HTTP/1.1\r\nHost: svc\r\n\r\n";
    let t_start = Instant::now();
    let conns: Vec<TcpStream> = (0..SLOW_READERS)
        .map(|i| {
            let mut s = slow_reader(addr).unwrap_or_else(|e| panic!("connect #{i}: {e}"));
            s.write_all(req).unwrap();
            s
        })
        .collect();
    let all_sent = t_start.elapsed();
    // A thousand requests at once are a burst of work (on two cores shared
    // with this test's thousand upstream threads); the normal client comes
    // in once they are all forwarded and stalled.
    assert!(
        wait_until(Duration::from_secs(10), || big.accepted() >= SLOW_READERS),
        "only {} upstream connections",
        big.accepted()
    );
    let probe = Probe::start(addr);

    // None is cut before the send timeout (checked if the requests went
    // out early enough to tell)...
    // The scrape must also have been answered before the send timeout: a
    // busy machine can delay it past that.
    let early = (all_sent + Duration::from_millis(500) < send_timeout)
        .then(|| {
            thread::sleep(
                (send_timeout - Duration::from_millis(300)).saturating_sub(t_start.elapsed()),
            );
            let v = metric_or_zero(&proxy, "ringmesh_downstream_send_timeouts_total");
            (t_start.elapsed() < send_timeout).then_some(v)
        })
        .flatten();
    // ...and all of them soon after it.
    let mut cut_at = None;
    while t_start.elapsed() < send_timeout + Duration::from_secs(10) {
        if metric_or_zero(&proxy, "ringmesh_downstream_send_timeouts_total") >= SLOW_READERS as f64
        {
            cut_at = Some(t_start.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let stats = probe.finish();
    let peak_kb = peak.finish();
    let cut_at = cut_at.unwrap_or_else(|| {
        panic!(
            "only {} of {SLOW_READERS} slow readers cut after {:?}",
            metric_or_zero(&proxy, "ringmesh_downstream_send_timeouts_total"),
            t_start.elapsed()
        )
    });
    assert!(
        early.unwrap_or(0.0) == 0.0,
        "slow readers cut before the send timeout"
    );

    // Each got part of its body, then the end of the connection.
    let mut received = Vec::with_capacity(conns.len());
    for (i, mut s) in conns.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut n = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("slow reader #{i}: still open after {n} bytes")
                }
                Err(_) => break,
            }
        }
        assert!(
            n < BIG_BODY,
            "slow reader #{i} got its whole body ({n} bytes)"
        );
        received.push(n);
    }
    received.sort();
    println!(
        "slow readers: {SLOW_READERS} requests sent in {all_sent:?}; all cut by {cut_at:?} \
         (send timeout {send_timeout:?}); each had received {}..{} bytes of {BIG_BODY}; \
         normal client: {} answers, max {:?}, p99 {:?}; RSS {:.1} MiB before, peak {:.1} MiB",
        received[0],
        received[received.len() - 1],
        stats.ok,
        stats.max(),
        stats.p99(),
        mib(rss_before),
        mib(peak_kb)
    );
    assert!(
        cut_at < send_timeout + all_sent + Duration::from_secs(4),
        "slow readers cut only after {cut_at:?}"
    );
    stats.check("slow readers", 30, Duration::from_secs(2));
    // Buffered whole, the bodies would be 1 GiB.
    assert!(
        peak_kb < 150 * 1024,
        "RSS peaked at {:.1} MiB with {SLOW_READERS} slow readers",
        mib(peak_kb)
    );
    let m = proxy.wait_metric(
        &series("ringmesh_downstream_connections_active"),
        Duration::from_secs(10),
        |v| v == 0.0,
    );
    assert_metric_line(
        &m,
        &format!("ringmesh_downstream_send_timeouts_total{{listener=\"web\"}} {SLOW_READERS}"),
    );
    assert_eq!(get(addr, "svc", "/after").status, 200);
    assert_alive(&proxy);
}

// ----- connection flood --------------------------------------------------------

const FLOOD: usize = 20_000;
const FLOOD_THREADS: usize = 4;

#[test]
fn a_flood_of_connections_opened_and_dropped_leaves_the_proxy_serving() {
    let _serial = serial();
    let upstream = Upstream::start("u1");
    let port = free_port();
    let proxy = Proxy::start(&config(port, upstream.addr, "  request_head_timeout: 5s"));
    let addr = local(port);
    assert_eq!(get(addr, "svc", "/warm").status, 200);
    let rss_before = proxy.rss_kb();
    let peak = RssPeak::start(proxy.pid());
    let probe = Probe::start(addr);

    let t0 = Instant::now();
    let threads: Vec<JoinHandle<usize>> = (0..FLOOD_THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut failed = 0;
                for i in 0..FLOOD / FLOOD_THREADS {
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    else {
                        failed += 1;
                        continue;
                    };
                    // Plain close, half a request then close, reset, half a
                    // request then reset.
                    let k = (i + t) % 4;
                    if k == 1 || k == 3 {
                        let _ = s.write_all(b"GET /half HTTP/1.1\r\nHost: sv");
                    }
                    if k >= 2 {
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    }
                    drop(s);
                }
                failed
            })
        })
        .collect();
    let failed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let flood_took = t0.elapsed();
    let m = proxy.wait_metric(
        &series("ringmesh_downstream_connections_active"),
        Duration::from_secs(15),
        |v| v == 0.0,
    );
    let drained_in = t0.elapsed();
    let stats = probe.finish();
    let peak_kb = peak.finish();
    let rss_after = proxy.rss_kb();
    let total = metric_value(&m, &series("ringmesh_downstream_connections_total")).unwrap_or(0.0);
    // A connection reset while it waited in the backlog may fail its accept
    // (ECONNABORTED) instead.
    let aborted =
        metric_value(&m, &series("ringmesh_downstream_accept_errors_total")).unwrap_or(0.0);
    println!(
        "flood: {FLOOD} connections ({failed} failed to connect) in {flood_took:?} \
         ({:.0}/s), active back to 0 after {drained_in:?}; proxy counted {total} connections \
         and {aborted} failed accepts; \
         normal client: {} answers, max {:?}, p99 {:?}; RSS {:.1} MiB before, peak {:.1}, \
         after {:.1}",
        FLOOD as f64 / flood_took.as_secs_f64(),
        stats.ok,
        stats.max(),
        stats.p99(),
        mib(rss_before),
        mib(peak_kb),
        mib(rss_after)
    );
    assert_metric_line(
        &m,
        &format!("{} 0", series("ringmesh_downstream_connections_active")),
    );
    assert_eq!(failed, 0, "connects failed during the flood");
    assert!(
        total + aborted >= (FLOOD + stats.ok) as f64,
        "the proxy counted {total} connections and {aborted} failed accepts"
    );
    // The flood outruns a debug build: the listen backlog (4096) overflows,
    // the kernel drops SYNs, and a client's connect waits for its SYN to be
    // sent again (1 s, then 3 s later). Every request is still answered.
    stats.check("flood", 1, Duration::from_secs(8));
    assert!(
        peak_kb < 100 * 1024,
        "RSS peaked at {:.1} MiB",
        mib(peak_kb)
    );
    for _ in 0..20 {
        assert_eq!(get(addr, "svc", "/after").status, 200);
    }
    assert_alive(&proxy);
}

// ----- file-descriptor exhaustion ----------------------------------------------

/// The proxy's RLIMIT_NOFILE (soft and hard: it cannot raise it).
const PROXY_NOFILE: u64 = 256;
const IDLE_CONNS: usize = 400;

fn start_limited(body: &str) -> Proxy {
    let p = Proxy::spawn_prepared(body, &["--workers", "1"], |cmd| {
        // SAFETY: only setrlimit (async-signal-safe) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let r = libc::rlimit {
                    rlim_cur: PROXY_NOFILE,
                    rlim_max: PROXY_NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    p.wait_ready(Duration::from_secs(10));
    p
}

/// Connects `n` sockets that send nothing (they sit in the proxy or its backlog).
fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("idle connection #{i}: {e}"))
        })
        .collect()
}

/// A request on a connection the proxy has not accepted gets no answer (yet).
fn unanswered(addr: SocketAddr) -> Conn {
    let mut c = Conn::connect(addr);
    c.send(&Req::get("/late").host("svc").to_bytes()).unwrap();
    c.set_read_timeout(Duration::from_millis(800));
    let mut b = [0u8; 1];
    match c.stream.peek(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection over the limit was served: {other:?}"),
    }
    c
}

#[test]
fn at_the_derived_connection_limit_new_connections_wait_and_open_ones_are_served() {
    let _serial = serial();
    let upstream = Upstream::start("u1");
    let port = free_port();
    let proxy = start_limited(&config(port, upstream.addr, "  request_head_timeout: 30s"));
    let addr = local(port);
    let limit = 96; // (256 - 64) / 2 for one worker: see docs/config.md
    assert!(
        proxy.log().contains(&format!(
            "at most {limit} (from RLIMIT_NOFILE {PROXY_NOFILE}) connections per worker"
        )),
        "{}",
        proxy.log()
    );
    let mut keep = Conn::connect(addr);
    assert_eq!(
        keep.request(&Req::get("/k").host("svc")).unwrap().status,
        200
    );

    let t0 = Instant::now();
    let idle = idle_connections(addr, IDLE_CONNS);
    let m = proxy.wait_metric(
        &series("ringmesh_downstream_connections_active"),
        Duration::from_secs(5),
        |v| v == limit as f64,
    );
    assert_metric_line(
        &m,
        &format!(
            "{} {limit}",
            series("ringmesh_downstream_connections_active")
        ),
    );
    assert!(metric_value(&m, &series("ringmesh_downstream_accept_paused_total")).unwrap() >= 1.0);
    // Open connections are served, with fresh upstream connections too.
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let r = keep
            .request(&Req::get(&format!("/k{i}")).host("svc"))
            .unwrap();
        worst = worst.max(t.elapsed());
        assert_eq!(r.status, 200);
    }
    let late = unanswered(addr);
    assert_eq!(
        metric_or_zero(&proxy, "ringmesh_downstream_accept_errors_total"),
        0.0,
        "the limit keeps the proxy away from EMFILE"
    );

    // The idle ones go: the waiting connection is served.
    drop(idle);
    let mut late = late;
    late.set_read_timeout(Duration::from_secs(5));
    let t_freed = Instant::now();
    let r = late.read_response("GET").expect("the waiting request");
    assert_eq!(r.status, 200);
    let served_after = t_freed.elapsed();
    assert_eq!(get(addr, "svc", "/fresh").status, 200);
    proxy.wait_metric(
        &series("ringmesh_downstream_connections_active"),
        Duration::from_secs(5),
        |v| v <= 2.0,
    );
    println!(
        "derived limit: {limit} of {IDLE_CONNS} idle connections accepted (RLIMIT_NOFILE \
         {PROXY_NOFILE}); an open connection's slowest of 20 requests {worst:?}; the waiting \
         one served {served_after:?} after the idle ones closed; whole scenario {:?}",
        t0.elapsed()
    );
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    assert_alive(&proxy);
}

#[test]
fn out_of_file_descriptors_the_proxy_backs_off_keeps_serving_and_recovers() {
    let _serial = serial();
    let (a, b, pooled) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("pooled"),
    );
    let port = free_port();
    // A limit far above the descriptors: accept runs into EMFILE.
    let body = format!(
        r#"limits:
  request_head_timeout: 30s
  max_connections_per_worker: 100000
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: pooled
            match: {{ path: {{ prefix: /pooled }} }}
            route: {{ cluster: pooled }}
          - name: ab
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: ab }}
clusters:
{}{}"#,
        cluster_yaml("ab", &[a.addr, b.addr]),
        cluster_yaml("pooled", &[pooled.addr])
    );
    let proxy = start_limited(&body);
    let addr = local(port);
    // One open connection with an upstream connection in the pool, one with
    // none yet.
    let mut with_pool = Conn::connect(addr);
    assert_eq!(
        with_pool
            .request(&Req::get("/pooled/1").host("svc"))
            .unwrap()
            .status,
        200
    );
    let mut without = Conn::connect(addr);
    proxy.wait_metric(
        &series("ringmesh_downstream_connections_active"),
        Duration::from_secs(5),
        |v| v == 2.0,
    );

    let t0 = Instant::now();
    let idle = idle_connections(addr, IDLE_CONNS);
    assert!(
        wait_until(Duration::from_secs(10), || proxy
            .log()
            .contains("Too many open files")),
        "no EMFILE in the log:\n{}",
        proxy.log()
    );
    thread::sleep(Duration::from_millis(300));
    assert_alive(&proxy);
    // Served over the pooled upstream connection...
    for i in 0..5 {
        let r = with_pool
            .request(&Req::get(&format!("/pooled/{i}")).host("svc"))
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.text());
    }
    // ...and an honest 503 where a new upstream connection is needed.
    for i in 0..6 {
        let r = without
            .request(&Req::get(&format!("/x{i}")).host("svc"))
            .unwrap();
        assert_eq!(r.status, 503, "{:?}", r.text());
        assert_eq!(r.error_reason(), Some("upstream_connect_failed"));
    }
    let late = unanswered(addr);
    assert_alive(&proxy);

    drop(idle);
    let mut late = late;
    late.set_read_timeout(Duration::from_secs(5));
    let t_freed = Instant::now();
    let r = late.read_response("GET").expect("the waiting request");
    assert_eq!(r.status, 200);
    let served_after = t_freed.elapsed();
    // Running out of descriptors here ejected neither endpoint: both take
    // traffic at once.
    let mut seen = Vec::new();
    for i in 0..6 {
        let r = get(addr, "svc", &format!("/after{i}"));
        assert_eq!(r.status, 200);
        seen.push(r.upstream().unwrap_or_default().to_string());
    }
    assert!(
        seen.iter().any(|u| u == "a") && seen.iter().any(|u| u == "b"),
        "an endpoint was ejected for the proxy's own EMFILE: {seen:?}"
    );
    let r = without.request(&Req::get("/again").host("svc")).unwrap();
    assert_eq!(r.status, 200);
    let m = proxy.metrics();
    let errors =
        metric_value(&m, &series("ringmesh_downstream_accept_errors_total")).unwrap_or(0.0);
    assert!(errors >= 1.0, "accept errors not counted");
    println!(
        "EMFILE: {IDLE_CONNS} idle connections against RLIMIT_NOFILE {PROXY_NOFILE}; \
         {errors} failed accepts (backed off); the waiting request served {served_after:?} \
         after the idle ones closed; upstreams after recovery {seen:?}; whole scenario {:?}",
        t0.elapsed()
    );
    assert_alive(&proxy);
}

// ----- tunnels whose client stops reading --------------------------------------

/// Writes to `s` until the proxy closes the connection (the client never
/// reads); returns the bytes written and when the write failed.
fn write_until_closed(mut s: TcpStream) -> JoinHandle<(u64, Instant)> {
    thread::spawn(move || {
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        let mut n = 0u64;
        loop {
            match s.write(&chunk) {
                Ok(k) => n += k as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("the tunnel is still open 20 s into a stall ({n} bytes written)")
                }
                Err(_) => return (n, Instant::now()),
            }
        }
    })
}

/// An echo server: everything it reads it writes back.
fn echo_upstream() -> Upstream {
    Upstream::raw("echo", |s, _| {
        let mut r = s.try_clone().unwrap();
        let mut w = s;
        let _ = std::io::copy(&mut r, &mut w);
    })
}

#[test]
fn an_upgraded_tunnel_whose_client_stops_reading_is_closed_at_the_send_timeout() {
    let _serial = serial();
    let upstream = Upstream::start("ws");
    let port = free_port();
    let proxy = Proxy::start(&config(
        port,
        upstream.addr,
        "  downstream_send_timeout: 2s",
    ));
    let mut s = slow_reader(local(port)).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed before the 101");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
    // The upstream echoes; the client writes and never reads.
    let t0 = Instant::now();
    let (written, failed_at) = write_until_closed(s).join().unwrap();
    let closed_after = failed_at - t0;
    let m = proxy.wait_metric(
        &series("ringmesh_downstream_send_timeouts_total"),
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    assert_metric_line(
        &m,
        &format!("{} 1", series("ringmesh_downstream_send_timeouts_total")),
    );
    proxy.wait_metric(
        &series("ringmesh_downstream_connections_active"),
        Duration::from_secs(5),
        |v| v == 0.0,
    );
    println!(
        "upgrade tunnel: client wrote {written} bytes without reading; closed after \
         {closed_after:?} (send timeout 2s)"
    );
    assert!(
        closed_after >= Duration::from_secs(2) && closed_after < Duration::from_secs(8),
        "{closed_after:?}"
    );
    assert_eq!(get(local(port), "svc", "/after").status, 200);
}

#[test]
fn a_tcp_tunnel_whose_client_stops_reading_is_closed_at_the_idle_timeout() {
    let _serial = serial();
    let echo = echo_upstream();
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    protocol: tcp
    cluster: echo
    idle_timeout: 2s
clusters:
{}"#,
        cluster_yaml("echo", &[echo.addr])
    ));
    let s = slow_reader(local(port)).unwrap();
    let t0 = Instant::now();
    let (written, failed_at) = write_until_closed(s).join().unwrap();
    let closed_after = failed_at - t0;
    let m = proxy.wait_metric(
        "ringmesh_tcp_connections_total{listener=\"web\",outcome=\"idle_timeout\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    assert_metric_line(
        &m,
        &format!("{} 1", series("ringmesh_downstream_send_timeouts_total")),
    );
    println!(
        "tcp tunnel: client wrote {written} bytes without reading; closed after \
         {closed_after:?} (idle timeout 2s)"
    );
    assert!(
        closed_after >= Duration::from_secs(2) && closed_after < Duration::from_secs(8),
        "{closed_after:?}"
    );
}

#[test]
fn an_http2_client_that_stops_reading_is_closed_at_the_send_timeout() {
    use common::h2raw::{self, H2Client};
    let _serial = serial();
    let big = big_body_upstream();
    let port = free_port();
    let proxy = Proxy::start(&config(port, big.addr, "  downstream_send_timeout: 2s"));
    // Windows wide open: only TCP holds the proxy back once the client
    // stops reading.
    let s = slow_reader(local(port)).unwrap();
    let mut c = H2Client::from_stream(s).unwrap();
    let mut hello = h2raw::PREFACE.to_vec();
    hello.extend_from_slice(&h2raw::settings_frame(&[(
        h2raw::setting::INITIAL_WINDOW_SIZE,
        (1 << 31) - 1,
    )]));
    hello.extend_from_slice(&h2raw::window_update_frame(0, (1 << 31) - 1 - 65_535));
    hello.extend_from_slice(&h2raw::headers_frame(
        1,
        &h2raw::request_headers("GET", "/big", &[]),
        true,
    ));
    c.write(&hello).unwrap();
    let t0 = Instant::now();
    let m = proxy.wait_metric(
        &series("ringmesh_downstream_send_timeouts_total"),
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let cut_after = t0.elapsed();
    assert_metric_line(
        &m,
        &format!("{} 1", series("ringmesh_downstream_send_timeouts_total")),
    );
    proxy.wait_metric(
        &series("ringmesh_downstream_connections_active"),
        Duration::from_secs(5),
        |v| v == 0.0,
    );
    println!("http/2 slow reader: cut after {cut_after:?} (send timeout 2s)");
    assert!(
        cut_after >= Duration::from_millis(1900) && cut_after < Duration::from_secs(6),
        "{cut_after:?}"
    );
    assert_alive(&proxy);
}
