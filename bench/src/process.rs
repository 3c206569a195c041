//! The processes the harness starts: spawning them, bounded runs, reading their
//! CPU and memory from `/proc`, and stopping them — by PID only, on drop and on
//! SIGINT/SIGTERM (the handler kills every PID recorded here, nothing else).

use crate::parse::{parse_proc_kb_field, parse_proc_stat_cpu_ticks, parse_proc_stat_ppid};
use crate::Res;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A child we started; killed (SIGTERM, then SIGKILL) by its own PID on drop.
pub struct Proc {
    child: Child,
    name: String,
    kill_signal: i32,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True once the child has exited (it is reaped here).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The signal that starts the stop (SIGTERM unless changed). Recorded for
    /// the interrupt handler too, so it stops this child the same way.
    pub fn set_kill_signal(&mut self, sig: i32) {
        self.kill_signal = sig;
        record(self.pid(), sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        forget(pid as u32);
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        unsafe { libc::kill(pid, self.kill_signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("[bench] {} (pid {pid}) did not stop: SIGKILL", self.name);
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Starts `cmd` with stdout and stderr to `log`.
pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Res<Proc> {
    let f = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    record(child.id(), libc::SIGTERM);
    Ok(Proc {
        child,
        name: name.to_string(),
        kill_signal: libc::SIGTERM,
    })
}

/// Runs a command to completion with a deadline; returns stdout+stderr.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Res<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    // wrk and our generators are children too: an interrupt must not leave
    // them loading the machine.
    let pid = child.id();
    record(pid, libc::SIGTERM);
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let finished = loop {
        match child.try_wait() {
            Ok(Some(_)) => break Ok(()),
            Ok(None) => {}
            Err(e) => break Err(e.to_string()),
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = child.wait();
            break Err(format!("{cmd:?} did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    forget(pid);
    finished?;
    let mut s = t_out.join().unwrap_or_default();
    s.push_str(&t_err.join().unwrap_or_default());
    Ok(s)
}

// ------------------------------------------------------------ interrupts

/// (PID, first signal) of every child alive that this process started.
static CHILDREN: Mutex<Vec<(u32, i32)>> = Mutex::new(Vec::new());
/// Set once the interrupt handler runs; `main` then leaves the exit to it.
static STOPPING: AtomicBool = AtomicBool::new(false);

fn children() -> std::sync::MutexGuard<'static, Vec<(u32, i32)>> {
    // A panic elsewhere must not keep the handler from stopping the children.
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

fn record(pid: u32, sig: i32) {
    let mut c = children();
    // Started after the handler took the list: it would be missed, so stop it now.
    if stopping() {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        return;
    }
    c.retain(|(p, _)| *p != pid);
    c.push((pid, sig));
}

fn forget(pid: u32) {
    children().retain(|(p, _)| *p != pid);
}

/// True once SIGINT/SIGTERM arrived and the handler is stopping the children.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// On SIGINT or SIGTERM: stop every recorded child (its signal, then SIGKILL
/// after 5 s, as on drop) and exit 130/143. Without this, an interrupted run
/// left nginx, HAProxy and ringmesh running on ports 20000–20014.
pub fn stop_children_on_interrupt() -> Res<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("signal handler: {e}"))?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            STOPPING.store(true, Ordering::SeqCst);
            let kids: Vec<(u32, i32)> = std::mem::take(&mut *children());
            eprintln!(
                "[bench] signal {sig}: stopping the {} process(es) this run started",
                kids.len()
            );
            stop_pids(&kids);
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

fn stop_pids(kids: &[(u32, i32)]) {
    for &(pid, sig) in kids {
        unsafe { libc::kill(pid as i32, sig) };
    }
    // Reap what we can; a PID that is not (or no longer) our child counts as gone.
    let gone = |pid: u32| {
        let r = unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
        r != 0
    };
    let mut left: Vec<u32> = kids.iter().map(|k| k.0).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&p| !gone(p));
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in left {
        eprintln!("[bench] pid {pid} did not stop: SIGKILL");
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
    }
}

// ------------------------------------------------------------ /proc and ports

fn read_proc(pid: u32, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()
}

/// utime+stime of the PIDs, in clock ticks.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| read_proc(*p, "stat").and_then(|s| parse_proc_stat_cpu_ticks(&s)))
        .sum()
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`) summed over the PIDs, in bytes.
pub fn rss_sum(pids: &[u32], field: &str) -> u64 {
    pids.iter()
        .filter_map(|p| read_proc(*p, "status").and_then(|s| parse_proc_kb_field(&s, field)))
        .sum()
}

/// PSS from `smaps_rollup` summed over the PIDs, in bytes.
pub fn pss_sum(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| read_proc(*p, "smaps_rollup").and_then(|s| parse_proc_kb_field(&s, "Pss")))
        .sum()
}

/// The PIDs whose parent is `ppid` (nginx's workers), sorted.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut v = vec![];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if read_proc(pid, "stat").and_then(|s| parse_proc_stat_ppid(&s)) == Some(ppid) {
                v.push(pid);
            }
        }
    }
    v.sort();
    v
}

/// Clock ticks per second (the unit of `/proc/PID/stat` times).
pub fn clk_tck() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_port(port: u16, timeout: Duration) -> Res<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "nothing listens on 127.0.0.1:{port} after {timeout:?}"
    ))
}
