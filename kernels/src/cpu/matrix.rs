//! Strided matrix views and the general matrix product on them.
//!
//! Layout: a [`MatRef`] / [`MatMut`] is a slice plus `rows`, `cols`, a row stride and a column
//! stride (in elements): element `(i, j)` is `data[i·row_stride + j·col_stride]`. Row-major,
//! column-major, transposed, padded and sub-matrix views are all strides over a slice. A
//! [`MatRef`] may map several `(i, j)` to one element: overlapping rows (a row stride smaller
//! than the number of columns) express sliding windows over a sequence without copying. A
//! [`MatMut`] may not. Both are validated when built, so [`gemm()`] is safe for every layout.
//!
//! Paths: [`gemm_ref`] plain loops with f64 accumulation; [`gemm_isa`] a pulp kernel (axpy
//! rows when the right-hand side and destination have unit column stride, dot products when
//! the left-hand side has unit column stride and the right-hand side unit row stride, strided
//! scalar loops otherwise); [`gemm()`] goes through the `gemm` crate under `std` and through
//! [`gemm_isa`] without it.
//!
//! Tolerance of every fast path against the reference: `1e-5·(1 + Σ_p |lhs(i,p)·rhs(p,j)|)`
//! per element, plus `1e-6·|dst|` when accumulating (f32 sums in a different order).

use super::isa::Isa;
use super::vector::{axpy_simd, dot_simd};
use pulp::{Simd, WithSimd};

/// Checks a strided layout against a slice length; returns the strides as they are used
/// (zeroed for a dimension of size 1 or less, where they address nothing).
#[track_caller]
fn check_layout(
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> (usize, usize) {
    if rows == 0 || cols == 0 {
        return (0, 0);
    }
    let rs = if rows > 1 { row_stride } else { 0 };
    let cs = if cols > 1 { col_stride } else { 0 };
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
    assert!(
        matches!(last, Some(l) if l < len && l <= isize::MAX as usize),
        "{what}: a {rows}x{cols} view with strides ({row_stride}, {col_stride}) reaches index \
         {last:?}, but the slice has {len} elements"
    );
    (rs, cs)
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Whether two distinct `(i, j)` of a `rows`×`cols` layout with these strides share an offset.
fn layout_aliases(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows <= 1 || cols <= 1 {
        // Only the single non-trivial dimension can collide, and only with stride 0.
        return (rows > 1 && rs == 0) || (cols > 1 && cs == 0);
    }
    if rs == 0 || cs == 0 {
        return true;
    }
    // i·rs + j·cs = i'·rs + j'·cs has non-trivial solutions di·rs = -dj·cs exactly at the
    // multiples of (cs/g, rs/g); the smallest lies inside the index box iff both fit.
    let g = gcd(rs, cs);
    cs / g < rows && rs / g < cols
}

/// A read-only strided view of a matrix in an `f32` slice.
#[derive(Copy, Clone, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows`×`cols` view whose element `(i, j)` is `data[i·row_stride + j·col_stride]`.
    /// Elements may overlap (e.g. sliding windows with `row_stride < cols`).
    ///
    /// # Panics
    /// If some element lies outside `data` (or its offset overflows).
    #[track_caller]
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        let (rs, cs) = check_layout("MatRef", data.len(), rows, cols, row_stride, col_stride);
        MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A dense row-major `rows`×`cols` view.
    ///
    /// # Panics
    /// If `data.len() != rows·cols`.
    #[track_caller]
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "MatRef::row_major: data has {} values, expected rows·cols = {rows}·{cols}",
            data.len()
        );
        Self::new(data, rows, cols, cols, 1)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `i >= rows` or `j >= cols`.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.rows && j < self.cols,
            "MatRef::get: ({i}, {j}) outside {}x{}",
            self.rows,
            self.cols
        );
        self.data[i * self.rs + j * self.cs]
    }
}

