//! `nodemedic-agent scan`: observe, assess, print; once or in a loop.

use crate::cli::{OutputFormat, ScanArgs};
use crate::detect::Engine;
use crate::detect::thresholds::{EffectiveThresholds, ThresholdError};
use crate::report::to_report;
use crate::scan::procfs::FdRecount;
use crate::scan::{ScanError, Scanner};
use crate::{output, report};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nodemedic_crds::NodeHealthPolicy;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Exit status when `--fail-on-findings` trips (1 is an error, 2 a usage
/// error from the argument parser).
pub const EXIT_FINDINGS: i32 = 3;

/// Name used in conditions when no policy file is given.
pub const BUILTIN_POLICY: &str = "builtin-defaults";

#[derive(Debug, Error)]
pub enum ScanCommandError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("reading policy {path}")]
    PolicyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing policy {path} as a NodeHealthPolicy")]
    PolicyParse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    /// The same rules (and messages) the API server applies on `kubectl apply`.
    #[error("policy {path} is invalid (the API server would reject it):\n  {}", .problems.join("\n  "))]
    PolicyInvalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("policy {path}")]
    PolicyThresholds {
        path: PathBuf,
        #[source]
        source: ThresholdError,
    },
    #[error("encoding output: {0}")]
    Encode(String),
    #[error("writing output")]
    Write(#[from] std::io::Error),
}

/// Loads the thresholds (and the policy's name) from a NodeHealthPolicy YAML.
pub fn load_policy(path: &Path) -> Result<(String, EffectiveThresholds), ScanCommandError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScanCommandError::PolicyRead {
        path: path.to_owned(),
        source,
    })?;
    let policy: NodeHealthPolicy =
        serde_yaml::from_str(&text).map_err(|source| ScanCommandError::PolicyParse {
            path: path.to_owned(),
            source,
        })?;
    if let Err(errors) = policy.validate_cel() {
        return Err(ScanCommandError::PolicyInvalid {
            path: path.to_owned(),
            problems: errors
                .iter()
                .map(|e| format!("{}: {}", e.field_path, e.message))
                .collect(),
        });
    }
    let thresholds = EffectiveThresholds::from_spec(&policy.spec).map_err(|source| {
        ScanCommandError::PolicyThresholds {
            path: path.to_owned(),
            source,
        }
    })?;
    let name = policy
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| path.display().to_string());
    Ok((name, thresholds))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Runs the command; returns the process exit status.
pub fn run(args: &ScanArgs) -> Result<i32, ScanCommandError> {
    let (policy, thresholds) = match &args.policy {
        Some(p) => load_policy(p)?,
        None => (
            BUILTIN_POLICY.to_owned(),
            EffectiveThresholds::builtin_defaults(),
        ),
    };
    let mut scanner = Scanner::new(&args.host_root)?;
    let mut engine = Engine::new(thresholds);
    let stdout = std::io::stdout();

    let Some(interval) = args.watch else {
        // One shot: a first cgroup sample, then the full scan a moment later
        // so that throttling is measured as a delta, not a lifetime average.
        let first = scanner.observe_cgroups_only();
        engine.prime(&first);
        std::thread::sleep(args.sample_interval);
        let obs = scanner.observe();
        let a = engine.assess(&mut scanner, &obs);
        if stopped_reading(print(&mut stdout.lock(), args.output, &a, &policy, false))? {
            return Ok(0);
        }
        return Ok(if args.fail_on_findings && a.exceeded {
            EXIT_FINDINGS
        } else {
            0
        });
    };

    scanner.set_fd_recount(FdRecount {
        every: args.fd_recount_every,
        ..FdRecount::default()
    });
    let mut n = 0u64;
    loop {
        let obs = scanner.observe();
        let a = engine.assess(&mut scanner, &obs);
        if stopped_reading(print(&mut stdout.lock(), args.output, &a, &policy, true))? {
            return Ok(0);
        }
        if args.fail_on_findings && a.firing {
            return Ok(EXIT_FINDINGS);
        }
        n += 1;
        if args.count > 0 && n >= args.count {
            return Ok(0);
        }
        std::thread::sleep(interval.saturating_sub(obs.duration));
    }
}

/// A closed stdout (`scan | head`) ends the command quietly, as for other
/// Unix tools. Returns whether it happened.
fn stopped_reading(r: Result<(), ScanCommandError>) -> Result<bool, ScanCommandError> {
    match r {
        Ok(()) => Ok(false),
        Err(ScanCommandError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e),
    }
}

fn print(
    out: &mut impl Write,
    format: OutputFormat,
    a: &crate::detect::Assessment,
    policy: &str,
    watching: bool,
) -> Result<(), ScanCommandError> {
    let node = a.node.clone().unwrap_or_else(|| "localhost".to_owned());
    match format {
        OutputFormat::Table => {
            if watching {
                writeln!(out, "--- {}", now().0)?;
            }
            out.write_all(output::table(a).as_bytes())?;
        }
        OutputFormat::Json => {
            let r = report::to_report(a, &node, policy, now());
            let text = if watching {
                serde_json::to_string(&r)
            } else {
                serde_json::to_string_pretty(&r)
            }
            .map_err(|e| ScanCommandError::Encode(e.to_string()))?;
            writeln!(out, "{text}")?;
        }
        OutputFormat::Yaml => {
            let r = to_report(a, &node, policy, now());
            let text =
                serde_yaml::to_string(&r).map_err(|e| ScanCommandError::Encode(e.to_string()))?;
            if watching {
                writeln!(out, "---")?;
            }
            out.write_all(text.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}
