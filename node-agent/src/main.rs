use anyhow::{Context, Result};
use clap::Parser;
use nodemedic_agent::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Scan(args) => {
            let code = nodemedic_agent::scan_command::run(&args)?;
            std::process::exit(code);
        }
    }
}
