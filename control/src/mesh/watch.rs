//! Watches the config directory and calls back, debounced, when it changed.
//!
//! The directory itself is watched (inotify on Linux, not recursive), so every
//! change to its entries is seen: files created, written, deleted, renamed in
//! or out (editors and `kubectl cp` write a temporary file and rename it), and
//! a Kubernetes ConfigMap update, which swaps the `..data` symlink by renaming
//! `..data_tmp` over it. Reads (including our own `load_dir`) are ignored.
//! Not covered: changes inside subdirectories other than through such a swap,
//! and the directory itself being deleted or replaced (the watch then stays on
//! the old inode; restart the control plane).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// Fire once the directory has been quiet this long...
pub const QUIET: Duration = Duration::from_millis(100);
/// ...but no later than this after the first event of a burst.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Watching stops when this is dropped (a callback already running finishes).
pub struct WatchHandle {
    _watcher: RecommendedWatcher,
    stopped: Arc<AtomicBool>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        // The debounce thread also ends when the watcher's sender goes away;
        // the flag stops a burst already being collected from firing.
        self.stopped.store(true, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchHandle")
    }
}

/// Calls `on_change` (from a background thread) after files in `dir`
/// changed, debounced: once the directory has been quiet for 100 ms, and at
/// most 1 s after the first event of a burst. Events that arrive while
/// `on_change` runs start the next burst, so the last change is never missed.
pub fn watch(dir: &Path, on_change: Box<dyn Fn() + Send + 'static>) -> Result<WatchHandle, String> {
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<Event>| {
        if is_change(&ev) {
            // The receiver is gone only when watching stopped.
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    std::thread::Builder::new()
        .name("mesh-watch".into())
        .spawn(move || debounce(&rx, QUIET, MAX_DELAY, &flag, &*on_change))
        .map_err(|e| format!("cannot start the watcher thread: {e}"))?;
    Ok(WatchHandle {
        _watcher: watcher,
        stopped,
    })
}

/// Opening and reading files (our own loads among them) is not a change; an
/// error (e.g. the kernel queue overflowed) may hide one, so it counts.
fn is_change(ev: &notify::Result<Event>) -> bool {
    match ev {
        Err(_) => true,
        Ok(e) => match e.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        },
    }
}

/// Collects events from `rx` into bursts and calls `on_change` once per
/// burst. Returns when the sender is gone or `stopped` is set.
fn debounce(
    rx: &Receiver<()>,
    quiet: Duration,
    max_delay: Duration,
    stopped: &AtomicBool,
    on_change: &dyn Fn(),
) {
    loop {
        if rx.recv().is_err() {
            return;
        }
        let deadline = Instant::now() + max_delay;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match rx.recv_timeout(quiet.min(deadline - now)) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        on_change();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Runs `debounce` on a thread; returns the sender and the fire times.
    fn debouncer() -> (mpsc::Sender<()>, Arc<Mutex<Vec<Instant>>>) {
        let (tx, rx) = mpsc::channel();
        let fired = Arc::new(Mutex::new(Vec::new()));
        let f = fired.clone();
        std::thread::spawn(move || {
            let stopped = AtomicBool::new(false);
            debounce(&rx, QUIET, MAX_DELAY, &stopped, &move || {
                f.lock().unwrap().push(Instant::now())
            })
        });
        (tx, fired)
    }

    #[test]
    fn a_burst_fires_once_after_the_last_event() {
        let (tx, fired) = debouncer();
        let mut last = Instant::now();
        for _ in 0..20 {
            tx.send(()).unwrap();
            last = Instant::now();
            std::thread::sleep(Duration::from_millis(30));
        }
        std::thread::sleep(Duration::from_millis(400));
        let fired = fired.lock().unwrap();
        // 20 × 30 ms is 600 ms, under the 1 s cap: normally one fire; a loaded
        // machine may stretch the burst past the cap, or stall the sender
        // for a quiet period, once.
        assert!(
            (1..=3).contains(&fired.len()),
            "fired {} times",
            fired.len()
        );
        let end = *fired.last().unwrap();
        assert!(end >= last + QUIET, "fired before the directory was quiet");
    }

    #[test]
    fn a_long_burst_fires_within_the_cap() {
        let (tx, fired) = debouncer();
        let start = Instant::now();
        let mut last = start;
        // 2 s of events 20 ms apart: never quiet, so the cap decides.
        while start.elapsed() < Duration::from_secs(2) {
            tx.send(()).unwrap();
            last = Instant::now();
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(400));
        let fired = fired.lock().unwrap();
        assert!(
            (2..=4).contains(&fired.len()),
            "fired {} times",
            fired.len()
        );
        let first = fired[0].duration_since(start);
        assert!(
            first >= MAX_DELAY && first < MAX_DELAY + Duration::from_millis(500),
            "first fire after {first:?}"
        );
        assert!(*fired.last().unwrap() >= last);
    }

    #[test]
    fn separate_changes_fire_separately_and_nothing_fires_without_events() {
        let (tx, fired) = debouncer();
        std::thread::sleep(Duration::from_millis(200));
        assert!(fired.lock().unwrap().is_empty());
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(fired.lock().unwrap().len(), 2);
    }

    /// Counts callbacks from a real watcher on a temporary directory.
    fn watched(dir: &Path) -> (WatchHandle, Arc<Mutex<usize>>) {
        let n = Arc::new(Mutex::new(0usize));
        let c = n.clone();
        let h = watch(dir, Box::new(move || *c.lock().unwrap() += 1)).unwrap();
        (h, n)
    }

    /// Waits until the count moves past `before` (at most 3 s).
    fn fired_after(n: &Mutex<usize>, before: usize) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if *n.lock().unwrap() > before {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn notices_create_modify_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let (_h, n) = watched(dir.path());
        let file = dir.path().join("a.yaml");

        std::fs::write(&file, "services: []\n").unwrap();
        assert!(fired_after(&n, 0), "create");

        let before = *n.lock().unwrap();
        std::fs::write(&file, "traffic: []\n").unwrap();
        assert!(fired_after(&n, before), "modify");

        // An editor's save: write a temporary file, rename it over the old one.
        let before = *n.lock().unwrap();
        let tmp = dir.path().join(".a.yaml.tmp");
        std::fs::write(&tmp, "policies: []\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert!(fired_after(&n, before), "rename into the directory");

        let before = *n.lock().unwrap();
        std::fs::remove_file(&file).unwrap();
        assert!(fired_after(&n, before), "delete");
    }

    #[test]
    fn reading_does_not_fire() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "services: []\n").unwrap();
        let (_h, n) = watched(dir.path());
        for _ in 0..3 {
            super::super::load_dir(dir.path()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(*n.lock().unwrap(), 0);
    }

    #[test]
    fn notices_a_configmap_symlink_swap() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The layout kubelet writes: timestamped dir, `..data` link to it, and
        // one link per key through `..data`.
        std::fs::create_dir(d.join("..2024_01")).unwrap();
        std::fs::write(
            d.join("..2024_01/mesh.yaml"),
            "mesh: {trust_domain: a.local}\n",
        )
        .unwrap();
        symlink("..2024_01", d.join("..data")).unwrap();
        symlink("..data/mesh.yaml", d.join("mesh.yaml")).unwrap();
        assert_eq!(super::super::load_dir(d).unwrap().trust_domain, "a.local");

        let (_h, n) = watched(d);
        std::fs::create_dir(d.join("..2024_02")).unwrap();
        std::fs::write(
            d.join("..2024_02/mesh.yaml"),
            "mesh: {trust_domain: b.local}\n",
        )
        .unwrap();
        symlink("..2024_02", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        assert!(fired_after(&n, 0), "symlink swap");
        assert_eq!(super::super::load_dir(d).unwrap().trust_domain, "b.local");
    }

    #[test]
    fn dropping_the_handle_stops_callbacks() {
        let dir = tempfile::tempdir().unwrap();
        let (h, n) = watched(dir.path());
        drop(h);
        std::fs::write(dir.path().join("a.yaml"), "services: []\n").unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(*n.lock().unwrap(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let err = watch(Path::new("/nonexistent/ringmesh"), Box::new(|| {})).unwrap_err();
        assert!(
            err.starts_with("cannot watch /nonexistent/ringmesh: "),
            "{err}"
        );
    }
}
