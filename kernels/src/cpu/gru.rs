//! One layer of a gated recurrent unit, exactly PyTorch's `nn.GRU` (as used by GRU4Rec).
//!
//! Layout: row-major `f32`. The input sequence `x` is `[steps, input]`, the weights are stored as
//! PyTorch stores them: `w_ih` `[3·hidden, input]`, `w_hh` `[3·hidden, hidden]`, with the row
//! blocks ordered **[r; z; n]** (reset, update, new), and the optional biases `b_ih`, `b_hh` are
//! `[3·hidden]` (RecBole's GRU4Rec has none). Per step, with `gi = W_ih·x_t + b_ih` and
//! `gh = W_hh·h + b_hh`:
//!
//! ```text
//! r  = σ(gi_r + gh_r)
//! z  = σ(gi_z + gh_z)
//! n  = tanh(gi_n + r ⊙ gh_n)      (the reset gate scales the RESULT of W_hn·h + b_hn)
//! h' = (1 − z) ⊙ n + z ⊙ h
//! ```
//!
//! Paths: [`gru_layer_ref`] plain loops, f64 inside a step, the state rounded to f32 between
//! steps as the f32 kernels store it; [`gru_layer_isa`] the input projection of all steps with
//! the register-blocked kernels of [`super::linear`] for `isa`, then one pulp body for the
//! whole recurrence (per step an eight-rows-at-a-time `W_hh·h` product fused with the gate
//! nonlinearities of [`super::math`]); [`gru_layer`] the same on the best instruction set, the
//! input projection through the fast path [`super::linear::linear`] (allocation-free at every
//! per-request shape). [`gru_step`] advances a carried state by one event given its
//! precomputed input projection (sessions).
//!
//! Tolerance of every fast path against the reference: 2e-6 absolute on every output and on the
//! final state, over up to 60 steps with pre-activations of order one (observed at most 5e-7:
//! the sigmoid and tanh polynomials are accurate to 3e-7, the rest is f32 rounding of the dot
//! products carried through the recurrence). One step alone: 1e-6.

use super::isa::Isa;
use super::linear::{linear, linear_isa};
use super::math::{sigmoid_f32s, tanh_f32s};
use core::ops::Range;
use core::sync::atomic::{AtomicUsize, Ordering};
use pulp::{Simd, WithSimd};

/// Length of the `scratch` slice [`gru_layer`] and [`gru_layer_isa`] need: the input projections
/// of all steps (`steps·3·hidden`) followed by one recurrent projection (`3·hidden`).
pub fn gru_scratch_len(steps: usize, hidden: usize) -> usize {
    (steps + 1) * 3 * hidden
}

#[track_caller]
fn check_recurrent(w_hh: &[f32], b_hh: Option<&[f32]>, hidden: usize, h: &[f32]) {
    assert_eq!(
        w_hh.len(),
        3 * hidden * hidden,
        "gru: w_hh has {} values, expected 3·hidden·hidden = 3·{hidden}·{hidden}",
        w_hh.len()
    );
    if let Some(b) = b_hh {
        assert_eq!(
            b.len(),
            3 * hidden,
            "gru: b_hh has {} values, expected 3·hidden = 3·{hidden}",
            b.len()
        );
    }
    assert_eq!(
        h.len(),
        hidden,
        "gru: h has {} values, expected hidden = {hidden}",
        h.len()
    );
}

#[track_caller]
fn check_layer(
    x: &[f32],
    steps: usize,
    input: usize,
    hidden: usize,
    w_ih: &[f32],
    w_hh: &[f32],
    b_ih: Option<&[f32]>,
    b_hh: Option<&[f32]>,
    h: &[f32],
    out: &[f32],
) {
    assert_eq!(
        x.len(),
        steps * input,
        "gru: x has {} values, expected steps·input = {steps}·{input}",
        x.len()
    );
    assert_eq!(
        w_ih.len(),
        3 * hidden * input,
        "gru: w_ih has {} values, expected 3·hidden·input = 3·{hidden}·{input}",
        w_ih.len()
    );
    if let Some(b) = b_ih {
        assert_eq!(
            b.len(),
            3 * hidden,
            "gru: b_ih has {} values, expected 3·hidden = 3·{hidden}",
            b.len()
        );
    }
    check_recurrent(w_hh, b_hh, hidden, h);
    assert_eq!(
        out.len(),
        steps * hidden,
        "gru: out has {} values, expected steps·hidden = {steps}·{hidden}",
        out.len()
    );
}

#[track_caller]
fn check_scratch(scratch: &[f32], needed: usize) {
    assert!(
        scratch.len() >= needed,
        "gru: scratch has {} values, expected at least {needed}",
        scratch.len()
    );
}

fn sigmoid_f64(x: f64) -> f64 {
    1.0 / (1.0 + libm::exp(-x))
}

/// One reference step in f64 from the f64 input projection `gi` (`[3·hidden]`, bias included).
fn step_ref(gi: &[f64], w_hh: &[f32], b_hh: Option<&[f32]>, hidden: usize, h: &mut [f32]) {
    let gh: alloc::vec::Vec<f64> = (0..3 * hidden)
        .map(|i| {
            let mut acc = b_hh.map_or(0.0, |b| b[i] as f64);
            for p in 0..hidden {
                acc += w_hh[i * hidden + p] as f64 * h[p] as f64;
            }
            acc
        })
        .collect();
    for j in 0..hidden {
        let r = sigmoid_f64(gi[j] + gh[j]);
        let z = sigmoid_f64(gi[hidden + j] + gh[hidden + j]);
        let n = libm::tanh(gi[2 * hidden + j] + r * gh[2 * hidden + j]);
        h[j] = ((1.0 - z) * n + z * h[j] as f64) as f32;
    }
}

