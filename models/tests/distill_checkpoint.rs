//! Checkpoints: a trainer killed mid-training resumes from its last checkpoint with the same
//! weights, step and difficulty state, and continues bit-for-bit as if never interrupted; a process killed with SIGKILL leaves a loadable
//! checkpoint; a corrupt checkpoint (truncated, bad header, wrong shapes, other classes) is
//! refused with an error naming the file, and the previous good one is kept and used.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use sensorium_models::distill::student::Rng;
use sensorium_models::distill::{
    prev_path, BackgroundTrainer, DistillConfig, DistillError, DistillTrainer, Pair,
};

const DIM: usize = 6;

fn cfg(path: Option<&Path>) -> DistillConfig {
    DistillConfig {
        classes: ["a", "b", "c", "d"].map(String::from).to_vec(),
        batch_size: 8,
        replay_size: 32,
        checkpoint: path.map(Path::to_path_buf),
        checkpoint_every: 10,
        seed: 3,
        ..DistillConfig::default()
    }
}

/// Class-dependent features and a confident teacher, deterministic in `i`.
fn pair(i: usize) -> Pair {
    let mut rng = Rng::new(i as u64);
    let c = i % 4;
    let student_features = (0..DIM)
        .map(|d| if d == c { 1.0 } else { 0.0 } + 0.3 * rng.normal() as f32)
        .collect();
    let mut teacher_logits = vec![0.0; 4];
    teacher_logits[c] = 4.0;
    Pair {
        student_features,
        teacher_logits,
        snr_db: 10.0 + c as f32,
    }
}

fn train_to(t: &mut DistillTrainer, step: u64, next: &mut usize) {
    while t.step() < step {
        t.observe(pair(*next)).unwrap();
        *next += 1;
    }
}

#[test]
fn killed_trainer_resumes_from_last_checkpoint_with_same_weights_and_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("student.safetensors");
    let c = DistillConfig {
        update_interval: 3,
        ..cfg(Some(&path))
    };
    let mut t = DistillTrainer::new(&c, DIM).unwrap();
    let mut next = 0;
    train_to(&mut t, 20, &mut next);
    // Mid-interval: some accepted pairs wait for the next update.
    t.observe(pair(next)).unwrap();
    next += 1;
    t.save_checkpoint(&path).unwrap();
    let at_save = next;
    let saved = t.snapshot().unwrap().values().unwrap();
    let saved_difficulty = t.difficulty().clone();
    // Training goes on past the checkpoint, then the trainer dies without saving.
    train_to(&mut t, 27, &mut next);
    let uninterrupted = t.snapshot().unwrap().values().unwrap();
    assert_ne!(uninterrupted, saved);
    drop(t);

    let r = DistillTrainer::resume(&c, DIM, &path).unwrap();
    assert_eq!(r.step(), 20);
    assert_eq!(r.snapshot().unwrap().version, 20);
    assert_eq!(
        r.snapshot().unwrap().values().unwrap(),
        saved,
        "bit-identical weights"
    );
    assert_eq!(r.difficulty(), &saved_difficulty);
    // Fed the same pairs, the resumed trainer makes exactly the updates the uninterrupted one
    // made: optimizer moments, replay ring, sampler and update phase were all restored.
    let mut r = r;
    let mut again = at_save;
    train_to(&mut r, 27, &mut again);
    assert_eq!(again, next, "updates fell on the same pairs");
    assert_eq!(r.snapshot().unwrap().values().unwrap(), uninterrupted);

    // A version-1 checkpoint (weights, step and difficulty only) still loads; without the
    // optimizer moments and the replay ring its continuation differs.
    let bytes = std::fs::read(&path).unwrap();
    let v1 = String::from_utf8_lossy(&bytes)
        .find("\"format_version\":\"2\"")
        .expect("version in the header");
    let mut old = bytes.clone();
    old[v1 + "\"format_version\":\"".len()] = b'1';
    std::fs::write(&path, &old).unwrap();
    let mut r1 = DistillTrainer::resume(&c, DIM, &path).unwrap();
    assert_eq!(r1.step(), 20);
    assert_eq!(r1.replay_len(), 0);
    let mut again = at_save;
    train_to(&mut r1, 27, &mut again);
    assert_ne!(r1.snapshot().unwrap().values().unwrap(), uninterrupted);
}

/// Child half of `sigkill_mid_training_leaves_a_resumable_checkpoint`: trains forever in
/// the background, announcing each checkpoint on stdout.
#[test]
#[ignore = "run as a child process by sigkill_mid_training_leaves_a_resumable_checkpoint"]
fn child_trainer_process() {
    let Ok(dir) = std::env::var("DISTILL_CHILD_DIR") else {
        return;
    };
    let path = Path::new(&dir).join("student.safetensors");
    let bg =
        BackgroundTrainer::spawn(DistillTrainer::new(&cfg(Some(&path)), DIM).unwrap()).unwrap();
    let stats = bg.stats();
    let mut announced = 0;
    for i in 0.. {
        bg.submit(pair(i));
        let n = stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed);
        if n > announced {
            announced = n;
            println!("CHECKPOINT {n}");
        }
        if i % 64 == 0 {
            std::thread::yield_now();
        }
    }
}

#[test]
fn sigkill_mid_training_leaves_a_resumable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_trainer_process",
            "--ignored",
            "--nocapture",
        ])
        .env("DISTILL_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        if line.unwrap().starts_with("CHECKPOINT 3") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no shutdown checkpoint, no destructors.
    child.wait().unwrap();
    let path = dir.path().join("student.safetensors");
    let (t, info) = DistillTrainer::resume_latest(&cfg(Some(&path)), DIM, &path).unwrap();
    assert!(info.refused.is_empty(), "{:?}", info.refused);
    assert_eq!(info.loaded.as_deref(), Some(path.as_path()));
    assert!(t.step() >= 30 && t.step() % 10 == 0, "step {}", t.step());
    assert!(prev_path(&path).exists(), "the previous checkpoint is kept");
}

