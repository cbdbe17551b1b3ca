//! One CUDA device as the backend drives it: its context and stream, the kernel modules
//! (compiled by NVRTC for the device's own architecture once per process and device, family by
//! family on first use), kernel launches, device buffers that grow and are reused, and a
//! small pool of buffers for the calls that return their results to the host.

use crate::error::{Error, Result};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use seqrec_kernels::cuda::{self as kcuda, Target};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// A CUDA driver or compiler error as an engine error.
pub(crate) fn dev_err(what: &str, e: impl core::fmt::Debug) -> Error {
    Error::Device(format!("{what}: {e:?}"))
}

/// Threads per block of the element-wise kernels.
pub(crate) const THREADS: u32 = 256;

/// A kernel argument.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Arg {
    /// A device pointer (0 for a null pointer).
    Ptr(u64),
    U32(u32),
    U64(u64),
    I32(i32),
    F32(f32),
}

/// The compiled kernels of one device: a module per family, compiled on first use.
#[derive(Debug)]
struct Kernels {
    arch: u32,
    modules: Vec<OnceLock<core::result::Result<Arc<CudaModule>, String>>>,
    funcs: Mutex<BTreeMap<&'static str, CudaFunction>>,
}

/// A device: context, the stream every call of the backend is ordered on, kernels, pools.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) ordinal: usize,
    pub(crate) name: String,
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) sms: u32,
    kernels: Kernels,
    pool_f32: Mutex<Vec<CudaSlice<f32>>>,
    pool_u32: Mutex<Vec<CudaSlice<u32>>>,
}

/// The devices opened by this process, by ordinal (a device and its compiled modules are
/// shared by every backend value and model on it).
static DEVICES: Mutex<Vec<Arc<Device>>> = Mutex::new(Vec::new());

