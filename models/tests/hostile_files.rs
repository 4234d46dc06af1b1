//! Hostile files, fuzzed with a fixed budget: GGUF and safetensors checkpoints mutated at
//! random (flipped bits; lengths, counts, offsets and dimensions overwritten with absurd
//! values; truncation) and training manifests made of near-valid JSON lines. Loading must
//! never panic or abort, must fail with one error naming the file, and must never allocate
//! what a header merely claims: the largest single allocation made while loading a file of
//! N bytes stays under `8 N + 16 MiB` (a counting global allocator measures it).
//!
//! Budget: `SENSORIUM_FUZZ_CASES` cases per property (default 64; `make fuzz` runs more).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use candle_core::Device;
use proptest::prelude::*;
use sensorium_models::checkpoint::Weights;
use sensorium_models::llm::gguf::GgufFile;

/// Records the largest single allocation (or reallocation) made by the current thread.
struct Peak;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

/// Runs `f` and returns the largest single allocation it made on this thread.
fn largest_during(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

fn bound(len: usize) -> usize {
    8 * len + (16 << 20)
}

fn cases() -> u32 {
    std::env::var("SENSORIUM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn budget() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel),
    )
    .expect("fixture")
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    /// Overwrite 8 bytes (a length, a count, an offset, a dimension) with `value`.
    U64 {
        at: usize,
        value: u64,
    },
    U32 {
        at: usize,
        value: u32,
    },
    Truncate {
        at: usize,
    },
}

fn absurd_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(u64::MAX / 2),
        Just(1 << 40),
        Just(1 << 62),
        any::<u64>(),
        0u64..4096,
    ]
}

fn mutation(header_bias: usize) -> impl Strategy<Value = Mutation> {
    // Most mutations hit the header, where lengths and offsets live.
    let at = prop_oneof![3 => 0..header_bias, 1 => 0usize..usize::MAX];
    prop_oneof![
        (at.clone(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (at.clone(), absurd_u64()).prop_map(|(at, value)| Mutation::U64 { at, value }),
        (at.clone(), any::<u32>()).prop_map(|(at, value)| Mutation::U32 { at, value }),
        at.prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = bytes.len().max(1);
        match *m {
            Mutation::FlipBit { at, bit } => {
                if let Some(b) = bytes.get_mut(at % n) {
                    *b ^= 1 << bit;
                }
            }
            Mutation::U64 { at, value } => {
                let at = at % n;
                for (i, b) in value.to_le_bytes().into_iter().enumerate() {
                    if let Some(x) = bytes.get_mut(at + i) {
                        *x = b;
                    }
                }
            }
            Mutation::U32 { at, value } => {
                let at = at % n;
                for (i, b) in value.to_le_bytes().into_iter().enumerate() {
                    if let Some(x) = bytes.get_mut(at + i) {
                        *x = b;
                    }
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % n),
        }
    }
    bytes
}

fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Opens, reads the config of and (if all that worked) loads the decoder of a GGUF file.
fn load_gguf(path: &Path) -> Result<(), String> {
    let f = GgufFile::open(path).map_err(|e| e.to_string())?;
    f.decoder_config().map_err(|e| e.to_string())?;
    f.load_decoder(64, &Device::Cpu)
        .map_err(|e| e.to_string())?;
    Ok(())
}

proptest! {
    #![proptest_config(budget())]

    #[test]
    fn mutated_gguf_files_fail_with_a_named_error_and_bounded_memory(
        which in 0usize..2,
        muts in prop::collection::vec(mutation(4096), 1..6),
    ) {
        let seed = fixture(["llm/qwen2-q8_0.gguf", "llm/qwen2-q4_0.gguf"][which]);
        let bytes = apply(seed, &muts);
        let dir = tempfile::tempdir().unwrap();
        let path = write_tmp(dir.path(), "m.gguf", &bytes);
        let mut result = Ok(());
        let peak = largest_during(|| result = load_gguf(&path));
        prop_assert!(peak <= bound(bytes.len()), "allocated {peak} bytes for a {}-byte file", bytes.len());
        if let Err(e) = result {
            prop_assert!(e.contains("m.gguf"), "error does not name the file: {e}");
            prop_assert!(!e.contains('\n'), "error spans lines: {e}");
        }
    }

    #[test]
    fn mutated_safetensors_fail_with_a_named_error_and_bounded_memory(
        muts in prop::collection::vec(mutation(2048), 1..6),
    ) {
        let bytes = apply(fixture("llm/qwen2/model.safetensors"), &muts);
        let dir = tempfile::tempdir().unwrap();
        let path = write_tmp(dir.path(), "model.safetensors", &bytes);
        let mut result = Ok(());
        let peak = largest_during(|| {
            result = Weights::from_files(std::slice::from_ref(&path), &Device::Cpu)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        prop_assert!(peak <= bound(bytes.len()), "allocated {peak} bytes for a {}-byte file", bytes.len());
        if let Err(e) = result {
            prop_assert!(e.contains("model.safetensors"), "error does not name the file: {e}");
        }
    }

    #[test]
    fn hostile_manifest_lines_fail_with_file_and_line(lines in prop::collection::vec(manifest_line(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"x").unwrap();
        let path = write_tmp(dir.path(), "m.jsonl", lines.join("\n").as_bytes());
        match sensorium_models::train::read_manifest(&path) {
            Ok(samples) => prop_assert!(samples.len() <= lines.len()),
            Err(e) => {
                let m = e.to_string();
                prop_assert!(m.contains("m.jsonl"), "error does not name the manifest: {m}");
                prop_assert!(!m.contains('\n'), "error spans lines: {m}");
            }
        }
    }
}

/// A manifest line: valid JSON in the manifest's shape with absurd values, or garbage.
fn manifest_line() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        Just("<av> What is happening?".to_string()),
        Just("<av><av> twice".to_string()),
        Just("".to_string()),
        "[ -~]{0,30}",
        any::<String>(),
    ];
    let from = prop_oneof![
        Just("human"),
        Just("gpt"),
        Just("user"),
        Just("assistant"),
        Just("system")
    ];
    let turn = (from, text).prop_map(|(f, v)| serde_json::json!({"from": f, "value": v}));
    let media = prop_oneof![
        Just(serde_json::json!("a.mp4")),
        Just(serde_json::json!(["a.mp4", "a.mp4"])),
        Just(serde_json::json!(["a.mp4", "a.mp4", "a.mp4"])),
        Just(serde_json::json!("../../../etc/passwd")),
        Just(serde_json::json!("missing.mp4")),
        Just(serde_json::json!(42)),
    ];
    let time = prop_oneof![
        Just(serde_json::Value::Null),
        Just(serde_json::json!(-1.0)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(0.0)),
        (0.0f64..100.0).prop_map(|v| serde_json::json!(v)),
    ];
    prop_oneof![
        4 => (media, time.clone(), time, prop::collection::vec(turn, 0..5)).prop_map(
            |(m, s, e, c)| serde_json::json!({"media": m, "start_s": s, "end_s": e, "conversation": c}).to_string()
        ),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => Just("{\"media\": \"a.mp4\", \"conversation\": [".repeat(50)),
    ]
}
