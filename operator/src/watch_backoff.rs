//! How the operator's watches wait after an error.
//!
//! kube-runtime's default (client-go's) backs off up to 30 s, which is kind
//! to an API server that thousands of agents watch. The operator runs one
//! or two replicas with five watches; and after an API server restart the
//! first answer every watch gets is an error (410 Expired: its resource
//! version is older than the new server's cache), so with the default the
//! caches — and the acting fence, which follows the Lease through a watch —
//! stayed up to 30 s behind a server that was already back. Here the wait
//! doubles from 0.5 s to at most 4 s, and starts again after any event.

use std::time::Duration;

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(500);
const MAX: Duration = Duration::from_secs(4);

/// 0.5 s, 1 s, 2 s, 4 s, 4 s, … until [`Backoff::reset`].
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(MAX);
        Some(wait)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_four_seconds_and_starts_again_after_a_reset() {
        let mut b = WatchBackoff::default();
        let waits: Vec<u64> = b.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 4000, 4000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST));
    }
}
