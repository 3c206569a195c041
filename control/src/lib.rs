//! `ringmesh-control`: reads the mesh's declarative YAML (`mesh`), discovers
//! service instances as their proxies connect, and pushes each proxy its own
//! snapshot over the aggregated discovery stream with xDS semantics.

pub mod mesh;
