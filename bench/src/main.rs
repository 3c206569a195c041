//! Side-by-side benchmark harness: ringmesh (io_uring and epoll) against nginx,
//! HAProxy and the direct path, in one run. See `bench/RESULTS.md` and
//! `cargo run --release -p ringmesh-bench -- --help`.
//!
//! Method (2-core machine): the upstream (nginx, or our TCP source for L4) and
//! the load generator share CPU 1; each proxy runs 1 worker pinned to CPU 0.
//! CPU per request = the proxy's utime+stime from /proc over the run divided
//! by completed requests. Rounds are interleaved so drift hits every row alike.
//! This file is the CLI only; the work is in the library's modules.
//! `ringmesh-bench control` is the control-plane bench (`control_plane`),
//! `ringmesh-bench tls` the identity/mTLS bench (`tls`), `ringmesh-bench grpc`
//! the HTTP/2 and gRPC bench (`grpc`).

use ringmesh_bench::callgrind::callgrind_scenario;
use ringmesh_bench::chart::chart;
use ringmesh_bench::cli::{parse_opts, Scenario};
use ringmesh_bench::load::{rate_gen, tcp_sink, tcp_source};
use ringmesh_bench::memory::memory_scenario;
use ringmesh_bench::process::{stop_children_on_interrupt, stopping};
use ringmesh_bench::report::section_header;
use ringmesh_bench::scenarios::load_scenario;
use ringmesh_bench::tools::{install_missing, proxy_binary};
use ringmesh_bench::{sh, write_file, Res};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("__tcp-source") => tcp_source(args[1].parse().unwrap()),
        Some("__tcp-sink") => tcp_sink(
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
        ),
        Some("__rate") => rate_gen(
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
        ),
        Some("__tls-handshakes") => ringmesh_bench::tls::client::handshake_gen(
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
            &args[4],
            &args[5],
        ),
        Some("control") => ringmesh_bench::control_plane::control_main(&args[1..]),
        Some("tls") => ringmesh_bench::tls::tls_main(&args[1..]),
        Some("grpc") => ringmesh_bench::grpc::grpc_main(&args[1..]),
        _ => run(&args),
    };
    // Interrupted: the handler thread is stopping our children and exits
    // with 128+signal; exiting here first would cut that short.
    while stopping() {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    if let Err(e) = r {
        eprintln!("ringmesh-bench: {e}");
        std::process::exit(1);
    }
}

/// The harness proper (the `__*` commands are its subprocess helpers).
fn run(args: &[String]) -> Res<()> {
    let o = parse_opts(args)?;
    stop_children_on_interrupt()?;
    install_missing(&o)?;
    let bin = proxy_binary(&o)?;
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let stamp = sh("date -u +%Y-%m-%dT%H:%M:%SZ");
    let file_stamp = stamp.replace([':', '-'], "");
    let machine = format!(
        "{} CPUs ({}), kernel {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim(),
        sh("uname -r")
    );
    let versions = format!(
        "{}; {}; {}; ringmesh {}",
        sh("nginx -v 2>&1"),
        sh("haproxy -v | head -1"),
        sh("wrk -v 2>&1 | head -1"),
        bin.display()
    );
    for &sc in &o.scenarios {
        eprintln!("[bench] scenario {}: {}", sc.name(), sc.describe(&o));
        let rep = match sc {
            Scenario::Memory => memory_scenario(&o, &bin)?,
            Scenario::Callgrind => callgrind_scenario(&o, &bin)?,
            _ => load_scenario(&o, &bin, sc)?,
        };
        let mut md = section_header(
            sc,
            &sc.describe(&o),
            &stamp,
            &machine,
            &versions,
            &o.cmdline,
            o.repeats,
            o.duration,
        );
        md.push_str(&rep.md);
        let base = o.out.join(format!("{}-{file_stamp}", sc.name()));
        if !rep.chart.is_empty() {
            let png = base.with_extension("png");
            match chart(
                &png,
                &format!("ringmesh-bench {} — {}", sc.name(), sc.describe(&o)),
                &rep.chart,
            ) {
                Ok(()) => md.push_str(&format!("\nchart: `{}`\n", png.display())),
                Err(e) => eprintln!("[bench] chart failed: {e}"),
            }
        }
        println!("{md}");
        write_file(&base.with_extension("md"), &md)?;
        eprintln!("[bench] wrote {}", base.with_extension("md").display());
    }
    Ok(())
}
