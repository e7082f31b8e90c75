//! When an agent may take over a node Lease that another agent let lapse.
//!
//! A holder renews its node Lease only when it is about to act (write the
//! report, execute a request), so an idle holder's Lease lapses: a lapsed
//! Lease says nothing about whether its holder is alive. Taking over every
//! lapsed Lease would make two live agents on one node trade it back and
//! forth. So an agent takes over a Lease another agent let lapse only when
//! the node visibly lacks an actor, judged from the report the holder keeps:
//!
//! - a request in `spec.actionRequests` has had no result in
//!   `status.actionResults` for `grace` (a live holder marks it InProgress
//!   within a round trip);
//! - the report has not been written for its heartbeat plus `grace` (a live
//!   holder writes at least every heartbeat);
//! - a condition this agent sees firing has not been firing in the report
//!   for `grace` (a live holder writes a change at its next scan).
//!
//! This decides only *when* a takeover is worth it, never whether it is
//! safe: a lapsed Lease's holder stopped acting before it lapsed, so a
//! takeover is safe whatever this says (`node_lease`'s model takes over at
//! random). Time is this agent's monotonic clock throughout.

use nodemedic_crds::NodeHealthReport;
use nodemedic_crds::conditions::ConditionStatus;
use nodemedic_crds::{NodeHealthReportStatus, duration};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

/// Why the node lacks an actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Neglect {
    /// A request has had no result for `waited`.
    UnansweredRequest { id: String, waited: Duration },
    /// The report has not been written for `quiet`.
    Silent { quiet: Duration },
    /// This agent has seen `condition` firing for `waited`; the report has
    /// not shown it firing.
    Unpublished { condition: String, waited: Duration },
}

impl fmt::Display for Neglect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| d.as_secs();
        match self {
            Self::UnansweredRequest { id, waited } => write!(
                f,
                "action request {id} has had no result for {}s",
                secs(waited)
            ),
            Self::Silent { quiet } => {
                write!(f, "the report has not been written for {}s", secs(quiet))
            }
            Self::Unpublished { condition, waited } => write!(
                f,
                "{condition} has fired here for {}s and not in the report",
                secs(waited)
            ),
        }
    }
}

/// What one look at the report (and this agent's own view) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Look {
    /// The report's resourceVersion (None: there is no report).
    pub version: Option<String>,
    /// Requests without a result in the report.
    pub unanswered: BTreeSet<String>,
    /// Conditions (`policy/Type`) this agent sees firing that the report
    /// does not show firing.
    pub unpublished: BTreeSet<String>,
    /// The heartbeat the report states, if it states one that parses.
    pub heartbeat: Option<Duration>,
}

