//! Bounded queues with an explicit overflow policy, the only kind of edge between stages.
//!
//! `Realtime` never blocks the producer: when the queue is full the *oldest* item is dropped
//! and counted, so capture always sees fresh data. `Lossless` applies back-pressure: the
//! producer waits until the consumer catches up and nothing is lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use serde::{Deserialize, Serialize};

use crate::stop::StopToken;

/// What a full queue does to its producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// Drop the oldest queued item and count it; never block the producer.
    #[default]
    Realtime,
    /// Block the producer until there is room; never drop.
    Lossless,
}

/// Counters shared by both ends of a queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub received: AtomicU64,
}

impl QueueStats {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// The consumer of a queue went away (or, for [`QueueSender::send_until`], the stop token
/// fired first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("queue closed: the consuming stage has stopped")]
pub struct Closed;

/// What [`QueueReceiver::recv_until`] got.
#[derive(Debug)]
pub enum Recv<T> {
    Item(T),
    /// Nothing came before the timeout.
    Timeout,
    /// Every sender is gone and the queue is empty.
    Closed,
    /// The stop token fired.
    Stopped,
}

/// Producing end. Cloneable; all clones share the policy and counters.
pub struct QueueSender<T> {
    tx: Sender<T>,
    // A receiver clone lets a realtime sender evict the oldest item itself.
    evict: Receiver<T>,
    mode: QueueMode,
    /// Fires when the receiver is dropped (the sender's `evict` clone keeps the channel
    /// itself connected).
    closed: StopToken,
    stats: Arc<QueueStats>,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            evict: self.evict.clone(),
            mode: self.mode,
            closed: self.closed.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// Consuming end. Dropping it closes the queue for its senders.
pub struct QueueReceiver<T> {
    rx: Receiver<T>,
    closed: StopToken,
    stats: Arc<QueueStats>,
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        self.closed.trigger();
    }
}

/// A bounded queue of `capacity` (at least 1) with the given overflow policy.
pub fn bounded<T>(capacity: usize, mode: QueueMode) -> (QueueSender<T>, QueueReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let closed = StopToken::new();
    let stats = Arc::new(QueueStats::default());
    (
        QueueSender {
            tx,
            evict: rx.clone(),
            mode,
            closed: closed.clone(),
            stats: stats.clone(),
        },
        QueueReceiver { rx, closed, stats },
    )
}

impl<T> QueueSender<T> {
    /// Enqueue according to the policy. Returns the number of items dropped to make room
    /// (always 0 in lossless mode), or [`Closed`] when the consumer is gone.
    pub fn send(&self, item: T) -> Result<u64, Closed> {
        self.send_inner(item, None)
    }

    /// [`send`](Self::send) that gives up when `stop` fires while a lossless queue is full
    /// (`Err(Closed)`: the producer should stop producing either way).
    pub fn send_until(&self, item: T, stop: &StopToken) -> Result<u64, Closed> {
        self.send_inner(item, Some(stop))
    }

    fn send_inner(&self, mut item: T, stop: Option<&StopToken>) -> Result<u64, Closed> {
        match self.mode {
            QueueMode::Lossless => {
                if self.closed.is_triggered() || stop.is_some_and(StopToken::is_triggered) {
                    return Err(Closed);
                }
                // Waits for room, for the consumer to go away, or for the stop token.
                let never = crossbeam_channel::never();
                let stopped = stop.map_or(&never, StopToken::fired);
                select! {
                    send(self.tx, item) -> r => match r {
                        Ok(()) => {
                            self.stats.sent.fetch_add(1, Ordering::Relaxed);
                            Ok(0)
                        }
                        Err(_) => Err(Closed),
                    },
                    recv(self.closed.fired()) -> _ => Err(Closed),
                    recv(stopped) -> _ => Err(Closed),
                }
            }
            QueueMode::Realtime => {
                let mut dropped = 0;
                loop {
                    if self.closed.is_triggered() {
                        return Err(Closed);
                    }
                    match self.tx.try_send(item) {
                        Ok(()) => {
                            self.stats.sent.fetch_add(1, Ordering::Relaxed);
                            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
                            return Ok(dropped);
                        }
                        Err(TrySendError::Full(back)) => {
                            item = back;
                            if self.evict.try_recv().is_ok() {
                                dropped += 1;
                            }
                        }
                        Err(TrySendError::Disconnected(_)) => return Err(Closed),
                    }
                }
            }
        }
    }

