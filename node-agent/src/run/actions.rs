//! The agent's book of action requests: which ids it has handled (each is
//! executed at most once, and the book survives restarts through
//! `status.actionResults`), and what became of the zombies under a
//! signalled parent.

use crate::scan::Observation;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nodemedic_crds::report::{
    ActionRefusal, ActionRequest, ActionResult, ActionResultOutcome, MAX_ACTION_RESULTS,
    MAX_MESSAGE_LEN, NodeAction, SignalFollowUp,
};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A signalled parent whose zombies are being watched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracked {
    pid: i32,
    start_time: u64,
    /// The zombies under it at signal time.
    zombies: HashSet<(i32, u64)>,
    before: u32,
}

/// Results of every request handled, most recent last.
#[derive(Debug, Default)]
pub struct ActionBook {
    results: Vec<ActionResult>,
    tracked: HashMap<String, Tracked>,
    /// When this agent first saw each request not yet handled (its own
    /// monotonic clock: the action TTL runs from here).
    first_seen: HashMap<String, Instant>,
}

/// Zombies (pid, start time) whose parent is the process `pid` started at
/// `start_time`; `None` when that process is gone.
pub fn zombies_under(obs: &Observation, pid: i32, start_time: u64) -> Option<HashSet<(i32, u64)>> {
    obs.procs
        .processes
        .iter()
        .any(|p| p.pid == pid && p.starttime == start_time)
        .then(|| {
            obs.procs
                .zombies
                .iter()
                .filter(|z| z.ppid == pid)
                .map(|z| (z.pid, z.starttime))
                .collect()
        })
}

impl ActionBook {
    /// Takes over the results found in the report. A request that was
    /// InProgress when the previous agent stopped may or may not have been
    /// carried out: it is marked Failed and never retried.
    pub fn adopt(existing: &[ActionResult], now: Timestamp) -> Self {
        let mut book = Self::default();
        for r in existing {
            let mut r = r.clone();
            if r.outcome == ActionResultOutcome::InProgress {
                r.outcome = ActionResultOutcome::Failed;
                r.message = "interrupted: the agent restarted while carrying it out; not retried"
                    .to_owned();
                r.completed_at = Time(now);
            }
            // A follow-up in progress is not resumed: the zombies' identities
            // were in the previous agent's memory, and a guess would be
            // reported as a fact. It keeps its last reading.
            book.results.push(r);
        }
        book
    }

    /// Results, most recent last (what `status.actionResults` holds).
    pub fn results(&self) -> &[ActionResult] {
        &self.results
    }

    fn known(&self, id: &str) -> bool {
        self.results.iter().any(|r| r.id == id)
    }

    /// Whether any of `requests` has no result here yet.
    pub fn has_unhandled(&self, requests: &[ActionRequest]) -> bool {
        requests.iter().any(|r| !self.known(&r.id))
    }

    /// Records every request not handled before: those this agent has seen
    /// for longer than `ttl` without executing them (e.g. while the
    /// InProgress write kept failing) are refused, the others marked
    /// InProgress and returned for execution. Age is measured on the agent's
    /// own monotonic clock from when it first saw the request, never from
    /// `requestedAt` (the operator's wall clock: skew would make requests
    /// expire at once or live forever). After a restart, requests found in
    /// the spec are first seen at that moment.
    pub fn accept(
        &mut self,
        requests: &[ActionRequest],
        mono_now: Instant,
        now: Timestamp,
        ttl: Duration,
    ) -> Vec<ActionRequest> {
        let mut run = Vec::new();
        self.first_seen
            .retain(|id, _| requests.iter().any(|r| r.id == *id));
        for req in requests {
            if self.known(&req.id) {
                continue;
            }
            let seen = *self.first_seen.entry(req.id.clone()).or_insert(mono_now);
            let age = mono_now.saturating_duration_since(seen);
            if age > ttl {
                self.first_seen.remove(&req.id);
                self.results.push(ActionResult {
                    id: req.id.clone(),
                    outcome: ActionResultOutcome::Refused,
                    reason: Some(ActionRefusal::Expired),
                    message: crate::act::request::expired_message(age, ttl),
                    completed_at: Time(now),
                    follow_up: None,
                });
                continue;
            }
            self.results.push(ActionResult {
                id: req.id.clone(),
                outcome: ActionResultOutcome::InProgress,
                reason: None,
                message: format!("accepted at {now}"),
                completed_at: Time(now),
                follow_up: None,
            });
            run.push(req.clone());
        }
        run
    }

