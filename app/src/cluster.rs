//! `sensorium cluster add|remove|status` and `sensorium worker`: the CLI side of
//! sensorium-cluster. The worker runs each stream it claims through the same `execute` path
//! as `sensorium run`, with a tap that sends every record to the bus.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use parking_lot::Mutex;
use sensorium_cluster::admin::{Retention, Store};
use sensorium_cluster::{
    ClusterError, Kind, Names, NatsOptions, RunSpec, RunningStream, StreamRunner, WorkerOptions,
};
use sensorium_engine::{Config, StopToken};
use serde_json::Value;

use crate::exit::{code, Failure, WithCode};
use crate::output::SharedOut;
use crate::run::ClusterTap;

#[derive(Args, Debug, Clone)]
pub struct Nats {
    /// NATS server(s): `nats://[user:password@]host:port`, comma-separated for a NATS
    /// cluster. Credentials may also come from SENSORIUM_NATS_TOKEN, SENSORIUM_NATS_USER +
    /// SENSORIUM_NATS_PASSWORD, or --nats-creds; they are never printed.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// A NATS `.creds` file (JWT and nkey seed).
    #[arg(long)]
    nats_creds: Option<PathBuf>,
    /// The cluster's name (part of its buckets' names and subjects).
    #[arg(long, default_value = "sensorium")]
    cluster: String,
}

