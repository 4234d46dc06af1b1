//! Q4_0 weights repacked for AVX-512 VNNI: `y = x Wᵀ` with one `vpdpbusd` per four input
//! values for sixteen output rows at once.
//!
//! candle 0.11.1 repacks q4_k, q6_k and q8_0 for VNNI but runs q4_0 (the most common GGUF
//! quantisation of small models) through a per-row AVX2 dot product that converts each
//! block's f16 scale on its own; profiled on a Qwen2.5-0.5B-shaped q4_0 file, that dot
//! product and the scale conversion were 71% of decoding. This module is what llama.cpp's
//! q4_0 repacking does, in Rust, selected at run time: one binary runs everywhere, and a
//! CPU without AVX-512 VNNI (or `SENSORIUM_NO_VNNI=1`) keeps candle's kernel.
//!
//! Layout. A ggml q4_0 block holds 32 weights as an f16 scale `d` and 16 bytes whose low
//! nibbles are weights 0..16 and high nibbles weights 16..32 (each `q - 8`). A [`Tile`] holds
//! one block column of 16 consecutive rows: their 16 scales, then for each group `g` of four
//! bytes, the four bytes `4g..4g+4` of every row, row after row (64 bytes). One 512-bit load
//! is thus 16 rows × 4 bytes; its low nibbles meet activations `4g..4g+4` and its high
//! nibbles activations `16+4g..16+4g+4` in two `vpdpbusd` (unsigned weights × signed
//! activations, the `-8` folded in afterwards through the activation block's sum). Packing
//! is a transpose of 4-byte words, no nibble shuffling: cheap enough to do at load.
//!
//! Activations are rounded to 8 bits per 32-value block (scale `max|x| / 127`, stored as
//! f16), as candle's and llama.cpp's q4_0 kernels do.

use std::sync::OnceLock;

use half::f16;

/// Output rows per tile (one 512-bit vector of i32 / f32 lanes).
pub const TILE_ROWS: usize = 16;
/// Weights per ggml q4_0 block.
const QK: usize = 32;
/// Bytes of one ggml q4_0 block (f16 scale + 16 bytes of nibbles).
const BLOCK_BYTES: usize = 18;
/// Activation rows that share one unpacking of a tile's weights.
const ROW_TILE: usize = 4;

/// 16 rows × one block of 32 weights.
#[repr(C)]
#[derive(Clone, Copy)]
struct Tile {
    /// The rows' scales (f16 bits).
    d: [u16; TILE_ROWS],
    /// `[group (4)][row (16)][4 bytes]`: bytes `4g..4g+4` of each row's ggml block.
    qs: [u8; 4 * TILE_ROWS * 4],
}

/// Whether this CPU runs the VNNI kernel (and `SENSORIUM_NO_VNNI` is not set).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var_os("SENSORIUM_NO_VNNI").is_some_and(|v| v != "0") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// A q4_0 weight `[n, k]` repacked into tiles `[n / 16][k / 32]`.
pub struct PackedQ4_0 {
    n: usize,
    k: usize,
    dims: [usize; 2],
    tiles: Vec<Tile>,
}

impl std::fmt::Debug for PackedQ4_0 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ4_0 [{}, {}]", self.n, self.k)
    }
}

