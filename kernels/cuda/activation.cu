// Element-wise activations and the f32 softmax over rows.
//
// activate_f32: x[i] = act(x[i]) for i < n (grid-stride). Tolerance against the CPU's libm
// reference: 1e-6 relative (CUDA's erff/expf/tanhf are within 2 ulp).
// softmax_rows_f32: one block per row, max-subtracted, in place.

extern "C" __global__ void activate_f32(float* x, u64 n, int act) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        x[i] = act_apply(act, x[i]);
    }
}

extern "C" __global__ void softmax_rows_f32(float* x, u32 rows, u32 cols) {
    __shared__ float red[32];
    for (u32 r = blockIdx.x; r < rows; r += gridDim.x) {
        float* row = x + (u64)r * cols;
        float m = SEQREC_NEG_INF;
        for (u32 j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, row[j]);
        m = block_max(m, red);
        float s = 0.0f;
        for (u32 j = threadIdx.x; j < cols; j += blockDim.x) {
            float e = expf(row[j] - m);
            row[j] = e;
            s += e;
        }
        s = block_sum(s, red);
        float inv = 1.0f / s;
        for (u32 j = threadIdx.x; j < cols; j += blockDim.x) row[j] *= inv;
        __syncthreads();
    }
}
