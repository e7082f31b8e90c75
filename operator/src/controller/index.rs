//! What the watch caches keep, which changes are worth a reconcile, and the
//! operator's view of its own most recent writes.
//!
//! * Trimming: the caches hold only what the planner reads (no managed
//!   fields, no Node images or addresses, findings cut to the offenders),
//!   which keeps the operator's memory flat at thousands of nodes.
//! * Fingerprints: an agent heartbeat (a new `lastScanTime` and little else)
//!   must not replan every policy; a condition of one policy flipping must
//!   replan that policy only.
//! * Overlay: after a write the operator uses the object the API server
//!   returned until its watch cache catches up, so that the next reconcile
//!   never plans from data older than its own last write.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use nodemedic_crds::conditions::{ConditionStatus, Detector, policy_condition};
use nodemedic_crds::pause::{
    PAUSE_ANNOTATIONS, PAUSED_ANNOTATION, PauseKind, pause_from_annotations_at,
};
use nodemedic_crds::remediation::{CORDONED_BY_ANNOTATION, TAINTED_BY_ANNOTATION};
use nodemedic_crds::report::Findings;
use nodemedic_crds::{NodeHealthPolicy, NodeHealthReport};

use crate::plan::facts::{self, Freshness};

/// Findings kept per detector in the cache.
const KEEP_FINDINGS: usize = 5;

/// Drops what the planner never reads from a report.
pub fn trim_report(r: &mut NodeHealthReport) {
    r.metadata.managed_fields = None;
    r.metadata.annotations = None;
    if let Some(s) = r.status.as_mut() {
        s.summary = Default::default();
        s.scan_errors = Default::default();
        s.problems.clear();
        let f = std::mem::take(&mut s.findings);
        s.findings = Findings {
            zombies: f
                .zombies
                .into_iter()
                .filter(|z| z.exceeded || z.zombies_past_min_age > 0)
                .take(KEEP_FINDINGS)
                .collect(),
            hung_tasks: f
                .hung_tasks
                .into_iter()
                .filter(|h| h.exceeded)
                .take(KEEP_FINDINGS)
                .collect(),
            fd_leak: f
                .fd_leak
                .into_iter()
                .filter(|x| x.exceeded)
                .take(KEEP_FINDINGS)
                .collect(),
            cpu_throttling: f
                .cpu_throttling
                .into_iter()
                .filter(|c| c.exceeded)
                .take(KEEP_FINDINGS)
                .collect(),
            node_file_handles: None,
            omitted: Default::default(),
        };
    }
}

/// Drops what the planner never reads from a Node: keeps labels, nodemedic's
/// annotations, `unschedulable`, taints and nodemedic's conditions.
pub fn trim_node(n: &mut Node) {
    n.metadata.managed_fields = None;
    if let Some(a) = n.metadata.annotations.as_mut() {
        a.retain(|k, _| {
            k == CORDONED_BY_ANNOTATION
                || k == TAINTED_BY_ANNOTATION
                || PAUSE_ANNOTATIONS.contains(&k.as_str())
        });
    }
    let spec = n.spec.take().unwrap_or_default();
    n.spec = Some(NodeSpec {
        unschedulable: spec.unschedulable,
        taints: spec.taints,
        ..Default::default()
    });
    let conditions = n
        .status
        .take()
        .and_then(|s| s.conditions)
        .map(|cs| {
            cs.into_iter()
                .filter(|c| {
                    Detector::ALL
                        .iter()
                        .any(|d| d.node_condition_type() == c.type_)
                })
                .collect::<Vec<_>>()
        })
        .filter(|cs| !cs.is_empty());
    n.status = conditions.map(|c| NodeStatus {
        conditions: Some(c),
        ..Default::default()
    });
}

/// Drops managed fields from a ledger.
pub fn trim_ledger(l: &mut nodemedic_crds::NodeRemediation) {
    l.metadata.managed_fields = None;
    l.metadata.annotations = None;
}

