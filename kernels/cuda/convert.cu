// f16 / bf16 <-> f32 conversion of n values (grid-stride). Narrowing rounds to nearest even
// (NaN stays NaN), widening is exact: bit-identical to the `half` crate's conversions.

extern "C" __global__ void f32_to_f16(u16* dst, const float* src, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        dst[i] = f2h(src[i]);
    }
}

extern "C" __global__ void f16_to_f32(float* dst, const u16* src, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        dst[i] = h2f(src[i]);
    }
}

extern "C" __global__ void f32_to_bf16(u16* dst, const float* src, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        dst[i] = f2bf(src[i]);
    }
}

extern "C" __global__ void bf16_to_f32(float* dst, const u16* src, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        dst[i] = bf2f(src[i]);
    }
}
