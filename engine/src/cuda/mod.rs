//! The CUDA backend (feature `cuda`): every block on one NVIDIA GPU, with the hand-written
//! kernels of `seqrec_kernels::cuda` (`kernels/cuda/*.cu`) compiled by NVRTC for the device's
//! own architecture, once per process and device.
//!
//! Weights, the scoring table and every activation live on the device: weights are uploaded at
//! load, activations are [`CudaBuf`]s owned by a workspace (grown on demand, then reused), and
//! the host sends only what derives from the request (ids, masks, row factors, exclusion lists)
//! through small staging buffers that live beside the activations. After warm-up nothing is
//! allocated on the device. Every operation is ordered on one stream per device; reads back to
//! the host (scores, top-k lists) wait for it.
//!
//! CUDA is loaded dynamically: [`Cuda::new`] probes for the driver and NVRTC libraries and
//! returns [`Error::Device`](crate::Error::Device) where they or the device are missing; it
//! never panics.

mod device;
mod scan;

use crate::backend::{
    At, Backend, BlockScratch, KvCache, Mask, MhaShape, Scale, SelfMask, Src, check_rows,
};
use crate::blocks::{
    Activation, AttentionBlock, CaserConvs, CausalConv, Embedding, GruLayer, ItemTable, LayerNorm,
    Linear,
};
use crate::cpu::{CpuItems, CpuWeight};
use crate::error::{Error, Result};
use crate::weights::{DType, Tensor};
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;
use cudarc::driver::CudaSlice;
use device::{Arg, Device, THREADS, grow, stage};

pub use scan::CudaScratch;

/// The CUDA backend on one device. Cheap to clone; every clone (and every `Cuda::new` of the
/// same ordinal) shares the device's stream and compiled kernels.
#[derive(Clone, Debug)]
pub struct Cuda {
    dev: Arc<Device>,
}

/// An f32 tensor on the device (biases, norms, embedding tables, GRU and convolution weights).
#[derive(Debug)]
pub struct CudaTensor {
    data: CudaSlice<f32>,
    len: usize,
}

