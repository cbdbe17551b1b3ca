// One GRU layer (PyTorch's gate order r, z, n) over all time steps in one launch.
//
// gru_layer_f32: a single persistent block walks the steps; `gi` holds the input projections
// of every step ([steps, 3H] = x·W_ihᵀ + b_ih, computed by one linear product before the
// launch). Per step: gh = W_hh·h + b_hh (one warp per row of W_hh), then
//   r = σ(gi_r + gh_r), z = σ(gi_z + gh_z), n = tanh(gi_n + r·gh_n), h = (1 − z)·n + z·h,
// with h in shared memory; `out` gets every step's state and `h` the last one. Dynamic shared
// memory: 4·hidden floats. Tolerance against the CPU's f64 reference: 1e-5 relative per step.

extern "C" __global__ void gru_layer_f32(const float* gi, const float* w_hh, const float* b_hh,
                                         float* h, float* out, u32 steps, u32 hidden) {
    extern __shared__ float sm[];
    float* hs = sm;           // [hidden]
    float* gh = sm + hidden;  // [3·hidden]
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (u32 j = threadIdx.x; j < hidden; j += blockDim.x) hs[j] = h[j];
    __syncthreads();
    for (u32 t = 0; t < steps; t++) {
        for (u32 row = warp; row < 3 * hidden; row += nw) {
            const float* w = w_hh + (u64)row * hidden;
            float s = 0.0f;
            for (u32 p = lane; p < hidden; p += 32) s = fmaf(w[p], hs[p], s);
            s = warp_sum(s);
            if (lane == 0) gh[row] = s + (b_hh ? b_hh[row] : 0.0f);
        }
        __syncthreads();
        const float* g = gi + (u64)t * 3 * hidden;
        float* o = out + (u64)t * hidden;
        for (u32 j = threadIdx.x; j < hidden; j += blockDim.x) {
            float r = 1.0f / (1.0f + expf(-(g[j] + gh[j])));
            float z = 1.0f / (1.0f + expf(-(g[hidden + j] + gh[hidden + j])));
            float n = tanhf(g[2 * hidden + j] + r * gh[2 * hidden + j]);
            float hn = (1.0f - z) * n + z * hs[j];
            o[j] = hn;
        }
        __syncthreads();
        for (u32 j = threadIdx.x; j < hidden; j += blockDim.x) hs[j] = o[j];
        __syncthreads();
    }
    for (u32 j = threadIdx.x; j < hidden; j += blockDim.x) h[j] = hs[j];
}
