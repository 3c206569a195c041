//! Test upstreams: a scripted-by-path HTTP/1.1 keep-alive server, and a "raw"
//! server whose TCP conversation is written by the test.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::http::{
    body_kind, find_header, parse_head, read_body, read_head, write_pattern, Checksum,
};

/// How long an upstream connection may sit idle before the test server drops it.
const UPSTREAM_IDLE: Duration = Duration::from_secs(30);

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Request target as received (path and query).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// Index of the TCP connection (0-based, in accept order) it arrived on.
    pub conn: usize,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type RawHandler = dyn Fn(TcpStream, usize) + Send + Sync + 'static;

/// A loopback listener on a free port with a backlog of `backlog` (std's
/// `bind` uses 128: a proxy opening a thousand connections at once would see
/// SYNs dropped and retried a second later).
fn bind_with_backlog(backlog: i32) -> TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("upstream socket");
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind upstream");
    s.listen(backlog).expect("listen upstream");
    s.into()
}

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    /// The scripted HTTP server. Behaviour by request path:
    /// - default: 200 JSON `{"upstream","method","path","body_len","body_sum"}` (body is
    ///   read streaming, never stored; `body_sum` is `Checksum::hex`)
    /// - `/status/NNN`: that status (no body for 1xx/204/304)
    /// - `/bytes/N`: N pattern bytes with Content-Length
    /// - `/chunked/N`: N pattern bytes chunked, trailer `x-trailer: done`
    /// - `/close`: a read-until-close response, then the connection is closed
    /// - `/sleep/MS`: waits MS milliseconds, then the default answer
    /// - `Upgrade: websocket` on any path not starting with `/refuse`: 101, then raw echo
    /// - `Expect: 100-continue`: a `100 Continue` is sent before reading the body.
    ///
    /// Every response carries `x-upstream: NAME` and `server: test-upstream`.
    pub fn start(name: &str) -> Upstream {
        let name_owned = name.to_string();
        Upstream::spawn(name, None, Some(name_owned))
    }

    /// A server whose every accepted connection is handed to `handler(stream, index)`
    /// on its own thread. Use it for garbage, truncated, silent or resetting upstreams.
    pub fn raw(name: &str, handler: impl Fn(TcpStream, usize) + Send + Sync + 'static) -> Upstream {
        Upstream::spawn(name, Some(Arc::new(handler)), None)
    }

    fn spawn(name: &str, raw: Option<Arc<RawHandler>>, http_name: Option<String>) -> Upstream {
        let listener = bind_with_backlog(1024);
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (accepted, requests, stop) = (accepted.clone(), requests.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("upstream-{name}"))
                .spawn(move || {
                    for s in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(s) = s else { continue };
                        let idx = accepted.fetch_add(1, Ordering::SeqCst);
                        let _ = s.set_nodelay(true);
                        if let Some(h) = &raw {
                            let h = h.clone();
                            thread::spawn(move || h(s, idx));
                        } else {
                            let name = http_name.clone().unwrap_or_default();
                            let requests = requests.clone();
                            thread::spawn(move || {
                                let _ = serve_http(s, idx, &name, &requests);
                            });
                        }
                    }
                })
                .unwrap();
        }
        Upstream {
            name: name.to_string(),
            addr,
            accepted,
            requests,
            stop,
        }
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Requests fully received so far (recorded after the body was read).
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The last recorded request whose path starts with `prefix`.
    pub fn last_request(&self, prefix: &str) -> Option<Recorded> {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.path.starts_with(prefix))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// A socket address on which nothing listens (bound then dropped).
pub fn dead_addr() -> SocketAddr {
    super::local(super::free_port())
}

/// An address whose TCP connects hang (SYNs dropped): a listener with backlog 0
/// that never accepts and whose accept queue is already full. Keep the returned
/// guard alive for as long as the address must stay a black hole.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

pub fn blackhole() -> Blackhole {
    use std::os::unix::io::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) on a socket we own; re-listening only changes the backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(rc, 0, "listen(backlog 0)");
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => break, // the queue is full: further connects hang
        }
    }
    let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(
        probe.is_err(),
        "could not make a black-hole address (connect still succeeds)"
    );
    Blackhole {
        addr,
        _listener: listener,
        _fillers: fillers,
    }
}

