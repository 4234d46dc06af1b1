//! Shapes and options of the fused attention, shared by the CPU reference and the CUDA launch,
//! with the bounds validation that makes every kernel access provably in range.

use crate::error::{shape, Result};

/// Element strides of a 4-d attention tensor (b, h, row, d); `d` is contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strides {
    /// Stride between batch entries (windows).
    pub batch: usize,
    /// Stride between heads.
    pub head: usize,
    /// Stride between rows (slots / queries).
    pub row: usize,
}

impl Strides {
    /// Contiguous [batch, heads, seq, head_dim].
    pub fn contiguous(heads: usize, seq: usize, head_dim: usize) -> Self {
        Strides {
            batch: heads * seq * head_dim,
            head: seq * head_dim,
            row: head_dim,
        }
    }
    /// Rows of a projection output [batch, seq, row_width] whose columns
    /// `col0 .. col0 + heads*head_dim` hold this tensor (fused QKV buffers); the caller offsets
    /// the buffer by `col0` through [`AttnParams`]' offsets.
    pub fn packed(seq: usize, head_dim: usize, row_width: usize) -> Self {
        Strides {
            batch: seq * row_width,
            head: head_dim,
            row: row_width,
        }
    }
    /// Largest element index touched + 1 for the given extents, plus a base offset.
    fn extent(&self, base: usize, batch: usize, heads: usize, rows: usize, hd: usize) -> usize {
        if batch == 0 || heads == 0 || rows == 0 || hd == 0 {
            return 0;
        }
        base + (batch - 1) * self.batch + (heads - 1) * self.head + (rows - 1) * self.row + hd
    }
}

/// Block-causal direction over frames (frame = slot / slots_per_frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causal {
    /// No causal mask (query cross-attention, query self-attention).
    None,
    /// A query in frame i sees keys in frames j <= i (streaming default).
    Past,
    /// As released by FAVOR: frame i sees frames j >= i.
    Future,
}

impl Causal {
    pub(crate) fn code(self) -> i32 {
        match self {
            Causal::None => 0,
            Causal::Past => 1,
            Causal::Future => 2,
        }
    }
}

/// Everything the fused attention needs besides its buffers.
#[derive(Debug, Clone, Copy)]
pub struct AttnParams {
    /// Windows (streams are more windows).
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Query rows computed (a frame's rows in incremental mode).
    pub q_len: usize,
    /// Key/value rows (the cache length in incremental mode).
    pub kv_len: usize,
    /// Head dimension (the CUDA kernel takes <= 128, multiple of 4).
    pub head_dim: usize,
    /// Causal direction.
    pub causal: Causal,
    /// Slots per frame (frame of slot j = j / slots_per_frame); >= 1.
    pub slots_per_frame: usize,
    /// Position of query row 0 in the key sequence (incremental mode: frame * spf).
    pub q_offset: usize,
    /// Softmax scale, usually 1/sqrt(head_dim).
    pub scale: f32,
    /// Strides of Q, K, V and O.
    pub q: Strides,
    /// Strides of K.
    pub k: Strides,
    /// Strides of V.
    pub v: Strides,
    /// Strides of O.
    pub o: Strides,
    /// Element offsets of Q, K, V, O inside their buffers (fused QKV buffers).
    pub offsets: [usize; 4],
    /// Frames per window in the key mask ([batch, key_frames] u8) when one is given.
    pub key_frames: usize,
}

/// Optional per-channel biases added to Q, K and V as they are loaded ([heads*head_dim] f32).
#[derive(Debug)]
pub struct AttnBias<'a, B: ?Sized> {
    /// Bias of Q.
    pub q: &'a B,
    /// Bias of K.
    pub k: &'a B,
    /// Bias of V.
    pub v: &'a B,
}

impl AttnParams {
    /// Contiguous [batch, heads, seq, head_dim] Q/K/V/O with the default scale.
    pub fn contiguous(
        batch: usize,
        heads: usize,
        q_len: usize,
        kv_len: usize,
        head_dim: usize,
        causal: Causal,
        slots_per_frame: usize,
    ) -> Self {
        let qs = Strides::contiguous(heads, q_len, head_dim);
        let ks = Strides::contiguous(heads, kv_len, head_dim);
        AttnParams {
            batch,
            heads,
            q_len,
            kv_len,
            head_dim,
            causal,
            slots_per_frame,
            q_offset: 0,
            scale: 1.0 / (head_dim as f32).sqrt(),
            q: qs,
            k: ks,
            v: ks,
            o: qs,
            offsets: [0; 4],
            key_frames: kv_len.div_ceil(slots_per_frame.max(1)),
        }
    }

    /// Checks sizes and buffer lengths; returns the error naming the first culprit.
    pub fn validate(
        &self,
        q_len: usize,
        k_len: usize,
        v_len: usize,
        o_len: usize,
        bias_len: Option<usize>,
        mask_len: Option<usize>,
    ) -> Result<()> {
        if self.slots_per_frame == 0 {
            return Err(shape("slots_per_frame", "must be >= 1"));
        }
        if self.head_dim == 0 {
            return Err(shape("head_dim", "must be >= 1"));
        }
        let (b, h, d) = (self.batch, self.heads, self.head_dim);
        let checks = [
            (
                "q",
                self.q.extent(self.offsets[0], b, h, self.q_len, d),
                q_len,
            ),
            (
                "k",
                self.k.extent(self.offsets[1], b, h, self.kv_len, d),
                k_len,
            ),
            (
                "v",
                self.v.extent(self.offsets[2], b, h, self.kv_len, d),
                v_len,
            ),
            (
                "o",
                self.o.extent(self.offsets[3], b, h, self.q_len, d),
                o_len,
            ),
        ];
        for (name, need, have) in checks {
            if need > have {
                return Err(shape(
                    name,
                    format!("needs {need} elements for batch {b}, heads {h}, head_dim {d}, but has {have}"),
                ));
            }
        }
        if let Some(bl) = bias_len {
            if bl < h * d {
                return Err(shape(
                    "qkv_bias",
                    format!("needs {} elements, has {bl}", h * d),
                ));
            }
        }
        if let Some(ml) = mask_len {
            let need_frames = self.kv_len.div_ceil(self.slots_per_frame);
            if self.key_frames < need_frames {
                return Err(shape(
                    "key_mask",
                    format!(
                        "key_frames {} < {need_frames} frames of keys",
                        self.key_frames
                    ),
                ));
            }
            if ml < b * self.key_frames {
                return Err(shape(
                    "key_mask",
                    format!(
                        "needs {} entries [batch, key_frames], has {ml}",
                        b * self.key_frames
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether query row `i` (0-based within q_len) may see key `j`.
    pub fn visible(&self, i: usize, j: usize) -> bool {
        let qf = (self.q_offset + i) / self.slots_per_frame;
        let kf = j / self.slots_per_frame;
        match self.causal {
            Causal::None => true,
            Causal::Past => kf <= qf,
            Causal::Future => kf >= qf,
        }
    }
}

impl<B: ?Sized> Clone for AttnBias<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: ?Sized> Copy for AttnBias<'_, B> {}
