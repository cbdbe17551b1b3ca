// Embedding gathers: out[i] = table[ids[i]] (+ pos[pos_ids[i]]), `[n, dim]`. Ids are checked
// by the caller. Exact (the position row is added in f32 as on the CPU).

extern "C" __global__ void gather_f32(float* out, const float* table, const u32* ids, u32 n,
                                      u32 dim) {
    u64 total = (u64)n * dim;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / dim, c = i % dim;
        out[i] = table[(u64)ids[r] * dim + c];
    }
}

extern "C" __global__ void gather_f32_pos(float* out, const float* table, const u32* ids,
                                          const float* pos, const u32* pos_ids, u32 n,
                                          u32 dim) {
    u64 total = (u64)n * dim;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / dim, c = i % dim;
        out[i] = table[(u64)ids[r] * dim + c] + pos[(u64)pos_ids[r] * dim + c];
    }
}