/// A mutable strided view of a matrix in an `f32` slice; distinct `(i, j)` are distinct
/// elements.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatMut<'a> {
    /// A `rows`×`cols` view whose element `(i, j)` is `data[i·row_stride + j·col_stride]`.
    ///
    /// # Panics
    /// If some element lies outside `data` (or its offset overflows), or if two distinct
    /// `(i, j)` map to the same element.
    #[track_caller]
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        let (rs, cs) = check_layout("MatMut", data.len(), rows, cols, row_stride, col_stride);
        assert!(
            rows == 0 || cols == 0 || !layout_aliases(rows, cols, rs, cs),
            "MatMut: a {rows}x{cols} view with strides ({row_stride}, {col_stride}) maps \
             two positions to the same element"
        );
        MatMut {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A dense row-major `rows`×`cols` view.
    ///
    /// # Panics
    /// If `data.len() != rows·cols`.
    #[track_caller]
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "MatMut::row_major: data has {} values, expected rows·cols = {rows}·{cols}",
            data.len()
        );
        Self::new(data, rows, cols, cols, 1)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `i >= rows` or `j >= cols`.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.rows && j < self.cols,
            "MatMut::get: ({i}, {j}) outside {}x{}",
            self.rows,
            self.cols
        );
        self.data[i * self.rs + j * self.cs]
    }

    /// A read-only view of the same elements.
    pub fn as_mat_ref(&self) -> MatRef<'_> {
        MatRef {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
}

#[track_caller]
fn check_gemm(dst: &MatMut<'_>, lhs: &MatRef<'_>, rhs: &MatRef<'_>) {
    assert_eq!(
        lhs.cols, rhs.rows,
        "gemm: rhs has {} rows, expected lhs.cols = {}",
        rhs.rows, lhs.cols
    );
    assert_eq!(
        (dst.rows, dst.cols),
        (lhs.rows, rhs.cols),
        "gemm: dst is {}x{}, expected lhs.rows x rhs.cols = {}x{}",
        dst.rows,
        dst.cols,
        lhs.rows,
        rhs.cols
    );
}

/// Reference `dst = (accumulate ? dst : 0) + lhs·rhs` with f64 accumulation.
///
/// # Panics
/// If `lhs.cols != rhs.rows` or `dst` is not `lhs.rows`×`rhs.cols`.
pub fn gemm_ref(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    check_gemm(&dst, &lhs, &rhs);
    for i in 0..dst.rows {
        for j in 0..dst.cols {
            let at = i * dst.rs + j * dst.cs;
            let mut acc = if accumulate { dst.data[at] as f64 } else { 0.0 };
            for p in 0..lhs.cols {
                acc += lhs.get(i, p) as f64 * rhs.get(p, j) as f64;
            }
            dst.data[at] = acc as f32;
        }
    }
}

struct GemmBody<'a, 'b> {
    dst: MatMut<'a>,
    lhs: MatRef<'b>,
    rhs: MatRef<'b>,
    accumulate: bool,
}

impl WithSimd for GemmBody<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            dst,
            lhs,
            rhs,
            accumulate,
        } = self;
        let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
        if (n == 1 || (rhs.cs == 1 && dst.cs == 1)) && k > 0 && n > 0 {
            // Rows of rhs and dst are contiguous: dst_i += lhs(i,p)·rhs_p for each p.
            for i in 0..m {
                let row = &mut dst.data[i * dst.rs..i * dst.rs + n];
                if !accumulate {
                    row.fill(0.0);
                }
                for p in 0..k {
                    let rhs_row = &rhs.data[p * rhs.rs..p * rhs.rs + n];
                    axpy_simd(s, lhs.get(i, p), rhs_row, row);
                }
            }
        } else if (k == 1 || (lhs.cs == 1 && rhs.rs == 1)) && k > 0 {
            // Rows of lhs and columns of rhs are contiguous: dot products.
            for i in 0..m {
                let lhs_row = &lhs.data[i * lhs.rs..i * lhs.rs + k];
                for j in 0..n {
                    let rhs_col = &rhs.data[j * rhs.cs..j * rhs.cs + k];
                    let at = i * dst.rs + j * dst.cs;
                    let base = if accumulate { dst.data[at] } else { 0.0 };
                    dst.data[at] = base + dot_simd(s, lhs_row, rhs_col);
                }
            }
        } else {
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0.0f32;
                    for p in 0..k {
                        acc += lhs.get(i, p) * rhs.get(p, j);
                    }
                    let at = i * dst.rs + j * dst.cs;
                    dst.data[at] = if accumulate { dst.data[at] + acc } else { acc };
                }
            }
        }
    }
}

