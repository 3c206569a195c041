//! `ringmesh-proxy`: parse flags, load the config (the file, or in control
//! mode the bootstrap), bind, start the workers, the admin listener and in
//! control mode the control client, then hand over to the control thread.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Parser;
use ringmesh_engine::config::{compile, model, Overrides};
use ringmesh_engine::control::Source;
use ringmesh_engine::runtime::{self, IoDriver};
use ringmesh_engine::{access_log, admin, config, control, listener, log, shared::Shared, xds};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringmesh data plane: a thread-per-core io_uring proxy.
#[derive(Parser, Debug)]
#[command(name = "ringmesh-proxy", version)]
struct Args {
    /// The YAML config file (see docs/config.md). With --control: the optional
    /// bootstrap (admin, limits, access_log, static listeners and clusters).
    #[arg(long, short = 'c', required_unless_present = "control")]
    config: Option<PathBuf>,
    /// Take listeners, routes and clusters from this control plane (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    control: Option<String>,
    /// Control mode: this proxy's node id (unique per instance).
    #[arg(long, requires = "control")]
    node_id: Option<String>,
    /// Control mode: the service this instance belongs to.
    #[arg(long, requires = "control")]
    service: Option<String>,
    /// Control mode: the service's namespace [default: default].
    #[arg(long, requires = "control")]
    namespace: Option<String>,
    /// Control mode: the IP inbound listeners bind and peers connect to [default: 127.0.0.1].
    #[arg(long, requires = "control")]
    address: Option<IpAddr>,
    /// Control mode: inbound listener of the service's port i is ADDRESS:(P + i) [default: 15006].
    #[arg(long, requires = "control", value_name = "P")]
    inbound_port: Option<u16>,
    /// Control mode: the local outbound HTTP listener 127.0.0.1:P [default: 15001].
    #[arg(long, requires = "control", value_name = "P")]
    outbound_port: Option<u16>,
    /// Control mode: the local application's port for the service's first port.
    #[arg(long, requires = "control", value_name = "P")]
    app_port: Option<u16>,
    /// Control mode: a label of this instance (repeatable).
    #[arg(long, requires = "control", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Control mode: this instance's zone.
    #[arg(long, requires = "control")]
    zone: Option<String>,
    /// Admin listener address; overrides admin.address of the config file.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Number of workers (event-loop threads). Default: CPUs this process may use.
    #[arg(long)]
    workers: Option<usize>,
    /// Pin worker i to the i-th CPU of this list, e.g. `0,2-3`.
    #[arg(long)]
    cpu_list: Option<String>,
    /// I/O driver of the workers.
    #[arg(long, value_enum, default_value = "auto")]
    io_driver: IoDriver,
    /// Kernel TLS offload of mesh connections after the handshake: auto
    /// (probe at start, fall back to user-space rustls), on (refuse to start
    /// without it), off.
    #[arg(long, default_value = "auto", value_name = "auto|on|off")]
    ktls: ringmesh_engine::ktls::Mode,
    /// Tests only: run TLS handshakes record by record and attempt the kTLS
    /// hand-off even without kTLS (it declines; user-space rustls goes on).
    #[arg(long, hide = true)]
    ktls_test_handoff: bool,
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
    if let Some(a) = &args.admin {
        if !a.to_socket_addrs().is_ok_and(|mut it| it.next().is_some()) {
            eprintln!("error: --admin {a:?} is not HOST:PORT");
            return ExitCode::from(2);
        }
    }
    let overrides = Overrides {
        admin: args.admin.clone(),
    };
    let xds_opts = match &args.control {
        None => None,
        Some(url) => match control_options(&args, url, &overrides) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    // Before any config is compiled: under `--ktls on` the TLS configs offer
    // only the cipher suites the kernel accepted (tls::provider).
    if !args.validate {
        if let Err(e) = ringmesh_engine::ktls::init(args.ktls) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
        if args.ktls_test_handoff {
            ringmesh_engine::ktls::force_handoff_for_tests();
        }
    }
    let cfg = match (&args.config, &xds_opts) {
        (Some(path), _) => config::load_with(path, &overrides).map_err(|e| e.to_string()),
        (None, Some(o)) => {
            let mut file = model::File::default();
            overrides.apply(&mut file);
            compile::compile(file, Path::new(&o.server)).map_err(|(f, m)| format!("{f}: {m}"))
        }
        // clap requires --config unless --control is given.
        (None, None) => Err("--config is required".into()),
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(1);
        }
    };
    if args.validate {
        let what = args
            .config
            .as_ref()
            .map_or_else(|| "flags".to_owned(), |p| p.display().to_string());
        println!(
            "{what}: OK ({} listeners, {} clusters{})",
            cfg.listeners.len(),
            cfg.clusters.len(),
            if xds_opts.is_some() {
                ", plus what the control plane sends"
            } else {
                ""
            }
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
    let control_note = xds_opts.as_ref().map_or_else(String::new, |o| {
        format!("; control plane {} as node {:?}", o.server, o.node.id)
    });
    let source = match xds_opts {
        Some(opts) => match xds::spawn(shared.clone(), opts) {
            Ok(h) => Source::Control(h),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
        None => {
            shared.ready.store(true, Ordering::Release);
            Source::File {
                // clap requires --config unless --control is given.
                path: args.config.clone().unwrap_or_default(),
                overrides,
            }
        }
    };
    let drivers: Vec<&str> = shared
        .workers
        .iter()
        .map(|w| *w.driver.lock().unwrap_or_else(|p| p.into_inner()))
        .collect();
    let nofile = runtime::nofile_limit();
    let max_conns = shared
        .config()
        .limits
        .max_connections_per_worker
        .map_or_else(
            || {
                format!(
                    "{} (from RLIMIT_NOFILE {nofile})",
                    compile::auto_max_connections_per_worker(nofile, workers)
                )
            },
            |n| n.to_string(),
        );
    log::info(&format!(
        "ringmesh-proxy {} serving {} listener(s) with {workers} worker(s) [{}], at most {max_conns} connections per worker, admin on {admin_addr}{control_note}",
        env!("CARGO_PKG_VERSION"),
        listeners,
        drivers.join(",")
    ));
    ExitCode::from(control::run(shared, source, handles) as u8)
}

/// The control client's options from the flags, or what is wrong with them.
fn control_options(args: &Args, url: &str, overrides: &Overrides) -> Result<xds::Options, String> {
    let server = xds::check_url(url)?;
    let spec = xds::NodeSpec {
        id: args.node_id.clone().ok_or("--control needs --node-id")?,
        service: args.service.clone().ok_or("--control needs --service")?,
        namespace: args.namespace.clone().unwrap_or_else(|| "default".into()),
        address: args.address.unwrap_or(IpAddr::from([127, 0, 0, 1])),
        inbound_port: args.inbound_port.unwrap_or(15006),
        outbound_port: args.outbound_port.unwrap_or(15001),
        app_port: args.app_port,
        labels: args.label.clone(),
        zone: args.zone.clone(),
    };
    Ok(xds::Options {
        server,
        node: spec.to_node()?,
        bootstrap: args.config.clone(),
        overrides: overrides.clone(),
    })
}
