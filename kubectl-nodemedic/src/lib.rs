//! `kubectl nodemedic`: the fleet's remediation status, a node's story, a
//! policy's projection and a pause switch, read through the user's
//! kubeconfig. `explain`, `status` and `simulate` only read; `pause` and
//! `resume` write three annotations. See docs/kubectl-plugin.md.

pub mod cli;
pub mod cluster;
pub mod error;
pub mod explain;
pub mod fleet;
pub mod pause;
pub mod render;
pub mod simulate;
pub mod status;

use clap::CommandFactory;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::cli::{Cli, Command, Output};
use crate::error::Error;

fn emit<T: Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<String, Error> {
    match output {
        Output::Table => Ok(table()),
        Output::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::Api(e.to_string())),
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| Error::Api(e.to_string())),
    }
}

/// Runs a command; returns what to print on standard output.
pub async fn run(cli: Cli) -> Result<String, Error> {
    let color = render::use_color(cli.global.color);
    let now = Timestamp::now();
    if let Command::Completion(args) = &cli.command {
        let mut out = Vec::new();
        clap_complete::generate(
            args.shell,
            &mut Cli::command(),
            "kubectl-nodemedic",
            &mut out,
        );
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    let client = cluster::client(&cli.global).await?;
    let g = &cli.global;
    match &cli.command {
        Command::Status => {
            let world = cluster::world(&client).await?;
            let lead =
                cluster::leadership(&client, &g.lease_name, g.operator_namespace.as_deref(), now)
                    .await;
            let s = status::build(&world, lead, now);
            emit(g.output, &s, || status::render(&s, now, color))
        }
        Command::Explain(args) => {
            let world = cluster::world(&client).await?;
            let lead =
                cluster::leadership(&client, &g.lease_name, g.operator_namespace.as_deref(), now)
                    .await;
            let events = cluster::events_about(&client, "Node", &args.node).await;
            let s = explain::build(&world, &args.node, lead, events, now)?;
            emit(g.output, &s, || explain::render(&s, color))
        }
        Command::Simulate(args) => {
            let policy = cluster::read_policy(&args.file)?;
            let world = cluster::world(&client).await?;
            let p = simulate::run(&policy, &world, args, now)?;
            let v = simulate::view(&p);
            emit(g.output, &v, || simulate::render(&v, color))
        }
        Command::Pause(args) => {
            let target = target(args.policy.as_deref(), args.node.as_deref(), args.all)?;
            let lines = pause::apply(&client, &target, Some(&args.reason), now).await?;
            Ok(lines.join("\n") + "\n")
        }
        Command::Resume(args) => {
            let target = target(args.policy.as_deref(), args.node.as_deref(), args.all)?;
            let lines = pause::apply(&client, &target, None, now).await?;
            Ok(if lines.is_empty() {
                "nothing was paused\n".into()
            } else {
                lines.join("\n") + "\n"
            })
        }
        Command::Completion(_) => Ok(String::new()),
    }
}

fn target(policy: Option<&str>, node: Option<&str>, all: bool) -> Result<pause::Target, Error> {
    match (policy, node, all) {
        (Some(p), None, false) => Ok(pause::Target::Policy(p.to_owned())),
        (None, Some(n), false) => Ok(pause::Target::Node(n.to_owned())),
        (None, None, true) => Ok(pause::Target::AllPolicies),
        _ => Err(Error::Usage(
            "name exactly one of: a POLICY, --node NODE, --all".into(),
        )),
    }
}
