//! Access log: workers format a JSON line and hand it to a writer thread over a
//! bounded channel with `try_send`, so a slow disk never blocks a worker; lines
//! that do not fit are dropped and counted.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crate::metrics::Counter;
use crate::shared::Shared;

const QUEUE: usize = 16 * 1024;

#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: Arc<Counter>,
}

impl AccessLog {
    pub fn new(tx: SyncSender<String>, dropped: Arc<Counter>) -> Self {
        AccessLog { tx, dropped }
    }

    pub fn send(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// One request as it goes into the log.
pub struct Entry<'a> {
    pub method: &'a [u8],
    pub authority: &'a [u8],
    pub path: &'a [u8],
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_us: u64,
    pub upstream: Option<std::net::SocketAddr>,
    pub route: &'a str,
    pub request_id: &'a [u8],
    pub downstream: std::net::SocketAddr,
}

impl Entry<'_> {
    pub fn to_json(&self) -> String {
        let s = |b: &[u8]| serde_json::Value::String(String::from_utf8_lossy(b).into_owned());
        let v = serde_json::json!({
            "time": crate::log::rfc3339_now(),
            "method": s(self.method),
            "authority": s(self.authority),
            "path": s(self.path),
            "status": self.status,
            "bytes_received": self.bytes_in,
            "bytes_sent": self.bytes_out,
            "duration_ms": self.duration_us as f64 / 1000.0,
            "upstream": self.upstream.map(|a| a.to_string()),
            "route": self.route,
            "request_id": s(self.request_id),
            "downstream": self.downstream.to_string(),
        });
        let mut line = v.to_string();
        line.push('\n');
        line
    }
}

pub fn channel() -> (SyncSender<String>, Receiver<String>) {
    sync_channel(QUEUE)
}

/// The writer thread: follows the access_log path of the current config
/// (reopening when a reload changes it), flushes whenever the queue is empty.
pub fn run_writer(rx: Receiver<String>, shared: Arc<Shared>) {
    let mut open: Option<(PathBuf, BufWriter<Box<dyn Write + Send>>)> = None;
    while let Ok(first) = rx.recv() {
        let want = shared.config().access_log.clone();
        if open.as_ref().map(|(p, _)| p) != want.as_ref() {
            open = want.and_then(|p| match open_log(&p) {
                Ok(w) => Some((p, BufWriter::with_capacity(64 * 1024, w))),
                Err(e) => {
                    crate::log::error(&format!("access log {}: {e}", p.display()));
                    None
                }
            });
        }
        let Some((_, w)) = open.as_mut() else {
            continue;
        };
        let _ = w.write_all(first.as_bytes());
        while let Ok(more) = rx.try_recv() {
            let _ = w.write_all(more.as_bytes());
        }
        let _ = w.flush();
    }
}

fn open_log(p: &Path) -> io::Result<Box<dyn Write + Send>> {
    if p.as_os_str() == "-" || p == Path::new("/dev/stdout") {
        return Ok(Box::new(io::stdout()));
    }
    let f: File = OpenOptions::new().create(true).append(true).open(p)?;
    Ok(Box::new(f))
}
