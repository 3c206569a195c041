//! `ringmesh-control`: reads the mesh's declarative YAML (`mesh`), discovers
//! service instances as their proxies connect (`registry`), and pushes each
//! proxy its own snapshot (`snapshot`) over the aggregated discovery stream
//! (`ads`) with xDS semantics. `serve` wires the pieces; `admin` and `status`
//! are the operator's view.

pub mod admin;
pub mod ads;
pub mod ads_server;
pub mod ca;
pub mod cli;
pub mod hash;
pub mod log;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod persist;
pub mod registry;
pub mod serve;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod world;
