//! The CUDA kernel sources (`kernels/cuda/*.cu`, one file per op family) and their run-time
//! compilation with NVRTC (through `cudarc`, loaded dynamically).
//!
//! Each source is compiled as one translation unit: [`PRELUDE`] (shared helpers: f16/bf16
//! bit conversions, activations, warp and block reductions) followed by the file. Kernel
//! symbols are `<op>_<dtype>[_<variant>]`, the names the engine's launchers use; every file
//! documents its layouts and its tolerance against the CPU reference at its top.
//!
//! Nothing here touches a GPU: [`compile`] needs only the NVRTC library, so the compile test
//! runs wherever `libnvrtc` is installed (CI gets it from the Python package
//! `nvidia-cuda-nvrtc`). cudarc panics when it cannot find a library it needs, so every entry
//! point here probes first ([`nvrtc_available`], [`driver_available`]) and returns an error.

use std::ffi::{CStr, CString};
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

/// An environment variable naming a folder of prebuilt cubins (`<family>.sm_<cc>.cubin`, as
/// `examples/cuda-cubins.rs` writes them): where it is set, a device loads its kernels from
/// there instead of compiling them, and needs no NVRTC (opt-in; nothing is ever written there
/// at run time).
pub const PREBUILT_ENV: &str = "SEQREC_CUDA_KERNELS";

/// The file name of family `family`'s cubin for compute capability `cc` (90 for sm_90).
pub fn cubin_name(family: &str, cc: u32) -> String {
    format!("{family}.sm_{cc}.cubin")
}

/// The prebuilt cubin of `family` for `cc` from the folder [`PREBUILT_ENV`] names, if that
/// variable is set and the file exists.
pub fn prebuilt(family: &str, cc: u32) -> Option<Vec<u8>> {
    let dir = std::env::var_os(PREBUILT_ENV)?;
    std::fs::read(std::path::Path::new(&dir).join(cubin_name(family, cc))).ok()
}

/// Helpers prepended to every source.
pub const PRELUDE: &str = include_str!("../cuda/prelude.cuh");

/// Every kernel source: `(family, CUDA C)`, the family named as its file.
pub const SOURCES: &[(&str, &str)] = &[
    ("activation", include_str!("../cuda/activation.cu")),
    ("attention", include_str!("../cuda/attention.cu")),
    ("conv", include_str!("../cuda/conv.cu")),
    ("convert", include_str!("../cuda/convert.cu")),
    ("elementwise", include_str!("../cuda/elementwise.cu")),
    ("embedding", include_str!("../cuda/embedding.cu")),
    ("gru", include_str!("../cuda/gru.cu")),
    ("linear", include_str!("../cuda/linear.cu")),
    ("norm", include_str!("../cuda/norm.cu")),
    ("score", include_str!("../cuda/score.cu")),
];

/// The translation unit of family `family` (prelude + file), or `None` for an unknown family.
pub fn source(family: &str) -> Option<String> {
    SOURCES
        .iter()
        .find(|(name, _)| *name == family)
        .map(|(_, src)| format!("{PRELUDE}\n// ---- {family}.cu\n{src}"))
}

/// Whether the NVRTC library can be loaded (cudarc would panic on first use otherwise).
pub fn nvrtc_available() -> bool {
    // SAFETY: loading a shared library runs its initialisers; libnvrtc's are those of any
    // process that links it. The library is unloaded again when the probe's handle drops.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library (`libcuda`) can be loaded. It says nothing about devices:
/// a machine may have the library and no GPU (see the engine's `Cuda::new`).
pub fn driver_available() -> bool {
    // SAFETY: as in `nvrtc_available`, for libcuda.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// What [`compile`] makes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// PTX for a virtual architecture (`compute_80`): loadable by any later device, JIT-compiled
    /// by the driver (whose PTX ISA must be at least NVRTC's).
    Ptx(u32),
    /// A cubin for one real architecture (`sm_90`): no JIT and no PTX-version constraint, the
    /// form the engine loads.
    Cubin(u32),
}

/// A compile failure: the NVRTC library is missing, or the source did not compile (with
/// NVRTC's log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileError {
    /// `libnvrtc` could not be loaded.
    NoNvrtc,
    /// An unknown family name.
    UnknownFamily(String),
    /// NVRTC refused the source.
    Failed {
        /// The family.
        family: String,
        /// What failed (NVRTC's status) and its log.
        log: String,
    },
}