    /// Forgets InProgress marks whose write failed: nothing was executed,
    /// so the requests are looked at again later (and may have expired then).
    pub fn revert(&mut self, ids: &[String]) {
        self.results
            .retain(|r| !(r.outcome == ActionResultOutcome::InProgress && ids.contains(&r.id)));
    }

    /// Records the final result of an executed request. For a delivered
    /// SignalParent, `obs` (the latest scan) gives the zombies to watch.
    pub fn complete(
        &mut self,
        request: &ActionRequest,
        mut result: ActionResult,
        obs: Option<&Observation>,
    ) {
        if request.action == NodeAction::SignalParent
            && result.outcome == ActionResultOutcome::Signalled
            && let (Some(target), Some(obs)) = (&request.target, obs)
        {
            let zombies = zombies_under(obs, target.pid, target.start_time).unwrap_or_default();
            let before = u32::try_from(zombies.len()).unwrap_or(u32::MAX);
            result.follow_up = Some(SignalFollowUp {
                zombies_before: before,
                zombies_now: before,
                parent_exited: false,
                reaped: before == 0,
                checked_at: result.completed_at.clone(),
            });
            self.tracked.insert(
                result.id.clone(),
                Tracked {
                    pid: target.pid,
                    start_time: target.start_time,
                    zombies,
                    before,
                },
            );
        }
        // The API bounds messages; a long policy name or reason must not
        // make the whole status write fail.
        if result.message.chars().count() > MAX_MESSAGE_LEN {
            result.message = result.message.chars().take(MAX_MESSAGE_LEN).collect();
        }
        match self.results.iter_mut().find(|r| r.id == result.id) {
            Some(slot) => *slot = result,
            None => self.results.push(result),
        }
    }

    /// Updates the follow-up of every watched signal from a new scan.
    /// Returns whether any result changed in a way worth writing.
    pub fn follow_up(&mut self, obs: &Observation, now: Timestamp) -> bool {
        let mut changed = false;
        let mut done = Vec::new();
        for (id, t) in &self.tracked {
            let Some(result) = self.results.iter_mut().find(|r| r.id == *id) else {
                done.push(id.clone());
                continue;
            };
            let under = zombies_under(obs, t.pid, t.start_time);
            let parent_exited = under.is_none();
            let now_count = under.as_ref().map_or(0, |z| z.len());
            let still_there = obs
                .procs
                .zombies
                .iter()
                .filter(|z| t.zombies.contains(&(z.pid, z.starttime)))
                .count();
            let reaped = still_there == 0;
            let next = SignalFollowUp {
                zombies_before: t.before,
                zombies_now: u32::try_from(now_count).unwrap_or(u32::MAX),
                parent_exited,
                reaped,
                checked_at: Time(now),
            };
            let prev = result.follow_up.as_ref();
            if prev.is_none_or(|p| {
                (p.reaped, p.parent_exited, p.zombies_now)
                    != (next.reaped, next.parent_exited, next.zombies_now)
            }) {
                changed |=
                    prev.is_none_or(|p| (p.reaped, p.parent_exited) != (reaped, parent_exited));
                result.follow_up = Some(next);
            }
            if reaped {
                done.push(id.clone());
            }
        }
        for id in done {
            self.tracked.remove(&id);
        }
        changed
    }

