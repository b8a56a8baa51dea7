//! Wall-clock time, injectable so that timer tests run on virtual time.
//!
//! Message expiry, burn-on-read, the relay's delete-by times and the timestamps on what a
//! client sends are all wall-clock milliseconds since the Unix epoch, while waiting is done
//! with tokio timers. Both the session engine and the relay take a [`Clock`] so that a test
//! can drive the two from one source: [`Clock::virtual_at`] counts wall time from tokio's
//! clock, so `tokio::time::pause` and `tokio::time::advance` move the wall clock and fire the
//! tokio timers together, and no test has to sleep for a timer to fall due.
//!
//! This is its own top module, with no dependencies, because both `session` and `relay` need
//! it and the leaves they share (`crypto`, `protocol`) must not mention tokio.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A source of wall-clock time. Cheap to copy; holds no secrets.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    source: Source,
    /// Added to every reading (a skewed device clock, for tests of the clock-skew rule).
    offset_ms: i64,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    /// The operating system's clock.
    System,
    /// `epoch_ms` at `base`, moving with tokio's clock from there.
    Virtual { epoch_ms: u64, base: Instant },
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The operating system's wall clock (what every binary uses).
    pub fn system() -> Self {
        Self {
            source: Source::System,
            offset_ms: 0,
        }
    }

    /// A clock that reads `epoch_ms` now and then moves with tokio's clock: paused, it stands
    /// still; `tokio::time::advance` moves it by exactly the advance.
    ///
    /// Read it from the runtime whose time drives it (a task or a `spawn_blocking` closure):
    /// a thread outside any runtime sees tokio's unpaused clock.
    pub fn virtual_at(epoch_ms: u64) -> Self {
        Self {
            source: Source::Virtual {
                epoch_ms,
                base: Instant::now(),
            },
            offset_ms: 0,
        }
    }

    /// [`Clock::virtual_at`] starting from the system's current time, so the timestamps a test
    /// writes look like ordinary ones.
    pub fn virtual_now() -> Self {
        Self::virtual_at(Self::system().now_ms())
    }

    /// This clock shifted by `offset_ms` (positive: ahead).
    #[must_use]
    pub fn with_offset(self, offset_ms: i64) -> Self {
        Self {
            offset_ms: self.offset_ms.saturating_add(offset_ms),
            ..self
        }
    }

    /// Milliseconds since the Unix epoch (0 for a system clock set before 1970).
    pub fn now_ms(&self) -> u64 {
        let raw = match self.source {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            Source::Virtual { epoch_ms, base } => {
                let elapsed = Instant::now().saturating_duration_since(base).as_millis();
                epoch_ms.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
            }
        };
        raw.saturating_add_signed(self.offset_ms)
    }

    /// Whole seconds since the Unix epoch.
    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// The tokio instant at which this clock will read `at_ms` (now, if that has passed), for
    /// arming a timer at a wall-clock time.
    pub fn deadline(&self, at_ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(at_ms.saturating_sub(self.now_ms()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_virtual_clock_moves_with_tokio_time_only() {
        let c = Clock::virtual_at(1_000_000);
        assert_eq!(c.now_ms(), 1_000_000);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now_ms(), 1_000_000, "paused: real time does not move it");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(c.now_ms(), 1_001_500);
        assert_eq!(c.now_secs(), 1001);
        let ahead = c.with_offset(86_400_000);
        assert_eq!(ahead.now_ms(), 1_001_500 + 86_400_000);
        assert_eq!(
            c.with_offset(-2_000_000).now_ms(),
            0,
            "saturates at the epoch"
        );
        // A timer armed for a wall-clock time fires when the clock reads it.
        let at = c.now_ms() + 10_000;
        tokio::time::sleep_until(c.deadline(at)).await;
        assert_eq!(c.now_ms(), at);
        // spawn_blocking closures see the same paused clock.
        let inside = tokio::task::spawn_blocking(move || c.now_ms())
            .await
            .unwrap();
        assert_eq!(inside, at);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(Clock::system().now_secs() > 1_577_836_800);
        assert!(Clock::default().now_ms() > 1_577_836_800_000);
    }
}
