//! Test helpers shared by this crate's tests and the workspace's end-to-end tests (feature
//! `testutil`, never in a release build): short media files made by GStreamer itself with a
//! known picture and tone, and an in-process RTSP server on 127.0.0.1.
//!
//! These are test set-up, so they panic on failure (a broken set-up must fail the test
//! loudly, not look like a product error).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp_server;
use gstreamer_rtsp_server::prelude::*;

/// Runs a gst-launch description to EOS (panics on error).
pub fn run_to_eos(desc: &str) {
    gst::init().expect("gstreamer init");
    let pipeline = gst::parse::launch(desc).expect("parse test pipeline");
    pipeline
        .set_state(gst::State::Playing)
        .expect("play test pipeline");
    let bus = pipeline.bus().expect("pipeline bus");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("test pipeline finished");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!(
            "test media pipeline failed: {} ({:?})",
            e.error(),
            e.debug()
        );
    }
    pipeline
        .set_state(gst::State::Null)
        .expect("stop test pipeline");
}

/// 320x240 ball pattern at 10 fps, `secs` long, H.264.
fn video_part(secs: u32) -> String {
    format!(
        "videotestsrc pattern=ball num-buffers={} ! video/x-raw,width=320,height=240,framerate=10/1 \
         ! x264enc speed-preset=ultrafast key-int-max=10 bframes=0 ! h264parse",
        secs * 10
    )
}

/// 440 Hz sine at volume 0.5, 48 kHz mono, `secs` long, Opus.
fn audio_part(secs: u32) -> String {
    format!(
        "audiotestsrc wave=sine freq=440 volume=0.5 samplesperbuffer=960 num-buffers={} \
         ! audio/x-raw,rate=48000,channels=1 ! opusenc",
        secs * 50
    )
}

/// Matroska with H.264 video (320x240, 10 fps, ball) + Opus audio (440 Hz), `secs` long.
pub fn make_av_mkv(path: &Path, secs: u32) {
    run_to_eos(&format!(
        "matroskamux name=m ! filesink location={} {} ! queue ! m. {} ! queue ! m.",
        path.display(),
        video_part(secs),
        audio_part(secs)
    ));
}

/// Matroska with H.264 video only.
pub fn make_video_mkv(path: &Path, secs: u32) {
    run_to_eos(&format!(
        "{} ! matroskamux ! filesink location={}",
        video_part(secs),
        path.display()
    ));
}

/// Matroska with Opus audio only.
pub fn make_audio_mkv(path: &Path, secs: u32) {
    run_to_eos(&format!(
        "{} ! matroskamux ! filesink location={}",
        audio_part(secs),
        path.display()
    ));
}

/// Ogg with Opus audio only.
pub fn make_audio_ogg(path: &Path, secs: u32) {
    run_to_eos(&format!(
        "{} ! oggmux ! filesink location={}",
        audio_part(secs),
        path.display()
    ));
}

/// Matroska with H.264 (`serve`'s size and rate, I420) and, if `serve.audio`, AAC audio:
/// what a second, independent RTSP server ([`VlcServer`]) re-serves.
pub fn make_h264_aac_mkv(path: &Path, secs: u32, serve: &Serve) {
    let video = format!(
        "videotestsrc num-buffers={} pattern=ball \
         ! video/x-raw,format=I420,width={},height={},framerate={}/1 \
         ! x264enc speed-preset=ultrafast key-int-max={} ! h264parse ! queue ! m.",
        secs * serve.fps,
        serve.width,
        serve.height,
        serve.fps,
        serve.fps / 2
    );
    let audio = if serve.audio {
        format!(
            "audiotestsrc num-buffers={} wave=sine freq=440 samplesperbuffer=1024 \
             ! audio/x-raw,rate=48000,channels=1 ! avenc_aac ! aacparse ! queue ! m.",
            secs * 48_000 / 1024
        )
    } else {
        String::new()
    };
    run_to_eos(&format!(
        "matroskamux name=m ! filesink location={} {video} {audio}",
        path.display()
    ));
}

/// VLC's own RTSP server (Debian's `vlc-bin` + `vlc-plugin-base`; an implementation
/// independent of gst-rtsp-server) re-serving a file at `rtsp://127.0.0.1:PORT/cam`, RTP
/// over UDP only (VLC's server does not interleave over TCP). Run as `nobody` when we are
/// root (VLC refuses root). Dropping it kills the process.
pub struct VlcServer {
    child: std::process::Child,
    port: u16,
}

