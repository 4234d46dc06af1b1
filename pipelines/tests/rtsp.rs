//! RTSP source against an in-process gstreamer-rtsp-server on 127.0.0.1: frames arrive,
//! the server goes away and comes back on the same port, the source reconnects with a
//! Discontinuity and time stays strictly monotonic; unreachable cameras give up with an
//! error that names the URL and never the credentials.

mod common;

use std::time::Instant;

use sensorium_engine::frame::NS_PER_SEC;
use sensorium_engine::{QueueMode, QueueReceiver, SourceEvent};

use common::*;

fn next_event(rx: &QueueReceiver<SourceEvent>, deadline: Instant) -> SourceEvent {
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(!left.is_zero(), "hang guard: no event in time");
    match rx.recv_timeout(left) {
        Ok(ev) => ev,
        Err(_) => panic!("hang guard: no event in time"),
    }
}

#[test]
fn reconnects_with_discontinuity_and_monotonic_time() {
    let server = RtspServer::start(0);
    let port = server.port();
    let fps = 5.0;
    let s = stream(&format!(
        "kind = \"rtsp\"\nurl = \"{}\"\nlatency_ms = 50\n\
         [reconnect]\ninitial_ms = 100\nmax_ms = 400\nmax_attempts = 50",
        server.url()
    ));
    let (mut handle, rx) = start(&s, &params(fps, QueueMode::Realtime), 256).unwrap();
    let deadline = Instant::now() + HANG_GUARD;
    let mut events = Vec::new();
    // Phase 1: frames arrive from the first server.
    let mut before = 0;
    while before < 3 {
        let ev = next_event(&rx, deadline);
        if matches!(ev, SourceEvent::Video(_)) {
            before += 1;
        }
        assert!(
            !matches!(ev, SourceEvent::Error { .. } | SourceEvent::Eos),
            "unexpected end: {ev:?}"
        );
        events.push(ev);
    }
    // Phase 2: the server goes away and comes back on the same port.
    server.stop();
    let server = RtspServer::start(port);
    assert_eq!(server.port(), port);
    let mut after_disc = None;
    loop {
        let ev = next_event(&rx, deadline);
        assert!(
            !matches!(ev, SourceEvent::Error { .. } | SourceEvent::Eos),
            "unexpected end: {ev:?}"
        );
        let is_video = matches!(ev, SourceEvent::Video(_));
        if matches!(ev, SourceEvent::Discontinuity { .. }) && after_disc.is_none() {
            after_disc = Some(0);
        } else if is_video {
            if let Some(n) = after_disc.as_mut() {
                *n += 1;
            }
        }
        events.push(ev);
        if after_disc.is_some_and(|n| n >= 3) {
            break;
        }
    }
    handle.stop();
    drop(server);

    let sp = split(&events);
    if std::env::var("RTSP_DEBUG").is_ok() {
        for e in &events {
            match e {
                SourceEvent::Video(v) => eprintln!("V {}", v.pts),
                SourceEvent::Audio(a) => eprintln!("A {} {}", a.pts, a.samples.len()),
                o => eprintln!("{o:?}"),
            }
        }
    }
    assert_eq!(sp.discontinuities, 1, "one reconnect, one Discontinuity");
    for w in sp.video_pts.windows(2) {
        assert!(w[1] > w[0], "video pts not strictly increasing: {w:?}");
    }
    for w in sp.audio.windows(2) {
        assert!(w[1].0 > w[0].0, "audio pts not strictly increasing: {w:?}");
    }
    // The first frame after the reconnect starts at least one frame after the last before.
    let disc = events
        .iter()
        .position(|e| matches!(e, SourceEvent::Discontinuity { .. }))
        .unwrap();
    let last_before = events[..disc]
        .iter()
        .rev()
        .find_map(|e| match e {
            SourceEvent::Video(v) => Some(v.pts),
            _ => None,
        })
        .unwrap();
    let first_after = events[disc..]
        .iter()
        .find_map(|e| match e {
            SourceEvent::Video(v) => Some(v.pts),
            _ => None,
        })
        .unwrap();
    let frame = (NS_PER_SEC as f64 / fps) as u64;
    assert!(
        first_after >= last_before + frame,
        "re-based time must continue past the last frame: {last_before} -> {first_after}"
    );
    let SourceEvent::Discontinuity { reason } = &events[disc] else {
        unreachable!()
    };
    assert!(
        reason.contains(&format!("rtsp://127.0.0.1:{port}/cam")),
        "{reason}"
    );
    // Frames are what the engine asked for.
    for e in &events {
        if let SourceEvent::Video(v) = e {
            assert_eq!((v.width, v.height, v.rgb.len()), (64, 48, 64 * 48 * 3));
        }
    }
}