impl Nats {
    fn options(&self) -> NatsOptions {
        NatsOptions::from_env(&self.nats, self.nats_creds.clone())
    }
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Put each [[stream]] of a config (with its [engine], [models], [llm]... sections)
    /// into the cluster's desired state; workers pick them up. A name the cluster already
    /// has is refused.
    Add {
        #[command(flatten)]
        nats: Nats,
        /// Config file (TOML), as for `run`. Paths in it are read by the workers.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Remove streams; their workers stop them and give the leases back.
    Remove {
        #[command(flatten)]
        nats: Nats,
        /// Stream names.
        #[arg(required = true)]
        streams: Vec<String>,
    },
    /// Streams (worker, state, last window, answers/s) and workers (capacity, load).
    Status {
        #[command(flatten)]
        nats: Nats,
        /// One JSON object instead of the tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    nats: Nats,
    /// This worker's name (default: the host name and process id).
    #[arg(long)]
    name: Option<String>,
    /// At most this many streams.
    #[arg(long, default_value_t = 64)]
    max_streams: usize,
    /// Balancing units this worker offers, relative to the others' (a stream costs 1, 3
    /// with [models], 4 with [llm], 6 with both).
    #[arg(long, default_value_t = 8)]
    capacity: u32,
    /// Lease length (seconds): a worker that stops renewing loses its streams after this
    /// long, and stops publishing for them before anyone else may start.
    #[arg(long, default_value_t = 10.0)]
    lease: f64,
    /// Records per stream kept while NATS is away; past it the oldest are dropped
    /// (counted).
    #[arg(long, default_value_t = 4096)]
    buffer: usize,
    /// The streams' JSON lines also go here (`-` for stdout, or a file); default: only the
    /// bus.
    #[arg(long, short, default_value = "none")]
    output: String,
    /// Prometheus listen address for this worker's metrics (engine and cluster).
    #[arg(long)]
    metrics: Option<String>,
    /// A model bundle for streams that ask questions without a model (default: the
    /// default model).
    #[arg(long)]
    model: Option<PathBuf>,
}

fn cluster_code(e: &ClusterError) -> u8 {
    match e {
        ClusterError::Usage(_)
        | ClusterError::Duplicate { .. }
        | ClusterError::NoSuchStream { .. } => code::USAGE,
        ClusterError::Unreachable { .. }
        | ClusterError::Auth { .. }
        | ClusterError::JetStream(_) => code::CLUSTER,
    }
}

fn fail(e: ClusterError) -> Failure {
    Failure {
        code: cluster_code(&e),
        error: anyhow!(e),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nats")
        .enable_all()
        .build()
        .context("cannot start the NATS client's runtime")
        .code(code::USAGE)
}

async fn open(nats: &Nats, create: bool) -> Result<Store, ClusterError> {
    let names = Names::new(&nats.cluster)?;
    let client = nats.options().connect("sensorium-cluster-cli").await?;
    Store::open(client, names, create, Retention::default()).await
}

pub fn cluster(cmd: ClusterCommand) -> Result<u8, Failure> {
    let rt = runtime()?;
    match cmd {
        ClusterCommand::Add { nats, config } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read config {}", config.display()))
                .code(code::USAGE)?;
            let origin = config.display().to_string();
            let specs = sensorium_cluster::spec::split_config(&text, &origin).map_err(fail)?;
            // The model sections too, as `run` would check them.
            for s in &specs {
                let c = Config::from_toml_str(&s.config, &origin).code(code::USAGE)?;
                // Questions without a model get the workers' default model: checked there.
                let own_llm = c.llm.as_ref().is_some_and(|l| l.contains_key("model"));
                if c.models.is_some() || own_llm {
                    sensorium_models::setup::ModelSetup::parse(&c, &origin).code(code::USAGE)?;
                }
            }
            rt.block_on(async {
                let store = open(&nats, true).await?;
                store.add(&specs).await
            })
            .map_err(fail)?;
            for s in &specs {
                println!("added stream '{}' to cluster '{}'", s.name, nats.cluster);
            }
            Ok(code::OK)
        }
        ClusterCommand::Remove { nats, streams } => {
            rt.block_on(async {
                let store = open(&nats, false).await?;
                store.remove(&streams).await
            })
            .map_err(fail)?;
            for s in &streams {
                println!("removed stream '{s}' from cluster '{}'", nats.cluster);
            }
            Ok(code::OK)
        }
        ClusterCommand::Status { nats, json } => {
            let status = rt
                .block_on(async {
                    let store = open(&nats, false).await?;
                    store.status().await
                })
                .map_err(fail)?;
            if json {
                println!("{}", serde_json::to_string(&status).unwrap_or_default());
            } else {
                print!("{status}");
            }
            Ok(code::OK)
        }
    }
}

pub fn worker(args: WorkerArgs) -> Result<u8, Failure> {
    let name = args.name.clone().unwrap_or_else(default_name);
    if !(0.5..=3600.0).contains(&args.lease) {
        return Err(anyhow!(
            "--lease {}: give seconds from 0.5 to 3600",
            args.lease
        ))
        .code(code::USAGE);
    }
    let opts = WorkerOptions {
        cluster: args.nats.cluster.clone(),
        name: name.clone(),
        lease: Duration::from_secs_f64(args.lease),
        capacity: args.capacity.max(1),
        max_streams: args.max_streams,
        buffer: args.buffer,
        retention: Retention::default(),
        grace: Duration::from_secs(10),
    };
    // The worker's own metrics server (engine and cluster metrics of every stream).
    let _metrics = match &args.metrics {
        Some(listen) => {
            let handle = sensorium_engine::metrics::install_prometheus().code(code::USAGE)?;
            // A config of no streams, only to say where the metrics server listens.
            let mut c: Config = toml::from_str("").context("--metrics").code(code::USAGE)?;
            c.metrics.listen = Some(listen.clone());
            Some(
                sensorium_server::run::start(&c, None, None, Some(handle), None)
                    .code(code::USAGE)?,
            )
        }
        None => None,
    };
    let stop = crate::run::interrupt_token()?;
    let runner = Arc::new(Runner {
        output: args.output.clone(),
        model: args.model.clone(),
        shared_out: Mutex::new(None),
    });
    let rt = runtime()?;
    let report = rt
        .block_on(sensorium_cluster::worker::run(
            args.nats.options(),
            opts,
            runner,
            stop.clone(),
        ))
        .map_err(fail)?;
    tracing::debug!("{report:?}");
    Ok(if stop.is_triggered() {
        code::INTERRUPTED
    } else {
        code::OK
    })
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}

/// Starts streams with the `run` path.
struct Runner {
    output: String,
    model: Option<PathBuf>,
    /// One local output shared by every stream of this worker (lines never interleave).
    shared_out: Mutex<Option<SharedOut>>,
}

struct Running {
    stream: String,
    stop: StopToken,
    done: Arc<Mutex<Option<Result<(), String>>>>,
    join: Mutex<Option<std::thread::JoinHandle<()>>>,
    asks: Arc<Mutex<Option<sensorium_models::llm::ServiceHandle>>>,
    fields: serde_json::Map<String, Value>,
}

impl StreamRunner for Runner {
    fn start(&self, spec: RunSpec) -> Result<Box<dyn RunningStream>, String> {
        let origin = format!("cluster stream '{}'", spec.stream);
        let mut config = Config::from_toml_str(&spec.config, &origin).map_err(|e| e.to_string())?;
        // The worker serves metrics itself; one process cannot listen twice.
        config.metrics.listen = None;
        config.http.listen = None;
        let explicit: Option<toml::Table> = spec.config.parse().ok();
        crate::run::prepare(
            &mut config,
            self.model.as_deref(),
            explicit.as_ref().map(|t| (origin.as_str(), t)),
        )
        .map_err(|f| f.error.to_string())?;
        let base = {
            let mut slot = self.shared_out.lock();
            match &*slot {
                Some(o) => o.clone(),
                None => {
                    let o = SharedOut::open_as(&self.output, Some(crate::output::Format::Json))
                        .map_err(|e| e.to_string())?
                        .quiet();
                    *slot = Some(o.clone());
                    o
                }
            }
        };
        let sink = spec.sink.clone();
        let out = base.tapped(
            spec.fields.clone(),
            Arc::new(move |k: Kind, v: &Value| sink(k, v)),
        );
        let asks = Arc::new(Mutex::new(None));
        let failure = Arc::new(Mutex::new(None));
        let tap = ClusterTap {
            origin: spec.origin,
            asks: asks.clone(),
            failure: failure.clone(),
        };
        let done = Arc::new(Mutex::new(None));
        let stop = spec.stop.clone();
        let join = {
            let (done, stop, name) = (done.clone(), stop.clone(), spec.stream.clone());
            std::thread::Builder::new()
                .name(format!("run-{name}"))
                .spawn(move || {
                    let r = crate::run::execute(config, &origin, out, stop, Some(tap), None);
                    let result = match r {
                        Ok(c) if c == code::OK || c == code::INTERRUPTED => Ok(()),
                        Ok(c) => Err(failure.lock().clone().unwrap_or_else(|| {
                            format!("the run ended with exit code {c} (see the worker's log)")
                        })),
                        Err(f) => Err(format!("{:#}", f.error)),
                    };
                    *done.lock() = Some(result);
                })
                .map_err(|e| format!("cannot start a thread: {e}"))?
        };
        Ok(Box::new(Running {
            stream: spec.stream,
            stop,
            done,
            join: Mutex::new(Some(join)),
            asks,
            fields: spec.fields,
        }))
    }
}

impl RunningStream for Running {
    fn finished(&self) -> Option<Result<(), String>> {
        self.done.lock().clone()
    }

    fn ask(&self, question: &str) -> Result<Value, String> {
        use sensorium_models::llm::LiveEvent;
        let handle = self.asks.lock().clone().ok_or_else(|| {
            format!(
                "stream '{}' has no language model here (give its config [llm] or questions)",
                self.stream
            )
        })?;
        let rx = handle
            .ask(Some(self.stream.clone()), question.to_owned())
            .map_err(|e| e.to_string())?;
        drop(handle);
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(LiveEvent::Token(_)) => {}
                Ok(LiveEvent::Done(rec)) => {
                    let mut v = serde_json::to_value(&rec).map_err(|e| e.to_string())?;
                    if let Value::Object(m) = &mut v {
                        m.insert("type".into(), "answer".into());
                        m.insert("live".into(), true.into());
                        for (k, x) in &self.fields {
                            m.insert(k.clone(), x.clone());
                        }
                    }
                    return Ok(v);
                }
                Ok(LiveEvent::Error { message, .. }) => return Err(message),
                Err(_) => return Err("no answer within 120 s".into()),
            }
        }
    }

    fn join(&self) {
        self.stop.trigger();
        if let Some(j) = self.join.lock().take() {
            let _ = j.join();
        }
    }
}
