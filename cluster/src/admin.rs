//! The cluster's store (its buckets and results stream) and the one-shot commands on it:
//! `cluster add`, `cluster remove`, `cluster status`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::lease::{Heartbeat, Lease};
use crate::names::{Kind, Names};
use crate::spec::StreamSpec;
use crate::{wall_ms, ClusterError};

/// How long the results stream keeps records, and how much of them.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 1 << 30,
        }
    }
}

/// One cluster's buckets and results stream, opened on a connection.
#[derive(Clone)]
pub struct Store {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub names: Names,
    pub streams: kv::Store,
    pub leases: kv::Store,
    pub workers: kv::Store,
    pub results: stream::Stream,
}

fn js_err(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::JetStream(format!("{what}: {e}"))
}

async fn bucket(
    js: &jetstream::Context,
    name: String,
    create: bool,
) -> Result<Option<kv::Store>, ClusterError> {
    match js.get_key_value(&name).await {
        Ok(s) => return Ok(Some(s)),
        Err(e) if !create => {
            return match e.kind() {
                jetstream::context::KeyValueErrorKind::GetBucket => Ok(None),
                _ => Err(js_err(&format!("bucket {name}"), e)),
            }
        }
        Err(_) => {}
    }
    // The KV conventions (as `create_key_value` would write them), created as a plain
    // stream: async-nats' own bucket creation first reads account fields that NATS 2.9
    // (Debian 12's) does not send.
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(_) => {}
        // Another process created it in between: fine if it is there now.
        Err(e) => {
            if js.get_key_value(&name).await.is_err() {
                return Err(js_err(&format!("cannot create bucket {name}"), e));
            }
        }
    }
    js.get_key_value(&name)
        .await
        .map(Some)
        .map_err(|e| js_err(&format!("cannot open bucket {name}"), e))
}

impl Store {
    /// Opens the cluster's buckets and results stream, creating what is missing when
    /// `create`; without it a cluster that does not exist is an error.
    pub async fn open(
        client: async_nats::Client,
        names: Names,
        create: bool,
        retention: Retention,
    ) -> Result<Self, ClusterError> {
        let js = jetstream::new(client.clone());
        let missing = || {
            ClusterError::Usage(format!(
                "there is no cluster '{}' on this NATS server (add streams with `sensorium cluster add` first)",
                names.cluster()
            ))
        };
        let streams = bucket(&js, names.streams_bucket(), create)
            .await?
            .ok_or_else(missing)?;
        let leases = bucket(&js, names.leases_bucket(), true)
            .await?
            .ok_or_else(missing)?;
        let workers = bucket(&js, names.workers_bucket(), true)
            .await?
            .ok_or_else(missing)?;
        let results = js
            .get_or_create_stream(stream::Config {
                name: names.results_stream(),
                subjects: names.result_subjects(),
                retention: stream::RetentionPolicy::Limits,
                discard: stream::DiscardPolicy::Old,
                max_age: retention.max_age,
                max_bytes: retention.max_bytes,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| js_err("cannot open the results stream", e))?;
        Ok(Self {
            client,
            js,
            names,
            streams,
            leases,
            workers,
            results,
        })
    }

    /// Every key of `bucket` with its latest live entry. The keys come from one stream-info
    /// request (the subjects of the bucket's stream), not from `Store::keys`: that one runs
    /// a consumer until it thinks it saw every key, and can wait for ever when keys are
    /// deleted meanwhile (seen with NATS 2.9).
    pub async fn entries(bucket: &kv::Store) -> Result<BTreeMap<String, kv::Entry>, ClusterError> {
        let look = async {
            let subjects: Vec<(String, usize)> = bucket
                .stream
                .info_with_subjects(format!("{}>", bucket.prefix))
                .await
                .map_err(|e| js_err("listing keys", e))?
                .try_collect()
                .await
                .map_err(|e| js_err("listing keys", e))?;
            let mut out = BTreeMap::new();
            for (subject, _) in subjects {
                let Some(k) = subject.strip_prefix(bucket.prefix.as_str()) else {
                    continue;
                };
                match bucket.entry(k).await {
                    Ok(Some(e)) if e.operation == kv::Operation::Put => {
                        out.insert(k.to_owned(), e);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(js_err(&format!("reading key {k}"), e)),
                }
            }
            Ok(out)
        };
        tokio::time::timeout(Duration::from_secs(10), look)
            .await
            .map_err(|_| js_err("listing keys", "no answer within 10 s"))?
    }

    /// `cluster add`: puts each spec; a name the cluster already has is refused (none of
    /// the file's streams is added then).
    pub async fn add(&self, specs: &[StreamSpec]) -> Result<(), ClusterError> {
        let existing = Self::entries(&self.streams).await?;
        for s in specs {
            if let Some(e) = existing.get(&s.name) {
                let origin = StreamSpec::from_bytes(&s.name, &e.value)
                    .map(|o| o.origin)
                    .unwrap_or_else(|_| "an unreadable entry".into());
                return Err(ClusterError::Duplicate {
                    stream: s.name.clone(),
                    cluster: self.names.cluster().into(),
                    origin,
                });
            }
        }
        for s in specs {
            let value = serde_json::to_vec(s).map_err(|e| ClusterError::Usage(e.to_string()))?;
            match self.streams.create(&s.name, Bytes::from(value)).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    return Err(ClusterError::Duplicate {
                        stream: s.name.clone(),
                        cluster: self.names.cluster().into(),
                        origin: "another `cluster add` just now".into(),
                    })
                }
                Err(e) => return Err(js_err(&format!("adding stream {}", s.name), e)),
            }
        }
        Ok(())
    }

