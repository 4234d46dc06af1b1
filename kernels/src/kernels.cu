// Fused Q-Former kernels, compiled at run time by NVRTC (see src/cuda/mod.rs).
// The storage type is chosen by a macro so that one source serves f32, f16 and bf16:
//   -DSTORE_F32 | -DSTORE_F16 | -DSTORE_BF16.  Arithmetic is always f32.
// No CUDA headers are included: NVRTC builds this without a toolkit on the machine.
// Every store is guarded by an explicit bounds check against the sizes passed in.

#if defined(STORE_F32)
typedef float T;
__device__ __forceinline__ float ld(T x) { return x; }
__device__ __forceinline__ T st(float x) { return x; }
#elif defined(STORE_F16)
typedef unsigned short T;
__device__ __forceinline__ float ld(T x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
}
__device__ __forceinline__ T st(float x) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}
#elif defined(STORE_BF16)
typedef unsigned short T;
__device__ __forceinline__ float ld(T x) { return __uint_as_float(((unsigned int)x) << 16); }
__device__ __forceinline__ T st(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (T)((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (T)(u >> 16);
}
#else
#error "define STORE_F32, STORE_F16 or STORE_BF16"
#endif

#define NEG_INF (__int_as_float(0xff800000))

// ---------------------------------------------------------------------------------------------
// Fused attention with online softmax (one pass over K/V, scores never stored).
// Layouts are strided: element (b, h, row, d) of X sits at X[b*sb + h*sh + row*sr + d].
// Mask, computed from indices, never materialised:
//   causal 0: none; 1: past-only (key frame <= query frame); 2: future (key frame >= query frame)
//   query frame = (q_offset + i) / spf, key frame = j / spf
//   key_mask (optional, has_mask != 0): u8 [batch, n_kf]; key j is dropped when
//   key_mask[b*n_kf + j/spf] == 0.
// A query row whose keys are all masked gets zeros.
// Block: 128 threads = 4 warps, each warp owns ROWS_PER_WARP query rows of one (batch, head).
// Requires head_dim <= 128 and head_dim % 4 == 0 (checked on the host).
// ---------------------------------------------------------------------------------------------
#define ATT_WARPS 4
#define ROWS_PER_WARP 4
#define ATT_ROWS (ATT_WARPS * ROWS_PER_WARP)
#define KT 32
#define HD_MAX 128

struct Strides { long long b, h, r; };

extern "C" __global__ void __launch_bounds__(128) attention_fwd(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
    long long qsb, long long qsh, long long qsr,
    long long ksb, long long ksh, long long ksr,
    long long vsb, long long vsh, long long vsr,
    long long osb, long long osh, long long osr,
    int batch, int heads, int q_len, int kv_len, int hd,
    int causal, int spf, int q_offset, float scale,
    const float* __restrict__ q_bias, const float* __restrict__ k_bias,
    const float* __restrict__ v_bias, int has_bias,
    const unsigned char* __restrict__ key_mask, int has_mask, int n_kf,
    long long o_len)
{
    __shared__ __align__(16) float sK[KT][HD_MAX + 4];
    __shared__ __align__(16) float sV[KT][HD_MAX];
    __shared__ __align__(16) float sQ[ATT_ROWS][HD_MAX];

    const int b = blockIdx.z, h = blockIdx.y;
    if (b >= batch || h >= heads) return;
    const int q0 = blockIdx.x * ATT_ROWS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

    // Q tile (scaled, biased) into shared memory.
    for (int idx = tid; idx < ATT_ROWS * hd; idx += blockDim.x) {
        int r = idx / hd, d = idx - r * hd;
        int qi = q0 + r;
        float val = 0.f;
        if (qi < q_len) {
            val = ld(q[b * qsb + h * qsh + (long long)qi * qsr + d]);
            if (has_bias) val += q_bias[h * hd + d];
        }
        sQ[r][d] = val * scale;
    }

    float m[ROWS_PER_WARP], l[ROWS_PER_WARP], acc[ROWS_PER_WARP][4];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        m[r] = NEG_INF; l[r] = 0.f;
#pragma unroll
        for (int t = 0; t < 4; t++) acc[r][t] = 0.f;
    }

    const int row_base = q0 + warp * ROWS_PER_WARP;
    // Range of query frames covered by this block, to skip whole key tiles.
    const int q_last = min(q0 + ATT_ROWS, q_len) - 1;
    const int qf_min = (q_offset + q0) / spf;
    const int qf_max = (q_offset + q_last) / spf;

    for (int k0 = 0; k0 < kv_len; k0 += KT) {
        const int k_last = min(k0 + KT, kv_len) - 1;
        if (causal == 1 && k0 / spf > qf_max) break;        // every later key is in the future
        if (causal == 2 && k_last / spf < qf_min) continue;  // every key of this tile is in the past
        __syncthreads();
        for (int idx = tid; idx < KT * hd; idx += blockDim.x) {
            int j = idx / hd, d = idx - j * hd;
            int kj = k0 + j;
            float kv = 0.f, vv = 0.f;
            if (kj < kv_len) {
                kv = ld(k[b * ksb + h * ksh + (long long)kj * ksr + d]);
                vv = ld(v[b * vsb + h * vsh + (long long)kj * vsr + d]);
                if (has_bias) { kv += k_bias[h * hd + d]; vv += v_bias[h * hd + d]; }
            }
            sK[j][d] = kv;
            sV[j][d] = vv;
        }
        __syncthreads();

        // Lane = key within the tile.
        const int kj = k0 + lane;
        bool key_ok = kj < kv_len;
        const int kf = kj / spf;
        if (key_ok && has_mask) key_ok = key_mask[(long long)b * n_kf + kf] != 0;
        float s[ROWS_PER_WARP];
#pragma unroll
        for (int r = 0; r < ROWS_PER_WARP; r++) s[r] = 0.f;
        for (int d = 0; d < hd; d += 4) {
            float4 kk = *reinterpret_cast<const float4*>(&sK[lane][d]);
#pragma unroll
            for (int r = 0; r < ROWS_PER_WARP; r++) {
                float4 qq = *reinterpret_cast<const float4*>(&sQ[warp * ROWS_PER_WARP + r][d]);
                s[r] += qq.x * kk.x + qq.y * kk.y + qq.z * kk.z + qq.w * kk.w;
            }
        }
        float p[ROWS_PER_WARP];
#pragma unroll
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            const int qi = row_base + r;
            const int qf = (q_offset + qi) / spf;
            bool ok = key_ok && qi < q_len;
            if (causal == 1) ok = ok && kf <= qf;
            if (causal == 2) ok = ok && kf >= qf;
            float sc = ok ? s[r] : NEG_INF;
            float mt = sc;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
            if (mt == NEG_INF) { p[r] = 0.f; continue; }  // nothing visible in this tile
            const float m_new = fmaxf(m[r], mt);
            const float corr = __expf(m[r] - m_new);  // m = -inf gives 0
            const float pr = ok ? __expf(sc - m_new) : 0.f;
            float ps = pr;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
            l[r] = l[r] * corr + ps;
            m[r] = m_new;
#pragma unroll
            for (int t = 0; t < 4; t++) acc[r][t] *= corr;
            p[r] = pr;
        }
        // acc[r][t] += sum_j p_j * V[j][lane + 32 t]
        for (int j = 0; j < KT; j++) {
            float vj[4];
#pragma unroll
            for (int t = 0; t < 4; t++) {
                int d = lane + 32 * t;
                vj[t] = d < hd ? sV[j][d] : 0.f;
            }
#pragma unroll
            for (int r = 0; r < ROWS_PER_WARP; r++) {
                float pj = __shfl_sync(0xffffffffu, p[r], j);
#pragma unroll
                for (int t = 0; t < 4; t++) acc[r][t] += pj * vj[t];
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const int qi = row_base + r;
        if (qi >= q_len) continue;
        const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
        for (int t = 0; t < 4; t++) {
            int d = lane + 32 * t;
            if (d >= hd) continue;
            long long off = b * osb + h * osh + (long long)qi * osr + d;
            if (off >= 0 && off < o_len) o[off] = st(acc[r][t] * inv);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// out[row] = LayerNorm(x[row] + bias + residual[row]) * gamma + beta   (BERT: eps 1e-12)
// One block (256 threads) per row; the row is held in shared memory in f32. dim <= 8192.
// ---------------------------------------------------------------------------------------------
#define LN_MAX 8192
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = 0.f;
    const int nw = (blockDim.x + 31) >> 5;
    for (int w = 0; w < nw; w++) t += red[w];
    return t;
}

extern "C" __global__ void __launch_bounds__(256) bias_residual_layernorm(
    const T* __restrict__ x, const float* __restrict__ bias, int has_bias,
    const T* __restrict__ residual, int has_residual,
    const float* __restrict__ gamma, const float* __restrict__ beta,
    T* __restrict__ out, int rows, int dim, float eps)
{
    __shared__ float row[LN_MAX];
    __shared__ float red[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long base = (long long)r * dim;
    float s = 0.f;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float y = ld(x[base + d]);
        if (has_bias) y += bias[d];
        if (has_residual) y += ld(residual[base + d]);
        row[d] = y;
        s += y;
    }
    const float mean = block_sum(s, red) / (float)dim;
    float s2 = 0.f;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float c = row[d] - mean;
        s2 += c * c;
    }
    const float var = block_sum(s2, red) / (float)dim;
    const float rstd = rsqrtf(var + eps);
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        out[base + d] = st((row[d] - mean) * rstd * gamma[d] + beta[d]);
    }
}

// ---------------------------------------------------------------------------------------------
// out[i] = gelu(x[i] + bias[i % dim]), GELU in erf form as BERT: 0.5 x (1 + erf(x / sqrt 2)).
// act 0: bias only, 1: bias + GELU.
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void bias_act(const T* __restrict__ x, const float* __restrict__ bias,
                                    T* __restrict__ out, long long n, int dim, int act)
{
    // One block per row: no per-element division.
    const long long rows = n / dim;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * dim;
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            float y = ld(x[base + c]) + bias[c];
            if (act == 1) y = 0.5f * y * (1.f + erff(y * 0.70710678118654752f));
            out[base + c] = st(y);
        }
    }
}

