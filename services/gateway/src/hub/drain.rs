//! The plan of a shutdown drain: in which wave each socket is closed and when its
//! client is told to come back.
//!
//! A gateway that closed all its sockets at once would send every client to the other
//! gateways in the same instant, a reconnect storm of registrations and `sync` calls.
//! Instead the sockets are closed in waves spread evenly over the drain window, and
//! each client's `reconnect` frame names a delay inside its wave's slice of the
//! window, so clients that follow `after_ms` come back at an even rate and clients
//! that simply reconnect on close come back wave by wave. The plan is pure (sockets
//! are indices into one snapshot) so its spread is tested without timers.

use std::ops::Range;
use std::time::Duration;

/// Target spacing of the waves: one per second for windows of a few seconds or more.
pub const WAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Even a short window is split into this many waves (when there are enough sockets),
/// so a short window still spreads its reconnects.
pub const MIN_WAVES: usize = 4;
/// A long window gets at most this many waves (each then wider than a second).
pub const MAX_WAVES: usize = 60;

/// One batch of sockets closed together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wave {
    /// When the wave closes its sockets, counted from the start of the drain.
    pub offset: Duration,
    /// Its sockets, as indices into the snapshot the plan was made for.
    pub sockets: Range<usize>,
}

/// When each of `sockets` sockets closes during a drain of `window`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainPlan {
    window: Duration,
    waves: Vec<Wave>,
}

impl DrainPlan {
    /// Splits `sockets` sockets into waves spread evenly over `window`: the first wave
    /// at the start, the others at equal steps, wave sizes differing by at most one.
    /// No sockets: no wave. A zero window: one wave, at once.
    pub fn new(sockets: usize, window: Duration) -> Self {
        let count = wave_count(sockets, window);
        let waves = (0..count)
            .map(|wave| Wave {
                offset: share(window, wave, count),
                sockets: wave * sockets / count..(wave + 1) * sockets / count,
            })
            .collect();
        Self { window, waves }
    }

    /// The waves, in the order they close.
    pub fn waves(&self) -> &[Wave] {
        &self.waves
    }

    /// The time between two waves (the whole window when there is one wave).
    pub fn wave_interval(&self) -> Duration {
        share(self.window, 1, self.waves.len().max(1))
    }

    /// When the wave after `wave` starts; the end of the window for the last one.
    pub fn next_offset(&self, wave: usize) -> Duration {
        self.waves
            .get(wave + 1)
            .map_or(self.window, |next| next.offset)
    }

    /// The `after_ms` of socket `index`'s `reconnect` frame: its wave's offset plus its
    /// position's share of the wave's interval, so the clients of all waves together
    /// are asked back at an even rate over the window. `None` for an index outside
    /// the plan.
    pub fn reconnect_after(&self, index: usize) -> Option<Duration> {
        let wave = self.waves.iter().find(|w| w.sockets.contains(&index))?;
        let position = index - wave.sockets.start;
        Some(wave.offset + share(self.wave_interval(), position, wave.sockets.len()))
    }
}

/// A wave per [`WAVE_INTERVAL`] of the window, within [`MIN_WAVES`]..=[`MAX_WAVES`],
/// never more waves than sockets.
fn wave_count(sockets: usize, window: Duration) -> usize {
    if sockets == 0 {
        return 0;
    }
    if window.is_zero() {
        return 1;
    }
    let per_interval = (window.as_nanos() / WAVE_INTERVAL.as_nanos()) as usize;
    per_interval.clamp(MIN_WAVES, MAX_WAVES).min(sockets)
}

/// `part / whole` of `total` (`whole` > 0), without floating point.
fn share(total: Duration, part: usize, whole: usize) -> Duration {
    let nanos = total.as_nanos() * part as u128 / whole.max(1) as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_wave_per_second_of_the_window() {
        let plan = DrainPlan::new(3000, secs(30));
        assert_eq!(plan.waves().len(), 30);
        let offsets: Vec<Duration> = plan.waves().iter().map(|w| w.offset).collect();
        assert_eq!(offsets, (0..30).map(secs).collect::<Vec<_>>());
        assert!(plan.waves().iter().all(|w| w.sockets.len() == 100));
        assert_eq!(plan.wave_interval(), secs(1));
        assert_eq!(plan.next_offset(29), secs(30));
    }

    #[test]
    fn short_windows_still_get_several_waves_and_long_ones_are_capped() {
        let short = DrainPlan::new(100, secs(2));
        assert_eq!(short.waves().len(), MIN_WAVES);
        assert_eq!(short.wave_interval(), Duration::from_millis(500));
        assert_eq!(short.waves()[3].offset, Duration::from_millis(1500));
        let long = DrainPlan::new(100_000, secs(600));
        assert_eq!(long.waves().len(), MAX_WAVES);
        assert_eq!(long.wave_interval(), secs(10));
    }

    #[test]
    fn never_more_waves_than_sockets_and_none_without_sockets() {
        assert_eq!(DrainPlan::new(2, secs(30)).waves().len(), 2);
        assert!(DrainPlan::new(0, secs(30)).waves().is_empty());
        assert_eq!(DrainPlan::new(0, secs(30)).reconnect_after(0), None);
    }

    #[test]
    fn a_zero_window_closes_everything_in_one_wave_at_once() {
        let plan = DrainPlan::new(500, Duration::ZERO);
        assert_eq!(
            plan.waves(),
            &[Wave {
                offset: Duration::ZERO,
                sockets: 0..500
            }]
        );
        assert_eq!(plan.reconnect_after(499), Some(Duration::ZERO));
    }

    #[test]
    fn every_socket_is_in_exactly_one_wave_and_sizes_differ_by_at_most_one() {
        for (sockets, window) in [(7, secs(4)), (1001, secs(30)), (59, secs(90)), (1, secs(1))] {
            let plan = DrainPlan::new(sockets, window);
            let mut next = 0;
            for wave in plan.waves() {
                assert_eq!(wave.sockets.start, next, "waves are contiguous");
                next = wave.sockets.end;
            }
            assert_eq!(next, sockets, "every socket is covered");
            let sizes: Vec<usize> = plan.waves().iter().map(|w| w.sockets.len()).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(
                max.zip(min).is_some_and(|(max, min)| max - min <= 1),
                "{sizes:?}"
            );
            assert!(sizes.iter().all(|&s| s > 0), "no empty wave: {sizes:?}");
            let offsets: Vec<Duration> = plan.waves().iter().map(|w| w.offset).collect();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
            assert!(offsets.iter().all(|&o| o < window));
        }
    }

    #[test]
    fn reconnect_delays_lie_in_their_wave_and_spread_evenly_over_the_window() {
        let plan = DrainPlan::new(8, secs(4));
        let delays: Vec<Duration> = (0..8)
            .map(|i| plan.reconnect_after(i).expect("in the plan"))
            .collect();
        assert_eq!(
            delays,
            (0..8)
                .map(|i| Duration::from_millis(500 * i))
                .collect::<Vec<_>>()
        );
        for wave in plan.waves() {
            for index in wave.sockets.clone() {
                let after = plan.reconnect_after(index).expect("in the plan");
                assert!(after >= wave.offset && after < wave.offset + plan.wave_interval());
            }
        }
        assert_eq!(plan.reconnect_after(8), None);
    }
}
