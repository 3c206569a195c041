//! `ringmesh-bench control`: N simulated proxies against a real
//! `ringmesh-control` process on loopback (issue 4's benchmark).
//!
//! 1. Writes the generated mesh ([`mesh`]) into a scratch config dir and
//!    starts `ringmesh-control serve` on free loopback ports; waits for
//!    `/ready`.
//! 2. Control-plane VmRSS with the mesh loaded and no proxy; then connects the
//!    N proxies ([`sim`]; `--concurrency` at a time, each with its own HTTP/2
//!    connection), waits until each has ACKed all four types and the pushes
//!    have stopped; VmRSS again → bytes per connected proxy.
//! 3. `--changes` times: rewrites the traffic file (atomically, by rename)
//!    with new split weights and times, per node that calls `svc-0`, the
//!    write → ACK of the route table carrying the new weights. The watcher's
//!    debounce (~100 ms quiet) is part of this by design.
//! 4. Discovery: one more `svc-0` proxy joins → time until every caller of
//!    `svc-0` ACKed endpoints listing it; its stream is dropped → time, after
//!    `--grace-period`, until every caller ACKed endpoints without it.
//! 5. Tables on stdout, `.md` and `.json` under `--out` ([`report`]).

pub mod mesh;
pub mod report;
pub mod sim;

use crate::cli::{parse_control_opts, ControlOpts};
use crate::process::{clk_tck, cpu_ticks, rss_sum, spawn, stop_children_on_interrupt, Proc};
use crate::{sh, write_file, Res};
use mesh::{callers_of, cluster_name, endpoint_address, split, TARGET};
use report::{ControlResult, PhaseRow};
use sim::{run_node, Shared, Want};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How long the connect phase may take in all.
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);

/// The subcommand: parses the flags, runs, prints and writes the report.
pub fn control_main(args: &[String]) -> Res<()> {
    let o = parse_control_opts(args)?;
    stop_children_on_interrupt()?;
    let bin = crate::tools::control_binary(o.control_bin.as_deref())?;
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let stamp = sh("date -u +%Y-%m-%dT%H:%M:%SZ");
    let machine = format!(
        "{} CPUs ({}), kernel {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim(),
        sh("uname -r")
    );
    eprintln!(
        "[bench] control: {} proxies, {} services, {} changes, control plane {}",
        o.proxies,
        o.services,
        o.changes,
        bin.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let r = rt.block_on(run(&o, &bin))?;
    rt.shutdown_timeout(Duration::from_secs(2));

    let mut md = format!(
        "### control — {} simulated proxies, {} services\n\n- date: {stamp}\n- machine: {machine}\n- control plane: `{}` (grace period {} ms)\n- command: `{}`\n- method: {} tokio tasks in the bench process ({} worker thread(s)), each with its own HTTP/2 connection and stream, subscribed to CLUSTER, ENDPOINTS, LISTENER, ROUTE_TABLE and ACKing every response at once; {} connecting at a time; control plane and bench share the machine's CPUs (not pinned). Mesh: every service calls `svc-0` and its next {} neighbours; the traffic rule splits `svc-0` between subsets v1/v2; the join and leave are a `svc-0` instance.\n\n",
        o.proxies,
        o.services,
        bin.display(),
        o.grace.as_millis(),
        o.cmdline,
        o.proxies,
        o.client_threads,
        o.concurrency,
        mesh::NEIGHBOURS,
    );
    md.push_str(&report::markdown(&r));
    println!("{md}");
    let base = o.out.join(format!(
        "control-n{}-{}",
        o.proxies,
        stamp.replace([':', '-'], "")
    ));
    write_file(&base.with_extension("md"), &md)?;
    write_file(
        &base.with_extension("json"),
        &report::json(&r, &stamp, &o.cmdline),
    )?;
    eprintln!("[bench] wrote {}.{{md,json}}", base.display());
    let missing = r.missing();
    if missing > 0 || !r.errors.is_empty() {
        return Err(format!(
            "{missing} node(s) did not see a change within {:?}; {} error(s)",
            o.timeout,
            r.errors.len()
        ));
    }
    Ok(())
}

/// The scratch directory (config dir, data dir, log); removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two free loopback ports (held together so they differ).
fn free_ports() -> Res<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let b = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let p = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string());
    Ok((p(&a)?, p(&b)?))
}

