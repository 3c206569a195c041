//! The control thread: the process's `main` after start-up. It owns the config
//! source (the file, reloaded on SIGHUP), compiles and validates each new
//! config off the worker threads, binds any new listener sockets, publishes the
//! epoch, and on SIGTERM/SIGINT drains the workers and exits.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::shared::Shared;

pub fn reload(shared: &Shared, path: &Path) -> Result<u64, String> {
    let config = crate::config::load(path).map_err(|e| format!("config error: {e}"))?;
    if config.admin != shared.config().admin {
        crate::log::warn("admin.address changed; the admin listener moves only on restart");
    }
    crate::listener::bind_for(shared, &config)?;
    Ok(shared.publish(config))
}

/// Blocks until SIGTERM/SIGINT, reloading on SIGHUP; then drains and joins
/// the workers. Returns the process exit code.
pub fn run(shared: Arc<Shared>, path: PathBuf, workers: Vec<JoinHandle<()>>) -> i32 {
    let mut signals = match Signals::new([SIGHUP, SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            crate::log::error(&format!("cannot install signal handlers: {e}"));
            return 1;
        }
    };
    for sig in signals.forever() {
        match sig {
            SIGHUP => match reload(&shared, &path) {
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
            },
            _ => break,
        }
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
