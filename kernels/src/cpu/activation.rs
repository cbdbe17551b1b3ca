//! Element-wise activations, in place on a slice: exact (erf) GELU, ReLU, SiLU/swish, sigmoid,
//! tanh, identity.
//!
//! Layout: any contiguous `f32` slice. Tolerance of the SIMD paths against the f32 `libm`
//! reference: absolute 1e-6 + relative 1e-6 (the polynomial errors are listed in
//! [`super::math`]); ReLU and identity are exact.

use super::isa::Isa;
use super::math;
use pulp::{Simd, WithSimd};

pub use crate::Activation;

/// The CPU's evaluation of an [`Activation`]: the scalar reference and the SIMD body.
trait Eval {
    fn eval(self, x: f32) -> f32;
    fn eval_simd<S: Simd>(self, s: S, x: S::f32s) -> S::f32s;
}

impl Eval for Activation {
    /// The scalar function (reference).
    #[inline]
    fn eval(self, x: f32) -> f32 {
        match self {
            Activation::Gelu => math::gelu(x),
            Activation::Relu => x.max(0.0),
            Activation::Silu => x * math::sigmoid(x),
            Activation::Sigmoid => math::sigmoid(x),
            Activation::Tanh => math::tanh(x),
            Activation::Identity => x,
            Activation::GeluTanh => math::gelu_tanh(x),
        }
    }

    #[inline(always)]
    fn eval_simd<S: Simd>(self, s: S, x: S::f32s) -> S::f32s {
        match self {
            Activation::Gelu => math::gelu_f32s(s, x),
            Activation::Relu => s.max_f32s(x, s.splat_f32s(0.0)),
            Activation::Silu => s.mul_f32s(x, math::sigmoid_f32s(s, x)),
            Activation::Sigmoid => math::sigmoid_f32s(s, x),
            Activation::Tanh => math::tanh_f32s(s, x),
            Activation::Identity => x,
            Activation::GeluTanh => math::gelu_tanh_f32s(s, x),
        }
    }
}

/// Reference: applies `act` element by element with the scalar `libm` functions.
pub fn activate_ref(act: Activation, x: &mut [f32]) {
    for v in x {
        *v = act.eval(*v);
    }
}

struct ActivateBody<'a> {
    act: Activation,
    x: &'a mut [f32],
}

impl WithSimd for ActivateBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let act = self.act;
        let (head, tail) = S::as_mut_simd_f32s(self.x);
        for v in head {
            *v = act.eval_simd(s, *v);
        }
        if !tail.is_empty() {
            let v = s.partial_load_f32s(tail);
            s.partial_store_f32s(tail, act.eval_simd(s, v));
        }
    }
}

/// Applies `act` in place with the pulp body instantiated for `isa`.
pub fn activate_isa(isa: Isa, act: Activation, x: &mut [f32]) {
    if act == Activation::Identity {
        return;
    }
    isa.run(ActivateBody { act, x });
}

/// Applies `act` in place on the best instruction set.
#[inline]
pub fn activate(act: Activation, x: &mut [f32]) {
    activate_isa(Isa::detect(), act, x);
}

/// Exact GELU in place (fast path).
#[inline]
pub fn gelu(x: &mut [f32]) {
    activate(Activation::Gelu, x);
}
/// ReLU in place (fast path).
#[inline]
pub fn relu(x: &mut [f32]) {
    activate(Activation::Relu, x);
}
/// SiLU / swish in place (fast path).
#[inline]
pub fn silu(x: &mut [f32]) {
    activate(Activation::Silu, x);
}
/// Sigmoid in place (fast path).
#[inline]
pub fn sigmoid(x: &mut [f32]) {
    activate(Activation::Sigmoid, x);
}
/// tanh in place (fast path).
#[inline]
pub fn tanh(x: &mut [f32]) {
    activate(Activation::Tanh, x);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng, assert_close};
    use alloc::vec::Vec;

    const ALL: [Activation; 7] = [
        Activation::Gelu,
        Activation::Relu,
        Activation::Silu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Identity,
        Activation::GeluTanh,
    ];

    fn check(isa: Isa, act: Activation) {
        let mut rng = Rng::new(11);
        for &n in AWKWARD_SIZES.iter().chain(&[0usize, 1000]) {
            let x: Vec<f32> = (0..n).map(|_| rng.uniform(-9.0, 9.0)).collect();
            let mut want = x.clone();
            activate_ref(act, &mut want);
            let mut got = x.clone();
            activate_isa(isa, act, &mut got);
            // Tolerance: 1e-6 absolute + 1e-6 relative (polynomial approximations, see math.rs).
            assert_close(
                &alloc::format!("{} {isa} n={n}", act.name()),
                &got,
                &want,
                1e-6,
                1e-6,
            );
        }
    }

    fn check_gelu(isa: Isa) {
        check(isa, ALL[0]);
    }
    fn check_relu(isa: Isa) {
        check(isa, ALL[1]);
    }
    fn check_silu(isa: Isa) {
        check(isa, ALL[2]);
    }
    fn check_sigmoid(isa: Isa) {
        check(isa, ALL[3]);
    }
    fn check_tanh(isa: Isa) {
        check(isa, ALL[4]);
    }
    fn check_identity(isa: Isa) {
        check(isa, ALL[5]);
    }
    fn check_gelu_tanh(isa: Isa) {
        check(isa, ALL[6]);
    }
    crate::isa_tests!(gelu, check_gelu);
    crate::isa_tests!(relu, check_relu);
    crate::isa_tests!(silu, check_silu);
    crate::isa_tests!(sigmoid, check_sigmoid);
    crate::isa_tests!(tanh, check_tanh);
    crate::isa_tests!(identity, check_identity);
    crate::isa_tests!(gelu_tanh, check_gelu_tanh);

    #[test]
    fn gelu_tanh_is_the_tanh_approximation() {
        // The tanh approximation at 1 is 0.8411920 (the erf form 0.8413447).
        let mut x = [1.0f32, -3.0];
        activate(Activation::GeluTanh, &mut x);
        assert!((x[0] - 0.841_192).abs() < 1e-6, "{}", x[0]);
        assert!((x[1] + 0.003_637_392).abs() < 1e-6, "{}", x[1]);
    }

    #[test]
    fn gelu_is_the_erf_form_not_tanh() {
        // erf-form GELU(1) = 0.8413447; the tanh approximation gives 0.8411920.
        let mut x = [1.0f32];
        gelu(&mut x);
        assert!((x[0] - 0.841_344_7).abs() < 1e-6, "{}", x[0]);
    }

    #[test]
    fn names_round_trip() {
        for act in ALL {
            assert_eq!(Activation::from_name(act.name()), Some(act));
        }
        assert_eq!(Activation::from_name("gelu_new"), None);
    }
}
