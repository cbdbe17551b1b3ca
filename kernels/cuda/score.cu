// Catalog scoring and catalog scoring fused with the top-k selection.
//
// Tables are [n, d] rows of f32, f16 or bf16 bits (DT_*), or int8 with one scale per row
// beside the f32 rows (`seqrec_kernels::cpu::score::quantize_rows_i8`).
//
// scores_<dt>:      out[u·n + i] = h_u · item_i for `users` vectors h ([users, d]); one warp per
//                   item.
// score_ids_<dt>:   out[j] = h · item_{ids[j]} (re-ranking).
// topk_scan_<dt>:   the fused scan. Block (x, y) scores items x·per_block .. (x + 1)·per_block
//                   for users y·SCAN_USERS .. + SCAN_USERS (their vectors in shared memory, each
//                   item row read once for all of them) in chunks of SCAN_CHUNK items, and keeps
//                   every user's best k of its range in shared memory: a chunk's scores that
//                   beat the user's current k-th best are compacted, the best of them taken by
//                   block-wide arg-max rounds and merged into the list. Excluded ids (sorted,
//                   user u's at excl[excl_off[u] .. excl_off[u + 1]]) and NaN scores are never
//                   kept. Each block writes its lists to cand_[s|i][(user·parts + x)·k ..],
//                   padded with id 0xffffffff.
// topk_scan_i8:     the same over the int8 rows: a chunk's upper bounds
//                   (Σ q·hq)·s·t + s·C (the CPU's `scores_i8` rounding, C from
//                   `i8_error_bound`, hq and t the user's quantized query) are filtered
//                   against the user's k-th best exact score and only the survivors are
//                   re-scored in f32 from the exact rows: the selection equals the f32 table's,
//                   as on the CPU.
// topk_merge:       one block per user merges the `parts` lists of k candidates into the
//                   final top k (best first, ties to the lower id) and their count.
//
// Order: higher score first, equal scores by lower id; -inf is an ordinary score. Scores are
// f32 dot products summed in another order than the CPU's: 1e-5 relative.

#define SCAN_USERS 4
#define SCAN_CHUNK 256
#define TOPK_MAX 128

__device__ __forceinline__ bool cand_better(float sa, u32 ia, float sb, u32 ib) {
    if (ia == SEQREC_INVALID) return false;
    if (ib == SEQREC_INVALID) return true;
    return sa > sb || (sa == sb && ia < ib);
}

__device__ __forceinline__ bool is_excluded(u32 id, const u32* ex, u32 m) {
    u32 lo = 0, hi = m;
    while (lo < hi) {
        u32 mid = (lo + hi) >> 1;
        u32 v = ex[mid];
        if (v == id) return true;
        if (v < id) lo = mid + 1; else hi = mid;
    }
    return false;
}

// A user's running selection and the block's shared working set.
struct Sel {
    float ls[SCAN_USERS][TOPK_MAX];
    u32 li[SCAN_USERS][TOPK_MAX];
    u32 len[SCAN_USERS];
    float cs[SCAN_CHUNK];  // compacted candidates of one user
    u32 ci[SCAN_CHUNK];
    u32 count;
    float ts[TOPK_MAX];    // the candidates' best, in order
    u32 ti[TOPK_MAX];
    float ms[TOPK_MAX];    // merge output
    u32 mi[TOPK_MAX];
    float rs[32];
    u32 ri[32];
    u32 rp[32];
    float bs;
    u32 bi, bp;
};

// Block-wide arg-max over the compacted candidates: the winner is left in sel.bs/bi/bp.
__device__ void block_best(Sel& sel) {
    float s = 0.0f;
    u32 id = SEQREC_INVALID, pos = 0;
    for (u32 i = threadIdx.x; i < sel.count; i += blockDim.x) {
        if (cand_better(sel.cs[i], sel.ci[i], s, id)) {
            s = sel.cs[i];
            id = sel.ci[i];
            pos = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        u32 id2 = __shfl_xor_sync(0xffffffffu, id, o);
        u32 p2 = __shfl_xor_sync(0xffffffffu, pos, o);
        if (cand_better(s2, id2, s, id)) {
            s = s2;
            id = id2;
            pos = p2;
        }
    }
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sel.rs[warp] = s;
        sel.ri[warp] = id;
        sel.rp[warp] = pos;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (u32 w = 1; w < (blockDim.x >> 5); w++) {
            if (cand_better(sel.rs[w], sel.ri[w], s, id)) {
                s = sel.rs[w];
                id = sel.ri[w];
                pos = sel.rp[w];
            }
        }
        sel.bs = s;
        sel.bi = id;
        sel.bp = pos;
    }
    __syncthreads();
}

