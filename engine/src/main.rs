//! `ringmesh-proxy`: parse flags, load the config, bind, start the workers and
//! the admin listener, then hand over to the control thread.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Parser;
use ringmesh_engine::runtime::{self, IoDriver};
use ringmesh_engine::{access_log, admin, config, control, listener, log, shared::Shared};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringmesh data plane: a thread-per-core io_uring proxy.
#[derive(Parser, Debug)]
#[command(name = "ringmesh-proxy", version)]
struct Args {
    /// The YAML config file (see docs/config.md).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Number of workers (event-loop threads). Default: CPUs this process may use.
    #[arg(long)]
    workers: Option<usize>,
    /// Pin worker i to the i-th CPU of this list, e.g. `0,2-3`.
    #[arg(long)]
    cpu_list: Option<String>,
    /// I/O driver of the workers.
    #[arg(long, value_enum, default_value = "auto")]
    io_driver: IoDriver,
    /// Check the config and exit.
    #[arg(long)]
    validate: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cpus = match args
        .cpu_list
        .as_deref()
        .map(runtime::parse_cpu_list)
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(1);
        }
    };
    if args.validate {
        println!(
            "{}: OK ({} listeners, {} clusters)",
            args.config.display(),
            cfg.listeners.len(),
            cfg.clusters.len()
        );
        return ExitCode::SUCCESS;
    }
    let workers = match args.workers {
        Some(0) => {
            eprintln!("error: --workers must be at least 1");
            return ExitCode::from(2);
        }
        Some(n) => n,
        None => runtime::allowed_cpus().len().max(1),
    };
    if let Some(c) = &cpus {
        if c.len() < workers {
            eprintln!(
                "error: --cpu-list names {} CPUs for {workers} workers",
                c.len()
            );
            return ExitCode::from(2);
        }
    }
    runtime::raise_limits();

    let admin_addr = cfg.admin;
    let listeners = cfg.listeners.len();
    let shared = Arc::new(Shared::new(cfg, workers));
    let admin_listener = match listener::probe_free(admin_addr).and_then(|_| {
        std::net::TcpListener::bind(admin_addr).map_err(|e| format!("admin {admin_addr}: {e}"))
    }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: admin listener: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = listener::bind_for(&shared, &shared.config()) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let (log_tx, log_rx) = access_log::channel();
    {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("ringmesh-accesslog".into())
            .spawn(move || access_log::run_writer(log_rx, shared));
    }
    let handles = match runtime::start_workers(&shared, args.io_driver, cpus.as_deref(), &log_tx) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    drop(log_tx);
    {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("ringmesh-admin".into())
            .spawn(move || admin::serve(admin_listener, shared));
    }
    shared.ready.store(true, Ordering::Release);
    let drivers: Vec<&str> = shared
        .workers
        .iter()
        .map(|w| *w.driver.lock().unwrap_or_else(|p| p.into_inner()))
        .collect();
    log::info(&format!(
        "ringmesh-proxy {} serving {} listener(s) with {workers} worker(s) [{}], admin on {admin_addr}",
        env!("CARGO_PKG_VERSION"),
        listeners,
        drivers.join(",")
    ));
    ExitCode::from(control::run(shared, args.config, handles) as u8)
}