impl Look {
    /// Reads the report as watched and this agent's latest status.
    pub fn of(report: Option<&NodeHealthReport>, own: Option<&NodeHealthReportStatus>) -> Self {
        let status = report.and_then(|r| r.status.as_ref());
        let answered: BTreeSet<&str> = status
            .map(|s| s.action_results.iter().map(|r| r.id.as_str()).collect())
            .unwrap_or_default();
        let unanswered = report
            .map(|r| {
                r.spec
                    .action_requests
                    .iter()
                    .filter(|q| !answered.contains(q.id.as_str()))
                    .map(|q| q.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let published = status.map(firing).unwrap_or_default();
        let unpublished = own
            .map(firing)
            .unwrap_or_default()
            .difference(&published)
            .cloned()
            .collect();
        Self {
            version: report.and_then(|r| r.metadata.resource_version.clone()),
            unanswered,
            unpublished,
            heartbeat: status
                .and_then(|s| s.heartbeat_interval.as_deref())
                .and_then(|h| duration::parse_duration(h).ok()),
        }
    }
}

/// The conditions firing in a status, as `policy/Type`.
fn firing(s: &NodeHealthReportStatus) -> BTreeSet<String> {
    s.conditions
        .iter()
        .filter(|c| c.status == ConditionStatus::True)
        .map(|c| format!("{}/{:?}", c.policy, c.type_))
        .collect()
}

/// Tracks, across looks, how long each sign of neglect has lasted.
#[derive(Debug, Clone)]
pub struct Vigil {
    version: Option<String>,
    /// When the report was last seen to change (or this agent started).
    changed_at: Instant,
    heartbeat: Option<Duration>,
    unanswered_since: HashMap<String, Instant>,
    unpublished_since: HashMap<String, Instant>,
}

impl Vigil {
    pub fn new(now: Instant) -> Self {
        Self {
            version: None,
            changed_at: now,
            heartbeat: None,
            unanswered_since: HashMap::new(),
            unpublished_since: HashMap::new(),
        }
    }

    /// Records a look taken at `now`.
    pub fn observe(&mut self, look: Look, now: Instant) {
        if look.version != self.version {
            self.version = look.version;
            self.changed_at = now;
        }
        self.heartbeat = look.heartbeat;
        track(&mut self.unanswered_since, look.unanswered, now);
        track(&mut self.unpublished_since, look.unpublished, now);
    }

    /// Whether the node lacks an actor at `now`: the first sign that has
    /// lasted `grace` (a silent report: its heartbeat, else `heartbeat`,
    /// plus `grace`).
    pub fn neglected(&self, now: Instant, grace: Duration, heartbeat: Duration) -> Option<Neglect> {
        let since = |t: &Instant| now.saturating_duration_since(*t);
        if let Some((id, t)) = oldest(&self.unanswered_since)
            && since(t) >= grace
        {
            return Some(Neglect::UnansweredRequest {
                id: id.clone(),
                waited: since(t),
            });
        }
        let quiet = since(&self.changed_at);
        if quiet >= self.heartbeat.unwrap_or(heartbeat).saturating_add(grace) {
            return Some(Neglect::Silent { quiet });
        }
        if let Some((c, t)) = oldest(&self.unpublished_since)
            && since(t) >= grace
        {
            return Some(Neglect::Unpublished {
                condition: c.clone(),
                waited: since(t),
            });
        }
        None
    }
}

/// Keeps the first sighting of each sign still present, from `now` for new
/// ones, and forgets those gone.
fn track(since: &mut HashMap<String, Instant>, present: BTreeSet<String>, now: Instant) {
    since.retain(|k, _| present.contains(k));
    for k in present {
        since.entry(k).or_insert(now);
    }
}

/// The sign seen longest (ties by name, so the choice is stable).
fn oldest(since: &HashMap<String, Instant>) -> Option<(&String, &Instant)> {
    since.iter().min_by_key(|(k, t)| (**t, *k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GRACE: Duration = Duration::from_secs(30);
    const HEARTBEAT: Duration = Duration::from_secs(300);

    fn look(version: &str, unanswered: &[&str], unpublished: &[&str]) -> Look {
        Look {
            version: Some(version.to_owned()),
            unanswered: unanswered.iter().map(|s| (*s).to_owned()).collect(),
            unpublished: unpublished.iter().map(|s| (*s).to_owned()).collect(),
            heartbeat: None,
        }
    }

    fn report(value: serde_json::Value) -> NodeHealthReport {
        serde_json::from_value(value).expect("report")
    }

    #[test]
    fn reads_requests_results_and_conditions() {
        let r = report(serde_json::json!({
            "apiVersion": "nodemedic.io/v1alpha1", "kind": "NodeHealthReport",
            "metadata": {"name": "n", "resourceVersion": "7"},
            "spec": {"nodeName": "n", "actionRequests": [
                {"id": "a", "action": "RequestReboot", "policy": "p", "requestedAt": "2026-01-01T00:00:00Z", "reason": "r"},
                {"id": "b", "action": "RequestReboot", "policy": "p", "requestedAt": "2026-01-01T00:00:00Z", "reason": "r"}]},
            "status": {"heartbeatInterval": "1m", "actionResults": [
                {"id": "a", "outcome": "Completed", "message": "m", "completedAt": "2026-01-01T00:00:00Z"}],
                "conditions": [{"policy": "p", "type": "ZombiesDetected", "status": "True",
                                "reason": "ThresholdExceeded", "message": "m",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }));
        let mut own = r.status.clone().expect("status");
        own.conditions.push({
            let mut c = own.conditions[0].clone();
            c.type_ = nodemedic_crds::conditions::ConditionType::FdLeakDetected;
            c
        });
        let l = Look::of(Some(&r), Some(&own));
        assert_eq!(l.version.as_deref(), Some("7"));
        assert_eq!(l.unanswered, BTreeSet::from(["b".to_owned()]));
        assert_eq!(
            l.unpublished,
            BTreeSet::from(["p/FdLeakDetected".to_owned()])
        );
        assert_eq!(l.heartbeat, Some(Duration::from_secs(60)));
        assert_eq!(Look::of(None, None), Look::default());
    }

    #[test]
    fn each_sign_counts_only_once_it_has_lasted() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut v = Vigil::new(t0);
        v.observe(look("1", &["r1"], &[]), at(0));
        assert_eq!(v.neglected(at(29), GRACE, HEARTBEAT), None);
        assert!(matches!(
            v.neglected(at(30), GRACE, HEARTBEAT),
            Some(Neglect::UnansweredRequest { ref id, .. }) if id == "r1"
        ));
        // Answered: the clock for it stops.
        v.observe(look("2", &[], &["p/ZombiesDetected"]), at(31));
        assert_eq!(v.neglected(at(60), GRACE, HEARTBEAT), None);
        assert!(matches!(
            v.neglected(at(61), GRACE, HEARTBEAT),
            Some(Neglect::Unpublished { .. })
        ));
        // Published: nothing left but the heartbeat.
        v.observe(look("2", &[], &[]), at(62));
        assert_eq!(v.neglected(at(31 + 329), GRACE, HEARTBEAT), None);
        assert!(matches!(
            v.neglected(at(31 + 330), GRACE, HEARTBEAT),
            Some(Neglect::Silent { .. })
        ));
        // The report's own heartbeat counts over this agent's.
        let mut short = look("2", &[], &[]);
        short.heartbeat = Some(Duration::from_secs(10));
        v.observe(short, at(62));
        assert!(v.neglected(at(31 + 40), GRACE, HEARTBEAT).is_some());
    }

    #[derive(Debug, Clone)]
    enum Event {
        /// Time passes (seconds).
        Advance(u64),
        /// The operator adds a request.
        Request,
        /// A condition starts firing on the node.
        Fires,
        /// The holder's next scan after a firing; it is published then.
        Scan,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (1u64..40).prop_map(Event::Advance),
            1 => Just(Event::Request),
            1 => Just(Event::Fires),
            2 => Just(Event::Scan),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// A live holder (answers every request within `answer` and
        /// publishes a firing within `answer`, writes at least every
        /// heartbeat) never looks neglected; a dead one always does within
        /// its heartbeat plus the grace.
        #[test]
        fn a_live_holder_never_looks_neglected_and_a_dead_one_always_does(
            answer in 0u64..25,
            events in proptest::collection::vec(event(), 1..120),
        ) {
            let t0 = Instant::now();
            let mut now = 0u64;
            let mut version = 0u64;
            let mut last_write = 0u64;
            let mut pending: Vec<(String, u64)> = Vec::new();
            let mut unpublished: Option<u64> = None;
            let mut vigil = Vigil::new(t0);
            let at = |s: u64| t0 + Duration::from_secs(s);
            let mut next_id = 0;
            for e in events {
                match e {
                    Event::Advance(d) => now += d,
                    Event::Request => {
                        next_id += 1;
                        pending.push((format!("r{next_id}"), now));
                    }
                    Event::Fires => { unpublished.get_or_insert(now); }
                    Event::Scan => {}
                }
                // The holder: answers and publishes within `answer`, and
                // writes a heartbeat when one is due.
                let mut write = false;
                if pending.iter().any(|(_, t)| now >= t + answer) {
                    pending.retain(|(_, t)| now < t + answer);
                    write = true;
                }
                if unpublished.is_some_and(|t| now >= t + answer) {
                    unpublished = None;
                    write = true;
                }
                if now >= last_write + HEARTBEAT.as_secs() {
                    write = true;
                }
                if write {
                    version += 1;
                    last_write = now;
                }
                let l = Look {
                    version: Some(version.to_string()),
                    unanswered: pending.iter().map(|(id, _)| id.clone()).collect(),
                    unpublished: unpublished.iter().map(|_| "p/ZombiesDetected".to_owned()).collect(),
                    heartbeat: None,
                };
                vigil.observe(l, at(now));
                prop_assert_eq!(vigil.neglected(at(now), GRACE, HEARTBEAT), None, "at {}", now);
            }
            // The holder dies: nothing changes any more.
            let last = Look {
                version: Some(version.to_string()),
                ..Look::default()
            };
            vigil.observe(last.clone(), at(now));
            let deadline = last_write.max(now) + HEARTBEAT.as_secs() + GRACE.as_secs();
            vigil.observe(last, at(deadline));
            prop_assert!(vigil.neglected(at(deadline), GRACE, HEARTBEAT).is_some());
        }
    }
}