impl core::fmt::Display for CompileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CompileError::NoNvrtc => write!(
                f,
                "the NVRTC library (libnvrtc) is not installed or not on LD_LIBRARY_PATH"
            ),
            CompileError::UnknownFamily(n) => write!(f, "no CUDA kernel family `{n}`"),
            CompileError::Failed { family, log } => {
                write!(f, "NVRTC failed to compile {family}.cu: {log}")
            }
        }
    }
}

impl std::error::Error for CompileError {}

/// Compiles kernel family `family` for `target` with NVRTC: the PTX text (NUL-terminated) or
/// the cubin bytes, ready for `CudaContext::load_module` (as `Ptx::from_binary`).
pub fn compile(family: &str, target: Target) -> Result<Vec<u8>, CompileError> {
    if !nvrtc_available() {
        return Err(CompileError::NoNvrtc);
    }
    let src = source(family).ok_or_else(|| CompileError::UnknownFamily(family.to_string()))?;
    let failed = |log: String| CompileError::Failed {
        family: family.to_string(),
        log,
    };
    let arch = match target {
        Target::Ptx(cc) => format!("--gpu-architecture=compute_{cc}"),
        Target::Cubin(cc) => format!("--gpu-architecture=sm_{cc}"),
    };
    let opts = [arch, "--std=c++17".to_string(), "--fmad=true".to_string()];
    let csrc = CString::new(src).map_err(|_| failed("the source holds a NUL byte".into()))?;
    let name = CString::new(format!("{family}.cu")).expect("family names hold no NUL");
    use cudarc::nvrtc::result;
    let prog = result::create_program(&csrc, Some(&name)).map_err(|e| failed(format!("{e:?}")))?;
    // SAFETY: `prog` was just created and is destroyed exactly once, below.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let out = match compiled {
        Err(e) => {
            // SAFETY: `prog` is live; the log is NUL-terminated by NVRTC.
            let log = unsafe { result::get_program_log(prog) }
                .map(|raw| {
                    // SAFETY: `raw` holds the NUL-terminated log.
                    unsafe { CStr::from_ptr(raw.as_ptr()) }
                        .to_string_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            Err(failed(format!("{e:?}\n{log}")))
        }
        Ok(()) => match target {
            // SAFETY: `prog` is live and compiled.
            Target::Ptx(_) => unsafe { result::get_ptx(prog) }
                .map(|p| p.into_iter().map(|c| c as u8).collect())
                .map_err(|e| failed(format!("{e:?}"))),
            // SAFETY: `prog` is live and compiled for a real architecture.
            Target::Cubin(_) => unsafe { cubin(prog) }.map_err(|e| failed(format!("{e:?}"))),
        },
    };
    // SAFETY: `prog` is live and not used after this.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// The cubin of a program compiled for a real architecture.
///
/// # Safety
/// `prog` must be a live program that compiled successfully.
unsafe fn cubin(prog: cudarc::nvrtc::sys::nvrtcProgram) -> Result<Vec<u8>, String> {
    use cudarc::nvrtc::sys;
    let mut size = 0usize;
    // SAFETY: `prog` is live (the caller's contract); `size` is a valid out-pointer.
    let r = unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) };
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcGetCUBINSize: {r:?}"));
    }
    let mut buf = std::vec![0u8; size];
    // SAFETY: `buf` holds the `size` bytes NVRTC reported for this program's cubin.
    let r = unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast()) };
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcGetCUBIN: {r:?}"));
    }
    Ok(buf)
}