/// Drops managed fields from a policy, and every annotation but the pause.
pub fn trim_policy(p: &mut NodeHealthPolicy) {
    p.metadata.managed_fields = None;
    if let Some(a) = p.metadata.annotations.as_mut() {
        a.retain(|k, _| PAUSE_ANNOTATIONS.contains(&k.as_str()));
    }
    if p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.is_empty())
    {
        p.metadata.annotations = None;
    }
}

fn hash_of(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A report's plan-relevant content: a part every policy on the node
/// depends on (freshness, action results, the offenders), and one part per
/// policy (its conditions' status and transition times).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReportPrint {
    pub global: u64,
    pub per_policy: BTreeMap<String, u64>,
    /// When the report turns stale (None: stale already). Kept apart from
    /// `global`: a report goes stale with no event at all, so whether it
    /// was is judged when the next one comes, on the clock of then.
    pub stale_at: Option<Timestamp>,
}

impl ReportPrint {
    fn stale(&self, now: Timestamp) -> bool {
        self.stale_at.is_none_or(|at| now >= at)
    }
}

/// The fingerprint of a report at `now`.
pub fn report_print(
    r: &NodeHealthReport,
    observed: Option<Timestamp>,
    now: Timestamp,
) -> ReportPrint {
    let Some(s) = r.status.as_ref() else {
        return ReportPrint::default();
    };
    let stale_at = match facts::freshness(Some(s), observed, now) {
        Freshness::Fresh { stale_at } => Some(stale_at),
        Freshness::Stale => None,
    };
    let results: Vec<(&str, String)> = s
        .action_results
        .iter()
        .map(|a| (a.id.as_str(), format!("{:?}", a.outcome)))
        .collect();
    let f = &s.findings;
    let offenders: Vec<String> = f
        .zombies
        .iter()
        .map(|z| {
            format!(
                "{}/{}/{:?}",
                z.parent.host_pid, z.parent.start_time, z.exceeded_under
            )
        })
        .chain(
            f.hung_tasks
                .iter()
                .map(|h| format!("{:?}", h.process.workload)),
        )
        .chain(
            f.fd_leak
                .iter()
                .map(|x| format!("{:?}", x.process.workload)),
        )
        .chain(f.cpu_throttling.iter().map(|c| format!("{:?}", c.workload)))
        .collect();
    let global = hash_of((&s.heartbeat_interval, results, offenders));
    let mut per_policy: BTreeMap<String, Vec<(String, String, i64)>> = BTreeMap::new();
    for c in &s.conditions {
        per_policy.entry(c.policy.clone()).or_default().push((
            format!("{:?}", c.type_),
            c.status.as_str().to_owned(),
            c.last_transition_time.0.as_second(),
        ));
    }
    ReportPrint {
        global,
        per_policy: per_policy
            .into_iter()
            .map(|(p, v)| (p, hash_of(v)))
            .collect(),
        stale_at,
    }
}

/// A Node's plan-relevant content (after trimming).
pub fn node_print(n: &Node) -> (u64, u64) {
    let labels = hash_of(&n.metadata.labels);
    let spec = n.spec.as_ref();
    let taints: Vec<(String, String, Option<String>)> = spec
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| (t.key.clone(), t.effect.clone(), t.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let conditions: Vec<(String, String)> = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect()
        })
        .unwrap_or_default();
    let rest = hash_of((
        spec.and_then(|s| s.unschedulable),
        taints,
        &n.metadata.annotations,
        conditions,
    ));
    (labels, rest)
}

/// A policy's plan-relevant content: its generation and pause (its own
/// plan), and for the others its storm and whether it is paused (a paused
/// owner of a cordon holds it).
pub fn policy_print(p: &NodeHealthPolicy) -> PolicyPrint {
    let pause: Vec<(&String, &String)> = p
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| PAUSE_ANNOTATIONS.contains(&k.as_str()))
        .collect();
    PolicyPrint {
        generation: p.metadata.generation,
        pause: hash_of(pause),
        storm: storm_active(p),
        paused: p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(PAUSED_ANNOTATION)),
    }
}

