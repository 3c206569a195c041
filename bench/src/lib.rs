//! ringmesh benchmarks