    /// `cluster remove`: deletes the desired state; the worker running each stream stops
    /// it and gives its lease back.
    pub async fn remove(&self, names: &[String]) -> Result<(), ClusterError> {
        let existing = Self::entries(&self.streams).await?;
        if let Some(n) = names.iter().find(|n| !existing.contains_key(*n)) {
            return Err(ClusterError::NoSuchStream {
                stream: n.clone(),
                cluster: self.names.cluster().into(),
            });
        }
        for n in names {
            self.streams
                .delete(n)
                .await
                .map_err(|e| js_err(&format!("removing stream {n}"), e))?;
        }
        Ok(())
    }

    /// The last message on `stream`'s `kind` subject, if any.
    pub async fn last(
        &self,
        kind: Kind,
        stream: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>, ClusterError> {
        use jetstream::stream::LastRawMessageErrorKind as K;
        match self
            .results
            .get_last_raw_message_by_subject(&self.names.subject(kind, stream))
            .await
        {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == K::NoMessageFound => Ok(None),
            Err(e) => Err(js_err(
                &format!("reading the last {} of {stream}", kind.as_str()),
                e,
            )),
        }
    }

    /// `cluster status`.
    pub async fn status(&self) -> Result<ClusterStatus, ClusterError> {
        let now = wall_ms();
        let streams = Self::entries(&self.streams).await?;
        let leases = Self::entries(&self.leases).await?;
        let workers = Self::entries(&self.workers).await?;
        let mut out = ClusterStatus {
            cluster: self.names.cluster().into(),
            ..Default::default()
        };
        for (name, e) in &streams {
            let mut st = StreamStatus {
                name: name.clone(),
                state: "unassigned".into(),
                ..Default::default()
            };
            match StreamSpec::from_bytes(name, &e.value) {
                Ok(spec) => {
                    st.source = spec.source_kind();
                    st.cost = spec.cost;
                }
                Err(reason) => {
                    st.state = "failed".into();
                    st.reason = Some(reason);
                }
            }
            if let Some(l) = leases
                .get(name)
                .and_then(|l| serde_json::from_slice::<Lease>(&l.value).ok())
            {
                let stale = now.saturating_sub(l.renewed_ms) > l.lease_ms.max(1);
                st.worker = Some(l.worker.clone());
                st.epoch = l.epoch;
                st.state = if stale {
                    format!("{} (lease expiring)", l.state)
                } else {
                    l.state.clone()
                };
                st.reason = l.reason.clone().or(st.reason);
                st.windows = l.windows;
                st.answers = l.answers;
                st.answers_per_s = l.answers_per_s;
                st.last_window_ms = l.last_window_ms;
                st.last_window_age_s = l
                    .last_window_ms
                    .map(|t| now.saturating_sub(t) as f64 / 1000.0);
                st.buffered = l.buffered;
                st.dropped = l.dropped;
            }
            out.streams.push(st);
        }
        for (name, e) in &workers {
            let Ok(h) = serde_json::from_slice::<Heartbeat>(&e.value) else {
                continue;
            };
            let age = now.saturating_sub(h.beat_ms);
            out.workers.push(WorkerStatus {
                name: name.clone(),
                alive: age <= h.lease_ms.max(1),
                capacity: h.capacity,
                max_streams: h.max_streams,
                load: h.load,
                streams: out
                    .streams
                    .iter()
                    .filter(|s| s.worker.as_deref() == Some(name.as_str()))
                    .count(),
                beat_age_s: age as f64 / 1000.0,
                version: h.version,
            });
        }
        Ok(out)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    pub cluster: String,
    pub streams: Vec<StreamStatus>,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamStatus {
    pub name: String,
    pub source: Option<String>,
    pub cost: u32,
    pub worker: Option<String>,
    pub epoch: u64,
    /// `unassigned`, `starting`, `running`, `ended`, `failed`.
    pub state: String,
    pub reason: Option<String>,
    pub windows: u64,
    pub answers: u64,
    pub answers_per_s: f64,
    pub last_window_ms: Option<u64>,
    pub last_window_age_s: Option<f64>,
    pub buffered: usize,
    pub dropped: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerStatus {
    pub name: String,
    pub alive: bool,
    pub capacity: u32,
    pub max_streams: usize,
    pub load: u32,
    pub streams: usize,
    pub beat_age_s: f64,
    pub version: String,
}

impl std::fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "cluster {}: {} streams, {} workers",
            self.cluster,
            self.streams.len(),
            self.workers.len()
        )?;
        writeln!(
            f,
            "{:<20} {:<10} {:<16} {:<10} {:>8} {:>9} {:>8}  reason",
            "STREAM", "SOURCE", "WORKER", "STATE", "WINDOWS", "LAST (s)", "ANS/S"
        )?;
        for s in &self.streams {
            writeln!(
                f,
                "{:<20} {:<10} {:<16} {:<10} {:>8} {:>9} {:>8.2}  {}",
                s.name,
                s.source.as_deref().unwrap_or("?"),
                s.worker.as_deref().unwrap_or("-"),
                s.state,
                s.windows,
                s.last_window_age_s
                    .map(|a| format!("{a:.1}"))
                    .unwrap_or_else(|| "-".into()),
                s.answers_per_s,
                s.reason.as_deref().unwrap_or("")
            )?;
        }
        writeln!(
            f,
            "{:<16} {:<6} {:>8} {:>6} {:>8} {:>10}",
            "WORKER", "ALIVE", "CAPACITY", "LOAD", "STREAMS", "BEAT (s)"
        )?;
        for w in &self.workers {
            writeln!(
                f,
                "{:<16} {:<6} {:>8} {:>6} {:>8} {:>10.1}",
                w.name,
                if w.alive { "yes" } else { "no" },
                w.capacity,
                w.load,
                w.streams,
                w.beat_age_s
            )?;
        }
        Ok(())
    }
}
