//! A quick scale check (ignored by default; the full benchmark lives in
//! bench/): N simulated proxies on their own connections, one split change,
//! time until every proxy ACKed the new route table, and the control
//! plane's RSS per connected proxy.
//!
//! `RINGMESH_SCALE_N=1000 cargo test -p ringmesh-control --release --test scale -- --ignored --nocapture`

mod common;

use std::fmt::Write;
use std::time::{Duration, Instant};

use common::*;
use ringmesh_proto::v1::ResourceType;
use tokio::sync::mpsc;

const SERVICES: usize = 10;

fn mesh(weight: u32) -> (String, String) {
    let mut s = String::from("services:\n");
    for i in 0..SERVICES {
        let _ = write!(
            s,
            "  - name: s{i}\n    ports: [{{name: http, port: 8080, protocol: http}}]\n    calls: [s0]\n"
        );
        if i == 0 {
            s.push_str("    subsets:\n      - {name: v1, labels: {version: v1}}\n      - {name: v2, labels: {version: v2}}\n");
        }
    }
    let t = format!(
        "traffic:\n  - name: split\n    service: s0\n    routes:\n      - name: r\n        split:\n          - {{subset: v1, weight: {weight}}}\n          - {{subset: v2, weight: {}}}\n",
        100 - weight
    );
    (s, t)
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn many_proxies_ack_a_change_quickly() {
    let n: usize = std::env::var("RINGMESH_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (s, t) = mesh(100);
    let cp = ControlPlane::start(&[("services.yaml", &s), ("traffic.yaml", &t)], &[]);
    let pid = cp.pid();
    let rss0 = rss_kb(pid);
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(n);
    let (acked_tx, mut acked_rx) = mpsc::channel::<Instant>(n);
    let started = Instant::now();
    for i in 0..n {
        let url = cp.url();
        let ready = ready_tx.clone();
        let acked = acked_tx.clone();
        let version = if i % 2 == 0 { "v1" } else { "v2" };
        let svc = format!("s{}", i % SERVICES);
        let addr = format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250);
        tokio::spawn(async move {
            let mut p = Proxy::open(
                &url,
                node(&format!("p-{i}"), &svc, &addr, &[("version", version)]),
            )
            .await;
            p.subscribe(["", "", "", ""]).await;
            let mut routes = 0;
            while let Some(r) = p.next().await {
                if !p.try_ack(&r).await {
                    break;
                }
                if r.r#type() == ResourceType::RouteTable {
                    routes += 1;
                    if routes == 1 {
                        let _ = ready.send(()).await;
                    } else {
                        let _ = acked.send(Instant::now()).await;
                    }
                }
            }
        });
    }
    for _ in 0..n {
        ready_rx.recv().await.unwrap();
    }
    let connect = started.elapsed();
    // Let the endpoint pushes of the connect storm settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kb(pid);
    let (_, t2) = mesh(50);
    let change = Instant::now();
    cp.write("traffic.yaml", &t2);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let at = tokio::time::timeout(Duration::from_secs(60), acked_rx.recv())
            .await
            .unwrap()
            .unwrap();
        lat.push(at.saturating_duration_since(change));
    }
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!(
        "n={n} connect+first push {connect:?}; change -> all ACKed (includes ~100 ms watcher debounce): p50 {:?} p99 {:?} max {:?}; RSS {} KiB idle, {} KiB with {n} proxies: {:.1} KiB per proxy",
        pct(50),
        pct(99),
        lat[lat.len() - 1],
        rss0,
        rss1,
        (rss1.saturating_sub(rss0)) as f64 / n as f64
    );
}
