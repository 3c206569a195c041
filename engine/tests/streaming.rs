//! Large bodies stream through the proxy without being buffered.

mod common;
use common::*;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const SIZE: u64 = 200 * 1024 * 1024;
const RSS_LIMIT_KB: u64 = 64 * 1024;

fn proxy_for(up: &Upstream, port: u16) -> Proxy {
    Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: c, timeout: 60s }}
clusters:
{}"#,
        cluster_yaml("c", &[up.addr]),
    ))
}

/// Samples the proxy's RSS every 20 ms until stopped; returns the peak in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kb) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    p.fetch_max(kb, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            stop,
            peak,
            handle: Some(handle),
        }
    }
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::SeqCst)
    }
}

#[test]
fn chunked_upload_200mb_is_streamed() {
    let up = Upstream::start("sink");
    let port = free_port();
    let proxy = proxy_for(&up, port);
    let web = local(port);
    let before = proxy.rss_kb();
    let sampler = RssSampler::start(proxy.pid());
    let started = Instant::now();

    let mut c = Conn::connect(web);
    c.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n")
        .unwrap();
    let block = pattern_block();
    let mut sent = 0u64;
    let mut sum = Checksum::new();
    {
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, &c.stream);
        while sent < SIZE {
            let take = (SIZE - sent).min(block.len() as u64) as usize;
            write!(w, "{take:x}\r\n").unwrap();
            w.write_all(&block[..take]).unwrap();
            w.write_all(b"\r\n").unwrap();
            sum.update(&block[..take]);
            sent += take as u64;
        }
        w.write_all(b"0\r\n\r\n").unwrap();
        w.flush().unwrap();
    }
    let r = c.read_response("POST").expect("response to the upload");
    let elapsed = started.elapsed();
    let peak = sampler.finish();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(
        j["body_len"].as_u64(),
        Some(SIZE),
        "upstream received a different body length"
    );
    assert_eq!(
        j["body_sum"].as_str(),
        Some(sum.hex().as_str()),
        "body corrupted on the way"
    );
    eprintln!("upload: {SIZE} bytes in {elapsed:?}, proxy RSS {before} KiB -> peak {peak} KiB");
    assert!(peak > 0, "could not sample RSS");
    assert!(peak < RSS_LIMIT_KB, "proxy RSS peaked at {peak} KiB during a 200 MB upload (limit {RSS_LIMIT_KB} KiB): it buffers");
}

fn download(path: &str, expect_chunked: bool) {
    let up = Upstream::start("src");
    let port = free_port();
    let proxy = proxy_for(&up, port);
    let web = local(port);
    let before = proxy.rss_kb();
    let sampler = RssSampler::start(proxy.pid());
    let started = Instant::now();
    let mut c = Conn::connect(web);
    c.send(&Req::get(path).to_bytes()).unwrap();
    let mut check = PatternCheck::new();
    let r = c
        .read_response_streaming("GET", &mut |d| check.update(d))
        .expect("download");
    let elapsed = started.elapsed();
    let peak = sampler.finish();
    assert_eq!(r.status, 200);
    if expect_chunked {
        assert_eq!(r.header("content-length"), None, "{:?}", r.headers);
    } else {
        assert_eq!(r.header("content-length"), Some(SIZE.to_string().as_str()));
    }
    assert_eq!(check.offset, SIZE, "downloaded byte count");
    assert_eq!(
        check.first_mismatch, None,
        "downloaded bytes differ from what the upstream sent"
    );
    eprintln!(
        "download {path}: {SIZE} bytes in {elapsed:?}, proxy RSS {before} KiB -> peak {peak} KiB"
    );
    assert!(peak < RSS_LIMIT_KB, "proxy RSS peaked at {peak} KiB during a 200 MB download (limit {RSS_LIMIT_KB} KiB): it buffers");
    // The connection is still good.
    let r = c.request(&Req::get("/after")).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn content_length_download_200mb_is_streamed() {
    download(&format!("/bytes/{SIZE}"), false);
}

#[test]
fn chunked_download_200mb_is_streamed() {
    download(&format!("/chunked/{SIZE}"), true);
}

#[test]
fn slow_reader_does_not_make_proxy_buffer() {
    // The client reads slowly: a non-buffering proxy applies backpressure to the
    // upstream instead of reading the whole 200 MB into memory.
    let up = Upstream::start("src");
    let port = free_port();
    let proxy = proxy_for(&up, port);
    let web = local(port);
    let mut c = Conn::connect(web);
    c.send(&Req::get(&format!("/bytes/{SIZE}")).to_bytes())
        .unwrap();
    let first = c.read_some(1024).unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    // Stop reading for 2 s while the upstream keeps trying to write.
    let sampler = RssSampler::start(proxy.pid());
    thread::sleep(Duration::from_secs(2));
    let peak = sampler.finish();
    assert!(
        peak < RSS_LIMIT_KB,
        "proxy RSS reached {peak} KiB while the client was not reading: it buffers"
    );
}