    /// Keeps the results bounded: those of requests still in the spec are
    /// always kept (so none is executed twice), then the most recent others.
    pub fn prune(&mut self, requested: &HashSet<String>) {
        if self.results.len() <= MAX_ACTION_RESULTS {
            return;
        }
        let keep_others = MAX_ACTION_RESULTS.saturating_sub(
            self.results
                .iter()
                .filter(|r| requested.contains(&r.id))
                .count(),
        );
        let others: Vec<usize> = self
            .results
            .iter()
            .enumerate()
            .filter(|(_, r)| !requested.contains(&r.id))
            .map(|(i, _)| i)
            .collect();
        let drop: HashSet<usize> = others
            .iter()
            .take(others.len().saturating_sub(keep_others))
            .copied()
            .collect();
        let mut i = 0;
        self.results.retain(|_| {
            let keep = !drop.contains(&i);
            i += 1;
            keep
        });
        let ids: HashSet<&str> = self.results.iter().map(|r| r.id.as_str()).collect();
        self.tracked.retain(|id, _| ids.contains(id.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;
    use nodemedic_crds::policy::ParentSignal;
    use nodemedic_crds::report::ProcessTarget;

    fn request(id: &str, at: Timestamp) -> ActionRequest {
        ActionRequest {
            id: id.to_owned(),
            action: NodeAction::SignalParent,
            target: Some(ProcessTarget {
                pid: 42,
                start_time: 7,
                comm: "php-fpm".to_owned(),
            }),
            signal: Some(ParentSignal::SIGKILL),
            policy: "p".to_owned(),
            requested_at: Time(at),
            reason: None,
        }
    }

    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn each_id_is_accepted_once_and_expired_ones_never_run() {
        let now = Timestamp::now();
        let t0 = Instant::now();
        let mut book = ActionBook::default();
        let run = book.accept(&[request("a", now)], t0, now, TTL);
        assert_eq!(run.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(book.results()[0].outcome, ActionResultOutcome::InProgress);
        assert!(book.accept(&[request("a", now)], t0, now, TTL).is_empty());
        // A failed write of the InProgress mark un-accepts it; within the
        // TTL (since the agent first saw it) it runs on the next try.
        book.revert(&["a".to_owned()]);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(book.accept(&[request("a", now)], later, now, TTL).len(), 1);
        // Seen for longer than the TTL without being executed: refused.
        book.revert(&["a".to_owned()]);
        let too_late = t0 + TTL + Duration::from_secs(1);
        assert!(
            book.accept(&[request("a", now)], too_late, now, TTL)
                .is_empty()
        );
        let r = &book.results()[0];
        assert_eq!(
            (r.outcome, r.reason),
            (ActionResultOutcome::Refused, Some(ActionRefusal::Expired))
        );
        assert!(
            r.message
                .starts_with("expired: this agent first saw it 10m1s ago"),
            "{}",
            r.message
        );
    }

    #[test]
    fn the_operators_clock_does_not_decide_expiry() {
        let now = Timestamp::now();
        let t0 = Instant::now();
        let mut book = ActionBook::default();
        // An operator clock an hour behind or ahead of the agent's: the
        // requests are fresh to this agent, so they run.
        let behind = request("behind", now - SignedDuration::from_secs(3600));
        let ahead = request("ahead", now + SignedDuration::from_secs(3600));
        let run = book.accept(&[behind, ahead], t0, now, TTL);
        assert_eq!(run.len(), 2);
        assert!(book.results().iter().all(|r| r.reason.is_none()));
    }

    #[test]
    fn a_restart_never_reruns_an_interrupted_request() {
        let now = Timestamp::now();
        let mut first = ActionBook::default();
        first.accept(&[request("a", now)], Instant::now(), now, TTL);
        let mut second = ActionBook::adopt(first.results(), now);
        assert_eq!(second.results()[0].outcome, ActionResultOutcome::Failed);
        assert!(second.results()[0].message.contains("interrupted"));
        assert!(
            second
                .accept(&[request("a", now)], Instant::now(), now, TTL)
                .is_empty()
        );
    }

    #[test]
    fn pruning_keeps_every_result_the_spec_still_asks_about() {
        let now = Timestamp::now();
        let mut book = ActionBook::default();
        let reqs: Vec<ActionRequest> = (0..40).map(|i| request(&format!("r{i}"), now)).collect();
        book.accept(&reqs, Instant::now(), now, TTL);
        let requested: HashSet<String> = (0..32).map(|i| format!("r{i}")).collect();
        book.prune(&requested);
        assert_eq!(book.results().len(), MAX_ACTION_RESULTS);
        assert!(requested.iter().all(|id| book.known(id)));
        assert!(!book.known("r32"));
    }
}