/// Raises RLIMIT_NOFILE to its hard limit (the control plane, started after,
/// inherits it); fails if that is below `need`.
fn raise_nofile(need: u64) -> Res<()> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return Err("getrlimit(RLIMIT_NOFILE) failed".into());
        }
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    if r.rlim_cur < need {
        return Err(format!(
            "RLIMIT_NOFILE is {} (hard {}); {need} needed",
            r.rlim_cur, r.rlim_max
        ));
    }
    Ok(())
}

/// A plain HTTP/1.1 GET to the admin listener: (status, body).
pub fn admin_get(addr: SocketAddr, path: &str) -> Res<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = vec![];
    // A server that keeps the connection open ends this with a timeout; what
    // arrived until then is the answer.
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled Prometheus sample.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// The control plane's `--grace-period` argument.
fn duration_arg(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// CPU seconds of the control plane and of this process.
fn cpu(server: u32) -> (f64, f64) {
    (
        cpu_ticks(&[server]) as f64 / clk_tck(),
        cpu_ticks(&[std::process::id()]) as f64 / clk_tck(),
    )
}

/// Waits until the responses to all nodes have stopped for `quiet`, at most `max`.
async fn quiesce(shared: &Shared, quiet: Duration, max: Duration) -> bool {
    let start = Instant::now();
    let mut last = shared.responses.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = shared.responses.load(Ordering::Relaxed);
        if c != last {
            last = c;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return true;
        }
        if start.elapsed() > max {
            return false;
        }
    }
}

