//! The crate's one error type: every variant names the culprit (tensor, option, library).

/// Errors of sensorium-kernels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `--device` string could not be parsed.
    #[error("invalid device {spec:?}: expected auto, cpu, cuda or cuda:N")]
    BadDeviceSpec {
        /// The string given.
        spec: String,
    },
    /// CUDA was asked for explicitly but is not usable on this machine.
    #[error("CUDA device {ordinal} unavailable: {reason}")]
    CudaUnavailable {
        /// Device ordinal asked for.
        ordinal: usize,
        /// Why (missing library, no device, driver error).
        reason: String,
    },
    /// A tensor's length or a size parameter does not fit the operation.
    #[error("tensor {tensor}: {msg}")]
    Shape {
        /// Name of the tensor or parameter.
        tensor: &'static str,
        /// What is wrong with it.
        msg: String,
    },
    /// A buffer lives on a different backend than the one asked to run the op.
    #[error("tensor {tensor} is on the wrong device for this backend ({msg})")]
    WrongDevice {
        /// Name of the tensor.
        tensor: &'static str,
        /// Where it is vs where it should be.
        msg: &'static str,
    },
    /// NVRTC rejected a kernel source.
    #[error("NVRTC failed to compile {module} for {arch}: {log}")]
    Compile {
        /// Module (storage type) being compiled.
        module: String,
        /// Target architecture.
        arch: String,
        /// Compiler log.
        log: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error in {op}: {msg}")]
    Driver {
        /// What was being done.
        op: &'static str,
        /// The driver's message.
        msg: String,
    },
    /// A cuBLAS call failed.
    #[error("cuBLAS error in {op}: {msg}")]
    Blas {
        /// What was being done.
        op: &'static str,
        /// cuBLAS's message.
        msg: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn shape(tensor: &'static str, msg: impl Into<String>) -> Error {
    Error::Shape {
        tensor,
        msg: msg.into(),
    }
}

pub(crate) fn drv(op: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    move |e| Error::Driver {
        op,
        msg: format!("{e:?}"),
    }
}
