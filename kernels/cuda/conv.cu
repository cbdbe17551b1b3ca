// Convolutions: NextItNet's dilated causal conv1d and Caser's vertical and horizontal ones.
// f32 sums in another order than the CPU's f64 references: tolerance 1e-5 relative.
//
// causal_conv1d_f32: y[t, o] = b[o] + Σ_j Σ_c w[o, c, j]·x[t − (k − 1 − j)·d, c] for the rows
//   t in from .. len (rows before 0 are zero), `w` in PyTorch's [c_out, c_in, 1, k] layout.
//   One block per output row: the k input rows it reads are staged in shared memory
//   (k·c_in floats of dynamic shared memory). A session's streaming step is the call with
//   from = len − 1.
// caser_vertical_f32: out[v, c] = b[v] + Σ_t w[v, t]·x[t, c] over the [L, E] image.
// caser_horizontal_f32: for filters of height `height` ([nf, height·E]), one block per filter:
//   out[f] = max_s ReLU(b[f] + Σ_p w[f, p]·x[s·E + p]) over the windows s = 0 ..= L − height.

extern "C" __global__ void causal_conv1d_f32(const float* x, const float* w, const float* b,
                                             float* y, u32 from, u32 len, u32 c_in, u32 c_out,
                                             u32 k, u32 dilation) {
    extern __shared__ float rows[];  // [k, c_in]
    for (u32 t = from + blockIdx.x; t < len; t += gridDim.x) {
        for (u32 i = threadIdx.x; i < k * c_in; i += blockDim.x) {
            u32 j = i / c_in, c = i % c_in;
            u64 back = (u64)(k - 1 - j) * dilation;
            rows[i] = back <= t ? x[(t - back) * c_in + c] : 0.0f;
        }
        __syncthreads();
        for (u32 o = threadIdx.x; o < c_out; o += blockDim.x) {
            float acc = b ? b[o] : 0.0f;
            const float* wo = w + (u64)o * c_in * k;
            for (u32 c = 0; c < c_in; c++) {
                for (u32 j = 0; j < k; j++) acc = fmaf(wo[c * k + j], rows[j * c_in + c], acc);
            }
            y[(u64)t * c_out + o] = acc;
        }
        __syncthreads();
    }
}

extern "C" __global__ void caser_vertical_f32(const float* x, const float* w, const float* b,
                                              float* out, u32 l, u32 e, u32 nv) {
    u64 total = (u64)nv * e;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        u32 v = i / e, c = i % e;
        float acc = b[v];
        for (u32 t = 0; t < l; t++) acc = fmaf(w[v * l + t], x[(u64)t * e + c], acc);
        out[i] = acc;
    }
}

extern "C" __global__ void caser_horizontal_f32(const float* x, const float* w, const float* b,
                                                float* out, u32 l, u32 e, u32 height, u32 nf) {
    __shared__ float red[32];
    u32 he = height * e;
    for (u32 f = blockIdx.x; f < nf; f += gridDim.x) {
        const float* wf = w + (u64)f * he;
        float best = 0.0f;  // every ReLU output is >= 0
        for (u32 s = 0; s + height <= l; s++) {
            const float* xs = x + (u64)s * e;
            float acc = 0.0f;
            for (u32 p = threadIdx.x; p < he; p += blockDim.x) acc = fmaf(wf[p], xs[p], acc);
            acc = block_sum(acc, red) + b[f];
            best = fmaxf(best, acc);
        }
        if (threadIdx.x == 0) out[f] = best;
        __syncthreads();
    }
}
