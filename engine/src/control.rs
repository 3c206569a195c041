//! The control thread: the process's `main` after start-up. It owns the config
//! source (the file, reloaded on SIGHUP), compiles and validates each new
//! config off the worker threads, binds any new listener sockets, publishes the
//! epoch, and on SIGTERM/SIGINT drains the workers and exits. In control mode
//! the control client's thread publishes instead; SIGHUP is handed to it (to
//! re-read the bootstrap file) and on drain it is stopped first.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Overrides;
use crate::shared::Shared;

/// Where configs come from.
pub enum Source {
    /// `--config FILE`, re-read on SIGHUP.
    File { path: PathBuf, overrides: Overrides },
    /// `--control`: the control client publishes; SIGHUP is forwarded to it.
    Control(crate::xds::Handle),
}

pub fn reload(shared: &Shared, path: &Path, overrides: &Overrides) -> Result<u64, String> {
    let config =
        crate::config::load_with(path, overrides).map_err(|e| format!("config error: {e}"))?;
    if config.admin != shared.config().admin {
        crate::log::warn("admin.address changed; the admin listener moves only on restart");
    }
    crate::listener::bind_for(shared, &config)?;
    Ok(shared.publish(config))
}

/// Blocks until SIGTERM/SIGINT, reloading on SIGHUP; then drains and joins
/// the workers. Returns the process exit code.
pub fn run(shared: Arc<Shared>, source: Source, workers: Vec<JoinHandle<()>>) -> i32 {
    let mut signals = match Signals::new([SIGHUP, SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            crate::log::error(&format!("cannot install signal handlers: {e}"));
            return 1;
        }
    };
    for sig in signals.forever() {
        // SIGHUP from here on.
        let (path, overrides) = match (&source, sig) {
            (_, SIGTERM | SIGINT) => break,
            (Source::Control(xds), _) => {
                xds.reload();
                continue;
            }
            (Source::File { path, overrides }, _) => (path, overrides),
        };
        match reload(&shared, path, overrides) {
            Ok(epoch) => {
                shared.reloads_ok.fetch_add(1, Ordering::Relaxed);
                crate::log::info(&format!(
                    "reloaded {}: config epoch {epoch}",
                    path.display()
                ));
            }
            Err(e) => {
                shared.reloads_failed.fetch_add(1, Ordering::Relaxed);
                crate::log::error(&format!(
                    "reload rejected, keeping epoch {}: {e}",
                    shared.epoch()
                ));
            }
        }
    }
    if let Source::Control(xds) = source {
        xds.stop();
    }
    let drain = shared.config().limits.drain_timeout;
    crate::log::info(&format!(
        "draining: no new connections; in-flight requests get up to {} ms",
        drain.as_millis()
    ));
    shared.draining.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    crate::log::info("drained; exiting");
    0
}
