//! Element-wise activations, in place on a slice: exact (erf) GELU, ReLU, SiLU/swish, sigmoid,
//! tanh, identity; and their backward ([`backward`]: a gradient times the derivative at the
//! pre-activation input), which the trainer runs for every activation it differentiates.
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

/// The derivative of `act` at `x` (scalar reference): GELU `Φ(x) + x·φ(x)`, ReLU `[x > 0]`,
/// SiLU `σ(x)·(1 + x·(1 − σ(x)))`, sigmoid `σ(1 − σ)`, tanh `1 − tanh²`, GELU's tanh form
/// `½(1 + tanh u) + ½x(1 − tanh² u)·u'` with `u = √(2/π)(x + 0.044715x³)`.
#[inline]
pub fn derivative(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + math::erf(x * core::f32::consts::FRAC_1_SQRT_2));
            cdf + x * FRAC_1_SQRT_2PI * math::exp(-0.5 * x * x)
        }
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Silu => {
            let s = math::sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }
        Activation::Sigmoid => {
            let s = math::sigmoid(x);
            s * (1.0 - s)
        }
        Activation::Tanh => {
            let t = math::tanh(x);
            1.0 - t * t
        }
        Activation::Identity => 1.0,
        Activation::GeluTanh => {
            const C: f32 = math::GELU_TANH_C;
            let t = math::tanh(C * (x + 0.044_715 * x * x * x));
            let du = C * (1.0 + 3.0 * 0.044_715 * x * x);
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
        }
    }
}

/// `1/√(2π)`, the standard normal density at 0.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// The derivative of `act` on a SIMD vector (the same formulas as [`derivative`]).
#[inline(always)]
fn derivative_simd<S: Simd>(s: S, act: Activation, x: S::f32s) -> S::f32s {
    let one = s.splat_f32s(1.0);
    let half = s.splat_f32s(0.5);
    match act {
        Activation::Gelu => {
            let e = math::erf_f32s(
                s,
                s.mul_f32s(x, s.splat_f32s(core::f32::consts::FRAC_1_SQRT_2)),
            );
            let cdf = s.mul_f32s(half, s.add_f32s(one, e));
            let pdf = math::exp_f32s(s, s.mul_f32s(s.splat_f32s(-0.5), s.mul_f32s(x, x)));
            s.mul_add_f32s(s.mul_f32s(x, s.splat_f32s(FRAC_1_SQRT_2PI)), pdf, cdf)
        }
        Activation::Relu => s.select_f32s(
            s.greater_than_f32s(x, s.splat_f32s(0.0)),
            one,
            s.splat_f32s(0.0),
        ),
        Activation::Silu => {
            let g = math::sigmoid_f32s(s, x);
            s.mul_f32s(g, s.mul_add_f32s(x, s.sub_f32s(one, g), one))
        }
        Activation::Sigmoid => {
            let g = math::sigmoid_f32s(s, x);
            s.mul_f32s(g, s.sub_f32s(one, g))
        }
        Activation::Tanh => {
            let t = math::tanh_f32s(s, x);
            s.sub_f32s(one, s.mul_f32s(t, t))
        }
        Activation::Identity => one,
        Activation::GeluTanh => {
            let c = s.splat_f32s(math::GELU_TANH_C);
            let k = s.splat_f32s(0.044_715);
            let x2 = s.mul_f32s(x, x);
            let u = s.mul_f32s(c, s.mul_add_f32s(s.mul_f32s(k, x2), x, x));
            let t = math::tanh_f32s(s, u);
            let du = s.mul_f32s(c, s.mul_add_f32s(s.mul_f32s(s.splat_f32s(3.0), k), x2, one));
            let a = s.mul_f32s(half, s.add_f32s(one, t));
            let b = s.mul_f32s(
                s.mul_f32s(half, x),
                s.mul_f32s(s.sub_f32s(one, s.mul_f32s(t, t)), du),
            );
            s.add_f32s(a, b)
        }
    }
}

#[track_caller]
fn check_lengths(x: &[f32], d: &[f32]) {
    assert_eq!(
        x.len(),
        d.len(),
        "activation backward: {} inputs, {} gradients",
        x.len(),
        d.len()
    );
}

/// Reference backward: `d[i] *= derivative(act, x[i])`.
///
/// # Panics
/// If `x` and `d` differ in length.
pub fn backward_ref(act: Activation, x: &[f32], d: &mut [f32]) {
    check_lengths(x, d);
    for (g, &v) in d.iter_mut().zip(x) {
        *g *= derivative(act, v);
    }
}

struct BackwardBody<'a> {
    act: Activation,
    x: &'a [f32],
    d: &'a mut [f32],
}

impl WithSimd for BackwardBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let act = self.act;
        let (xh, xt) = S::as_simd_f32s(self.x);
        let (dh, dt) = S::as_mut_simd_f32s(self.d);
        for (g, &v) in dh.iter_mut().zip(xh) {
            *g = s.mul_f32s(*g, derivative_simd(s, act, v));
        }
        if !dt.is_empty() {
            let v = s.partial_load_f32s(xt);
            let g = s.partial_load_f32s(dt);
            s.partial_store_f32s(dt, s.mul_f32s(g, derivative_simd(s, act, v)));
        }
    }
}

/// [`backward_ref`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x` and `d` differ in length.
pub fn backward_isa(isa: Isa, act: Activation, x: &[f32], d: &mut [f32]) {
    check_lengths(x, d);
    if act == Activation::Identity {
        return;
    }
    isa.run(BackwardBody { act, x, d });
}

/// Turns the output gradient `d` into the input gradient in place, on the best instruction
/// set: `d[i] *= act'(x[i])`, `x` the pre-activation input. Tolerance against
/// [`backward_ref`]: absolute 1e-5 + relative 1e-5 per unit gradient (`1 − tanh²` and `1 − σ`
/// cancel where the function saturates).
#[inline]
pub fn backward(act: Activation, x: &[f32], d: &mut [f32]) {
    backward_isa(Isa::detect(), act, x, d);
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
            // Backward: an upstream gradient times the derivative at `x`.
            let g: Vec<f32> = (0..n).map(|_| rng.uniform(-2.0, 2.0)).collect();
            let mut want = g.clone();
            backward_ref(act, &x, &mut want);
            let mut got = g.clone();
            backward_isa(isa, act, &x, &mut got);
            // 1e-5: `1 − tanh²` and `1 − σ` cancel where the function saturates.
            assert_close(
                &alloc::format!("{} backward {isa} n={n}", act.name()),
                &got,
                &want,
                1e-5,
                1e-5,
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
    fn derivatives_match_finite_differences_of_the_forward() {
        for act in ALL {
            for &x in &[-3.1f32, -0.7, -0.01, 0.4, 1.3, 2.9] {
                let h = 1e-2f64;
                let f = |v: f64| {
                    let mut y = [v as f32];
                    activate_ref(act, &mut y);
                    f64::from(y[0])
                };
                let fd = (f(f64::from(x) + h) - f(f64::from(x) - h)) / (2.0 * h);
                let d = f64::from(derivative(act, x));
                assert!(
                    (fd - d).abs() < 2e-3,
                    "{} at {x}: derivative {d}, differences {fd}",
                    act.name()
                );
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for act in ALL {
            assert_eq!(Activation::from_name(act.name()), Some(act));
        }
        assert_eq!(Activation::from_name("gelu_new"), None);
    }
}
