//! L4 TCP proxying: each accepted connection is tunnelled to one endpoint of the
//! listener's cluster, with connect and idle timeouts and half-close.

use std::rc::Rc;

use crate::conn::Conn;

use crate::upstream::ClusterState;
use crate::worker::{EpochLocal, TcpOutcome, Worker};

pub async fn serve(worker: Rc<Worker>, epoch: Rc<EpochLocal>, listener: usize, down: Conn) {
    let crate::config::ListenerKind::Tcp {
        cluster,
        idle_timeout,
    } = epoch.config.listeners[listener].kind
    else {
        return;
    };
    let Some(cs) = epoch.clusters.get(cluster).cloned() else {
        return;
    };
    let stats = epoch.listeners[listener].clone();
    let l = &epoch.config.listeners[listener];
    if !l.authz.is_empty() {
        let subject = crate::authz::Subject {
            identity: down.peer_identity().map(|id| &**id),
            http: None,
            port: l.addr.port(),
        };
        if !epoch.authorize(listener, &subject).allowed() {
            // Dropping the connection closes it: TCP has no way to say why.
            return;
        }
    }
    let Some(up) = connect_any(&cs).await else {
        stats.tcp_outcome(TcpOutcome::ConnectFailed);
        return;
    };
    // Keep the epoch's cluster state (and so its pools) alive while tunnelling,
    // but nothing else from the epoch.
    drop(epoch);
    let _ = down.set_nodelay(true);
    let bufs = (worker.bufs.get(), worker.bufs.get());
    // A side that stops reading holds the tunnel for at most the idle timeout.
    let (end, moved, (b1, b2)) =
        crate::io::tunnel(down, up, idle_timeout, idle_timeout, bufs).await;
    worker.bufs.put(b1);
    worker.bufs.put(b2);
    stats.rx.add(moved.a_to_b);
    stats.tx.add(moved.b_to_a);
    stats.tcp_outcome(match end {
        crate::io::TunnelEnd::Closed => TcpOutcome::Closed,
        crate::io::TunnelEnd::Idle => TcpOutcome::IdleTimeout,
        crate::io::TunnelEnd::Error => TcpOutcome::Reset,
        crate::io::TunnelEnd::SendTimeout { to_a } => {
            if to_a {
                stats.send_timeouts.inc();
            }
            TcpOutcome::IdleTimeout
        }
    });
    drop(cs);
}

/// Connects to the endpoint the load balancer picks; when that connect
/// fails (nothing was sent), once more to another endpoint.
async fn connect_any(cs: &ClusterState) -> Option<Conn> {
    let ep = cs.pick()?.clone();
    match crate::upstream::connect(cs, &ep).await {
        Ok(s) => Some(s),
        Err(_) => {
            let other = cs.pick_other(&ep)?.clone();
            crate::upstream::connect(cs, &other).await.ok()
        }
    }
}
