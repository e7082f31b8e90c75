//! Prometheus metrics (OpenMetrics text on `/metrics`). Every family is
//! documented in `docs/operator.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use nodemedic_crds::pause::PauseKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{policy, action, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub policy: String,
    pub action: String,
    pub outcome: String,
}

/// `{policy}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// `{resource, verb}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub resource: String,
    pub verb: String,
}

/// `{kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// `{kind, name}` of a pause: kind `policy` or `node`, the object's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PauseLabels {
    pub kind: String,
    pub name: String,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub actions: Family<ActionLabels, Counter>,
    pub unhealthy_nodes: Family<PolicyLabels, Gauge>,
    pub stale_reports: Family<PolicyLabels, Gauge>,
    pub storm_active: Family<PolicyLabels, Gauge>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub is_leader: Gauge,
    pub api_writes: Family<WriteLabels, Counter>,
    pub undecodable: Family<KindLabels, Gauge>,
    pub drain_passes_running: Gauge,
    pub pauses: Family<KindLabels, Gauge>,
    pub pause_started: Family<PauseLabels, Gauge>,
    /// The pauses behind the two families above: (kind, name) → start.
    paused: Mutex<BTreeMap<(PauseKind, String), i64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "nodemedic_operator_actions",
            "Remediation actions decided, by policy, action and outcome (Planned, Executed, Failed, Skipped)",
            actions.clone(),
        );
        let unhealthy_nodes = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_unhealthy_nodes",
            "Selected nodes with a fresh report in which a detector of the policy fires",
            unhealthy_nodes.clone(),
        );
        let stale_reports = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_stale_reports",
            "Selected nodes whose report is older than three heartbeats",
            stale_reports.clone(),
        );
        let storm_active = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_storm_active",
            "1 while more selected nodes than safety.maxUnhealthy are unhealthy or unknown",
            storm_active.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "nodemedic_operator_reconcile_duration_seconds",
            "Duration of one policy reconcile (plan, act, write)",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "nodemedic_operator_reconcile_errors",
            "Failed reconciles by error reason",
            reconcile_errors.clone(),
        );
        // Every reason from 0: a rate of 0 is "no errors", where a missing
        // series would be "no data" (and an alert on it could not fire on
        // the first error, which would be its first sample).
        for reason in crate::error::Error::REASONS {
            reconcile_errors
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc_by(0);
        }
        let is_leader = Gauge::default();
        registry.register(
            "nodemedic_operator_is_leader",
            "1 while this process holds the lease and may act",
            is_leader.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "nodemedic_operator_api_writes",
            "Write requests sent to the API server, by resource and verb",
            api_writes.clone(),
        );
        let undecodable = Family::<KindLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_undecodable_objects",
            "Watched objects left out of the caches because they do not decode, by kind",
            undecodable.clone(),
        );
        let drain_passes_running = Gauge::default();
        registry.register(
            "nodemedic_operator_drain_passes_running",
            "Drain passes running in the background now (at most one per draining node)",
            drain_passes_running.clone(),
        );
        let pauses = Family::<KindLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_pauses",
            "Pauses in effect, by kind: policy (the annotation on a NodeHealthPolicy) or node (on a Node)",
            pauses.clone(),
        );
        let pause_started = Family::<PauseLabels, Gauge>::default();
        registry.register(
            "nodemedic_operator_pause_start_timestamp_seconds",
            "When each pause in effect began (unix seconds), by kind and policy or node name",
            pause_started.clone(),
        );
        for kind in [PauseKind::Policy, PauseKind::Node] {
            pauses
                .get_or_create(&KindLabels {
                    kind: kind.as_str().to_owned(),
                })
                .set(0);
        }
        Self {
            registry,
            pauses,
            pause_started,
            paused: Mutex::default(),
            undecodable,
            drain_passes_running,
            actions,
            unhealthy_nodes,
            stale_reports,
            storm_active,
            reconcile_duration,
            reconcile_errors,
            is_leader,
            api_writes,
        }
    }

    /// Sets how many objects of `kind` do not decode.
    pub fn undecodable(&self, kind: &str, count: usize) {
        self.undecodable
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts one write request.
    pub fn write(&self, resource: &str, verb: &str) {
        self.api_writes
            .get_or_create(&WriteLabels {
                resource: resource.to_owned(),
                verb: verb.to_owned(),
            })
            .inc();
    }

    /// Sets the per-policy gauges.
    pub fn policy_gauges(&self, policy: &str, unhealthy: u32, stale: usize, storm: bool) {
        let l = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.unhealthy_nodes
            .get_or_create(&l)
            .set(i64::from(unhealthy));
        self.stale_reports
            .get_or_create(&l)
            .set(i64::try_from(stale).unwrap_or(i64::MAX));
        self.storm_active.get_or_create(&l).set(i64::from(storm));
    }

    /// Drops the per-policy gauges of a deleted policy.
    pub fn forget_policy(&self, policy: &str) {
        let l = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.unhealthy_nodes.remove(&l);
        self.stale_reports.remove(&l);
        self.storm_active.remove(&l);
    }

    /// Records that `name` (a policy or a node) is paused since `since`,
    /// or (None) is not paused.
    pub fn set_pause(&self, kind: PauseKind, name: &str, since: Option<i64>) {
        let Ok(mut paused) = self.paused.lock() else {
            return;
        };
        let key = (kind, name.to_owned());
        let labels = PauseLabels {
            kind: kind.as_str().to_owned(),
            name: name.to_owned(),
        };
        match since {
            Some(t) => {
                paused.insert(key, t);
                self.pause_started.get_or_create(&labels).set(t);
            }
            None => {
                if paused.remove(&key).is_some() {
                    self.pause_started.remove(&labels);
                }
            }
        }
        self.count_pauses(&paused);
    }

    /// Forgets the pauses of `kind` on objects not in `names` (after a
    /// relist: objects deleted while the watch was away).
    pub fn retain_pauses(&self, kind: PauseKind, names: &BTreeSet<String>) {
        let Ok(mut paused) = self.paused.lock() else {
            return;
        };
        let gone: Vec<String> = paused
            .keys()
            .filter(|(k, n)| *k == kind && !names.contains(n))
            .map(|(_, n)| n.clone())
            .collect();
        for name in gone {
            paused.remove(&(kind, name.clone()));
            self.pause_started.remove(&PauseLabels {
                kind: kind.as_str().to_owned(),
                name,
            });
        }
        self.count_pauses(&paused);
    }

    fn count_pauses(&self, paused: &BTreeMap<(PauseKind, String), i64>) {
        for kind in [PauseKind::Policy, PauseKind::Node] {
            let n = paused.keys().filter(|(k, _)| *k == kind).count();
            self.pauses
                .get_or_create(&KindLabels {
                    kind: kind.as_str().to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_reason_is_exposed_at_zero_before_the_first_error() {
        let text = Metrics::new().encode();
        for reason in crate::error::Error::REASONS {
            let line =
                format!("nodemedic_operator_reconcile_errors_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn every_documented_family_is_exposed() {
        let m = Metrics::new();
        m.actions
            .get_or_create(&ActionLabels {
                policy: "p".into(),
                action: "Cordon".into(),
                outcome: "Executed".into(),
            })
            .inc();
        m.policy_gauges("p", 3, 1, true);
        m.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: "Conflict".into(),
            })
            .inc();
        m.reconcile_duration.observe(0.01);
        m.is_leader.set(1);
        m.set_pause(PauseKind::Policy, "p", Some(1_750_000_000));
        m.set_pause(PauseKind::Node, "n1", Some(1_750_000_100));
        let text = m.encode();
        for needle in [
            "nodemedic_operator_actions_total{policy=\"p\",action=\"Cordon\",outcome=\"Executed\"} 1",
            "nodemedic_operator_unhealthy_nodes{policy=\"p\"} 3",
            "nodemedic_operator_stale_reports{policy=\"p\"} 1",
            "nodemedic_operator_storm_active{policy=\"p\"} 1",
            "nodemedic_operator_reconcile_duration_seconds_bucket",
            "nodemedic_operator_reconcile_errors_total{reason=\"Conflict\"} 1",
            "nodemedic_operator_is_leader 1",
            "nodemedic_operator_pauses{kind=\"policy\"} 1",
            "nodemedic_operator_pauses{kind=\"node\"} 1",
            "nodemedic_operator_pause_start_timestamp_seconds{kind=\"policy\",name=\"p\"} 1750000000",
            "nodemedic_operator_pause_start_timestamp_seconds{kind=\"node\",name=\"n1\"} 1750000100",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn pauses_are_counted_by_kind_and_forgotten_on_resume() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(
            text.contains("nodemedic_operator_pauses{kind=\"policy\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("nodemedic_operator_pauses{kind=\"node\"} 0"),
            "{text}"
        );
        m.set_pause(PauseKind::Node, "a", Some(10));
        m.set_pause(PauseKind::Node, "b", Some(20));
        m.set_pause(PauseKind::Node, "a", Some(15));
        assert!(
            m.encode()
                .contains("nodemedic_operator_pauses{kind=\"node\"} 2")
        );
        m.set_pause(PauseKind::Node, "a", None);
        let text = m.encode();
        assert!(
            text.contains("nodemedic_operator_pauses{kind=\"node\"} 1"),
            "{text}"
        );
        assert!(!text.contains("name=\"a\""), "{text}");
        m.retain_pauses(PauseKind::Node, &BTreeSet::new());
        let text = m.encode();
        assert!(
            text.contains("nodemedic_operator_pauses{kind=\"node\"} 0"),
            "{text}"
        );
        assert!(!text.contains("name=\"b\""), "{text}");
    }
}
