//! Rate limits: how long to wait when the relay answers "rate limited", and for how long to
//! keep trying. Every driver (the session's connection, the load generators) asks here, so the
//! rule is written once.

use std::time::Duration;

/// The longest single wait, whatever the relay asks (a hostile relay must not park a client).
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// How long a request is retried in total before the rate limit reaches the caller.
pub const BUDGET: Duration = Duration::from_secs(30);

/// The wait the relay's `retry_after_ms` asks for, between 1 ms and [`MAX_WAIT`].
pub fn wait_for(retry_after_ms: u32) -> Duration {
    Duration::from_millis(u64::from(retry_after_ms)).clamp(Duration::from_millis(1), MAX_WAIT)
}

/// The waits of one request, within a total budget.
#[derive(Clone, Debug)]
pub struct Backoff {
    waited: Duration,
    budget: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BUDGET)
    }
}

impl Backoff {
    /// A request that may wait `budget` in total.
    pub fn new(budget: Duration) -> Self {
        Self {
            waited: Duration::ZERO,
            budget,
        }
    }

    /// After a "rate limited" answer: how long to wait before sending the request again, or
    /// `None` once the budget is spent (give the caller the error).
    pub fn next(&mut self, retry_after_ms: u32) -> Option<Duration> {
        if self.waited >= self.budget {
            return None;
        }
        let wait = wait_for(retry_after_ms);
        self.waited += wait;
        Some(wait)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_bounded_and_the_budget_runs_out() {
        assert_eq!(wait_for(0), Duration::from_millis(1));
        assert_eq!(wait_for(250), Duration::from_millis(250));
        assert_eq!(wait_for(u32::MAX), MAX_WAIT);
        let mut b = Backoff::new(Duration::from_secs(10));
        assert_eq!(b.next(4_000), Some(Duration::from_secs(4)));
        assert_eq!(b.next(4_000), Some(Duration::from_secs(4)));
        assert_eq!(b.next(4_000), Some(Duration::from_secs(4)));
        // 12 s waited: the next answer goes to the caller.
        assert_eq!(b.next(4_000), None);
    }
}
