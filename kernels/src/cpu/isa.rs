//! Run-time instruction-set selection for the pulp kernels.
//!
//! [`Isa::detect`] picks the best instruction set once (cached in an atomic); [`Isa::available`]
//! lists every path this CPU can run so that tests can force each of them against the reference.

use core::sync::atomic::{AtomicU8, Ordering};
use pulp::{Simd, WithSimd};

/// An instruction set a pulp kernel body can be instantiated for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// pulp's portable scalar instantiation of the SIMD body (not the plain-loop reference).
    Scalar,
    /// x86-64-v3: AVX2 + FMA (+ F16C), 8 lanes of f32.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    V3,
    /// aarch64 NEON, 4 lanes of f32.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

static DETECTED: AtomicU8 = AtomicU8::new(u8::MAX);

impl Isa {
    /// Every variant compiled into this build, best last.
    pub const ALL: &'static [Isa] = &[
        Isa::Scalar,
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Isa::V3,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon,
    ];

    /// Short lower-case name used in test and bench output ("scalar", "v3", "neon").
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::V3 => "v3",
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => "neon",
        }
    }

    /// Human-readable description of the instruction set ("AVX2+FMA").
    pub fn describe(self) -> &'static str {
        match self {
            Isa::Scalar => "portable scalar",
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::V3 => "x86-64-v3 (AVX2+FMA)",
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
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => pulp::aarch64::NeonFcma::try_new().is_some(),
        }
    }

    /// The best instruction set of this CPU, detected once.
    #[inline]
    pub fn detect() -> Isa {
        let cached = DETECTED.load(Ordering::Relaxed);
        if let Some(isa) = Self::ALL.get(cached as usize) {
            return *isa;
        }
        let (idx, best) = Self::ALL
            .iter()
            .enumerate()
            .rev()
            .find(|(_, isa)| isa.is_available())
            .map(|(i, isa)| (i, *isa))
            .unwrap_or((0, Isa::Scalar));
        DETECTED.store(idx as u8, Ordering::Relaxed);
        best
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
