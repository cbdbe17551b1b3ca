// Fused multi-head scaled-dot-product attention and the KV-cache append.
//
// mha_f32: grid (lq, n_heads), one block per query row and head. Query row i (absolute
// position q_offset + i under the causal mask) scores the keys it sees into `work`
// ([lq·n_heads, lk] scratch), takes the max-subtracted softmax and writes
// out_i = Σ_j p_j·v_j. Masks: 0 none, 1 causal (keys 0 ..= q_offset + i), 2 key padding
// (`valid[j]` nonzero). A query with no visible key gets zeros. Rows of q, k, v and out are
// `*_stride` apart; head h is columns h·head_dim .. (h + 1)·head_dim. Tolerance against the
// CPU: 1e-5 relative (f32 sums in another order, expf).
//
// mha_seqs_f32: the same over a batch of sequences stacked in one fused projection, one launch
// for the whole batch (see the kernel).
//
// kv_append_f32: the decode step's cache write: rows 0 .. rows of a fused [rows, 3H] Q/K/V
// projection append their keys and values at positions pos0 .. pos0 + rows of the caches.

// One query row and head: softmax(q·Kᵀ·scale)·V over keys 0 .. visible (those with a zero
// `valid` flag hidden when `valid` is given), `logits` scratch of `visible` floats. Zeros when
// no key is visible. Called by every thread of the block.
__device__ void attend(const float* qi, const float* k, u64 k_stride, const float* v,
                       u64 v_stride, float* o, float* logits, u32 visible, const u32* valid,
                       u32 head_dim, float scale, float* red) {
    float m = SEQREC_NEG_INF;
    bool any = false;
    for (u32 j = threadIdx.x; j < visible; j += blockDim.x) {
        if (valid && valid[j] == 0) {
            logits[j] = SEQREC_NEG_INF;
            continue;
        }
        const float* kj = k + (u64)j * k_stride;
        float s = 0.0f;
        for (u32 d = 0; d < head_dim; d++) s = fmaf(qi[d], kj[d], s);
        s *= scale;
        logits[j] = s;
        m = fmaxf(m, s);
        any = true;
    }
    float anyf = block_max(any ? 1.0f : 0.0f, red);
    if (anyf == 0.0f) {
        for (u32 d = threadIdx.x; d < head_dim; d += blockDim.x) o[d] = 0.0f;
        return;
    }
    m = block_max(m, red);
    float sum = 0.0f;
    for (u32 j = threadIdx.x; j < visible; j += blockDim.x) {
        bool hidden = valid && valid[j] == 0;
        float p = hidden ? 0.0f : expf(logits[j] - m);
        logits[j] = p;
        sum += p;
    }
    sum = block_sum(sum, red);
    __syncthreads();
    float inv = 1.0f / sum;
    for (u32 d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (u32 j = 0; j < visible; j++) acc = fmaf(logits[j], v[(u64)j * v_stride + d], acc);
        o[d] = acc * inv;
    }
}

extern "C" __global__ void mha_f32(const float* q, u64 q_stride, const float* k, u64 k_stride,
                                   const float* v, u64 v_stride, float* out, u64 out_stride,
                                   float* work, u32 lq, u32 lk, u32 n_heads, u32 head_dim,
                                   int mask, u32 q_offset, const u32* valid, float scale) {
    __shared__ float red[32];
    u32 i = blockIdx.x, h = blockIdx.y;
    if (i >= lq) return;
    u32 visible = lk;
    if (mask == 1) {
        u64 last = (u64)q_offset + i + 1;
        visible = last < lk ? (u32)last : lk;
    }
    u64 col = (u64)h * head_dim;
    attend(q + (u64)i * q_stride + col, k + col, k_stride, v + col, v_stride,
           out + (u64)i * out_stride + col, work + ((u64)i * n_heads + h) * lk, visible,
           mask == 2 ? valid : 0, head_dim, scale, red);
}

// A batch of independent sequences stacked in one fused [rows, 3H] Q/K/V projection: block
// (b, h) computes query row qrow[b] (absolute row of the projection, in sequence qseq[b] whose
// rows are starts[s] .. starts[s + 1]) into output row b. Causal (`causal` nonzero): the query
// sees its sequence's keys up to its own position; otherwise all of them. `work` holds
// max_len logits per block and head.
extern "C" __global__ void mha_seqs_f32(const float* qkv, float* out, float* work,
                                        const u32* starts, const u32* qrow, const u32* qseq,
                                        u32 blocks, u32 n_heads, u32 head_dim, u32 max_len,
                                        int causal, float scale) {
    __shared__ float red[32];
    u32 b = blockIdx.x, h = blockIdx.y;
    if (b >= blocks) return;
    u32 hidden = n_heads * head_dim;
    u64 w = 3 * (u64)hidden, col = (u64)h * head_dim;
    u32 s = qseq[b], r = qrow[b], r0 = starts[s], len = starts[s + 1] - r0;
    u32 visible = causal ? r - r0 + 1 : len;
    const float* base = qkv + (u64)r0 * w;
    attend(qkv + (u64)r * w + col, base + hidden + col, w, base + 2 * (u64)hidden + col, w,
           out + (u64)b * hidden + col, work + ((u64)b * n_heads + h) * max_len, visible, 0,
           head_dim, scale, red);
}

extern "C" __global__ void kv_append_f32(float* cache_k, float* cache_v, const float* qkv,
                                         u32 rows, u32 hidden, u32 pos0) {
    u64 total = (u64)rows * hidden;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / hidden, c = i % hidden;
        const float* row = qkv + r * 3 * hidden;
        cache_k[(pos0 + r) * hidden + c] = row[hidden + c];
        cache_v[(pos0 + r) * hidden + c] = row[2 * hidden + c];
    }
}
