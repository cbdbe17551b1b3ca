//! Run-time instruction-set selection for the pulp kernels.
//!
//! [`Isa::detect`] picks the best instruction set once (cached in an atomic); [`Isa::available`]
//! lists every path this CPU can run so that tests can force each of them against the reference.
//!
//! Levels, lowest first: `scalar` (pulp's portable instantiation), `v3` (x86-64-v3: AVX2 + FMA),
//! `v4` (x86-64-v4: AVX-512 F/BW/CD/DQ/VL, 16 lanes of f32; x86-64 only), `neon` (aarch64).
//! On top of `v4`, a few kernels use instruction-set extensions where the CPU has them
//! ([`Ext`]): AVX512-VNNI (`vpdpbusd`, the int8 catalog scan) and AVX512-BF16 (`vdpbf16ps`).
//!
//! Forcing: under `std`, the environment variable `SEQREC_ISA` caps the detected level, read
//! once, so that one machine can run and benchmark every path it supports:
//! `SEQREC_ISA=v3` runs the AVX2 paths on an AVX-512 machine, `SEQREC_ISA=scalar` the portable
//! ones. Comma-separated `no-vnni` / `no-bf16` turn an extension off (`SEQREC_ISA=v4,no-vnni`).
//! A level the CPU lacks, or an unknown name, is ignored with a notice on stderr (the best
//! level runs). Without `std` the best level always runs (detection through `cpuid`).
//!
//! Per family: on CPUs that execute 512-bit instructions as two 256-bit halves (AMD Zen 4,
//! [`Isa::half_width_avx512`]), the f32 multiply-add families ([`Isa::f32_level`]: the f32
//! products, the f32 catalog scans, attention and LayerNorm) run at `v3`, where they measured
//! faster (the same FMA rate, 256-bit tiles tuned for it, and a table streamed from memory
//! read faster with 256-bit loads); the integer and 16-bit families (int8 scan on VNNI, f16
//! and bf16 weights and tables, conversions), activations and the top-k selection run at
//! `v4`. `SEQREC_ISA=v4,uniform` runs every family at `v4`.
//! [`families`] names the level every kernel family runs at (shown by `seqrec info --cpu` and
//! in `seqrec bench`'s JSON).

use core::sync::atomic::{AtomicU8, Ordering};
use pulp::{Simd, WithSimd};

/// An instruction set a pulp kernel body can be instantiated for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// pulp's portable scalar instantiation of the SIMD body (not the plain-loop reference).
    Scalar,
    /// x86-64-v3: AVX2 + FMA (+ F16C), 8 lanes of f32.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    V3,
    /// x86-64-v4: AVX-512 F/BW/CD/DQ/VL (on top of v3), 16 lanes of f32.
    #[cfg(target_arch = "x86_64")]
    V4,
    /// aarch64 NEON, 4 lanes of f32.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

/// Index into [`Isa::ALL`] of the detected level; `u8::MAX` until the first [`Isa::detect`].
static DETECTED: AtomicU8 = AtomicU8::new(u8::MAX);
/// The enabled [`Ext`] bits plus [`EXT_KNOWN`] once detected.
static EXTS: AtomicU8 = AtomicU8::new(0);
const EXT_KNOWN: u8 = 0x80;
/// In [`EXTS`]: the f32 multiply-add families run at v3 ([`Isa::f32_level`]).
const NARROW_COMPUTE: u8 = 0x40;

/// Instruction-set extensions on top of [`Isa::V4`] that single kernels use.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ext {
    /// AVX512-VNNI: `vpdpbusd` (u8 × i8 dot products into i32), the int8 catalog scan.
    Vnni,
    /// AVX512-BF16: `vdpbf16ps` (bf16 pair dot products into f32), the bf16 catalog filter.
    Bf16,
}

impl Ext {
    /// Every extension, in the order of `Ext::bit`.
    pub const ALL: &'static [Ext] = &[Ext::Vnni, Ext::Bf16];

    fn bit(self) -> u8 {
        match self {
            Ext::Vnni => 1,
            Ext::Bf16 => 2,
        }
    }

