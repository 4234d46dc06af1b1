//! The annotated re-stream (`[output] rtsp = "127.0.0.1:8554/sensorium"`): every stream of
//! the run is served again over RTSP at `rtsp://HOST:PORT/PATH/STREAM` by gst-rtsp-server,
//! the picture as the model sees it (scaled up to at least 640 pixels wide, nearest
//! neighbour) with the latest window's time and the latest answer drawn on it
//! (`textoverlay`), and the original audio; H.264 + AAC, viewable in VLC or ffplay.
//!
//! ```text
//! appsrc video (RGB, do-timestamp) ! videoscale ! textoverlay ! x264enc (zerolatency) ! rtph264pay
//! appsrc audio (F32 16 kHz mono)   ! audioconvert ! audioresample ! avenc_aac ! rtpmp4apay
//! ```
//! One media per stream, shared by all its clients, built when the first client connects.
//! It is fed from the engine's [`ViewHub`] through a bounded subscription, so the
//! re-stream never blocks the pipeline: when it falls behind, frames are dropped for it
//! alone. The server listens on loopback only (RTSP here has no authentication).

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp_server;
use gstreamer_rtsp_server::prelude::*;
use sensorium_engine::source::SourceParams;
use sensorium_engine::view::{Interest, ViewEvent, ViewHub};

use crate::error::PipelineError;

/// Frames queued for the re-stream at most (about a second at 30 fps).
const QUEUE: usize = 32;
/// The narrowest picture served: text must fit on the default model's 64x64 frames.
const MIN_WIDTH: u32 = 640;

/// `HOST:PORT/PATH` -> (address, mount path prefix).
pub fn parse(spec: &str) -> Result<(SocketAddr, String), PipelineError> {
    let spec = spec.strip_prefix("rtsp://").unwrap_or(spec);
    let (addr, path) = spec.split_once('/').unwrap_or((spec, "sensorium"));
    let addr = sensorium_engine::config::load::parse_listen(addr)
        .map_err(PipelineError::RestreamAddress)?;
    if !addr.ip().is_loopback() {
        return Err(PipelineError::RestreamAddress(format!(
            "{addr} is not a loopback address: the re-stream has no authentication, so it \
             listens on 127.0.0.1 only (reach it through an SSH tunnel or a proxy)"
        )));
    }
    let path = path.trim_matches('/');
    if path.is_empty()
        || !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(PipelineError::RestreamAddress(format!(
            "path `{path}`: use letters, digits, '-', '_', '.' and '/'"
        )));
    }
    Ok((addr, format!("/{path}")))
}