#[test]
fn unreachable_gives_up_naming_url_without_credentials() {
    let port = closed_port();
    let s = stream(&format!(
        "kind = \"rtsp\"\nurl = \"rtsp://127.0.0.1:{port}/cam\"\n\
         user = \"camadmin\"\npassword = \"hunter2-secret\"\n\
         [reconnect]\ninitial_ms = 20\nmax_attempts = 2"
    ));
    let (_h, rx) = start(&s, &params(2.0, QueueMode::Realtime), 8).unwrap();
    let events = collect(&rx);
    let sp = split(&events);
    assert!(sp.video_pts.is_empty() && sp.audio.is_empty());
    assert_eq!(sp.discontinuities, 0, "no session ever started");
    let msg = error_message(&sp.last);
    assert!(
        msg.starts_with(&format!(
            "rtsp://127.0.0.1:{port}/cam: giving up after 2 failed"
        )),
        "{msg}"
    );
    assert!(
        !msg.contains("hunter2") && !msg.contains("camadmin"),
        "{msg}"
    );
}

#[test]
fn credentials_in_url_never_shown() {
    let port = closed_port();
    let s = stream(&format!(
        "kind = \"rtsp\"\nurl = \"rtsp://camadmin:hunter2-secret@127.0.0.1:{port}/cam\"\n\
         [reconnect]\nenabled = false"
    ));
    let (_h, rx) = start(&s, &params(2.0, QueueMode::Realtime), 8).unwrap();
    let msg = error_message(&split(&collect(&rx)).last);
    assert!(
        msg.contains(&format!("rtsp://127.0.0.1:{port}/cam")),
        "{msg}"
    );
    assert!(
        !msg.contains("hunter2") && !msg.contains("camadmin"),
        "{msg}"
    );
}

#[test]
fn not_an_rtsp_url_fails_at_start_without_credentials() {
    let s = stream(
        "kind = \"rtsp\"\nurl = \"http://camadmin:hunter2-secret@10.0.0.1/cam\"\n\
         user = \"camadmin\"\npassword = \"hunter2-secret\"",
    );
    let err = start(&s, &params(2.0, QueueMode::Realtime), 8)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "invalid URI 'http://10.0.0.1/cam': an RTSP URL starts with rtsp://"
    );
}

#[test]
fn stop_during_backoff_is_prompt_and_silent() {
    let port = closed_port();
    let s = stream(&format!(
        "kind = \"rtsp\"\nurl = \"rtsp://127.0.0.1:{port}/cam\"\n\
         [reconnect]\ninitial_ms = 60000\nmax_ms = 60000"
    ));
    let (mut h, rx) = start(&s, &params(2.0, QueueMode::Realtime), 8).unwrap();
    // The source now waits a minute before its second attempt; stop must not wait for it
    // (the test would hit the hang guard of the harness otherwise).
    h.stop();
    assert!(rx.try_recv().is_none(), "a stopped source sends nothing");
}

#[test]
fn udp_transport_video_only() {
    let server = RtspServer::start(0);
    let s = stream(&format!(
        "kind = \"rtsp\"\nurl = \"{}\"\ntransport = \"udp\"\nlatency_ms = 50\naudio = false",
        server.url()
    ));
    let (mut handle, rx) = start(&s, &params(5.0, QueueMode::Realtime), 256).unwrap();
    let deadline = Instant::now() + HANG_GUARD;
    let mut events = Vec::new();
    while events
        .iter()
        .filter(|e| matches!(e, SourceEvent::Video(_)))
        .count()
        < 3
    {
        let ev = next_event(&rx, deadline);
        assert!(
            !matches!(ev, SourceEvent::Error { .. } | SourceEvent::Eos),
            "unexpected end: {ev:?}"
        );
        events.push(ev);
    }
    handle.stop();
    let sp = split(&events);
    assert!(
        sp.audio.is_empty(),
        "audio = false: the audio stream is not even set up"
    );
    for w in sp.video_pts.windows(2) {
        assert!(w[1] > w[0]);
    }
}
