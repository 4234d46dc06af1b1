//! Camera outages, counted (issue: always on). The engine watches one RTSP camera while its
//! server is killed and restarted at random moments: outages of random length, some with a
//! half-dead server on the port that accepts the connection and hangs up mid-handshake,
//! and the camera often comes back with another resolution, frame rate, or without audio.
//! Two independent server implementations: gst-rtsp-server in process (over TCP and UDP)
//! and VLC's own RTSP server in a child process (UDP; VLC does not interleave over TCP).
//!
//! Counted: reconnects = outages; windows strictly monotonic and never overlapping; the
//! stream time lost matches the outage time (within a stated reconnect overhead per
//! outage); the stream never ends; thread count and resident memory back near baseline.
//!
//! `make test` runs 10 outages (about a second each); `make soak` runs 100 with outages up
//! to 10 s (`SENSORIUM_OUTAGES`, `SENSORIUM_MAX_OUTAGE_MS`). The figures go to stderr as a
//! table (`cargo test --test outages -- --nocapture`).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sensorium_engine::rng::Rng;
use sensorium_engine::{Config, MemorySink, Runtime, StreamEnd};
use sensorium_pipelines::Sources;
use serde_json::Value;

use common::*;

/// Reconnect overhead allowed per outage on top of the outage itself: the backoff (at most
/// `max_ms` = 400 ms), the RTSP handshake, the jitterbuffer (50 ms) and the first key frame
/// (every half second); generous for a loaded 2-core machine.
const OVERHEAD_PER_OUTAGE_S: f64 = 2.5;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Gst,
    Vlc,
}

/// A running camera of either implementation; dropping it is the outage.
enum Camera {
    Gst(RtspServer),
    Vlc(VlcServer),
}

fn serve_options(rng: &mut Rng) -> Serve {
    let (width, height) = rng.pick(&[(160, 120), (320, 240)]);
    Serve {
        width,
        height,
        fps: rng.pick(&[10, 15]),
        audio: rng.chance(0.7),
        auth: None,
    }
}

/// What the VLC arm re-serves: one file per configuration, made once.
struct VlcFiles {
    _dir: tempfile::TempDir,
    files: Vec<(Serve, std::path::PathBuf)>,
}

impl VlcFiles {
    fn make(secs: u32) -> Self {
        let (dir, path) = tmp();
        let mut files = Vec::new();
        for (i, (w, h, fps, audio)) in [
            (160, 120, 10, true),
            (320, 240, 15, true),
            (160, 120, 15, false),
        ]
        .into_iter()
        .enumerate()
        {
            let s = Serve {
                width: w,
                height: h,
                fps,
                audio,
                auth: None,
            };
            let f = path.join(format!("cam{i}.mkv"));
            make_h264_aac_mkv(&f, secs, &s);
            files.push((s, f));
        }
        Self { _dir: dir, files }
    }
}

fn start(server: Server, port: u16, rng: &mut Rng, vlc: Option<&VlcFiles>) -> (Camera, Serve) {
    match server {
        Server::Gst => {
            let s = serve_options(rng);
            (Camera::Gst(RtspServer::serving(port, &s)), s)
        }
        Server::Vlc => {
            let files = &vlc.expect("vlc files").files;
            let (s, f) = &files[rng.below(files.len())];
            (Camera::Vlc(VlcServer::start(port, f)), s.clone())
        }
    }
}

fn stop(c: Camera) {
    match c {
        Camera::Gst(s) => s.stop(),
        Camera::Vlc(s) => s.stop(),
    }
}