/// A stream's mount: letters, digits, '-', '_' and '.' of its name (others become '_').
pub fn mount_name(stream: &str) -> String {
    stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The running RTSP server; [`Restream::stop`] (or drop) ends it.
pub struct Restream {
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    port: u16,
    urls: Vec<(String, String)>,
}

impl Restream {
    /// Serves each of `streams` (name, media parameters) at `spec`'s address.
    pub fn start(
        spec: &str,
        streams: &[(String, SourceParams)],
        hub: ViewHub,
    ) -> Result<Restream, PipelineError> {
        let (addr, prefix) = parse(spec)?;
        gst::init().map_err(|e| PipelineError::RestreamStart(e.to_string()))?;
        for element in [
            "textoverlay",
            "x264enc",
            "avenc_aac",
            "rtph264pay",
            "rtpmp4apay",
        ] {
            if gst::ElementFactory::find(element).is_none() {
                return Err(PipelineError::RestreamStart(format!(
                    "GStreamer element `{element}` is missing (Debian: gstreamer1.0-x for \
                     textoverlay, -plugins-ugly for x264enc, -libav for avenc_aac; `make deps`)"
                )));
            }
        }
        let ctx = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let server = rtsp_server::RTSPServer::new();
        server.set_address(&addr.ip().to_string());
        server.set_service(&addr.port().to_string());
        let mounts = server
            .mount_points()
            .ok_or_else(|| PipelineError::RestreamStart("no mount points".into()))?;
        let mut urls = Vec::new();
        for (name, params) in streams {
            let mount = format!("{prefix}/{}", mount_name(name));
            let factory = rtsp_server::RTSPMediaFactory::new();
            factory.set_launch(&launch(params));
            factory.set_shared(true);
            let (hub, stream) = (hub.clone(), name.clone());
            factory.connect_media_configure(move |_, media| {
                feed(&media.element(), &hub, &stream);
            });
            mounts.add_factory(&mount, factory);
            urls.push((name.clone(), mount));
        }
        let source = server
            .attach(Some(&ctx))
            .map_err(|e| PipelineError::RestreamStart(format!("cannot listen on {addr}: {e}")))?;
        let port = server.bound_port() as u16;
        let (ml, c) = (main_loop.clone(), ctx.clone());
        let thread = std::thread::Builder::new()
            .name("rtsp-out".into())
            .spawn(move || {
                let _ = c.with_thread_default(|| ml.run());
                // The listening socket's source lives in our context, not the default one.
                if let Some(src) = c.find_source_by_id(&source) {
                    src.destroy();
                }
                drop(server);
            })
            .map_err(|e| PipelineError::RestreamStart(e.to_string()))?;
        let host = addr.ip();
        let urls = urls
            .into_iter()
            .map(|(n, m)| (n, format!("rtsp://{host}:{port}{m}")))
            .collect();
        Ok(Restream {
            main_loop,
            thread: Some(thread),
            port,
            urls,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// (stream, URL) for each stream.
    pub fn urls(&self) -> &[(String, String)] {
        &self.urls
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Restream {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn launch(p: &SourceParams) -> String {
    let scale = MIN_WIDTH.div_ceil(p.width.max(1)).max(1);
    let (w, h) = (p.width * scale, p.height * scale);
    // Even sizes for the encoder's 4:2:0.
    let (w, h) = (w + w % 2, h + h % 2);
    let fps = p.fps.max(1.0).round() as u32;
    format!(
        "( appsrc name=video is-live=true do-timestamp=true format=time \
             caps=\"video/x-raw,format=RGB,width={},height={},framerate={fps}/1\" \
           ! queue leaky=downstream max-size-buffers=8 ! videoconvert \
           ! videoscale method=nearest-neighbour ! video/x-raw,width={w},height={h} \
           ! textoverlay name=overlay valignment=top halignment=left line-alignment=left shaded-background=true \
             font-desc=\"DejaVu Sans 16\" wrap-mode=wordchar text=\"sensorium\" \
           ! videoconvert ! video/x-raw,format=I420 \
           ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} \
           ! rtph264pay name=pay0 pt=96 config-interval=-1 \
           appsrc name=audio is-live=true do-timestamp=true format=time \
             caps=\"audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved\" \
           ! queue leaky=downstream max-size-time=1000000000 ! audioconvert ! audioresample \
           ! audio/x-raw,rate=48000 ! avenc_aac ! rtpmp4apay name=pay1 pt=97 )",
        p.width, p.height
    )
}

/// Starts the feeder of one media: frames and audio from the hub into its appsrcs, the
/// latest window and answer into its overlay, until the media goes away.
fn feed(bin: &gst::Element, hub: &ViewHub, stream: &str) {
    let bin = bin.downcast_ref::<gst::Bin>();
    let get = |name: &str| bin.and_then(|b| b.by_name_recurse_up(name));
    let (Some(video), Some(audio), Some(overlay)) = (get("video"), get("audio"), get("overlay"))
    else {
        tracing::error!("rtsp re-stream of '{stream}': media without its appsrcs");
        return;
    };
    let (Ok(video), Ok(audio)) = (
        video.downcast::<gst_app::AppSrc>(),
        audio.downcast::<gst_app::AppSrc>(),
    ) else {
        return;
    };
    let sub = hub.subscribe(
        Interest {
            stream: Some(stream.to_owned()),
            frames: true,
            capacity: QUEUE,
            max_frames: QUEUE,
        },
        None,
    );
    let (video, audio, overlay) = (video.downgrade(), audio.downgrade(), overlay.downgrade());
    let stream = stream.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("rtsp-out-{stream}"))
        .spawn(move || {
            let mut window = String::from("waiting for the first window");
            let mut answer = String::new();
            loop {
                let ev = match sub.recv_timeout(Duration::from_millis(500)) {
                    Ok(ev) => ev,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        if video.upgrade().is_none() {
                            break;
                        }
                        continue;
                    }
                    Err(_) => break,
                };
                let (Some(v), Some(a)) = (video.upgrade(), audio.upgrade()) else {
                    break;
                };
                let ok = match ev {
                    ViewEvent::Frame(f) => {
                        let mut ok = true;
                        if let Some(pic) = &f.video {
                            let mut buf = gst::Buffer::from_slice(pic.rgb.to_vec());
                            if let Some(b) = buf.get_mut() {
                                b.set_duration(gst::ClockTime::from_nseconds(f.duration));
                            }
                            ok &= v.push_buffer(buf).is_ok();
                        }
                        let bytes: Vec<u8> = f.audio.iter().flat_map(|s| s.to_le_bytes()).collect();
                        let mut buf = gst::Buffer::from_slice(bytes);
                        if let Some(b) = buf.get_mut() {
                            b.set_duration(gst::ClockTime::from_nseconds(f.duration));
                        }
                        ok &= a.push_buffer(buf).is_ok();
                        ok
                    }
                    ViewEvent::Window { record, .. } => {
                        let t = |k: &str| record[k].as_f64().unwrap_or(0.0) / 1e9;
                        window = format!(
                            "{stream}  window #{}  {:.1}-{:.1} s",
                            record["index"],
                            t("t_start"),
                            t("t_end")
                        );
                        true
                    }
                    ViewEvent::Answer { record, .. } => {
                        answer = format!(
                            "{} -> {}",
                            record["question"].as_str().unwrap_or(""),
                            record["answer"].as_str().unwrap_or("")
                        );
                        true
                    }
                    ViewEvent::Token { .. } => true,
                };
                if let Some(o) = overlay.upgrade() {
                    let text = if answer.is_empty() {
                        window.clone()
                    } else {
                        format!("{window}\n{answer}")
                    };
                    o.set_property("text", text);
                }
                if !ok {
                    // The media was torn down (its last client left): a new one gets a new
                    // feeder.
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("rtsp re-stream: cannot start a feeder thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        let (a, p) = parse("127.0.0.1:8554/out").unwrap();
        assert_eq!((a.port(), p.as_str()), (8554, "/out"));
        assert_eq!(parse("rtsp://127.0.0.1:0").unwrap().1, "/sensorium");
        let e = parse("0.0.0.0:8554/x").unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{e}");
        let e = parse("127.0.0.1:8554/a b").unwrap_err().to_string();
        assert!(e.contains("path `a b`"), "{e}");
        assert!(parse("nohost/x").is_err());
        assert_eq!(mount_name("cam 1/é"), "cam_1__");
    }
}