// Merges user u's compacted candidates (sel.count of them) into its list of at most k.
__device__ void offer(Sel& sel, u32 u, u32 k) {
    u32 rounds = sel.count < k ? sel.count : k;
    for (u32 r = 0; r < rounds; r++) {
        block_best(sel);
        if (threadIdx.x == 0) {
            sel.ts[r] = sel.bs;
            sel.ti[r] = sel.bi;
            if (sel.bi != SEQREC_INVALID) sel.ci[sel.bp] = SEQREC_INVALID;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        u32 a = 0, b = 0, m = 0, la = sel.len[u];
        while (m < k && (a < la || b < rounds)) {
            bool take_b = b < rounds && (a >= la || cand_better(sel.ts[b], sel.ti[b],
                                                                sel.ls[u][a], sel.li[u][a]));
            if (take_b) {
                if (sel.ti[b] == SEQREC_INVALID) { b = rounds; continue; }
                sel.ms[m] = sel.ts[b];
                sel.mi[m] = sel.ti[b];
                b++;
            } else {
                sel.ms[m] = sel.ls[u][a];
                sel.mi[m] = sel.li[u][a];
                a++;
            }
            m++;
        }
        for (u32 i = 0; i < m; i++) {
            sel.ls[u][i] = sel.ms[i];
            sel.li[u][i] = sel.mi[i];
        }
        sel.len[u] = m;
        sel.count = 0;
    }
    __syncthreads();
}

// Whether (s, id) may enter user u's list.
__device__ __forceinline__ bool admits(const Sel& sel, u32 u, u32 k, float s, u32 id) {
    return sel.len[u] < k || cand_better(s, id, sel.ls[u][k - 1], sel.li[u][k - 1]);
}

__device__ __forceinline__ void push_cand(Sel& sel, float s, u32 id) {
    u32 pos = atomicAdd(&sel.count, 1u);
    sel.cs[pos] = s;
    sel.ci[pos] = id;
}

__device__ void write_lists(const Sel& sel, u32 u0, u32 nu, u32 k, u32 parts, float* cand_s,
                            u32* cand_i) {
    for (u32 u = 0; u < nu; u++) {
        u64 base = ((u64)(u0 + u) * parts + blockIdx.x) * k;
        for (u32 i = threadIdx.x; i < k; i += blockDim.x) {
            bool has = i < sel.len[u];
            cand_s[base + i] = has ? sel.ls[u][i] : 0.0f;
            cand_i[base + i] = has ? sel.li[u][i] : SEQREC_INVALID;
        }
    }
}

// Loads the block's users (vectors into hs, [SCAN_USERS, d]) and empties their lists.
__device__ u32 scan_start(Sel& sel, float* hs, const float* h, u32 users, u32 d, u32* u0) {
    *u0 = blockIdx.y * SCAN_USERS;
    u32 nu = users - *u0 < SCAN_USERS ? users - *u0 : SCAN_USERS;
    for (u32 i = threadIdx.x; i < nu * d; i += blockDim.x) hs[i] = h[(u64)(*u0) * d + i];
    if (threadIdx.x < SCAN_USERS) sel.len[threadIdx.x] = 0;
    if (threadIdx.x == 0) sel.count = 0;
    __syncthreads();
    return nu;
}

template <int DT>
__device__ void topk_scan(const void* table, u32 n, u32 d, const float* h, u32 users,
                          const u32* excl, const u32* excl_off, u32 k, u32 per_block,
                          float* cand_s, u32* cand_i) {
    __shared__ Sel sel;
    __shared__ float sc[SCAN_USERS][SCAN_CHUNK];
    extern __shared__ float hs[];  // [SCAN_USERS, d]
    u32 u0;
    u32 nu = scan_start(sel, hs, h, users, d, &u0);
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    u64 start = (u64)blockIdx.x * per_block;
    u64 end = start + per_block < n ? start + per_block : n;
    for (u64 c0 = start; c0 < end; c0 += SCAN_CHUNK) {
        u32 cn = end - c0 < SCAN_CHUNK ? (u32)(end - c0) : SCAN_CHUNK;
        for (u32 ii = warp; ii < cn; ii += nw) {
            u64 row = (c0 + ii) * d;
            float acc[SCAN_USERS];
            for (int u = 0; u < SCAN_USERS; u++) acc[u] = 0.0f;
            for (u32 p = lane; p < d; p += 32) {
                float w = load_dt<DT>(table, row + p);
                for (u32 u = 0; u < SCAN_USERS; u++) {
                    if (u < nu) acc[u] = fmaf(w, hs[u * d + p], acc[u]);
                }
            }
            for (u32 u = 0; u < SCAN_USERS; u++) {
                float s = warp_sum(acc[u]);
                if (lane == 0) sc[u][ii] = s;
            }
        }
        __syncthreads();
        for (u32 u = 0; u < nu; u++) {
            const u32* ex = excl + excl_off[u0 + u];
            u32 m = excl_off[u0 + u + 1] - excl_off[u0 + u];
            for (u32 ii = threadIdx.x; ii < cn; ii += blockDim.x) {
                u32 id = (u32)(c0 + ii);
                float s = sc[u][ii];
                if (!isnan(s) && admits(sel, u, k, s, id) && !is_excluded(id, ex, m)) {
                    push_cand(sel, s, id);
                }
            }
            __syncthreads();
            offer(sel, u, k);
        }
    }
    write_lists(sel, u0, nu, k, gridDim.x, cand_s, cand_i);
}

#define SCAN_ENTRY(NAME, DT)                                                                  \
    extern "C" __global__ void NAME(const void* table, u32 n, u32 d, const float* h,          \
                                    u32 users, const u32* excl, const u32* excl_off, u32 k,   \
                                    u32 per_block, float* cand_s, u32* cand_i) {              \
        topk_scan<DT>(table, n, d, h, users, excl, excl_off, k, per_block, cand_s, cand_i);   \
    }

SCAN_ENTRY(topk_scan_f32, DT_F32)
SCAN_ENTRY(topk_scan_f16, DT_F16)
SCAN_ENTRY(topk_scan_bf16, DT_BF16)

// hq: [users, d] quantized queries; tq, bound: [users].
extern "C" __global__ void topk_scan_i8(const i8* q, const float* scales, const float* exact,
                                        u32 n, u32 d, const float* h, const i8* hq,
                                        const float* tq, const float* bound, u32 users,
                                        const u32* excl, const u32* excl_off, u32 k,
                                        u32 per_block, float* cand_s, u32* cand_i) {
    __shared__ Sel sel;
    __shared__ float sc[SCAN_USERS][SCAN_CHUNK];
    extern __shared__ float hs[];  // [SCAN_USERS, d] f32, then [SCAN_USERS, d] int8 as int
    u32 u0;
    u32 nu = scan_start(sel, hs, h, users, d, &u0);
    int* hqs = (int*)(hs + SCAN_USERS * d);
    for (u32 i = threadIdx.x; i < nu * d; i += blockDim.x) hqs[i] = hq[(u64)u0 * d + i];
    __syncthreads();
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    u64 start = (u64)blockIdx.x * per_block;
    u64 end = start + per_block < n ? start + per_block : n;
    for (u64 c0 = start; c0 < end; c0 += SCAN_CHUNK) {
        u32 cn = end - c0 < SCAN_CHUNK ? (u32)(end - c0) : SCAN_CHUNK;
        for (u32 ii = warp; ii < cn; ii += nw) {
            u64 row = (c0 + ii) * d;
            int acc[SCAN_USERS];
            for (int u = 0; u < SCAN_USERS; u++) acc[u] = 0;
            for (u32 p = lane; p < d; p += 32) {
                int w = q[row + p];
                for (u32 u = 0; u < SCAN_USERS; u++) {
                    if (u < nu) acc[u] += w * hqs[u * d + p];
                }
            }
            float s_row = scales[c0 + ii];
            for (u32 u = 0; u < SCAN_USERS; u++) {
                int sum = acc[u];
                for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
                if (lane == 0 && u < nu) {
                    float ub = __fmul_rn(__fmul_rn((float)sum, s_row), tq[u0 + u]);
                    sc[u][ii] = __fadd_rn(ub, __fmul_rn(s_row, bound[u0 + u]));
                }
            }
        }
        __syncthreads();
        for (u32 u = 0; u < nu; u++) {
            const u32* ex = excl + excl_off[u0 + u];
            u32 m = excl_off[u0 + u + 1] - excl_off[u0 + u];
            // Survivors of the bound: the k-th best exact score (when the list is full) is
            // not above their bound.
            for (u32 ii = threadIdx.x; ii < cn; ii += blockDim.x) {
                u32 id = (u32)(c0 + ii);
                float ub = sc[u][ii];
                bool full = sel.len[u] >= k;
                bool pass = !full || !(ub < sel.ls[u][k - 1]);
                if (pass && !is_excluded(id, ex, m)) push_cand(sel, 0.0f, id);
            }
            __syncthreads();
            // Exact f32 scores of the survivors, one warp each.
            for (u32 c = warp; c < sel.count; c += nw) {
                const float* er = exact + (u64)sel.ci[c] * d;
                float s = 0.0f;
                for (u32 p = lane; p < d; p += 32) s = fmaf(er[p], hs[u * d + p], s);
                s = warp_sum(s);
                if (lane == 0) {
                    sel.cs[c] = s;
                    if (isnan(s)) sel.ci[c] = SEQREC_INVALID;
                }
            }
            __syncthreads();
            offer(sel, u, k);
        }
    }
    write_lists(sel, u0, nu, k, gridDim.x, cand_s, cand_i);
}

extern "C" __global__ void topk_merge(const float* cand_s, const u32* cand_i, u32 parts, u32 k,
                                      float* out_s, u32* out_i, u32* out_n) {
    __shared__ Sel sel;
    u32 user = blockIdx.x;
    if (threadIdx.x == 0) {
        sel.len[0] = 0;
        sel.count = 0;
    }
    __syncthreads();
    u64 total = (u64)parts * k, base = (u64)user * total;
    for (u64 c0 = 0; c0 < total; c0 += SCAN_CHUNK) {
        u32 cn = total - c0 < SCAN_CHUNK ? (u32)(total - c0) : SCAN_CHUNK;
        for (u32 i = threadIdx.x; i < cn; i += blockDim.x) {
            float s = cand_s[base + c0 + i];
            u32 id = cand_i[base + c0 + i];
            if (id != SEQREC_INVALID && admits(sel, 0, k, s, id)) push_cand(sel, s, id);
        }
        __syncthreads();
        offer(sel, 0, k);
    }
    for (u32 i = threadIdx.x; i < k; i += blockDim.x) {
        bool has = i < sel.len[0];
        out_s[(u64)user * k + i] = has ? sel.ls[0][i] : 0.0f;
        out_i[(u64)user * k + i] = has ? sel.li[0][i] : SEQREC_INVALID;
    }
    if (threadIdx.x == 0) out_n[user] = sel.len[0];
}

template <int DT>
__device__ void scores_rows(const void* table, const float* h, float* out, u32 users, u32 n,
                            u32 d) {
    u32 lane = threadIdx.x & 31;
    u64 warps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 i = (blockIdx.x * (u64)blockDim.x + threadIdx.x) >> 5; i < n; i += warps) {
        for (u32 u = 0; u < users; u++) {
            const float* hu = h + (u64)u * d;
            float s = 0.0f;
            for (u32 p = lane; p < d; p += 32) s = fmaf(load_dt<DT>(table, i * d + p), hu[p], s);
            s = warp_sum(s);
            if (lane == 0) out[(u64)u * n + i] = s;
        }
    }
}