impl VlcServer {
    /// Panics (with what to install) if `cvlc` is missing.
    pub fn start(port: u16, file: &Path) -> VlcServer {
        let sout = format!("#rtp{{sdp=rtsp://127.0.0.1:{port}/cam}}");
        let vlc_args = ["-I", "dummy", "--no-stats", "-q"];
        // SAFETY-free check of the effective user: /proc/self/status's Uid line.
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false);
        let mut cmd = if root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "nobody", "--", "cvlc"]);
            c
        } else {
            std::process::Command::new("cvlc")
        };
        cmd.args(vlc_args)
            .arg(file)
            .args(["--sout", &sout])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = cmd
            .spawn()
            .expect("cvlc runs (apt-get install vlc-bin vlc-plugin-base; `make deps` does)");
        // Wait until it listens (VLC takes a moment to open the file and the port).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "VLC never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        VlcServer { child, port }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// Kills the server (SIGKILL: an outage, not a goodbye).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        // `runuser` forwards signals poorly: kill the whole process group of the child's
        // children by name would be too broad, so kill the child and its VLC by pid.
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-P", &pid])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for VlcServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on: bind, read the port, close.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A test RTSP server on 127.0.0.1 serving live H.264 video (ball, 160x120, 10 fps) + Opus
/// audio (440 Hz) at `/cam`, on its own main loop and thread. Dropping it (or
/// [`RtspServer::stop`]) disconnects every client and closes the listening socket, so a new
/// server can take the same port. [`RtspServer::stall_for`] makes the camera go silent
/// without closing the connection.
pub struct RtspServer {
    server: rtsp_server::RTSPServer,
    main_loop: glib::MainLoop,
    ctx: glib::MainContext,
    source: Option<glib::SourceId>,
    thread: Option<JoinHandle<()>>,
    port: u16,
    /// The media being served (the latest one configured), for `stall_for`.
    media: Arc<Mutex<Option<gst::Element>>>,
}

/// What a test RTSP server serves at `/cam` (H.264 video, Opus audio).
#[derive(Clone, Debug, PartialEq)]
pub struct Serve {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub audio: bool,
    /// Basic-auth credentials the server demands (`None`: open).
    pub auth: Option<(String, String)>,
}

impl Default for Serve {
    fn default() -> Self {
        Self {
            width: 160,
            height: 120,
            fps: 10,
            audio: true,
            auth: None,
        }
    }
}

impl RtspServer {
    /// `port` 0 picks a free one.
    pub fn start(port: u16) -> RtspServer {
        Self::serving(port, &Serve::default())
    }

