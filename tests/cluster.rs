//! The cluster mode end to end: a real `nats-server` (Debian's, JetStream on, loopback, a
//! temp store; `make test-deps` installs it), `sensorium worker` processes, and the bus read
//! back with async-nats. Tests never assert on time except the takeover bounds the issue
//! states (lease + 5 s), which are an order of magnitude above what is measured.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::web::free_port;
use common::*;
use serde_json::Value;

/// The cluster tests run one at a time: each starts several workers on two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const LEASE_S: f64 = 3.0;

/// One cluster test's ground: the serial guard, a temp dir, a NATS server in it.
fn ground() -> (
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    PathBuf,
    Nats,
) {
    let guard = serial();
    let (d, dir) = tmp();
    let nats = Nats::start(&dir);
    (guard, d, dir, nats)
}

fn nats_server_bin() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nats-server is not installed: `make test-deps` installs Debian's nats-server");
}

/// A `nats-server` with JetStream on a loopback port and a store of its own.
struct Nats {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    auth: Option<(String, String)>,
    token: Option<String>,
}

impl Nats {
    fn start(dir: &Path) -> Nats {
        Self::start_with(dir, None)
    }

    fn start_with(dir: &Path, auth: Option<(&str, &str)>) -> Nats {
        let mut n = Nats {
            child: None,
            port: free_port(),
            store: dir.join("jetstream"),
            auth: auth.map(|(u, p)| (u.into(), p.into())),
            token: None,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(nats_server_bin());
        cmd.args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-sd",
        ])
        .arg(&self.store)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some((u, p)) = &self.auth {
            cmd.args(["--user", u, "--pass", p]);
        }
        if let Some(t) = &self.token {
            cmd.args(["--auth", t]);
        }
        self.child = Some(cmd.spawn().expect("nats-server starts"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, wait, start again on the same port and store.
    fn restart_after(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `sensorium worker` process, its stderr collected.
struct Worker {
    name: String,
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Worker {
    fn start(nats: &str, cluster: &str, name: &str, extra: &[&str]) -> Worker {
        let lease = LEASE_S.to_string();
        let mut args = vec![
            "worker",
            "--nats",
            nats,
            "--cluster",
            cluster,
            "--name",
            name,
            "--lease",
            &lease,
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sensorium"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("worker starts");
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let s2 = stderr.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                s2.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Worker {
            name: name.into(),
            child,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit code and stderr.
    fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                return (s.code(), self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("worker {} did not stop: {}", self.name, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP proxy in front of NATS for one worker: `cut` drops its connections and refuses new
/// ones (a network partition of that worker alone) until `heal`.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        {
            let (cut, conns) = (cut.clone(), conns.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    conns.lock().unwrap().push(client.try_clone().unwrap());
                    conns.lock().unwrap().push(server.try_clone().unwrap());
                    for (mut from, mut to) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server, client),
                    ] {
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 16384];
                            loop {
                                match from.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if to.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            });
        }
        Proxy { port, cut, conns }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// `sensorium cluster ARGS[0] --nats NATS --cluster CLUSTER ARGS[1..]`.
fn cluster_cli(nats: &str, cluster: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["cluster", args[0], "--nats", nats, "--cluster", cluster];
    all.extend_from_slice(&args[1..]);
    sensorium(&all)
}

fn cluster_status(nats: &str, cluster: &str) -> Value {
    let o = cluster_cli(nats, cluster, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("status JSON")
}

/// Stream name -> worker, for the streams `running` (on a live worker).
fn assignment(status: &Value) -> BTreeMap<String, String> {
    status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "running")
        .filter_map(|s| {
            Some((
                s["name"].as_str()?.to_owned(),
                s["worker"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn per_worker(a: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in a.values() {
        *m.entry(w.clone()).or_insert(0) += 1;
    }
    m
}

/// Polls `cluster status` until `ok` holds (panics with the last status after `within`).
fn wait_status(
    nats: &str,
    cluster: &str,
    within: Duration,
    ok: impl Fn(&Value) -> bool,
) -> (Value, Instant) {
    let deadline = Instant::now() + within;
    loop {
        let s = cluster_status(nats, cluster);
        if ok(&s) {
            return (s, Instant::now());
        }
        assert!(Instant::now() < deadline, "cluster never got there: {s:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One record read back from the bus.
#[derive(Clone, Debug)]
struct BusRecord {
    subject: String,
    /// When the server stored it.
    time: SystemTime,
    record: Value,
}

/// Everything on the cluster's results stream, in order.
fn read_bus(nats: &str, cluster: &str) -> Vec<BusRecord> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats)
            .await
            .expect("test client connects");
        let js = async_nats::jetstream::new(client);
        let mut stream = js
            .get_stream(format!("sensorium-{cluster}-results"))
            .await
            .expect("results stream");
        let info = stream.info().await.expect("stream info").clone();
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let Ok(m) = stream.get_raw_message(seq).await else {
                continue;
            };
            let nanos = m.time.unix_timestamp_nanos();
            out.push(BusRecord {
                subject: m.subject.to_string(),
                time: SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos as u64),
                record: serde_json::from_slice(&m.payload).expect("JSON record"),
            });
        }
        out
    })
}

fn windows_of<'a>(bus: &'a [BusRecord], cluster: &str, stream: &str) -> Vec<&'a BusRecord> {
    let subject = format!("sensorium.{cluster}.windows.{stream}");
    bus.iter().filter(|r| r.subject == subject).collect()
}

/// The fail-over invariants of one stream's windows on the bus: indices strictly increasing
/// (contiguous unless records were dropped), times strictly increasing, and owners that never
/// interleave (once a worker took over, the previous one never appears again, and its last
/// window ends before the new owner's first begins). Returns the owners in order.
fn check_one_writer(stream: &str, w: &[&BusRecord]) -> Vec<String> {
    assert!(!w.is_empty(), "no windows of {stream} on the bus");
    let mut owners: Vec<String> = Vec::new();
    for pair in w.windows(2) {
        let (a, b) = (&pair[0].record, &pair[1].record);
        assert!(
            u(&b["index"]) > u(&a["index"]),
            "{stream}: index {} after {}",
            b["index"],
            a["index"]
        );
        assert!(
            u(&b["t_start"]) >= u(&a["t_end"]),
            "{stream}: window {} starts at {} before window {} ended at {}",
            b["index"],
            b["t_start"],
            a["index"],
            a["t_end"]
        );
    }
    for r in w {
        let who = r.record["worker"]
            .as_str()
            .expect("worker field")
            .to_owned();
        if owners.last() != Some(&who) {
            assert!(
                !owners.contains(&who),
                "{stream}: {who} published again after another worker took over: {owners:?}"
            );
            owners.push(who);
        }
    }
    owners
}

fn live_streams_config(rtsp_url: &str) -> String {
    let mut s =
        String::from("[engine]\nwindow = 2\nstride = 2\nfps = 5\nwidth = 64\nheight = 48\n\n");
    for i in 0..4 {
        s += &format!("[[stream]]\nname = \"test{i}\"\nsource = {{ kind = \"test\", pattern = \"ball\" }}\n\n");
    }
    for i in 0..4 {
        s += &format!("[[stream]]\nname = \"synth{i}\"\nsource = {{ kind = \"synthetic\" }}\n\n");
    }
    for i in 0..2 {
        s += &format!(
            "[[stream]]\nname = \"scene{i}\"\nsource = {{ kind = \"scene\", seed = {i} }}\n\n"
        );
    }
    for i in 0..2 {
        s += &format!("[[stream]]\nname = \"rtsp{i}\"\nsource = {{ kind = \"rtsp\", url = \"{rtsp_url}\" }}\n\n");
    }
    s
}

fn add(nats: &str, cluster: &str, config: &str) {
    let o = cluster_cli(nats, cluster, &["add", "--config", config]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn twelve_streams_balance_over_three_workers_a_fourth_takes_a_quarter_and_kill_9_fails_over() {
    let (_serial, _d, dir, nats) = ground();
    let rtsp = RtspServer::serving(
        0,
        &Serve {
            width: 64,
            height: 48,
            fps: 5,
            ..Default::default()
        },
    );
    let url = nats.url();
    let config = write(&dir, "fleet.toml", &live_streams_config(&rtsp.url()));
    add(&url, "fleet", &config);

    let mut workers: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| Worker::start(&url, "fleet", n, &[]))
        .collect();
    let (s, _) = wait_status(&url, "fleet", Duration::from_secs(90), |s| {
        assignment(s).len() == 12 && per_worker(&assignment(s)).len() == 3
    });
    let three = per_worker(&assignment(&s));
    let (lo, hi) = (three.values().min().unwrap(), three.values().max().unwrap());
    assert!(hi - lo <= 1, "balanced within ±1: {three:?}");
    let before_join = assignment(&s);
    eprintln!("3 workers: {three:?}");

    // A fourth worker takes about a quarter, and nothing moves twice.
    std::thread::sleep(Duration::from_secs(2));
    workers.push(Worker::start(&url, "fleet", "w4", &[]));
    let (s, _) = wait_status(&url, "fleet", Duration::from_secs(60), |s| {
        let a = assignment(s);
        a.len() == 12 && per_worker(&a).get("w4").copied().unwrap_or(0) >= 3
    });
    // Give a flapping planner the chance to show itself.
    std::thread::sleep(Duration::from_secs(4));
    let s2 = cluster_status(&url, "fleet");
    let after_join = assignment(&s2);
    assert_eq!(after_join, assignment(&s), "the assignment settled");
    let four = per_worker(&after_join);
    eprintln!("4 workers: {four:?}");
    assert_eq!(four.len(), 4);
    assert!(four.values().all(|&n| n == 3), "a quarter each: {four:?}");
    let moved: Vec<&String> = before_join
        .keys()
        .filter(|k| before_join[*k] != after_join[*k])
        .collect();
    assert_eq!(moved.len(), 3, "three streams moved to w4: {moved:?}");
    assert!(moved.iter().all(|k| after_join[*k] == "w4"));

    // kill -9 of one worker: its streams resume on the others within lease + 5 s.
    std::thread::sleep(Duration::from_secs(2));
    let victim = after_join.values().next().unwrap().clone();
    let victims: Vec<String> = after_join
        .iter()
        .filter(|(_, w)| **w == victim)
        .map(|(s, _)| s.clone())
        .collect();
    let i = workers.iter().position(|w| w.name == victim).unwrap();
    let killed_at = SystemTime::now();
    workers[i].kill9();
    let (s, _) = wait_status(&url, "fleet", Duration::from_secs(60), |s| {
        let a = assignment(s);
        a.len() == 12 && !a.values().any(|w| *w == victim)
    });
    let three_again = per_worker(&assignment(&s));
    assert!(three_again.values().all(|&n| n == 4), "{three_again:?}");
    std::thread::sleep(Duration::from_secs(3));
    let mut ends = Vec::new();
    for w in workers.drain(..) {
        if w.name != victim {
            ends.push(w.stop());
        }
    }
    for (code, err) in &ends {
        assert_eq!(*code, Some(130), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    let bus = read_bus(&url, "fleet");
    let mut takeovers = Vec::new();
    for name in before_join.keys() {
        let w = windows_of(&bus, "fleet", name);
        let owners = check_one_writer(name, &w);
        if victims.contains(name) {
            assert_eq!(owners.iter().filter(|o| **o == victim).count(), 1);
            let first_after = w
                .iter()
                .find(|r| r.record["worker"] != victim.as_str() && r.time > killed_at)
                .unwrap_or_else(|| panic!("{name}: nobody resumed it"));
            let last_before = w
                .iter()
                .rev()
                .find(|r| r.record["worker"] == victim.as_str())
                .unwrap();
            let takeover = first_after.time.duration_since(killed_at).unwrap();
            takeovers.push(takeover.as_secs_f64());
            assert!(
                takeover <= Duration::from_secs_f64(LEASE_S + 5.0),
                "{name}: resumed {takeover:?} after the kill"
            );
            // The gap in stream time is no longer than the takeover (plus a window).
            let gap_ns = u(&first_after.record["t_start"]) - u(&last_before.record["t_end"]);
            let gap = Duration::from_nanos(gap_ns);
            assert!(
                gap <= first_after.time.duration_since(last_before.time).unwrap()
                    + Duration::from_secs(1),
                "{name}: a gap of {gap:?} in stream time"
            );
            assert_eq!(
                u(&first_after.record["index"]),
                u(&last_before.record["index"]) + 1,
                "{name}: the new owner continues the index"
            );
        }
    }
    let records = bus.len();
    let span = bus
        .last()
        .unwrap()
        .time
        .duration_since(bus[0].time)
        .unwrap()
        .as_secs_f64();
    eprintln!(
        "takeover after kill -9 (lease {LEASE_S} s): {:?} s; {records} records on the bus in \
         {span:.1} s ({:.1}/s)",
        takeovers,
        records as f64 / span
    );
    assert_eq!(takeovers.len(), victims.len());
}

#[test]
fn a_partitioned_worker_stops_publishing_within_one_lease_and_never_writes_again() {
    let (_serial, _d, dir, nats) = ground();
    let url = nats.url();
    let mut s =
        String::from("[engine]\nwindow = 2\nstride = 2\nfps = 5\nwidth = 64\nheight = 48\n\n");
    for i in 0..4 {
        s += &format!("[[stream]]\nname = \"cam{i}\"\nsource = {{ kind = \"synthetic\" }}\n\n");
    }
    add(&url, "part", &write(&dir, "part.toml", &s));
    let proxy = Proxy::start(nats.port);
    let cut_off = Worker::start(&proxy.url(), "part", "island", &[]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let other = Worker::start(&url, "part", "mainland", &["--metrics", &metrics]);
    wait_status(&url, "part", Duration::from_secs(60), |s| {
        let p = per_worker(&assignment(s));
        p.get("island") == Some(&2) && p.get("mainland") == Some(&2)
    });
    std::thread::sleep(Duration::from_secs(2));
    let cut_at = SystemTime::now();
    proxy.cut();
    wait_status(&url, "part", Duration::from_secs(60), |s| {
        per_worker(&assignment(s)).get("mainland") == Some(&4)
    });
    let taken_at = SystemTime::now();
    // The worker's metrics: the engine's per stream and the cluster gauges.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, text) = common::web::http(&metrics, "GET", "/metrics", None);
        assert_eq!(code, 200);
        if text.lines().any(|l| l == "sensorium_cluster_streams 4") {
            assert!(
                text.contains("sensorium_cluster_published_total{kind=\"windows\"}"),
                "{text}"
            );
            assert!(text.contains("sensorium_cluster_claims_total"), "{text}");
            assert!(text.contains("sensorium_items_out_total"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The island comes back: it must learn it lost the leases and publish nothing more.
    std::thread::sleep(Duration::from_secs(1));
    proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cut_off.stderr().contains("fenced") {
        assert!(Instant::now() < deadline, "{}", cut_off.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (_, island_log) = cut_off.stop();
    other.stop();
    let bus = read_bus(&url, "part");
    let lease = Duration::from_secs_f64(LEASE_S);
    let mut moved = 0;
    for i in 0..4 {
        let name = format!("cam{i}");
        let w = windows_of(&bus, "part", &name);
        let owners = check_one_writer(&name, &w);
        if owners.first().map(String::as_str) == Some("island") {
            moved += 1;
            assert_eq!(owners, ["island", "mainland"], "{name}");
            let last_island = w
                .iter()
                .rev()
                .find(|r| r.record["worker"] == "island")
                .unwrap();
            assert!(
                last_island.time <= cut_at + lease,
                "{name}: the island published {:?} after the cut",
                last_island.time.duration_since(cut_at)
            );
        }
    }
    assert_eq!(moved, 2, "{island_log}");
    eprintln!(
        "partition: mainland held all 4 streams {:.1} s after the cut (lease {LEASE_S} s)",
        taken_at.duration_since(cut_at).unwrap().as_secs_f64()
    );
}

#[test]
fn nats_restarted_mid_run_loses_nothing_within_the_buffer_and_counts_what_it_drops() {
    let (_serial, _d, dir, mut nats) = ground();
    let url = nats.url();
    let mut s =
        String::from("[engine]\nwindow = 2\nstride = 2\nfps = 10\nwidth = 64\nheight = 48\n\n");
    for i in 0..4 {
        s += &format!("[[stream]]\nname = \"cam{i}\"\nsource = {{ kind = \"synthetic\" }}\n\n");
    }
    add(&url, "restart", &write(&dir, "restart.toml", &s));
    // `roomy` buffers everything an outage of a few seconds produces; `tight` keeps 3
    // records per stream.
    let roomy = Worker::start(&url, "restart", "roomy", &["--max-streams", "2"]);
    let tight = Worker::start(
        &url,
        "restart",
        "tight",
        &["--max-streams", "2", "--buffer", "3"],
    );
    wait_status(&url, "restart", Duration::from_secs(60), |s| {
        assignment(s).len() == 4 && per_worker(&assignment(s)).len() == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    // Down for longer than a lease: nobody may take anything over meanwhile.
    nats.restart_after(Duration::from_secs_f64(LEASE_S + 2.0));
    let (st, _) = wait_status(&url, "restart", Duration::from_secs(60), |s| {
        s["streams"].as_array().unwrap().iter().all(|x| {
            x["state"] == "running" && x["buffered"] == 0 && x["windows"].as_u64() > Some(0)
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    let st_final = cluster_status(&url, "restart");
    let (_, roomy_log) = roomy.stop();
    let (_, tight_log) = tight.stop();
    for log in [&roomy_log, &tight_log] {
        assert!(
            !log.contains("fenced"),
            "nobody lost a lease to a NATS restart: {log}"
        );
    }
    let bus = read_bus(&url, "restart");
    let owner_of = assignment(&st);
    for x in st_final["streams"].as_array().unwrap() {
        let name = x["name"].as_str().unwrap();
        let w = windows_of(&bus, "restart", name);
        let owners = check_one_writer(name, &w);
        assert_eq!(
            owners.len(),
            1,
            "{name}: no takeover during the outage: {owners:?}"
        );
        let indices: Vec<u64> = w.iter().map(|r| u(&r.record["index"])).collect();
        let missing = (indices.last().unwrap() - indices[0] + 1) as usize - indices.len();
        let dropped = u(&x["dropped"]) as usize;
        eprintln!(
            "{name} on {}: {} windows on the bus, {missing} missing, {dropped} dropped (counted)",
            owner_of[name],
            indices.len()
        );
        assert_eq!(indices[0], 0, "{name}");
        if owner_of[name] == "roomy" {
            assert_eq!(missing, 0, "{name}: nothing lost within the buffer");
            assert_eq!(dropped, 0);
            for p in w.windows(2) {
                assert_eq!(
                    p[1].record["t_start"], p[0].record["t_end"],
                    "{name}: one stream, no restart, no gap in time"
                );
            }
        } else {
            assert!(dropped > 0, "{name}: an outage of 5 s overflows 3 records");
            // Answers would count too; these streams have none.
            assert_eq!(missing, dropped, "{name}: every missing window is counted");
        }
    }
}

#[test]
fn bad_input_gets_one_clear_error_and_a_documented_exit_code() {
    let _serial = serial();
    let (_d, dir) = tmp();
    // Bad worker arguments.
    for (args, says) in [
        (
            &["--lease", "NaN"][..],
            "--lease NaN: give seconds from 0.5 to 3600",
        ),
        (&["--lease", "0.1"][..], "--lease 0.1: give seconds"),
        (&["--name", "a b"][..], "worker name 'a b'"),
    ] {
        let mut all = vec!["worker", "--nats", "nats://127.0.0.1:1", "--cluster", "x"];
        all.extend_from_slice(args);
        let o = sensorium(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    // Unreachable NATS.
    let dead = format!("nats://127.0.0.1:{}", closed_port());
    let o = cluster_cli(&dead, "x", &["status"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("cannot reach NATS at {dead}")),
        "{}",
        stderr(&o)
    );

    // Wrong credentials: refused, and never printed.
    let guarded = Nats::start_with(&dir.join("auth"), Some(("alice", "right-pass")));
    let wrong = format!("nats://alice:wrong-pass@127.0.0.1:{}", guarded.port);
    let o = cluster_cli(&wrong, "x", &["status"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("refused the credentials"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("wrong-pass"), "{}", stderr(&o));
    let right = format!("nats://127.0.0.1:{}", guarded.port);
    let o = Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .args(["cluster", "status", "--nats", &right, "--cluster", "x"])
        .env("SENSORIUM_NATS_USER", "alice")
        .env("SENSORIUM_NATS_PASSWORD", "right-pass")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("there is no cluster 'x'"),
        "{}",
        stderr(&o)
    );

    // A token from the environment: accepted when right; refused, and not printed, when wrong.
    let mut tokened = Nats {
        child: None,
        port: free_port(),
        store: dir.join("token"),
        auth: None,
        token: Some("s3cret-token".into()),
    };
    tokened.spawn();
    for (token, code, says) in [
        ("s3cret-token", 2, "there is no cluster 'x'"),
        ("not-the-token", 7, "refused the credentials"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_sensorium"))
            .args([
                "cluster",
                "status",
                "--nats",
                &tokened.url(),
                "--cluster",
                "x",
            ])
            .env("SENSORIUM_NATS_TOKEN", token)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        assert!(!stderr(&o).contains(token), "{}", stderr(&o));
    }
    drop(tokened);

    // Duplicate names, bad names, bad configs.
    let nats = Nats::start(&dir);
    let url = nats.url();
    let ok = write(
        &dir,
        "ok.toml",
        "[[stream]]\nname = \"good\"\nfps = 5\nsource = { kind = \"synthetic\" }\n\n\
         [[stream]]\nname = \"missing\"\nsource = { kind = \"file\", path = \"/nonexistent/clip.mkv\" }\n",
    );
    add(&url, "bad", &ok);
    let o = cluster_cli(&url, "bad", &["add", "--config", &ok]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("stream 'good' is already in cluster 'bad' (from"),
        "{}",
        stderr(&o)
    );
    let bad_name = write(
        &dir,
        "n.toml",
        "[[stream]]\nname = \"a.b\"\nsource = { kind = \"synthetic\" }\n",
    );
    let o = cluster_cli(&url, "bad", &["add", "--config", &bad_name]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("stream name 'a.b'"), "{}", stderr(&o));
    let o = cluster_cli(&url, "bad", &["remove", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cluster 'bad' has no stream 'nope'"),
        "{}",
        stderr(&o)
    );

    // A malformed entry written into the bucket by someone else: that stream fails, with
    // the reason, and nothing else does.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(&url).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let kv = js.get_key_value("sensorium-bad-streams").await.unwrap();
        kv.put("broken", "{\"name\": \"broken\", \"config\": 42}".into())
            .await
            .unwrap();
    });
    let w = Worker::start(&url, "bad", "solo", &[]);
    let (st, _) = wait_status(&url, "bad", Duration::from_secs(60), |s| {
        let by: BTreeMap<&str, &Value> = s["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["name"].as_str().unwrap(), x))
            .collect();
        by["good"]["state"] == "running"
            && by["good"]["windows"].as_u64() > Some(2)
            && by["broken"]["state"] == "failed"
            && by["missing"]["state"] == "failed"
    });
    let by: BTreeMap<String, Value> = st["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["name"].as_str().unwrap().to_owned(), x.clone()))
        .collect();
    assert!(
        by["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("is not a stream spec"),
        "{:#}",
        by["broken"]
    );
    assert!(
        by["missing"]["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/clip.mkv"),
        "{:#}",
        by["missing"]
    );
    // Removing a stream stops it on its worker and frees the lease.
    let o = cluster_cli(&url, "bad", &["remove", "missing"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    wait_status(&url, "bad", Duration::from_secs(30), |s| {
        s["streams"].as_array().unwrap().len() == 2
    });
    let (code, log) = w.stop();
    assert_eq!(code, Some(130), "{log}");

    // A worker started before its NATS server: it says so, retries, and joins once it is up.
    let port = free_port();
    let later = format!("nats://127.0.0.1:{port}");
    let early = Worker::start(&later, "late", "early", &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        early.stderr().contains(&format!("cannot reach {later}"))
            && early.stderr().contains("retrying in"),
        "{}",
        early.stderr()
    );
    let mut n2 = Nats {
        child: None,
        port,
        store: dir.join("late"),
        auth: None,
        token: None,
    };
    n2.spawn();
    add(
        &later,
        "late",
        &write(
            &dir,
            "late.toml",
            "[[stream]]\nname = \"one\"\nfps = 5\nsource = { kind = \"synthetic\" }\n",
        ),
    );
    wait_status(&later, "late", Duration::from_secs(60), |s| {
        assignment(s).get("one").map(String::as_str) == Some("early")
    });
    early.stop();
}

#[test]
fn questions_by_request_reply_are_answered_by_the_streams_worker() {
    let (_serial, _d, dir, nats) = ground();
    let url = nats.url();
    // Scheduled questions without a model of their own: the default model answers.
    let cfg = write(
        &dir,
        "ask.toml",
        "[[llm.question]]\ntext = \"What do you see?\"\nevery_windows = 4\n\n\
         [[stream]]\nname = \"scene\"\nsource = { kind = \"scene\", seed = 7 }\n",
    );
    add(&url, "ask", &cfg);
    let w = Worker::start(&url, "ask", "answerer", &[]);
    wait_status(&url, "ask", Duration::from_secs(120), |s| {
        s["streams"][0]["state"] == "running" && s["streams"][0]["windows"].as_u64() > Some(1)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply: Value = rt.block_on(async {
        let c = async_nats::connect(&url).await.unwrap();
        let r = tokio::time::timeout(
            Duration::from_secs(120),
            c.request(
                "sensorium.ask.ask.scene",
                r#"{"question": "What do you hear?"}"#.into(),
            ),
        )
        .await
        .expect("an answer in time")
        .expect("a reply");
        serde_json::from_slice(&r.payload).unwrap()
    });
    assert_eq!(reply["type"], "answer", "{reply:#}");
    assert_eq!(reply["stream"], "scene");
    assert_eq!(reply["question"], "What do you hear?");
    assert_eq!(reply["worker"], "answerer");
    assert!(
        !reply["answer"].as_str().unwrap_or("").is_empty(),
        "{reply:#}"
    );
    // Scheduled answers go to the answers subject.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let bus = read_bus(&url, "ask");
        let answers: Vec<_> = bus
            .iter()
            .filter(|r| r.subject == "sensorium.ask.answers.scene")
            .collect();
        if let Some(a) = answers.first() {
            assert_eq!(a.record["question"], "What do you see?");
            assert_eq!(a.record["worker"], "answerer");
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled answer on the bus");
        std::thread::sleep(Duration::from_millis(500));
    }
    w.stop();
}

#[test]
fn a_stream_whose_source_ended_is_not_played_again_by_the_next_worker() {
    let (_serial, _d, dir, nats) = ground();
    let url = nats.url();
    add(
        &url,
        "ends",
        &write(
            &dir,
            "ends.toml",
            "[engine]\nwindow = 2\nstride = 2\nfps = 10\n\n\
             [[stream]]\nname = \"clip\"\nsource = { kind = \"synthetic\", is_live = false, duration_s = 2.0 }\n",
        ),
    );
    // A buffer of 2 for 10 windows made at once: a lossless stream waits for the bus.
    let first = Worker::start(&url, "ends", "first", &["--buffer", "2"]);
    wait_status(&url, "ends", Duration::from_secs(60), |s| {
        s["streams"][0]["state"] == "ended" && s["streams"][0]["buffered"] == 0
    });
    let (code, log) = first.stop();
    assert_eq!(code, Some(130), "{log}");
    let second = Worker::start(&url, "ends", "second", &[]);
    let (s, _) = wait_status(&url, "ends", Duration::from_secs(60), |s| {
        s["streams"][0]["worker"] == "second"
    });
    assert_eq!(s["streams"][0]["state"], "ended", "{s:#}");
    std::thread::sleep(Duration::from_secs(2));
    let (_, log) = second.stop();
    assert!(
        log.contains("its source ended under worker 'first'"),
        "{log}"
    );
    let bus = read_bus(&url, "ends");
    let w = windows_of(&bus, "ends", "clip");
    assert_eq!(w.len(), 10, "2 s at 10 fps, 2 frames a window: all, once");
    assert!(w.iter().all(|r| r.record["worker"] == "first"));
}
