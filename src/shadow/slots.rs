//! A route's mirror capacity: at most `shadow.max_in_flight` mirrors at
//! once and, while more than half of them are taken, new mirrors admitted
//! at an even pace instead of in bursts.
//!
//! Why pace: a semaphore alone lets bursts through. Behind a candidate that
//! answers in one second, the first thousand mirrors start within a few
//! milliseconds, come back within a few milliseconds a second later, and
//! the freed slots are taken again at once by the next thousand requests:
//! every second the shadow thread, the sockets and the candidate get a
//! thousand exchanges at once, and the client requests of those
//! milliseconds share the cores with them (that burst was the client's
//! p99 in `bench/run.sh`). A never-answering candidate does the same every
//! `shadow.timeout`.
//!
//! The pace follows Little's law: with `max_in_flight` slots each held for
//! `L` on average, the route can start at most `max_in_flight / L` mirrors
//! a second anyway. While more than half of the slots are taken, a new
//! mirror is admitted only on that schedule (the generic cell rate
//! algorithm, with a tolerance of a few intervals; one atomic
//! compare-and-swap), so the same number of mirrors runs, spread evenly.
//! Below half, before any mirror has finished, and with a `max_in_flight`
//! under [`MIN_PACED`], nothing is paced: a quiet route or a small cap
//! behaves as a plain semaphore. A mirror that is not admitted is dropped
//! and counted as `overload`, like one that finds every slot taken.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Caps below this are never paced: their bursts are too small to matter.
const MIN_PACED: usize = 64;
/// Paced admissions may run ahead of the schedule by this many intervals.
const TOLERANCE_INTERVALS: u64 = 8;
/// Weight of a new slot hold time in the moving average: 1/8.
const AVERAGE_SHIFT: u32 = 3;

/// The mirror slots of one route.
pub struct MirrorSlots {
    slots: Arc<Semaphore>,
    max: usize,
    pace: Arc<Pace>,
}

/// One admitted mirror's slot, held until the mirror ends; its hold time
/// feeds the pace.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    pace: Arc<Pace>,
    since: Instant,
}

#[derive(Debug)]
struct Pace {
    epoch: Instant,
    /// Moving average of how long a slot is held, in nanoseconds; 0 until
    /// the first mirror ends.
    hold_ns: AtomicU64,
    /// When the next paced admission is due, in nanoseconds since `epoch`.
    due_ns: AtomicU64,
}

impl MirrorSlots {
    pub fn new(max_in_flight: usize) -> MirrorSlots {
        MirrorSlots {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max: max_in_flight,
            pace: Arc::new(Pace {
                epoch: Instant::now(),
                hold_ns: AtomicU64::new(0),
                due_ns: AtomicU64::new(0),
            }),
        }
    }

    /// A slot for one more mirror, or `None` (overload): every slot is
    /// taken, or more than half are and the pace says not yet.
    pub fn try_admit(&self) -> Option<Slot> {
        // The slot first: a full route must not book the pace's schedule.
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        // Mirrors running besides this one.
        let others = (self.max - self.slots.available_permits()).saturating_sub(1);
        if self.max >= MIN_PACED && others * 2 > self.max && !self.pace.admit(self.max) {
            return None; // the permit goes back as it drops
        }
        Some(Slot {
            _permit: permit,
            pace: self.pace.clone(),
            since: Instant::now(),
        })
    }

    /// Mirrors running now.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

impl Pace {
    /// Whether a paced admission is due now (and if so, books it).
    fn admit(&self, max: usize) -> bool {
        let hold = self.hold_ns.load(Ordering::Relaxed);
        let interval = hold / max as u64;
        if interval == 0 {
            // No mirror has finished yet, or they finish faster than the
            // clock can tell apart: nothing to spread.
            return true;
        }
        let now = nanos(self.epoch.elapsed());
        let latest = now.saturating_add(interval * TOLERANCE_INTERVALS);
        self.due_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |due| {
                (due <= latest).then(|| due.max(now) + interval)
            })
            .is_ok()
    }

    fn record(&self, held: Duration) {
        let held = nanos(held).max(1);
        // Racing updates may lose one sample: harmless for an average.
        let old = self.hold_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            held
        } else {
            old - (old >> AVERAGE_SHIFT) + (held >> AVERAGE_SHIFT)
        };
        self.hold_ns.store(new.max(1), Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pace.record(self.since.elapsed());
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_semaphore_until_a_mirror_has_finished() {
        let slots = MirrorSlots::new(8);
        let held: Vec<Slot> = (0..8).filter_map(|_| slots.try_admit()).collect();
        assert_eq!(held.len(), 8);
        assert!(slots.try_admit().is_none(), "every slot is taken");
        drop(held);
        assert_eq!(slots.in_flight(), 0);
    }

    #[test]
    fn small_capacities_are_never_paced() {
        // Slow mirrors (1 s each): the whole cap is admitted at once, as
        // with a semaphore, time after time.
        let slots = MirrorSlots::new(MIN_PACED - 1);
        slots.pace.record(Duration::from_secs(1));
        for _ in 0..3 {
            let held: Vec<Slot> = (0..MIN_PACED).filter_map(|_| slots.try_admit()).collect();
            assert_eq!(held.len(), MIN_PACED - 1);
        }
    }

    #[test]
    fn beyond_half_of_the_slots_admissions_follow_the_pace() {
        let slots = MirrorSlots::new(1024);
        // Mirrors that last 100 s: one admission every ~98 ms once paced.
        slots.pace.record(Duration::from_secs(100));
        let held: Vec<Slot> = (0..1024).filter_map(|_| slots.try_admit()).collect();
        // Up to half taken (and the one that makes it more) is free of the
        // pace, then the tolerance, then nothing: the loop runs far faster
        // than one interval.
        let paced = held.len() - 513;
        assert!(
            (1..=TOLERANCE_INTERVALS as usize + 1).contains(&paced),
            "{} admitted beyond half",
            paced
        );
        drop(held);
        // Below half again: admitted whatever the pace says.
        assert!(slots.try_admit().is_some());
    }

    #[test]
    fn the_pace_follows_the_average_hold_time() {
        let slots = MirrorSlots::new(100);
        slots.pace.record(Duration::from_millis(1000));
        for _ in 0..64 {
            slots.pace.record(Duration::from_millis(10));
        }
        let hold = slots.pace.hold_ns.load(Ordering::Relaxed);
        assert!(
            (10_000_000..12_000_000).contains(&hold),
            "average {hold} ns after many 10 ms holds"
        );
    }
}
