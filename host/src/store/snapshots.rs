//! Recent stats and health answers, reused while nothing changed.

use crate::model::{HealthReport, Stats};
use std::time::Instant;

/// How old the figures behind `/metrics` may be. A scrape never waits for
/// a listing of every workspace more often than this.
pub const METRICS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a stats or health answer is reused. Probes and dashboards poll
/// far more often than workspaces change; every change made through this
/// manager refreshes the answers at once, changes by another process (a
/// CLI beside the server) show within this time.
pub const SNAPSHOT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Stats and health answers with the change counter they were computed at.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    generation: std::sync::atomic::AtomicU64,
    pub(crate) stats: parking_lot::Mutex<Option<(Instant, u64, Stats)>>,
    pub(crate) health: parking_lot::Mutex<Option<(Instant, u64, HealthReport)>>,
}

impl Snapshots {
    /// Something changed: answers computed before are stale.
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The last answer if younger than `max_age`, changed since or not.
    pub(crate) fn get_recent<T: Clone>(
        &self,
        slot: &parking_lot::Mutex<Option<(Instant, u64, T)>>,
        max_age: std::time::Duration,
    ) -> Option<T> {
        slot.lock()
            .as_ref()
            .filter(|(at, _, _)| at.elapsed() < max_age)
            .map(|(_, _, v)| v.clone())
    }

    pub(crate) fn get<T: Clone>(
        &self,
        slot: &parking_lot::Mutex<Option<(Instant, u64, T)>>,
    ) -> Option<T> {
        let now_gen = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        slot.lock()
            .as_ref()
            .filter(|(at, generation, _)| *generation == now_gen && at.elapsed() < SNAPSHOT_TTL)
            .map(|(_, _, v)| v.clone())
    }

    pub(crate) fn put<T>(
        &self,
        slot: &parking_lot::Mutex<Option<(Instant, u64, T)>>,
        generation: u64,
        value: T,
    ) {
        *slot.lock() = Some((Instant::now(), generation, value));
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}