impl PackedQ4_0 {
    /// Repacks ggml q4_0 bytes of a row-major `[n, k]` weight; `None` when the shape does
    /// not tile (`n` not a multiple of 16, `k` not of 32) or the bytes do not match it.
    pub fn from_ggml(bytes: &[u8], n: usize, k: usize) -> Option<Self> {
        if n == 0 || k == 0 || !n.is_multiple_of(TILE_ROWS) || !k.is_multiple_of(QK) {
            return None;
        }
        let kb = k / QK;
        if bytes.len() != n.checked_mul(kb)?.checked_mul(BLOCK_BYTES)? {
            return None;
        }
        let groups = n / TILE_ROWS;
        let mut tiles: Vec<Tile> = Vec::with_capacity(groups * kb);
        let fill = |rg: usize, b: usize| {
            let mut t = Tile {
                d: [0; TILE_ROWS],
                qs: [0; 4 * TILE_ROWS * 4],
            };
            for lane in 0..TILE_ROWS {
                let at = ((rg * TILE_ROWS + lane) * kb + b) * BLOCK_BYTES;
                let blk = &bytes[at..at + BLOCK_BYTES];
                t.d[lane] = u16::from_le_bytes([blk[0], blk[1]]);
                for g in 0..4 {
                    let o = g * TILE_ROWS * 4 + lane * 4;
                    t.qs[o..o + 4].copy_from_slice(&blk[2 + 4 * g..6 + 4 * g]);
                }
            }
            t
        };
        // One thread: the loader builds the tokenizer on the other core meanwhile (the pool's
        // spinning workers would take that core from it).
        for rg in 0..groups {
            for b in 0..kb {
                tiles.push(fill(rg, b));
            }
        }
        Some(Self {
            n,
            k,
            dims: [n, k],
            tiles,
        })
    }

