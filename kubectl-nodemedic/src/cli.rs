//! Flags and subcommands. kubectl runs `kubectl-nodemedic` for
//! `kubectl nodemedic ...`; every flag also reads an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-nodemedic",
    bin_name = "kubectl nodemedic",
    version,
    about = "nodemedic from kubectl: the fleet's remediation status, why a node was touched, what a policy would do, and a pause switch",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Path to the kubeconfig (default: $KUBECONFIG, else ~/.kube/config,
    /// else the in-cluster ServiceAccount).
    #[arg(long, global = true, env = "NODEMEDIC_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, env = "NODEMEDIC_CONTEXT")]
    pub context: Option<String>,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table, env = "NODEMEDIC_OUTPUT")]
    pub output: Output,

    /// Colour: auto (only on a terminal, and not with NO_COLOR set), always
    /// or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, env = "NODEMEDIC_COLOR")]
    pub color: ColorChoice,

    /// Where the operator's leader-election Lease lives (default: found by
    /// name in any namespace).
    #[arg(long, global = true, env = "NODEMEDIC_OPERATOR_NAMESPACE")]
    pub operator_namespace: Option<String>,

    /// The operator's Lease name (its --lease-name).
    #[arg(
        long,
        global = true,
        default_value = "nodemedic-operator",
        env = "NODEMEDIC_LEASE_NAME"
    )]
    pub lease_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One table for the fleet: every policy, every unhealthy node, the
    /// step each is on and what comes next.
    Status,
    /// A node's story: findings with process, pod and container; per
    /// policy the episode timeline, every gate evaluated now, what happens
    /// next, and who owns the node's cordon and taints.
    Explain(ExplainArgs),
    /// What a policy would do if applied (or edited) now, on the live
    /// cluster's reports: the planner itself, in process. Writes nothing.
    Simulate(SimulateArgs),
    /// Pause remediation: a policy, a node, or every policy. The operator
    /// starts no new step; agents keep reporting.
    Pause(PauseArgs),
    /// End a pause.
    Resume(ResumeArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The node.
    pub node: String,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The policy's YAML (a NodeHealthPolicy), or - for standard input.
    #[arg(short = 'f', long = "filename", env = "NODEMEDIC_SIMULATE_FILE")]
    pub file: PathBuf,

    /// How far ahead to project, e.g. 6h.
    #[arg(long, default_value = "6h", value_parser = parse_duration, env = "NODEMEDIC_SIMULATE_HORIZON")]
    pub horizon: Duration,

    /// How soon an agent is assumed to carry out a request (its scan
    /// interval).
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "NODEMEDIC_SIMULATE_AGENT_ANSWER")]
    pub agent_answer: Duration,

    /// The operator's --eviction-timeout, --drain-timeout and --request-ttl
    /// (defaults: the operator's).
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "NODEMEDIC_EVICTION_TIMEOUT")]
    pub eviction_timeout: Duration,
    #[arg(long, default_value = "15m", value_parser = parse_duration, env = "NODEMEDIC_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "NODEMEDIC_REQUEST_TTL")]
    pub request_ttl: Duration,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["policy", "node", "all"])))]
pub struct PauseArgs {
    /// The policy to pause (on every node it selects).
    pub policy: Option<String>,
    /// Pause every policy's remediation on this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Pause every policy that exists now.
    #[arg(long)]
    pub all: bool,
    /// Why (recorded with the pause, shown by status and in the policy
    /// status and Event).
    #[arg(long, env = "NODEMEDIC_PAUSE_REASON")]
    pub reason: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["policy", "node", "all"])))]
pub struct ResumeArgs {
    /// The policy to resume.
    pub policy: Option<String>,
    /// Resume the node.
    #[arg(long)]
    pub node: Option<String>,
    /// Resume every paused policy.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    nodemedic_crds::duration::parse_duration(s).map_err(|e| e.to_string())
}
