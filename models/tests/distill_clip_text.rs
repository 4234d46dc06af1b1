//! The zero-shot teacher's class embeddings from a CLIP text tower match PyTorch
//! `transformers` (golden values from tools/distill_tiny_clip.py on a tiny seeded CLIP in the
//! HF layout), round-trip through a teacher file, and score by scaled cosine.

use std::path::{Path, PathBuf};

use sensorium_models::distill::clip_text::{save_class_embeddings, ClipTextEmbedder};
use sensorium_models::distill::teacher::argmax;
use sensorium_models::distill::Teacher;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/distill_tiny_clip")
}

struct Golden {
    template: String,
    classes: Vec<String>,
    ids: Vec<Vec<u32>>,
    embeds: Vec<Vec<f32>>,
    logit_scale: f32,
}

fn golden() -> Golden {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("golden.json")).unwrap())
            .unwrap();
    Golden {
        template: v["template"].as_str().unwrap().to_string(),
        classes: serde_json::from_value(v["classes"].clone()).unwrap(),
        ids: serde_json::from_value(v["ids"].clone()).unwrap(),
        embeds: serde_json::from_value(v["text_embeds"].clone()).unwrap(),
        logit_scale: v["logit_scale"].as_f64().unwrap() as f32,
    }
}

#[test]
fn class_embeddings_match_transformers() {
    let g = golden();
    let clip = ClipTextEmbedder::load(&fixture()).unwrap();
    assert_eq!(clip.projection_dim, 24);
    assert!((clip.logit_scale - g.logit_scale).abs() < 1e-6);
    for (i, c) in g.classes.iter().enumerate() {
        let prompt = g.template.replace("{}", c);
        assert_eq!(clip.tokenize(&prompt).unwrap(), g.ids[i], "{prompt}");
        let e = clip.embed(&prompt).unwrap();
        let max_err = e
            .iter()
            .zip(&g.embeds[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_err < 1e-4, "{c}: max abs error {max_err}");
    }
    let all = clip.class_embeddings(&g.classes, &g.template).unwrap();
    assert_eq!(all.len(), g.classes.len() * 24);
}

#[test]
fn zero_shot_teacher_from_clip_text_file() {
    let g = golden();
    let clip = ClipTextEmbedder::load(&fixture()).unwrap();
    let k = g.classes.len();
    let embeds = clip.class_embeddings(&g.classes, &g.template).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classes.safetensors");
    save_class_embeddings(&path, &embeds, k, clip.logit_scale).unwrap();
    // Image features already in the joint space (E = 24): each class's own text embedding
    // is its best match.
    let teacher = Teacher::load(&path, k, 24).unwrap();
    assert!(teacher.is_zero_shot());
    let direct = Teacher::zero_shot(embeds.clone(), k, None, clip.logit_scale, 24).unwrap();
    for c in 0..k {
        let x = &embeds[c * 24..(c + 1) * 24];
        let l = teacher.logits(x).unwrap();
        assert_eq!(argmax(&l).0, c);
        assert!(
            (l[c] - clip.logit_scale.exp()).abs() < 1e-3,
            "cos(x, x) * scale"
        );
        assert_eq!(l, direct.logits(x).unwrap());
    }
    assert!(clip
        .class_embeddings(&g.classes, "no placeholder")
        .unwrap_err()
        .to_string()
        .contains("has no {} for the class name"));
}

#[test]
fn missing_checkpoint_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = ClipTextEmbedder::load(dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::copy(
        fixture().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = ClipTextEmbedder::load(dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}