impl CudaTensor {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The weight matrix of a linear layer on the device, in its storage.
#[derive(Debug)]
pub enum CudaWeight {
    /// f32 as stored.
    F32(CudaSlice<f32>),
    /// f16 bits.
    F16(CudaSlice<u16>),
    /// i16 with one f32 scale per output row.
    I16 {
        /// Quantized rows.
        q: CudaSlice<i16>,
        /// Scale of every row.
        scales: CudaSlice<f32>,
    },
}

/// The scoring copy of an item table on the device.
#[derive(Debug)]
pub enum CudaItems {
    /// f32 rows.
    F32(CudaSlice<f32>),
    /// f16 bits, converted on the device from the f32 table.
    F16(CudaSlice<u16>),
    /// bf16 bits, converted on the device.
    BF16(CudaSlice<u16>),
    /// int8 rows with one scale per row and the f32 rows that re-score the shortlist.
    I8 {
        /// Quantized rows (the CPU's quantization, bit for bit).
        q: CudaSlice<i8>,
        /// Scale of every row.
        scales: CudaSlice<f32>,
        /// The f32 rows.
        exact: CudaSlice<f32>,
    },
}

/// An activation buffer on the device, with a staging area for the request data a call sends
/// along (ids, masks, row factors).
#[derive(Debug, Default)]
pub struct CudaBuf {
    data: Option<CudaSlice<f32>>,
    aux: Option<CudaSlice<u32>>,
}

impl CudaBuf {
    /// Number of values it holds.
    pub fn len(&self) -> usize {
        self.data.as_ref().map_or(0, CudaSlice::len)
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The kernels' activation codes (`kernels/cuda/prelude.cuh`).
fn act_code(a: Activation) -> i32 {
    match a {
        Activation::Identity => 0,
        Activation::Gelu => 1,
        Activation::Relu => 2,
        Activation::Silu => 3,
        Activation::Sigmoid => 4,
        Activation::Tanh => 5,
        Activation::GeluTanh => 6,
    }
}

/// A size as a kernel's `u32` argument.
fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Unsupported(format!("{what} of {v} on the GPU")))
}

impl Cuda {
    /// The backend on device `ordinal` (0 for the first GPU). A clean error where the CUDA
    /// driver, NVRTC or the device is missing.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        Ok(Cuda {
            dev: Device::open(ordinal)?,
        })
    }

    /// Whether a CUDA device can be opened here (the driver library, NVRTC or prebuilt
    /// kernels, at least one device), without opening one.
    pub fn available() -> bool {
        use seqrec_kernels::cuda as k;
        k::driver_available()
            && (k::nvrtc_available() || std::env::var_os(k::PREBUILT_ENV).is_some())
            && cudarc::driver::CudaContext::device_count().is_ok_and(|n| n > 0)
    }

    /// The device's name (e.g. `NVIDIA H100 80GB HBM3`).
    pub fn device_name(&self) -> &str {
        &self.dev.name
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.dev.ordinal
    }

    /// The compute capability as `major·10 + minor` (90 for sm_90).
    pub fn compute_capability(&self) -> u32 {
        self.dev.arch()
    }

    /// Waits until every operation queued so far has finished (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.dev.sync()
    }

    /// The device-to-device copy bandwidth in bytes per second: `reps` copies of `bytes` bytes
    /// between two device buffers, timed on the host around a synchronised stream (the yardstick
    /// of the catalog scan's effective bandwidth).
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64> {
        let n = bytes.div_ceil(4).max(1);
        let src = self.dev.zeros::<f32>(n)?;
        let mut dst = self.dev.zeros::<f32>(n)?;
        let copy = |dst: &mut CudaSlice<f32>| {
            self.dev
                .stream
                .memcpy_dtod(&src, dst)
                .map_err(|e| device::dev_err("device copy", e))
        };
        copy(&mut dst)?;
        self.dev.sync()?;
        let t = std::time::Instant::now();
        for _ in 0..reps.max(1) {
            copy(&mut dst)?;
        }
        self.dev.sync()?;
        let secs = t.elapsed().as_secs_f64();
        // A copy reads and writes every byte.
        Ok((2 * 4 * n * reps.max(1)) as f64 / secs)
    }

    /// Softmax over each of `rows` rows of `cols` values of `x`, in place (the kernel
    /// `softmax_rows_f32`).
    pub fn softmax_rows(&self, x: &mut CudaBuf, rows: usize, cols: usize) -> Result<()> {
        self.ensure(x, rows * cols)?;
        let p = self.dptr(x, 0);
        let grid = u32_of("rows", rows.min(65535))?;
        let (r, c) = (u32_of("rows", rows)?, u32_of("cols", cols)?);
        // SAFETY: `x` holds rows·cols values (ensured above); the arguments are the kernel's.
        unsafe {
            self.dev.launch(
                "activation",
                "softmax_rows_f32",
                (grid, 1),
                THREADS,
                0,
                &[Arg::Ptr(p), Arg::U32(r), Arg::U32(c)],
            )
        }
    }

    /// Device address of element `offset` of a buffer (0 when it has none).
    fn dptr(&self, b: &CudaBuf, offset: usize) -> u64 {
        b.data.as_ref().map_or(0, |s| self.dev.ptr(s, offset))
    }

    /// Device address and length of a source.
    fn src(&self, s: Src<'_, Cuda>) -> (u64, usize) {
        match s {
            Src::Buf(b) => (self.dptr(b, 0), b.len()),
            Src::Param(p) => (self.dev.ptr(&p.data, 0), p.len),
        }
    }

    /// Checks a destination block (rows must not overlap) and grows `dst` to hold it.
    fn dst_rows(&self, dst: &mut CudaBuf, to: At, rows: usize, cols: usize) -> Result<()> {
        if rows > 1 && to.stride < cols {
            return Err(Error::InvalidArgument(format!(
                "destination rows of {cols} values overlap (stride {})",
                to.stride
            )));
        }
        self.ensure(dst, to.span(rows, cols))
    }

    /// A strided row operation `dst[to] op= src[from]` of `elementwise.cu` (kernel `name`,
    /// arguments: the destination and source rows, then `extra`, then the sizes), after
    /// checking the source block and growing the destination.
    fn src_rows(
        &self,
        (what, name): (&str, &'static str),
        (src, from): (Src<'_, Cuda>, At),
        (dst, to): (&mut CudaBuf, At),
        (rows, cols): (usize, usize),
        extra: &[Arg],
    ) -> Result<()> {
        let (sp, slen) = self.src(src);
        check_rows(what, slen, from, rows, cols)?;
        self.dst_rows(dst, to, rows, cols)?;
        let mut args = Vec::with_capacity(8);
        args.extend([
            Arg::Ptr(self.dptr(dst, to.offset)),
            Arg::U64(to.stride as u64),
            Arg::Ptr(sp + 4 * from.offset as u64),
            Arg::U64(from.stride as u64),
        ]);
        args.extend_from_slice(extra);
        args.extend([
            Arg::U32(u32_of("rows", rows)?),
            Arg::U32(u32_of("columns", cols)?),
        ]);
        self.rows_launch(name, rows, cols, &args)
    }

    /// A grid-stride element-wise launch over rows·cols values.
    fn rows_launch(
        &self,
        name: &'static str,
        rows: usize,
        cols: usize,
        args: &[Arg],
    ) -> Result<()> {
        let grid = self.dev.blocks_for(rows * cols);
        // SAFETY: every caller checked the source and destination extents for `rows` rows of
        // `cols` values at their strides, and passes the kernel's arguments in order.
        unsafe {
            self.dev
                .launch("elementwise", name, (grid, 1), THREADS, 0, args)
        }
    }

    /// The kernels and device addresses of a weight: (tiled, few-row, weights, scales).
    fn weight_args(&self, w: &CudaWeight) -> WeightArgs {
        match w {
            CudaWeight::F32(s) => ("linear_f32", "linear_f32_few", self.dev.ptr(s, 0), 0),
            CudaWeight::F16(s) => ("linear_f16", "linear_f16_few", self.dev.ptr(s, 0), 0),
            CudaWeight::I16 { q, scales } => (
                "linear_i16",
                "linear_i16_few",
                self.dev.ptr(q, 0),
                self.dev.ptr(scales, 0),
            ),
        }
    }

    /// `y = act(x·Wᵀ + b)` over `rows` rows with raw device addresses (sizes checked by the
    /// caller).
    fn product(
        &self,
        (name_tiled, name_few, wp, sp): WeightArgs,
        bias: u64,
        x: u64,
        y: u64,
        (rows, k, n): (usize, usize, usize),
        act: Activation,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(x),
            Arg::Ptr(wp),
            Arg::Ptr(sp),
            Arg::Ptr(bias),
            Arg::Ptr(y),
            Arg::U32(u32_of("rows", rows)?),
            Arg::U32(u32_of("input width", k)?),
            Arg::U32(u32_of("output width", n)?),
            Arg::I32(act_code(act)),
        ];
        // Few rows: one warp per output feature streams its weights once (8 rows at a time).
        if rows <= 8 {
            let grid = (n * 32).div_ceil(THREADS as usize).min(65535 * 8) as u32;
            // SAFETY: the caller checked x ([rows, k]), y ([rows, n]) and the weights
            // ([n, k], scales [n], bias [n]); the arguments are the kernel's.
            return unsafe {
                self.dev
                    .launch("linear", name_few, (grid, 1), THREADS, 0, &args)
            };
        }
        let grid = (
            u32_of("output tiles", n.div_ceil(64))?,
            u32_of("row tiles", rows.div_ceil(64))?,
        );
        // SAFETY: as above.
        unsafe {
            self.dev
                .launch("linear", name_tiled, grid, THREADS, 0, &args)
        }
    }
}

