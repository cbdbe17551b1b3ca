// LayerNorm over rows of `dim` (biased variance, eps inside the square root), one block per
// row, statistics in f32 with a two-pass (centred) variance. Tolerance against the CPU's f64
// reference: 1e-5 relative.
//
// layer_norm_f32:     x = LN(x)·γ + β in place (no affine part when gamma is null).
// add_layer_norm_f32: out = LN(x + residual)·γ + β (the sum rounded to f32 first, as PyTorch's
//                     unfused LayerNorm(x + residual)).
// modulate_f32:       DiT's adaLN: x = LN(x)·(1 + scale_g) + shift_g, LN without affine part,
//                     row r in group g = r / group, the shift and scale rows at
//                     shift + g·shift_stride and scale + g·scale_stride.

__device__ __forceinline__ void row_stats(const float* row, u32 dim, float eps, float* red,
                                          float* mean_out, float* rstd_out) {
    float s = 0.0f;
    for (u32 j = threadIdx.x; j < dim; j += blockDim.x) s += row[j];
    float mean = block_sum(s, red) / (float)dim;
    float v = 0.0f;
    for (u32 j = threadIdx.x; j < dim; j += blockDim.x) {
        float d = row[j] - mean;
        v += d * d;
    }
    float var = block_sum(v, red) / (float)dim;
    *mean_out = mean;
    *rstd_out = rsqrtf(var + eps);
}

// row = (row − mean)·rstd·γ + β (no affine part when gamma is null).
__device__ __forceinline__ void normalize_row(float* row, u32 dim, float mean, float rstd,
                                              const float* gamma, const float* beta) {
    for (u32 j = threadIdx.x; j < dim; j += blockDim.x) {
        float y = (row[j] - mean) * rstd;
        row[j] = gamma ? fmaf(y, gamma[j], beta[j]) : y;
    }
}

extern "C" __global__ void layer_norm_f32(float* x, u32 rows, u32 dim, const float* gamma,
                                          const float* beta, float eps) {
    __shared__ float red[32];
    for (u32 r = blockIdx.x; r < rows; r += gridDim.x) {
        float* row = x + (u64)r * dim;
        float mean, rstd;
        row_stats(row, dim, eps, red, &mean, &rstd);
        normalize_row(row, dim, mean, rstd, gamma, beta);
        __syncthreads();
    }
}

extern "C" __global__ void add_layer_norm_f32(float* out, const float* x, const float* residual,
                                              u32 rows, u32 dim, const float* gamma,
                                              const float* beta, float eps) {
    __shared__ float red[32];
    for (u32 r = blockIdx.x; r < rows; r += gridDim.x) {
        float* row = out + (u64)r * dim;
        const float* a = x + (u64)r * dim;
        const float* b = residual + (u64)r * dim;
        for (u32 j = threadIdx.x; j < dim; j += blockDim.x) row[j] = a[j] + b[j];
        __syncthreads();
        float mean, rstd;
        row_stats(row, dim, eps, red, &mean, &rstd);
        normalize_row(row, dim, mean, rstd, gamma, beta);
        __syncthreads();
    }
}

extern "C" __global__ void modulate_f32(float* x, u32 rows, u32 dim, float eps, u32 group,
                                        const float* shift, u64 shift_stride,
                                        const float* scale, u64 scale_stride) {
    __shared__ float red[32];
    for (u32 r = blockIdx.x; r < rows; r += gridDim.x) {
        float* row = x + (u64)r * dim;
        u32 g = r / group;
        const float* sh = shift + g * shift_stride;
        const float* sc = scale + g * scale_stride;
        float mean, rstd;
        row_stats(row, dim, eps, red, &mean, &rstd);
        for (u32 j = threadIdx.x; j < dim; j += blockDim.x) {
            float y = (row[j] - mean) * rstd;
            row[j] = fmaf(y, 1.0f + sc[j], sh[j]);
        }
        __syncthreads();
    }
}
