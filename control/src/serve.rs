//! `ringmesh-control serve`: loads the config directory (refusing to start
//! on an invalid one), restores saved nodes, serves discovery, health and
//! reflection on the gRPC address and the admin endpoint, reloads the mesh
//! when the directory changes (or on SIGHUP, which also reloads the CA
//! files), and shuts down gracefully on
//! SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::ads::Ads;
use crate::ads_server::AdsServer;
use crate::cli::{ServeArgs, DEFAULT_DATA_DIR};
use crate::persist::Store;
use crate::state::{CaConfig, Options, Shared};
use crate::{ca, mesh};
use crate::{log_info, log_warn};

/// Pings on each proxy's connection; a proxy that does not answer within
/// the timeout is dropped (and enters its grace period).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// After SIGTERM, how long streams and connections get to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the server; the error is printed by `main` with exit code 1.
pub async fn run(args: ServeArgs) -> Result<(), String> {
    let dir = args.config_dir.clone();
    let mesh = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || mesh::load_dir(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("invalid config: {e}"))?
    };
    let store = open_store(args.data_dir.as_deref())?;
    let saved = match &store {
        None => Vec::new(),
        Some(s) => s.load().unwrap_or_else(|e| {
            log_warn!("ignoring saved nodes: {e}");
            Vec::new()
        }),
    };
    let ca_source = match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => ca::Source::Files {
            cert: cert.clone(),
            key: key.clone(),
            bundle: args.ca_bundle.clone(),
        },
        _ => ca::Source::Generated {
            dir: args.ca_dir.clone().unwrap_or_else(|| {
                args.data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
                    .join("ca")
            }),
        },
    };
    let ca = {
        let source = ca_source.clone();
        let td = mesh.trust_domain.clone();
        let lifetime = args.cert_lifetime;
        tokio::task::spawn_blocking(move || ca::Ca::load(&source, &td, lifetime))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("certificate authority: {e}"))?
    };
    log_info!(
        "certificate authority: {} (signing with {}), {} trusted roots, certificates live {:?}",
        ca_source,
        ca.subject,
        ca.roots.len(),
        args.cert_lifetime
    );
    let grpc = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (--listen): {e}", args.listen))?;
    let admin = TcpListener::bind(args.admin)
        .await
        .map_err(|e| format!("cannot listen on {} (--admin): {e}", args.admin))?;

    log_info!(
        "config loaded from {}: version {}, {} services",
        dir.display(),
        mesh.version,
        mesh.services.len()
    );
    let shared = Shared::new(
        mesh,
        Options {
            grace: args.grace_period,
            restart_grace: args.restart_grace,
        },
        store,
        CaConfig {
            ca,
            source: ca_source,
            lifetime: args.cert_lifetime,
        },
    );
    shared.restore(saved);
    tokio::spawn(shared.clone().run_rebuilder());
    tokio::spawn(crate::admin::serve(admin, shared.clone()));

    let reload = Arc::new(Notify::new());
    let _watch = {
        let reload = reload.clone();
        match mesh::watch(&dir, Box::new(move || reload.notify_one())) {
            Ok(h) => Some(h),
            Err(e) => {
                log_warn!("cannot watch {}: {e}; reload with SIGHUP", dir.display());
                None
            }
        }
    };
    tokio::spawn(reload_on_change(
        shared.clone(),
        dir.clone(),
        reload.clone(),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdsServer>().await;
    health.set_service_status("", ServingStatus::Serving).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ringmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ringmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;

    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let stop = {
        let shared = shared.clone();
        let health = health.clone();
        let reload = reload.clone();
        async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        reload.notify_one();
                        let shared = shared.clone();
                        tokio::spawn(async move { shared.reload_ca().await });
                    }
                }
            }
            log_info!("shutting down: ending every stream (proxies keep their config)");
            health.set_not_serving::<AdsServer>().await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            shared.shutdown();
        }
    };

    log_info!(
        "serving discovery on {}, admin on {}",
        args.listen,
        args.admin
    );
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(Ads::new(shared.clone()).into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), stop);
    tokio::pin!(server);
    let mut down = shared.shutdown_signal();
    let drained = async {
        let _ = down.wait_for(|v| *v).await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        r = &mut server => r.map_err(|e| format!("gRPC server: {e}"))?,
        () = drained => log_warn!("connections still open after {DRAIN_TIMEOUT:?}; exiting"),
    }
    shared.save().await;
    log_info!("stopped");
    Ok(())
}

/// The store for `nodes.json`: an explicit `--data-dir` must work; the
/// default may be unwritable (a developer's machine), then we run without.
fn open_store(dir: Option<&Path>) -> Result<Option<Store>, String> {
    match dir {
        Some(d) => Store::open(d)
            .map(Some)
            .map_err(|e| format!("cannot use --data-dir {}: {e}", d.display())),
        None => match Store::open(&PathBuf::from(DEFAULT_DATA_DIR)) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                log_warn!(
                    "cannot use {DEFAULT_DATA_DIR}: {e}; nodes are not kept across restarts (set --data-dir)"
                );
                Ok(None)
            }
        },
    }
}

/// Loads the directory after each (debounced) change; a valid one becomes
/// the mesh in force, an invalid one is rejected and recorded.
async fn reload_on_change(shared: Arc<Shared>, dir: PathBuf, changed: Arc<Notify>) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        tokio::select! {
            () = changed.notified() => {}
            _ = shutdown.changed() => return,
        }
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || mesh::load_dir(&d)).await {
            Ok(Ok(mesh)) => shared.set_mesh(mesh),
            Ok(Err(e)) => shared.reject_config(&e),
            Err(e) => log_warn!("config reload failed: {e}"),
        }
    }
}
