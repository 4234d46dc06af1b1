//! Leases and liveness without synchronised clocks.
//!
//! A lease is a key in the leases bucket whose value names the worker running the stream.
//! The holder renews it every tick by a compare-and-set on the revision it last wrote; any
//! other write (another worker's claim) makes that compare-and-set fail, so at most one
//! worker ever holds a given revision.
//!
//! Expiry is judged by each observer on its own monotonic clock: a lease (or a worker's
//! heartbeat) is stale when its revision has not changed for a whole lease length *while the
//! observer was watching without a gap* ([`Observer`]). The holder, for its part, stops
//! publishing once a lease length has passed since it *sent* its last successful renewal
//! ([`Fence`]): the renewal was stored after it was sent, and every observer saw it after it
//! was stored, so the holder's deadline always comes before any observer may claim. Neither
//! side compares wall clocks; only the rates of the clocks need to agree.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What a stream's worker reports about it (the lease's value).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub worker: String,
    /// One more than the previous holder's: records carry it, so a consumer can tell owners
    /// apart even when a worker name comes back.
    pub epoch: u64,
    /// `starting`, `running`, `ended` (the source finished) or `failed` (with `reason`).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Records published by this holder.
    #[serde(default)]
    pub windows: u64,
    #[serde(default)]
    pub answers: u64,
    /// Answers per second over the holder's last minute.
    #[serde(default)]
    pub answers_per_s: f64,
    /// Wall-clock time (ms since the epoch) of the last window published, for status only.
    #[serde(default)]
    pub last_window_ms: Option<u64>,
    /// Stream time (ns) of the last window published.
    #[serde(default)]
    pub last_window_t_ns: Option<u64>,
    /// Records buffered (not yet published) and dropped past the buffer bound.
    #[serde(default)]
    pub buffered: usize,
    #[serde(default)]
    pub dropped: u64,
    /// Wall-clock ms of this write and the holder's lease length (status only).
    #[serde(default)]
    pub renewed_ms: u64,
    #[serde(default)]
    pub lease_ms: u64,
}

impl Lease {
    /// Whether the stream still needs a worker's time (failed and ended streams are held,
    /// so nobody retries them in a loop, but cost nothing).
    pub fn active(&self) -> bool {
        active(&self.state)
    }
}

/// Whether a stream in `state` needs a worker's time (`starting`, `running`).
pub fn active(state: &str) -> bool {
    state == "starting" || state == "running"
}

/// A worker's heartbeat (the workers bucket's value).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub worker: String,
    /// Balancing units this worker offers (`--capacity`).
    pub capacity: u32,
    /// At most this many streams (`--max-streams`).
    pub max_streams: usize,
    /// Streams held and their cost.
    pub streams: Vec<String>,
    pub load: u32,
    /// Wall-clock ms of this beat (status only; liveness uses [`Observer`]).
    pub beat_ms: u64,
    pub lease_ms: u64,
    pub version: String,
}

/// Judges staleness of keys by how long their revision stayed the same on this process's
/// clock. Observations only count while they are continuous: after a gap longer than
/// `max_gap` between two successful looks (this process was cut off, paused, or NATS was
/// down), every key's clock restarts, because the holders could not renew either.
#[derive(Debug)]
pub struct Observer {
    lease: Duration,
    max_gap: Duration,
    last_look: Option<Instant>,
    seen: HashMap<String, (u64, Instant)>,
}

impl Observer {
    pub fn new(lease: Duration, max_gap: Duration) -> Self {
        Self {
            lease,
            max_gap,
            last_look: None,
            seen: HashMap::new(),
        }
    }

    /// Call once per successful look at the bucket, before [`observe`](Self::observe).
    pub fn begin_look(&mut self, now: Instant) {
        if let Some(last) = self.last_look {
            if now.saturating_duration_since(last) > self.max_gap {
                for (_, since) in self.seen.values_mut() {
                    *since = now;
                }
            }
        }
        self.last_look = Some(now);
    }

    /// Records that `key` has `revision` now; returns whether it is still fresh.
    pub fn observe(&mut self, key: &str, revision: u64, now: Instant) -> bool {
        let e = self.seen.entry(key.to_owned()).or_insert((revision, now));
        if e.0 != revision {
            *e = (revision, now);
        }
        now.saturating_duration_since(e.1) < self.lease
    }

