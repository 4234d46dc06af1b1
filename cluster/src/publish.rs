//! Results onto the bus: each held stream's window records and answers, in order, with a
//! bounded buffer for when NATS is away and fencing at the store.
//!
//! Every publish carries `Nats-Expected-Last-Subject-Sequence`: the sequence of the last
//! record on that subject as this holder knows it (read from the bus when it claimed the
//! stream). JetStream refuses the write if anyone else appended since, so even a worker that
//! woke from a long pause with a record in hand cannot interleave with its successor. A
//! refused write whose `Nats-Msg-Id` turns out to be the stored last message was ours (its
//! acknowledgement was lost to a reconnect) and counts as published.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::context::PublishErrorKind;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;

use crate::admin::Store;
use crate::lease::Fence;
use crate::names::Kind;
use crate::wall_ms;

/// Records waiting for the bus, pushed from engine threads, drained by [`publish`]. Past the
/// bound a realtime stream drops its oldest record (counted) and never waits; a lossless one
/// (a file played as fast as it goes) waits for room, as the engine's own lossless queues do,
/// so the bus sets its pace instead of losing records.
pub struct Outbox {
    stream: String,
    bound: usize,
    lossless: bool,
    state: Mutex<OutboxState>,
    wake: tokio::sync::Notify,
    room: parking_lot::Condvar,
}

#[derive(Default)]
struct OutboxState {
    queue: VecDeque<(Kind, Value)>,
    dropped: u64,
    closed: bool,
}

impl Outbox {
    pub fn new(stream: &str, bound: usize, lossless: bool) -> Self {
        Self {
            stream: stream.to_owned(),
            bound: bound.max(1),
            lossless,
            state: Mutex::new(OutboxState::default()),
            wake: tokio::sync::Notify::new(),
            room: parking_lot::Condvar::new(),
        }
    }

    pub fn push(&self, kind: Kind, record: Value) {
        {
            let mut s = self.state.lock();
            while !s.closed && s.queue.len() >= self.bound {
                if !self.lossless {
                    s.queue.pop_front();
                    s.dropped += 1;
                    metrics::counter!("sensorium_cluster_publish_dropped_total", "stream" => self.stream.clone())
                        .increment(1);
                    break;
                }
                self.room.wait_for(&mut s, Duration::from_millis(100));
            }
            if s.closed {
                return;
            }
            s.queue.push_back((kind, record));
        }
        self.wake.notify_one();
    }

    /// No more records will come (the stream stopped); [`publish`] ends once it drained.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.room.notify_all();
        self.wake.notify_one();
    }

    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records dropped past the bound so far.
    pub fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }

    fn front(&self) -> Option<(Kind, Value)> {
        self.state.lock().queue.front().cloned()
    }

    fn pop(&self) {
        self.state.lock().queue.pop_front();
        self.room.notify_all();
    }

    fn finished(&self) -> bool {
        let s = self.state.lock();
        s.closed && s.queue.is_empty()
    }

    /// Drops what is left (a fenced holder must not publish it; a stream given back whose
    /// records the bus did not take in time), counted as dropped; returns how many.
    pub fn discard(&self) -> usize {
        let mut s = self.state.lock();
        s.closed = true;
        let n = s.queue.len();
        s.queue.clear();
        s.dropped += n as u64;
        self.room.notify_all();
        n
    }
}

/// What a holder has published, for its lease value and `cluster status`.
#[derive(Debug, Default)]
pub struct Published {
    inner: Mutex<PublishedState>,
}

#[derive(Debug, Default, Clone)]
pub struct PublishedState {
    pub windows: u64,
    pub answers: u64,
    pub last_window_ms: Option<u64>,
    pub last_window_t_ns: Option<u64>,
    pub retries: u64,
    /// Wall-clock ms of the answers of the last minute.
    answer_times: VecDeque<u64>,
}

impl Published {
    fn record(&self, kind: Kind, rec: &Value) {
        let mut s = self.inner.lock();
        let now = wall_ms();
        match kind {
            Kind::Windows => {
                s.windows += 1;
                s.last_window_ms = Some(now);
                s.last_window_t_ns = rec["t_end"].as_u64();
            }
            Kind::Answers => {
                s.answers += 1;
                s.answer_times.push_back(now);
            }
        }
        while s
            .answer_times
            .front()
            .is_some_and(|&t| now.saturating_sub(t) > 60_000)
        {
            s.answer_times.pop_front();
        }
        metrics::counter!("sensorium_cluster_published_total", "kind" => kind.as_str())
            .increment(1);
    }

    pub fn snapshot(&self) -> PublishedState {
        self.inner.lock().clone()
    }

    /// Answers per second over the last minute.
    pub fn answers_per_s(&self) -> f64 {
        let s = self.inner.lock();
        let now = wall_ms();
        s.answer_times
            .iter()
            .filter(|&&t| now.saturating_sub(t) <= 60_000)
            .count() as f64
            / 60.0
    }
}

/// How a publisher ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishEnd {
    /// The outbox was closed and everything in it is on the bus.
    Drained,
    /// Another writer appended to the stream's subjects: this holder must stop.
    Fenced { by: String },
    /// Told to stop with records left (shutdown deadline).
    Abandoned { left: usize },
}

