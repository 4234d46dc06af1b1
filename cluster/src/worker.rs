//! `sensorium worker`: claims streams of a cluster with leases, runs them with the ordinary
//! engine (through the binary's [`StreamRunner`]), publishes their results, answers live
//! questions, and gives everything back on shutdown.
//!
//! One tick (a tenth of the lease): renew every held lease at once (compare-and-set on its
//! revision; first, so that a slow look never delays it), beat, look at the three buckets,
//! follow the desired state (removed or changed streams are stopped), plan
//! ([`crate::balance`]), give back the excess, claim free streams. Starts run off the tick
//! (loading models takes seconds) and are served as soon as they finish.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use sensorium_engine::{StopToken, WindowOrigin};
use serde_json::{Map, Value};

use crate::admin::{Retention, Store};
use crate::balance::{StreamView, View, WorkerView};
use crate::lease::{active, Fence, Heartbeat, Lease, Observer};
use crate::names::{Kind, Names};
use crate::publish::{publish, LastSequences, Outbox, PublishEnd, Published, Publisher};
use crate::spec::StreamSpec;
use crate::{wall_ms, ClusterError, NatsOptions};

/// Where a running stream hands each record for the bus.
pub type RecordSink = Arc<dyn Fn(Kind, &Value) + Send + Sync>;

/// What the binary gets to start one stream.
pub struct RunSpec {
    pub stream: String,
    /// A whole config (TOML) with this one stream, as `cluster add` stored it.
    pub config: String,
    /// Where its window numbering and times continue.
    pub origin: WindowOrigin,
    /// Fields added to every record (`worker`, `epoch`), locally and on the bus.
    pub fields: Map<String, Value>,
    /// Every window record and answer, as written locally.
    pub sink: RecordSink,
    /// Fires when the worker wants the stream stopped (its last windows still flow).
    pub stop: StopToken,
}

/// Runs streams for a worker (the binary implements it with its `run` path).
pub trait StreamRunner: Send + Sync + 'static {
    /// Starts the stream (loading its models); returns why it cannot run otherwise (a bad
    /// config, a model that does not load): the stream is then marked `failed`.
    fn start(&self, spec: RunSpec) -> Result<Box<dyn RunningStream>, String>;
}

/// A stream running in this process.
pub trait RunningStream: Send + Sync {
    /// `None` while it runs; its result once it ended (the source ended, or it was stopped).
    fn finished(&self) -> Option<Result<(), String>>;
    /// A live question about the stream (blocking): the answer record, as `POST /ask` ends
    /// with it.
    fn ask(&self, question: &str) -> Result<Value, String>;
    /// Waits for the end (after the stop token fired).
    fn join(&self);
}

#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub cluster: String,
    pub name: String,
    pub lease: Duration,
    /// Balancing units offered (streams cost 1 to 6, see [`crate::spec::cost`]).
    pub capacity: u32,
    pub max_streams: usize,
    /// Records per stream kept while NATS is away; older ones are dropped past it, counted.
    pub buffer: usize,
    pub retention: Retention,
    /// How long shutdown waits for the streams' last records to reach the bus.
    pub grace: Duration,
}

impl WorkerOptions {
    pub fn tick(&self) -> Duration {
        (self.lease / 10).max(Duration::from_millis(100))
    }
}

/// What a worker did, for its last log line and tests.
#[derive(Clone, Debug, Default)]
pub struct WorkerReport {
    pub claims: u64,
    pub releases: u64,
    pub leases_lost: u64,
    pub windows: u64,
    pub answers: u64,
    pub dropped: u64,
}

/// The runner's answer to a start, once it came.
type Starting = tokio::sync::oneshot::Receiver<Result<Box<dyn RunningStream>, String>>;

/// The running stream, once a start in progress (if any) settled; `None` if it never ran.
async fn settled(
    starting: Option<Starting>,
    running: Option<Arc<dyn RunningStream>>,
) -> Option<Arc<dyn RunningStream>> {
    match starting {
        Some(s) => started(s).await.ok(),
        None => running,
    }
}