/// A weight's kernels and addresses: (tiled kernel, few-row kernel, weights, scales or 0).
type WeightArgs = (&'static str, &'static str, u64, u64);

impl Backend for Cuda {
    type Param = CudaTensor;
    type Weight = CudaWeight;
    type Items = CudaItems;
    type Buf = CudaBuf;
    type Scratch = CudaScratch;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, tensor: &Tensor) -> Result<CudaTensor> {
        Ok(CudaTensor {
            data: self.dev.upload(tensor.as_slice())?,
            len: tensor.len(),
        })
    }

    fn upload_weight(&self, w: &Tensor, dtype: DType) -> Result<CudaWeight> {
        // The CPU's storages (and refusals), bit for bit, then copied to the device.
        Ok(match CpuWeight::new(w, dtype)? {
            CpuWeight::F32(t) => CudaWeight::F32(self.dev.upload(t.as_slice())?),
            CpuWeight::F16(h) => {
                let bits: Vec<u16> = h.iter().map(|v| v.to_bits()).collect();
                CudaWeight::F16(self.dev.upload(&bits)?)
            }
            CpuWeight::I16 { q, scales } => CudaWeight::I16 {
                q: self.dev.upload(&q)?,
                scales: self.dev.upload(&scales)?,
            },
        })
    }

    fn upload_items(&self, table: &Tensor, dtype: DType) -> Result<CudaItems> {
        let n = table.len();
        let half = |name: &'static str| -> Result<CudaSlice<u16>> {
            let src = self.dev.upload(table.as_slice())?;
            let dst = self.dev.zeros::<u16>(n)?;
            let grid = self.dev.blocks_for(n);
            let args = [
                Arg::Ptr(self.dev.ptr(&dst, 0)),
                Arg::Ptr(self.dev.ptr(&src, 0)),
                Arg::U64(n as u64),
            ];
            // SAFETY: `src` holds n f32 values and `dst` n 16-bit values.
            unsafe {
                self.dev
                    .launch("convert", name, (grid, 1), THREADS, 0, &args)?
            };
            self.dev.sync()?;
            Ok(dst)
        };
        Ok(match dtype {
            DType::F16 => CudaItems::F16(half("f32_to_f16")?),
            DType::BF16 => CudaItems::BF16(half("f32_to_bf16")?),
            DType::I8 => match CpuItems::new(table, DType::I8)? {
                CpuItems::I8 { q, scales, exact } => CudaItems::I8 {
                    q: self.dev.upload(&q)?,
                    scales: self.dev.upload(&scales)?,
                    exact: self.dev.upload(exact.as_slice())?,
                },
                _ => unreachable!("an int8 storage was asked for"),
            },
            DType::F32 | DType::I16 => CudaItems::F32(self.dev.upload(table.as_slice())?),
        })
    }

    fn ensure(&self, buf: &mut CudaBuf, len: usize) -> Result<()> {
        grow(&self.dev, &mut buf.data, len)
    }

    fn write(&self, src: &[f32], dst: &mut CudaBuf, offset: usize) -> Result<()> {
        self.ensure(dst, offset + src.len())?;
        match dst.data.as_mut() {
            Some(d) => self.dev.write_at(src, d, offset),
            None => Ok(()),
        }
    }

    fn read(&self, src: &CudaBuf, offset: usize, dst: &mut [f32]) -> Result<()> {
        if offset + dst.len() > src.len() {
            return Err(Error::InvalidArgument(format!(
                "read of {} values at {offset} from a buffer of {}",
                dst.len(),
                src.len()
            )));
        }
        match src.data.as_ref() {
            Some(s) => self.dev.read_at(s, offset, dst),
            None => Ok(()),
        }
    }

    fn copy(
        &self,
        src: Src<'_, Cuda>,
        from: At,
        dst: &mut CudaBuf,
        to: At,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let op = ("copy source", "copy_rows_f32");
        self.src_rows(op, (src, from), (dst, to), (rows, cols), &[])
    }

    fn fill(&self, dst: &mut CudaBuf, to: At, rows: usize, cols: usize, value: f32) -> Result<()> {
        self.dst_rows(dst, to, rows, cols)?;
        let args = [
            Arg::Ptr(self.dptr(dst, to.offset)),
            Arg::U64(to.stride as u64),
            Arg::U32(u32_of("rows", rows)?),
            Arg::U32(u32_of("columns", cols)?),
            Arg::F32(value),
        ];
        self.rows_launch("fill_rows_f32", rows, cols, &args)
    }

    fn axpy(
        &self,
        src: Src<'_, Cuda>,
        from: At,
        scale: Scale<'_>,
        dst: &mut CudaBuf,
        to: At,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let (factors, all) = match scale {
            Scale::All(s) => (0, s),
            Scale::Rows(f) if f.len() < rows => {
                return Err(Error::InvalidArgument(format!(
                    "axpy of {rows} rows with {} row factors",
                    f.len()
                )));
            }
            Scale::Rows(f) => {
                // The factors travel as their bits through the buffer's staging area.
                let bits: Vec<u32> = f[..rows].iter().map(|v| v.to_bits()).collect();
                (stage(&self.dev, &mut dst.aux, &bits)?, 0.0)
            }
        };
        let op = ("axpy source", "axpy_rows_f32");
        let extra = [Arg::Ptr(factors), Arg::F32(all)];
        self.src_rows(op, (src, from), (dst, to), (rows, cols), &extra)
    }

    fn mul(
        &self,
        src: Src<'_, Cuda>,
        from: At,
        offset: f32,
        dst: &mut CudaBuf,
        to: At,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let op = ("mul source", "mul_rows_f32");
        self.src_rows(
            op,
            (src, from),
            (dst, to),
            (rows, cols),
            &[Arg::F32(offset)],
        )
    }

    fn activate(&self, a: Activation, x: &mut CudaBuf, range: Range<usize>) -> Result<()> {
        self.ensure(x, range.end)?;
        if a == Activation::Identity || range.is_empty() {
            return Ok(());
        }
        let n = range.len();
        let args = [
            Arg::Ptr(self.dptr(x, range.start)),
            Arg::U64(n as u64),
            Arg::I32(act_code(a)),
        ];
        let grid = self.dev.blocks_for(n);
        // SAFETY: `x` holds `range.end` values (ensured above).
        unsafe {
            self.dev
                .launch("activation", "activate_f32", (grid, 1), THREADS, 0, &args)
        }
    }

    fn gather(&self, table: &Embedding<Cuda>, ids: &[u32], out: &mut CudaBuf) -> Result<()> {
        self.embedding_rows(table, ids, None, out)
    }

    fn linear(
        &self,
        lin: &Linear<Cuda>,
        x: &CudaBuf,
        rows: usize,
        a: Activation,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let (k, n) = (lin.in_dim, lin.out_dim);
        check_rows("linear input", x.len(), At::rows(0, k), rows, k)?;
        self.ensure(out, rows * n)?;
        let bias = lin.b.as_ref().map_or(0, |b| self.dev.ptr(&b.data, 0));
        let (xp, yp) = (self.dptr(x, 0), self.dptr(out, 0));
        self.product(self.weight_args(&lin.w), bias, xp, yp, (rows, k, n), a)
    }

    fn layer_norm(&self, ln: &LayerNorm<Cuda>, x: &mut CudaBuf, rows: Range<usize>) -> Result<()> {
        let d = ln.dim;
        self.ensure(x, rows.end * d)?;
        if rows.is_empty() {
            return Ok(());
        }
        let (g, b) = match &ln.affine {
            Some(a) => (
                self.dev.ptr(&a.gamma.data, 0),
                self.dev.ptr(&a.beta.data, 0),
            ),
            None => (0, 0),
        };
        let args = [
            Arg::Ptr(self.dptr(x, rows.start * d)),
            Arg::U32(u32_of("rows", rows.len())?),
            Arg::U32(u32_of("width", d)?),
            Arg::Ptr(g),
            Arg::Ptr(b),
            Arg::F32(ln.eps),
        ];
        let grid = rows.len().min(65535) as u32;
        // SAFETY: `x` holds the rows (ensured above); γ and β hold `d` values each.
        unsafe {
            self.dev.launch(
                "norm",
                "layer_norm_f32",
                (grid, 1),
                norm_threads(d),
                0,
                &args,
            )
        }
    }

    fn mha(
        &self,
        shape: MhaShape,
        q: (&CudaBuf, At),
        k: (&CudaBuf, At),
        v: (&CudaBuf, At),
        mask: Mask<'_>,
        out: (&mut CudaBuf, At),
        work: &mut CudaBuf,
    ) -> Result<()> {
        self.attention_core(shape, q, k, v, mask, out, work)
    }

    fn gru(
        &self,
        layer: &GruLayer<Cuda>,
        x: &CudaBuf,
        steps: usize,
        h: &mut CudaBuf,
        scratch: &mut CudaBuf,
        out: &mut CudaBuf,
    ) -> Result<()> {
        self.gru_layer(layer, x, steps, h, scratch, out)
    }

    fn causal_conv(
        &self,
        conv: &CausalConv<Cuda>,
        x: &CudaBuf,
        len: usize,
        from: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        self.conv1d(conv, x, len, from, out)
    }

    fn caser_convs(
        &self,
        blk: &CaserConvs<Cuda>,
        x: &CudaBuf,
        scratch: &mut CudaBuf,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let _ = scratch;
        self.caser(blk, x, out)
    }

    fn scores(
        &self,
        items: &ItemTable<Cuda>,
        h: &CudaBuf,
        rows: usize,
        out: &mut [f32],
    ) -> Result<()> {
        scan::scores(self, items, h, rows, out)
    }

    fn score_items(
        &self,
        items: &ItemTable<Cuda>,
        h: &CudaBuf,
        ids: &[u32],
        out: &mut [f32],
    ) -> Result<()> {
        scan::score_items(self, items, h, ids, out)
    }

    fn topk(
        &self,
        items: &ItemTable<Cuda>,
        h: &CudaBuf,
        row: usize,
        k: usize,
        exclude: &[u32],
        scratch: &mut CudaScratch,
        out_items: &mut [u32],
        out_scores: &mut [f32],
    ) -> Result<usize> {
        let mut count = [0usize];
        let offsets = [0, exclude.len()];
        scan::topk(
            self, items, h, row, k, exclude, &offsets, scratch, out_items, out_scores, &mut count,
        )?;
        Ok(count[0])
    }

    // ----- fused overrides

    fn embedding(
        &self,
        table: &Embedding<Cuda>,
        ids: &[u32],
        positions: Option<(&Embedding<Cuda>, usize)>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        match positions {
            None => self.embedding_rows(table, ids, None, out),
            Some((pos, pos0)) => {
                let rows: Vec<u32> = (0..ids.len()).map(|i| (pos0 + i) as u32).collect();
                self.embedding_rows(table, ids, Some((pos, &rows)), out)
            }
        }
    }

    fn embedding_seqs(
        &self,
        table: &Embedding<Cuda>,
        ids: &[u32],
        lens: &[usize],
        positions: Option<&Embedding<Cuda>>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        match positions {
            None => self.embedding_rows(table, ids, None, out),
            Some(pos) => {
                let rows: Vec<u32> = lens.iter().flat_map(|&l| 0..l as u32).collect();
                if rows.len() != ids.len() {
                    return Err(Error::InvalidArgument(format!(
                        "{} ids in sequences of {} in all",
                        ids.len(),
                        rows.len()
                    )));
                }
                self.embedding_rows(table, ids, Some((pos, &rows)), out)
            }
        }
    }

    fn add_layer_norm(
        &self,
        ln: &LayerNorm<Cuda>,
        x: &CudaBuf,
        residual: &CudaBuf,
        rows: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let d = ln.dim;
        check_rows("norm input", x.len(), At::rows(0, d), rows, d)?;
        check_rows("residual", residual.len(), At::rows(0, d), rows, d)?;
        self.ensure(out, rows * d)?;
        let (xp, rp, op) = (self.dptr(x, 0), self.dptr(residual, 0), self.dptr(out, 0));
        self.add_norm(ln, xp, rp, op, rows)
    }

    fn attention(
        &self,
        blk: &AttentionBlock<Cuda>,
        x: &CudaBuf,
        rows: usize,
        pos0: usize,
        q_from: usize,
        mask: SelfMask,
        cache: &mut KvCache<Cuda>,
        tmp: &mut BlockScratch<Cuda>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        self.attention_block(blk, x, rows, pos0, q_from, mask, cache, tmp, out)
    }

    fn attention_seqs(
        &self,
        blk: &AttentionBlock<Cuda>,
        x: &CudaBuf,
        lens: &[usize],
        last_only: bool,
        mask: SelfMask,
        tmp: &mut BlockScratch<Cuda>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        self.attention_batch(blk, x, lens, last_only, mask, tmp, out)
    }

    fn modulate(
        &self,
        x: &mut CudaBuf,
        rows: usize,
        dim: usize,
        eps: f32,
        group: usize,
        shift: (&CudaBuf, At),
        scale: (&CudaBuf, At),
        work: &mut CudaBuf,
    ) -> Result<()> {
        let _ = work;
        self.modulate_rows(x, rows, dim, eps, group, shift, scale)
    }

    fn gated_add(
        &self,
        x: &mut CudaBuf,
        y: &mut CudaBuf,
        rows: usize,
        dim: usize,
        group: usize,
        gate: (&CudaBuf, At),
    ) -> Result<()> {
        self.gated_rows(x, y, rows, dim, group, gate)
    }

    fn topk_rows(
        &self,
        items: &ItemTable<Cuda>,
        h: &CudaBuf,
        k: usize,
        excludes: &[u32],
        offsets: &[usize],
        scratch: &mut CudaScratch,
        out_items: &mut [u32],
        out_scores: &mut [f32],
        counts: &mut [usize],
    ) -> Result<()> {
        crate::backend::compose::check_rows_args(k, offsets, out_items, out_scores, counts)?;
        scan::topk(
            self, items, h, 0, k, excludes, offsets, scratch, out_items, out_scores, counts,
        )
    }
}

/// Threads of a row-norm block for rows of `d` values.
fn norm_threads(d: usize) -> u32 {
    (d.div_ceil(32) * 32).clamp(32, 256) as u32
}

mod blocks;
