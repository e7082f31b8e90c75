//! The per-node Lease that makes one agent, and only one, act on a node.
//!
//! Two agents can run on one node (a second Helm release, a hand-made
//! DaemonSet). Both would watch the same NodeHealthReport and execute every
//! request. The acting agent holds the Lease `nodemedic-agent-<node>` in
//! `kube-node-lease`; the other stays passive until the Lease expires or is
//! released. This module is the pure decision: what to do with the Lease as
//! read. The API calls (with the resourceVersion compare-and-swap that makes
//! the decision safe) are in [`super::lease`].
//!
//! Both agents run on the same host, so the Lease's wall-clock times come
//! from the same clock and expiry is judged on the agent's own clock.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// The namespace of every agent's Lease: fixed, so that agents of
/// different releases (in different namespaces) contend for the same one.
/// It exists in every cluster (the API server creates it) and is where the
/// kubelets keep their own node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The name of the Lease of the agent on `node`.
pub fn lease_name(node: &str) -> String {
    format!("nodemedic-agent-{node}")
}

/// What the Lease says, as far as the decision is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renewed: Option<Timestamp>,
    /// The holder's lease duration, as it wrote it.
    pub duration: Option<Duration>,
}

impl LeaseView {
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renewed: spec
                .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
                .map(|t| t.0),
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        }
    }
}

/// What to do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it (fails if someone else just did).
    Create,
    /// It is ours: renew it.
    Renew,
    /// Released, or its holder never recorded a renewal: take it over.
    TakeOver,
    /// Another agent held it and has not renewed it for its duration. A
    /// holder renews only when it acts, so this is an idle holder as often
    /// as a dead one: it may be taken over (the holder has stopped acting by
    /// now), but only when the node needs an actor (see [`super::neglect`]).
    Lapsed { holder: String },
    /// Another agent holds it until `until`.
    HeldElsewhere { holder: String, until: Timestamp },
}

