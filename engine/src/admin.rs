//! The admin listener: `/ready`, `/healthz`, `/stats/prometheus`, `/config_dump`.
//! A plain blocking thread: it is off the data path and serves an operator or a
//! scraper, one short request per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::shared::Shared;

/// Admin connections served at once; more wait in the accept backlog. One
/// slow client must not make a readiness probe time out, and a flood must
/// not spawn unbounded threads.
const MAX_CONCURRENT: usize = 8;

pub fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        while active.load(Ordering::Acquire) >= MAX_CONCURRENT {
            std::thread::sleep(Duration::from_millis(5));
        }
        active.fetch_add(1, Ordering::AcqRel);
        let (shared, done) = (shared.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("ringmesh-admin-conn".into())
            .spawn(move || {
                let _ = handle(conn, &shared);
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn handle(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Drain the rest of the head; the admin API takes no bodies.
    let mut hdr = String::new();
    let mut total = 0;
    while reader.read_line(&mut hdr)? > 2 && total < 64 * 1024 {
        total += hdr.len();
        hdr.clear();
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method != "GET" && method != "HEAD" {
        (405, "text/plain", "method not allowed\n".to_string())
    } else {
        route(path, shared)
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes())?;
    }
    Ok(())
}

fn route(path: &str, shared: &Shared) -> (u16, &'static str, String) {
    match path {
        "/ready" => {
            if is_ready(shared) {
                (200, "text/plain", "ready\n".into())
            } else {
                (503, "text/plain", "not ready\n".into())
            }
        }
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/stats/prometheus" | "/metrics" => (200, "text/plain; version=0.0.4", metrics(shared)),
        "/config_dump" => (200, "application/json", config_dump(shared)),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

/// Ready once a config is loaded (in control mode: the first complete one
/// from the control plane, and an identity that has not expired) and every
/// worker runs every listener of it.
pub fn is_ready(shared: &Shared) -> bool {
    if !shared.ready.load(Ordering::Acquire) || shared.is_draining() {
        return false;
    }
    if shared.xds.is_enabled() && !shared.xds.identity_valid(crate::xds::identity::unix_now()) {
        return false;
    }
    let config = shared.config();
    shared.workers.iter().all(|w| {
        let running = w.listening.lock().unwrap_or_else(|p| p.into_inner());
        config.listeners.iter().all(|l| running.contains(&l.addr))
    })
}

pub fn metrics(shared: &Shared) -> String {
    let regs: Vec<_> = shared.workers.iter().map(|w| &*w.registry).collect();
    let mut extra = vec![
        (
            "ringmesh_config_epoch",
            String::new(),
            shared.epoch() as f64,
        ),
        (
            "ringmesh_config_reloads_total",
            "result=\"success\"".to_string(),
            shared.reloads_ok.load(Ordering::Relaxed) as f64,
        ),
        (
            "ringmesh_config_reloads_total",
            "result=\"failure\"".to_string(),
            shared.reloads_failed.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (i, w) in shared.workers.iter().enumerate() {
        let driver = *w.driver.lock().unwrap_or_else(|p| p.into_inner());
        extra.push((
            "ringmesh_worker_io_driver",
            format!("worker=\"{i}\",driver=\"{driver}\""),
            1.0,
        ));
    }
    crate::ktls::metrics(&mut extra);
    if shared.xds.is_enabled() {
        shared.xds.metrics(&mut extra);
    }
    crate::metrics::render(&regs, &extra)
}

pub fn config_dump(shared: &Shared) -> String {
    let c = shared.config();
    let mut v = serde_json::json!({
        "epoch": c.epoch,
        "version": c.version,
        "source": c.source.display().to_string(),
        "config": c.model,
    });
    if shared.xds.is_enabled() {
        v["control"] = shared.xds.to_json();
    }
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}
