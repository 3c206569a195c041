//! Starting the workers: one thread each, pinned if asked, each running its own
//! monoio runtime on io_uring (ring flags for a single-threaded owner) or epoll.
//! Also the process limits io_uring and a busy proxy run into.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::access_log::AccessLog;
use crate::shared::Shared;
use crate::worker::Worker;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoDriver {
    /// io_uring, or fail.
    Uring,
    /// epoll, always.
    Epoll,
    /// io_uring, falling back to epoll (with a log line) when the kernel refuses it.
    Auto,
}

/// Submission queue size; completions get twice as many.
const RING_ENTRIES: u32 = 1024;

/// Parses `0,2-3` into CPU ids in order.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let bad = || format!("--cpu-list {s:?}: {part:?} is not a CPU number or range like 2-5");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("--cpu-list {s:?} names no CPU"));
    }
    Ok(out)
}

/// CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

/// Raises RLIMIT_NOFILE and RLIMIT_MEMLOCK soft limits to their hard limits
/// (a proxy needs many sockets; kernels before 5.12 charge io_uring rings to
/// MEMLOCK) and says what it found.
pub fn raise_limits() {
    for (res, name) in [
        (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
    ] {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid resource id and a pointer
        // to a stack rlimit struct.
        unsafe {
            if libc::getrlimit(res, &mut r) == 0 && r.rlim_cur < r.rlim_max {
                let want = libc::rlimit {
                    rlim_cur: r.rlim_max,
                    rlim_max: r.rlim_max,
                };
                if libc::setrlimit(res, &want) != 0 {
                    crate::log::warn(&format!(
                        "cannot raise {name} from {} to {}",
                        r.rlim_cur, r.rlim_max
                    ));
                }
            }
        }
    }
}

/// The soft RLIMIT_NOFILE (after [`raise_limits`]); a large default if it
/// cannot be read or is unlimited.
pub fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in raise_limits.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return 1 << 20;
    }
    r.rlim_cur
}

fn memlock_kib() -> String {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in raise_limits.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return "unknown".into();
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", r.rlim_cur / 1024)
    }
}

/// Why io_uring could not be set up, in words an operator can act on.
fn explain_uring_error(e: &std::io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| s != "0");
    let mut msg = format!("io_uring setup failed: {e}");
    match e.raw_os_error() {
        Some(libc::ENOMEM) => msg.push_str(&format!(
            " (RLIMIT_MEMLOCK is {}; raise it with `ulimit -l` or LimitMEMLOCK=infinity in the systemd unit)",
            memlock_kib()
        )),
        Some(libc::EPERM) | Some(libc::EACCES) => {
            if let Some(d) = disabled {
                msg.push_str(&format!(" (sysctl kernel.io_uring_disabled = {d})"));
            } else {
                msg.push_str(" (blocked by a seccomp profile or container runtime?)");
            }
        }
        Some(libc::ENOSYS) => msg.push_str(" (the kernel has no io_uring)"),
        _ => {}
    }
    msg
}

type Built = Result<&'static str, String>;

fn uring_builder(flags: bool) -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    if flags {
        // One thread submits and reaps: let the kernel skip cross-thread
        // wake-ups and run completion work when we ask for events.
        b.setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun();
    }
    b
}

fn run_uring(
    worker_fn: impl FnOnce(bool) -> Rc<Worker>,
    ready: &mpsc::Sender<(usize, Built)>,
    id: usize,
) -> Result<(), std::io::Error> {
    // Ring flags need Linux 6.1; retry without them on older kernels.
    let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .uring_builder(uring_builder(true))
        .enable_timer()
        .build()
        .or_else(|_| {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(RING_ENTRIES)
                .uring_builder(uring_builder(false))
                .enable_timer()
                .build()
        });
    let mut rt = rt?;
    let _ = ready.send((id, Ok("io_uring")));
    rt.block_on(async move { worker_fn(true).run().await });
    Ok(())
}

fn run_epoll(
    worker_fn: impl FnOnce(bool) -> Rc<Worker>,
    ready: &mpsc::Sender<(usize, Built)>,
    id: usize,
) -> Result<(), std::io::Error> {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    let _ = ready.send((id, Ok("epoll")));
    rt.block_on(async move { worker_fn(false).run().await });
    Ok(())
}

use std::rc::Rc;

/// Starts `shared.workers.len()` workers and waits until each has built its
/// runtime; an error names the worker and the cause.
pub fn start_workers(
    shared: &Arc<Shared>,
    driver: IoDriver,
    cpus: Option<&[usize]>,
    access_log: &mpsc::SyncSender<String>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let (tx, rx) = mpsc::channel::<(usize, Built)>();
    let mut handles = Vec::new();
    for id in 0..shared.workers.len() {
        let shared = shared.clone();
        let tx = tx.clone();
        let cpu = cpus.map(|c| c[id % c.len()]);
        let log_tx = access_log.clone();
        let h = std::thread::Builder::new()
            .name(format!("ringmesh-w{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        let _ = tx.send((id, Err(format!("worker {id}: cannot pin to CPU {cpu} (not in this process's CPU set?)"))));
                        return;
                    }
                }
                let registry = shared.workers[id].registry.clone();
                let dropped = registry.counter("ringmesh_access_log_dropped_total", String::new());
                let make = {
                    let shared = shared.clone();
                    move |uring| Worker::new(id, shared, AccessLog::new(log_tx, dropped), uring)
                };
                let set_driver = |d: &'static str| {
                    *shared.workers[id].driver.lock().unwrap_or_else(|p| p.into_inner()) = d;
                };
                let res = match driver {
                    IoDriver::Epoll => {
                        set_driver("epoll");
                        run_epoll(make, &tx, id)
                    }
                    IoDriver::Uring => {
                        set_driver("io_uring");
                        run_uring(make, &tx, id)
                    }
                    IoDriver::Auto => {
                        set_driver("io_uring");
                        match run_uring(make.clone(), &tx, id) {
                            Err(e) => {
                                crate::log::warn(&format!(
                                    "worker {id}: {}; falling back to epoll",
                                    explain_uring_error(&e)
                                ));
                                set_driver("epoll");
                                run_epoll(make, &tx, id)
                            }
                            ok => ok,
                        }
                    }
                };
                if let Err(e) = res {
                    let _ = tx.send((id, Err(format!("worker {id}: {}", explain_uring_error(&e)))));
                }
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(h);
    }
    drop(tx);
    for _ in 0..shared.workers.len() {
        match rx.recv() {
            Ok((_, Ok(_))) => {}
            Ok((_, Err(e))) => return Err(e),
            Err(_) => return Err("a worker thread exited during start".into()),
        }
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,2-3").unwrap(), vec![0, 2, 3]);
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert!(parse_cpu_list("0,bad").unwrap_err().contains("\"bad\""));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }
}