// Vectorised variants (16-byte accesses), used when dim % 8 == 0 (and dim <= 2048 for the
// LayerNorm, whose row lives in registers: one warp per row, no block barriers).
extern "C" __global__ void __launch_bounds__(256) layernorm_warp(
    const T* __restrict__ x, const float* __restrict__ bias, int has_bias,
    const T* __restrict__ residual, int has_residual,
    const float* __restrict__ gamma, const float* __restrict__ beta,
    T* __restrict__ out, int rows, int dim, float eps)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long r = (long long)blockIdx.x * (blockDim.x >> 5) + warp;
    if (r >= rows) return;
    const long long base = r * dim;
    const int EPV = 16 / sizeof(T);  // elements per 16-byte vector
    float y[64];
    float s = 0.f;
#pragma unroll
    for (int c = 0; c < 64 / (16 / sizeof(T)); c++) {
        const int col = (c * 32 + lane) * EPV;
        if (col < dim) {
            uint4 xv = *reinterpret_cast<const uint4*>(x + base + col);
            uint4 rv = make_uint4(0u, 0u, 0u, 0u);
            if (has_residual) rv = *reinterpret_cast<const uint4*>(residual + base + col);
            const T* xe = reinterpret_cast<const T*>(&xv);
            const T* re = reinterpret_cast<const T*>(&rv);
#pragma unroll
            for (int i = 0; i < EPV; i++) {
                float t = ld(xe[i]);
                if (has_bias) t += bias[col + i];
                if (has_residual) t += ld(re[i]);
                y[c * EPV + i] = t;
                s += t;
            }
        }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    const float mean = s / (float)dim;
    float s2 = 0.f;
#pragma unroll
    for (int c = 0; c < 64 / (16 / sizeof(T)); c++) {
        const int col = (c * 32 + lane) * EPV;
        if (col < dim) {
#pragma unroll
            for (int i = 0; i < EPV; i++) { const float d = y[c * EPV + i] - mean; s2 += d * d; }
        }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s2 += __shfl_xor_sync(0xffffffffu, s2, off);
    const float rstd = rsqrtf(s2 / (float)dim + eps);
#pragma unroll
    for (int c = 0; c < 64 / (16 / sizeof(T)); c++) {
        const int col = (c * 32 + lane) * EPV;
        if (col < dim) {
            uint4 ov;
            T* oe = reinterpret_cast<T*>(&ov);
#pragma unroll
            for (int i = 0; i < EPV; i++)
                oe[i] = st((y[c * EPV + i] - mean) * rstd * gamma[col + i] + beta[col + i]);
            *reinterpret_cast<uint4*>(out + base + col) = ov;
        }
    }
}

// EPV consecutive f32 parameters (bias, gamma, beta) into registers: float4 loads when the
// pointer is 16-byte aligned (always for whole allocations), scalar loads otherwise.
template <int EPV>
__device__ __forceinline__ void ld_params(const float* __restrict__ p, int c, float* v) {
    if ((reinterpret_cast<unsigned long long>(p) & 15ull) == 0ull) {
#pragma unroll
        for (int i = 0; i < EPV; i += 4) {
            const float4 t = *reinterpret_cast<const float4*>(p + c + i);
            v[i] = t.x; v[i + 1] = t.y; v[i + 2] = t.z; v[i + 3] = t.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < EPV; i++) v[i] = p[c + i];
    }
}

// LayerNorm variant: one block per row, one 16-byte vector per thread (blockDim*EPV >= dim).
// bias, gamma and beta are loaded (vectorised) together with x and the residual, before the
// first reduction, so their latency overlaps the row's loads instead of following the
// second barrier.
extern "C" __global__ void __launch_bounds__(1024) layernorm_vec_block(
    const T* __restrict__ x, const float* __restrict__ bias, int has_bias,
    const T* __restrict__ residual, int has_residual,
    const float* __restrict__ gamma, const float* __restrict__ beta,
    T* __restrict__ out, int rows, int dim, float eps)
{
    __shared__ float red[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long base = (long long)r * dim;
    constexpr int EPV = 16 / sizeof(T);
    const int c = threadIdx.x * EPV;
    float y[EPV], g[EPV], bt[EPV];
    float s = 0.f;
    if (c < dim) {
        const uint4 xv = *reinterpret_cast<const uint4*>(x + base + c);
        uint4 rv = make_uint4(0u, 0u, 0u, 0u);
        if (has_residual) rv = *reinterpret_cast<const uint4*>(residual + base + c);
        float bs[EPV];
        if (has_bias) ld_params<EPV>(bias, c, bs);
        ld_params<EPV>(gamma, c, g);
        ld_params<EPV>(beta, c, bt);
        const T* xe = reinterpret_cast<const T*>(&xv);
        const T* re = reinterpret_cast<const T*>(&rv);
#pragma unroll
        for (int i = 0; i < EPV; i++) {
            float t = ld(xe[i]);
            if (has_bias) t += bs[i];
            if (has_residual) t += ld(re[i]);
            y[i] = t;
            s += t;
        }
    }
    const float mean = block_sum(s, red) / (float)dim;
    float s2 = 0.f;
    if (c < dim) {
#pragma unroll
        for (int i = 0; i < EPV; i++) { const float d = y[i] - mean; s2 += d * d; }
    }
    const float rstd = rsqrtf(block_sum(s2, red) / (float)dim + eps);
    if (c < dim) {
        uint4 ov;
        T* oe = reinterpret_cast<T*>(&ov);
#pragma unroll
        for (int i = 0; i < EPV; i++) oe[i] = st((y[i] - mean) * rstd * g[i] + bt[i]);
        *reinterpret_cast<uint4*>(out + base + c) = ov;
    }
}

extern "C" __global__ void __launch_bounds__(128) bias_act_vec(
    const T* __restrict__ x, const float* __restrict__ bias, T* __restrict__ out, long long n, int dim, int act)
{
    const int EPV = 16 / sizeof(T);
    const long long rows = n / dim;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * dim;
        for (int c = threadIdx.x * EPV; c < dim; c += blockDim.x * EPV) {
            uint4 xv = *reinterpret_cast<const uint4*>(x + base + c);
            uint4 ov;
            const T* xe = reinterpret_cast<const T*>(&xv);
            T* oe = reinterpret_cast<T*>(&ov);
#pragma unroll
            for (int i = 0; i < EPV; i++) {
                float y = ld(xe[i]) + bias[c + i];
                if (act == 1) y = 0.5f * y * (1.f + erff(y * 0.70710678118654752f));
                oe[i] = st(y);
            }
            *reinterpret_cast<uint4*>(out + base + c) = ov;
        }
    }
}

// Fill with NaN (poisoning outputs before checks).
extern "C" __global__ void fill_nan(T* __restrict__ out, long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = st(__int_as_float(0x7fc00000));
}

// Broadcast a [rows_src, dim] block to every window: out[w, r, :] = src[r, :].
extern "C" __global__ void broadcast_rows(const T* __restrict__ src, T* __restrict__ out,
                                          long long per_window, long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = src[i % per_window];
}

// ---------------------------------------------------------------------------------------------
// Tensor-core attention (f16/bf16 storage, f32 accumulation): same contract as attention_fwd,
// FlashAttention-2 style with mma.sync m16n8k16. Block: 4 warps x 16 query rows = 64 rows of
// one (batch, head); key tiles of 32 staged in shared memory (bias added on the way in).
// Host guarantees: head_dim == HD (64 or 128), every stride/offset a multiple of 8 elements.
// ---------------------------------------------------------------------------------------------
#if !defined(STORE_F32)
#define MQ 64
#define MK 32
#if defined(STORE_BF16)
#define MMA_TYPE "bf16"
__device__ __forceinline__ unsigned int pack2(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
#else
#define MMA_TYPE "f16"
__device__ __forceinline__ unsigned int pack2(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
#endif

__device__ __forceinline__ void mma16816(float* c, const unsigned int* a, unsigned int b0, unsigned int b1) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_TYPE "." MMA_TYPE ".f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Loads rows [row0, row0+nrows) of one (b, h) into smem [nrows][HD+8], adding bias, zero-filling
// rows >= len. 16-byte global loads (8 elements).
template <int HD>
__device__ __forceinline__ void load_tile(T* dst, const T* __restrict__ src, long long base, long long rs,
                                          int row0, int nrows, int len, const float* __restrict__ bias,
                                          int has_bias, int h)
{
    const int chunks = HD / 8;
    for (int idx = threadIdx.x; idx < nrows * chunks; idx += blockDim.x) {
        const int r = idx / chunks, c = (idx - r * chunks) * 8;
        const int row = row0 + r;
        uint4 raw = make_uint4(0u, 0u, 0u, 0u);
        if (row < len) {
            raw = *reinterpret_cast<const uint4*>(src + base + (long long)row * rs + c);
            if (has_bias) {
                T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
                for (int i = 0; i < 8; i++) e[i] = st(ld(e[i]) + bias[h * HD + c + i]);
            }
        }
        *reinterpret_cast<uint4*>(dst + r * (HD + 8) + c) = raw;
    }
}

// Async 16-byte copy global -> shared; src_bytes 0 zero-fills (rows past the end).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
#if __CUDA_ARCH__ >= 800
    unsigned int d = (unsigned int)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_bytes));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
#endif
}
__device__ __forceinline__ void ldsm_x4(unsigned int* r, const void* p) {
#if __CUDA_ARCH__ >= 800
    unsigned int a = (unsigned int)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}
