// Linear layers y[r, j] = act(scale_j·Σ_p x[r, p]·w[j, p] + b[j]) over `rows` rows, `w` in
// PyTorch's `[n, k]` layout (f32, f16 bits, or i16 with one scale per output row), bias and
// scales optional (null). Tolerance against the CPU: 1e-5·(1 + Σ|x·w|) per output (f32 sums in
// another order).
//
// linear_<w>:      a tiled product (64×64 outputs per block of 256 threads, 4×4 per thread,
//                  k in steps of 16 through shared memory) for many rows.
// linear_<w>_few:  the few-row product (batch 1, a session step): one warp per output feature
//                  streams that weight row once for up to FEW_ROWS rows of x.

#define TILE 64
#define TK 16
#define FEW_ROWS 8

template <int W>
__device__ __forceinline__ float load_w(const void* w, u64 i) {
    if (W == 3) {
        return (float)((const short*)w)[i];
    }
    return load_dt<W>(w, i);
}

__device__ __forceinline__ float epilogue(float acc, u32 j, const float* scales,
                                          const float* b, int act) {
    if (scales) acc *= scales[j];
    if (b) acc += b[j];
    return act_apply(act, acc);
}

template <int W>
__device__ void linear_tiled(const float* __restrict__ x, const void* __restrict__ w,
                             const float* __restrict__ scales, const float* __restrict__ b,
                             float* __restrict__ y, u32 rows, u32 k, u32 n, int act) {
    __shared__ float xs[TK][TILE + 1];
    __shared__ float ws[TK][TILE + 1];
    u32 r0 = blockIdx.y * TILE, j0 = blockIdx.x * TILE;
    u32 tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4];
    for (int a = 0; a < 4; a++)
        for (int c = 0; c < 4; c++) acc[a][c] = 0.0f;
    for (u32 p0 = 0; p0 < k; p0 += TK) {
        // 256 threads load 64×16 values of each operand: 4 per thread.
        for (u32 i = threadIdx.x; i < TILE * TK; i += blockDim.x) {
            u32 rr = i / TK, pp = i % TK;
            u32 r = r0 + rr, j = j0 + rr, p = p0 + pp;
            xs[pp][rr] = (r < rows && p < k) ? x[(u64)r * k + p] : 0.0f;
            ws[pp][rr] = (j < n && p < k) ? load_w<W>(w, (u64)j * k + p) : 0.0f;
        }
        __syncthreads();
        for (u32 pp = 0; pp < TK; pp++) {
            float xa[4], wb[4];
            for (int a = 0; a < 4; a++) xa[a] = xs[pp][ty + 16 * a];
            for (int c = 0; c < 4; c++) wb[c] = ws[pp][tx + 16 * c];
            for (int a = 0; a < 4; a++)
                for (int c = 0; c < 4; c++) acc[a][c] = fmaf(xa[a], wb[c], acc[a][c]);
        }
        __syncthreads();
    }
    for (int a = 0; a < 4; a++) {
        u32 r = r0 + ty + 16 * a;
        if (r >= rows) continue;
        for (int c = 0; c < 4; c++) {
            u32 j = j0 + tx + 16 * c;
            if (j < n) y[(u64)r * n + j] = epilogue(acc[a][c], j, scales, b, act);
        }
    }
}

template <int W>
__device__ void linear_few(const float* __restrict__ x, const void* __restrict__ w,
                           const float* __restrict__ scales, const float* __restrict__ b,
                           float* __restrict__ y, u32 rows, u32 k, u32 n, int act) {
    u32 lane = threadIdx.x & 31;
    u32 warps = (gridDim.x * blockDim.x) >> 5;
    for (u32 j = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; j < n; j += warps) {
        float acc[FEW_ROWS];
        for (int r = 0; r < FEW_ROWS; r++) acc[r] = 0.0f;
        for (u32 p = lane; p < k; p += 32) {
            float wv = load_w<W>(w, (u64)j * k + p);
            for (u32 r = 0; r < FEW_ROWS; r++) {
                if (r < rows) acc[r] = fmaf(wv, x[(u64)r * k + p], acc[r]);
            }
        }
        for (u32 r = 0; r < FEW_ROWS; r++) {
            if (r >= rows) break;
            float s = warp_sum(acc[r]);
            if (lane == 0) y[(u64)r * n + j] = epilogue(s, j, scales, b, act);
        }
    }
}

#define LINEAR_ENTRY(NAME, W)                                                                 \
    extern "C" __global__ void NAME(const float* x, const void* w, const float* scales,      \
                                    const float* b, float* y, u32 rows, u32 k, u32 n,         \
                                    int act) {                                                \
        linear_tiled<W>(x, w, scales, b, y, rows, k, n, act);                                 \
    }                                                                                         \
    extern "C" __global__ void NAME##_few(const float* x, const void* w, const float* scales, \
                                          const float* b, float* y, u32 rows, u32 k, u32 n,   \
                                          int act) {                                          \
        linear_few<W>(x, w, scales, b, y, rows, k, n, act);                                   \
    }

LINEAR_ENTRY(linear_f32, DT_F32)
LINEAR_ENTRY(linear_f16, DT_F16)
LINEAR_ENTRY(linear_bf16, DT_BF16)
LINEAR_ENTRY(linear_i16, 3)
