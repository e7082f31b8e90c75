//! Pausing remediation: the annotations an SRE (or `kubectl nodemedic pause`)
//! puts on a `NodeHealthPolicy` (pauses that policy on all its nodes) or on a
//! `Node` (pauses every policy's remediation on that node), and the one pure
//! parser the operator and the plugin share.
//!
//! - [`PAUSED_ANNOTATION`] (`nodemedic.io/paused`): the reason. Its presence
//!   is the pause; an empty value still pauses (reason "").
//! - [`PAUSED_BY_ANNOTATION`] (`nodemedic.io/paused-by`): who paused (the
//!   chart's admission policy lets a request set it only to its own username).
//! - [`PAUSED_AT_ANNOTATION`] (`nodemedic.io/paused-at`): when, RFC 3339.
//!
//! Fail safe: `paused` present is a pause whatever the other two say. A
//! missing, unparseable or future `paused-at` is named in [`Pause::problem`]
//! and leaves [`Pause::since`] empty (the operator then counts the pause's age
//! from when it first saw it). `paused-by` or `paused-at` without `paused` is
//! not a pause.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::bounds::MAX_MESSAGE;

/// The pause and its reason (presence = paused).
pub const PAUSED_ANNOTATION: &str = "nodemedic.io/paused";
/// The username of who paused.
pub const PAUSED_BY_ANNOTATION: &str = "nodemedic.io/paused-by";
/// RFC 3339 time the pause was set.
pub const PAUSED_AT_ANNOTATION: &str = "nodemedic.io/paused-at";
/// All three: a resume removes them all.
pub const PAUSE_ANNOTATIONS: [&str; 3] = [
    PAUSED_ANNOTATION,
    PAUSED_BY_ANNOTATION,
    PAUSED_AT_ANNOTATION,
];

/// Longest reason, username or problem kept (bytes; the API's message bound).
pub const MAX_PAUSE_TEXT: usize = MAX_MESSAGE as usize;

/// How far ahead of the reader's clock a `paused-at` may be before it counts
/// as "in the future" (the operator's skew tolerance elsewhere).
pub const PAUSED_AT_SKEW_SECONDS: i64 = 30;

/// What is paused: one policy (everywhere), or one node (for every policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PauseKind {
    /// The annotations are on a NodeHealthPolicy.
    Policy,
    /// The annotations are on a Node.
    Node,
}

impl PauseKind {
    /// Lower-case word, as in metric labels (`kind="policy"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PauseKind::Policy => "policy",
            PauseKind::Node => "node",
        }
    }
}

/// A pause read from an object's annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    /// The `paused` annotation's value (may be empty), at most
    /// [`MAX_PAUSE_TEXT`] bytes.
    pub reason: String,
    /// `paused-by`, when present and not empty.
    pub by: Option<String>,
    /// `paused-at`, when present, valid and not in the future.
    pub since: Option<Timestamp>,
    /// What is wrong with the annotations, when something is (the pause
    /// holds all the same).
    pub problem: Option<String>,
}

impl Pause {
    /// The pause's start: `since`, or `first_seen` (when the reader first
    /// saw the pause) when the annotation gave no usable time.
    pub fn since_or(&self, first_seen: Timestamp) -> Timestamp {
        self.since.unwrap_or(first_seen)
    }
}

/// The pause the annotations describe, if any, without a clock: `paused-at`
/// is taken as written when it parses. See [`pause_from_annotations_at`] for
/// the check against the reader's clock.
pub fn pause_from_annotations(annotations: &BTreeMap<String, String>) -> Option<Pause> {
    let reason = annotations.get(PAUSED_ANNOTATION)?;
    let by = annotations
        .get(PAUSED_BY_ANNOTATION)
        .map(|b| b.trim())
        .filter(|b| !b.is_empty())
        .map(bounded);
    let (since, problem) = match annotations.get(PAUSED_AT_ANNOTATION) {
        None => (None, Some(format!("{PAUSED_AT_ANNOTATION} is missing"))),
        Some(at) => match parse_time(at) {
            Some(t) => (Some(t), None),
            None => (
                None,
                Some(format!(
                    "{PAUSED_AT_ANNOTATION} {:?} is not an RFC 3339 time",
                    clip(at, 64)
                )),
            ),
        },
    };
    Some(Pause {
        reason: bounded(reason),
        by,
        since,
        problem,
    })
}