    /// Short lower-case name ("vnni", "bf16").
    pub fn name(self) -> &'static str {
        match self {
            Ext::Vnni => "vnni",
            Ext::Bf16 => "bf16",
        }
    }

    /// Whether the CPU has the extension together with the AVX-512 level it builds on
    /// (whatever `SEQREC_ISA` says; see [`Ext::enabled`]).
    pub fn is_available(self) -> bool {
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        {
            if !Isa::V4.is_available() {
                return false;
            }
            match self {
                Ext::Vnni => std::arch::is_x86_feature_detected!("avx512vnni"),
                Ext::Bf16 => std::arch::is_x86_feature_detected!("avx512bf16"),
            }
        }
        #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
        {
            // No run-time detection of these without std: only what the build targets.
            Isa::V4.is_available()
                && match self {
                    Ext::Vnni => cfg!(target_feature = "avx512vnni"),
                    Ext::Bf16 => cfg!(target_feature = "avx512bf16"),
                }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// Whether the kernels use the extension: the CPU has it, the detected level is
    /// [`Isa::V4`] or above, and `SEQREC_ISA` does not turn it off. Detected once.
    #[inline]
    pub fn enabled(self) -> bool {
        let mut bits = EXTS.load(Ordering::Relaxed);
        if bits & EXT_KNOWN == 0 {
            Isa::detect();
            bits = EXTS.load(Ordering::Relaxed);
        }
        bits & self.bit() != 0
    }
}

/// What `SEQREC_ISA` asks for: a level cap and the extensions turned off.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Forced {
    /// The highest level to run, if one was named.
    pub level: Option<Isa>,
    /// Extensions turned off ([`Ext::bit`] bits).
    off: u8,
    /// `uniform`: every family at the level, whatever [`Isa::half_width_avx512`] says.
    pub uniform: bool,
}

impl Forced {
    /// Parses a `SEQREC_ISA` value (`LEVEL[,no-EXT]...`, case-insensitive; empty parts
    /// ignored).
    ///
    /// # Errors
    /// The first part that names no level of this build and no `no-EXT`.
    pub fn parse(value: &str) -> Result<Forced, &str> {
        let mut forced = Forced {
            level: None,
            off: 0,
            uniform: false,
        };
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(isa) = Isa::ALL
                .iter()
                .find(|i| i.name().eq_ignore_ascii_case(part))
            {
                forced.level = Some(*isa);
            } else if let Some(ext) = Ext::ALL.iter().find(|e| {
                part.len() == 3 + e.name().len()
                    && part[..3].eq_ignore_ascii_case("no-")
                    && part[3..].eq_ignore_ascii_case(e.name())
            }) {
                forced.off |= ext.bit();
            } else if part.eq_ignore_ascii_case("uniform") {
                forced.uniform = true;
            } else {
                return Err(part);
            }
        }
        Ok(forced)
    }

    /// Whether the extension is turned off.
    pub fn turns_off(&self, ext: Ext) -> bool {
        self.off & ext.bit() != 0
    }
}

/// The name of the environment variable that forces a level.
pub const ISA_ENV: &str = "SEQREC_ISA";

