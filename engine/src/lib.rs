//! ringmesh data plane: a shared-nothing, thread-per-core proxy. Each worker
//! runs one monoio event loop (io_uring by default) with its own listening
//! sockets, connections, upstream pools and counters; configuration arrives as
//! immutable epochs published by the control thread.

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod bufpool;
pub mod config;
pub mod conn;
pub mod control;
pub mod http1;
pub mod http2;
pub mod io;
pub mod ktls;
pub mod l4;
pub mod listener;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod router;
pub mod runtime;
pub mod shared;
pub mod tls;
pub mod upstream;
pub mod worker;
pub mod xds;