/// Raw-mode helper: reads one request head (None on EOF/timeout).
pub fn read_request_head(s: &mut TcpStream) -> Option<String> {
    s.set_read_timeout(Some(UPSTREAM_IDLE)).ok()?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
        if head.len() > 1 << 20 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Raw-mode helper: close with a TCP RST (SO_LINGER 0).
pub fn reset(s: TcpStream) {
    use std::os::unix::io::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd owned by `s`, pointer/len describe a live `linger` value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

fn serve_http(
    s: TcpStream,
    conn: usize,
    name: &str,
    requests: &Mutex<Vec<Recorded>>,
) -> io::Result<()> {
    s.set_read_timeout(Some(UPSTREAM_IDLE))?;
    s.set_write_timeout(Some(UPSTREAM_IDLE))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::with_capacity(64 * 1024, s);
    loop {
        let Some(head) = read_head(&mut r)? else {
            return Ok(());
        };
        let (start, headers) = parse_head(&head);
        let mut parts = start.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let hdr = |n: &str| find_header(&headers, n).map(|v| v.to_ascii_lowercase());
        if hdr("expect").as_deref() == Some("100-continue") {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let kind = match body_kind(&headers, false) {
            Ok(k) => k,
            Err(_) => {
                w.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                )?;
                return Ok(());
            }
        };
        let mut sum = Checksum::new();
        read_body(&mut r, kind, &mut |d| sum.update(d))?;
        requests.lock().unwrap().push(Recorded {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            body_len: sum.len,
            conn,
        });
        let close = hdr("connection").is_some_and(|c| c.split(',').any(|t| t.trim() == "close"));
        let head_only = method == "HEAD";
        let common = format!("server: test-upstream\r\nx-upstream: {name}\r\n");

        let upgrade = hdr("upgrade").is_some_and(|u| u.contains("websocket"));
        if upgrade && !path.starts_with("/refuse") {
            w.write_all(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                     sec-websocket-accept: dGhlIHNhbXBsZSBub25jZQ==\r\n{common}\r\n"
                )
                .as_bytes(),
            )?;
            // Echo raw bytes (whatever was already buffered first) until EOF, then half-close.
            let buffered = r.buffer().to_vec();
            r.consume(buffered.len());
            w.write_all(&buffered)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match r.get_mut().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => w.write_all(&buf[..n])?,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let _ = w.shutdown(Shutdown::Write);
            return Ok(());
        }

        let mut segs = path
            .split('?')
            .next()
            .unwrap_or("")
            .trim_start_matches('/')
            .split('/');
        let first = segs.next().unwrap_or("");
        let arg = segs.next().unwrap_or("");
        match first {
            "status" => {
                let code: u16 = arg.parse().unwrap_or(500);
                if code == 204 || code == 304 || (100..200).contains(&code) {
                    w.write_all(format!("HTTP/1.1 {code} Status\r\n{common}\r\n").as_bytes())?;
                } else {
                    let body = format!("status {code} from {name}\n");
                    w.write_all(
                        format!(
                            "HTTP/1.1 {code} Status\r\n{common}content-length: {}\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )?;
                    if !head_only {
                        w.write_all(body.as_bytes())?;
                    }
                }
            }
            "bytes" => {
                let n: u64 = arg.parse().unwrap_or(0);
                w.write_all(
                    format!("HTTP/1.1 200 OK\r\n{common}content-type: application/octet-stream\r\ncontent-length: {n}\r\n\r\n")
                        .as_bytes(),
                )?;
                if !head_only {
                    write_pattern(&mut w, n)?;
                }
            }
            "chunked" => {
                let n: u64 = arg.parse().unwrap_or(0);
                w.write_all(
                    format!("HTTP/1.1 200 OK\r\n{common}transfer-encoding: chunked\r\ntrailer: x-trailer\r\n\r\n").as_bytes(),
                )?;
                if !head_only {
                    let block = super::http::pattern_block();
                    let mut left = n;
                    while left > 0 {
                        let take = left.min(block.len() as u64) as usize;
                        w.write_all(format!("{take:x}\r\n").as_bytes())?;
                        w.write_all(&block[..take])?;
                        w.write_all(b"\r\n")?;
                        left -= take as u64;
                    }
                    w.write_all(b"0\r\nx-trailer: done\r\n\r\n")?;
                }
            }
            "close" => {
                w.write_all(
                    format!("HTTP/1.1 200 OK\r\n{common}connection: close\r\n\r\n").as_bytes(),
                )?;
                if !head_only {
                    w.write_all(format!("closed-body from {name}").as_bytes())?;
                }
                let _ = w.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => {
                if first == "sleep" {
                    let ms: u64 = arg.parse().unwrap_or(0);
                    thread::sleep(Duration::from_millis(ms.min(60_000)));
                }
                let body = serde_json::json!({
                    "upstream": name,
                    "method": method,
                    "path": path,
                    "body_len": sum.len,
                    "body_sum": sum.hex(),
                })
                .to_string();
                w.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\n{common}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                )?;
                if !head_only {
                    w.write_all(body.as_bytes())?;
                }
            }
        }
        w.flush()?;
        if close {
            let _ = w.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}