/// What `SEQREC_ISA` asks for (nothing without `std` or when unset); a bad value is reported
/// on stderr and ignored.
fn forced() -> Forced {
    #[cfg(feature = "std")]
    if let Ok(value) = std::env::var(ISA_ENV) {
        match Forced::parse(&value) {
            Ok(f) => {
                if let Some(level) = f.level.filter(|l| !l.is_available()) {
                    std::eprintln!(
                        "seqrec: {ISA_ENV}={value}: this CPU cannot run {level}; using the best level"
                    );
                    return Forced { level: None, ..f };
                }
                return f;
            }
            Err(part) => std::eprintln!(
                "seqrec: {ISA_ENV}={value}: unknown part {part:?} (levels: {}; no-vnni, no-bf16, uniform); ignored",
                Isa::ALL
                    .iter()
                    .map(|i| i.name())
                    .collect::<std::vec::Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Forced {
        level: None,
        off: 0,
        uniform: false,
    }
}

impl Isa {
    /// Every variant compiled into this build, best last.
    pub const ALL: &'static [Isa] = &[
        Isa::Scalar,
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Isa::V3,
        #[cfg(target_arch = "x86_64")]
        Isa::V4,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon,
    ];

    /// Short lower-case name used in test and bench output and by `SEQREC_ISA` ("scalar",
    /// "v3", "v4", "neon").
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::V3 => "v3",
            #[cfg(target_arch = "x86_64")]
            Isa::V4 => "v4",
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => "neon",
        }
    }

    /// Human-readable description of the instruction set ("x86-64-v3 (AVX2+FMA)").
    pub fn describe(self) -> &'static str {
        match self {
            Isa::Scalar => "portable scalar",
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::V3 => "x86-64-v3 (AVX2+FMA)",
            #[cfg(target_arch = "x86_64")]
            Isa::V4 => "x86-64-v4 (AVX-512)",
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => "aarch64 NEON",
        }
    }

    /// Whether this CPU can run the instruction set.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::V3 => pulp::x86::V3::try_new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::V4 => pulp::x86::V4::try_new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => pulp::aarch64::NeonFcma::try_new().is_some(),
        }
    }

    /// The instruction set the kernels run: the best of this CPU, capped by `SEQREC_ISA`;
    /// detected once.
    #[inline]
    pub fn detect() -> Isa {
        let cached = DETECTED.load(Ordering::Relaxed);
        if let Some(isa) = Self::ALL.get(cached as usize) {
            return *isa;
        }
        let forced = forced();
        let (idx, best) = Self::ALL
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, isa)| forced.level.is_none_or(|cap| **isa <= cap))
            .find(|(_, isa)| isa.is_available())
            .map(|(i, isa)| (i, *isa))
            .unwrap_or((0, Isa::Scalar));
        let mut exts = EXT_KNOWN;
        for &ext in Ext::ALL {
            if best.has_avx512() && ext.is_available() && !forced.turns_off(ext) {
                exts |= ext.bit();
            }
        }
        if best.has_avx512() && !forced.uniform && Self::half_width_avx512() {
            exts |= NARROW_COMPUTE;
        }
        EXTS.store(exts, Ordering::Relaxed);
        DETECTED.store(idx as u8, Ordering::Relaxed);
        best
    }

    /// The level of the f32 multiply-add families (f32 products, f32 catalog scans, attention,
    /// LayerNorm): the detected level, or [`Isa::V3`] where the CPU runs AVX-512 at half width
    /// (see the module docs). Detected once.
    #[inline]
    pub fn f32_level() -> Isa {
        let isa = Self::detect();
        #[cfg(target_arch = "x86_64")]
        if EXTS.load(Ordering::Relaxed) & NARROW_COMPUTE != 0 {
            return Isa::V3;
        }
        isa
    }

    /// Whether the CPU executes 512-bit instructions as two 256-bit halves, so that AVX-512
    /// brings no more multiply-adds per cycle than AVX2: AMD family 19h with AVX-512 (Zen 4).
    pub fn half_width_avx512() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::__cpuid;
            // `__cpuid` became a safe function after the minimum Rust version of this crate.
            #[allow(unused_unsafe)]
            // SAFETY: every x86-64 CPU has `cpuid` with leaves 0 and 1.
            let (vendor, eax) = unsafe { (__cpuid(0), __cpuid(1).eax) };
            // "AuthenticAMD" in ebx, edx, ecx.
            let amd =
                (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
            let family = ((eax >> 8) & 0xF) + ((eax >> 20) & 0xFF);
            amd && family == 0x19 && Isa::V4.is_available()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Whether the level includes AVX-512.
    pub fn has_avx512(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self >= Isa::V4
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// The instruction sets this CPU can run, scalar first.
    pub fn available() -> impl Iterator<Item = Isa> {
        Self::ALL.iter().copied().filter(|isa| isa.is_available())
    }

    /// Runs a pulp kernel body instantiated for this instruction set. Falls back to the scalar
    /// instantiation when the CPU lacks it, so the call is always sound.
    #[inline(always)]
    pub fn run<Op: WithSimd>(self, op: Op) -> Op::Output {
        match self {
            Isa::Scalar => Simd::vectorize(pulp::Scalar::new(), op),
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::V3 => match pulp::x86::V3::try_new() {
                Some(simd) => Simd::vectorize(simd, op),
                None => Simd::vectorize(pulp::Scalar::new(), op),
            },
            #[cfg(target_arch = "x86_64")]
            Isa::V4 => match pulp::x86::V4::try_new() {
                Some(simd) => Simd::vectorize(simd, op),
                None => Simd::vectorize(pulp::Scalar::new(), op),
            },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => match pulp::aarch64::NeonFcma::try_new() {
                Some(simd) => Simd::vectorize(simd, op),
                None => Simd::vectorize(pulp::Scalar::new(), op),
            },
        }
    }
}

impl core::fmt::Display for Isa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel family and the path it runs on this CPU.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Family {
    /// The family ("products", "scan int8", ...).
    pub name: &'static str,
    /// Its path: a level name, with the extension it uses ("v4+vnni").
    pub level: &'static str,
}

/// The path each kernel family runs at on this CPU (after `SEQREC_ISA`).
pub fn families() -> [Family; 13] {
    let isa = Isa::detect().name();
    let f32_isa = Isa::f32_level().name();
    let int8 = if crate::cpu::score::i8_uses_vnni() {
        "v4+vnni"
    } else if Isa::detect() == Isa::Scalar {
        "scalar"
    } else {
        // The AVX2 integer body serves every x86 level without VNNI.
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            "v3"
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        {
            "scalar"
        }
    };
    let bf16_filter = if Isa::detect().has_avx512() && crate::cpu::score::bf16_uses_dp() {
        "v4+bf16"
    } else {
        "off (exact bf16 scan)"
    };
    let f = |name, level| Family { name, level };
    [
        f("products f32 (few rows, small, broadcast tiles)", f32_isa),
        f("products f16/i16 weights (text encoder)", isa),
        f("gemv f16/bf16 tables", isa),
        f("scan f32 (dot tiles, batch tiles)", f32_isa),
        f("scan int8 (bound + f32 re-score)", int8),
        f("scan bf16 filter (bound + exact re-score)", bf16_filter),
        f("attention", f32_isa),
        f("layer norm", f32_isa),
        f("activations, softmax", isa),
        f("gru", isa),
        f("conv", isa),
        f("f16/bf16 conversions, gathers", isa),
        f("top-k selection (skip test)", isa),
    ]
}

/// Chains of fused multiply-adds that keep every FMA port busy: 12 independent accumulators
/// (enough to cover the FMA latency times the ports of current x86 and Arm cores), each
/// `acc = acc·a + b` `iters` times. Returns the f32 operations performed (2 per lane per FMA)
/// and a value that depends on every accumulator (for the caller to keep). Timing it gives
/// the single-thread peak FMA rate of `isa` (what `seqrec bench --kernels` compares the
/// products with).
pub fn fma_peak_isa(isa: Isa, iters: usize) -> (f64, f32) {
    struct Peak {
        iters: usize,
    }
    impl WithSimd for Peak {
        type Output = (f64, f32);
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) -> (f64, f32) {
            const CHAINS: usize = 12;
            let a = s.splat_f32s(0.999_999);
            let b = s.splat_f32s(1e-7);
            let mut acc = [s.splat_f32s(1.0); CHAINS];
            for _ in 0..self.iters {
                for v in acc.iter_mut() {
                    *v = s.mul_add_f32s(*v, a, b);
                }
            }
            let mut sum = s.splat_f32s(0.0);
            for v in acc {
                sum = s.add_f32s(sum, v);
            }
            let flops = (self.iters * CHAINS * S::F32_LANES * 2) as f64;
            (flops, s.reduce_sum_f32s(sum))
        }
    }
    isa.run(Peak { iters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_levels_and_extensions() {
        assert_eq!(Forced::parse("").unwrap().level, None);
        assert_eq!(Forced::parse("Scalar").unwrap().level, Some(Isa::Scalar));
        #[cfg(target_arch = "x86_64")]
        {
            let f = Forced::parse("v4, no-vnni").unwrap();
            assert_eq!(f.level, Some(Isa::V4));
            assert!(f.turns_off(Ext::Vnni) && !f.turns_off(Ext::Bf16));
            assert_eq!(Forced::parse("v3").unwrap().level, Some(Isa::V3));
            assert!(Forced::parse("v4,uniform").unwrap().uniform);
        }
        assert_eq!(Forced::parse("v9"), Err("v9"));
        assert_eq!(Forced::parse("no-avx"), Err("no-avx"));
    }

    #[test]
    fn levels_are_ordered_and_detect_is_available() {
        assert!(Isa::ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(Isa::detect().is_available());
        for ext in Ext::ALL {
            if ext.enabled() {
                assert!(ext.is_available() && Isa::detect().has_avx512());
            }
        }
        assert_eq!(families().len(), 13);
        assert!(Isa::f32_level() <= Isa::detect() && Isa::f32_level().is_available());
    }
}