__device__ __forceinline__ void ldsm_x4_t(unsigned int* r, const void* p) {
#if __CUDA_ARCH__ >= 800
    unsigned int a = (unsigned int)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}

// K/V rows [row0, row0+MK) of one (b, h) into shared memory without conversion (cp.async).
template <int HD>
__device__ __forceinline__ void issue_kv(T* dK, T* dV, const T* __restrict__ k, const T* __restrict__ v,
                                         long long kbase, long long ksr, long long vbase, long long vsr,
                                         int row0, int len)
{
    const int chunks = HD / 8;
    for (int idx = threadIdx.x; idx < MK * chunks; idx += blockDim.x) {
        const int r = idx / chunks, c = (idx - r * chunks) * 8;
        const int row = row0 + r;
        const bool in = row < len;
        const long long rr = in ? row : 0;
        cp_async16(dK + r * (HD + 8) + c, k + kbase + rr * ksr + c, in ? 16 : 0);
        cp_async16(dV + r * (HD + 8) + c, v + vbase + rr * vsr + c, in ? 16 : 0);
    }
}

// K's bias shifts every score of a row by the same q.bk, which softmax cancels; V's bias adds
// exactly bv to every row that sees at least one key (weights sum to 1). So K/V stream into
// shared memory untouched (cp.async, double-buffered) and bv is added at the output.
template <int HD>
__device__ __forceinline__ void attention_mma_body(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
    long long qsb, long long qsh, long long qsr, long long ksb, long long ksh, long long ksr,
    long long vsb, long long vsh, long long vsr, long long osb, long long osh, long long osr,
    int batch, int heads, int q_len, int kv_len, int causal, int spf, int q_offset, float scale,
    const float* __restrict__ q_bias, const float* __restrict__ k_bias, const float* __restrict__ v_bias,
    int has_bias, const unsigned char* __restrict__ key_mask, int has_mask, int n_kf, long long o_len)
{
    __shared__ __align__(16) T sQ[MQ * (HD + 8)];
    __shared__ __align__(16) T sK[2][MK * (HD + 8)];
    __shared__ __align__(16) T sV[2][MK * (HD + 8)];
    __shared__ int sKf[2][MK];  // key frame, or -1 when the key is padding / masked out
    const int b = blockIdx.z, h = blockIdx.y;
    if (b >= batch || h >= heads) return;
    const int q0 = blockIdx.x * MQ;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tig = lane & 3;
    const int LD = HD + 8;
    // Fill sKf[buf] for the tile starting at key k0 (threads 0..MK-1; visible after a barrier).
    auto key_info = [&](int buf, int k0) {
        if (threadIdx.x < MK) {
            const int kj = k0 + threadIdx.x;
            int kf = kj / spf;
            if (kj >= kv_len) kf = -1;
            else if (has_mask && key_mask[(long long)b * n_kf + kf] == 0) kf = -1;
            sKf[buf][threadIdx.x] = kf;
        }
    };
    const long long kbase = b * ksb + h * ksh, vbase = b * vsb + h * vsh;

    const int q_last = min(q0 + MQ, q_len) - 1;
    const int qf_min = (q_offset + q0) / spf, qf_max = (q_offset + q_last) / spf;
    // Key tiles this block needs: [t_begin, t_end).
    int t_begin = 0, t_end = (kv_len + MK - 1) / MK;
    if (causal == 1) t_end = min(t_end, ((qf_max + 1) * spf + MK - 1) / MK);
    if (causal == 2) t_begin = min(t_end, (qf_min * spf) / MK);

    if (t_begin < t_end) {
        issue_kv<HD>(sK[0], sV[0], k, v, kbase, ksr, vbase, vsr, t_begin * MK, kv_len);
        key_info(0, t_begin * MK);
    }
    cp_async_commit();
    load_tile<HD>(sQ, q, b * qsb + h * qsh, qsr, q0, MQ, q_len, q_bias, has_bias, h);
    __syncthreads();
    unsigned int qa[HD / 16][4];
    {
        const unsigned int* s32 = reinterpret_cast<const unsigned int*>(sQ);
        const int r0 = warp * 16 + g;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            const int c = kk * 16 + tig * 2;
            qa[kk][0] = s32[(r0 * LD + c) >> 1];
            qa[kk][1] = s32[((r0 + 8) * LD + c) >> 1];
            qa[kk][2] = s32[(r0 * LD + c + 8) >> 1];
            qa[kk][3] = s32[((r0 + 8) * LD + c + 8) >> 1];
        }
    }
    const float sl2 = scale * 1.4426950408889634f;  // scores in log2 units
    float oacc[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) { oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.f; }
    float mrow[2] = {NEG_INF, NEG_INF}, lrow[2] = {0.f, 0.f};
    const int qi0 = q0 + warp * 16 + g;  // rows qi0 and qi0 + 8
    const int qf[2] = {(q_offset + qi0) / spf, (q_offset + qi0 + 8) / spf};
    const int mi = lane >> 3, mr = lane & 7;  // ldmatrix: matrix index, row within it

    for (int t = t_begin; t < t_end; t++) {
        const int buf = (t - t_begin) & 1;
        const int k0 = t * MK;
        __syncthreads();  // everyone is done with the buffer about to be refilled
        if (t + 1 < t_end) {
            issue_kv<HD>(sK[buf ^ 1], sV[buf ^ 1], k, v, kbase, ksr, vbase, vsr, k0 + MK, kv_len);
            key_info(buf ^ 1, k0 + MK);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const T* K_ = sK[buf];
        const T* V_ = sV[buf];

        float sacc[MK / 8][4];
#pragma unroll
        for (int nt = 0; nt < MK / 8; nt++) sacc[nt][0] = sacc[nt][1] = sacc[nt][2] = sacc[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
#pragma unroll
            for (int nt = 0; nt < MK / 8; nt += 2) {
                unsigned int kb[4];
                ldsm_x4(kb, K_ + ((nt + (mi >> 1)) * 8 + mr) * LD + kk * 16 + (mi & 1) * 8);
                mma16816(sacc[nt], qa[kk], kb[0], kb[1]);
                mma16816(sacc[nt + 1], qa[kk], kb[2], kb[3]);
            }
        }
        float tmax[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int nt = 0; nt < MK / 8; nt++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int e = i >> 1;
                const int kf = sKf[buf][nt * 8 + tig * 2 + (i & 1)];
                bool ok = kf >= 0;
                if (causal == 1) ok = ok && kf <= qf[e];
                if (causal == 2) ok = ok && kf >= qf[e];
                const float sv = ok ? sacc[nt][i] * sl2 : NEG_INF;
                sacc[nt][i] = sv;
                tmax[e] = fmaxf(tmax[e], sv);
            }
        }
        float corr[2];
#pragma unroll
        for (int e = 0; e < 2; e++) {
            tmax[e] = fmaxf(tmax[e], __shfl_xor_sync(0xffffffffu, tmax[e], 1));
            tmax[e] = fmaxf(tmax[e], __shfl_xor_sync(0xffffffffu, tmax[e], 2));
            const float m_new = fmaxf(mrow[e], tmax[e]);
            const float m_use = m_new == NEG_INF ? 0.f : m_new;
            corr[e] = exp2f(mrow[e] - m_use);
            mrow[e] = m_new;
            lrow[e] *= corr[e];
            tmax[e] = m_use;
        }
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt++) {
            oacc[nt][0] *= corr[0]; oacc[nt][1] *= corr[0];
            oacc[nt][2] *= corr[1]; oacc[nt][3] *= corr[1];
        }
