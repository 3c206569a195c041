//! `ringmesh-control`: see `ringmesh_control::cli` for the commands.

use std::process::ExitCode;

use clap::Parser;
use ringmesh_control::cli::{Cli, Command, StatusArgs};
use ringmesh_control::{admin, serve, status};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ringmesh-control: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringmesh-control: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status(args) => status_command(&args),
    }
}

fn status_command(args: &StatusArgs) -> ExitCode {
    let body = match admin::get(&args.admin, "/status") {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "ringmesh-control status: cannot reach the control plane's admin endpoint: {e} (is `ringmesh-control serve --admin {}` running?)",
                args.admin
            );
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        print!("{body}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<status::StatusJson>(&body) {
        Ok(s) => {
            print!(
                "{}",
                status::render_table(&s, ringmesh_control::log::unix_now())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "ringmesh-control status: {}: unexpected /status body: {e}",
                args.admin
            );
            ExitCode::FAILURE
        }
    }
}
