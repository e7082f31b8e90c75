//! Hysteresis per (policy, detector), as a policy's `for` reads: a detector
//! fires once its threshold has been exceeded continuously for `for`, and
//! resolves once it has been clear for as long. Durations run on the
//! monotonic clock; the wall-clock times of transitions are what the report
//! publishes (`lastTransitionTime`, `exceededSince`), and a restarted agent
//! adopts them from the report it finds, so escalation timing survives.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use nodemedic_crds::Detector;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A condition as an earlier agent published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub firing: bool,
    pub last_transition: Timestamp,
    pub exceeded_since: Option<Timestamp>,
}

/// The hysteresis outcome of one update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldState {
    /// Firing (the report condition is True).
    pub firing: bool,
    /// The threshold is exceeded in this scan.
    pub exceeded: bool,
    /// How long the threshold has been exceeded without a break.
    pub exceeded_for: Duration,
    /// Since when, on the wall clock.
    pub exceeded_since: Option<Timestamp>,
    /// When `firing` last changed (or the condition was first set).
    pub last_transition: Timestamp,
    /// `firing` changed in this update.
    pub transitioned: bool,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    firing: bool,
    exceeded_since: Option<(Instant, Timestamp)>,
    clear_since: Option<Instant>,
    last_transition: Timestamp,
}

/// Hysteresis state of every (policy, detector) pair the agent evaluates.
#[derive(Debug, Default)]
pub struct Hysteresis {
    holds: HashMap<(String, Detector), Hold>,
}

/// The monotonic instant that was `wall_then` on the wall clock, given that
/// `now` is `wall_now` (never in the future).
fn instant_at(now: Instant, wall_now: Timestamp, wall_then: Timestamp) -> Instant {
    let ago = wall_now.duration_since(wall_then);
    if ago <= SignedDuration::ZERO {
        return now;
    }
    Duration::try_from(ago)
        .ok()
        .and_then(|d| now.checked_sub(d))
        .unwrap_or(now)
}

impl Hysteresis {
    /// Seeds a pair from a condition published before this agent started:
    /// its status and `lastTransitionTime` carry over while it still holds.
    pub fn adopt(
        &mut self,
        policy: &str,
        detector: Detector,
        published: Published,
        now: Instant,
        wall_now: Timestamp,
    ) {
        let exceeded_since = published
            .exceeded_since
            .map(|t| (instant_at(now, wall_now, t), t));
        self.holds.insert(
            (policy.to_owned(), detector),
            Hold {
                firing: published.firing,
                exceeded_since,
                clear_since: None,
                last_transition: published.last_transition,
            },
        );
    }

    /// Whether a pair has state (seen before, or adopted).
    pub fn knows(&self, policy: &str, detector: Detector) -> bool {
        self.holds.contains_key(&(policy.to_owned(), detector))
    }

    /// Folds in one scan's verdict for a pair.
    pub fn update(
        &mut self,
        policy: &str,
        detector: Detector,
        exceeded: bool,
        for_duration: Duration,
        now: Instant,
        wall_now: Timestamp,
    ) -> HoldState {
        let h = self
            .holds
            .entry((policy.to_owned(), detector))
            .or_insert(Hold {
                firing: false,
                exceeded_since: None,
                clear_since: None,
                last_transition: wall_now,
            });
        let was_firing = h.firing;
        let mut exceeded_for = Duration::ZERO;
        if exceeded {
            h.clear_since = None;
            let (since, _) = *h.exceeded_since.get_or_insert((now, wall_now));
            exceeded_for = now.saturating_duration_since(since);
            if exceeded_for >= for_duration {
                h.firing = true;
            }
        } else {
            h.exceeded_since = None;
            if h.firing {
                let clear = *h.clear_since.get_or_insert(now);
                if now.saturating_duration_since(clear) >= for_duration {
                    h.firing = false;
                    h.clear_since = None;
                }
            }
        }
        let transitioned = h.firing != was_firing;
        if transitioned {
            h.last_transition = wall_now;
        }
        HoldState {
            firing: h.firing,
            exceeded,
            exceeded_for,
            exceeded_since: h.exceeded_since.map(|(_, t)| t),
            last_transition: h.last_transition,
            transitioned,
        }
    }

