//! An h2c (HTTP/2 prior knowledge) test upstream on the `h2` crate, on its own
//! thread and tokio runtime. Every request gets its body read, checksummed and
//! recorded; the answer by path:
//! - default: 200 with `x-upstream: h2echo`, `x-method`, `x-path`, `x-body-len`,
//!   `x-body-sum` (`Checksum::hex`), `x-proto: HTTP/2.0`, the request body echoed
//!   back, then the trailer `x-trailer: done`
//! - `/sleep/MS`: the same after MS milliseconds
//! - `/bytes/N`: N pattern bytes, no trailers

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};

use super::http::{pattern_block, Checksum};

/// One request as the h2 upstream saw it.
#[derive(Debug, Clone)]
pub struct H2Seen {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sum: String,
    pub trailers: Vec<(String, String)>,
}

impl H2Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::http::find_header(&self.headers, name)
    }
}

pub struct H2Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<H2Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl H2Upstream {
    pub fn start() -> H2Upstream {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind h2 upstream");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let seen2 = seen.clone();
        let thread = std::thread::Builder::new()
            .name("h2-upstream".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                    let accept = async {
                        loop {
                            let Ok((s, _)) = listener.accept().await else {
                                continue;
                            };
                            let _ = s.set_nodelay(true);
                            let seen = seen2.clone();
                            tokio::spawn(async move {
                                let _ = serve_conn(s, seen).await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
            })
            .unwrap();
        H2Upstream {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Requests fully received so far.
    pub fn requests(&self) -> Vec<H2Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last_request(&self, prefix: &str) -> Option<H2Seen> {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.path.starts_with(prefix))
    }
}

impl Drop for H2Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn serve_conn(
    s: tokio::net::TcpStream,
    seen: Arc<Mutex<Vec<H2Seen>>>,
) -> Result<(), h2::Error> {
    let mut conn = h2::server::handshake(s).await?;
    while let Some(next) = conn.accept().await {
        let (req, respond) = next?;
        let seen = seen.clone();
        tokio::spawn(async move {
            let _ = serve_stream(req, respond, seen).await;
        });
    }
    Ok(())
}

async fn serve_stream(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    seen: Arc<Mutex<Vec<H2Seen>>>,
) -> Result<(), h2::Error> {
    let (parts, mut body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut sum = Checksum::new();
    let mut echo = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        sum.update(&chunk);
        if echo.len() < 64 << 20 {
            echo.extend_from_slice(&chunk);
        }
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body
        .trailers()
        .await?
        .map(|t| pairs(&t))
        .unwrap_or_default();
    seen.lock().unwrap().push(H2Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        version: format!("{:?}", parts.version),
        headers: pairs(&parts.headers),
        body_len: sum.len,
        body_sum: sum.hex(),
        trailers,
    });
    let mut segs = path
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches('/')
        .split('/');
    let first = segs.next().unwrap_or("");
    let arg: u64 = segs.next().unwrap_or("").parse().unwrap_or(0);
    if first == "sleep" {
        tokio::time::sleep(Duration::from_millis(arg.min(60_000))).await;
    }
    let mut resp = Response::builder()
        .status(200)
        .header("x-upstream", "h2echo")
        .header("x-proto", format!("{:?}", parts.version));
    if first == "bytes" {
        resp = resp
            .header("content-type", "application/octet-stream")
            .header("content-length", arg.to_string());
        let mut send = respond.send_response(resp.body(()).unwrap(), arg == 0)?;
        let block = Bytes::from(pattern_block());
        let mut left = arg;
        while left > 0 {
            let take = left.min(block.len() as u64) as usize;
            send_all(&mut send, block.slice(..take), take as u64 == left).await?;
            left -= take as u64;
        }
        return Ok(());
    }
    resp = resp
        .header("x-method", parts.method.as_str())
        .header("x-path", path.as_str())
        .header("x-body-len", sum.len.to_string())
        .header("x-body-sum", sum.hex())
        .header("content-type", "application/octet-stream");
    let mut send = respond.send_response(resp.body(()).unwrap(), false)?;
    if !echo.is_empty() {
        send_all(&mut send, Bytes::from(echo), false).await?;
    }
    let mut t = HeaderMap::new();
    t.insert("x-trailer", HeaderValue::from_static("done"));
    send.send_trailers(t)?;
    Ok(())
}

/// Sends `data` as the peer's flow-control windows allow.
async fn send_all(
    send: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let cap = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(c) => c?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if cap == 0 {
            continue;
        }
        let chunk = data.split_to(cap.min(data.len()));
        send.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}