/// Reference GRU layer: plain loops, f64 within a step, `libm` nonlinearities. `h` holds the
/// initial state on entry and the final state on return; `out` receives every step's state.
///
/// # Panics
/// If a slice length does not match the shapes (see [`gru_layer`]).
pub fn gru_layer_ref(
    x: &[f32],
    steps: usize,
    input: usize,
    hidden: usize,
    w_ih: &[f32],
    w_hh: &[f32],
    b_ih: Option<&[f32]>,
    b_hh: Option<&[f32]>,
    h: &mut [f32],
    out: &mut [f32],
) {
    check_layer(x, steps, input, hidden, w_ih, w_hh, b_ih, b_hh, h, out);
    let mut gi = alloc::vec![0.0f64; 3 * hidden];
    for t in 0..steps {
        let xt = &x[t * input..(t + 1) * input];
        for (i, g) in gi.iter_mut().enumerate() {
            let mut acc = b_ih.map_or(0.0, |b| b[i] as f64);
            for p in 0..input {
                acc += w_ih[i * input + p] as f64 * xt[p] as f64;
            }
            *g = acc;
        }
        step_ref(&gi, w_hh, b_hh, hidden, h);
        out[t * hidden..(t + 1) * hidden].copy_from_slice(h);
    }
}

/// Reference single step from a precomputed input projection `gi = W_ih·x + b_ih` (`[3·hidden]`).
///
/// # Panics
/// If a slice length does not match the shapes (see [`gru_step`]).
pub fn gru_step_ref(gi: &[f32], w_hh: &[f32], b_hh: Option<&[f32]>, hidden: usize, h: &mut [f32]) {
    check_recurrent(w_hh, b_hh, hidden, h);
    assert_eq!(
        gi.len(),
        3 * hidden,
        "gru_step: gi has {} values, expected 3·hidden = 3·{hidden}",
        gi.len()
    );
    let gi: alloc::vec::Vec<f64> = gi.iter().map(|&v| v as f64).collect();
    step_ref(&gi, w_hh, b_hh, hidden, h);
}

/// `out[i] = w[i·k .. (i+1)·k] · x` for every row of `w` (`out.len()` rows of length
/// `k = x.len()`), eight rows at a time so that each vector of `x` is loaded once per eight
/// fused multiply-adds and eight independent accumulation chains keep the FMA units busy.
#[inline(always)]
pub(crate) fn dot_rows_simd<S: Simd>(s: S, w: &[f32], x: &[f32], out: &mut [f32]) {
    let k = x.len();
    debug_assert_eq!(w.len(), out.len() * k);
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let (x_head, x_tail) = S::as_simd_f32s(x);
    let x_tail = if x_tail.is_empty() {
        None
    } else {
        Some(s.partial_load_f32s(x_tail))
    };
    let mut w_blocks = w.chunks_exact(8 * k);
    let mut o_blocks = out.chunks_exact_mut(8);
    for (wb, ob) in (&mut w_blocks).zip(&mut o_blocks) {
        dot_block::<8, S>(s, wb, k, x_head, x_tail, ob);
    }
    let (w_rest, o_rest) = (w_blocks.remainder(), o_blocks.into_remainder());
    let mut w_blocks = w_rest.chunks_exact(4 * k);
    let mut o_blocks = o_rest.chunks_exact_mut(4);
    for (wb, ob) in (&mut w_blocks).zip(&mut o_blocks) {
        dot_block::<4, S>(s, wb, k, x_head, x_tail, ob);
    }
    let (w_rest, o_rest) = (w_blocks.remainder(), o_blocks.into_remainder());
    for (wb, ob) in w_rest.chunks_exact(k).zip(o_rest.chunks_exact_mut(1)) {
        dot_block::<1, S>(s, wb, k, x_head, x_tail, ob);
    }
}

/// `N` dot products of the rows of `w` (`[N, k]`) with the vector whose full vectors are
/// `x_head` and whose partial last vector (zero-filled) is `x_tail`.
#[inline(always)]
fn dot_block<const N: usize, S: Simd>(
    s: S,
    w: &[f32],
    k: usize,
    x_head: &[S::f32s],
    x_tail: Option<S::f32s>,
    out: &mut [f32],
) {
    let nv = x_head.len();
    let rows: [(&[S::f32s], &[f32]); N] =
        core::array::from_fn(|i| S::as_simd_f32s(&w[i * k..(i + 1) * k]));
    // Re-slicing to exactly `nv` vectors lets the compiler drop the bounds checks below.
    let heads: [&[S::f32s]; N] = core::array::from_fn(|i| &rows[i].0[..nv]);
    let mut acc = [s.splat_f32s(0.0); N];
    for (v, &xv) in x_head.iter().enumerate() {
        for i in 0..N {
            acc[i] = s.mul_add_f32s(heads[i][v], xv, acc[i]);
        }
    }
    if let Some(xt) = x_tail {
        for i in 0..N {
            let wt = s.partial_load_f32s(rows[i].1);
            acc[i] = s.mul_add_f32s(wt, xt, acc[i]);
        }
    }
    for i in 0..N {
        out[i] = s.reduce_sum_f32s(acc[i]);
    }
}