/// Where a holder's publishing starts: the last sequence on each subject.
pub type LastSequences = HashMap<Kind, u64>;

/// One held stream's publisher.
pub struct Publisher {
    pub store: Store,
    pub stream: String,
    pub epoch: u64,
    pub outbox: Arc<Outbox>,
    pub fence: Arc<Fence>,
    /// The last sequence of each subject when the stream was claimed.
    pub last: LastSequences,
    pub published: Arc<Published>,
    /// Stop now, whatever is left (shutdown deadline).
    pub abandon: Arc<tokio::sync::Notify>,
}

/// Publishes the outbox in order until it is closed and drained, the fence is lost, or
/// `abandon` fires.
pub async fn publish(p: Publisher) -> PublishEnd {
    let Publisher {
        store,
        stream,
        epoch,
        outbox,
        fence,
        mut last,
        published,
        abandon,
    } = p;
    let mut n: u64 = 0;
    let mut backoff = Duration::from_millis(50);
    loop {
        if fence.is_lost() {
            return PublishEnd::Fenced {
                by: "a newer lease".into(),
            };
        }
        let Some((kind, record)) = outbox.front() else {
            if outbox.finished() {
                return PublishEnd::Drained;
            }
            tokio::select! {
                _ = outbox.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = abandon.notified() => return PublishEnd::Abandoned { left: 0 },
            }
            continue;
        };
        if !fence.may_publish(Instant::now()) {
            // Renewals are failing (NATS away, or this worker cut off): hold the records
            // until the lease is confirmed again or known lost.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = abandon.notified() => return PublishEnd::Abandoned { left: outbox.len() },
            }
            continue;
        }
        let subject = store.names.subject(kind, &stream);
        let id = format!("{stream}/{epoch}/{n}");
        let expected = last.get(&kind).copied().unwrap_or(0);
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_MESSAGE_ID, id.as_str());
        headers.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        let payload = Bytes::from(record.to_string());
        let result = async {
            let ack = store
                .js
                .publish_with_headers(subject.clone(), headers, payload)
                .await?;
            ack.await
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(5), result) => r,
            _ = abandon.notified() => return PublishEnd::Abandoned { left: outbox.len() },
        };
        match outcome {
            Ok(Ok(ack)) => {
                last.insert(kind, ack.sequence);
                published.record(kind, &record);
                outbox.pop();
                n += 1;
                backoff = Duration::from_millis(50);
            }
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // Ours, with its acknowledgement lost? Otherwise someone else wrote.
                match store.last(kind, &stream).await {
                    Ok(Some(m)) => {
                        let theirs = m
                            .headers
                            .get(header::NATS_MESSAGE_ID)
                            .map(|v| v.as_str().to_owned())
                            .unwrap_or_default();
                        if theirs == id {
                            last.insert(kind, m.sequence);
                            published.record(kind, &record);
                            outbox.pop();
                            n += 1;
                        } else {
                            fence.lose();
                            return PublishEnd::Fenced {
                                by: if theirs.is_empty() {
                                    format!("a record at sequence {}", m.sequence)
                                } else {
                                    theirs
                                },
                            };
                        }
                    }
                    Ok(None) => {
                        // The subject was purged (retention): start over from nothing.
                        last.insert(kind, 0);
                    }
                    Err(_) => tokio::time::sleep(backoff).await,
                }
            }
            _ => {
                // Not acknowledged (timed out, disconnected, JetStream busy): try again.
                published.inner.lock().retries += 1;
                metrics::counter!("sensorium_cluster_publish_retries_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_keeps_the_newest_records_within_its_bound() {
        let o = Outbox::new("cam", 3, false);
        for i in 0..5 {
            o.push(Kind::Windows, serde_json::json!({ "index": i }));
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.dropped(), 2);
        assert_eq!(o.front().unwrap().1["index"], 2);
        o.close();
        o.push(Kind::Windows, serde_json::json!({ "index": 9 }));
        assert_eq!(o.len(), 3, "closed: nothing more comes in");
        assert!(!o.finished());
        assert_eq!(o.discard(), 3);
        assert!(o.finished());
    }

    #[test]
    fn a_lossless_outbox_waits_for_room_instead_of_dropping() {
        let o = Arc::new(Outbox::new("file", 2, true));
        o.push(Kind::Windows, serde_json::json!({ "index": 0 }));
        o.push(Kind::Windows, serde_json::json!({ "index": 1 }));
        let pusher = {
            let o = o.clone();
            std::thread::spawn(move || o.push(Kind::Windows, serde_json::json!({ "index": 2 })))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(o.len(), 2, "the third waits");
        o.pop();
        pusher.join().unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o.dropped(), 0);
        assert_eq!(o.front().unwrap().1["index"], 1);
        // A discard (a fenced holder) lets a waiting pusher go.
        let pusher = {
            let o = o.clone();
            std::thread::spawn(move || o.push(Kind::Windows, serde_json::json!({ "index": 3 })))
        };
        std::thread::sleep(Duration::from_millis(20));
        o.discard();
        pusher.join().unwrap();
        assert!(o.is_empty());
    }
}