/// Where a start ended: a running stream, or why it cannot run.
async fn started(s: Starting) -> Result<Arc<dyn RunningStream>, String> {
    match s.await {
        Ok(Ok(r)) => Ok(Arc::from(r)),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err("starting it panicked".into()),
    }
}

/// A stream this worker holds.
struct Held {
    epoch: u64,
    cost: u32,
    spec_revision: u64,
    fence: Arc<Fence>,
    state: String,
    reason: Option<String>,
    outbox: Arc<Outbox>,
    published: Arc<Published>,
    stop: StopToken,
    running: Option<Arc<dyn RunningStream>>,
    /// The runner's start (loading models may take seconds: the tick does not wait for it).
    starting: Option<Starting>,
    publisher: Option<tokio::task::JoinHandle<PublishEnd>>,
    abandon: Arc<tokio::sync::Notify>,
    asks: Option<tokio::task::JoinHandle<()>>,
    /// Set while it is being given back: the task stopping it and draining its records.
    releasing: Option<tokio::task::JoinHandle<()>>,
    /// Logged once per lapse.
    lapsed_logged: bool,
    /// Given back because the stream left the desired state or changed (its lease is
    /// deleted even when it ended).
    forget: bool,
}

impl Held {
    fn lease_value(&self, me: &str, lease: Duration) -> Lease {
        let p = self.published.snapshot();
        Lease {
            worker: me.to_owned(),
            epoch: self.epoch,
            state: self.state.clone(),
            reason: self.reason.clone(),
            windows: p.windows,
            answers: p.answers,
            answers_per_s: self.published.answers_per_s(),
            last_window_ms: p.last_window_ms,
            last_window_t_ns: p.last_window_t_ns,
            buffered: self.outbox.len(),
            dropped: self.outbox.dropped(),
            renewed_ms: wall_ms(),
            lease_ms: lease.as_millis() as u64,
        }
    }

    /// Stops the stream and ends its tasks without publishing what is left.
    fn abort(&mut self) -> usize {
        self.fence.lose();
        self.stop.trigger();
        let left = self.outbox.discard();
        self.abandon.notify_one();
        if let Some(a) = self.asks.take() {
            a.abort();
        }
        left
    }
}

struct Worker {
    opts: WorkerOptions,
    store: Store,
    runner: Arc<dyn StreamRunner>,
    held: BTreeMap<String, Held>,
    leases_seen: Observer,
    workers_seen: Observer,
    started: Instant,
    /// Woken when a stream's start finished.
    started_any: Arc<tokio::sync::Notify>,
    report: WorkerReport,
    connected: bool,
}

fn lease_json(l: &Lease) -> Bytes {
    Bytes::from(serde_json::to_vec(l).unwrap_or_default())
}

/// Runs a worker until `stop` fires, then gives its streams back.
pub async fn run(
    nats: NatsOptions,
    opts: WorkerOptions,
    runner: Arc<dyn StreamRunner>,
    stop: StopToken,
) -> Result<WorkerReport, ClusterError> {
    let names = Names::new(&opts.cluster)?;
    crate::names::check_name("worker", &opts.name)?;
    crate::describe_metrics();
    let client = {
        let stop = stop.clone();
        nats.connect_with_retry(&format!("sensorium-worker-{}", opts.name), move || {
            stop.is_triggered()
        })
        .await?
    };
    let store = Store::open(client, names, true, opts.retention).await?;
    tracing::info!(
        "worker '{}' joined cluster '{}' at {} (lease {:.1} s, capacity {}, at most {} streams)",
        opts.name,
        opts.cluster,
        nats.display_url(),
        opts.lease.as_secs_f64(),
        opts.capacity,
        opts.max_streams
    );
    let gap = opts.lease / 2;
    let mut w = Worker {
        leases_seen: Observer::new(opts.lease, gap),
        workers_seen: Observer::new(opts.lease, gap),
        opts,
        store,
        runner,
        held: BTreeMap::new(),
        started: Instant::now(),
        started_any: Arc::new(tokio::sync::Notify::new()),
        report: WorkerReport::default(),
        connected: true,
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("worker-stop".into())
            .spawn(move || {
                while !stop.wait(Duration::from_secs(3600)) {}
                let _ = stop_tx.send(true);
            })
            .map_err(|e| ClusterError::Usage(format!("cannot start a thread: {e}")))?;
    }
    let mut ticker = tokio::time::interval(w.opts.tick());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // A stream finished starting: serve it now, not at the next tick.
            _ = w.started_any.notified() => {
                w.poll_starts().await;
                continue;
            }
            _ = stop_rx.changed() => break,
        }
        if stop.is_triggered() {
            break;
        }
        w.tick().await;
    }
    w.shutdown().await;
    Ok(w.report)
}

