//! Where a firing detector's problem lives: in one pod, or node-wide. The
//! operator's ladders use it so that a tenant's own processes (its zombies,
//! its D-state threads, its fd leak) lead to pod-level remediation first and
//! never, by default, straight to a cordon, drain or reboot of the node.
//!
//! Decided from the offenders that make the verdict exceed, as listed in the
//! report (the worst first, bounded): Pod when every one of them is in the
//! same pod (by pod UID, from the cgroup path), Node when one is a host
//! process (or could not be attributed) or they are in two or more pods.

use std::collections::BTreeMap;

use nodemedic_crds::report::{CulpritPod, ProblemScope};

use crate::detect::finding::{Offenders, ProcessId, Verdict};
use crate::scan::ProcessDetails;
use crate::scan::enrich::Enrichment;

/// The scope of an exceeding verdict (None while it does not exceed).
pub fn scope_of(v: &Verdict, e: &Enrichment) -> Option<(ProblemScope, Option<CulpritPod>)> {
    if !v.exceeded {
        return None;
    }
    let mut places = Places::default();
    let mut process = |p: &ProcessId| places.add(e.process(p.key()));
    match &v.offenders {
        Offenders::Zombies(parents) => parents
            .iter()
            .filter(|z| z.past_min_age > 0)
            .for_each(|z| process(&z.parent)),
        Offenders::HungTasks { threads, .. } => threads
            .iter()
            .filter(|t| t.exceeds)
            .for_each(|t| process(&t.process)),
        Offenders::FdLeak { processes, node } => {
            processes
                .iter()
                .filter(|f| f.exceeds)
                .for_each(|f| process(&f.process));
            if node.as_ref().is_some_and(|n| n.exceeds) {
                // The node's file table is shared by everything on it.
                places.host = true;
            }
        }
        Offenders::CpuThrottling(cgroups) => cgroups
            .iter()
            .filter(|c| c.exceeds)
            .for_each(|c| places.add(e.cgroup(&c.cgroup))),
    }
    Some(places.scope())
}

#[derive(Default)]
struct Places {
    pods: BTreeMap<String, CulpritPod>,
    host: bool,
}

impl Places {
    fn add(&mut self, details: Option<&ProcessDetails>) {
        let Some((d, uid)) = details.and_then(|d| Some((d, d.attribution.pod_uid.clone()?))) else {
            self.host = true;
            return;
        };
        self.pods.entry(uid.clone()).or_insert_with(|| CulpritPod {
            uid,
            namespace: d.pod_namespace.clone(),
            name: d.pod_name.clone(),
        });
    }

    fn scope(mut self) -> (ProblemScope, Option<CulpritPod>) {
        if self.host || self.pods.len() != 1 {
            return (ProblemScope::Node, None);
        }
        (ProblemScope::Pod, self.pods.pop_first().map(|(_, pod)| pod))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> ProcessDetails {
        let mut d = ProcessDetails::default();
        d.attribution.pod_uid = Some(uid.to_owned());
        d.pod_namespace = Some("shop".to_owned());
        d.pod_name = Some(format!("php-{uid}"));
        d
    }

    #[test]
    fn one_pod_is_pod_scoped_and_named() {
        let mut p = Places::default();
        p.add(Some(&pod("a")));
        p.add(Some(&pod("a")));
        let (scope, culprit) = p.scope();
        assert_eq!(scope, ProblemScope::Pod);
        assert_eq!(
            culprit.map(|c| c.to_string()).as_deref(),
            Some("shop/php-a")
        );
    }

    #[test]
    fn two_pods_a_host_process_or_an_unknown_one_are_node_wide() {
        let mut two = Places::default();
        two.add(Some(&pod("a")));
        two.add(Some(&pod("b")));
        assert_eq!(two.scope(), (ProblemScope::Node, None));

        let mut host = Places::default();
        host.add(Some(&pod("a")));
        host.add(Some(&ProcessDetails::default()));
        assert_eq!(host.scope(), (ProblemScope::Node, None));

        let mut gone = Places::default();
        gone.add(Some(&pod("a")));
        gone.add(None);
        assert_eq!(gone.scope(), (ProblemScope::Node, None));

        assert_eq!(Places::default().scope(), (ProblemScope::Node, None));
    }
}
