//! Command line. Every flag has an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use nodemedic_crds::duration::parse_duration;

use crate::controller::RunConfig;
use crate::error::{Error, Result};
use crate::leader::LeaderConfig;
use crate::plan::Settings;
use crate::remediation::drain::DrainPassLimits;

/// nodemedic operator: plans and carries out node remediations from the
/// agents' reports, within each NodeHealthPolicy's safety budgets.
#[derive(Debug, Parser)]
#[command(name = "nodemedic-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (the Deployment's process).
    Run(Box<RunArgs>),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> std::result::Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// `nodemedic-operator run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig file; without it the in-cluster configuration (or the
    /// default kubeconfig) is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the admin endpoint (/metrics, /livez, /readyz).
    #[arg(long, env = "NODEMEDIC_ADMIN_ADDR", default_value = "0.0.0.0:9471")]
    pub admin_addr: String,

    /// Log format.
    #[arg(long, env = "NODEMEDIC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. "info" or
    /// "nodemedic_operator=debug,info".
    #[arg(long = "log", env = "NODEMEDIC_LOG", default_value = "info")]
    pub log: String,

    /// Elect a leader on a Lease; only the leader acts. "false" for a
    /// single replica.
    #[arg(long, env = "NODEMEDIC_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the Lease.
    #[arg(
        long,
        env = "NODEMEDIC_LEASE_NAME",
        default_value = "nodemedic-operator"
    )]
    pub lease_name: String,

    /// Namespace of the Lease (default: the pod's namespace, else the
    /// kubeconfig's namespace).
    #[arg(long, env = "NODEMEDIC_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease (default: the hostname, which
    /// is the pod name).
    #[arg(long, env = "NODEMEDIC_IDENTITY")]
    pub identity: Option<String>,

    /// Lease duration: a standby takes over about this long after the
    /// leader stops renewing.
    #[arg(long, env = "NODEMEDIC_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,

    /// Manage only the policies matching this label selector (e.g. to
    /// split policies between operator instances).
    #[arg(long, env = "NODEMEDIC_POLICY_SELECTOR")]
    pub policy_selector: Option<String>,

    /// How long an EvictPod step retries while a PodDisruptionBudget
    /// refuses before it is Failed.
    #[arg(long, env = "NODEMEDIC_EVICTION_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub eviction_timeout: Duration,

    /// How long a Drain may take before it is Failed.
    #[arg(long, env = "NODEMEDIC_DRAIN_TIMEOUT", default_value = "15m", value_parser = duration)]
    pub drain_timeout: Duration,

    /// How long one drain pass may evict before it yields (reconciles run
    /// one at a time; the next pass follows a second later).
    #[arg(long, env = "NODEMEDIC_DRAIN_PASS_BUDGET", default_value = "10s", value_parser = duration)]
    pub drain_pass_budget: Duration,

    /// Evictions a drain pass has in flight at once (1-64).
    #[arg(long, env = "NODEMEDIC_DRAIN_PARALLELISM", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub drain_parallelism: u16,

    /// The agents' action-request TTL; a request without result after it
    /// (plus a minute) is Failed.
    #[arg(long, env = "NODEMEDIC_ACTION_REQUEST_TTL", default_value = "10m", value_parser = duration)]
    pub action_request_ttl: Duration,

    /// Reconcile every policy at least this often.
    #[arg(long, env = "NODEMEDIC_RESYNC", default_value = "5m", value_parser = duration)]
    pub resync: Duration,
}

/// The hostname (the pod name in a Deployment).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
}

/// The namespace of the pod's ServiceAccount, when in a cluster.
fn pod_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
}

impl RunArgs {
    /// The client configuration.
    pub async fn kube_config(&self) -> Result<kube::Config> {
        match &self.kubeconfig {
            Some(path) if !path.as_os_str().is_empty() && !path.to_string_lossy().contains(':') => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))
            }
            _ => kube::Config::infer()
                .await
                .map_err(|e| Error::Config(format!("no kubeconfig and not in a cluster: {e}"))),
        }
    }

    /// The run configuration, given the client's default namespace.
    pub fn run_config(&self, default_namespace: &str) -> Result<RunConfig> {
        if self.lease_duration < Duration::from_secs(2) {
            return Err(Error::Config("--lease-duration must be at least 2s".into()));
        }
        let identity = self
            .identity
            .clone()
            .or_else(hostname)
            .ok_or_else(|| Error::Config("no --identity and no hostname".into()))?;
        Ok(RunConfig {
            admin_addr: self.admin_addr.clone(),
            leader: LeaderConfig {
                enabled: self.leader_election,
                lease_name: self.lease_name.clone(),
                namespace: self
                    .lease_namespace
                    .clone()
                    .or_else(pod_namespace)
                    .unwrap_or_else(|| default_namespace.to_owned()),
                identity,
                duration: self.lease_duration,
            },
            policy_selector: self.policy_selector.clone().filter(|s| !s.is_empty()),
            settings: Settings {
                eviction_timeout: self.eviction_timeout,
                drain_timeout: self.drain_timeout,
                request_ttl: self.action_request_ttl,
                resync: self.resync,
            },
            drain_limits: DrainPassLimits {
                budget: self.drain_pass_budget,
                parallelism: usize::from(self.drain_parallelism),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_has_an_environment_variable() {
        Cli::command().debug_assert();
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        for arg in run.get_arguments() {
            if ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            assert!(arg.get_env().is_some(), "--{} has no env", arg.get_id());
        }
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["nodemedic-operator", "run", "--identity", "me"]).unwrap();
        let Command::Run(args) = cli.command;
        let c = args.run_config("ns").unwrap();
        assert_eq!(c.admin_addr, "0.0.0.0:9471");
        assert!(c.leader.enabled);
        assert_eq!(c.leader.lease_name, "nodemedic-operator");
        assert_eq!(c.leader.duration, Duration::from_secs(15));
        assert_eq!(c.leader.identity, "me");
        let cli = Cli::try_parse_from([
            "nodemedic-operator",
            "run",
            "--leader-election=false",
            "--identity",
            "x",
            "--lease-duration",
            "5s",
        ])
        .unwrap();
        let Command::Run(args) = cli.command;
        assert!(!args.leader_election);
        assert_eq!(args.lease_duration, Duration::from_secs(5));
    }
}
