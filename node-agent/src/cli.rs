//! Command line of the `nodemedic-agent` binary. Every flag can also be set
//! through the environment, which is how the DaemonSet configures it.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "nodemedic-agent", version, about = "nodemedic node agent")]
pub struct Cli {
    /// Log filter (tracing-subscriber EnvFilter syntax); logs go to stderr.
    /// Default: warn for `scan`, info for `run`.
    #[arg(long, env = "NODEMEDIC_LOG", global = true)]
    pub log: Option<String>,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(
        long,
        env = "NODEMEDIC_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan this machine once (or repeatedly with --watch) and print the
    /// node summary and the top offenders of each detector.
    Scan(ScanArgs),
    /// Run as the node agent of a cluster (the DaemonSet's process): scan
    /// every interval, publish this node's NodeHealthReport, execute the
    /// operator's action requests, serve metrics and health.
    Run(RunArgs),
}

/// `nodemedic-agent run`. The API server is found from the in-cluster
/// service account, or from KUBECONFIG.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Name of the Node this agent runs on (the DaemonSet sets it from
    /// spec.nodeName through the downward API).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Root of the host filesystem: /proc, /sys/fs/cgroup and /var/log/pods
    /// are read below it.
    #[arg(long, env = "NODEMEDIC_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// Scan interval.
    #[arg(long, env = "NODEMEDIC_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub interval: Duration,
    /// Write the report at least this often, even when nothing changed; the
    /// operator treats a report older than three heartbeats as stale.
    #[arg(long, env = "NODEMEDIC_HEARTBEAT", value_parser = parse_duration, default_value = "5m")]
    pub heartbeat: Duration,
    /// Address of the admin endpoint (/metrics, /livez, /readyz).
    #[arg(long, env = "NODEMEDIC_ADMIN_ADDR", default_value = "0.0.0.0:9470")]
    pub admin_addr: std::net::SocketAddr,
    /// Action requests this agent has seen for longer than this without
    /// executing them are refused (measured on its own monotonic clock from
    /// when it first saw them; requestedAt, the operator's clock, is ignored).
    #[arg(long, env = "NODEMEDIC_ACTION_TTL", value_parser = parse_duration, default_value = "10m")]
    pub action_ttl: Duration,
    /// The reboot daemon's sentinel file (path on the host, in a directory
    /// dedicated to it, e.g. /var/lib/nodemedic/reboot/reboot-required; start
    /// kured with the same --reboot-sentinel), created on a RequestReboot
    /// request without following symbolic links. Unset: RequestReboot
    /// requests are refused.
    #[arg(long, env = "NODEMEDIC_REBOOT_SENTINEL")]
    pub reboot_sentinel: Option<PathBuf>,
    /// Recount the fds of processes holding fewer than 64 every N scans
    /// instead of every scan (staggered; 1 = every scan).
    #[arg(long, env = "NODEMEDIC_FD_RECOUNT_EVERY", default_value_t = 3)]
    pub fd_recount_every: u32,
    /// Duration of the node Lease (kube-node-lease/nodemedic-agent-<node>)
    /// that makes one agent, and only one, act on the node: the holder
    /// renews it only just before it acts (a report write, a request) when
    /// less than half its acting window is left, and stops acting a quarter
    /// of it before it would expire; an idle holder's Lease lapses. Another
    /// agent on the node takes over a lapsed Lease no sooner than this, and
    /// only when the node lacks an actor (a request without a result for
    /// this long, a firing condition not published for this long, or no
    /// report write for its heartbeat plus this); at once when the holder
    /// released it on SIGTERM. Whole seconds, at least 1s.
    #[arg(long, env = "NODEMEDIC_LEASE_DURATION", value_parser = parse_lease_duration, default_value = "30s")]
    pub lease_duration: Duration,
    /// The window the node's task count and each pod's pids.current are
    /// fitted over for their exhaustion ETAs (an ETA once the samples span
    /// half of it). Shorter reacts sooner to a zombie storm and follows
    /// bursts more; between 20s and 24h.
    #[arg(long, env = "NODEMEDIC_PIDS_TREND_WINDOW", value_parser = parse_trend_window, default_value = "10m")]
    pub pids_trend_window: Duration,
    /// This agent's Pod name (downward API metadata.name): with the Pod UID,
    /// its identity as the Lease's holder. Unset: the host name and the
    /// process id.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// This agent's Pod UID (downward API metadata.uid).
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,
}