/// `dst = (accumulate ? dst : 0) + lhs·rhs` with the pulp kernel instantiated for `isa` (the
/// path without `std`).
///
/// # Panics
/// If `lhs.cols != rhs.rows` or `dst` is not `lhs.rows`×`rhs.cols`.
pub fn gemm_isa(isa: Isa, dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    check_gemm(&dst, &lhs, &rhs);
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    isa.run(GemmBody {
        dst,
        lhs,
        rhs,
        accumulate,
    });
}

/// `dst = (accumulate ? dst : 0) + lhs·rhs` for any valid strided layouts: the `gemm` crate
/// under `std`, [`gemm_isa`] without it.
///
/// # Panics
/// If `lhs.cols != rhs.rows` or `dst` is not `lhs.rows`×`rhs.cols`.
pub fn gemm(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    check_gemm(&dst, &lhs, &rhs);
    #[cfg(feature = "std")]
    {
        let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                for i in 0..m {
                    for j in 0..n {
                        dst.data[i * dst.rs + j * dst.cs] = 0.0;
                    }
                }
            }
            return;
        }
        // SAFETY: the views were validated at construction: every (i, j) of the m×n, m×k and
        // k×n shapes lies inside its slice, the strides fit in isize, and distinct (i, j) of
        // dst are distinct elements. dst borrows its slice mutably, so it cannot overlap lhs or
        // rhs.
        unsafe {
            gemm_raw(
                dst.data.as_mut_ptr(),
                dst.rs as isize,
                dst.cs as isize,
                lhs.data.as_ptr(),
                lhs.rs as isize,
                lhs.cs as isize,
                rhs.data.as_ptr(),
                rhs.rs as isize,
                rhs.cs as isize,
                m,
                k,
                n,
                accumulate,
            )
        };
    }
    #[cfg(not(feature = "std"))]
    gemm_isa(Isa::f32_level(), dst, lhs, rhs, accumulate);
}

/// Threads one `gemm` crate product may use (see [`set_gemm_threads`]).
#[cfg(feature = "std")]
static GEMM_THREADS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);

/// Lets every later product that goes through the `gemm` crate split its work over up to
/// `threads` threads of the current rayon pool (1, the default, keeps each product on the
/// calling thread, as serving wants: its parallelism is across requests). For one process
/// doing one large computation at a time, such as a training run whose steps are a few
/// products of thousands of rows; the crate keeps small products on one thread itself.
/// Results may differ from the one-thread ones by rounding (the crate blocks the work by
/// thread count).
#[cfg(feature = "std")]
pub fn set_gemm_threads(threads: usize) {
    GEMM_THREADS.store(threads.max(1), core::sync::atomic::Ordering::Relaxed);
}

