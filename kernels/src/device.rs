//! Device selection (`--device auto|cpu|cuda[:N]`) and the backend that runs each op on the
//! CPU reference or the CUDA kernels, so callers do not care which one runs.

use std::str::FromStr;
use std::sync::{Arc, Once};

use crate::cuda::Gpu;
use crate::error::{Error, Result};

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when usable, else the CPU (with one message saying why).
    Auto,
    /// The CPU reference.
    Cpu,
    /// CUDA device N; an error when it is not usable.
    Cuda(usize),
}

impl DeviceSpec {
    /// Parses `auto`, `cpu`, `cuda` (= cuda:0) or `cuda:N` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let bad = || Error::BadDeviceSpec {
            spec: s.to_string(),
        };
        match t.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => {
                let n = t.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse::<usize>().map(DeviceSpec::Cuda).map_err(|_| bad())
            }
        }
    }

    /// Opens the backend. `Auto` falls back to the CPU, printing the reason once per process.
    pub fn open(self) -> Result<Backend> {
        let (be, note) = self.open_noted()?;
        if let Some(n) = note {
            static SAID: Once = Once::new();
            SAID.call_once(|| eprintln!("sensorium-kernels: {n}"));
        }
        Ok(be)
    }

    /// As [`Self::open`] without printing: the second value is the fallback message
    /// (`"no CUDA device: <reason>; running on the CPU"`) when `Auto` fell back.
    pub fn open_noted(self) -> Result<(Backend, Option<String>)> {
        match self {
            DeviceSpec::Cpu => Ok((Backend::Cpu, None)),
            DeviceSpec::Cuda(n) => Gpu::new(n).map(|g| (Backend::Cuda(g), None)),
            DeviceSpec::Auto => match Gpu::new(0) {
                Ok(g) => Ok((Backend::Cuda(g), None)),
                Err(e) => Ok((
                    Backend::Cpu,
                    Some(format!("no CUDA device: {e}; running on the CPU")),
                )),
            },
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DeviceSpec::parse(s)
    }
}

/// Where ops run.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Plain-Rust references.
    Cpu,
    /// CUDA kernels on one device.
    Cuda(Arc<Gpu>),
}

impl Backend {
    /// A short description ("cpu" or the device name).
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu => "cpu".into(),
            Backend::Cuda(g) => g.describe(),
        }
    }
    /// Waits for queued device work (no-op on the CPU).
    pub fn sync(&self) -> Result<()> {
        match self {
            Backend::Cpu => Ok(()),
            Backend::Cuda(g) => g.sync(),
        }
    }
}