template <int DT>
__device__ void score_ids(const void* table, const float* h, const u32* ids, float* out, u32 m,
                          u32 d) {
    u32 lane = threadIdx.x & 31;
    u64 warps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 j = (blockIdx.x * (u64)blockDim.x + threadIdx.x) >> 5; j < m; j += warps) {
        u64 row = (u64)ids[j] * d;
        float s = 0.0f;
        for (u32 p = lane; p < d; p += 32) s = fmaf(load_dt<DT>(table, row + p), h[p], s);
        s = warp_sum(s);
        if (lane == 0) out[j] = s;
    }
}

#define SCORE_ENTRY(DTN, DT)                                                                  \
    extern "C" __global__ void scores_##DTN(const void* table, const float* h, float* out,    \
                                            u32 users, u32 n, u32 d) {                        \
        scores_rows<DT>(table, h, out, users, n, d);                                          \
    }                                                                                         \
    extern "C" __global__ void score_ids_##DTN(const void* table, const float* h,             \
                                               const u32* ids, float* out, u32 m, u32 d) {    \
        score_ids<DT>(table, h, ids, out, m, d);                                              \
    }

SCORE_ENTRY(f32, DT_F32)
SCORE_ENTRY(f16, DT_F16)
SCORE_ENTRY(bf16, DT_BF16)