    pub fn mode(&self) -> QueueMode {
        self.mode
    }
    /// Whether the consumer is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.is_triggered()
    }
    /// Items waiting in the queue now.
    pub fn len(&self) -> usize {
        self.tx.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.tx.capacity().unwrap_or(usize::MAX)
    }
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

impl<T> QueueReceiver<T> {
    /// Blocks for the next item; `None` once every sender is gone and the queue is empty.
    pub fn recv(&self) -> Option<T> {
        let item = self.rx.recv().ok()?;
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        Some(item)
    }

    /// The next item, waiting at most `timeout` (forever without one) and no longer than
    /// until `stop` fires.
    pub fn recv_until(&self, stop: &StopToken, timeout: Option<Duration>) -> Recv<T> {
        if stop.is_triggered() {
            return Recv::Stopped;
        }
        let got = |r: Result<T, crossbeam_channel::RecvError>| match r {
            Ok(item) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                Recv::Item(item)
            }
            Err(_) => Recv::Closed,
        };
        // No timer channel per call: `default(t)` is the select's own deadline.
        match timeout {
            Some(t) => select! {
                recv(self.rx) -> r => got(r),
                recv(stop.fired()) -> _ => Recv::Stopped,
                default(t) => Recv::Timeout,
            },
            None => select! {
                recv(self.rx) -> r => got(r),
                recv(stop.fired()) -> _ => Recv::Stopped,
            },
        }
    }

    /// Like [`recv`](Self::recv) with a deadline; `Err(true)` means disconnected.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Result<T, bool> {
        match self.rx.recv_timeout(timeout) {
            Ok(item) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                Ok(item)
            }
            Err(RecvTimeoutError::Timeout) => Err(false),
            Err(RecvTimeoutError::Disconnected) => Err(true),
        }
    }

    pub fn try_recv(&self) -> Option<T> {
        match self.rx.try_recv() {
            Ok(item) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                Some(item)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Non-blocking receive that tells an empty queue (`Ok(None)`) from one whose senders are
    /// all gone (`Err(Closed)`), so a stage can notice that an input stream ended.
    pub fn try_recv_or_closed(&self) -> Result<Option<T>, Closed> {
        match self.rx.try_recv() {
            Ok(item) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                Ok(Some(item))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Closed),
        }
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
    /// The underlying channel, for `select!` across several queues.
    pub fn as_crossbeam(&self) -> &Receiver<T> {
        &self.rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_drops_oldest_and_counts() {
        let (tx, rx) = bounded(2, QueueMode::Realtime);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        assert_eq!(tx.stats().dropped(), 3);
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), Some(4));
        assert_eq!(rx.try_recv(), None);
    }

    /// A lossless send blocked on a full queue wakes when the consumer goes away or the stop
    /// token fires, at once (no timer).
    #[test]
    fn a_blocked_lossless_send_gives_up_on_close_or_stop() {
        let (tx, rx) = bounded::<u32>(1, QueueMode::Lossless);
        tx.send(1).unwrap();
        let stop = StopToken::new();
        let waiter = {
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::spawn(move || tx.send_until(2, &stop))
        };
        std::thread::sleep(Duration::from_millis(20));
        stop.trigger();
        assert_eq!(waiter.join().unwrap(), Err(Closed));
        let waiter = std::thread::spawn(move || tx.send(3));
        std::thread::sleep(Duration::from_millis(20));
        drop(rx);
        assert_eq!(waiter.join().unwrap(), Err(Closed));
    }

    #[test]
    fn recv_until_tells_items_timeouts_stops_and_closes_apart() {
        let (tx, rx) = bounded::<u32>(2, QueueMode::Lossless);
        let stop = StopToken::new();
        tx.send(7).unwrap();
        assert!(matches!(rx.recv_until(&stop, None), Recv::Item(7)));
        let short = Some(Duration::from_millis(5));
        assert!(matches!(rx.recv_until(&stop, short), Recv::Timeout));
        let child = stop.child();
        stop.trigger();
        assert!(matches!(rx.recv_until(&child, None), Recv::Stopped));
        drop(tx);
        assert!(matches!(
            rx.recv_until(&StopToken::new(), None),
            Recv::Closed
        ));
        assert_eq!(rx.stats().received(), 1);
    }

    #[test]
    fn sender_sees_closed_consumer() {
        let (tx, rx) = bounded::<u32>(1, QueueMode::Lossless);
        tx.send(1).unwrap();
        drop(rx);
        assert_eq!(tx.send(2), Err(Closed));
    }
}
