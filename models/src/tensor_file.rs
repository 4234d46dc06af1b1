//! A small safetensors writer (f32 tensors plus string metadata) and a header validator.
//!
//! candle's own `safetensors::save` cannot write the `__metadata__` table, where checkpoints
//! keep their step and class list, so we write the (simple, documented) format ourselves:
//! 8-byte little-endian header length, JSON header, raw little-endian data. Reading validates
//! the header first so a truncated or garbled file gets a precise reason, then lets candle
//! decode the tensors (any dtype, converted to f32).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::distill::DistillError;

/// One tensor to write: name, shape, row-major f32 data.
pub(crate) struct StTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Serialise tensors + metadata into safetensors bytes.
pub(crate) fn to_bytes(tensors: &[StTensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    let mut sorted: Vec<&StTensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for t in &sorted {
        let end = offset + t.data.len() * 4;
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in sorted {
        for x in &t.data {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DistillError> {
    let tmp = write_tmp(path, bytes)?;
    commit(&tmp, path)
}

/// First half of an atomic write: `<path>.tmp`, fully written and synced.
pub(crate) fn write_tmp(path: &Path, bytes: &[u8]) -> Result<PathBuf, DistillError> {
    let tmp = tmp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| DistillError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| DistillError::io(&tmp, e))?;
    f.sync_all().map_err(|e| DistillError::io(&tmp, e))?;
    Ok(tmp)
}

/// Second half: rename the synced temporary file over `path` (atomic on POSIX).
pub(crate) fn commit(tmp: &Path, path: &Path) -> Result<(), DistillError> {
    std::fs::rename(tmp, path).map_err(|e| DistillError::io(path, e))
}

/// Make `to` an atomic copy of `from` (hard link, or copy where links are not supported),
/// leaving `from` in place.
pub(crate) fn atomic_copy(from: &Path, to: &Path) -> Result<(), DistillError> {
    let tmp = tmp_path(to);
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp).map_err(|e| DistillError::io(&tmp, e))?;
    }
    commit(&tmp, to)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// A validated safetensors file: its metadata and tensors (as f32, on the CPU).
pub(crate) struct StFile {
    pub metadata: BTreeMap<String, String>,
    pub tensors: HashMap<String, Tensor>,
}

impl StFile {
    /// Read and validate `path`; any problem is a reason string (caller picks the error kind).
    pub fn read(path: &Path) -> Result<Self, ReadError> {
        let bytes = std::fs::read(path).map_err(ReadError::Io)?;
        let metadata = validate(&bytes).map_err(ReadError::Invalid)?;
        let raw = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| ReadError::Invalid(format!("cannot decode tensors: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, t) in raw {
            let t = t
                .to_dtype(DType::F32)
                .map_err(|e| ReadError::Invalid(format!("tensor `{name}`: {e}")))?;
            tensors.insert(name, t);
        }
        Ok(Self { metadata, tensors })
    }
}

/// Why a safetensors file could not be read.
pub(crate) enum ReadError {
    Io(std::io::Error),
    Invalid(String),
}

fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Check the header against the file size; return the `__metadata__` table.
fn validate(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    if bytes.len() < 8 {
        return Err(format!(
            "truncated: {} bytes, shorter than the 8-byte header length",
            bytes.len()
        ));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(len8);
    let avail = (bytes.len() - 8) as u64;
    if n > avail {
        return Err(format!(
            "bad header: header length {n} exceeds the {avail} bytes after it (truncated?)"
        ));
    }
    let n = n as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n])
            .map_err(|e| format!("bad header: not a JSON object: {e}"))?;
    let data_len = bytes.len() - 8 - n;
    let mut metadata = BTreeMap::new();
    for (name, entry) in &header {
        if name == "__metadata__" {
            let table = entry
                .as_object()
                .ok_or("bad header: __metadata__ is not an object")?;
            for (k, v) in table {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("bad header: metadata `{k}` is not a string"))?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let dtype = entry["dtype"]
            .as_str()
            .ok_or_else(|| format!("bad header: tensor `{name}` has no dtype"))?;
        let size =
            dtype_size(dtype).ok_or_else(|| format!("tensor `{name}`: unknown dtype {dtype}"))?;
        let shape: Vec<usize> = serde_json::from_value(entry["shape"].clone())
            .map_err(|_| format!("bad header: tensor `{name}` has no valid shape"))?;
        let offs: [usize; 2] = serde_json::from_value(entry["data_offsets"].clone())
            .map_err(|_| format!("bad header: tensor `{name}` has no valid data_offsets"))?;
        if offs[1] > data_len {
            return Err(format!(
                "truncated: tensor `{name}` needs data up to byte {} but the file holds {data_len}",
                offs[1]
            ));
        }
        let want = shape.iter().product::<usize>() * size;
        if offs[1] < offs[0] || offs[1] - offs[0] != want {
            return Err(format!(
                "tensor `{name}`: shape {shape:?} {dtype} needs {want} bytes, offsets give {}",
                offs[1].saturating_sub(offs[0])
            ));
        }
    }
    Ok(metadata)
}

/// Flatten a tensor to f32 values (for writing or plain-Rust math).
pub(crate) fn to_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}
