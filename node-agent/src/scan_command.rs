//! `nodemedic-agent scan`: observe, assess, print; once or in a loop.

use crate::cli::{OutputFormat, ScanArgs};
use crate::detect::pids::PidsAssessment;
use crate::detect::{Engine, PolicyAssessment};
use crate::output;
use crate::report::build::{self, AgentMeta};
use crate::scan::enrich::{Enrichment, enrich, enrich_pids};
use crate::scan::procfs::FdRecount;
use crate::scan::{Observation, ScanError, ScanPlan, Scanner};
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::policy_document::{PolicyDocumentError, parse_policy};
use nodemedic_crds::thresholds::{EffectiveThresholds, SelectedPolicy, ThresholdError};
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
    /// Not YAML, not a NodeHealthPolicy, or rejected exactly as the API
    /// server would reject it (schema, unknown fields, CEL rules).
    #[error("policy {path}")]
    PolicyInvalid {
        path: PathBuf,
        #[source]
        source: PolicyDocumentError,
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

/// Loads a NodeHealthPolicy YAML file, checked as the API server would.
pub fn load_policy(path: &Path) -> Result<SelectedPolicy, ScanCommandError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScanCommandError::PolicyRead {
        path: path.to_owned(),
        source,
    })?;
    let policy = parse_policy(&text).map_err(|source| ScanCommandError::PolicyInvalid {
        path: path.to_owned(),
        source,
    })?;
    SelectedPolicy::from_policy(&policy).map_err(|source| ScanCommandError::PolicyThresholds {
        path: path.to_owned(),
        source,
    })
}

/// Every detector with the API defaults, when no policy file is given.
pub fn builtin_policy() -> SelectedPolicy {
    SelectedPolicy {
        name: BUILTIN_POLICY.to_owned(),
        thresholds: EffectiveThresholds::builtin_defaults(),
        protected_processes: Vec::new(),
    }
}

/// One scan, assessed: what `scan` prints.
#[derive(Debug)]
pub struct Scan {
    pub observation: Observation,
    pub assessment: PolicyAssessment,
    pub enrichment: Enrichment,
    pub pids: PidsAssessment,
}

/// Observes, assesses under `policy` and enriches the offenders.
pub fn scan_once(scanner: &mut Scanner, engine: &mut Engine, policy: &SelectedPolicy) -> Scan {
    let policies = std::slice::from_ref(policy);
    let observation = scanner.observe(&ScanPlan::for_policies(policies));
    let mut assessments = engine.assess(&observation, policies, Timestamp::now());
    let mut enrichment = enrich(scanner, &assessments);
    enrich_pids(scanner, &observation, &mut enrichment);
    let pids = engine.assess_pids(&observation, &enrichment.zombies_by_pod);
    Scan {
        observation,
        // One policy in, one assessment out.
        assessment: assessments.pop().unwrap_or(PolicyAssessment {
            policy: policy.name.clone(),
            detectors: Vec::new(),
        }),
        enrichment,
        pids,
    }
}

/// Runs the command; returns the process exit status.
pub fn run(args: &ScanArgs) -> Result<i32, ScanCommandError> {
    let policy = match &args.policy {
        Some(p) => load_policy(p)?,
        None => builtin_policy(),
    };
    let mut scanner = Scanner::new(&args.host_root)?;
    let mut engine = Engine::with_pids_window(args.pids_trend_window);
    let stdout = std::io::stdout();

    let Some(interval) = args.watch else {
        // One shot: a first cgroup sample, then the full scan a moment later
        // so that throttling is measured as a delta, not a lifetime average.
        let first = scanner.observe_cgroups_only();
        engine.prime(&first, std::slice::from_ref(&policy));
        std::thread::sleep(args.sample_interval);
        let scan = scan_once(&mut scanner, &mut engine, &policy);
        if stopped_reading(print(&mut stdout.lock(), args.output, &scan, None))? {
            return Ok(0);
        }
        return Ok(if args.fail_on_findings && scan.assessment.exceeded() {
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
        let scan = scan_once(&mut scanner, &mut engine, &policy);
        if stopped_reading(print(
            &mut stdout.lock(),
            args.output,
            &scan,
            Some(interval),
        ))? {
            return Ok(0);
        }
        if args.fail_on_findings && scan.assessment.firing() {
            return Ok(EXIT_FINDINGS);
        }
        n += 1;
        if args.count > 0 && n >= args.count {
            return Ok(0);
        }
        std::thread::sleep(interval.saturating_sub(scan.observation.duration));
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
    scan: &Scan,
    watching: Option<std::time::Duration>,
) -> Result<(), ScanCommandError> {
    let report = || {
        let node = scan
            .observation
            .hostname
            .clone()
            .unwrap_or_else(|| "localhost".to_owned());
        let status = build::status(
            &scan.observation,
            std::slice::from_ref(&scan.assessment),
            &scan.enrichment,
            &scan.pids,
            Timestamp::now(),
            AgentMeta {
                scan_interval: watching,
                heartbeat: None,
            },
        );
        build::report(&node, status)
    };
    match format {
        OutputFormat::Table => {
            if watching.is_some() {
                writeln!(out, "--- {}", Timestamp::now())?;
            }
            out.write_all(
                output::table(
                    &scan.observation,
                    &scan.assessment,
                    &scan.enrichment,
                    &scan.pids,
                )
                .as_bytes(),
            )?;
        }
        OutputFormat::Json => {
            let r = report();
            let text = if watching.is_some() {
                serde_json::to_string(&r)
            } else {
                serde_json::to_string_pretty(&r)
            }
            .map_err(|e| ScanCommandError::Encode(e.to_string()))?;
            writeln!(out, "{text}")?;
        }
        OutputFormat::Yaml => {
            let text = serde_yaml::to_string(&report())
                .map_err(|e| ScanCommandError::Encode(e.to_string()))?;
            if watching.is_some() {
                writeln!(out, "---")?;
            }
            out.write_all(text.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}
