//! A bounded queue in front of git network work (clone, fetch).
//!
//! At most `max_running` operations run at once, at most `max_per_host`
//! against one remote host, and at most `max_queued` wait for a slot, each
//! for at most `queue_wait`. A prepare that finds the queue full, or waits
//! too long, is refused as busy (HTTP 503) rather than holding a thread: a
//! tarpit remote can then occupy a few slots, never the whole service.

use crate::config::GitLimits;
use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::time::Instant;

/// The queue of one manager.
#[derive(Debug)]
pub struct GitQueue {
    limits: GitLimits,
    state: Mutex<QueueState>,
    freed: Condvar,
    gauges: QueueGauges,
}

/// What the queue exports as metrics.
#[derive(Debug, Clone, Default)]
pub struct QueueGauges {
    /// Operations holding a slot.
    pub running: Gauge,
    /// Operations waiting for one.
    pub queued: Gauge,
    /// Operations refused because the queue was full or the wait too long.
    pub rejected: Counter,
}

#[derive(Debug, Default)]
struct QueueState {
    running: usize,
    queued: usize,
    per_host: HashMap<String, usize>,
}

/// A slot in the queue; freed on drop.
#[derive(Debug)]
pub struct GitSlot<'a> {
    queue: &'a GitQueue,
    host: String,
}

impl GitQueue {
    /// A queue with `limits`, reporting through `gauges`.
    pub fn new(limits: GitLimits, gauges: QueueGauges) -> Self {
        GitQueue {
            limits,
            state: Mutex::new(QueueState::default()),
            freed: Condvar::new(),
            gauges,
        }
    }

    /// Wait for a slot for an operation against `host` (empty for local
    /// paths), or refuse as busy.
    pub fn enter(&self, host: &str) -> Result<GitSlot<'_>> {
        let limits = &self.limits;
        let mut state = self.state.lock();
        let has_room = |s: &QueueState| {
            s.running < limits.max_running
                && s.per_host.get(host).copied().unwrap_or(0) < limits.max_per_host
        };
        if !has_room(&state) {
            if state.queued >= limits.max_queued {
                self.gauges.rejected.inc();
                return Err(Error::busy(format!(
                    "{} git operations are running and {} waiting (the limits are \
                     WORKSPACE_GIT_MAX_RUNNING={}, WORKSPACE_GIT_MAX_PER_HOST={}, \
                     WORKSPACE_GIT_MAX_QUEUED={}); retry later",
                    state.running,
                    state.queued,
                    limits.max_running,
                    limits.max_per_host,
                    limits.max_queued
                )));
            }
            state.queued += 1;
            self.gauges.queued.set(state.queued as i64);
            let deadline = Instant::now() + limits.queue_wait;
            while !has_room(&state) {
                if self.freed.wait_until(&mut state, deadline).timed_out() && !has_room(&state) {
                    state.queued -= 1;
                    self.gauges.queued.set(state.queued as i64);
                    self.gauges.rejected.inc();
                    return Err(Error::busy(format!(
                        "waited {:?} for a git slot (WORKSPACE_GIT_QUEUE_WAIT_SECONDS); \
                         the remotes are slow or the service is overloaded: retry later",
                        limits.queue_wait
                    )));
                }
            }
            state.queued -= 1;
            self.gauges.queued.set(state.queued as i64);
        }
        state.running += 1;
        *state.per_host.entry(host.to_string()).or_default() += 1;
        self.gauges.running.set(state.running as i64);
        Ok(GitSlot {
            queue: self,
            host: host.to_string(),
        })
    }
}

impl Drop for GitSlot<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.state.lock();
        state.running -= 1;
        if let Some(n) = state.per_host.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                state.per_host.remove(&self.host);
            }
        }
        self.queue.gauges.running.set(state.running as i64);
        drop(state);
        self.queue.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn queue(running: usize, per_host: usize, queued: usize, wait_ms: u64) -> GitQueue {
        GitQueue::new(
            GitLimits {
                max_running: running,
                max_per_host: per_host,
                max_queued: queued,
                queue_wait: Duration::from_millis(wait_ms),
                ..GitLimits::default()
            },
            QueueGauges::default(),
        )
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_counts_it() {
        let q = queue(1, 1, 0, 10_000);
        let slot = q.enter("a").unwrap();
        let started = Instant::now();
        let err = q.enter("b").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Busy, "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(q.gauges.rejected.get(), 1);
        drop(slot);
        q.enter("b").unwrap();
    }

    #[test]
    fn one_host_cannot_take_every_slot() {
        let q = queue(4, 2, 4, 50);
        let _a1 = q.enter("tarpit").unwrap();
        let _a2 = q.enter("tarpit").unwrap();
        // A third on the same host waits, then is refused...
        assert_eq!(
            q.enter("tarpit").unwrap_err().kind(),
            crate::ErrorKind::Busy
        );
        // ...while another host still gets a slot at once.
        let _b = q.enter("github.com").unwrap();
        assert_eq!(q.gauges.running.get(), 3);
    }

    #[test]
    fn a_waiter_gets_the_slot_when_it_frees() {
        let q = std::sync::Arc::new(queue(1, 1, 1, 5_000));
        let slot = q.enter("a").unwrap();
        let q2 = q.clone();
        let waiter = std::thread::spawn(move || q2.enter("a").map(|_| ()));
        while q.gauges.queued.get() == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(slot);
        waiter.join().unwrap().unwrap();
        assert_eq!(q.gauges.queued.get(), 0);
    }
}
