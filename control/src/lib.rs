//! `ringmesh-control`: reads the mesh's declarative YAML (`mesh`), discovers
//! service instances as their proxies connect (`registry`), and pushes each
//! proxy its own snapshot (`snapshot`) over the aggregated discovery stream
//! (`ads`) with xDS semantics. `serve` wires the pieces; `admin` and `status`
//! are the operator's view.

pub mod hash;
pub mod mesh;
pub mod node;
pub mod snapshot;
pub mod world;
