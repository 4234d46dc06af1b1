//! NVRTC: compiles the embedded kernel source to PTX (no driver needed), and finds
//! libnvrtc.so.13 in Python's site-packages (pip package `nvidia-cuda-nvrtc`) when the
//! system loader cannot, so compile checks run on machines without a CUDA toolkit.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The kernel source, embedded at build time.
pub const SOURCE: &str = include_str!("../kernels.cu");

/// NVRTC virtual architecture for a compute capability (PTX is JIT-compiled by the driver).
pub fn arch_for(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 7) => "compute_87",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        (m, _) if m >= 10 => "compute_90",
        (9, _) => "compute_90",
        _ => "compute_80",
    }
}

/// Compiles the module of one storage type for `arch` (e.g. "compute_90").
pub fn compile(dt: DType, arch: &'static str) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(Error::Compile {
            module: dt.name().into(),
            arch: arch.into(),
            log: "libnvrtc.so.13 not found (install pip package nvidia-cuda-nvrtc or the CUDA 13 toolkit)".into(),
        });
    }
    let opts = CompileOptions {
        arch: Some(arch),
        options: vec![format!("-D{}", dt.macro_name()), "--std=c++17".into()],
        name: Some(format!("sensorium_{}.cu", dt.name())),
        ..Default::default()
    };
    compile_ptx_with_opts(SOURCE, opts).map_err(|e| Error::Compile {
        module: dt.name().into(),
        arch: arch.into(),
        log: match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        },
    })
}

/// True when libnvrtc can be loaded, after trying Python's site-packages once.
pub fn nvrtc_present() -> bool {
    // SAFETY: only dlopens candidate library names.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return true;
    }
    preload_from_python().is_some()
        // SAFETY: as above.
        && unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Loads libnvrtc.so.13 by absolute path from `SENSORIUM_NVRTC_LIB` or from a pip
/// `nvidia-cuda-nvrtc` install, globally, so cudarc's later dlopen by soname finds it.
pub fn preload_from_python() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            for cand in candidates() {
                if !cand.is_file() {
                    continue;
                }
                // SAFETY: loading NVIDIA's NVRTC, whose initialisers have no preconditions.
                let lib = unsafe {
                    libloading::os::unix::Library::open(
                        Some(&cand),
                        libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                    )
                };
                if let Ok(lib) = lib {
                    // Kept loaded for the life of the process.
                    std::mem::forget(lib);
                    return Some(cand);
                }
            }
            None
        })
        .as_deref()
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(p) = std::env::var("SENSORIUM_NVRTC_LIB") {
        out.push(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    let script = "import site,sys\nfor p in site.getsitepackages()+[site.getusersitepackages()]+sys.path: print(p)";
    if let Ok(o) = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
    {
        dirs.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(PathBuf::from),
        );
    }
    for d in dirs {
        let nv = d.join("nvidia");
        // cu13 wheels: nvidia/cu13/lib; older layout: nvidia/cuda_nvrtc/lib.
        for sub in ["cu13/lib", "cuda_nvrtc/lib"] {
            out.push(nv.join(sub).join("libnvrtc.so.13"));
        }
    }
    out
}