impl Device {
    /// Opens device `ordinal` (or returns the one already open), after probing for the
    /// libraries cudarc would otherwise panic without.
    pub(crate) fn open(ordinal: usize) -> Result<Arc<Device>> {
        let mut open = DEVICES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = open.iter().find(|d| d.ordinal == ordinal) {
            return Ok(d.clone());
        }
        if !kcuda::driver_available() {
            return Err(Error::Device(
                "CUDA is not available: the NVIDIA driver library (libcuda.so) was not found"
                    .into(),
            ));
        }
        let count = CudaContext::device_count().map_err(|e| dev_err("CUDA device count", e))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::Device(format!(
                "no CUDA device {ordinal}: {count} device(s) found"
            )));
        }
        if !kcuda::nvrtc_available() && std::env::var_os(kcuda::PREBUILT_ENV).is_none() {
            return Err(Error::Device(
                "CUDA kernels cannot be compiled: the NVRTC library (libnvrtc.so) was not found \
                 (pip install nvidia-cuda-nvrtc, and put its lib folder on LD_LIBRARY_PATH)"
                    .into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| dev_err("CUDA context", e))?;
        // SAFETY: every operation of the backend is ordered on the one stream below, so
        // cudarc's cross-stream event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| dev_err("CUDA stream", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| dev_err("compute capability", e))?;
        use cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
        let sms = ctx
            .attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| dev_err("multiprocessor count", e))?;
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".to_string());
        let dev = Arc::new(Device {
            ordinal,
            name,
            ctx,
            stream,
            sms: sms.max(1) as u32,
            kernels: Kernels {
                arch: (major * 10 + minor) as u32,
                modules: kcuda::SOURCES.iter().map(|_| OnceLock::new()).collect(),
                funcs: Mutex::new(BTreeMap::new()),
            },
            pool_f32: Mutex::new(Vec::new()),
            pool_u32: Mutex::new(Vec::new()),
        });
        open.push(dev.clone());
        Ok(dev)
    }

    /// The compute capability as `major·10 + minor` (90 for sm_90).
    pub(crate) fn arch(&self) -> u32 {
        self.kernels.arch
    }

    /// Kernel `name` of family `family`, compiling and loading the family on first use.
    fn func(&self, family: &'static str, name: &'static str) -> Result<CudaFunction> {
        let mut funcs = self.kernels.funcs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = funcs.get(name) {
            return Ok(f.clone());
        }
        let i = kcuda::SOURCES
            .iter()
            .position(|(f, _)| *f == family)
            .ok_or_else(|| Error::Device(format!("no CUDA kernel family `{family}`")))?;
        let module = self.kernels.modules[i]
            .get_or_init(|| {
                let arch = self.kernels.arch;
                let image = match kcuda::prebuilt(family, arch) {
                    Some(image) => image,
                    None => {
                        kcuda::compile(family, Target::Cubin(arch)).map_err(|e| e.to_string())?
                    }
                };
                self.ctx
                    .load_module(cudarc::nvrtc::Ptx::from_binary(image))
                    .map_err(|e| format!("loading {family}.cu: {e:?}"))
            })
            .clone()
            .map_err(Error::Device)?;
        let f = module
            .load_function(name)
            .map_err(|e| dev_err(&format!("kernel {name}"), e))?;
        funcs.insert(name, f.clone());
        Ok(f)
    }

    /// Launches kernel `name` of `family` on the stream.
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in number and type, and every pointer must
    /// point to device memory of this context holding every element the kernel reads or writes
    /// for these sizes (the callers check the sizes first).
    pub(crate) unsafe fn launch(
        &self,
        family: &'static str,
        name: &'static str,
        grid: (u32, u32),
        block: u32,
        smem: u32,
        args: &[Arg],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 {
            return Ok(());
        }
        let f = self.func(family, name)?;
        let mut b = self.stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::Ptr(p) | Arg::U64(p) => b.arg(p),
                Arg::U32(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (grid.0, grid.1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: smem,
        };
        // SAFETY: the caller's contract (arguments and extents).
        unsafe { b.launch(cfg) }.map_err(|e| dev_err(name, e))?;
        Ok(())
    }

    /// Blocks for a grid-stride kernel over `n` elements.
    pub(crate) fn blocks_for(&self, n: usize) -> u32 {
        let want = n.div_ceil(THREADS as usize).max(1);
        want.min(self.sms as usize * 16) as u32
    }

    /// The device address of element `offset` of `s`.
    pub(crate) fn ptr<T>(&self, s: &CudaSlice<T>, offset: usize) -> u64 {
        let (p, _guard) = s.device_ptr(&self.stream);
        p + (offset * core::mem::size_of::<T>()) as u64
    }

    /// A zeroed device buffer of `len` values.
    pub(crate) fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(|e| dev_err("device allocation", e))
    }

    /// A device copy of `host`.
    pub(crate) fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            // SAFETY: a one-element allocation that nothing reads.
            return unsafe { self.stream.alloc::<T>(1) }
                .map_err(|e| dev_err("device allocation", e));
        }
        self.stream
            .clone_htod(host)
            .map_err(|e| dev_err("host-to-device copy", e))
    }

    /// Copies `host` into `dst` at `offset` (which must hold it).
    pub(crate) fn write_at<T: DeviceRepr>(
        &self,
        host: &[T],
        dst: &mut CudaSlice<T>,
        offset: usize,
    ) -> Result<()> {
        if host.is_empty() {
            return Ok(());
        }
        let mut view = dst.slice_mut(offset..offset + host.len());
        self.stream
            .memcpy_htod(host, &mut view)
            .map_err(|e| dev_err("host-to-device copy", e))
    }

    /// Copies `host.len()` values of `src` from `offset` to the host and waits for them.
    pub(crate) fn read_at<T: DeviceRepr>(
        &self,
        src: &CudaSlice<T>,
        offset: usize,
        host: &mut [T],
    ) -> Result<()> {
        if host.is_empty() {
            return Ok(());
        }
        let view = src.slice(offset..offset + host.len());
        self.stream
            .memcpy_dtoh(&view, host)
            .map_err(|e| dev_err("device-to-host copy", e))?;
        self.sync()
    }

    /// Waits for the stream.
    pub(crate) fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| dev_err("stream", e))
    }

    /// A pooled f32 buffer of at least `len` values (returned with [`Device::give_f32`]).
    pub(crate) fn take_f32(&self, len: usize) -> Result<CudaSlice<f32>> {
        let mut pool = self.pool_f32.lock().unwrap_or_else(|p| p.into_inner());
        match pool.iter().position(|s| s.len() >= len) {
            Some(i) => Ok(pool.swap_remove(i)),
            None => self.zeros(len),
        }
    }

    /// Returns a buffer to the pool.
    pub(crate) fn give_f32(&self, s: CudaSlice<f32>) {
        self.pool_f32
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
    }

    /// A pooled u32 buffer of at least `len` values.
    pub(crate) fn take_u32(&self, len: usize) -> Result<CudaSlice<u32>> {
        let mut pool = self.pool_u32.lock().unwrap_or_else(|p| p.into_inner());
        match pool.iter().position(|s| s.len() >= len) {
            Some(i) => Ok(pool.swap_remove(i)),
            None => self.zeros(len),
        }
    }

    /// Returns a buffer to the pool.
    pub(crate) fn give_u32(&self, s: CudaSlice<u32>) {
        self.pool_u32
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
    }
}

/// Grows `slot` to hold at least `len` values (contents kept; new values zero).
pub(crate) fn grow<T: DeviceRepr + ValidAsZeroBits>(
    dev: &Device,
    slot: &mut Option<CudaSlice<T>>,
    len: usize,
) -> Result<()> {
    let cur = slot.as_ref().map_or(0, CudaSlice::len);
    if cur >= len {
        return Ok(());
    }
    let mut new = dev.zeros::<T>(len.max(cur + cur / 2))?;
    if let Some(old) = slot.as_ref() {
        let mut view = new.slice_mut(..cur);
        dev.stream
            .memcpy_dtod(old, &mut view)
            .map_err(|e| dev_err("device copy", e))?;
    }
    *slot = Some(new);
    Ok(())
}

/// Copies `host` into `slot` from element 0 (growing it) and returns its device address.
pub(crate) fn stage<T: DeviceRepr + ValidAsZeroBits>(
    dev: &Device,
    slot: &mut Option<CudaSlice<T>>,
    host: &[T],
) -> Result<u64> {
    grow(dev, slot, host.len().max(1))?;
    let s = slot.as_mut().expect("grown above");
    dev.write_at(host, s, 0)?;
    Ok(dev.ptr(s, 0))
}
