//! ringmesh-bench: the side-by-side harness (CLI in `src/main.rs`) and, in
//! `benches/`, the criterion micro-benchmarks. Where to look:
//!
//! - [`cli`]: scenarios and flags;
//! - [`proxies`]: how each proxy and the upstream are configured, started, pinned and stopped;
//! - [`load`]: wrk, the constant-rate generator and the L4 source/sink;
//! - [`scenarios`], [`memory`], [`callgrind`]: what each scenario runs;
//! - [`report`], [`chart`]: the Markdown tables and the PNG;
//! - [`process`]: children, `/proc` figures, stopping on SIGINT/SIGTERM;
//! - [`parse`], [`stats`]: parsing of tool output and statistics over repeats;
//! - [`tools`]: what is installed or built before a run;
//! - [`control_plane`]: the `control` subcommand (simulated proxies against
//!   `ringmesh-control`);
//! - [`tls`]: the `tls` subcommand (mesh hop plaintext vs mTLS, mTLS
//!   handshakes per core, HTTPS edge against nginx);
//! - [`grpc`]: the `grpc` subcommand (gRPC unary through ringmesh, nginx
//!   `grpc_pass` and HAProxy to a tonic server; HTTP/1.1 vs h2c; h2load).

pub mod callgrind;
pub mod chart;
pub mod cli;
pub mod control_plane;
pub mod grpc;
pub mod load;
pub mod memory;
pub mod parse;
pub mod process;
pub mod proxies;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod tls;
pub mod tools;

// The crate root exported these before the split into modules.
pub use parse::*;
pub use report::{fmt_num, fmt_ratio, fmt_summary, markdown_table};
pub use stats::*;

/// Errors are messages for the person running the harness.
pub type Res<T> = Result<T, String>;

/// One line of shell output for the report header (machine, versions).
pub fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Writes a file, naming it in the error.
pub fn write_file(path: &std::path::Path, text: &str) -> Res<()> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
