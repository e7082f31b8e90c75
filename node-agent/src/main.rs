use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use nodemedic_agent::cli::{Cli, Command, LogFormat};
use nodemedic_agent::confine::Confinement;
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

fn init_logging(cli: &Cli) -> Result<()> {
    let default = match cli.command {
        Command::Scan(_) => "warn",
        Command::Run(_) => "info",
    };
    let filter = EnvFilter::try_new(cli.log.as_deref().unwrap_or(default))
        .context("invalid --log filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

fn run() -> Result<u8> {
    let cli = Cli::parse();
    init_logging(&cli)?;
    // Before any thread starts, so that every thread is inside the domain.
    match nodemedic_agent::confine::confine_self() {
        Ok(Confinement::Enforced) => {
            tracing::debug!("confined: no ptrace access to other processes, no exec")
        }
        Ok(Confinement::Unavailable) => tracing::warn!(
            "this kernel has no Landlock: the agent cannot give up ptrace access to other processes (see docs/security.md)"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "the agent could not confine itself (see docs/security.md)")
        }
    }
    match cli.command {
        Command::Scan(args) => {
            let code = nodemedic_agent::scan_command::run(&args)?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        Command::Run(args) => {
            // One thread for the API client, the Lease, the admin endpoint
            // and the action handling (all mostly waiting); the scan runs on
            // a thread of its own with its own clock (run::scan_loop).
            // Worker threads handing wakeups to each other cost more CPU per
            // interval than this work needs.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(nodemedic_agent::run::run(args))?;
            Ok(0)
        }
    }
}