/// See [`policy_print`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyPrint {
    generation: Option<i64>,
    pause: u64,
    storm: bool,
    paused: bool,
}

/// Whether a policy's status says StormActive=True.
pub fn storm_active(p: &NodeHealthPolicy) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == policy_condition::STORM_ACTIVE && c.status == "True")
    })
}

/// Which policies an event concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affected {
    Nothing,
    /// Every policy selecting the node (or mentioned in its state).
    Node(String),
    /// These policies.
    Policies(BTreeSet<String>),
    /// Every policy.
    All,
}

/// Fingerprints of everything seen.
#[derive(Debug, Default)]
pub struct Index {
    reports: HashMap<String, ReportPrint>,
    /// Per report: its `lastScanTime` and when this process first saw it.
    scans: HashMap<String, (Option<Time>, Timestamp)>,
    /// Per report and policy whose conditions are all not True: the
    /// latest transition time the agent gives and when this process first
    /// saw that state.
    clears: HashMap<String, BTreeMap<String, (Time, Timestamp)>>,
    nodes: HashMap<String, (u64, u64)>,
    policies: HashMap<String, PolicyPrint>,
    /// Pauses in effect, and when this process first saw each.
    pauses: HashMap<(PauseKind, String), Timestamp>,
}

impl Index {
    /// A report was applied or deleted.
    pub fn report(&mut self, r: &NodeHealthReport, deleted: bool, now: Timestamp) -> Affected {
        let name = r.metadata.name.clone().unwrap_or_default();
        if deleted {
            self.reports.remove(&name);
            self.scans.remove(&name);
            self.clears.remove(&name);
            return Affected::Node(name);
        }
        self.observe_clears(&name, r, now);
        let scan = r.status.as_ref().and_then(|s| s.last_scan_time.clone());
        let observed = match self.scans.get(&name) {
            Some((seen, at)) if *seen == scan => *at,
            _ => {
                self.scans.insert(name.clone(), (scan, now));
                now
            }
        };
        let print = report_print(r, Some(observed), now);
        let Some(old) = self.reports.insert(name.clone(), print.clone()) else {
            return Affected::Node(name);
        };
        // Staleness as the last reconcile may have seen it — at the time of
        // the previous event, or since on the clock — against now.
        let stale = print.stale(now);
        if old.global != print.global || old.stale(now) != stale || old.stale_at.is_none() != stale
        {
            return Affected::Node(name);
        }
        let changed: BTreeSet<String> = old
            .per_policy
            .keys()
            .chain(print.per_policy.keys())
            .filter(|p| old.per_policy.get(*p) != print.per_policy.get(*p))
            .cloned()
            .collect();
        if changed.is_empty() {
            Affected::Nothing
        } else {
            Affected::Policies(changed)
        }
    }

    fn observe_clears(&mut self, name: &str, r: &NodeHealthReport, now: Timestamp) {
        let mut latest: BTreeMap<String, Option<Time>> = BTreeMap::new();
        for c in r.status.iter().flat_map(|s| s.conditions.iter()) {
            let entry = latest
                .entry(c.policy.clone())
                .or_insert_with(|| Some(c.last_transition_time.clone()));
            if c.status == ConditionStatus::True {
                *entry = None;
            } else if let Some(t) = entry
                && c.last_transition_time.0 > t.0
            {
                *t = c.last_transition_time.clone();
            }
        }
        let previous = self.clears.remove(name).unwrap_or_default();
        let clears: BTreeMap<String, (Time, Timestamp)> = latest
            .into_iter()
            .filter_map(|(policy, t)| {
                let t = t?;
                let observed = match previous.get(&policy) {
                    Some((seen, at)) if *seen == t => *at,
                    _ => now,
                };
                Some((policy, (t, observed)))
            })
            .collect();
        if !clears.is_empty() {
            self.clears.insert(name.to_owned(), clears);
        }
    }

