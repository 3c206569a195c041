//! The admin HTTP endpoint: `GET /status` (JSON), `/metrics` (Prometheus
//! text), `/healthz`, `/ready`. A deliberately tiny HTTP/1.1 responder: one
//! request per connection, the head read with a size limit and a timeout,
//! a bounded number of connections at once. Also the client side that
//! `ringmesh-control status` uses.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::log_warn;
use crate::state::Shared;

const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 16;

/// Serves until the process exits.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (mut sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log_warn!("admin: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(IO_TIMEOUT, handle(&mut sock, &shared)).await;
        });
    }
}

async fn handle(sock: &mut tokio::net::TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > MAX_HEAD {
            return respond(sock, false, 431, "text/plain", "request header too large\n").await;
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(sock, false, 400, "text/plain", "bad request\n").await;
    };
    if !version.starts_with("HTTP/1.") {
        return respond(sock, false, 400, "text/plain", "bad request\n").await;
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(sock, false, 405, "text/plain", "only GET and HEAD\n").await;
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/status" => {
            let body = serde_json::to_string_pretty(&shared.status()).unwrap_or_default() + "\n";
            respond(sock, head_only, 200, "application/json", &body).await
        }
        "/metrics" => {
            let body = shared.metrics.render(&shared.gauges());
            respond(sock, head_only, 200, "text/plain; version=0.0.4", &body).await
        }
        "/healthz" => respond(sock, head_only, 200, "text/plain", "ok\n").await,
        "/ready" if shared.is_shutting_down() => {
            respond(sock, head_only, 503, "text/plain", "shutting down\n").await
        }
        "/ready" => respond(sock, head_only, 200, "text/plain", "ready\n").await,
        _ => respond(sock, head_only, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(
    sock: &mut tokio::net::TcpStream,
    head_only: bool,
    code: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    sock.write_all(&out).await?;
    sock.shutdown().await
}

/// `GET path` on the admin endpoint at `addr`: the body of a 200 response.
pub fn get(addr: &str, path: &str) -> Result<String, String> {
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut sock = TcpStream::connect_timeout(&target, Duration::from_secs(3))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    sock.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| sock.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut resp = Vec::new();
    sock.take(64 * 1024 * 1024)
        .read_to_end(&mut resp)
        .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP response"))?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("{addr}{path}: HTTP {status}: {}", body.trim_end()));
    }
    Ok(body.to_owned())
}
