// Strided row operations behind the backend's element-wise core: `rows` rows of `cols`
// values, row i of a block at `base + i·stride` (stride 0 repeats one row). Grid-stride over
// rows·cols. Exact (one f32 operation per element, as on the CPU).

extern "C" __global__ void copy_rows_f32(float* dst, u64 dst_stride, const float* src,
                                         u64 src_stride, u32 rows, u32 cols) {
    u64 total = (u64)rows * cols;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / cols, c = i % cols;
        dst[r * dst_stride + c] = src[r * src_stride + c];
    }
}

extern "C" __global__ void fill_rows_f32(float* dst, u64 dst_stride, u32 rows, u32 cols,
                                         float value) {
    u64 total = (u64)rows * cols;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / cols, c = i % cols;
        dst[r * dst_stride + c] = value;
    }
}

// dst_i += f_i·src_i with f_i = factors[i] when `factors` is given, else `scale`.
extern "C" __global__ void axpy_rows_f32(float* dst, u64 dst_stride, const float* src,
                                         u64 src_stride, const float* factors, float scale,
                                         u32 rows, u32 cols) {
    u64 total = (u64)rows * cols;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / cols, c = i % cols;
        float f = factors ? factors[r] : scale;
        float s = src[r * src_stride + c];
        float* d = dst + r * dst_stride + c;
        *d = f == 1.0f ? *d + s : fmaf(f, s, *d);
    }
}

// dst_i *= offset + src_i.
extern "C" __global__ void mul_rows_f32(float* dst, u64 dst_stride, const float* src,
                                        u64 src_stride, float offset, u32 rows, u32 cols) {
    u64 total = (u64)rows * cols;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / cols, c = i % cols;
        dst[r * dst_stride + c] *= offset + src[r * src_stride + c];
    }
}

// DiT's gated residual: x[r] += gate[g] ⊙ y[r] over `rows` rows of `dim`, row r in group
// g = r / group reading the gate row at gate + g·gate_stride.
extern "C" __global__ void gated_add_f32(float* x, const float* y, const float* gate,
                                         u64 gate_stride, u32 rows, u32 dim, u32 group) {
    u64 total = (u64)rows * dim;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / dim, c = i % dim;
        x[i] = fmaf(gate[(r / group) * gate_stride + c], y[i], x[i]);
    }
}