#pragma unroll
        for (int nt = 0; nt < MK / 8; nt++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float p = exp2f(sacc[nt][i] - tmax[i >> 1]);
                sacc[nt][i] = p;
                lrow[i >> 1] += p;
            }
        }
#pragma unroll
        for (int ks = 0; ks < MK / 16; ks++) {
            unsigned int pa[4];
            pa[0] = pack2(sacc[2 * ks][0], sacc[2 * ks][1]);
            pa[1] = pack2(sacc[2 * ks][2], sacc[2 * ks][3]);
            pa[2] = pack2(sacc[2 * ks + 1][0], sacc[2 * ks + 1][1]);
            pa[3] = pack2(sacc[2 * ks + 1][2], sacc[2 * ks + 1][3]);
#pragma unroll
            for (int nt = 0; nt < HD / 8; nt += 2) {
                unsigned int vb[4];
                ldsm_x4_t(vb, V_ + (ks * 16 + (mi & 1) * 8 + mr) * LD + (nt + (mi >> 1)) * 8);
                mma16816(oacc[nt], pa, vb[0], vb[1]);
                mma16816(oacc[nt + 1], pa, vb[2], vb[3]);
            }
        }
    }
    cp_async_wait<0>();
    float inv[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float l = lrow[e];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        inv[e] = l > 0.f ? 1.f / l : 0.f;
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const int qi = qi0 + e * 8;
        if (qi >= q_len) continue;
        const long long rowoff = b * osb + h * osh + (long long)qi * osr;
        const bool seen = inv[e] > 0.f;
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt++) {
            const int d = nt * 8 + tig * 2;
            const long long off = rowoff + d;
            float y0 = oacc[nt][2 * e] * inv[e], y1 = oacc[nt][2 * e + 1] * inv[e];
            if (has_bias && seen) { y0 += v_bias[h * HD + d]; y1 += v_bias[h * HD + d + 1]; }
            if (off >= 0 && off + 1 < o_len) {
                *reinterpret_cast<unsigned int*>(o + off) = pack2(y0, y1);
            }
        }
    }
}

#define MMA_ENTRY(HDV)                                                                                  \
    extern "C" __global__ void __launch_bounds__(128) attention_mma_hd##HDV(                           \
        const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,  \
        long long qsb, long long qsh, long long qsr, long long ksb, long long ksh, long long ksr,       \
        long long vsb, long long vsh, long long vsr, long long osb, long long osh, long long osr,       \
        int batch, int heads, int q_len, int kv_len, int hd, int causal, int spf, int q_offset,        \
        float scale, const float* __restrict__ q_bias, const float* __restrict__ k_bias,               \
        const float* __restrict__ v_bias, int has_bias, const unsigned char* __restrict__ key_mask,    \
        int has_mask, int n_kf, long long o_len)                                                       \
    {                                                                                                  \
        if (hd != HDV) return;                                                                         \
        attention_mma_body<HDV>(q, k, v, o, qsb, qsh, qsr, ksb, ksh, ksr, vsb, vsh, vsr, osb, osh,     \
                                osr, batch, heads, q_len, kv_len, causal, spf, q_offset, scale, q_bias, \
                                k_bias, v_bias, has_bias, key_mask, has_mask, n_kf, o_len);            \
    }
MMA_ENTRY(64)
MMA_ENTRY(128)
#endif
