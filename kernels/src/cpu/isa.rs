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

/// Instruction-set extensions on top of [`Isa::V4`] that single kernels use.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ext {
    /// AVX512-VNNI: `vpdpbusd` (u8 × i8 dot products into i32), the int8 catalog scan.
    Vnni,
    /// AVX512-BF16: `vdpbf16ps` (bf16 pair dot products into f32).
    Bf16,
}

impl Ext {
    /// Every extension, in the order of [`Ext::bit`].
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
                "seqrec: {ISA_ENV}={value}: unknown part {part:?} (levels: {}; no-vnni, no-bf16); ignored",
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
        EXTS.store(exts, Ordering::Relaxed);
        DETECTED.store(idx as u8, Ordering::Relaxed);
        best
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
pub fn families() -> [Family; 12] {
    let isa = Isa::detect().name();
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
    let f = |name, level| Family { name, level };
    [
        f("products f32 (few rows, small, broadcast tiles)", isa),
        f("products f16/i16 weights (text encoder)", isa),
        f("gemv f16/bf16 tables", isa),
        f("scan f32 + top-k", isa),
        f("scan int8 (bound + f32 re-score)", int8),
        f("attention", isa),
        f("layer norm", isa),
        f("activations, softmax", isa),
        f("gru", isa),
        f("conv", isa),
        f("f16/bf16 conversions, gathers", isa),
        f("top-k selection", isa),
    ]
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
        assert_eq!(families().len(), 12);
    }
}