    /// Per policy whose conditions on the report are all not True: when
    /// this process first saw them so (its own clock).
    pub fn observed_clears(&self, report: &str) -> Vec<(String, Timestamp)> {
        self.clears
            .get(report)
            .map(|m| m.iter().map(|(p, (_, at))| (p.clone(), *at)).collect())
            .unwrap_or_default()
    }

    /// When this process first saw the current `lastScanTime` of a report.
    pub fn observed_scan(&self, report: &str) -> Option<Timestamp> {
        self.scans.get(report).map(|(_, at)| *at)
    }

    /// When the pause of a policy or node began, for the metrics (None:
    /// not paused): the `paused-at` annotation; else, for a policy, the
    /// start its status recorded; else when this process first saw it.
    pub fn pause_start(
        &mut self,
        kind: PauseKind,
        name: &str,
        annotations: Option<&BTreeMap<String, String>>,
        recorded: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let key = (kind, name.to_owned());
        let Some(pause) = annotations.and_then(|a| pause_from_annotations_at(a, now)) else {
            self.pauses.remove(&key);
            return None;
        };
        let first_seen = *self.pauses.entry(key).or_insert(now);
        Some(pause.since.or(recorded).unwrap_or(first_seen))
    }

    /// A Node was applied or deleted.
    pub fn node(&mut self, n: &Node, deleted: bool) -> Affected {
        let name = n.metadata.name.clone().unwrap_or_default();
        if deleted {
            self.nodes.remove(&name);
            return Affected::All;
        }
        let print = node_print(n);
        match self.nodes.insert(name.clone(), print) {
            None => Affected::All,
            Some(old) if old.0 != print.0 => Affected::All,
            Some(old) if old.1 != print.1 => Affected::Node(name),
            Some(_) => Affected::Nothing,
        }
    }

    /// A policy was applied or deleted.
    pub fn policy(&mut self, p: &NodeHealthPolicy, deleted: bool) -> Affected {
        let name = p.metadata.name.clone().unwrap_or_default();
        if deleted {
            self.policies.remove(&name);
            return Affected::All;
        }
        let print = policy_print(p);
        match self.policies.insert(name.clone(), print) {
            None => Affected::All,
            Some(old) if old.storm != print.storm || old.paused != print.paused => Affected::All,
            Some(old) if old.generation != print.generation || old.pause != print.pause => {
                Affected::Policies([name].into())
            }
            Some(_) => Affected::Nothing,
        }
    }
}

/// The operator's own most recent writes, until the caches have them.
///
/// resourceVersions are opaque (the API conventions allow only equality), so
/// the overlay does not ask which version is newer: it remembers the
/// version the write was based on. While the cache still shows that base,
/// the written object is the newer one; once the cache shows the written
/// version, or anything else (it has moved past the write), the cache wins.
#[derive(Debug)]
pub struct Overlay<K> {
    objects: Mutex<HashMap<String, Written<K>>>,
}

#[derive(Debug)]
struct Written<K> {
    /// resourceVersions the cache may still show while this write is the
    /// newest: the one the write was based on and, when that was itself an
    /// earlier write the cache had not caught up with, that write's bases.
    bases: Vec<String>,
    object: Arc<K>,
}

/// Bound on chained writes remembered per object.
const MAX_BASES: usize = 16;