/// The one call site of `gemm::gemm`: `dst = (accumulate ? dst : 0) + lhs·rhs`.
///
/// # Safety
/// `dst` must be valid for writes and `lhs`/`rhs` for reads at every index
/// `i·rs + j·cs` of their m×n, m×k and k×n shapes; `dst` must not overlap `lhs` or `rhs`, and
/// distinct (i, j) of `dst` must map to distinct addresses.
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    // SAFETY: forwarded from the caller's contract. gemm's argument order is
    // (m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
    //  alpha, beta, conj_dst, conj_lhs, conj_rhs, parallelism) with dst := alpha·dst + beta·lhs·rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            match GEMM_THREADS.load(core::sync::atomic::Ordering::Relaxed) {
                0 | 1 => gemm::Parallelism::None,
                n => gemm::Parallelism::Rayon(n),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::vec;
    use alloc::vec::Vec;

    /// How a test matrix is laid out in its slice.
    #[derive(Copy, Clone, Debug, PartialEq)]
    enum Layout {
        RowMajor,
        ColMajor,
        /// Row-major with 3 unused elements after each row.
        Padded,
        /// Column stride 2, row stride 2·cols + 1: interleaved but injective.
        Strided,
        /// Overlapping rows: row stride 1 + cols/3 < cols (sliding windows); read-only.
        Sliding,
        /// Every row is the same slice (row stride 0); read-only.
        Broadcast,
    }

    const READ: [Layout; 6] = [
        Layout::RowMajor,
        Layout::ColMajor,
        Layout::Padded,
        Layout::Strided,
        Layout::Sliding,
        Layout::Broadcast,
    ];
    const WRITE: [Layout; 4] = [
        Layout::RowMajor,
        Layout::ColMajor,
        Layout::Padded,
        Layout::Strided,
    ];

    /// (slice length, row stride, col stride) of an r×c matrix in `layout`.
    fn strides(layout: Layout, r: usize, c: usize) -> (usize, usize, usize) {
        let (rs, cs) = match layout {
            Layout::RowMajor => (c, 1),
            Layout::ColMajor => (1, r),
            Layout::Padded => (c + 3, 1),
            Layout::Strided => (2 * c + 1, 2),
            Layout::Sliding => (1 + c / 3, 1),
            Layout::Broadcast => (0, 1),
        };
        let len = if r == 0 || c == 0 {
            0
        } else {
            (r - 1) * rs + (c - 1) * cs + 1
        };
        (len, rs, cs)
    }

    /// Runs one product on `path` (None: the public `gemm`) and on the reference, compares.
    fn check_case(
        path: Option<Isa>,
        rng: &mut Rng,
        (m, k, n): (usize, usize, usize),
        (ll, rl, dl): (Layout, Layout, Layout),
        accumulate: bool,
    ) {
        let (l_len, l_rs, l_cs) = strides(ll, m, k);
        let (r_len, r_rs, r_cs) = strides(rl, k, n);
        let (d_len, d_rs, d_cs) = strides(dl, m, n);
        let l = rng.normal_vec(l_len, 1.0);
        let r = rng.normal_vec(r_len, 1.0);
        let d0 = rng.normal_vec(d_len, 1.0);
        let lhs = MatRef::new(&l, m, k, l_rs, l_cs);
        let rhs = MatRef::new(&r, k, n, r_rs, r_cs);
        let mut want = d0.clone();
        gemm_ref(
            MatMut::new(&mut want, m, n, d_rs, d_cs),
            lhs,
            rhs,
            accumulate,
        );
        let mut got = d0.clone();
        let dst = MatMut::new(&mut got, m, n, d_rs, d_cs);
        match path {
            Some(isa) => gemm_isa(isa, dst, lhs, rhs, accumulate),
            None => gemm(dst, lhs, rhs, accumulate),
        }
        let mut touched = vec![false; d_len];
        for i in 0..m {
            for j in 0..n {
                let at = i * d_rs + j * d_cs;
                touched[at] = true;
                let mag: f32 = (0..k).map(|p| (lhs.get(i, p) * rhs.get(p, j)).abs()).sum();
                let base = if accumulate { d0[at].abs() } else { 0.0 };
                // Tolerance: 1e-5·(1 + Σ|l·r|) + 1e-6·|dst| (f32 sums in another order).
                let tol = 1e-5 * (1.0 + mag) + 1e-6 * base;
                assert!(
                    (got[at] - want[at]).abs() <= tol,
                    "gemm {path:?} {m}x{k}x{n} {ll:?}/{rl:?}/{dl:?} acc={accumulate}: \
                     ({i},{j}) got {} want {}",
                    got[at],
                    want[at]
                );
            }
        }
        // Padding and gaps are left alone.
        for (at, t) in touched.iter().enumerate() {
            if !t {
                assert_eq!(got[at].to_bits(), d0[at].to_bits(), "gap {at} was written");
            }
        }
    }

    fn shapes() -> Vec<(usize, usize, usize)> {
        let mut v = vec![(0, 3, 4), (3, 0, 4), (3, 4, 0), (1, 1, 1), (40, 64, 70)];
        for &s in AWKWARD_SIZES.iter().step_by(3) {
            v.extend([(s, 5, 3), (2, s, 9), (4, 7, s), (1, s, 17), (s, 16, 1)]);
        }
        v
    }

    fn check_all(path: Option<Isa>) {
        let mut rng = Rng::new(61);
        for shape in shapes() {
            for ll in READ {
                for rl in READ {
                    for dl in WRITE {
                        check_case(path, &mut rng, shape, (ll, rl, dl), shape.0 % 2 == 1);
                    }
                }
            }
            for acc in [false, true] {
                check_case(
                    path,
                    &mut rng,
                    shape,
                    (Layout::RowMajor, Layout::RowMajor, Layout::RowMajor),
                    acc,
                );
            }
        }
    }

    fn check_gemm_isa(isa: Isa) {
        check_all(Some(isa));
    }
    crate::isa_tests!(gemm_pulp, check_gemm_isa);

    #[test]
    fn gemm_fast_path_matches_reference() {
        check_all(None);
    }

    #[test]
    fn sliding_windows_over_a_sequence() {
        // Rows of lhs are the windows seq[i..i+4] (row stride 1 < 4 columns).
        let seq: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let w = [1.0, 0.0, 0.0, 2.0]; // picks window[0] + 2·window[3]
        let mut out = [0.0f32; 7];
        gemm(
            MatMut::row_major(&mut out, 7, 1),
            MatRef::new(&seq, 7, 4, 1, 1),
            MatRef::row_major(&w, 4, 1),
            false,
        );
        let want: Vec<f32> = (0..7).map(|i| i as f32 + 2.0 * (i + 3) as f32).collect();
        assert_eq!(out.to_vec(), want);
    }

    #[test]
    fn aliasing_detection_matches_brute_force() {
        for rows in 0..5 {
            for cols in 0..5 {
                for rs in 0..7 {
                    for cs in 0..7 {
                        let mut seen = [false; 64];
                        let mut brute = false;
                        for i in 0..rows {
                            for j in 0..cols {
                                let at = i * rs + j * cs;
                                brute |= seen[at];
                                seen[at] = true;
                            }
                        }
                        let (nrs, ncs) = check_layout("t", 64, rows, cols, rs, cs);
                        let fast = rows > 0 && cols > 0 && layout_aliases(rows, cols, nrs, ncs);
                        assert_eq!(fast, brute, "{rows}x{cols} strides ({rs}, {cs})");
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "MatMut: a 3x3 view with strides (1, 1) maps two positions")]
    fn matmut_rejects_overlapping_rows() {
        let mut data = [0.0f32; 5];
        MatMut::new(&mut data, 3, 3, 1, 1);
    }

    #[test]
    #[should_panic(expected = "MatRef: a 2x3 view with strides (3, 1) reaches index Some(5)")]
    fn matref_rejects_out_of_bounds() {
        let data = [0.0f32; 5];
        MatRef::new(&data, 2, 3, 3, 1);
    }

    #[test]
    #[should_panic(expected = "reaches index None")]
    fn matref_rejects_overflowing_strides() {
        let data = [0.0f32; 5];
        MatRef::new(&data, 2, 2, usize::MAX, 1);
    }

    #[test]
    #[should_panic(expected = "gemm: rhs has 4 rows, expected lhs.cols = 3")]
    fn gemm_checks_inner_dimension() {
        let (a, b) = ([0.0f32; 6], [0.0f32; 8]);
        let mut c = [0.0f32; 4];
        gemm(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 4, 2),
            false,
        );
    }

    #[test]
    fn unit_dimensions_ignore_their_stride() {
        // A 1×3 view with a huge row stride is valid: the row stride addresses nothing.
        let data = [1.0f32, 2.0, 3.0];
        let v = MatRef::new(&data, 1, 3, usize::MAX, 1);
        assert_eq!(v.get(0, 2), 3.0);
        let mut out = [0.0f32; 1];
        gemm(
            MatMut::new(&mut out, 1, 1, usize::MAX, usize::MAX),
            v,
            MatRef::new(&data, 3, 1, 1, 12345),
            false,
        );
        assert_eq!(out[0], 14.0);
    }
}