    /// `(n, k)`: output rows, input columns.
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// `[n, k]`.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Row `r`'s weights as f32, appended to `out` (`r < n`).
    pub fn dequantize_row(&self, r: usize, out: &mut Vec<f32>) {
        let kb = self.k / QK;
        let (rg, lane) = (r / TILE_ROWS, r % TILE_ROWS);
        for t in &self.tiles[rg * kb..(rg + 1) * kb] {
            let d = f16::from_bits(t.d[lane]).to_f32();
            let start = out.len();
            out.resize(start + QK, 0.0);
            let blk = &mut out[start..];
            for g in 0..4 {
                for j in 0..4 {
                    let byte = t.qs[g * TILE_ROWS * 4 + lane * 4 + j];
                    blk[4 * g + j] = ((byte & 0x0F) as i32 - 8) as f32 * d;
                    blk[16 + 4 * g + j] = ((byte >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
    }

    /// The whole weight as f32 `[n, k]`, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for r in 0..self.n {
            self.dequantize_row(r, &mut out);
        }
        out
    }

    /// `y [m, n] = x [m, k] · Wᵀ` (`x` row-major f32). Call only when [`available`].
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        Self::matmul_many(&[self], x, m, &mut [y]);
    }

    /// `ys[i] [m, n_i] = x [m, k] · W_iᵀ` for weights sharing one input (q/k/v, gate/up):
    /// the input is rounded once and the thread pool is woken once for all of them.
    pub fn matmul_many(ws: &[&PackedQ4_0], x: &[f32], m: usize, ys: &mut [&mut [f32]]) {
        assert!(available(), "PackedQ4_0::matmul without AVX-512 VNNI");
        assert_eq!(
            ws.len(),
            ys.len(),
            "{} weights, {} outputs",
            ws.len(),
            ys.len()
        );
        let Some(k) = ws.first().map(|w| w.k) else {
            return;
        };
        assert_eq!(x.len(), m * k, "activations: {} ≠ {m} × {k}", x.len());
        // (weight, output pointer) and the first row group of each in the shared item list.
        let mut parts = Vec::with_capacity(ws.len());
        let mut groups = 0;
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            assert_eq!(w.k, k, "weights of different widths share one input");
            assert_eq!(y.len(), m * w.n, "output: {} ≠ {m} × {}", y.len(), w.n);
            parts.push((*w, y.as_mut_ptr() as usize, groups));
            groups += w.n / TILE_ROWS;
        }
        let act = QuantAct::new(x, m, k);
        let (act, parts, kb) = (&act, &parts, k / QK);
        candle_core::utils::barrier_pool().execute_chunked(groups, |range| {
            for item in range {
                let at = parts.partition_point(|p| p.2 <= item) - 1;
                let (w, y_ptr, first) = parts[at];
                let (rg, n) = (item - first, w.n);
                let t = &w.tiles[rg * kb..(rg + 1) * kb];
                let mut r0 = 0;
                while r0 < m {
                    let rows = (m - r0).min(ROW_TILE);
                    // SAFETY: `available()` checked the CPU features; row group `rg` writes
                    // only columns `16 rg .. 16 rg + 16` of each output row, so concurrent
                    // workers write disjoint parts of the outputs, which outlive the call.
                    unsafe {
                        let out = (y_ptr as *mut f32).add(r0 * n + rg * TILE_ROWS);
                        #[cfg(target_arch = "x86_64")]
                        match rows {
                            4 => kernel::tile_rows::<4>(t, act, r0, out, n),
                            3 => kernel::tile_rows::<3>(t, act, r0, out, n),
                            2 => kernel::tile_rows::<2>(t, act, r0, out, n),
                            _ => kernel::tile_rows::<1>(t, act, r0, out, n),
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        let _ = (t, out);
                    }
                    r0 += rows;
                }
            }
        });
    }
}

/// One 32-value block rounded to 8 bits (ggml's q8_0): its bytes as words, its scale
/// `max|x| / 127` (f32; ggml then keeps it as f16, the values rounded with the f32 one) and
/// the sum of its bytes.
fn quantize_block(blk: &[f32]) -> ([i32; 8], f32, i32) {
    let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
    let scale = amax / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let mut bytes = [0u8; QK];
    let mut sum = 0i32;
    for (b, &v) in bytes.iter_mut().zip(blk) {
        let q = (v * inv).round().clamp(-127.0, 127.0) as i8;
        sum += q as i32;
        *b = q as u8;
    }
    let mut words = [0i32; 8];
    for (w, c) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    (words, scale, sum)
}

/// Activations rounded to 8 bits per 32-value block: `[m][k / 32]` blocks.
struct QuantAct {
    /// Each block's 32 signed bytes as eight little-endian words.
    qs: Vec<[i32; 8]>,
    /// Each block's scale.
    d: Vec<f32>,
    /// `8 × Σ q` of each block: the correction for the weights' `-8` offset.
    bias: Vec<i32>,
    blocks_per_row: usize,
}

impl QuantAct {
    fn new(x: &[f32], m: usize, k: usize) -> Self {
        let kb = k / QK;
        let mut act = Self {
            qs: Vec::with_capacity(m * kb),
            d: Vec::with_capacity(m * kb),
            bias: Vec::with_capacity(m * kb),
            blocks_per_row: kb,
        };
        #[cfg(target_arch = "x86_64")]
        if available() {
            for blk in x.chunks_exact(QK) {
                // SAFETY: `available()` checked AVX-512 F/BW; `blk` holds 32 values.
                let (words, scale, sum) = unsafe { kernel::quantize_block(blk) };
                act.push(words, f16::from_f32(scale).to_f32(), sum);
            }
            return act;
        }
        for blk in x.chunks_exact(QK) {
            let (words, scale, sum) = quantize_block(blk);
            act.push(words, f16::from_f32(scale).to_f32(), sum);
        }
        act
    }

    fn push(&mut self, words: [i32; 8], scale: f32, sum: i32) {
        self.qs.push(words);
        self.d.push(scale);
        self.bias.push(8 * sum);
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{QuantAct, Tile, TILE_ROWS};
    use std::arch::x86_64::*;

    /// One 32-value activation block rounded to 8 bits: its bytes as words, its f32 scale
    /// (`max|x| / 127`, before the f16 rounding) and the sum of its bytes. Rounds half away
    /// from zero, as `f32::round` (ggml's `roundf`) does.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW; `blk` holds 32 values.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_block(blk: &[f32]) -> ([i32; 8], f32, i32) {
        let v0 = _mm512_loadu_ps(blk.as_ptr());
        let v1 = _mm512_loadu_ps(blk.as_ptr().add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        let scale = amax / 127.0;
        let inv = _mm512_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
        let sign = _mm512_set1_epi32(i32::MIN);
        let half = _mm512_set1_ps(0.5);
        let round = |v: __m512| {
            let y = _mm512_mul_ps(v, inv);
            // trunc(y + copysign(0.5, y)): |y| ≤ 127, so the sum is exact but for ties.
            let s = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_and_si512(_mm512_castps_si512(y), sign),
                _mm512_castps_si512(half),
            ));
            _mm512_cvttps_epi32(_mm512_add_ps(y, s))
        };
        let (q0, q1) = (round(v0), round(v1));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        let mut words = [0i32; 8];
        _mm_storeu_si128(words.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(
            words.as_mut_ptr().add(4) as *mut __m128i,
            _mm512_cvtepi32_epi8(q1),
        );
        (words, scale, sum)
    }

    /// Sixteen outputs of activation rows `r0 .. r0 + R` against one tile column.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `out + r * n .. + 16` is writable for `r < R`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_rows<const R: usize>(
        tiles: &[Tile],
        act: &QuantAct,
        r0: usize,
        out: *mut f32,
        n: usize,
    ) {
        let mask = _mm512_set1_epi8(0x0F);
        let kb = act.blocks_per_row;
        let mut acc = [_mm512_setzero_ps(); R];
        for (b, t) in tiles.iter().enumerate() {
            // Two chains per row (low and high nibbles) halve the dpbusd dependency chain.
            let mut lo_sum = [_mm512_setzero_si512(); R];
            let mut hi_sum = [_mm512_setzero_si512(); R];
            for g in 0..4 {
                let w = _mm512_loadu_si512(t.qs.as_ptr().add(g * TILE_ROWS * 4) as *const _);
                let lo = _mm512_and_si512(w, mask);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(w), mask);
                for r in 0..R {
                    let a = act.qs.get_unchecked((r0 + r) * kb + b);
                    lo_sum[r] = _mm512_dpbusd_epi32(lo_sum[r], lo, _mm512_set1_epi32(a[g]));
                    hi_sum[r] = _mm512_dpbusd_epi32(hi_sum[r], hi, _mm512_set1_epi32(a[4 + g]));
                }
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(t.d.as_ptr() as *const _));
            for r in 0..R {
                let i = (r0 + r) * kb + b;
                let isum = _mm512_sub_epi32(
                    _mm512_add_epi32(lo_sum[r], hi_sum[r]),
                    _mm512_set1_epi32(*act.bias.get_unchecked(i)),
                );
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*act.d.get_unchecked(i)));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[r]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(r * n), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic ggml q4_0 bytes for `[n, k]` (scales in 0.01..0.05, all nibbles).
    fn q4_bytes(n: usize, k: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut out = Vec::new();
        for _ in 0..n * k / QK {
            let d = f16::from_f32(0.01 + (next() % 1000) as f32 * 4e-5);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
            for _ in 0..16 {
                out.push((next() & 0xFF) as u8);
            }
        }
        out
    }

    /// The naive reference: ggml's q4_0 dequantisation, then an f64 dot per output.
    fn reference(bytes: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
        let mut w = vec![0f32; n * k];
        for (bi, blk) in bytes.chunks_exact(BLOCK_BYTES).enumerate() {
            let d = f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
            for i in 0..16 {
                w[bi * QK + i] = ((blk[2 + i] & 0x0F) as i32 - 8) as f32 * d;
                w[bi * QK + 16 + i] = ((blk[2 + i] >> 4) as i32 - 8) as f32 * d;
            }
        }
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let s: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                    .sum();
                y[r * n + c] = s as f32;
            }
        }
        y
    }

    #[test]
    fn dequantize_matches_ggml() {
        let (n, k) = (32, 96);
        let bytes = q4_bytes(n, k, 1);
        let p = PackedQ4_0::from_ggml(&bytes, n, k).unwrap();
        let eye: Vec<f32> = (0..k * k)
            .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
            .collect();
        // W = reference(I) transposed: the reference applied to the identity gives Wᵀ.
        let wt = reference(&bytes, n, k, &eye, k);
        let w = p.dequantize();
        for r in 0..n {
            for c in 0..k {
                assert_eq!(w[r * k + c], wt[c * n + r], "row {r} col {c}");
            }
        }
    }

    #[test]
    fn shapes_that_do_not_tile_are_refused() {
        assert!(PackedQ4_0::from_ggml(&q4_bytes(8, 32, 0), 8, 32).is_none());
        assert!(PackedQ4_0::from_ggml(&q4_bytes(16, 32, 0), 16, 64).is_none());
        assert!(PackedQ4_0::from_ggml(&[], 0, 32).is_none());
    }

    #[test]
    fn matmul_matches_the_naive_reference() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        // Rows 1..=9 cross the 4-row activation tile; n crosses several 16-row tiles;
        // k = 896 and 4864 are Qwen2.5-0.5B's widths (not multiples of 256).
        for &(m, n, k) in &[(1, 16, 32), (1, 48, 896), (3, 32, 4864), (9, 64, 160)] {
            let bytes = q4_bytes(n, k, (m * n + k) as u64);
            let p = PackedQ4_0::from_ggml(&bytes, n, k).unwrap();
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919 % 2003) as f32 / 1001.5 - 1.0) * 1.5)
                .collect();
            let mut y = vec![0f32; m * n];
            p.matmul(&x, m, &mut y);
            let want = reference(&bytes, n, k, &x, m);
            // Activations are rounded to 8 bits per block: the error is that rounding's
            // (≤ half a step of max|x| / 127 per value), summed over k.
            let wmax = 8.0 * 0.05;
            let tol = k as f32 * wmax * (1.5 / 127.0) * 0.5 / (k as f32).sqrt() * 4.0;
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= tol,
                    "m {m} n {n} k {k} at {i}: {a} vs {b} (tol {tol})"
                );
            }
        }
    }

    /// Same rounding of the activations as candle's q4_0 × q8_0 kernel: the outputs agree
    /// to float summation order, far tighter than the rounding itself.
    #[test]
    fn matmul_matches_candles_q4_0_kernel() {
        use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
        use candle_core::{Device, Module, Tensor};
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        for &(m, n, k) in &[(1, 64, 896), (2, 32, 4864), (5, 48, 96)] {
            let bytes = q4_bytes(n, k, 7 + k as u64);
            let p = PackedQ4_0::from_ggml(&bytes, n, k).unwrap();
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 104729 % 4001) as f32 / 2000.0 - 1.0) * 3.0)
                .collect();
            let mut y = vec![0f32; m * n];
            p.matmul(&x, m, &mut y);
            let q = qtensor_from_ggml(GgmlDType::Q4_0, &bytes, vec![n, k], &Device::Cpu).unwrap();
            let xt = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
            let want = QMatMul::from_qtensor(q).unwrap().forward(&xt).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "m {m} n {n} k {k} at {i}: {a} vs candle {b}"
                );
            }
        }
    }

    #[test]
    fn simd_rounding_of_activations_equals_the_scalar_one() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let mut seed = 11u64;
        for case in 0..2000 {
            let blk: Vec<f32> = (0..QK)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let u = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    match case % 3 {
                        0 => u * 10.0,
                        1 => u * 1e-3,
                        _ if i == 5 => 0.0,
                        _ => u * (i as f32 + 1.0),
                    }
                })
                .collect();
            // SAFETY: available() checked the features; 32 values.
            let simd = unsafe { kernel::quantize_block(&blk) };
            assert_eq!(simd, quantize_block(&blk), "block {case}: {blk:?}");
        }
        // All zeros: scale 0, bytes 0.
        assert_eq!(quantize_block(&[0.0; QK]), ([0; 8], 0.0, 0));
    }

    #[test]
    fn matmul_many_equals_one_matmul_per_weight() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let (m, k) = (2, 96);
        let ws: Vec<PackedQ4_0> = [64, 16, 32]
            .iter()
            .map(|&n| PackedQ4_0::from_ggml(&q4_bytes(n, k, n as u64), n, k).unwrap())
            .collect();
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut ys: Vec<Vec<f32>> = ws.iter().map(|w| vec![0.0; m * w.n]).collect();
        let refs: Vec<&PackedQ4_0> = ws.iter().collect();
        let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
        PackedQ4_0::matmul_many(&refs, &x, m, &mut outs);
        for (w, y) in ws.iter().zip(&ys) {
            let mut one = vec![0.0; m * w.n];
            w.matmul(&x, m, &mut one);
            assert_eq!(&one, y);
        }
    }
}
