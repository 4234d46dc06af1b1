//! Bad checkpoints give one clear error naming the file and the tensor or field at fault.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sensorium_models::audio::AudioEncoder;
use sensorium_models::error::ModelError;
use sensorium_models::qformer::QFormer;
use sensorium_models::vision::VisionEncoder;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Copies a fixture checkpoint, letting `edit` change its tensors.
fn copy_with(
    name: &str,
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture(name);
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let mut t =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, tmp.path().join("model.safetensors")).unwrap();
    tmp
}

fn file(dir: &Path) -> String {
    dir.join("model.safetensors").display().to_string()
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let name = "llama_proj.weight";
    let tmp = copy_with("qformer", |t| {
        t.remove(name);
    });
    let err = QFormer::load(tmp.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{err:?}");
    let msg = err.to_string();
    assert_eq!(
        msg,
        format!("{}: missing tensor \"{name}\"", file(tmp.path()))
    );
}

#[test]
fn wrong_shape_names_file_tensor_and_shapes() {
    let name = "video_Qformer.bert.encoder.layer.1.crossattention.self.key.weight";
    let tmp = copy_with("qformer", |t| {
        t.insert(
            name.into(),
            Tensor::zeros((32, 15), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let msg = QFormer::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!(
            "{}: tensor \"{name}\" has shape [32, 15], expected [32, 16]",
            file(tmp.path())
        )
    );
}

#[test]
fn wrong_shape_in_vision_tower() {
    let name = "vision_model.encoder.layers.1.mlp.fc1.weight";
    let tmp = copy_with("clip", |t| {
        t.insert(
            name.into(),
            Tensor::zeros((64, 31), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let msg = VisionEncoder::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(name) && msg.contains("[64, 31]") && msg.contains("[64, 32]"),
        "{msg}"
    );
    assert!(msg.starts_with(&file(tmp.path())), "{msg}");
}

#[test]
fn integer_dtype_is_refused() {
    let name = "model.encoder.layers.0.fc1.bias";
    let tmp = copy_with("whisper80", |t| {
        t.insert(
            name.into(),
            Tensor::zeros(64, DType::I64, &Device::Cpu).unwrap(),
        );
    });
    let msg = AudioEncoder::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!(
            "{}: tensor \"{name}\" has dtype I64, expected a float dtype",
            file(tmp.path())
        )
    );
}

#[test]
fn unknown_model_type_names_config() {
    let tmp = copy_with("whisper80", |_| {});
    let cfg = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"whisper\"", "\"wav2vec2\"");
    std::fs::write(&cfg, text).unwrap();
    let msg = AudioEncoder::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!(
            "{}: unknown model_type \"wav2vec2\" (expected one of: whisper)",
            cfg.display()
        )
    );
    let msg = VisionEncoder::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unknown model_type \"wav2vec2\"") && msg.contains("clip_vision_model"),
        "{msg}"
    );
    let msg = QFormer::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("expected one of: causal_qformer"), "{msg}");
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let msg = AudioEncoder::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&tmp.path().join("config.json").display().to_string()),
        "{msg}"
    );
    std::fs::copy(
        fixture("siglip").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let msg = VisionEncoder::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("no *.safetensors"),
        "{msg}"
    );
}

#[test]
fn invalid_qformer_config_names_field() {
    let tmp = copy_with("qformer", |_| {});
    let cfg = tmp.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["slot_attention_heads"] = 3.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let msg = QFormer::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("config.json") && msg.contains("slot_attention_heads"),
        "{msg}"
    );
}