/// Waits until every node of `expected` has a hit, or `deadline`.
async fn wait_hits(shared: &Shared, expected: &[usize], deadline: Instant) {
    while shared.hits_among(expected) < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A phase under way: its name, when it started, the CPU times then.
struct Started {
    name: String,
    t0: Instant,
    cpu0: (f64, f64),
}

/// The records of the phase `p`, as a table row. Hits later than
/// `p.t0 + limit` count as missing; `offset` is subtracted from every latency
/// (the grace period for the leave).
fn phase_row(
    p: Started,
    shared: &Shared,
    expected: &[usize],
    limit: Duration,
    offset: Duration,
    server: u32,
    errors: &mut Vec<String>,
) -> PhaseRow {
    let Started { name, t0, cpu0 } = p;
    let res = shared.end();
    let cpu1 = cpu(server);
    let mut is_expected = vec![false; res.hits.len()];
    for &i in expected {
        is_expected[i] = true;
    }
    let mut latencies = vec![];
    for &i in expected {
        if let Some(t) = res.hits[i] {
            let d = t.saturating_duration_since(t0);
            if d > limit {
                continue;
            }
            if d < offset {
                errors.push(format!(
                    "{name}: sim-{i} saw it after {} ms, before the {} ms grace period",
                    d.as_millis(),
                    offset.as_millis()
                ));
            }
            latencies.push(d.saturating_sub(offset));
        }
    }
    let unexpected = res
        .hits
        .iter()
        .enumerate()
        .filter(|(i, h)| h.is_some() && !is_expected[*i])
        .count();
    let row = PhaseRow {
        name: name.clone(),
        expected: expected.len(),
        reached: latencies.len(),
        unexpected,
        responses: res.responses.iter().map(|&r| r as u64).sum(),
        nodes_pushed: res.responses.iter().filter(|&&r| r > 0).count(),
        latencies,
        server_cpu_s: cpu1.0 - cpu0.0,
        client_cpu_s: cpu1.1 - cpu0.1,
    };
    let l = report::lat(&row.latencies);
    eprintln!(
        "[bench] {name}: {}/{} nodes, p50 {} p99 {} max {} ms, {} responses to {} nodes",
        row.reached,
        row.expected,
        l.map(|l| l.p50.as_millis()).unwrap_or(0),
        l.map(|l| l.p99.as_millis()).unwrap_or(0),
        l.map(|l| l.max.as_millis()).unwrap_or(0),
        row.responses,
        row.nodes_pushed
    );
    row
}

/// Writes `text` to `dir/name` atomically: a temporary file beside `dir`
/// (outside the watched directory), then rename.
fn write_atomic(scratch: &Path, dir: &Path, name: &str, text: &str) -> Res<()> {
    let tmp = scratch.join(format!("{name}.tmp"));
    write_file(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(|e| format!("rename {}: {e}", tmp.display()))
}

async fn run(o: &ControlOpts, bin: &Path) -> Res<ControlResult> {
    let n = o.proxies;
    let s = o.services;
    raise_nofile(n as u64 + 256)?;
    let scratch = Scratch(
        std::env::temp_dir().join(format!("ringmesh-bench-control-{}", std::process::id())),
    );
    let cfg_dir = scratch.0.join("mesh");
    let data_dir = scratch.0.join("data");
    for d in [&cfg_dir, &data_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    write_file(&cfg_dir.join("services.yaml"), &mesh::services_yaml(s))?;
    write_file(&cfg_dir.join("traffic.yaml"), &mesh::traffic_yaml(0))?;
    let (grpc_port, admin_port) = free_ports()?;
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let log = scratch.0.join("control.log");
    let mut server: Proc = spawn(
        "ringmesh-control",
        Command::new(bin)
            .arg("serve")
            .arg("--config-dir")
            .arg(&cfg_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--grace-period")
            .arg(duration_arg(o.grace)),
        &log,
    )?;
    let pid = server.pid();
    let fail = |msg: String| {
        format!(
            "{msg}\n--- control plane log (last lines):\n{}",
            log_tail(&log)
        )
    };

    // Ready: the mesh is loaded and the gRPC listener is up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if server.exited() {
            return Err(fail("ringmesh-control exited".into()));
        }
        if matches!(admin_get(admin, "/ready"), Ok((200, _))) {
            break;
        }
        if Instant::now() > deadline {
            return Err(fail(format!("{admin}/ready is not 200 after 20 s")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut r = ControlResult {
        proxies: n,
        services: s,
        grace: o.grace,
        rss_idle: rss_sum(&[pid], "VmRSS"),
        client_rss_idle: rss_sum(&[std::process::id()], "VmRSS"),
        ..ControlResult::default()
    };

    // Connect every proxy, `concurrency` at a time.
    let url = format!("http://127.0.0.1:{grpc_port}");
    let shared = Shared::new(n + 1);
    let sem = Arc::new(tokio::sync::Semaphore::new(o.concurrency));
    let cpu0 = cpu(pid);
    let t0 = Instant::now();
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(n + 1);
    for i in 0..n {
        let permit = tokio::time::timeout(SYNC_TIMEOUT, sem.clone().acquire_owned())
            .await
            .map_err(|_| fail(format!("connecting: {i} of {n} after {SYNC_TIMEOUT:?}")))?
            .map_err(|e| e.to_string())?;
        if !shared.error_list().is_empty() {
            break;
        }
        tasks.push(tokio::spawn(run_node(
            i,
            mesh::node(i, s),
            url.clone(),
            shared.clone(),
            Some(permit),
        )));
    }
    while shared.synced.load(Ordering::SeqCst) < n {
        let errors = shared.error_list();
        if !errors.is_empty() || t0.elapsed() > SYNC_TIMEOUT || server.exited() {
            tasks.iter().for_each(|t| t.abort());
            return Err(fail(format!(
                "{} of {n} proxies synced after {:.1} s; {} stream error(s), first: {}",
                shared.synced.load(Ordering::SeqCst),
                t0.elapsed().as_secs_f64(),
                errors.len(),
                errors.first().map(String::as_str).unwrap_or("none")
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.connect_wall = t0.elapsed();
    let cpu1 = cpu(pid);
    (r.connect_server_cpu_s, r.connect_client_cpu_s) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    r.sync_times = shared
        .sync_times
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .flatten()
        .copied()
        .collect();
    eprintln!(
        "[bench] {n} proxies synced in {:.2} s; waiting for the pushes to stop",
        r.connect_wall.as_secs_f64()
    );
    if !quiesce(&shared, Duration::from_secs(1), Duration::from_secs(60)).await {
        r.errors
            .push("pushes did not stop for 1 s within 60 s of the sync".into());
    }
    r.rss_synced = rss_sum(&[pid], "VmRSS");
    r.client_rss_synced = rss_sum(&[std::process::id()], "VmRSS");
    r.metrics_connected = admin_get(admin, "/metrics")
        .ok()
        .and_then(|(_, body)| metric_value(&body, "ringmesh_control_connected_proxies"))
        .map(|v| v as u64);
    eprintln!(
        "[bench] control plane VmRSS {:.2} MB idle → {:.2} MB with {n} proxies: {:.1} KB per proxy",
        r.rss_idle as f64 / 1e6,
        r.rss_synced as f64 / 1e6,
        r.bytes_per_proxy() / 1000.0
    );

    // Config changes.
    let callers = callers_of(TARGET, n, s);
    let mut errors = vec![];
    let start = |name: String, t0: Instant, cpu0| Started { name, t0, cpu0 };
    for k in 1..=o.changes {
        let (v1, v2) = split(k);
        shared.begin(Want::Weights {
            vhost: cluster_name(TARGET),
            weights: vec![v1, v2],
        });
        let cpu0 = cpu(pid);
        write_atomic(&scratch.0, &cfg_dir, "traffic.yaml", &mesh::traffic_yaml(k))?;
        let p = start(format!("change {k} ({v1}/{v2})"), Instant::now(), cpu0);
        wait_hits(&shared, &callers, p.t0 + o.timeout).await;
        quiesce(&shared, Duration::from_millis(300), o.timeout).await;
        let row = phase_row(
            p,
            &shared,
            &callers,
            o.timeout,
            Duration::ZERO,
            pid,
            &mut errors,
        );
        r.changes.push(row);
    }

    // Discovery: one more svc-0 instance joins, then leaves.
    let j = n;
    let cluster = cluster_name(TARGET);
    let address = endpoint_address(j);
    shared.begin(Want::EndpointPresent {
        cluster: cluster.clone(),
        address: address.clone(),
    });
    let p = start("join (svc-0 instance)".into(), Instant::now(), cpu(pid));
    let joiner = tokio::spawn(run_node(
        j,
        mesh::node_of_service(j, TARGET, "v2"),
        url.clone(),
        shared.clone(),
        None,
    ));
    wait_hits(&shared, &callers, p.t0 + o.timeout).await;
    quiesce(&shared, Duration::from_millis(300), o.timeout).await;
    let row = phase_row(
        p,
        &shared,
        &callers,
        o.timeout,
        Duration::ZERO,
        pid,
        &mut errors,
    );
    r.join = Some(row);
    if shared.synced.load(Ordering::SeqCst) < n + 1 {
        errors.push("the joining proxy did not ACK all four types".into());
    }
    shared.begin(Want::EndpointAbsent { cluster, address });
    let cpu0 = cpu(pid);
    joiner.abort();
    let p = start("leave (stream dropped)".into(), Instant::now(), cpu0);
    let limit = o.grace + o.timeout;
    wait_hits(&shared, &callers, p.t0 + limit).await;
    quiesce(&shared, Duration::from_millis(300), o.timeout).await;
    let row = phase_row(p, &shared, &callers, limit, o.grace, pid, &mut errors);
    r.leave = Some(row);

    r.rss_end = rss_sum(&[pid], "VmRSS");
    if server.exited() {
        errors.push(fail("ringmesh-control exited during the run".into()));
    }
    let mut stream_errors = shared.error_list();
    stream_errors.truncate(20);
    errors.extend(stream_errors);
    r.errors.extend(errors);
    tasks.iter().for_each(|t| t.abort());
    drop(server);
    drop(scratch);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        let m = "# HELP x\n# TYPE ringmesh_control_connected_proxies gauge\nringmesh_control_connected_proxies 1000\nringmesh_control_pushes_total{type=\"cluster\"} 5\n";
        assert_eq!(
            metric_value(m, "ringmesh_control_connected_proxies"),
            Some(1000.0)
        );
        assert_eq!(metric_value(m, "ringmesh_control_pushes_total"), None);
        assert_eq!(duration_arg(Duration::from_secs(1)), "1s");
        assert_eq!(duration_arg(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn admin_get_reads_status_and_body() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).unwrap();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nnot ready")
                .unwrap();
        });
        assert_eq!(
            admin_get(addr, "/ready").unwrap(),
            (503, "not ready".into())
        );
        t.join().unwrap();
    }
}