impl<K> Default for Overlay<K> {
    fn default() -> Self {
        Self {
            objects: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Resource> Overlay<K> {
    /// Remembers what a write returned, and the resourceVersion of the
    /// object it was based on.
    pub fn put(&self, obj: K, base: Option<String>) {
        let name = obj.meta().name.clone().unwrap_or_default();
        if let Ok(mut m) = self.objects.lock() {
            let mut bases: Vec<String> = base.iter().cloned().collect();
            if let Some(prev) = m.get(&name)
                && base.is_some()
                && prev.object.meta().resource_version == base
            {
                bases.extend(prev.bases.iter().cloned());
                bases.truncate(MAX_BASES);
            }
            m.insert(
                name,
                Written {
                    bases,
                    object: Arc::new(obj),
                },
            );
        }
    }

    /// The written object while the cache has not moved since the write was
    /// based on it; otherwise the cached one (and the written one is
    /// forgotten).
    pub fn resolve(&self, name: &str, cached: Option<Arc<K>>) -> Option<Arc<K>> {
        let Ok(mut m) = self.objects.lock() else {
            return cached;
        };
        let Some(w) = m.get(name) else {
            return cached;
        };
        let cached_rv = cached
            .as_ref()
            .and_then(|c| c.meta().resource_version.clone());
        let behind = cached.is_none() || cached_rv.is_some_and(|rv| w.bases.contains(&rv));
        if behind {
            return Some(w.object.clone());
        }
        m.remove(name);
        cached
    }

    /// Forgets the written object (it was deleted, or a write based on it
    /// was refused): the cache is the truth again.
    pub fn forget(&self, name: &str) {
        if let Ok(mut m) = self.objects.lock() {
            m.remove(name);
        }
    }

    /// Number of objects held (for tests and debugging).
    pub fn len(&self) -> usize {
        self.objects.lock().map_or(0, |m| m.len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use nodemedic_crds::conditions::{ConditionReason, ConditionStatus};
    use nodemedic_crds::report::PolicyCondition;
    use nodemedic_crds::{NodeHealthReportSpec, NodeHealthReportStatus};

    fn report(scan: i64, conds: &[(&str, bool)]) -> NodeHealthReport {
        let mut r = NodeHealthReport::new("n", NodeHealthReportSpec::default());
        r.status = Some(NodeHealthReportStatus {
            last_scan_time: Some(Time(Timestamp::from_second(scan).unwrap())),
            heartbeat_interval: Some("5m".into()),
            conditions: conds
                .iter()
                .map(|(p, on)| PolicyCondition {
                    policy: (*p).into(),
                    type_: Detector::Zombies.condition_type(),
                    status: ConditionStatus::from_bool(*on),
                    reason: ConditionReason::of(*on, *on),
                    message: format!("{scan} zombies"),
                    last_transition_time: Time(Timestamp::from_second(1000).unwrap()),
                    exceeded_since: None,
                    scope: None,
                    culprit: None,
                })
                .collect(),
            ..Default::default()
        });
        r
    }

    #[test]
    fn heartbeats_do_not_trigger_but_a_flip_triggers_only_its_policy() {
        let now = Timestamp::from_second(2000).unwrap();
        let mut ix = Index::default();
        assert_eq!(
            ix.report(&report(1990, &[("a", false), ("b", false)]), false, now),
            Affected::Node("n".into())
        );
        assert_eq!(
            ix.report(&report(1995, &[("a", false), ("b", false)]), false, now),
            Affected::Nothing
        );
        assert_eq!(
            ix.report(&report(1996, &[("a", true), ("b", false)]), false, now),
            Affected::Policies(["a".to_owned()].into())
        );
        // A stale report coming back is news for every policy on the node.
        // (Three 5m heartbeats after the operator first saw that scan.)
        let later = Timestamp::from_second(2000 + 901).unwrap();
        assert_eq!(
            ix.report(&report(1996, &[("a", true), ("b", false)]), false, later),
            Affected::Node("n".into())
        );
    }

    #[test]
    fn a_report_that_went_stale_without_an_event_is_news_when_it_comes_back() {
        // The API server was away for 20 minutes: no event, while the
        // reconciles in between judged the report stale on the clock. Its
        // next scan must ask for a reconcile, although what it says is what
        // it said before.
        let mut ix = Index::default();
        ix.report(
            &report(1990, &[("a", true)]),
            false,
            Timestamp::from_second(2000).unwrap(),
        );
        let back = Timestamp::from_second(3200).unwrap();
        assert_eq!(
            ix.report(&report(3195, &[("a", true)]), false, back),
            Affected::Node("n".into())
        );
        assert_eq!(
            ix.report(&report(3199, &[("a", true)]), false, back),
            Affected::Nothing,
            "fresh to fresh: a heartbeat"
        );
    }

    #[test]
    fn the_overlay_wins_until_the_cache_catches_up() {
        let overlay: Overlay<NodeHealthReport> = Overlay::default();
        let mut old = report(1, &[]);
        old.metadata.resource_version = Some("10".into());
        let mut new = report(2, &[]);
        new.metadata.resource_version = Some("12".into());
        overlay.put(new.clone(), Some("10".into()));
        let got = overlay.resolve("n", Some(Arc::new(old))).unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("12"));
        let mut caught = report(3, &[]);
        caught.metadata.resource_version = Some("13".into());
        let got = overlay.resolve("n", Some(Arc::new(caught))).unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("13"));
        assert!(overlay.is_empty());
    }

    #[test]
    fn resource_versions_are_compared_for_equality_only() {
        // Opaque versions: neither numbers nor ordered strings.
        let at = |rv: &str| {
            let mut r = report(1, &[]);
            r.metadata.resource_version = Some(rv.into());
            Arc::new(r)
        };
        let overlay: Overlay<NodeHealthReport> = Overlay::default();
        overlay.put((*at("zz-written")).clone(), Some("q9-base".into()));
        let got = overlay.resolve("n", Some(at("q9-base"))).unwrap();
        assert_eq!(
            got.metadata.resource_version.as_deref(),
            Some("zz-written"),
            "the cache still shows the write's base"
        );
        let got = overlay.resolve("n", Some(at("a0-later"))).unwrap();
        assert_eq!(
            got.metadata.resource_version.as_deref(),
            Some("a0-later"),
            "the cache moved past the write"
        );
        assert!(overlay.is_empty());

        // Two writes in a row before the cache saw the first.
        overlay.put((*at("w1")).clone(), Some("b0".into()));
        overlay.put((*at("w2")).clone(), Some("w1".into()));
        let got = overlay.resolve("n", Some(at("b0"))).unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("w2"));
        let got = overlay.resolve("n", Some(at("w1"))).unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("w2"));
        let got = overlay.resolve("n", Some(at("w2"))).unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("w2"));
        assert!(overlay.is_empty());
    }

