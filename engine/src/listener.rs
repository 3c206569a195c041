//! Binding listening sockets: one SO_REUSEPORT socket per worker per listener,
//! bound by the control thread so a failure is reported before anything serves.
//! Because SO_REUSEPORT would let a stale ringmesh (or anything else with the
//! option) silently share a port, each new address is first probed with a
//! plain bind, which fails if anyone at all is listening there.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::shared::Shared;

const BACKLOG: i32 = 4096;

/// Fails with a clear message if something already listens on `addr`.
pub fn probe_free(addr: SocketAddr) -> Result<(), String> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("{addr}: cannot create socket: {e}"))?;
    // SO_REUSEADDR only skips TIME_WAIT leftovers; a live listener still
    // makes the bind fail, with or without SO_REUSEPORT on its side.
    let _ = s.set_reuse_address(true);
    match s.bind(&addr.into()) {
        Ok(()) => Ok(()),
        // Our own workers may still hold the address for a moment after a
        // reload removed it (they let go on their next tick); that is not
        // "another process".
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && we_listen_on(addr) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(format!(
            "{addr}: address already in use by another process (a stale ringmesh-proxy?); refusing to share it"
        )),
        Err(e) => Err(format!("{addr}: cannot bind: {e}")),
    }
}

/// Whether this process has a listening socket bound to exactly `addr`.
fn we_listen_on(addr: SocketAddr) -> bool {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|fd| {
            // SAFETY: the fd number comes from our own fd table and is only
            // borrowed for two getsockopt/getsockname calls; if it was closed
            // and reused meanwhile, the calls fail or describe the new fd,
            // and nothing is written through it.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let sock = socket2::SockRef::from(&fd);
            sock.is_listener().unwrap_or(false)
                && sock.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr)
        })
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Makes sure every listener of `config` has its per-worker sockets, binding
/// new addresses (after the probe) and dropping sockets of addresses no
/// longer configured that workers have not taken.
pub fn bind_for(shared: &Shared, config: &Config) -> Result<(), String> {
    let workers = shared.workers.len();
    let mut sockets = shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
    let mut fresh = Vec::new();
    for l in &config.listeners {
        if sockets.contains_key(&l.addr) {
            continue;
        }
        probe_free(l.addr).map_err(|e| format!("listener {}: {e}", l.name))?;
        let mut per_worker = Vec::with_capacity(workers);
        for _ in 0..workers {
            per_worker
                .push(Some(bind_reuseport(l.addr).map_err(|e| {
                    format!("listener {} {}: {e}", l.name, l.addr)
                })?));
        }
        fresh.push((l.addr, per_worker));
    }
    sockets.retain(|addr, _| config.listeners.iter().any(|l| l.addr == *addr));
    sockets.extend(fresh);
    Ok(())
}
