//! Accessors shared by the agent's integration tests.
#![allow(dead_code)]

use nodemedic_agent::detect::finding::{
    FdUser, HungThread, Offenders, ThrottledCgroup, Verdict, WaitingThread, ZombieParent,
};
use nodemedic_agent::scan::ProcessDetails;
use nodemedic_agent::scan_command::Scan;
use nodemedic_crds::Detector;
use nodemedic_crds::thresholds::{EffectiveThresholds, SelectedPolicy};

/// A policy named "test" with these thresholds.
pub fn policy(thresholds: EffectiveThresholds) -> SelectedPolicy {
    SelectedPolicy {
        name: "test".to_owned(),
        thresholds,
        protected_processes: Vec::new(),
    }
}

pub fn verdict(scan: &Scan, detector: Detector) -> &Verdict {
    scan.assessment
        .detectors
        .iter()
        .map(|d| &d.verdict)
        .find(|v| v.detector == detector)
        .unwrap_or_else(|| panic!("{detector} assessed"))
}

pub fn zombies(scan: &Scan) -> &[ZombieParent] {
    match &verdict(scan, Detector::Zombies).offenders {
        Offenders::Zombies(z) => z,
        other => panic!("zombie verdict holds {other:?}"),
    }
}

pub fn hung(scan: &Scan) -> &[HungThread] {
    match &verdict(scan, Detector::HungTasks).offenders {
        Offenders::HungTasks { threads, .. } => threads,
        other => panic!("hung verdict holds {other:?}"),
    }
}

/// Threads in D listed as waiting on another task, not hung.
pub fn waits(scan: &Scan) -> &[WaitingThread] {
    match &verdict(scan, Detector::HungTasks).offenders {
        Offenders::HungTasks { waits, .. } => waits,
        other => panic!("hung verdict holds {other:?}"),
    }
}

pub fn fd_users(scan: &Scan) -> &[FdUser] {
    match &verdict(scan, Detector::FdLeak).offenders {
        Offenders::FdLeak { processes, .. } => processes,
        other => panic!("fd verdict holds {other:?}"),
    }
}

pub fn throttled(scan: &Scan) -> &[ThrottledCgroup] {
    match &verdict(scan, Detector::CpuThrottling).offenders {
        Offenders::CpuThrottling(c) => c,
        other => panic!("throttling verdict holds {other:?}"),
    }
}

pub fn details(scan: &Scan, key: (i32, u64)) -> &ProcessDetails {
    scan.enrichment
        .process(key)
        .unwrap_or_else(|| panic!("{key:?} enriched"))
}
