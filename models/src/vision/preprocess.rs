//! Image preprocessing matching the Hugging Face PIL-backend image processors
//! (`CLIPImageProcessorPil`, `SiglipImageProcessorPil`): resize with Pillow's resampling
//! (reproduced here: separable filter with antialiasing support scaling, 22-bit fixed-point
//! coefficients and a uint8 round trip between the horizontal and vertical passes, as in
//! Pillow's `libImaging/Resample.c`), center crop, rescale by 1/255, normalise.
//!
//! Residual difference: the torchvision-backend processors (transformers' default when
//! torchvision is installed) resize float tensors without the uint8 intermediate, so they
//! differ from these (and from the PIL processors) by up to about one grey level.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Pillow resampling filters we support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    Bilinear,
    Bicubic,
}

impl Resample {
    /// From the HF `resample` integer (PIL enum: 2 bilinear, 3 bicubic).
    pub fn from_pil(v: u64) -> Option<Self> {
        match v {
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
        }
    }

    fn filter(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Self::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Self::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, the first
/// input index and fixed-point weights.
fn coeffs(in_size: usize, out_size: usize, f: Resample) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = f.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| f.filter((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|v| {
                    let v = if ww != 0.0 { v / ww } else { *v };
                    let s = v * (1u32 << PRECISION_BITS) as f64;
                    if v < 0.0 {
                        (s - 0.5) as i32
                    } else {
                        (s + 0.5) as i32
                    }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes packed RGB8 `w x h` to `ow x oh` exactly as Pillow's `Image.resize`
/// (horizontal pass then vertical pass, each skipped when that size is unchanged).
pub fn resize_rgb8(rgb: &[u8], w: usize, h: usize, ow: usize, oh: usize, f: Resample) -> Vec<u8> {
    let mut cur = rgb.to_vec();
    let mut cw = w;
    if ow != w {
        let k = coeffs(w, ow, f);
        let mut out = vec![0u8; ow * h * 3];
        for y in 0..h {
            for (x, (x0, kk)) in k.iter().enumerate() {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, kv) in kk.iter().enumerate() {
                        ss += cur[(y * cw + x0 + i) * 3 + c] as i64 * *kv as i64;
                    }
                    out[(y * ow + x) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = out;
        cw = ow;
    }
    if oh != h {
        let k = coeffs(h, oh, f);
        let mut out = vec![0u8; cw * oh * 3];
        for (y, (y0, kk)) in k.iter().enumerate() {
            for x in 0..cw {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, kv) in kk.iter().enumerate() {
                        ss += cur[((y0 + i) * cw + x) * 3 + c] as i64 * *kv as i64;
                    }
                    out[(y * cw + x) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = out;
    }
    cur
}

/// What an HF image processor does, as data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// CLIP: resize the shortest side to this, keeping aspect ratio (then center crop).
    pub shortest_edge: Option<usize>,
    /// SigLIP: resize to this square size (aspect ratio not kept).
    pub square: Option<usize>,
    /// Center crop (height, width), if any.
    pub crop: Option<(usize, usize)>,
    pub resample: Resample,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// `CLIPImageProcessor` defaults for `size`.
    pub fn clip(size: usize) -> Self {
        Self {
            shortest_edge: Some(size),
            square: None,
            crop: Some((size, size)),
            resample: Resample::Bicubic,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            // HF's OPENAI_CLIP_STD digits, rounded to f32 by the compiler.
            #[allow(clippy::excessive_precision)]
            std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        }
    }

    /// `SiglipImageProcessor` defaults for `size`.
    pub fn siglip(size: usize) -> Self {
        Self {
            shortest_edge: None,
            square: Some(size),
            crop: None,
            resample: Resample::Bicubic,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// Output (height, width).
    pub fn output_size(&self, w: usize, h: usize) -> (usize, usize) {
        if let Some(c) = self.crop {
            return c;
        }
        if let Some(s) = self.square {
            return (s, s);
        }
        (h, w)
    }

    /// Packed RGB8 `w x h` -> CHW f32 pixel values, as the HF processor's `pixel_values`.
    pub fn apply(&self, rgb: &[u8], w: usize, h: usize) -> Result<Vec<f32>> {
        if w == 0 || h == 0 || rgb.len() != w * h * 3 {
            return Err(ModelError::InvalidInput(format!(
                "RGB frame of {} bytes does not match {w}x{h}x3",
                rgb.len()
            )));
        }
        let (rw, rh) = if let Some(s) = self.square {
            (s, s)
        } else if let Some(s) = self.shortest_edge {
            // transformers `get_resize_output_image_size(default_to_square=False)`.
            let (short, long) = if w <= h { (w, h) } else { (h, w) };
            let new_long = (s as f64 * long as f64 / short as f64) as usize;
            if w <= h {
                (s, new_long)
            } else {
                (new_long, s)
            }
        } else {
            (w, h)
        };
        let img = if (rw, rh) != (w, h) {
            resize_rgb8(rgb, w, h, rw, rh, self.resample)
        } else {
            rgb.to_vec()
        };
        let (ch, cw, top, left) = match self.crop {
            Some((ch, cw)) => {
                if ch > rh || cw > rw {
                    return Err(ModelError::InvalidInput(format!(
                        "crop {cw}x{ch} larger than resized image {rw}x{rh}"
                    )));
                }
                (ch, cw, (rh - ch) / 2, (rw - cw) / 2)
            }
            None => (rh, rw, 0, 0),
        };
        let mut out = vec![0f32; 3 * ch * cw];
        for c in 0..3 {
            // Rescale then normalise, in f32 like the HF processors' output.
            let (m, s) = (self.mean[c], self.std[c]);
            for y in 0..ch {
                for x in 0..cw {
                    let v = img[((y + top) * rw + x + left) * 3 + c] as f32 * (1.0 / 255.0);
                    out[(c * ch + y) * cw + x] = (v - m) / s;
                }
            }
        }
        Ok(out)
    }
}
