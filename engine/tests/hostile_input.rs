//! Hostile input, fuzzed with a fixed budget: config TOML (generated from the schema's own
//! keys with absurd values, and raw bytes) and the synchroniser's inputs (timestamps
//! anywhere in u64, empty and huge chunks, frames of any size). Nothing may panic; a bad
//! config is one error naming its origin; the synchroniser's output stays bounded.
//!
//! Budget: `SENSORIUM_FUZZ_CASES` cases per property (default 256; `make fuzz` runs
//! 200,000 per property).

use std::time::Instant;

use proptest::prelude::*;
use sensorium_engine::{AudioChunk, Config, SourceEvent, SyncConfig, Synchroniser, VideoFrame};

fn cases() -> u32 {
    std::env::var("SENSORIUM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn budget() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A TOML value that is legal syntax but anything but sensible.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        prop_oneof![
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-inf".to_string()),
            Just("-0.0".to_string()),
            Just("1e308".to_string()),
            Just("5e-324".to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
        ],
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,40}".prop_map(|s| format!("{s:?}")),
        any::<String>().prop_map(|s| format!("{s:?}")),
        Just("[]".to_string()),
        Just("[1, \"a\", 2.5]".to_string()),
        Just("{}".to_string()),
        Just("{ kind = \"rtsp\", url = \"rtsp://u:p@[::1]:99999/x\" }".to_string()),
        Just("\"rtsp://user:pw@host:554/x?a=@b\"".to_string()),
        Just("\"0.0.0.0:0\"".to_string()),
        Just("\"\"".to_string()),
    ]
}

const SECTIONS: [&str; 10] = [
    "[engine]",
    "[output]",
    "[metrics]",
    "[http]",
    "[[stream]]",
    "[stream.source]",
    "[stream.source.reconnect]",
    "[llm]",
    "[models]",
    "[nonsense]",
];

const KEYS: [&str; 36] = [
    "fps",
    "width",
    "height",
    "window",
    "stride",
    "queue_capacity",
    "latency_ms",
    "batch",
    "device",
    "shutdown_timeout_ms",
    "path",
    "listen",
    "token",
    "max_body_bytes",
    "header_timeout_ms",
    "body_timeout_ms",
    "max_connections",
    "name",
    "mode",
    "source",
    "kind",
    "url",
    "uri",
    "pattern",
    "freq",
    "duration_s",
    "chunk_ms",
    "is_live",
    "looping",
    "user",
    "password",
    "initial_ms",
    "max_ms",
    "max_attempts",
    "stall_ms",
    "seed",
];

fn config_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        3 => (0..KEYS.len(), value()).prop_map(|(k, v)| format!("{} = {v}", KEYS[k])),
        1 => (0..SECTIONS.len()).prop_map(|s| SECTIONS[s].to_string()),
        1 => (0..KEYS.len(), "[a-z]{1,8}").prop_map(|(k, v)| format!("{} = \"{v}\"", KEYS[k])),
    ];
    prop::collection::vec(line, 0..24).prop_map(|l| l.join("\n"))
}

fn check_config(text: &str) {
    match Config::from_toml_str(text, "<fuzz>") {
        Ok(c) => {
            // A config that loads is fully usable: validated, resolvable, printable, and its
            // printed form loads again.
            c.validate("<fuzz>").expect("a loaded config validates");
            let _ = c.resolved_streams();
            let printed = c.resolved().to_toml_redacted();
            if let Err(e) = Config::from_toml_str(&printed, "<printed>") {
                // Redacted secrets may fail validation on reload ("***" is not a URL), but
                // the printed text is always TOML.
                assert!(
                    !e.to_string().contains("malformed TOML"),
                    "printed config is not TOML: {e}\n{printed}"
                );
            }
        }
        Err(e) => {
            let m = e.to_string();
            assert!(m.starts_with("<fuzz>"), "error without its origin: {m}");
            assert!(!m.contains('\n'), "error spans lines: {m}");
        }
    }
}

proptest! {
    #![proptest_config(budget())]

    #[test]
    fn generated_configs_load_or_fail_with_one_named_error(text in config_text()) {
        check_config(&text);
    }

    #[test]
    fn raw_bytes_as_configs_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_config(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn the_synchroniser_survives_any_timestamps_and_sizes(
        fps in prop_oneof![Just(2.0), Just(30.0), 0.1f64..120.0],
        video in any::<bool>(),
        audio in any::<bool>(),
        latency_ms in 0u64..2_000,
        events in prop::collection::vec(hostile_event(), 0..32),
    ) {
        let audio = audio || !video;
        let cfg = SyncConfig::new(fps, video, audio, latency_ms * 1_000_000);
        let mut sync = Synchroniser::new("fuzz".into(), cfg);
        let mut frames = Vec::new();
        let mut pushed = 0usize;
        for ev in events {
            let samples = match &ev {
                SourceEvent::Audio(a) => a.samples.len(),
                _ => 0,
            };
            sync.push_event(ev, &mut frames);
            pushed += 1;
            // Bounded output: a hostile jump in time must not make the synchroniser invent
            // an unbounded run of frames.
            prop_assert!(
                frames.len() <= MAX_FRAMES_PER_EVENT * pushed,
                "{} frames after {pushed} events (last chunk {samples} samples)",
                frames.len()
            );
        }
        sync.finish(&mut frames);
        prop_assert!(frames.len() <= MAX_FRAMES_PER_EVENT * (pushed + 1));
        // Frame indices stay contiguous and times increase, whatever came in.
        for w in frames.windows(2) {
            prop_assert_eq!(w[1].index, w[0].index + 1);
            prop_assert!(w[1].t > w[0].t);
        }
    }
}

/// The most frames one event may release (a chunk of at most 2^20 samples covers 66 s).
const MAX_FRAMES_PER_EVENT: usize = 10_000;

fn timestamp() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..10_000_000_000,
        any::<u64>(),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1u64 << 63),
    ]
}

fn hostile_event() -> impl Strategy<Value = SourceEvent> {
    prop_oneof![
        6 => (timestamp(), prop_oneof![2 => Just(0usize), 16 => 1usize..2_000, 1 => Just(1usize << 20)]).prop_map(|(pts, n)| {
            SourceEvent::Audio(AudioChunk {
                pts,
                samples: vec![0.5f32; n].into(),
                captured: Instant::now(),
            })
        }),
        4 => (timestamp(), 0u32..64, 0u32..64).prop_map(|(pts, w, h)| {
            SourceEvent::Video(VideoFrame {
                pts,
                width: w,
                height: h,
                // Deliberately not w*h*3: a source's size claim must not be trusted.
                rgb: vec![7u8; (w as usize * 5) % 97].into(),
                captured: Instant::now(),
            })
        }),
        1 => "[a-z ]{0,12}".prop_map(|reason| SourceEvent::Discontinuity { reason }),
    ]
}