/// The gate update of one vector of hidden units: returns the new state.
#[inline(always)]
fn gates<S: Simd>(
    s: S,
    [gir, giz, gin]: [S::f32s; 3],
    [ghr, ghz, ghn]: [S::f32s; 3],
    h: S::f32s,
) -> S::f32s {
    let r = sigmoid_f32s(s, s.add_f32s(gir, ghr));
    let z = sigmoid_f32s(s, s.add_f32s(giz, ghz));
    let n = tanh_f32s(s, s.mul_add_f32s(r, ghn, gin));
    // (1 − z)·n + z·h = n + z·(h − n)
    s.mul_add_f32s(z, s.sub_f32s(h, n), n)
}

/// `h ← GRU(gi, h)` for one step; `gh` (`[3·hidden]`) is overwritten with `W_hh·h + b_hh`.
#[inline(always)]
fn step_simd<S: Simd>(
    s: S,
    gi: &[f32],
    w_hh: &[f32],
    b_hh: Option<&[f32]>,
    hidden: usize,
    h: &mut [f32],
    gh: &mut [f32],
) {
    let (gi_r, rest) = gi.split_at(hidden);
    let (gi_z, gi_n) = rest.split_at(hidden);
    step_units(
        s,
        [gi_r, gi_z, gi_n],
        w_hh,
        b_hh,
        hidden,
        0..hidden,
        None,
        h,
        gh,
    );
}

/// One step for the hidden units `units` only, from their input projections `gi` (the r, z and
/// n rows of those units, `units.len()` values each): their three gate rows of
/// `W_hh·h + b_hh` into `gh` (`[3·units.len()]`), then their new state into `h_next` (`[units.len()]`). The
/// previous state is `h_prev` (`[hidden]`), or, when `None`, `h_next` itself (then `units`
/// must be every unit: the step in place). Each row's dot product and each unit's gates are
/// computed the same way whatever `units` is, so steps split by units give the bits of the
/// whole step.
#[inline(always)]
fn step_units<S: Simd>(
    s: S,
    gi: [&[f32]; 3],
    w_hh: &[f32],
    b_hh: Option<&[f32]>,
    hidden: usize,
    units: Range<usize>,
    h_prev: Option<&[f32]>,
    h_next: &mut [f32],
    gh: &mut [f32],
) {
    let n = units.len();
    let gh = &mut gh[..3 * n];
    {
        let x: &[f32] = h_prev.unwrap_or(h_next);
        for (g, ghg) in gh.chunks_exact_mut(n.max(1)).enumerate() {
            let rows = g * hidden + units.start..g * hidden + units.end;
            dot_rows_simd(s, &w_hh[rows.start * hidden..rows.end * hidden], x, ghg);
            if let Some(b) = b_hh {
                let (gh_head, gh_tail) = S::as_mut_simd_f32s(ghg);
                let (b_head, b_tail) = S::as_simd_f32s(&b[rows]);
                for (g, &bv) in gh_head.iter_mut().zip(b_head) {
                    *g = s.add_f32s(*g, bv);
                }
                for (g, &bv) in gh_tail.iter_mut().zip(b_tail) {
                    *g += bv;
                }
            }
        }
    }
    let (gi_rh, gi_rt) = S::as_simd_f32s(gi[0]);
    let (gi_zh, gi_zt) = S::as_simd_f32s(gi[1]);
    let (gi_nh, gi_nt) = S::as_simd_f32s(gi[2]);
    let (gh_r, rest) = gh.split_at(n);
    let (gh_z, gh_n) = rest.split_at(n);
    let (gh_rh, gh_rt) = S::as_simd_f32s(gh_r);
    let (gh_zh, gh_zt) = S::as_simd_f32s(gh_z);
    let (gh_nh, gh_nt) = S::as_simd_f32s(gh_n);
    let prev = h_prev.map(|p| S::as_simd_f32s(&p[units.clone()]));
    let (h_head, h_tail) = S::as_mut_simd_f32s(h_next);
    let nv = h_head.len();
    let (gi_rh, gi_zh, gi_nh) = (&gi_rh[..nv], &gi_zh[..nv], &gi_nh[..nv]);
    let (gh_rh, gh_zh, gh_nh) = (&gh_rh[..nv], &gh_zh[..nv], &gh_nh[..nv]);
    let prev_head = prev.map(|(head, _)| &head[..nv]);
    for (v, hv) in h_head.iter_mut().enumerate() {
        let old = prev_head.map_or(*hv, |p| p[v]);
        *hv = gates(
            s,
            [gi_rh[v], gi_zh[v], gi_nh[v]],
            [gh_rh[v], gh_zh[v], gh_nh[v]],
            old,
        );
    }
    if !h_tail.is_empty() {
        let p = |v: &[f32]| s.partial_load_f32s(v);
        let old = p(prev.map_or(&*h_tail, |(_, tail)| tail));
        let hv = gates(
            s,
            [p(gi_rt), p(gi_zt), p(gi_nt)],
            [p(gh_rt), p(gh_zt), p(gh_nt)],
            old,
        );
        s.partial_store_f32s(h_tail, hv);
    }
}

