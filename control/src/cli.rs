//! Command-line interface: `ringmesh-control serve` and `ringmesh-control
//! status`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ringmesh-control", version, about = "ringmesh control plane")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the mesh in a config directory to every proxy.
    Serve(Box<ServeArgs>),
    /// Print the nodes, their versions and errors from a running control plane.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of mesh YAML files (watched for changes).
    #[arg(long, value_name = "DIR")]
    pub config_dir: PathBuf,
    /// gRPC address (discovery, health, reflection).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15012")]
    pub listen: SocketAddr,
    /// Admin HTTP address (/status, /metrics, /healthz, /ready).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    pub admin: SocketAddr,
    /// How long a node's endpoints outlive its stream.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub grace_period: Duration,
    /// Where registered nodes are kept across restarts (nodes.json).
    /// Default /var/lib/ringmesh-control; when the default is not writable
    /// the control plane runs without it and says so.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// After a restart, how long saved nodes wait for their proxy (at least
    /// the grace period).
    #[arg(long, value_name = "DURATION", default_value = "45s", value_parser = parse_duration)]
    pub restart_grace: Duration,
    /// Where the generated mesh root lives (root.pem 0644, root.key.pem
    /// 0600, directory 0700). Default: <data-dir>/ca. Ignored with --ca-cert.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Bring your own CA: the signing certificate (a root or an
    /// intermediate), optionally followed by its intermediates up to but
    /// excluding the root. Needs --ca-key.
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The PEM private key of --ca-cert (must not be readable by group or
    /// others).
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Every root proxies trust (old and new during a rotation). Default:
    /// the generated root, or the self-signed last certificate of --ca-cert.
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    pub ca_bundle: Option<PathBuf>,
    /// Lifetime of the certificates issued to proxies (at least 1s); they
    /// renew at half of it.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_lifetime)]
    pub cert_lifetime: Duration,
}

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err("a certificate lifetime is at least 1s".into());
    }
    Ok(d)
}

pub const DEFAULT_DATA_DIR: &str = "/var/lib/ringmesh-control";

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The control plane's admin address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    pub admin: String,
    /// Print the raw JSON of /status.
    #[arg(long)]
    pub json: bool,
}

/// `250ms`, `10s`, `2m`, `1h` (as in the mesh YAML); on the command line a
/// bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    match s.parse::<u64>() {
        Ok(n) => ringmesh_yaml::duration::parse(&format!("{n}s")),
        Err(_) => ringmesh_yaml::duration::parse(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "ringmesh-control",
            "serve",
            "--config-dir",
            "/etc/mesh",
            "--grace-period",
            "1s",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.grace_period, Duration::from_secs(1));
        assert_eq!(a.restart_grace, Duration::from_secs(45));
        assert_eq!(a.listen.to_string(), "127.0.0.1:15012");
        assert_eq!(a.cert_lifetime, Duration::from_secs(24 * 3600));
        assert!(Cli::try_parse_from([
            "ringmesh-control",
            "serve",
            "--config-dir",
            "/etc/mesh",
            "--cert-lifetime",
            "500ms",
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "ringmesh-control",
            "serve",
            "--config-dir",
            "/etc/mesh",
            "--ca-cert",
            "/x.pem",
        ])
        .is_err());
    }
}