/// Decides from the Lease as read (`None`: there is none), this agent's
/// identity, the time now, and this agent's lease duration (used when the
/// Lease does not say its own).
pub fn decide(
    current: Option<&LeaseView>,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> Decision {
    let Some(lease) = current else {
        return Decision::Create;
    };
    let Some(holder) = &lease.holder else {
        return Decision::TakeOver;
    };
    if holder == me {
        return Decision::Renew;
    }
    // A holder that never wrote when it renewed has no claim.
    let Some(renewed) = lease.renewed else {
        return Decision::TakeOver;
    };
    let valid = lease.duration.unwrap_or(duration);
    let until = SignedDuration::try_from(valid)
        .ok()
        .and_then(|d| renewed.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX);
    if now >= until {
        Decision::Lapsed {
            holder: holder.clone(),
        }
    } else {
        Decision::HeldElsewhere {
            holder: holder.clone(),
            until,
        }
    }
}

/// How long after a successful write (measured from just before it was
/// sent, on the monotonic clock) the holder still acts: the lease duration
/// less a margin, so that it has stopped before any other agent can judge
/// the Lease expired.
pub fn acting_window(duration: Duration) -> Duration {
    duration.saturating_sub(margin(duration))
}

/// A quarter of the duration, at least 500 ms (capped at the duration).
pub fn margin(duration: Duration) -> Duration {
    (duration / 4).max(Duration::from_millis(500)).min(duration)
}

/// Whether a holder with `left` of its acting window renews before it acts:
/// when less than half the window is left, so that what it starts (a
/// report write, a request) has at least that long. A holder renews only
/// when it is about to act; an idle holder lets its Lease lapse.
pub fn renew_before_acting(left: Duration, duration: Duration) -> bool {
    left < acting_window(duration) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: Duration = Duration::from_secs(15);

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("timestamp")
    }

    fn view(holder: Option<&str>, renewed: Option<i64>, dur: Option<u64>) -> LeaseView {
        LeaseView {
            holder: holder.map(str::to_owned),
            renewed: renewed.map(t),
            duration: dur.map(Duration::from_secs),
        }
    }

    #[test]
    fn table() {
        let cases: Vec<(Option<LeaseView>, i64, Decision)> = vec![
            (None, 0, Decision::Create),
            (
                Some(view(Some("me"), Some(0), Some(15))),
                100,
                Decision::Renew,
            ),
            (Some(view(None, Some(0), Some(15))), 1, Decision::TakeOver),
            (
                Some(view(Some("other"), None, Some(15))),
                1,
                Decision::TakeOver,
            ),
            (
                Some(view(Some("other"), Some(0), Some(15))),
                14,
                Decision::HeldElsewhere {
                    holder: "other".into(),
                    until: t(15),
                },
            ),
            (
                Some(view(Some("other"), Some(0), Some(15))),
                15,
                Decision::Lapsed {
                    holder: "other".into(),
                },
            ),
            // The holder's own duration counts, not ours.
            (
                Some(view(Some("other"), Some(0), Some(60))),
                30,
                Decision::HeldElsewhere {
                    holder: "other".into(),
                    until: t(60),
                },
            ),
            // Without one, ours.
            (
                Some(view(Some("other"), Some(0), None)),
                10,
                Decision::HeldElsewhere {
                    holder: "other".into(),
                    until: t(15),
                },
            ),
            (
                Some(view(Some("other"), Some(0), None)),
                16,
                Decision::Lapsed {
                    holder: "other".into(),
                },
            ),
            // A renewal in the future (the same clock: only if it jumped
            // back) holds until its end.
            (
                Some(view(Some("other"), Some(100), Some(15))),
                0,
                Decision::HeldElsewhere {
                    holder: "other".into(),
                    until: t(115),
                },
            ),
        ];
        for (lease, now, want) in cases {
            assert_eq!(
                decide(lease.as_ref(), "me", t(now), D),
                want,
                "{lease:?} at {now}"
            );
        }
    }

    #[test]
    fn reads_a_lease() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "nodemedic-agent-n", "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 15,
                     "renewTime": "2026-01-01T00:00:00.000000Z"},
        }))
        .expect("lease");
        let v = LeaseView::of(&lease);
        assert_eq!(v.holder, None, "an empty holder is a released lease");
        assert_eq!(v.duration, Some(D));
        assert!(v.renewed.is_some());
    }

    #[test]
    fn the_holder_stops_before_the_lease_expires() {
        for secs in [1, 2, 3, 15, 60] {
            let d = Duration::from_secs(secs);
            assert!(acting_window(d) < d);
            assert!(acting_window(d) > Duration::ZERO);
        }
    }

    #[test]
    fn a_holder_renews_before_acting_only_when_half_its_window_is_gone() {
        let d = Duration::from_secs(30);
        let window = acting_window(d);
        assert!(!renew_before_acting(window, d), "just written");
        assert!(!renew_before_acting(window / 2, d));
        assert!(renew_before_acting(
            window / 2 - Duration::from_millis(1),
            d
        ));
        assert!(renew_before_acting(Duration::ZERO, d), "lapsed");
    }

    // A model of two agents (and their restarts) contending through an API
    // server whose writes are compare-and-swap on the resourceVersion. Time
    // is in milliseconds on the host's one clock. Agents renew when they
    // please (a holder renews only to act, so its Lease lapses while it is
    // idle), renew as they last wrote without reading, and take over a
    // lapsed Lease only when their neglect check says so: the model lets
    // that check say anything, because the guarantee must not rest on it.

    #[derive(Debug, Clone)]
    struct Stored {
        view: LeaseView,
        rv: u64,
    }

    #[derive(Debug, Clone)]
    struct Model {
        stored: Option<Stored>,
        /// Bumped on every successful write (create, update).
        next_rv: u64,
    }

    #[derive(Debug, Clone, Default)]
    struct Sim {
        /// Distinct per process (a restart is a new identity).
        identity: String,
        generation: u32,
        /// What it read, and the resourceVersion it read it at.
        read: Option<(Option<Stored>, Timestamp)>,
        /// The Lease as it last wrote it (resourceVersion), if it saw the
        /// reply.
        written: Option<Stored>,
        /// Until when it acts (milliseconds on the clock).
        acting_until: Option<i64>,
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Time passes.
        Advance(u32),
        /// Agent i reads the Lease (GET).
        Read(usize),
        /// Agent i writes what it decided from its read; `lose_reply`: the
        /// write happens but the agent sees an error; `neglected`: what its
        /// neglect check says about a lapsed Lease.
        Write {
            who: usize,
            lose_reply: bool,
            neglected: bool,
        },
        /// Agent i renews the Lease as it last wrote it, without reading
        /// (whether or not its window has ended).
        RenewAsWritten { who: usize, lose_reply: bool },
        /// Agent i is killed and starts again as a new process.
        Crash(usize),
        /// Agent i releases on SIGTERM (and restarts).
        Release(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1u32..6000).prop_map(Step::Advance),
            4 => (0usize..2).prop_map(Step::Read),
            4 => ((0usize..2), proptest::bool::weighted(0.2), proptest::bool::ANY)
                .prop_map(|(who, lose_reply, neglected)| Step::Write { who, lose_reply, neglected }),
            3 => ((0usize..2), proptest::bool::weighted(0.2))
                .prop_map(|(who, lose_reply)| Step::RenewAsWritten { who, lose_reply }),
            1 => (0usize..2).prop_map(Step::Crash),
            1 => (0usize..2).prop_map(Step::Release),
        ]
    }

    fn ms(ts: Timestamp) -> i64 {
        ts.as_millisecond()
    }

    impl Sim {
        /// The Lease as this agent writes it at `now`.
        fn fresh(&self, now: Timestamp, dur: Duration) -> LeaseView {
            LeaseView {
                holder: Some(self.identity.clone()),
                renewed: Some(now),
                duration: Some(dur),
            }
        }

        /// What a write's outcome does to the agent: a stored write it saw
        /// the reply of starts its acting window (timed from when it sent
        /// it); a lost reply changes nothing it knows (it acts only until
        /// its old window ends, and its next renewal as written fails: the
        /// rv moved on); a 409 stops it (it reads and decides next).
        fn wrote(&mut self, stored: Option<Stored>, lose_reply: bool, until: i64) {
            match stored {
                Some(st) if !lose_reply => {
                    self.acting_until = Some(until);
                    self.written = Some(st);
                }
                Some(_) => {}
                None => {
                    self.acting_until = None;
                    self.written = None;
                }
            }
        }
    }

    /// Applies a compare-and-swap write of `fresh` by `a`: `expected` is the
    /// resourceVersion it sends (None: a create). Returns whether it stored.
    fn cas(api: &mut Model, expected: Option<u64>, fresh: LeaseView) -> Option<Stored> {
        let ok = match (&api.stored, expected) {
            (None, None) => true,
            (Some(cur), Some(rv)) => cur.rv == rv,
            _ => false,
        };
        if !ok {
            return None;
        }
        let stored = Stored {
            view: fresh,
            rv: api.next_rv,
        };
        api.next_rv += 1;
        api.stored = Some(stored.clone());
        Some(stored)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn two_agents_never_act_at_once(
            dur_s in 1u64..20,
            steps in proptest::collection::vec(step(), 1..150),
        ) {
            let dur = Duration::from_secs(dur_s);
            let window = i64::try_from(acting_window(dur).as_millis()).unwrap_or(i64::MAX);
            let mut now = t(0);
            let mut api = Model { stored: None, next_rv: 1 };
            let mut agents: Vec<Sim> = (0..2)
                .map(|i| Sim { identity: format!("agent-{i}-0"), ..Sim::default() })
                .collect();
            for s in steps {
                match s {
                    Step::Advance(d) => {
                        now = now.checked_add(SignedDuration::from_millis(i64::from(d))).expect("time");
                    }
                    Step::Read(i) => agents[i].read = Some((api.stored.clone(), now)),
                    Step::Write { who, lose_reply, neglected } => {
                        let Some((read, _)) = agents[who].read.take() else { continue };
                        let a = &mut agents[who];
                        let decision = decide(read.as_ref().map(|s| &s.view), &a.identity, now, dur);
                        let fresh = a.fresh(now, dur);
                        let expected = match decision {
                            Decision::HeldElsewhere { .. } => {
                                a.acting_until = None;
                                a.written = None;
                                continue;
                            }
                            Decision::Lapsed { .. } if !neglected => {
                                a.acting_until = None;
                                a.written = None;
                                continue;
                            }
                            // Create: only if there is none (409 otherwise).
                            Decision::Create => None,
                            // Update with the rv read: 409 if it changed.
                            Decision::Renew | Decision::TakeOver | Decision::Lapsed { .. } => {
                                match &read {
                                    Some(r) => Some(r.rv),
                                    None => continue,
                                }
                            }
                        };
                        a.wrote(cas(&mut api, expected, fresh), lose_reply, ms(now) + window);
                    }
                    Step::RenewAsWritten { who, lose_reply } => {
                        let a = &mut agents[who];
                        let Some(w) = a.written.clone() else { continue };
                        let fresh = a.fresh(now, dur);
                        a.wrote(cas(&mut api, Some(w.rv), fresh), lose_reply, ms(now) + window);
                    }
                    Step::Crash(i) => {
                        let a = &mut agents[i];
                        a.generation += 1;
                        a.identity = format!("agent-{i}-{}", a.generation);
                        a.read = None;
                        a.written = None;
                        a.acting_until = None;
                    }
                    Step::Release(i) => {
                        let a = &mut agents[i];
                        // It stops acting first, then clears the holder with
                        // the rv it last wrote (if nobody wrote since).
                        a.acting_until = None;
                        if let Some(w) = a.written.take() {
                            let mut v = w.view.clone();
                            v.holder = None;
                            cas(&mut api, Some(w.rv), v);
                        }
                        a.generation += 1;
                        a.identity = format!("agent-{i}-{}", a.generation);
                        a.read = None;
                    }
                }
                let acting = agents
                    .iter()
                    .filter(|a| a.acting_until.is_some_and(|u| ms(now) < u))
                    .count();
                prop_assert!(acting <= 1, "two agents act at {now}: {agents:?} {api:?}");
            }
        }
    }
}