/// The recurrence over `steps` precomputed input projections (`gi`, `[steps, 3·hidden]`).
struct RecurrenceBody<'a> {
    gi: &'a [f32],
    w_hh: &'a [f32],
    b_hh: Option<&'a [f32]>,
    hidden: usize,
    h: &'a mut [f32],
    /// `[steps, hidden]`, or empty to keep only the final state.
    out: &'a mut [f32],
    gh: &'a mut [f32],
}

impl WithSimd for RecurrenceBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            gi,
            w_hh,
            b_hh,
            hidden,
            h,
            out,
            gh,
        } = self;
        for (t, gi_t) in gi.chunks_exact(3 * hidden).enumerate() {
            step_simd(s, gi_t, w_hh, b_hh, hidden, h, gh);
            if !out.is_empty() {
                out[t * hidden..(t + 1) * hidden].copy_from_slice(h);
            }
        }
    }
}

/// Runs the recurrence on `isa` after the input projections were written to
/// `scratch[..steps·3·hidden]`.
fn recurrence(
    isa: Isa,
    steps: usize,
    w_hh: &[f32],
    b_hh: Option<&[f32]>,
    hidden: usize,
    h: &mut [f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    if hidden == 0 {
        return;
    }
    let (gi, rest) = scratch.split_at_mut(steps * 3 * hidden);
    isa.run(RecurrenceBody {
        gi,
        w_hh,
        b_hh,
        hidden,
        h,
        out,
        gh: &mut rest[..3 * hidden],
    });
}

/// GRU layer on `isa`: the input projection with the pulp dot-product kernel
/// ([`linear_isa`]) and the recurrence with the pulp body for `isa`.
///
/// # Panics
/// As [`gru_layer`].
pub fn gru_layer_isa(
    isa: Isa,
    x: &[f32],
    steps: usize,
    input: usize,
    hidden: usize,
    w_ih: &[f32],
    w_hh: &[f32],
    b_ih: Option<&[f32]>,
    b_hh: Option<&[f32]>,
    h: &mut [f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    check_layer(x, steps, input, hidden, w_ih, w_hh, b_ih, b_hh, h, out);
    check_scratch(scratch, gru_scratch_len(steps, hidden));
    let gi = &mut scratch[..steps * 3 * hidden];
    linear_isa(isa, x, w_ih, b_ih, gi, steps, input, 3 * hidden);
    recurrence(isa, steps, w_hh, b_hh, hidden, h, out, scratch);
}

/// One layer of PyTorch's `nn.GRU` over `steps` inputs (fast path): `h` holds the initial state
/// on entry and the final state on return, `out` (`[steps, hidden]`) receives the state after
/// every step. The input projection of all steps is one [`linear`] product (fast path), the
/// recurrence one pulp body on the best instruction set.
///
/// # Panics
/// If `x.len() != steps·input`, `w_ih.len() != 3·hidden·input`, `w_hh.len() != 3·hidden²`, a
/// bias is given whose length is not `3·hidden`, `h.len() != hidden`,
/// `out.len() != steps·hidden`, or `scratch.len() < gru_scratch_len(steps, hidden)`.
pub fn gru_layer(
    x: &[f32],
    steps: usize,
    input: usize,
    hidden: usize,
    w_ih: &[f32],
    w_hh: &[f32],
    b_ih: Option<&[f32]>,
    b_hh: Option<&[f32]>,
    h: &mut [f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    check_layer(x, steps, input, hidden, w_ih, w_hh, b_ih, b_hh, h, out);
    check_scratch(scratch, gru_scratch_len(steps, hidden));
    let gi = &mut scratch[..steps * 3 * hidden];
    linear(x, w_ih, b_ih, gi, steps, input, 3 * hidden);
    recurrence(Isa::detect(), steps, w_hh, b_hh, hidden, h, out, scratch);
}

/// One GRU step on `isa` from a precomputed input projection.
///
/// # Panics
/// As [`gru_step`].
pub fn gru_step_isa(
    isa: Isa,
    gi: &[f32],
    w_hh: &[f32],
    b_hh: Option<&[f32]>,
    hidden: usize,
    h: &mut [f32],
    scratch: &mut [f32],
) {
    check_recurrent(w_hh, b_hh, hidden, h);
    assert_eq!(
        gi.len(),
        3 * hidden,
        "gru_step: gi has {} values, expected 3·hidden = 3·{hidden}",
        gi.len()
    );
    check_scratch(scratch, 3 * hidden);
    if hidden == 0 {
        return;
    }
    isa.run(RecurrenceBody {
        gi,
        w_hh,
        b_hh,
        hidden,
        h,
        out: &mut [],
        gh: &mut scratch[..3 * hidden],
    });
}

/// Advances the state `h` (`[hidden]`) by one event whose input projection
/// `gi = W_ih·x + b_ih` (`[3·hidden]`, e.g. from [`linear`]) was computed beforehand: how a
/// session carries its hidden state. Stepping event by event reproduces [`gru_layer_isa`]
/// bit for bit when `gi` comes from [`linear_isa`] on the same instruction set.
///
/// # Panics
/// If `gi.len() != 3·hidden`, `w_hh.len() != 3·hidden²`, `b_hh` is given with a length other
/// than `3·hidden`, `h.len() != hidden`, or `scratch.len() < 3·hidden`.
pub fn gru_step(
    gi: &[f32],
    w_hh: &[f32],
    b_hh: Option<&[f32]>,
    hidden: usize,
    h: &mut [f32],
    scratch: &mut [f32],
) {
    gru_step_isa(Isa::detect(), gi, w_hh, b_hh, hidden, h, scratch);
}

/// Hidden units of the first of the two shares of a step in [`gru_layer_shared`]: half, in whole
/// vectors of 16 lanes where there are enough units.
fn share_split(hidden: usize) -> usize {
    if hidden >= 32 {
        hidden / 2 / 16 * 16
    } else {
        hidden / 2
    }
}

/// Length of the `scratch` slice [`gru_layer_shared`] needs: the input projections of all steps
/// (`steps·3·hidden`) and one recurrent projection of the larger share for each of the two
/// workers.
pub fn gru_shared_scratch_len(steps: usize, hidden: usize) -> usize {
    let share = hidden - share_split(hidden);
    steps * 3 * hidden + 2 * 3 * share
}

/// The state two workers of [`gru_layer_shared`] share. Tasks, claimed in order: `0` and `1`
/// project the inputs of all steps for the units of share 0 and 1; `2 + 2t + j` runs step
/// `t` for the units of share `j`. `done` counts the finished tasks.
struct Shared<'a> {
    isa: Isa,
    x: &'a [f32],
    input: usize,
    w_ih: &'a [f32],
    b_ih: Option<&'a [f32]>,
    w_hh: &'a [f32],
    b_hh: Option<&'a [f32]>,
    hidden: usize,
    steps: usize,
    split: usize,
    h0: &'a [f32],
    /// The input projections, `steps·3·hidden` values: share `j`'s block (share 0 first),
    /// in it gate `g`'s `[steps, units of the share]`.
    gi: *mut f32,
    /// `out` of the layer, `[steps, hidden]`: row `t` is the state after step `t`.
    out: *mut f32,
    next: AtomicUsize,
    done: AtomicUsize,
}

// SAFETY: the only non-`Sync` fields are `gi` and `out`, buffers exclusively borrowed by
// `gru_layer_shared` for the life of this value, which `Shared::work` accesses under the task
// protocol documented there (each part written by the one worker that claimed its task, read
// only after that task is done).
unsafe impl Sync for Shared<'_> {}

impl Shared<'_> {
    /// The hidden units of share `j`.
    fn units(&self, j: usize) -> Range<usize> {
        if j == 0 {
            0..self.split
        } else {
            self.split..self.hidden
        }
    }

    /// Offset in `gi` of gate `g`, step `t` of share `j`.
    fn gi_at(&self, j: usize, g: usize, t: usize) -> usize {
        let n = self.units(j).len();
        let block = if j == 0 {
            0
        } else {
            3 * self.steps * self.split
        };
        block + (g * self.steps + t) * n
    }

    /// Claims and runs tasks until none is left; `gh` (`[3·larger share]`) is this worker's.
    ///
    /// A step task `2 + 2t + j` starts once `done ≥ 2 + 2t`, which means that both
    /// projections and every task of the steps before `t` are done: a step task finishes only
    /// after it saw that many tasks done, so a finished task with a number `≥ 2 + 2t` would
    /// have made `done` larger. A worker waits only for tasks that are claimed, hence running
    /// on the other worker, so the layer completes with one worker or two.
    fn work(&self, gh: &mut [f32]) {
        let (hidden, steps) = (self.hidden, self.steps);
        loop {
            let task = self.next.fetch_add(1, Ordering::Relaxed);
            if task >= 2 + 2 * steps {
                return;
            }
            if task < 2 {
                self.project(task);
            } else {
                let (t, j) = ((task - 2) / 2, task % 2);
                while self.done.load(Ordering::Acquire) < 2 + 2 * t {
                    core::hint::spin_loop();
                }
                let units = self.units(j);
                let n = units.len();
                // SAFETY: `gi` holds `steps·3·hidden` values and `out` `steps·hidden` (checked by
                // `gru_layer_shared`), and every range below is inside them. The projections of
                // share `j` and row `t − 1` are complete (`done ≥ 2 + 2t` was read with Acquire
                // after each writer's Release increment) and nothing writes them any more; the
                // units `units` of row `t` belong to this task alone (each task number is
                // claimed once), and nobody reads row `t` before this task's Release increment
                // below. The slices do not overlap (`gi` and `out` are distinct buffers, and
                // rows `t − 1` and `t` of `out` distinct rows).
                let (gi, h_prev, h_next) = unsafe {
                    let gi = [0, 1, 2]
                        .map(|g| core::slice::from_raw_parts(self.gi.add(self.gi_at(j, g, t)), n));
                    let prev = if t == 0 {
                        self.h0
                    } else {
                        core::slice::from_raw_parts(self.out.add((t - 1) * hidden), hidden)
                    };
                    let next =
                        core::slice::from_raw_parts_mut(self.out.add(t * hidden + units.start), n);
                    (gi, prev, next)
                };
                self.isa.run(UnitsBody {
                    gi,
                    w_hh: self.w_hh,
                    b_hh: self.b_hh,
                    hidden,
                    units,
                    h_prev,
                    h_next,
                    gh: &mut *gh,
                });
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// Task `j < 2`: the input projections of every step for the units of share `j`, one
    /// product per gate.
    fn project(&self, j: usize) {
        let (units, input, hidden) = (self.units(j), self.input, self.hidden);
        let n = units.len();
        for g in 0..3 {
            let rows = g * hidden + units.start..g * hidden + units.end;
            // SAFETY: share `j`'s block of `gi` (inside the buffer, see `work`) is written by
            // this task alone, and no step task reads it before this task's Release increment.
            let out = unsafe {
                core::slice::from_raw_parts_mut(self.gi.add(self.gi_at(j, g, 0)), self.steps * n)
            };
            linear(
                self.x,
                &self.w_ih[rows.start * input..rows.end * input],
                self.b_ih.map(|b| &b[rows]),
                out,
                self.steps,
                input,
                n,
            );
        }
    }
}

/// One step task of [`Shared::work`]: [`step_units`] from a separate previous state.
struct UnitsBody<'a> {
    gi: [&'a [f32]; 3],
    w_hh: &'a [f32],
    b_hh: Option<&'a [f32]>,
    hidden: usize,
    units: Range<usize>,
    h_prev: &'a [f32],
    h_next: &'a mut [f32],
    gh: &'a mut [f32],
}

impl WithSimd for UnitsBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        step_units(
            s,
            self.gi,
            self.w_hh,
            self.b_hh,
            self.hidden,
            self.units,
            Some(self.h_prev),
            self.h_next,
            self.gh,
        );
    }
}

/// [`gru_layer`] shared by two workers, for a request that has a second core: a step's
/// `W_hh·h` product reads all of `W_hh` (192 KiB at RecBole's hidden 128, from the core's L2),
/// and split by hidden units between two cores each reads half. The input projection is split
/// the same way. The work is a sequence of tasks (two projections, then two per step),
/// claimed in order by whichever worker is free; `fork_join(a, b)` must run `a` and `b` (on
/// two threads, or one after the other) and return when both have returned, e.g.
/// `|a, b| { rayon::join(a, b); }`. A worker waits (spinning) only for a task that the other
/// worker has claimed and is running, so the layer completes whether the second worker starts
/// at once, late or never; anything left unclaimed when `fork_join` returns runs on the
/// calling thread. Each row's dot product and each unit's gates are computed as in
/// [`gru_layer`], whichever share holds them; the input projection is one product per share and
/// gate instead of one for all (the products sum each output in the same order at the tested
/// shapes, where the results equal [`gru_layer`]'s bit for bit).
///
/// # Panics
/// As [`gru_layer`], with `scratch.len() < gru_shared_scratch_len(steps, hidden)`.
pub fn gru_layer_shared(
    x: &[f32],
    steps: usize,
    input: usize,
    hidden: usize,
    w_ih: &[f32],
    w_hh: &[f32],
    b_ih: Option<&[f32]>,
    b_hh: Option<&[f32]>,
    h: &mut [f32],
    out: &mut [f32],
    scratch: &mut [f32],
    fork_join: impl FnOnce(&mut (dyn FnMut() + Send), &mut (dyn FnMut() + Send)),
) {
    check_layer(x, steps, input, hidden, w_ih, w_hh, b_ih, b_hh, h, out);
    check_scratch(scratch, gru_shared_scratch_len(steps, hidden));
    if steps == 0 || hidden == 0 {
        return;
    }
    let split = share_split(hidden);
    let (gi, rest) = scratch.split_at_mut(steps * 3 * hidden);
    let share = 3 * (hidden - split);
    let (gh_a, rest) = rest.split_at_mut(share);
    let gh_b = &mut rest[..share];
    let shared = Shared {
        isa: Isa::detect(),
        x,
        input,
        w_ih,
        b_ih,
        w_hh,
        b_hh,
        hidden,
        steps,
        split,
        h0: h,
        gi: gi.as_mut_ptr(),
        out: out.as_mut_ptr(),
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    };
    {
        let shared = &shared;
        let mut a = || shared.work(&mut *gh_a);
        let mut b = || shared.work(&mut *gh_b);
        fork_join(&mut a, &mut b);
    }
    shared.work(gh_a);
    h.copy_from_slice(&out[(steps - 1) * hidden..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng, assert_close};
    use alloc::format;
    use alloc::vec;
    use alloc::vec::Vec;

    struct Case {
        steps: usize,
        input: usize,
        hidden: usize,
        x: Vec<f32>,
        w_ih: Vec<f32>,
        w_hh: Vec<f32>,
        b_ih: Vec<f32>,
        b_hh: Vec<f32>,
        h0: Vec<f32>,
    }

    /// Weights scaled by 1/sqrt(fan-in) (PyTorch's init range) times 1.5, so pre-activations are
    /// of order one and every gate is exercised away from saturation.
    fn case(rng: &mut Rng, steps: usize, input: usize, hidden: usize) -> Case {
        let si = 1.5 / (input.max(1) as f32).sqrt();
        let sh = 1.5 / (hidden.max(1) as f32).sqrt();
        Case {
            steps,
            input,
            hidden,
            x: rng.normal_vec(steps * input, 1.0),
            w_ih: rng.normal_vec(3 * hidden * input, si),
            w_hh: rng.normal_vec(3 * hidden * hidden, sh),
            b_ih: rng.normal_vec(3 * hidden, 0.5),
            b_hh: rng.normal_vec(3 * hidden, 0.5),
            h0: rng.uniform_vec(hidden, -0.9, 0.9),
        }
    }

    fn shapes() -> Vec<(usize, usize, usize)> {
        let mut v = Vec::new();
        for (i, &hidden) in AWKWARD_SIZES.iter().enumerate() {
            let input = AWKWARD_SIZES[(i * 7 + 3) % AWKWARD_SIZES.len()];
            let steps = [1, 2, 5, 13, 31, 60][i % 6];
            v.push((steps, input, hidden));
        }
        v.extend([
            (60, 64, 64),
            (60, 64, 128),
            (0, 8, 16),
            (3, 0, 9),
            (4, 5, 0),
        ]);
        v
    }

    type LayerFn<'a> = &'a dyn Fn(&Case, Option<&[f32]>, Option<&[f32]>, &mut [f32], &mut [f32]);

    fn check_against_ref(name: &str, seed: u64, run: LayerFn<'_>) {
        let mut rng = Rng::new(seed);
        for (steps, input, hidden) in shapes() {
            let c = case(&mut rng, steps, input, hidden);
            for (bi, bh) in [(false, false), (true, true), (true, false), (false, true)] {
                let b_ih = bi.then_some(&c.b_ih[..]);
                let b_hh = bh.then_some(&c.b_hh[..]);
                let mut h_want = c.h0.clone();
                let mut want = vec![0.0; steps * hidden];
                gru_layer_ref(
                    &c.x,
                    steps,
                    input,
                    hidden,
                    &c.w_ih,
                    &c.w_hh,
                    b_ih,
                    b_hh,
                    &mut h_want,
                    &mut want,
                );
                let mut h_got = c.h0.clone();
                let mut got = vec![f32::NAN; steps * hidden];
                run(&c, b_ih, b_hh, &mut h_got, &mut got);
                let ctx = format!("{name} steps={steps} in={input} hid={hidden} b=({bi},{bh})");
                // Tolerance: 2e-6 absolute (see the module header), no relative part.
                assert_close(&ctx, &got, &want, 2e-6, 0.0);
                assert_close(&format!("{ctx} final h"), &h_got, &h_want, 2e-6, 0.0);
            }
        }
    }

    fn check_gru_layer(isa: Isa) {
        check_against_ref(&format!("gru_layer {isa}"), 21, &|c, b_ih, b_hh, h, out| {
            let mut scratch = vec![f32::NAN; gru_scratch_len(c.steps, c.hidden)];
            gru_layer_isa(
                isa,
                &c.x,
                c.steps,
                c.input,
                c.hidden,
                &c.w_ih,
                &c.w_hh,
                b_ih,
                b_hh,
                h,
                out,
                &mut scratch,
            );
        });
    }
    crate::isa_tests!(gru_layer_pulp, check_gru_layer);

    #[test]
    fn gru_layer_fast_path_matches_reference() {
        check_against_ref("gru_layer fast", 22, &|c, b_ih, b_hh, h, out| {
            let mut scratch = vec![f32::NAN; gru_scratch_len(c.steps, c.hidden) + 5];
            gru_layer(
                &c.x,
                c.steps,
                c.input,
                c.hidden,
                &c.w_ih,
                &c.w_hh,
                b_ih,
                b_hh,
                h,
                out,
                &mut scratch,
            );
        });
    }

    fn check_gru_step(isa: Isa) {
        let mut rng = Rng::new(23);
        for &hidden in AWKWARD_SIZES.iter().chain(&[0usize, 128]) {
            let c = case(&mut rng, 1, 1, hidden);
            let gi = rng.normal_vec(3 * hidden, 1.0);
            for b_hh in [None, Some(&c.b_hh[..])] {
                let mut want = c.h0.clone();
                gru_step_ref(&gi, &c.w_hh, b_hh, hidden, &mut want);
                let mut got = c.h0.clone();
                let mut scratch = vec![f32::NAN; 3 * hidden];
                gru_step_isa(isa, &gi, &c.w_hh, b_hh, hidden, &mut got, &mut scratch);
                // Tolerance: 1e-6 absolute for a single step (see the module header).
                assert_close(
                    &format!("gru_step {isa} hidden={hidden}"),
                    &got,
                    &want,
                    1e-6,
                    0.0,
                );
            }
        }
    }
    crate::isa_tests!(gru_step_pulp, check_gru_step);

    /// A session: project each event on its own, step the carried state, and compare with the
    /// whole sequence run as one layer.
    #[test]
    fn stepping_one_event_at_a_time_equals_the_layer() {
        let mut rng = Rng::new(24);
        for (steps, input, hidden) in [(60, 64, 128), (17, 33, 65), (9, 7, 3), (50, 64, 64)] {
            let c = case(&mut rng, steps, input, hidden);
            for biases in [false, true] {
                let b_ih = biases.then_some(&c.b_ih[..]);
                let b_hh = biases.then_some(&c.b_hh[..]);
                let isa = Isa::detect();
                let mut h_layer = c.h0.clone();
                let mut out_layer = vec![0.0; steps * hidden];
                let mut scratch = vec![0.0; gru_scratch_len(steps, hidden)];
                gru_layer_isa(
                    isa,
                    &c.x,
                    steps,
                    input,
                    hidden,
                    &c.w_ih,
                    &c.w_hh,
                    b_ih,
                    b_hh,
                    &mut h_layer,
                    &mut out_layer,
                    &mut scratch,
                );
                let mut h_fast = c.h0.clone();
                let mut out_fast = vec![0.0; steps * hidden];
                gru_layer(
                    &c.x,
                    steps,
                    input,
                    hidden,
                    &c.w_ih,
                    &c.w_hh,
                    b_ih,
                    b_hh,
                    &mut h_fast,
                    &mut out_fast,
                    &mut scratch,
                );
                let mut h = c.h0.clone();
                let mut gi = vec![0.0; 3 * hidden];
                let mut step_scratch = vec![0.0; 3 * hidden];
                for t in 0..steps {
                    let xt = &c.x[t * input..(t + 1) * input];
                    linear(xt, &c.w_ih, b_ih, &mut gi, 1, input, 3 * hidden);
                    gru_step(&gi, &c.w_hh, b_hh, hidden, &mut h, &mut step_scratch);
                    let ctx = format!("session {steps}x{input}x{hidden} t={t}");
                    // Same recurrence body; the layers project all steps at once, with tiles
                    // that may sum in another order than the one-row projection (broadcast
                    // tiles for many rows, or gemm): 2e-6 absolute.
                    assert_close(
                        &ctx,
                        &h,
                        &out_layer[t * hidden..(t + 1) * hidden],
                        2e-6,
                        0.0,
                    );
                    assert_close(&ctx, &h, &out_fast[t * hidden..(t + 1) * hidden], 2e-6, 0.0);
                }
                // The final state is the last output: 2e-6 absolute, as above.
                assert_close("final state", &h, &h_layer, 2e-6, 0.0);
            }
        }
    }

    /// The reset gate multiplies `W_hn·h + b_hn`, not `h`: with `r` forced to ~0 by a large
    /// negative reset bias, the new gate must ignore both `W_hn·h` and `b_hn`.
    #[test]
    fn reset_gate_scales_the_recurrent_product() {
        let hidden = 4;
        let mut rng = Rng::new(25);
        let w_hh = rng.normal_vec(3 * hidden * hidden, 1.0);
        let mut b_hh = rng.normal_vec(3 * hidden, 1.0);
        b_hh[..hidden].fill(-60.0); // r = σ(−60 + ...) ≈ 0
        let mut gi = rng.normal_vec(3 * hidden, 0.5);
        gi[hidden..2 * hidden].fill(-60.0); // z ≈ 0, so h' = n
        let h0 = rng.uniform_vec(hidden, -0.9, 0.9);
        let mut h = h0.clone();
        let mut scratch = vec![0.0; 3 * hidden];
        gru_step(&gi, &w_hh, Some(&b_hh), hidden, &mut h, &mut scratch);
        for j in 0..hidden {
            let want = libm::tanhf(gi[2 * hidden + j]);
            assert!((h[j] - want).abs() < 1e-6, "unit {j}: {} vs {want}", h[j]);
        }
    }

    /// The shared layer gives the single-threaded layer's bits however its two workers run:
    /// on two threads, one after the other in either order, or not at all (the calling thread
    /// then does every task).
    #[test]
    fn shared_layer_equals_the_layer_bit_for_bit() {
        type Runner = fn(&mut (dyn FnMut() + Send), &mut (dyn FnMut() + Send));
        let runners: [(&str, Runner); 4] = [
            ("a then b", |a, b| {
                a();
                b();
            }),
            ("b then a", |a, b| {
                b();
                a();
            }),
            ("neither", |_, _| {}),
            #[cfg(feature = "std")]
            ("two threads", |a, b| {
                std::thread::scope(|sc| {
                    sc.spawn(b);
                    a();
                })
            }),
            #[cfg(not(feature = "std"))]
            ("a only", |a, _| a()),
        ];
        let mut rng = Rng::new(27);
        let mut shapes = shapes();
        shapes.extend([(50, 64, 128), (7, 5, 100), (3, 4, 1)]);
        for (steps, input, hidden) in shapes {
            let c = case(&mut rng, steps, input, hidden);
            for biases in [false, true] {
                let b_ih = biases.then_some(&c.b_ih[..]);
                let b_hh = biases.then_some(&c.b_hh[..]);
                let mut h_want = c.h0.clone();
                let mut want = vec![0.0; steps * hidden];
                let mut scratch = vec![0.0; gru_scratch_len(steps, hidden)];
                gru_layer(
                    &c.x,
                    steps,
                    input,
                    hidden,
                    &c.w_ih,
                    &c.w_hh,
                    b_ih,
                    b_hh,
                    &mut h_want,
                    &mut want,
                    &mut scratch,
                );
                for (name, run) in runners {
                    let mut h = c.h0.clone();
                    let mut got = vec![f32::NAN; steps * hidden];
                    let mut scratch = vec![f32::NAN; gru_shared_scratch_len(steps, hidden)];
                    gru_layer_shared(
                        &c.x,
                        steps,
                        input,
                        hidden,
                        &c.w_ih,
                        &c.w_hh,
                        b_ih,
                        b_hh,
                        &mut h,
                        &mut got,
                        &mut scratch,
                        run,
                    );
                    let same = |a: &[f32], b: &[f32]| {
                        a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                    };
                    let ctx = format!("{name}: {steps}x{input}x{hidden} biases {biases}");
                    assert!(same(&got, &want), "{ctx}: outputs differ");
                    assert!(same(&h, &h_want), "{ctx}: final states differ");
                }
            }
        }
    }
}
