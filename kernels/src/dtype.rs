//! Storage element types (f32, f16, bf16): arithmetic is always f32, storage may be 16-bit.

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

/// Storage type tag, used to pick the NVRTC module compiled for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE single.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
}

impl DType {
    /// The macro that selects this storage type in `kernels.cu`.
    pub fn macro_name(self) -> &'static str {
        match self {
            DType::F32 => "STORE_F32",
            DType::F16 => "STORE_F16",
            DType::BF16 => "STORE_BF16",
        }
    }
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
    /// All storage types.
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
}

/// An element type the kernels store; conversions round to nearest even.
pub trait Elem:
    Copy + Default + Send + Sync + DeviceRepr + ValidAsZeroBits + std::fmt::Debug + 'static
{
    /// The storage tag.
    const DTYPE: DType;
    /// Widen to f32.
    fn to_f32(self) -> f32;
    /// Narrow from f32 (round to nearest even).
    fn from_f32(x: f32) -> Self;
}

impl Elem for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}
impl Elem for half::f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}
impl Elem for half::bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

/// Plain data that can be copied to and zero-allocated on a device (elements and u8 masks).
pub trait Plain: Copy + Default + DeviceRepr + ValidAsZeroBits + 'static {}
impl<T: Copy + Default + DeviceRepr + ValidAsZeroBits + 'static> Plain for T {}
