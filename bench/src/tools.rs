//! What the harness needs on the machine: Debian packages installed with
//! `apt-get` when missing (unless `--no-install`), and the `ringmesh-proxy`
//! (or, for `control`, `ringmesh-control`) binary to measure (built here
//! unless `--proxy-bin` / `--control-bin` names one).

use crate::chart::FONT;
use crate::cli::{workspace_root, Opts, Scenario};
use crate::process::run_bounded;
use crate::proxies::NGINX_STREAM_MODULE;
use crate::Res;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// True when `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Installs the missing Debian packages: nginx-light, haproxy, wrk, util-linux
/// (taskset), valgrind (callgrind only), libnginx-mod-stream (tcp only) and
/// fonts-dejavu-core (chart text).
pub fn install_missing(o: &Opts) -> Res<()> {
    let mut need: Vec<&str> = vec![];
    if !have("nginx") {
        need.push("nginx-light");
    }
    if !have("haproxy") {
        need.push("haproxy");
    }
    if !have("wrk") {
        need.push("wrk");
    }
    if !have("taskset") {
        need.push("util-linux");
    }
    if o.scenarios.contains(&Scenario::Callgrind) && !have("callgrind_control") {
        need.push("valgrind");
    }
    if o.scenarios.contains(&Scenario::Tcp) && !Path::new(NGINX_STREAM_MODULE).exists() {
        need.push("libnginx-mod-stream");
    }
    if !Path::new(FONT).exists() {
        need.push("fonts-dejavu-core");
    }
    install_packages(&need, o.install)
}

/// `apt-get install`s the Debian packages `need` (nothing when empty); with
/// `install` false, an error naming them and the command that installs them.
pub fn install_packages(need: &[&str], install: bool) -> Res<()> {
    if need.is_empty() {
        return Ok(());
    }
    if !install {
        return Err(format!(
            "missing Debian package(s): {} (install them with `apt-get update && apt-get install -y {}`, or rerun without --no-install)",
            need.join(" "),
            need.join(" ")
        ));
    }
    eprintln!("[bench] installing from Debian: {}", need.join(" "));
    let s = format!(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {} >/dev/null",
        need.join(" ")
    );
    run_bounded(
        Command::new("sh").arg("-c").arg(s),
        Duration::from_secs(600),
    )?;
    Ok(())
}

/// `--proxy-bin`, or `cargo build --release -p ringmesh-engine` and the binary
/// under `CARGO_TARGET_DIR` (default `target/`).
pub fn proxy_binary(o: &Opts) -> Res<PathBuf> {
    match &o.proxy_bin {
        Some(p) => given_binary("--proxy-bin", p),
        None => release_binary("ringmesh-engine", "ringmesh-proxy"),
    }
}

/// `--control-bin`, or `cargo build --release -p ringmesh-control` and the
/// binary under `CARGO_TARGET_DIR` (default `target/`).
pub fn control_binary(given: Option<&Path>) -> Res<PathBuf> {
    match given {
        Some(p) => given_binary("--control-bin", p),
        None => release_binary("ringmesh-control", "ringmesh-control"),
    }
}

pub fn given_binary(flag: &str, p: &Path) -> Res<PathBuf> {
    if !p.exists() {
        return Err(format!("{flag} {}: no such file", p.display()));
    }
    Ok(p.to_path_buf())
}

/// Builds package `pkg` in release mode and returns the path of its `bin`.
pub fn release_binary(pkg: &str, bin: &str) -> Res<PathBuf> {
    let root = workspace_root();
    eprintln!("[bench] cargo build --release -p {pkg}");
    let st = Command::new("cargo")
        .args(["build", "--release", "-q", "-p", pkg])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err(format!("building {pkg} failed"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root.join(p) } else { p })
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join(bin))
}
