//! Per-project rate limits: a token bucket per project (`governor`).

use std::{num::NonZeroU32, time::Duration};

use governor::{Quota, RateLimiter, clock::Clock};

type Keyed = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    governor::clock::DefaultClock,
>;

/// `rate` units per second per project, at most `burst` at once.
#[derive(Debug)]
pub struct ProjectRate {
    limiter: Keyed,
    pub rate: u32,
    pub burst: u32,
}

/// Why units were not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDenied {
    /// Over the rate: retry after this long.
    Wait(Duration),
    /// More units than the burst: never granted at once.
    OverBurst,
}

impl ProjectRate {
    /// A zero rate is taken as 1/s; a zero burst as the rate.
    pub fn new(rate: u32, burst: u32) -> Self {
        let r = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let b = NonZeroU32::new(burst).unwrap_or(r);
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(r).allow_burst(b)),
            rate: r.get(),
            burst: b.get(),
        }
    }

    /// Takes `units` from `project`'s budget (0 units always pass).
    pub fn check(&self, project: &str, units: u64) -> Result<(), RateDenied> {
        let Some(n) = NonZeroU32::new(u32::try_from(units).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        match self.limiter.check_key_n(&project.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(RateDenied::Wait(
                not_until.wait_time_from(governor::clock::DefaultClock::default().now()),
            )),
            Err(_) => Err(RateDenied::OverBurst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_have_their_own_budget() {
        let rate = ProjectRate::new(1, 2);
        assert_eq!(rate.check("a", 2), Ok(()));
        assert!(matches!(rate.check("a", 1), Err(RateDenied::Wait(w)) if w > Duration::ZERO));
        assert_eq!(
            rate.check("b", 1),
            Ok(()),
            "another project is not held back"
        );
        assert_eq!(rate.check("b", 3), Err(RateDenied::OverBurst));
        assert_eq!(rate.check("a", 0), Ok(()));
    }
}
