//! The one definition of "this node's remediation occupies one of the
//! policy's `maxConcurrentActions` slots".

use nodemedic_crds::remediation::{Episode, StepPhase, StepRecord};

use super::policy::Step;

/// Whether a step record carried out a disruptive action: it started one
/// (`started_at` is the budget's start) and did not end Skipped (an
/// exclusion or protection applied, or the agent refused: nothing
/// happened). Steps that joined nodemedic's own cordon or taint, or found
/// someone else's, have no `started_at`: they disrupted nothing.
pub fn carried_out(record: &StepRecord) -> bool {
    record.action.is_disruptive()
        && record.started_at.is_some()
        && matches!(
            record.phase,
            StepPhase::Started | StepPhase::Done | StepPhase::Failed
        )
}

/// Whether every step of `ladder` has reached a final phase in `episode`.
pub fn exhausted(episode: &Episode, ladder: &[Step]) -> bool {
    !ladder.is_empty()
        && ladder.iter().all(|s| {
            episode
                .step(s.index, s.action)
                .is_some_and(|r| r.phase.is_final())
        })
}

/// Whether an open episode occupies a concurrency slot: a disruptive step
/// is being carried out, or the episode took a slot (`slotSince`: it started
/// a disruptive step) and its ladder still has steps to come. An exhausted
/// ladder frees its slot (the node then needs a person, not another slot);
/// so do joined, foreign, Skipped and refunded steps, which carried out
/// nothing. A ladder edit that gives an exhausted episode new rungs does not
/// give it its slot back: it competes for one like any other node.
pub fn occupies_slot(episode: &Episode, ladder: &[Step]) -> bool {
    let in_flight = episode
        .steps
        .iter()
        .any(|r| carried_out(r) && r.phase == StepPhase::Started);
    let holds = episode.slot_since.is_some()
        && episode.steps.iter().any(carried_out)
        && !exhausted(episode, ladder);
    in_flight || holds
}
