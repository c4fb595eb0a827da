//! The controller's clock: the system clock in production; simulated time (a start instant
//! and a speed-up factor) for tests and the demo, so a night passes in seconds.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

/// Schedule time.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// Real time.
    System,
    /// `start + (real elapsed x speed)`.
    Simulated {
        /// Schedule time at `origin`.
        start: Timestamp,
        /// Real instant the simulation started.
        origin: Instant,
        /// How many schedule seconds pass per real second.
        speed: f64,
    },
}

impl Clock {
    /// Simulated time starting now at `start`, running `speed` times faster than real time.
    pub fn simulated(start: Timestamp, speed: f64) -> Self {
        Self::Simulated {
            start,
            origin: Instant::now(),
            speed: speed.max(f64::MIN_POSITIVE),
        }
    }

    /// The current schedule time.
    pub fn now(&self) -> Timestamp {
        match self {
            Self::System => Timestamp::now(),
            Self::Simulated {
                start,
                origin,
                speed,
            } => {
                let elapsed = origin.elapsed().as_secs_f64() * speed;
                *start + SignedDuration::from_secs_f64(elapsed)
            }
        }
    }

    /// The real time to wait until schedule time `at` (zero when it has passed).
    pub fn real_delay_until(&self, at: Timestamp) -> Duration {
        let ahead = at.duration_since(self.now());
        if ahead <= SignedDuration::ZERO {
            return Duration::ZERO;
        }
        let secs = ahead.as_secs_f64()
            / match self {
                Self::System => 1.0,
                Self::Simulated { speed, .. } => *speed,
            };
        Duration::from_secs_f64(secs)
    }

    /// Schedule-time length of a real duration.
    pub fn scaled(&self, real: Duration) -> SignedDuration {
        let factor = match self {
            Self::System => 1.0,
            Self::Simulated { speed, .. } => *speed,
        };
        SignedDuration::from_secs_f64(real.as_secs_f64() * factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_time_runs_faster() {
        let start: Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        let clock = Clock::simulated(start, 3600.0);
        std::thread::sleep(Duration::from_millis(20));
        let now = clock.now();
        assert!(
            now.duration_since(start) >= SignedDuration::from_secs(60),
            "{now}"
        );
        let delay = clock.real_delay_until(now + SignedDuration::from_hours(1));
        assert!(delay <= Duration::from_millis(1001), "{delay:?}");
        assert_eq!(clock.real_delay_until(start), Duration::ZERO);
    }
}
