//! The four detectors, the agent's memory across scans, and per-policy
//! hysteresis. Detection is pure: verdicts are a function of an
//! observation, a policy's thresholds and the history; no I/O happens here.

pub mod fds;
pub mod finding;
pub mod fit;
pub mod history;
pub mod hung;
pub mod hysteresis;
pub mod pids;
pub mod throttling;
pub mod waits;
pub mod zombies;

use crate::scan::Observation;
use finding::Verdict;
use history::{History, Retention};
use hysteresis::{HoldState, Hysteresis};
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::thresholds::{EffectiveThresholds, SelectedPolicy};
use std::collections::HashSet;
use std::time::Duration;

/// Verdicts of every detector one policy configures, for one observation.
pub fn evaluate(obs: &Observation, t: &EffectiveThresholds, history: &History) -> Vec<Verdict> {
    let mut out = Vec::with_capacity(4);
    if let Some(z) = &t.zombies {
        out.push(zombies::detect(obs, z, history, obs.clock_ticks));
    }
    if let Some(h) = &t.hung_tasks {
        out.push(hung::detect(obs, h, history));
    }
    if let Some(f) = &t.fd_leak {
        out.push(fds::detect(obs, f, history));
    }
    if let Some(c) = &t.cpu_throttling {
        out.push(throttling::detect(obs, c, history));
    }
    out
}

/// One detector under one policy: its verdict and where its hysteresis stands.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorAssessment {
    pub verdict: Verdict,
    pub hold: HoldState,
    /// The detector's `for`.
    pub for_duration: Duration,
}

/// Every configured detector of one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyAssessment {
    pub policy: String,
    pub detectors: Vec<DetectorAssessment>,
}

impl PolicyAssessment {
    /// A detector has held for its `for`.
    pub fn firing(&self) -> bool {
        self.detectors.iter().any(|d| d.hold.firing)
    }

    /// A threshold is exceeded in this scan.
    pub fn exceeded(&self) -> bool {
        self.detectors.iter().any(|d| d.verdict.exceeded)
    }
}

/// How long the history must keep samples for the given policies, with
/// task and pid counts fitted over `pids_window`.
pub fn retention(policies: &[SelectedPolicy], pids_window: Duration) -> Retention {
    // Every fdLeak policy fits growth (for the ETA in the report), over its
    // growth window or the default one.
    let fd_window = policies
        .iter()
        .filter_map(|p| p.thresholds.fd_leak.as_ref())
        .map(|f| f.fit_window())
        .max();
    let cpu_window = policies
        .iter()
        .filter_map(|p| p.thresholds.cpu_throttling.as_ref())
        .map(|c| c.window)
        .max()
        .unwrap_or(Duration::from_secs(300));
    Retention {
        fd_window,
        cpu_window,
        pids_window,
    }
}

/// History plus hysteresis: feed it observations and the policies that
/// select the node, get one assessment per policy.
#[derive(Debug)]
pub struct Engine {
    history: History,
    hysteresis: Hysteresis,
    /// The window the node's and the pods' pid counts are fitted over.
    pids_window: Duration,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            history: History::default(),
            hysteresis: Hysteresis::default(),
            pids_window: pids::WINDOW,
        }
    }
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine that fits pid counts over `window` (an ETA after half of
    /// it) instead of [`pids::WINDOW`].
    pub fn with_pids_window(window: Duration) -> Self {
        Self {
            pids_window: window,
            ..Self::default()
        }
    }

    /// Pid headroom and ETAs of the node and its pods, from this scan and
    /// the history. `zombies_by_pod`: see [`pids::assess`].
    pub fn assess_pids(
        &self,
        obs: &Observation,
        zombies_by_pod: &std::collections::HashMap<String, u64>,
    ) -> pids::PidsAssessment {
        pids::assess(obs, &self.history, zombies_by_pod, self.pids_window)
    }

    /// What the engine remembers across scans (first sightings and samples).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The hysteresis state, for adopting conditions published earlier.
    pub fn hysteresis_mut(&mut self) -> &mut Hysteresis {
        &mut self.hysteresis
    }

    /// Folds an observation into the history without assessing it (the
    /// first sample of a one-shot scan).
    pub fn prime(&mut self, obs: &Observation, policies: &[SelectedPolicy]) {
        self.history
            .record(obs, retention(policies, self.pids_window));
    }

    /// Records `obs` and assesses it under each policy, each with its own
    /// thresholds and hysteresis. `wall_now` stamps transitions.
    pub fn assess(
        &mut self,
        obs: &Observation,
        policies: &[SelectedPolicy],
        wall_now: Timestamp,
    ) -> Vec<PolicyAssessment> {
        self.history
            .record(obs, retention(policies, self.pids_window));
        let mut live = HashSet::new();
        let out = policies
            .iter()
            .map(|p| {
                let detectors = evaluate(obs, &p.thresholds, &self.history)
                    .into_iter()
                    .map(|verdict| {
                        let for_duration = p
                            .thresholds
                            .for_duration(verdict.detector)
                            .unwrap_or_default();
                        live.insert((p.name.clone(), verdict.detector));
                        let hold = self.hysteresis.update(
                            &p.name,
                            verdict.detector,
                            verdict.exceeded,
                            for_duration,
                            obs.taken_at,
                            wall_now,
                        );
                        DetectorAssessment {
                            verdict,
                            hold,
                            for_duration,
                        }
                    })
                    .collect();
                PolicyAssessment {
                    policy: p.name.clone(),
                    detectors,
                }
            })
            .collect();
        self.hysteresis
            .retain(|p, d| live.contains(&(p.to_owned(), d)));
        out
    }
}
