//! A circuit breaker per route and node: after `failures` failures in a row (unreachable,
//! timeout, 5xx) the circuit opens and requests are refused at once for `open_for`; then one trial
//! request goes through (half-open): its success closes the circuit, its failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the circuit stands, as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial is in flight since `since`; a trial that never reports (its client left) is
    /// replaced by another after `open_for`.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Lets a request through, or says how long until the circuit may let one through.
    pub fn allow(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(until - now),
            State::HalfOpen { since } if now < since + self.open_for => Err(since + self.open_for - now),
            State::Open { .. } | State::HalfOpen { .. } => {
                *state = State::HalfOpen { since: now };
                Ok(())
            }
        }
    }

    /// Records how a request that was let through ended.
    pub fn record(&self, success: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = match (&*state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.failures_to_open => {
                State::Closed { failures: failures + 1 }
            }
            (State::Open { until }, false) => State::Open { until: *until },
            (_, false) => State::Open { until: Instant::now() + self.open_for },
        };
    }

    pub fn state(&self) -> BreakerState {
        match *self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Breaker, BreakerState};

    #[test]
    fn the_circuit_opens_after_failures_in_a_row_and_one_trial_closes_it() {
        // Periods long enough that a loaded machine does not pass one between two calls.
        let breaker = Breaker::new(3, Duration::from_millis(300));
        for _ in 0..2 {
            assert!(breaker.allow().is_ok());
            breaker.record(false);
        }
        breaker.record(true); // a success in between starts the count again
        for _ in 0..3 {
            assert!(breaker.allow().is_ok());
            breaker.record(false);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.allow().unwrap_err() <= Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(320));
        assert!(breaker.allow().is_ok(), "one trial after the open period");
        assert!(breaker.allow().is_err(), "only one trial at a time");
        breaker.record(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_trial_opens_the_circuit_again() {
        let breaker = Breaker::new(1, Duration::from_millis(300));
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(320));
        assert!(breaker.allow().is_ok());
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.allow().is_err());
    }
}