impl Worker {
    fn me(&self) -> &str {
        &self.opts.name
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        self.poll_starts().await;
        self.check_finished();
        self.reap_releases().await;
        // Renewals and the heartbeat first: they must not wait for a slow look.
        self.renew().await;
        self.beat().await;
        let look = async {
            let s = Store::entries(&self.store.streams).await?;
            let l = Store::entries(&self.store.leases).await?;
            let w = Store::entries(&self.store.workers).await?;
            Ok::<_, ClusterError>((s, l, w))
        };
        let (streams, leases, workers) = match tokio::time::timeout(self.opts.lease / 2, look).await
        {
            Ok(Ok(v)) => {
                if !self.connected {
                    tracing::info!("nats: the cluster's buckets answer again");
                    self.connected = true;
                }
                v
            }
            other => {
                if self.connected {
                    let why = match other {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    tracing::warn!(
                        "cluster '{}': cannot read the buckets ({why}); held streams keep \
                             running, their results wait in the buffer (at most {} each)",
                        self.opts.cluster,
                        self.opts.buffer
                    );
                    self.connected = false;
                }
                self.note_lapses(now);
                return;
            }
        };
        // Observed no earlier than now, when the look returned: a revision's clock must
        // never start before the revision was written (lease.rs).
        let seen = Instant::now();
        self.leases_seen.begin_look(seen);
        self.workers_seen.begin_look(seen);
        self.follow_desired(&streams).await;
        let view = self.view(&streams, &leases, &workers, seen);
        let (load, count) = view.load(self.me());
        metrics::gauge!("sensorium_cluster_streams").set(count as f64);
        metrics::gauge!("sensorium_cluster_load").set(f64::from(load));
        metrics::gauge!("sensorium_cluster_target").set(f64::from(view.target(self.me())));
        metrics::gauge!("sensorium_cluster_workers").set(view.workers.len() as f64);
        let plan = view.plan(self.me());
        for s in plan.release {
            self.release(&s, "rebalancing");
        }
        // Right after joining, wait a little so that workers started together see each
        // other before anyone claims.
        if now.duration_since(self.started) >= self.opts.tick() * 2 {
            for s in plan.claim {
                if let Some(e) = streams.get(&s) {
                    self.claim(&s, e, leases.get(&s)).await;
                }
            }
        }
        self.cleanup_dead_workers(&workers, now).await;
    }

    /// Leases whose renewals have failed for a whole lease: publishing is paused (the
    /// publisher checks the fence itself); say so once.
    fn note_lapses(&mut self, now: Instant) {
        for (name, h) in &mut self.held {
            if h.fence.lapsed(now) && !h.lapsed_logged {
                h.lapsed_logged = true;
                tracing::warn!(
                    "stream '{name}': lease not confirmed for {:.1} s; publishing paused until \
                     it is (the stream keeps running, {} records buffered)",
                    self.opts.lease.as_secs_f64(),
                    h.outbox.len()
                );
            }
        }
    }

    async fn beat(&mut self) {
        let (load, streams) = self
            .held
            .iter()
            .fold((0, Vec::new()), |(c, mut v), (n, h)| {
                v.push(n.clone());
                (c + if active(&h.state) { h.cost } else { 0 }, v)
            });
        let hb = Heartbeat {
            worker: self.me().to_owned(),
            capacity: self.opts.capacity,
            max_streams: self.opts.max_streams,
            streams,
            load,
            beat_ms: wall_ms(),
            lease_ms: self.opts.lease.as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let value = Bytes::from(serde_json::to_vec(&hb).unwrap_or_default());
        match tokio::time::timeout(
            self.opts.lease / 3,
            self.store.workers.put(self.me(), value),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!("heartbeat: {e}"),
            Err(_) => tracing::debug!("heartbeat: no answer within a third of the lease"),
        }
    }

    /// Renews every held lease at once (compare-and-set on the revision each last wrote),
    /// within a third of the lease whatever NATS does.
    async fn renew(&mut self) {
        let me = self.me().to_owned();
        let lease = self.opts.lease;
        let attempts: Vec<_> = self
            .held
            .iter()
            .map(|(name, h)| {
                let kv = self.store.leases.clone();
                let (name, value, revision) = (
                    name.clone(),
                    lease_json(&h.lease_value(&me, lease)),
                    h.fence.revision(),
                );
                async move {
                    let sent = Instant::now();
                    let r = kv.update(&name, value, revision).await;
                    (name, sent, r)
                }
            })
            .collect();
        let results =
            match tokio::time::timeout(lease / 3, futures_util::future::join_all(attempts)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("renewing the leases: no answer within a third of the lease");
                    Vec::new()
                }
            };
        let mut lost = Vec::new();
        for (name, sent, result) in results {
            let Some(h) = self.held.get_mut(&name) else {
                continue;
            };
            match result {
                Ok(rev) => {
                    h.fence.renewed(rev, sent);
                    if h.lapsed_logged {
                        h.lapsed_logged = false;
                        tracing::info!(
                            "stream '{name}': lease confirmed again; publishing the {} buffered records",
                            h.outbox.len()
                        );
                    }
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    let current = self.store.leases.entry(&name).await;
                    let by = match &current {
                        Ok(Some(e)) if e.operation == kv::Operation::Put => {
                            match serde_json::from_slice::<Lease>(&e.value) {
                                // Our own renewal, stored after we stopped waiting for its
                                // answer (NATS slow or reconnecting): adopt its revision. The
                                // fence is not extended (when it was sent is unknown); the
                                // next renewal extends it.
                                Ok(l) if l.worker == me && l.epoch == h.epoch => {
                                    h.fence.adopt(e.revision);
                                    continue;
                                }
                                Ok(l) => format!("worker '{}'", l.worker),
                                Err(_) => "another worker".into(),
                            }
                        }
                        Ok(_) => "nobody (it was given back)".into(),
                        Err(_) => {
                            // Cannot tell: try again next tick.
                            continue;
                        }
                    };
                    lost.push((name, by));
                }
                Err(e) => tracing::debug!("stream '{name}': renewing the lease: {e}"),
            }
        }
        for (name, by) in lost {
            if let Some(mut h) = self.held.remove(&name) {
                let left = h.abort();
                self.report.leases_lost += 1;
                self.report.dropped += left as u64;
                metrics::counter!("sensorium_cluster_leases_lost_total").increment(1);
                tracing::warn!(
                    "stream '{name}': the lease is held by {by} now; stopped here without \
                     publishing its {left} buffered records (fenced)"
                );
                spawn_join(h);
            }
        }
        self.note_lapses(Instant::now());
    }

    /// Streams removed from the desired state are stopped and given back; a changed config
    /// is given back too, and claimed again (by whoever has room) with the new one.
    async fn follow_desired(&mut self, streams: &BTreeMap<String, kv::Entry>) {
        let names: Vec<String> = self.held.keys().cloned().collect();
        for n in names {
            let why = match streams.get(&n) {
                None => "removed from the cluster",
                Some(e) if e.revision != self.held[&n].spec_revision => "its config changed",
                _ => continue,
            };
            if let Some(h) = self.held.get_mut(&n) {
                h.forget = true;
            }
            self.release(&n, why);
        }
    }

    fn view(
        &mut self,
        streams: &BTreeMap<String, kv::Entry>,
        leases: &BTreeMap<String, kv::Entry>,
        workers: &BTreeMap<String, kv::Entry>,
        now: Instant,
    ) -> View {
        let mut v = View::default();
        for (name, e) in workers {
            let fresh = self.workers_seen.observe(name, e.revision, now);
            let Ok(h) = serde_json::from_slice::<Heartbeat>(&e.value) else {
                continue;
            };
            if fresh || name == self.me() {
                v.workers.insert(
                    name.clone(),
                    WorkerView {
                        capacity: h.capacity,
                        max_streams: h.max_streams,
                    },
                );
            }
        }
        v.workers.insert(
            self.me().to_owned(),
            WorkerView {
                capacity: self.opts.capacity,
                max_streams: self.opts.max_streams,
            },
        );
        self.workers_seen.retain(|k| workers.contains_key(k));
        for (name, e) in streams {
            let cost = StreamSpec::from_bytes(name, &e.value)
                .map(|s| s.cost)
                .unwrap_or(1);
            let mut sv = StreamView {
                cost,
                ..Default::default()
            };
            if let Some(h) = self.held.get(name) {
                sv.holder = Some(self.me().to_owned());
                sv.idle = !active(&h.state);
            } else if let Some(l) = leases.get(name) {
                let fresh = self.leases_seen.observe(name, l.revision, now);
                if fresh {
                    let lease: Lease = serde_json::from_slice(&l.value).unwrap_or_default();
                    sv.idle = !lease.active();
                    sv.holder = Some(lease.worker);
                }
            }
            v.streams.insert(name.clone(), sv);
        }
        self.leases_seen.retain(|k| leases.contains_key(k));
        v
    }

    async fn claim(&mut self, name: &str, spec_entry: &kv::Entry, old: Option<&kv::Entry>) {
        if self.held.contains_key(name) {
            return;
        }
        let prev: Option<Lease> = old.and_then(|e| serde_json::from_slice(&e.value).ok());
        let epoch = prev.as_ref().map_or(0, |l| l.epoch) + 1;
        // A stream whose source ended stays ended (see below).
        let ended = prev.as_ref().is_some_and(|p| p.state == "ended");
        let lease = Lease {
            worker: self.me().to_owned(),
            epoch,
            state: if ended { "ended" } else { "starting" }.into(),
            renewed_ms: wall_ms(),
            lease_ms: self.opts.lease.as_millis() as u64,
            ..Default::default()
        };
        let sent = Instant::now();
        let written = match old {
            Some(e) => self
                .store
                .leases
                .update(name, lease_json(&lease), e.revision)
                .await
                .map_err(|e| e.to_string()),
            None => self
                .store
                .leases
                .create(name, lease_json(&lease))
                .await
                .map_err(|e| e.to_string()),
        };
        let revision = match written {
            Ok(r) => r,
            // Another worker was quicker: fine.
            Err(e) => {
                tracing::debug!("stream '{name}': claim lost the race: {e}");
                return;
            }
        };
        let fence = Arc::new(Fence::new(self.opts.lease, revision, sent));
        self.report.claims += 1;
        metrics::counter!("sensorium_cluster_claims_total").increment(1);
        match &prev {
            Some(p) => tracing::info!(
                "stream '{name}': claimed (epoch {epoch}; worker '{}' held it before)",
                p.worker
            ),
            None => tracing::info!("stream '{name}': claimed (epoch {epoch})"),
        }
        // Where the previous owner left the bus.
        let (origin, last) = match self.continuation(name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "stream '{name}': cannot read where it left off ({e}); giving it back"
                );
                let _ = self
                    .store
                    .leases
                    .delete_expect_revision(name, Some(revision))
                    .await;
                return;
            }
        };
        let spec = StreamSpec::from_bytes(name, &spec_entry.value);
        // Files (lossless streams) wait for the bus rather than drop records.
        let lossless = spec
            .as_ref()
            .ok()
            .and_then(|s| sensorium_engine::Config::from_toml_str(&s.config, name).ok())
            .and_then(|c| c.resolved_streams().into_iter().next())
            .is_some_and(|r| r.params.mode == sensorium_engine::QueueMode::Lossless);
        let outbox = Arc::new(Outbox::new(name, self.opts.buffer, lossless));
        let published = Arc::new(Published::default());
        let abandon = Arc::new(tokio::sync::Notify::new());
        let stop = StopToken::new();
        let mut held = Held {
            epoch,
            cost: 1,
            spec_revision: spec_entry.revision,
            fence: fence.clone(),
            state: "starting".into(),
            reason: None,
            outbox: outbox.clone(),
            published: published.clone(),
            stop: stop.clone(),
            running: None,
            starting: None,
            publisher: None,
            abandon: abandon.clone(),
            asks: None,
            releasing: None,
            lapsed_logged: false,
            forget: false,
        };
        if let Some(p) = prev.as_ref().filter(|p| p.state == "ended") {
            // A file that was played to its end is not played again by the next owner.
            tracing::info!(
                "stream '{name}': its source ended under worker '{}'; kept ended (remove and \
                 add it again to run it again)",
                p.worker
            );
            held.state = "ended".into();
            self.held.insert(name.to_owned(), held);
            return;
        }
        let spec = match spec {
            Ok(s) => s,
            Err(reason) => {
                tracing::error!("stream '{name}': {reason}; marked failed");
                held.state = "failed".into();
                held.reason = Some(reason);
                self.held.insert(name.to_owned(), held);
                return;
            }
        };
        held.cost = spec.cost;
        let mut fields = Map::new();
        fields.insert("worker".into(), Value::from(self.me()));
        fields.insert("epoch".into(), Value::from(epoch));
        let sink = {
            let outbox = outbox.clone();
            Arc::new(move |kind: Kind, rec: &Value| outbox.push(kind, rec.clone()))
        };
        let run = RunSpec {
            stream: name.to_owned(),
            config: spec.config,
            origin,
            fields,
            sink,
            stop,
        };
        let runner = self.runner.clone();
        let done = self.started_any.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        held.starting = Some(rx);
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(runner.start(run));
            done.notify_one();
        });
        tracing::info!(
            "stream '{name}': starting here from window {} (t = {:.3} s)",
            origin.index,
            origin.t_ns as f64 / 1e9
        );
        held.publisher = Some(tokio::spawn(publish(Publisher {
            store: self.store.clone(),
            stream: name.to_owned(),
            epoch,
            outbox,
            fence,
            last,
            published,
            abandon,
        })));
        self.held.insert(name.to_owned(), held);
    }

    /// The window index and stream time to continue from, and the last sequence of each
    /// subject (the fencing base).
    async fn continuation(
        &self,
        name: &str,
    ) -> Result<(WindowOrigin, LastSequences), ClusterError> {
        let mut last = HashMap::new();
        let mut origin = WindowOrigin::default();
        if let Some(m) = self.store.last(Kind::Windows, name).await? {
            last.insert(Kind::Windows, m.sequence);
            if let Ok(rec) = serde_json::from_slice::<Value>(&m.payload) {
                let index = rec["index"].as_u64().unwrap_or(0);
                let t_end = rec["t_end"].as_u64().unwrap_or(0);
                // The time the stream was away, on the server's clock (it stamped the record).
                let stamped = m.time.unix_timestamp_nanos();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i128)
                    .unwrap_or(stamped);
                let away = (now - stamped).clamp(0, i128::from(u64::MAX / 4)) as u64;
                origin = WindowOrigin {
                    index: index + 1,
                    t_ns: t_end + away,
                };
            }
        }
        if let Some(m) = self.store.last(Kind::Answers, name).await? {
            last.insert(Kind::Answers, m.sequence);
        }
        Ok((origin, last))
    }

    /// Answers `sensorium.CLUSTER.ask.STREAM` requests while the stream runs here.
    async fn serve_asks(
        &self,
        name: &str,
        running: Arc<dyn RunningStream>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let subject = self.store.names.ask_subject(name);
        let mut sub = match self.store.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("stream '{name}': cannot subscribe to {subject}: {e}");
                return None;
            }
        };
        let client = self.store.client.clone();
        Some(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                let question = question_of(&msg.payload);
                let running = running.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let answer = match question {
                        Ok(q) => tokio::task::spawn_blocking(move || running.ask(&q))
                            .await
                            .unwrap_or_else(|e| Err(format!("the answer panicked: {e}"))),
                        Err(e) => Err(e),
                    };
                    let body = match answer {
                        Ok(v) => v,
                        Err(e) => serde_json::json!({ "error": e }),
                    };
                    let _ = client.publish(reply, Bytes::from(body.to_string())).await;
                });
            }
        }))
    }

    /// Streams whose start finished: `running` (and answering questions), or `failed`.
    async fn poll_starts(&mut self) {
        let mut ready = Vec::new();
        for (name, h) in &mut self.held {
            if h.releasing.is_some() {
                continue;
            }
            let Some(rx) = &mut h.starting else { continue };
            use tokio::sync::oneshot::error::TryRecvError;
            let result: Result<Arc<dyn RunningStream>, String> = match rx.try_recv() {
                Err(TryRecvError::Empty) => continue,
                Ok(r) => r.map(Arc::from),
                Err(TryRecvError::Closed) => Err("starting it panicked".into()),
            };
            h.starting = None;
            ready.push((name.clone(), result));
        }
        for (name, result) in ready {
            match result {
                Ok(r) => {
                    let asks = self.serve_asks(&name, r.clone()).await;
                    if let Some(h) = self.held.get_mut(&name) {
                        h.running = Some(r);
                        h.state = "running".into();
                        h.asks = asks;
                    }
                    tracing::info!("stream '{name}': running");
                }
                Err(reason) => {
                    tracing::error!("stream '{name}': cannot run: {reason}; marked failed");
                    if let Some(h) = self.held.get_mut(&name) {
                        h.state = "failed".into();
                        h.reason = Some(reason);
                        h.outbox.close();
                    }
                }
            }
        }
    }

    /// Streams whose engine ended: `ended` or `failed` (kept, so nobody restarts them in a
    /// loop; they cost nothing).
    fn check_finished(&mut self) {
        for (name, h) in &mut self.held {
            // An engine that returns because this worker stopped it (a give-back, a lost
            // lease) did not see its source end: marking it `ended` would keep the next owner
            // from ever running it.
            if h.state != "running" || h.stop.is_triggered() {
                continue;
            }
            let Some(r) = &h.running else { continue };
            match r.finished() {
                None => {}
                Some(Ok(())) => {
                    tracing::info!("stream '{name}': its source ended");
                    h.state = "ended".into();
                    h.outbox.close();
                }
                Some(Err(reason)) => {
                    tracing::error!("stream '{name}': failed: {reason}");
                    h.state = "failed".into();
                    h.reason = Some(reason);
                    h.outbox.close();
                }
            }
        }
    }

    /// Starts giving `name` back: stop the engine, publish its last records, then (in
    /// [`reap_releases`](Self::reap_releases)) delete the lease.
    fn release(&mut self, name: &str, why: &str) {
        let Some(h) = self.held.get_mut(name) else {
            return;
        };
        if h.releasing.is_some() {
            return;
        }
        tracing::info!("stream '{name}': giving it back ({why})");
        h.stop.trigger();
        let running = h.running.clone();
        let starting = h.starting.take();
        let outbox = h.outbox.clone();
        let publisher = h.publisher.take();
        let abandon = h.abandon.clone();
        let grace = self.opts.grace;
        h.releasing = Some(tokio::spawn(async move {
            if let Some(r) = settled(starting, running).await {
                let join = tokio::task::spawn_blocking(move || r.join());
                tokio::pin!(join);
                tokio::select! {
                    _ = &mut join => {}
                    // A lossless stream waiting for a bus that is away: let it end.
                    _ = tokio::time::sleep(grace) => {
                        outbox.discard();
                        let _ = join.await;
                    }
                }
            }
            outbox.close();
            if let Some(p) = publisher {
                tokio::pin!(p);
                tokio::select! {
                    _ = &mut p => {}
                    _ = tokio::time::sleep(grace) => {
                        abandon.notify_one();
                        let _ = p.await;
                    }
                }
            }
        }));
    }

    /// Deletes the leases of streams whose release finished.
    async fn reap_releases(&mut self) {
        let done: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.releasing.as_ref().is_some_and(|t| t.is_finished()))
            .map(|(n, _)| n.clone())
            .collect();
        for n in done {
            let Some(mut h) = self.held.remove(&n) else {
                continue;
            };
            if let Some(a) = h.asks.take() {
                a.abort();
            }
            self.report.windows += h.published.snapshot().windows;
            self.report.answers += h.published.snapshot().answers;
            h.outbox.discard();
            self.report.dropped += h.outbox.dropped();
            if h.state == "ended" && !h.forget {
                // Left to lapse, not deleted: whoever claims it next sees it ended.
                tracing::info!("stream '{n}': given back (ended)");
                self.report.releases += 1;
                continue;
            }
            match self
                .store
                .leases
                .delete_expect_revision(&n, Some(h.fence.revision()))
                .await
            {
                Ok(()) => {
                    self.report.releases += 1;
                    metrics::counter!("sensorium_cluster_releases_total").increment(1);
                    tracing::info!("stream '{n}': given back");
                }
                Err(e) => tracing::warn!(
                    "stream '{n}': stopped, but the lease could not be given back ({e}); it \
                     expires in {:.1} s",
                    self.opts.lease.as_secs_f64()
                ),
            }
        }
    }

    /// Heartbeats of workers gone for a long time (a minute and 10 leases) are removed.
    async fn cleanup_dead_workers(&mut self, workers: &BTreeMap<String, kv::Entry>, now: Instant) {
        if now.duration_since(self.started) < self.opts.lease * 10 {
            return;
        }
        for (name, e) in workers {
            if name == self.me() {
                continue;
            }
            let Ok(h) = serde_json::from_slice::<Heartbeat>(&e.value) else {
                continue;
            };
            let gone = wall_ms().saturating_sub(h.beat_ms);
            if gone > 60_000 && gone > 10 * self.opts.lease.as_millis() as u64 {
                let _ = self
                    .store
                    .workers
                    .delete_expect_revision(name, Some(e.revision))
                    .await;
            }
        }
    }

    /// Gives every stream back (their last records published within the grace period) and
    /// leaves the cluster.
    async fn shutdown(&mut self) {
        let names: Vec<String> = self.held.keys().cloned().collect();
        for n in &names {
            self.release(n, "the worker is stopping");
        }
        let deadline = Instant::now() + self.opts.grace + self.opts.lease;
        while !self.held.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Keep the leases alive while the last records drain.
            if self
                .held
                .values()
                .any(|h| h.fence.lapsed(Instant::now() + self.opts.lease / 2))
            {
                self.renew().await;
            }
            self.reap_releases().await;
        }
        let _ = self.store.workers.delete(self.me()).await;
        tracing::info!(
            "worker '{}' left cluster '{}': {} claims, {} given back, {} leases lost, {} windows and {} answers published, {} records dropped",
            self.opts.name,
            self.opts.cluster,
            self.report.claims,
            self.report.releases,
            self.report.leases_lost,
            self.report.windows,
            self.report.answers,
            self.report.dropped
        );
    }
}

/// Joins a fenced stream's engine off the async threads (once it started, if it was
/// starting: its stop token has fired, so it ends at once).
fn spawn_join(mut h: Held) {
    let starting = h.starting.take();
    let running = h.running.take();
    tokio::spawn(async move {
        if let Some(r) = settled(starting, running).await {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
    });
}

/// A request's question: a JSON body `{"question": "..."}` or plain text.
fn question_of(payload: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "the question is not UTF-8".to_owned())?;
    let q = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m
            .get("question")
            .and_then(|q| q.as_str())
            .map(str::to_owned)
            .ok_or_else(|| "expected {\"question\": \"...\"} or plain text".to_owned())?,
        _ => text.to_owned(),
    };
    if q.trim().is_empty() {
        return Err("`question` is empty".into());
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_come_as_json_or_text() {
        assert_eq!(
            question_of(br#"{"question":"What do you see?"}"#).unwrap(),
            "What do you see?"
        );
        assert_eq!(
            question_of(b"What do you hear?").unwrap(),
            "What do you hear?"
        );
        assert!(question_of(b"  ").unwrap_err().contains("empty"));
        assert!(question_of(br#"{"q": 1}"#)
            .unwrap_err()
            .contains("expected"));
    }
}