fn corrupt_reason(e: DistillError, path: &Path) -> String {
    let msg = e.to_string();
    match e {
        DistillError::CorruptCheckpoint { path: p, .. } => assert_eq!(p, path),
        other => panic!("expected CorruptCheckpoint, got {other:?}"),
    }
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    msg
}

#[test]
fn corrupt_checkpoint_is_refused_and_previous_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("student.safetensors");
    let prev = prev_path(&path);
    assert_eq!(prev, dir.path().join("student.prev.safetensors"));
    let c = cfg(Some(&path));
    let mut t = DistillTrainer::new(&c, DIM).unwrap();
    let mut next = 0;
    train_to(&mut t, 10, &mut next);
    t.save_checkpoint(&path).unwrap();
    let at10 = t.snapshot().unwrap().values().unwrap();
    train_to(&mut t, 20, &mut next);
    t.save_checkpoint(&path).unwrap();
    assert_eq!(DistillTrainer::resume(&c, DIM, &prev).unwrap().step(), 10);
    let prev_bytes = std::fs::read(&prev).unwrap();

    // Truncated.
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let msg = corrupt_reason(DistillTrainer::resume(&c, DIM, &path).unwrap_err(), &path);
    assert!(msg.contains("truncated"), "{msg}");
    let (r, info) = DistillTrainer::resume_latest(&c, DIM, &path).unwrap();
    assert_eq!(info.loaded.as_deref(), Some(prev.as_path()));
    assert_eq!(info.refused.len(), 1);
    assert_eq!(r.step(), 10);
    assert_eq!(r.snapshot().unwrap().values().unwrap(), at10);
    assert_eq!(
        std::fs::read(&prev).unwrap(),
        prev_bytes,
        "previous checkpoint untouched"
    );

    // Saving over a corrupt latest file does not rotate it into `.prev`.
    r.save_checkpoint(&path).unwrap();
    assert_eq!(std::fs::read(&prev).unwrap(), prev_bytes);
    assert_eq!(DistillTrainer::resume(&c, DIM, &path).unwrap().step(), 10);

    // Bad header.
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!").unwrap();
    let msg = corrupt_reason(DistillTrainer::resume(&c, DIM, &path).unwrap_err(), &path);
    assert!(msg.contains("bad header"), "{msg}");
    std::fs::write(&path, b"abc").unwrap();
    let msg = corrupt_reason(DistillTrainer::resume(&c, DIM, &path).unwrap_err(), &path);
    assert!(msg.contains("truncated: 3 bytes"), "{msg}");

    // Wrong shapes: the checkpoint's student takes DIM features, this one DIM + 1.
    std::fs::copy(&prev, &path).unwrap();
    let msg = corrupt_reason(
        DistillTrainer::resume(&c, DIM + 1, &path).unwrap_err(),
        &path,
    );
    assert!(
        msg.contains("tensor `student.classifier.weight` has shape [4, 6], expected [4, 7]"),
        "{msg}"
    );
    // Other classes.
    let mut other = c.clone();
    other.classes[3] = "z".into();
    let msg = corrupt_reason(
        DistillTrainer::resume(&other, DIM, &path).unwrap_err(),
        &path,
    );
    assert!(msg.contains("classes"), "{msg}");
    assert_eq!(std::fs::read(&prev).unwrap(), prev_bytes);
}

#[test]
fn background_trainer_checkpoints_at_shutdown_and_stage_state_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bg.safetensors");
    let mut c = cfg(Some(&path));
    c.checkpoint_every = 0; // only at shutdown
    let bg = BackgroundTrainer::spawn(DistillTrainer::new(&c, DIM).unwrap()).unwrap();
    let slot = bg.slot();
    let mut sent = 0;
    for i in 0..200 {
        if bg.submit(pair(i)) {
            sent += 1;
        }
    }
    let summary = bg.shutdown().unwrap();
    assert_eq!(summary.pairs, sent);
    assert!(summary.step > 0);
    let last = slot.load();
    assert_eq!(last.version, summary.step);
    let r = DistillTrainer::resume(&c, DIM, &path).unwrap();
    assert_eq!(r.step(), summary.step);
    assert_eq!(
        r.snapshot().unwrap().values().unwrap(),
        last.values().unwrap()
    );
}

#[test]
fn mlp_student_learns_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    let mut c = cfg(Some(&path));
    c.student_hidden = 16;
    let mut t = DistillTrainer::new(&c, DIM).unwrap();
    assert_eq!(t.arch().hidden, 16);
    let mut next = 0;
    train_to(&mut t, 150, &mut next);
    let s = t.snapshot().unwrap();
    // Held-out pairs (indices never trained on): the teacher's class is the argmax.
    let correct = (100_000..100_200)
        .filter(|i| {
            let p = pair(*i);
            let l = s.logits(&p.student_features).unwrap();
            sensorium_models::distill::teacher::argmax(&l).0 == i % 4
        })
        .count();
    assert!(correct >= 180, "MLP student: {correct}/200");
    t.save_checkpoint(&path).unwrap();
    let r = DistillTrainer::resume(&c, DIM, &path).unwrap();
    assert_eq!(r.snapshot().unwrap().values().unwrap(), s.values().unwrap());
    // A linear-head config refuses the MLP checkpoint, naming the missing tensor.
    let msg = DistillTrainer::resume(&cfg(Some(&path)), DIM, &path)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tensor `student.classifier.weight` has shape [4, 16], expected [4, 6]"),
        "{msg}"
    );
}