/// A server that dies during the handshake: accepts, reads the first request, hangs up.
fn half_dead_server(port: u16, for_how_long: Duration) {
    let Ok(l) = TcpListener::bind(("127.0.0.1", port)) else {
        return;
    };
    l.set_nonblocking(true).unwrap();
    let until = Instant::now() + for_how_long;
    while Instant::now() < until {
        match l.accept() {
            Ok((mut s, _)) => {
                s.set_read_timeout(Some(Duration::from_millis(200))).ok();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                // Dropped: the client sees the connection close before any reply.
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

extern "C" {
    /// glibc: hands free heap memory back to the kernel.
    fn malloc_trim(pad: usize) -> i32;
}

/// Threads and resident memory of this process (after glibc returned what is free).
fn process_counts() -> (u64, u64) {
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        malloc_trim(0);
    }
    let field = |name| proc_status("self", name).unwrap_or(0);
    (field("Threads:"), field("VmRSS:"))
}

struct Arm {
    name: &'static str,
    outages: usize,
    reconnects: u64,
    outage_s: f64,
    lost_s: f64,
    handshake_kills: usize,
    reconfigured: usize,
    threads: (u64, u64),
    rss_kib: (u64, u64),
    windows: usize,
}

fn run_arm(name: &'static str, server: Server, transport: &str, n: usize, seed: u64) -> Arm {
    let max_outage_ms = env_or("SENSORIUM_MAX_OUTAGE_MS", 1_200);
    let mut rng = Rng::new(seed);
    let vlc = (server == Server::Vlc).then(|| VlcFiles::make(30));
    let port = closed_port();
    let (mut camera, mut serving) = start(server, port, &mut rng, vlc.as_ref());
    let fps = 5.0;
    let config: Config = toml::from_str(&format!(
        "[engine]\nfps = {fps}\nwidth = 64\nheight = 48\nwindow = 5\nstride = 5\n\
         [[stream]]\nname = \"cam\"\n\
         [stream.source]\nkind = \"rtsp\"\nurl = \"rtsp://127.0.0.1:{port}/cam\"\n\
         transport = \"{transport}\"\nlatency_ms = 50\n\
         [stream.source.reconnect]\ninitial_ms = 100\nmax_ms = 400\nstall_ms = 2000\n"
    ))
    .expect("config");
    let sink = MemorySink::default();
    let runtime = Runtime::new(config, Arc::new(Sources::new())).with_sink(Box::new(sink.clone()));
    let token = runtime.shutdown_token();
    let run = std::thread::spawn(move || runtime.run());
    let guard = Instant::now() + HANG_GUARD * (n as u32 + 2);
    let windows = || sink.records.lock().len();
    let wait_windows = |k: usize| {
        while windows() < k {
            assert!(
                Instant::now() < guard,
                "{name}: hang guard: {} of {k} windows",
                windows()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_windows(2);
    let started = Instant::now();
    let baseline = process_counts();
    let (mut outage_s, mut handshake_kills, mut reconfigured) = (0.0, 0, 0);
    let mut per_outage = Vec::new();
    for _ in 0..n {
        // Connected for a random while, then the camera dies.
        std::thread::sleep(Duration::from_millis(300 + rng.below(1_200) as u64));
        let down = Instant::now();
        stop(camera);
        let outage = Duration::from_millis(200 + rng.below(max_outage_ms as usize) as u64);
        if rng.chance(0.3) {
            // Part of the outage: something answers on the port and hangs up mid-handshake.
            std::thread::sleep(outage / 3);
            half_dead_server(port, outage / 3);
            handshake_kills += 1;
        }
        let left = outage.saturating_sub(down.elapsed());
        std::thread::sleep(left);
        let before = serving.clone();
        (camera, serving) = start(server, port, &mut rng, vlc.as_ref());
        outage_s += down.elapsed().as_secs_f64();
        reconfigured += usize::from(serving != before);
        // Back: windows flow again.
        let k = windows();
        wait_windows(k + 2);
        per_outage.push(process_counts());
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = process_counts();
    let wall_s = started.elapsed().as_secs_f64();
    token.trigger();
    let report = run.join().expect("runtime thread").expect("runtime");
    stop(camera);
    let r = report.stream("cam").expect("stream report");
    assert_eq!(
        r.end,
        StreamEnd::Stopped,
        "{name}: the stream ended by itself"
    );
    let lines: Vec<Value> = sink.records.lock().clone();
    // Strictly monotonic, never overlapping, contiguous indices.
    for (i, w) in lines.windows(2).enumerate() {
        assert_eq!(
            u(&w[1]["index"]),
            u(&w[0]["index"]) + 1,
            "{name}: window {i}"
        );
        assert!(
            u(&w[1]["t_start"]) >= u(&w[0]["t_end"]),
            "{name}: windows {i} and {} overlap: {} {}",
            i + 1,
            w[0],
            w[1]
        );
        assert!(u(&w[1]["t_start"]) > u(&w[0]["t_start"]));
    }
    // Stream time delivered while the harness ran (valid frames after the first two windows)
    // against the wall time: what is missing is the outages plus their reconnect overhead.
    let delivered_s: f64 = lines[2..]
        .iter()
        .map(|l| u(&l["frames"]) as f64 / fps)
        .sum();
    let lost_s = (wall_s - delivered_s).max(0.0);
    let arm = Arm {
        name,
        outages: n,
        reconnects: r.sync.discontinuities,
        outage_s,
        lost_s,
        handshake_kills,
        reconfigured,
        threads: (baseline.0, after.0),
        rss_kib: (baseline.1, after.1),
        windows: lines.len(),
    };
    assert_eq!(
        arm.reconnects, n as u64,
        "{name}: {} reconnects for {n} outages",
        arm.reconnects
    );
    let overhead = lost_s - outage_s;
    assert!(
        overhead.abs() <= OVERHEAD_PER_OUTAGE_S * n as f64 + 2.0,
        "{name}: lost {lost_s:.1} s of stream for {outage_s:.1} s of outages"
    );
    // Thread count flat: the camera's configuration (audio or not) changes how many
    // streaming threads a session has, so the bound is the most seen in the first outages.
    let early = per_outage
        .iter()
        .take(3)
        .map(|c: &(u64, u64)| c.0)
        .max()
        .unwrap_or(baseline.0)
        .max(baseline.0);
    assert!(
        after.0 <= early + 2,
        "{name}: threads {} at the start, {early} early on, {} at the end",
        baseline.0,
        after.0
    );
    // Resident memory bounded (glibc's free memory returned first). Not flat: it grows by
    // about 0.4 MiB per outage over the first few dozen (pipelines are freed; see the
    // closing note), so the bound is per outage.
    assert!(
        after.1 <= baseline.1 + 16 * 1024 + n as u64 * 1024,
        "{name}: RSS {} -> {} KiB",
        baseline.1,
        after.1
    );
    arm
}

#[test]
fn camera_outages_are_survived_counted_and_lose_only_their_own_time() {
    let total = env_or("SENSORIUM_OUTAGES", 10) as usize;
    // Split across the arms 4:3:3.
    let gst_tcp = (total * 4).div_ceil(10);
    let gst_udp = (total * 3) / 10;
    let vlc = total - gst_tcp - gst_udp;
    // `SENSORIUM_OUTAGE_ARM=vlc` (or gst-tcp, gst-udp) runs every outage on one arm.
    let only = std::env::var("SENSORIUM_OUTAGE_ARM").ok();
    let plan = [
        (
            "gst-tcp",
            "gst-rtsp-server / TCP",
            Server::Gst,
            "tcp",
            gst_tcp,
            1,
        ),
        (
            "gst-udp",
            "gst-rtsp-server / UDP",
            Server::Gst,
            "udp",
            gst_udp,
            2,
        ),
        ("vlc", "VLC / UDP", Server::Vlc, "udp", vlc, 3),
    ];
    let arms: Vec<Arm> = plan
        .into_iter()
        .filter(|p| only.as_deref().is_none_or(|o| o == p.0))
        .map(|(_, name, server, transport, n, seed)| {
            let n = if only.is_some() { total } else { n };
            run_arm(name, server, transport, n, seed)
        })
        .collect();
    eprintln!(
        "| server / transport | outages survived / tried | reconnects | handshake kills | \
         reconfigured | outage s | stream lost s | overhead s per outage | threads | RSS MiB | windows |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|---|---|");
    for a in &arms {
        eprintln!(
            "| {} | {} / {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {} -> {} | {:.1} -> {:.1} | {} |",
            a.name,
            a.reconnects.min(a.outages as u64),
            a.outages,
            a.reconnects,
            a.handshake_kills,
            a.reconfigured,
            a.outage_s,
            a.lost_s,
            (a.lost_s - a.outage_s) / a.outages.max(1) as f64,
            a.threads.0,
            a.threads.1,
            a.rss_kib.0 as f64 / 1024.0,
            a.rss_kib.1 as f64 / 1024.0,
            a.windows
        );
    }
}