    /// A server on `port` (0: a free one) serving `what`.
    pub fn serving(port: u16, what: &Serve) -> RtspServer {
        gst::init().expect("gstreamer init");
        let ctx = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let server = rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let factory = rtsp_server::RTSPMediaFactory::new();
        let audio = if what.audio {
            "audiotestsrc is-live=true wave=sine freq=440 \
             ! audio/x-raw,rate=48000,channels=1 ! opusenc \
             ! valve name=agate ! rtpopuspay name=pay1 pt=97"
        } else {
            ""
        };
        factory.set_launch(&format!(
            "( videotestsrc is-live=true pattern=ball \
               ! video/x-raw,format=I420,width={},height={},framerate={}/1 \
               ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max=5 \
               ! valve name=vgate ! rtph264pay name=pay0 pt=96 {audio} )",
            what.width, what.height, what.fps
        ));
        if let Some((user, password)) = &what.auth {
            let auth = rtsp_server::RTSPAuth::new();
            let token = rtsp_server::RTSPToken::builder()
                .field(rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
                .build();
            let basic = rtsp_server::RTSPAuth::make_basic(user, password);
            auth.add_basic(basic.as_str(), &token);
            server.set_auth(Some(&auth));
            factory.add_role_from_structure(
                &gst::Structure::builder("user")
                    .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }
        factory.set_shared(true);
        let media = Arc::new(Mutex::new(None));
        let m = media.clone();
        factory.connect_media_configure(move |_, configured| {
            *m.lock().unwrap() = Some(configured.element());
        });
        server
            .mount_points()
            .expect("mount points")
            .add_factory("/cam", factory);
        let source = server.attach(Some(&ctx)).expect("rtsp server attach");
        let port = server.bound_port() as u16;
        let (ml, c) = (main_loop.clone(), ctx.clone());
        let thread = std::thread::spawn(move || {
            c.with_thread_default(|| ml.run())
                .expect("rtsp server main context");
        });
        RtspServer {
            server,
            main_loop,
            ctx,
            source: Some(source),
            thread: Some(thread),
            port,
            media,
        }
    }

    /// The camera stops sending for `d` (the RTP session stays up, nothing is closed), then
    /// sends again; returns at once. Panics when no client has connected yet.
    pub fn stall_for(&self, d: Duration) {
        let media = self
            .media
            .lock()
            .unwrap()
            .clone()
            .expect("a client is connected");
        let bin = media.downcast::<gst::Bin>().expect("the media is a bin");
        let gates: Vec<gst::Element> = ["vgate", "agate"]
            .iter()
            .filter_map(|n| bin.by_name(n))
            .collect();
        for g in &gates {
            g.set_property("drop", true);
        }
        std::thread::spawn(move || {
            std::thread::sleep(d);
            for g in &gates {
                g.set_property("drop", false);
            }
        });
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// Disconnects every client, removes the mount, closes the listening socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(m) = self.server.mount_points() {
            m.remove_factory("/cam");
        }
        self.server
            .client_filter(Some(&mut |_, _| rtsp_server::RTSPFilterResult::Remove));
        if let Some(id) = self.source.take() {
            // The listening socket is a source on our own context, not the default one.
            if let Some(src) = self.ctx.find_source_by_id(&id) {
                src.destroy();
            }
        }
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What an RTSP client read: decoded RGB frames (width, height, pixels) and mono f32 audio.
#[derive(Default)]
pub struct Received {
    pub frames: Vec<(u32, u32, Vec<u8>)>,
    pub audio: Vec<f32>,
}

/// Reads `url` with `rtspsrc ! decodebin` (video as RGB, audio as mono f32) for `for_how_long`.
pub fn read_rtsp(url: &str, for_how_long: Duration) -> Received {
    gst::init().expect("gstreamer init");
    let desc = format!(
        "rtspsrc name=src location={url} protocols=tcp latency=100 \
         src. ! application/x-rtp,media=video ! queue ! decodebin ! videoconvert \
           ! video/x-raw,format=RGB ! appsink name=v sync=false \
         src. ! application/x-rtp,media=audio ! queue ! decodebin ! audioconvert \
           ! audioresample ! audio/x-raw,format=F32LE,channels=1,rate=16000 \
           ! appsink name=a sync=false"
    );
    let pipeline = gst::parse::launch(&desc)
        .expect("client pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let got = Arc::new(Mutex::new(Received::default()));
    let sink = |name: &str| {
        pipeline
            .by_name(name)
            .expect("appsink")
            .downcast::<gstreamer_app::AppSink>()
            .expect("an appsink")
    };
    let g = got.clone();
    sink("v").set_callbacks(
        gstreamer_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let caps = sample.caps().expect("caps");
                let st = caps.structure(0).expect("structure");
                let (w, h) = (
                    st.get::<i32>("width").unwrap_or(0) as u32,
                    st.get::<i32>("height").unwrap_or(0) as u32,
                );
                let buf = sample.buffer().expect("buffer");
                let map = buf.map_readable().expect("map");
                g.lock().unwrap().frames.push((w, h, map.to_vec()));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let g = got.clone();
    sink("a").set_callbacks(
        gstreamer_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buf = sample.buffer().expect("buffer");
                let map = buf.map_readable().expect("map");
                g.lock().unwrap().audio.extend(
                    map.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().expect("bus");
    let deadline = std::time::Instant::now() + for_how_long;
    while std::time::Instant::now() < deadline {
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            if let gst::MessageView::Error(e) = msg.view() {
                let _ = pipeline.set_state(gst::State::Null);
                panic!("rtsp client: {} ({:?})", e.error(), e.debug());
            }
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    let mut g = got.lock().unwrap();
    std::mem::take(&mut *g)
}