/// A Lease duration: whole seconds (the Lease stores seconds), at least 1s.
fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
        return Err("the lease duration must be whole seconds, at least 1s".to_owned());
    }
    Ok(d)
}

fn parse_trend_window(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_secs(20)..=Duration::from_secs(24 * 3600)).contains(&d) {
        return Err(format!(
            "the trend window must be between 20s (at least 5 samples at a few seconds' interval) and 24h, not {s}"
        ));
    }
    Ok(d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Root of the host filesystem: /proc and /sys/fs/cgroup are read below it.
    #[arg(long, env = "NODEMEDIC_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// A NodeHealthPolicy YAML file whose thresholds replace the built-in defaults.
    #[arg(long, env = "NODEMEDIC_POLICY")]
    pub policy: Option<PathBuf>,
    /// Output format.
    #[arg(
        long,
        short = 'o',
        env = "NODEMEDIC_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: OutputFormat,
    /// Scan repeatedly at this interval (e.g. 10s, 1m) instead of once.
    #[arg(long, env = "NODEMEDIC_WATCH", value_parser = parse_duration)]
    pub watch: Option<Duration>,
    /// Exit with status 3 when a threshold is exceeded (with --watch: when a
    /// detector fires, i.e. has been exceeded for its `for` duration).
    #[arg(long, env = "NODEMEDIC_FAIL_ON_FINDINGS")]
    pub fail_on_findings: bool,
    /// Gap between the two cgroup samples a one-shot scan takes to measure
    /// throttling deltas.
    #[arg(long, env = "NODEMEDIC_SAMPLE_INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub sample_interval: Duration,
    /// In --watch mode, recount the fds of processes holding fewer than 64
    /// every N scans instead of every scan (staggered; 1 = every scan).
    #[arg(long, env = "NODEMEDIC_FD_RECOUNT_EVERY", default_value_t = 3)]
    pub fd_recount_every: u32,
    /// With --watch: the window pid counts are fitted over for their
    /// exhaustion ETAs (as the agent's --pids-trend-window).
    #[arg(long, env = "NODEMEDIC_PIDS_TREND_WINDOW", value_parser = parse_trend_window, default_value = "10m")]
    pub pids_trend_window: Duration,
    /// Stop after this many scans in --watch mode (0 = forever).
    #[arg(long, env = "NODEMEDIC_COUNT", default_value_t = 0)]
    pub count: u64,
}

/// Durations on the command line use the same grammar as policies
/// (`500ms`, `10s`, `5m`, `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    nodemedic_crds::parse_duration(s.trim()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        // One grammar for flags and policies: a unit is required.
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_lease_duration("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_lease_duration("500ms").is_err());
        assert!(parse_lease_duration("1500ms").is_err());
        assert_eq!(parse_trend_window("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_trend_window("24h"), Ok(Duration::from_secs(86_400)));
        for bad in ["10s", "25h", "soon"] {
            assert!(parse_trend_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_flag_has_an_env_var() {
        let cmd = Cli::command();
        let scan = cmd.find_subcommand("scan").expect("scan subcommand");
        let run = cmd.find_subcommand("run").expect("run subcommand");
        for arg in scan
            .get_arguments()
            .chain(run.get_arguments())
            .chain(cmd.get_arguments())
        {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(arg.get_env().is_some(), "flag {id} has no env var");
        }
        cmd.debug_assert();
    }
}