    #[test]
    fn trimmed_nodes_keep_what_the_planner_reads() {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n", "labels": {"a": "b"}, "annotations": {"nodemedic.io/cordoned-by": "p", "other": "x"}},
            "spec": {"unschedulable": true, "podCIDR": "198.18.4.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "NodemedicZombies", "status": "True"}],
                       "images": [{"names": ["x"]}]}
        }))
        .unwrap();
        trim_node(&mut n);
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(
            v["metadata"]["annotations"],
            serde_json::json!({"nodemedic.io/cordoned-by": "p"})
        );
        assert_eq!(
            v["spec"],
            serde_json::json!({"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]})
        );
        assert_eq!(
            v["status"],
            serde_json::json!({"conditions": [{"type": "NodemedicZombies", "status": "True"}]})
        );
    }

    #[test]
    fn a_clear_is_timed_from_when_this_process_first_saw_it() {
        let mut i = Index::default();
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        i.report(&report(1, &[("p", false), ("q", true)]), false, at(5000));
        assert_eq!(i.observed_clears("n"), vec![("p".to_owned(), at(5000))]);
        // The same clear seen again keeps its first sight.
        i.report(&report(2, &[("p", false), ("q", true)]), false, at(5100));
        assert_eq!(i.observed_clears("n"), vec![("p".to_owned(), at(5000))]);
        // Firing again forgets it; clear again is a new first sight.
        i.report(&report(3, &[("p", true)]), false, at(5200));
        assert!(i.observed_clears("n").is_empty());
        let mut cleared = report(4, &[("p", false)]);
        if let Some(s) = cleared.status.as_mut() {
            s.conditions[0].last_transition_time = Time(at(1300));
        }
        i.report(&cleared, false, at(5300));
        assert_eq!(i.observed_clears("n"), vec![("p".to_owned(), at(5300))]);
        i.report(&cleared, true, at(5400));
        assert!(i.observed_clears("n").is_empty());
    }
}
