//! `nodemedic-operator run`: see `docs/operator.md`.

use anyhow::Context as _;
use clap::Parser;
use nodemedic_operator::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Command::Run(args) = cli.command;
    let filter = EnvFilter::try_new(&args.log)
        .with_context(|| format!("invalid --log filter {:?}", args.log))?;
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let config = args.kube_config().await?;
    let namespace = config.default_namespace.clone();
    let run_config = args.run_config(&namespace)?;
    let mut no_retry = config.clone();
    // kube retries 429 by default; for evictions a 429 is a PodDisruptionBudget
    // refusal that the planner retries on its own schedule.
    no_retry.default_retry = false;
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let eviction_client =
        kube::Client::try_from(no_retry).context("building the Kubernetes client")?;
    nodemedic_operator::controller::run(client, eviction_client, run_config)
        .await
        .context("nodemedic-operator")?;
    Ok(())
}