/// [`pause_from_annotations`], and a `paused-at` more than
/// [`PAUSED_AT_SKEW_SECONDS`] after `now` is a problem (and no `since`): a
/// clock far ahead, or a hand-written time, must not make a pause look young
/// to an alert on its age.
pub fn pause_from_annotations_at(
    annotations: &BTreeMap<String, String>,
    now: Timestamp,
) -> Option<Pause> {
    pause_from_annotations(annotations).map(|p| p.checked_at(now))
}

impl Pause {
    /// The pause with a `since` more than [`PAUSED_AT_SKEW_SECONDS`] after
    /// `now` turned into a problem (and no `since`).
    pub fn checked_at(mut self, now: Timestamp) -> Self {
        if let Some(since) = self.since {
            let ahead = since.duration_since(now);
            if ahead > SignedDuration::from_secs(PAUSED_AT_SKEW_SECONDS) {
                self.since = None;
                self.problem = Some(format!(
                    "{PAUSED_AT_ANNOTATION} {} is in the future ({}s ahead)",
                    format_time(since),
                    ahead.as_secs()
                ));
            }
        }
        self
    }
}

/// The annotations that record a pause (what `kubectl nodemedic pause`
/// writes), the reason bounded.
pub fn pause_annotations(reason: &str, by: &str, at: Timestamp) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PAUSED_ANNOTATION.to_owned(), bounded(reason)),
        (PAUSED_BY_ANNOTATION.to_owned(), by.to_owned()),
        (PAUSED_AT_ANNOTATION.to_owned(), format_time(at)),
    ])
}

/// RFC 3339 in UTC with whole seconds, e.g. `2025-06-01T12:00:00Z`.
pub fn format_time(t: Timestamp) -> String {
    match Timestamp::from_second(t.as_second()) {
        Ok(whole) => whole.to_string(),
        Err(_) => t.to_string(),
    }
}

fn parse_time(text: &str) -> Option<Timestamp> {
    text.trim().parse::<Timestamp>().ok()
}

