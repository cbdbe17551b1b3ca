// seqrec CUDA prelude: prepended to every kernels/cuda/*.cu source before NVRTC compiles it
// (NVRTC gets one self-contained translation unit; no header search path is needed).
//
// Conventions shared by every kernel file:
// - Row-major f32 activations; pointers arrive already offset to the first element of a block
//   of rows, with an explicit row stride in elements.
// - 16-bit storages are raw `unsigned short` bits (f16 or bf16) converted here, so that no
//   CUDA header (cuda_fp16.h) is needed.
// - Symbols are `<op>_<dtype>[_<variant>]`, the same names the Rust launchers use.
// - Activation codes (`act` arguments) follow `seqrec_kernels::Activation`:
//   0 identity, 1 GELU (erf), 2 ReLU, 3 SiLU, 4 sigmoid, 5 tanh, 6 GELU (tanh approximation).

typedef unsigned int u32;
typedef unsigned short u16;
typedef signed char i8;
typedef unsigned long long u64;

#define SEQREC_NEG_INF (__int_as_float(0xff800000))
#define SEQREC_INVALID 0xffffffffu

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf2f(u16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// Round to nearest even, NaN kept quiet (the `half` crate's rounding).
__device__ __forceinline__ u16 f2bf(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (u16)((u >> 16) | 0x40u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

// Storage tags of tables and weights.
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2

template <int DT>
__device__ __forceinline__ float load_dt(const void* p, u64 i) {
    if (DT == DT_F32) {
        return ((const float*)p)[i];
    } else if (DT == DT_F16) {
        return h2f(((const u16*)p)[i]);
    } else {
        return bf2f(((const u16*)p)[i]);
    }
}

__device__ __forceinline__ float act_apply(int act, float x) {
    switch (act) {
    case 1:
        return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case 2:
        return x > 0.0f ? x : 0.0f;
    case 3:
        return x / (1.0f + expf(-x));
    case 4:
        return 1.0f / (1.0f + expf(-x));
    case 5:
        return tanhf(x);
    case 6: {
        float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    default:
        return x;
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `red` is 32 floats of shared memory; the call synchronises the block.
__device__ __forceinline__ float block_sum(float v, float* red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : SEQREC_NEG_INF;
    return warp_max(v);
}
