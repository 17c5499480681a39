//! Restart backoff: a crashed worker is replaced at once, but one that keeps crashing is
//! replaced after a growing delay, so a crash loop does not eat the machine. The arbiter records
//! here only the crashes that look like a loop: workers that died without ever serving.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Crashes within this window count towards the backoff.
const WINDOW: Duration = Duration::from_secs(30);
/// The longest delay between replacements.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// Recent crashes and the delay they imply.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    crashes: VecDeque<Instant>,
}

impl Backoff {
    /// Records a crash at `now`.
    pub(crate) fn record(&mut self, now: Instant) {
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            self.crashes.pop_front();
        }
    }

    /// How long to wait, from the last crash, before the next replacement: none for the first
    /// two crashes in the window, then 250 ms doubling up to 10 s.
    pub(crate) fn delay(&self) -> Duration {
        match self.crashes.len() {
            0..=2 => Duration::ZERO,
            n => (Duration::from_millis(250) * 2u32.saturating_pow((n - 3) as u32).min(1 << 10))
                .min(MAX_DELAY),
        }
    }

    /// When the next replacement may start.
    pub(crate) fn next_start(&self) -> Option<Instant> {
        self.crashes.back().map(|last| *last + self.delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_crashes_restart_at_once_then_backoff_grows_and_caps() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        b.record(t0);
        assert_eq!(b.delay(), Duration::ZERO);
        b.record(t0 + Duration::from_millis(10));
        assert_eq!(b.delay(), Duration::ZERO);
        b.record(t0 + Duration::from_millis(20));
        assert_eq!(b.delay(), Duration::from_millis(250));
        b.record(t0 + Duration::from_millis(30));
        assert_eq!(b.delay(), Duration::from_millis(500));
        for i in 0..20 {
            b.record(t0 + Duration::from_millis(40 + i));
        }
        assert_eq!(b.delay(), MAX_DELAY);
        assert_eq!(
            b.next_start(),
            Some(t0 + Duration::from_millis(59) + MAX_DELAY)
        );
    }

    #[test]
    fn old_crashes_are_forgotten() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        for i in 0..5 {
            b.record(t0 + Duration::from_millis(i));
        }
        assert!(b.delay() > Duration::ZERO);
        b.record(t0 + WINDOW + Duration::from_secs(1));
        assert_eq!(
            b.delay(),
            Duration::ZERO,
            "a crash long after the others starts over"
        );
    }
}
