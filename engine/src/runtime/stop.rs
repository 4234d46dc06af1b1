//! The one way to stop anything in sensorium: a [`StopToken`] that fires once.
//!
//! A thread that waits for data waits for the token in the same breath: the token's
//! [`fired`](StopToken::fired) channel disconnects when it fires, so a
//! `crossbeam_channel::select!` (or [`QueueReceiver::recv_until`](crate::QueueReceiver::recv_until),
//! [`QueueSender::send_until`](crate::QueueSender::send_until), [`StopToken::wait`]) wakes at
//! once instead of polling a flag on a timer. Tokens form a tree: a [`child`](StopToken::child)
//! fires with its parent and can also fire alone (a run's internal token fires on the user's
//! Ctrl-C and on a sink failure; a source session's token fires with the source and on
//! teardown).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

/// No value: the token's channel never carries a message, it only disconnects.
#[derive(Debug)]
pub enum Never {}

/// Cloneable; all clones are the same token. Cheap to check, and selectable.
#[derive(Clone, Debug)]
pub struct StopToken(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    fired: AtomicBool,
    /// Dropped when the token fires, which disconnects `rx`.
    tx: Mutex<Option<Sender<Never>>>,
    rx: Receiver<Never>,
    children: Mutex<Vec<StopToken>>,
}

impl Default for StopToken {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Self(Arc::new(Inner {
            fired: AtomicBool::new(false),
            tx: Mutex::new(Some(tx)),
            rx,
            children: Mutex::new(Vec::new()),
        }))
    }
}

impl StopToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the token and every child; idempotent.
    pub fn trigger(&self) {
        if self.0.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        self.0.tx.lock().take();
        let children = std::mem::take(&mut *self.0.children.lock());
        for c in children {
            c.trigger();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.0.fired.load(Ordering::Acquire)
    }

    /// A channel that disconnects when the token fires: `recv(token.fired()) -> _` in a
    /// `select!` is ready from then on.
    pub fn fired(&self) -> &Receiver<Never> {
        &self.0.rx
    }

    /// A new token that fires when this one does (at once if it already has), and can be
    /// fired on its own without firing this one.
    pub fn child(&self) -> StopToken {
        let child = StopToken::new();
        let mut children = self.0.children.lock();
        if self.is_triggered() {
            child.trigger();
        } else {
            children.retain(|c| !c.is_triggered());
            children.push(child.clone());
        }
        child
    }

    /// Sleeps for `d` or until the token fires, whichever comes first; returns whether it
    /// fired.
    pub fn wait(&self, d: Duration) -> bool {
        let _ = self.0.rx.recv_timeout(d);
        self.is_triggered()
    }

    /// [`wait`](Self::wait) until `at`.
    pub fn wait_until(&self, at: Instant) -> bool {
        self.wait(at.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_fires_once_and_wakes_its_waiters_at_once() {
        let t = StopToken::new();
        assert!(!t.is_triggered());
        assert!(!t.wait(Duration::from_millis(1)));
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                (t.wait(Duration::from_secs(60)), start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        t.trigger();
        t.trigger();
        let (fired, waited) = waiter.join().unwrap();
        assert!(fired);
        assert!(waited < Duration::from_secs(60), "{waited:?}");
        crossbeam_channel::select! {
            recv(t.fired()) -> r => assert!(r.is_err(), "a fired token only disconnects"),
            default => panic!("a fired token is ready in a select"),
        }
    }

    #[test]
    fn children_fire_with_their_parent_but_not_the_other_way() {
        let parent = StopToken::new();
        let a = parent.child();
        let b = parent.child();
        a.trigger();
        assert!(a.is_triggered() && !parent.is_triggered() && !b.is_triggered());
        parent.trigger();
        assert!(b.is_triggered());
        assert!(
            parent.child().is_triggered(),
            "a late child of a fired token is fired"
        );
        let grandchild = StopToken::new();
        let c = grandchild.child().child();
        grandchild.trigger();
        assert!(c.is_triggered(), "the tree fires all the way down");
    }
}
