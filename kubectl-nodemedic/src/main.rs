//! `kubectl-nodemedic`: see docs/kubectl-plugin.md.

use std::io::Write;

use clap::Parser;
use kubectl_nodemedic::cli::Cli;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match kubectl_nodemedic::run(cli).await {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (| head) is not an error worth a panic.
            let _ = stdout.write_all(out.as_bytes());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
