use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use nodemedic_agent::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // One line with the whole cause chain; no backtrace for user errors.
            eprintln!("nodemedic-agent: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<u8> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Scan(args) => {
            let code = nodemedic_agent::scan_command::run(&args)?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
    }
}