    /// Forgets keys that are gone from the bucket.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.seen.retain(|k, _| live(k));
    }
}

/// The holder's side: publishing is allowed until a lease length after the last renewal
/// that succeeded (counted from when it was sent). Shared between the lease loop and the
/// publisher.
#[derive(Debug)]
pub struct Fence {
    lease: Duration,
    inner: Mutex<FenceState>,
}

#[derive(Debug)]
struct FenceState {
    valid_until: Instant,
    revision: u64,
    lost: bool,
}

impl Fence {
    /// A fresh claim written with `revision`, sent at `sent`.
    pub fn new(lease: Duration, revision: u64, sent: Instant) -> Self {
        Self {
            lease,
            inner: Mutex::new(FenceState {
                valid_until: sent + lease,
                revision,
                lost: false,
            }),
        }
    }

    /// A renewal sent at `sent` was stored as `revision`.
    pub fn renewed(&self, revision: u64, sent: Instant) {
        let mut s = self.inner.lock();
        s.revision = revision;
        s.valid_until = s.valid_until.max(sent + self.lease);
    }

    /// Our own write of `revision` whose acknowledgement was lost: renew from it, without
    /// moving the deadline.
    pub fn adopt(&self, revision: u64) {
        self.inner.lock().revision = revision;
    }

    /// The lease is gone for good (another worker wrote it): never publish again.
    pub fn lose(&self) {
        self.inner.lock().lost = true;
    }

    pub fn revision(&self) -> u64 {
        self.inner.lock().revision
    }

    pub fn is_lost(&self) -> bool {
        self.inner.lock().lost
    }

    /// Whether a record may be published now.
    pub fn may_publish(&self, now: Instant) -> bool {
        let s = self.inner.lock();
        !s.lost && now < s.valid_until
    }

    /// Whether the lease outlived its last renewal (renewals are failing).
    pub fn lapsed(&self, now: Instant) -> bool {
        now >= self.inner.lock().valid_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn a_revision_unchanged_for_a_lease_length_is_stale() {
        let t0 = Instant::now();
        let mut o = Observer::new(LEASE, Duration::from_secs(3));
        for s in 0..=9 {
            let now = t0 + Duration::from_secs(s);
            o.begin_look(now);
            assert!(o.observe("cam", 5, now), "fresh after {s} s");
        }
        let now = t0 + Duration::from_secs(10);
        o.begin_look(now);
        assert!(!o.observe("cam", 5, now), "stale after a whole lease");
        assert!(o.observe("cam", 6, now), "a renewal makes it fresh again");
    }

    #[test]
    fn a_gap_in_watching_restarts_the_clocks() {
        let t0 = Instant::now();
        let mut o = Observer::new(LEASE, Duration::from_secs(3));
        o.begin_look(t0);
        assert!(o.observe("cam", 5, t0));
        // NATS was down for 60 s: nobody could renew, so nothing is stale yet.
        let back = t0 + Duration::from_secs(60);
        o.begin_look(back);
        assert!(o.observe("cam", 5, back));
        for s in 1..=9 {
            let later = back + Duration::from_secs(s);
            o.begin_look(later);
            assert!(o.observe("cam", 5, later), "fresh {s} s after the gap");
        }
        let expired = back + Duration::from_secs(10);
        o.begin_look(expired);
        assert!(!o.observe("cam", 5, expired));
    }

    #[test]
    fn the_holder_stops_before_any_observer_may_claim() {
        let sent = Instant::now();
        let f = Fence::new(LEASE, 1, sent);
        // An observer sees revision 1 no earlier than it was sent.
        let mut o = Observer::new(LEASE, Duration::from_secs(3));
        let seen = sent + Duration::from_millis(5);
        o.begin_look(seen);
        o.observe("cam", 1, seen);
        let deadline = sent + LEASE;
        assert!(f.may_publish(deadline - Duration::from_millis(1)));
        assert!(!f.may_publish(deadline));
        o.begin_look(deadline);
        assert!(
            o.observe("cam", 1, deadline),
            "the observer still sees it fresh when the holder stops"
        );
        f.renewed(2, sent + Duration::from_secs(3));
        assert!(f.may_publish(deadline));
        f.lose();
        assert!(!f.may_publish(sent), "a lost lease never publishes again");
    }
}