    /// Forgets pairs for which `keep` is false (a policy was deleted, a
    /// detector removed from it, or the node no longer selected).
    pub fn retain(&mut self, keep: impl Fn(&str, Detector) -> bool) {
        self.holds.retain(|(p, d), _| keep(p, *d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Clock {
        t0: Instant,
        w0: Timestamp,
    }

    impl Clock {
        fn new() -> Self {
            Self {
                t0: Instant::now(),
                w0: Timestamp::from_second(1_800_000_000).expect("valid"),
            }
        }
        fn at(&self, s: u64) -> (Instant, Timestamp) {
            (
                self.t0 + Duration::from_secs(s),
                self.w0 + SignedDuration::from_secs(s as i64),
            )
        }
    }

    #[test]
    fn holds_for_the_duration_both_ways_and_stamps_transitions() {
        let c = Clock::new();
        let mut h = Hysteresis::default();
        let f = Duration::from_secs(60);
        let mut step = |exceeded, s| {
            let (now, wall) = c.at(s);
            h.update("p", Detector::Zombies, exceeded, f, now, wall)
        };
        let first = step(true, 0);
        assert!(!first.firing && first.exceeded && !first.transitioned);
        assert_eq!(first.last_transition, c.at(0).1, "set when first seen");
        assert_eq!(first.exceeded_since, Some(c.at(0).1));
        assert!(!step(true, 30).firing);
        let fired = step(true, 60);
        assert!(fired.firing && fired.transitioned);
        assert_eq!(fired.exceeded_for, Duration::from_secs(60));
        assert_eq!(fired.last_transition, c.at(60).1);
        // The transition time stays while it keeps firing.
        assert_eq!(step(true, 90).last_transition, c.at(60).1);
        // Clear, but not yet for `for`: still firing.
        let clearing = step(false, 91);
        assert!(clearing.firing && !clearing.exceeded);
        assert_eq!(clearing.exceeded_since, None);
        assert!(step(false, 130).firing);
        // Exceeded again before resolving: the clear clock restarts.
        assert!(step(true, 140).firing);
        assert!(step(false, 150).firing);
        assert!(step(false, 209).firing);
        let resolved = step(false, 210);
        assert!(!resolved.firing && resolved.transitioned);
        assert_eq!(resolved.last_transition, c.at(210).1);
        // A fresh episode needs the full `for` again.
        assert!(!step(true, 220).firing);
    }

    #[test]
    fn pairs_are_independent_per_policy() {
        let c = Clock::new();
        let mut h = Hysteresis::default();
        let (t0, w0) = c.at(0);
        let (t1, w1) = c.at(10);
        h.update("fast", Detector::Zombies, true, Duration::ZERO, t0, w0);
        h.update(
            "slow",
            Detector::Zombies,
            true,
            Duration::from_secs(60),
            t0,
            w0,
        );
        assert!(
            h.update("fast", Detector::Zombies, true, Duration::ZERO, t1, w1)
                .firing
        );
        assert!(
            !h.update(
                "slow",
                Detector::Zombies,
                true,
                Duration::from_secs(60),
                t1,
                w1
            )
            .firing
        );
        h.retain(|p, _| p == "slow");
        assert!(!h.knows("fast", Detector::Zombies) && h.knows("slow", Detector::Zombies));
    }

    #[test]
    fn adopted_conditions_keep_their_times() {
        let c = Clock::new();
        let mut h = Hysteresis::default();
        // A condition fired 10 minutes before this agent started, exceeded
        // since 12 minutes before.
        let (now, wall) = c.at(1000);
        let fired_at = wall - SignedDuration::from_secs(600);
        let exceeded_at = wall - SignedDuration::from_secs(720);
        h.adopt(
            "p",
            Detector::HungTasks,
            Published {
                firing: true,
                last_transition: fired_at,
                exceeded_since: Some(exceeded_at),
            },
            now,
            wall,
        );
        let s = h.update(
            "p",
            Detector::HungTasks,
            true,
            Duration::from_secs(60),
            now,
            wall,
        );
        assert!(s.firing && !s.transitioned);
        assert_eq!(s.last_transition, fired_at);
        assert_eq!(s.exceeded_since, Some(exceeded_at));
        assert_eq!(s.exceeded_for, Duration::from_secs(720));
        // A pending condition keeps counting from when it was first exceeded.
        let mut h = Hysteresis::default();
        h.adopt(
            "p",
            Detector::Zombies,
            Published {
                firing: false,
                last_transition: exceeded_at,
                exceeded_since: Some(wall - SignedDuration::from_secs(50)),
            },
            now,
            wall,
        );
        let (later, wall_later) = c.at(1010);
        let s = h.update(
            "p",
            Detector::Zombies,
            true,
            Duration::from_secs(60),
            later,
            wall_later,
        );
        assert!(s.firing, "50 s before the restart + 10 s after reach `for`");
    }
}