/// At most [`MAX_PAUSE_TEXT`] bytes, cut at a character boundary with "…".
fn bounded(text: &str) -> String {
    clip(text, MAX_PAUSE_TEXT)
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test time")
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_paused_annotation_is_no_pause() {
        assert_eq!(pause_from_annotations(&BTreeMap::new()), None);
        let others = annotations(&[
            (PAUSED_BY_ANNOTATION, "alice"),
            (PAUSED_AT_ANNOTATION, "2025-06-01T12:00:00Z"),
            ("nodemedic.io/cordoned-by", "p"),
        ]);
        assert_eq!(pause_from_annotations(&others), None);
        assert_eq!(
            pause_from_annotations_at(&others, ts("2025-06-01T12:00:00Z")),
            None
        );
    }

    #[test]
    fn a_complete_pause_parses() {
        let a = annotations(&[
            (PAUSED_ANNOTATION, "kernel upgrade in progress"),
            (PAUSED_BY_ANNOTATION, "alice@example.com"),
            (PAUSED_AT_ANNOTATION, "2025-06-01T12:00:00Z"),
        ]);
        let pause = pause_from_annotations_at(&a, ts("2025-06-01T13:00:00Z")).expect("paused");
        assert_eq!(
            pause,
            Pause {
                reason: "kernel upgrade in progress".into(),
                by: Some("alice@example.com".into()),
                since: Some(ts("2025-06-01T12:00:00Z")),
                problem: None,
            }
        );
    }

    #[test]
    fn offsets_are_accepted() {
        let a = annotations(&[
            (PAUSED_ANNOTATION, "r"),
            (PAUSED_AT_ANNOTATION, "2025-06-01T14:00:00+02:00"),
        ]);
        let pause = pause_from_annotations(&a).expect("paused");
        assert_eq!(pause.since, Some(ts("2025-06-01T12:00:00Z")));
        assert_eq!(pause.problem, None);
    }

    #[test]
    fn an_empty_reason_still_pauses() {
        let a = annotations(&[
            (PAUSED_ANNOTATION, ""),
            (PAUSED_AT_ANNOTATION, "2025-06-01T12:00:00Z"),
        ]);
        let pause = pause_from_annotations(&a).expect("paused");
        assert_eq!(pause.reason, "");
        assert_eq!(pause.by, None);
        assert_eq!(pause.problem, None);
    }

    #[test]
    fn a_missing_time_still_pauses_and_says_so() {
        let a = annotations(&[(PAUSED_ANNOTATION, "r"), (PAUSED_BY_ANNOTATION, "bob")]);
        let pause = pause_from_annotations(&a).expect("paused");
        assert_eq!(pause.since, None);
        assert_eq!(pause.by.as_deref(), Some("bob"));
        assert_eq!(
            pause.problem.as_deref(),
            Some("nodemedic.io/paused-at is missing")
        );
        let first_seen = ts("2025-06-01T12:00:00Z");
        assert_eq!(pause.since_or(first_seen), first_seen);
    }

    #[test]
    fn an_unparseable_time_still_pauses_and_says_so() {
        for bad in [
            "yesterday",
            "",
            "2025-06-01",
            "2025-06-01T12:00:00",
            "2025-13-01T00:00:00Z",
        ] {
            let a = annotations(&[(PAUSED_ANNOTATION, "r"), (PAUSED_AT_ANNOTATION, bad)]);
            let pause = pause_from_annotations(&a).expect("a malformed time is still a pause");
            assert_eq!(pause.since, None, "{bad:?}");
            let problem = pause.problem.expect("problem");
            assert!(problem.contains("is not an RFC 3339 time"), "{problem}");
        }
    }

    #[test]
    fn a_future_time_still_pauses_and_says_so() {
        let now = ts("2025-06-01T12:00:00Z");
        let a = annotations(&[
            (PAUSED_ANNOTATION, "r"),
            (PAUSED_AT_ANNOTATION, "2025-06-01T13:00:00Z"),
        ]);
        let pause = pause_from_annotations_at(&a, now).expect("paused");
        assert_eq!(pause.since, None);
        assert_eq!(
            pause.problem.as_deref(),
            Some("nodemedic.io/paused-at 2025-06-01T13:00:00Z is in the future (3600s ahead)")
        );
        // Within the skew tolerance it is taken as written.
        let near = annotations(&[
            (PAUSED_ANNOTATION, "r"),
            (PAUSED_AT_ANNOTATION, "2025-06-01T12:00:20Z"),
        ]);
        let pause = pause_from_annotations_at(&near, now).expect("paused");
        assert_eq!(pause.since, Some(ts("2025-06-01T12:00:20Z")));
        assert_eq!(pause.problem, None);
    }

    #[test]
    fn texts_are_bounded() {
        let long = "é".repeat(2000);
        let huge_time = "x".repeat(5000);
        let a = annotations(&[
            (PAUSED_ANNOTATION, &long),
            (PAUSED_BY_ANNOTATION, &long),
            (PAUSED_AT_ANNOTATION, &huge_time),
        ]);
        let pause = pause_from_annotations(&a).expect("paused");
        assert!(pause.reason.len() <= MAX_PAUSE_TEXT);
        assert!(pause.reason.ends_with('…'));
        assert!(
            pause
                .by
                .as_deref()
                .is_some_and(|b| b.len() <= MAX_PAUSE_TEXT)
        );
        assert!(pause.problem.as_deref().is_some_and(|p| p.len() < 200));
    }

    #[test]
    fn blank_paused_by_is_nobody() {
        let a = annotations(&[(PAUSED_ANNOTATION, "r"), (PAUSED_BY_ANNOTATION, "  ")]);
        assert_eq!(pause_from_annotations(&a).expect("paused").by, None);
    }

    #[test]
    fn written_annotations_read_back() {
        let at = ts("2025-06-01T12:00:00.123456Z");
        let written = pause_annotations("maintenance", "carol", at);
        assert_eq!(written[PAUSED_AT_ANNOTATION], "2025-06-01T12:00:00Z");
        let pause = pause_from_annotations(&written).expect("paused");
        assert_eq!(pause.reason, "maintenance");
        assert_eq!(pause.by.as_deref(), Some("carol"));
        assert_eq!(pause.since, Some(ts("2025-06-01T12:00:00Z")));
        assert_eq!(pause.problem, None);
        assert_eq!(PAUSE_ANNOTATIONS.len(), written.len());
        assert!(PAUSE_ANNOTATIONS.iter().all(|k| written.contains_key(*k)));
    }

    #[test]
    fn kinds_are_metric_words() {
        assert_eq!(PauseKind::Policy.as_str(), "policy");
        assert_eq!(PauseKind::Node.as_str(), "node");
    }
}
