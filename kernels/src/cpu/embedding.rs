//! Embedding lookups: gather rows of a table by id.
//!
//! Layout: `table` is row-major `[rows, dim]` (f32, f16 or bf16); `ids` holds one row index per
//! output row; `out` is row-major `[ids.len(), dim]` f32.
//!
//! Tolerance: none. The f32 gather copies bits; the f16/bf16 gathers widen with the
//! bit-exact conversions of [`super::convert`], so every path equals the reference exactly.

use super::convert::{Format, widen_slice};
use super::isa::Isa;
use half::{bf16, f16};
use pulp::{Simd, WithSimd};

/// Checks the shapes and every id; returns the number of table rows.
#[track_caller]
fn check_gather(op: &str, table_len: usize, dim: usize, ids: &[u32], out_len: usize) {
    assert_eq!(
        out_len,
        ids.len() * dim,
        "{op}: out has {out_len} values, expected ids.len()·dim = {}·{dim}",
        ids.len()
    );
    if dim == 0 {
        return;
    }
    assert_eq!(
        table_len % dim,
        0,
        "{op}: table has {table_len} values, expected a multiple of dim = {dim}"
    );
    let rows = table_len / dim;
    for (i, &id) in ids.iter().enumerate() {
        assert!(
            (id as usize) < rows,
            "{op}: ids[{i}] = {id} is out of range for a table of {rows} rows of dim {dim}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// f32

/// Reference gather: `out[i, :] = table[ids[i], :]`, element by element.
///
/// # Panics
/// If `out.len() != ids.len()·dim`, if `table.len()` is not a multiple of `dim`, or if an id is
/// not below `table.len() / dim` (the message names the offending id).
pub fn gather_ref(table: &[f32], dim: usize, ids: &[u32], out: &mut [f32]) {
    check_gather("gather", table.len(), dim, ids, out.len());
    for (i, &id) in ids.iter().enumerate() {
        for j in 0..dim {
            out[i * dim + j] = table[id as usize * dim + j];
        }
    }
}

/// Gather: `out[i, :] = table[ids[i], :]` (one row copy per id).
///
/// # Panics
/// If `out.len() != ids.len()·dim`, if `table.len()` is not a multiple of `dim`, or if an id is
/// not below `table.len() / dim` (the message names the offending id).
pub fn gather(table: &[f32], dim: usize, ids: &[u32], out: &mut [f32]) {
    check_gather("gather", table.len(), dim, ids, out.len());
    if dim == 0 {
        return;
    }
    for (row, &id) in out.chunks_exact_mut(dim).zip(ids) {
        let start = id as usize * dim;
        row.copy_from_slice(&table[start..start + dim]);
    }
}

// ---------------------------------------------------------------------------------------------
// f16 / bf16

struct GatherHalfBody<'a> {
    format: Format,
    table: &'a [u16],
    dim: usize,
    ids: &'a [u32],
    out: &'a mut [f32],
}

impl WithSimd for GatherHalfBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            format,
            table,
            dim,
            ids,
            out,
        } = self;
        for (row, &id) in out.chunks_exact_mut(dim).zip(ids) {
            let start = id as usize * dim;
            widen_slice(s, format, &table[start..start + dim], row);
        }
    }
}

/// Reference f16 gather: `out[i, :] = f32(table[ids[i], :])` with `half`'s scalar conversion.
///
/// # Panics
/// As [`gather`].
pub fn gather_f16_ref(table: &[f16], dim: usize, ids: &[u32], out: &mut [f32]) {
    check_gather("gather_f16", table.len(), dim, ids, out.len());
    for (i, &id) in ids.iter().enumerate() {
        for j in 0..dim {
            out[i * dim + j] = table[id as usize * dim + j].to_f32();
        }
    }
}

/// f16 gather with the conversion body instantiated for `isa` (bit-exact).
///
/// # Panics
/// As [`gather`].
pub fn gather_f16_isa(isa: Isa, table: &[f16], dim: usize, ids: &[u32], out: &mut [f32]) {
    check_gather("gather_f16", table.len(), dim, ids, out.len());
    if dim == 0 {
        return;
    }
    isa.run(GatherHalfBody {
        format: Format::F16,
        table: bytemuck::cast_slice(table),
        dim,
        ids,
        out,
    });
}

/// f16 gather on the best instruction set: `out[i, :] = f32(table[ids[i], :])` (bit-exact).
///
/// # Panics
/// As [`gather`].
#[inline]
pub fn gather_f16(table: &[f16], dim: usize, ids: &[u32], out: &mut [f32]) {
    gather_f16_isa(Isa::detect(), table, dim, ids, out);
}

/// Reference bf16 gather: `out[i, :] = f32(table[ids[i], :])` with `half`'s scalar conversion.
///
/// # Panics
/// As [`gather`].
pub fn gather_bf16_ref(table: &[bf16], dim: usize, ids: &[u32], out: &mut [f32]) {
    check_gather("gather_bf16", table.len(), dim, ids, out.len());
    for (i, &id) in ids.iter().enumerate() {
        for j in 0..dim {
            out[i * dim + j] = table[id as usize * dim + j].to_f32();
        }
    }
}

/// bf16 gather with the conversion body instantiated for `isa` (bit-exact).
///
/// # Panics
/// As [`gather`].
pub fn gather_bf16_isa(isa: Isa, table: &[bf16], dim: usize, ids: &[u32], out: &mut [f32]) {
    check_gather("gather_bf16", table.len(), dim, ids, out.len());
    if dim == 0 {
        return;
    }
    isa.run(GatherHalfBody {
        format: Format::Bf16,
        table: bytemuck::cast_slice(table),
        dim,
        ids,
        out,
    });
}

/// bf16 gather on the best instruction set: `out[i, :] = f32(table[ids[i], :])` (bit-exact).
///
/// # Panics
/// As [`gather`].
#[inline]
pub fn gather_bf16(table: &[bf16], dim: usize, ids: &[u32], out: &mut [f32]) {
    gather_bf16_isa(Isa::detect(), table, dim, ids, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::vec;
    use alloc::vec::Vec;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn random_ids(rng: &mut Rng, n: usize, rows: usize) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..n).map(|_| rng.below(rows) as u32).collect();
        if n > 1 {
            // Always include the first and last rows.
            ids[0] = 0;
            ids[n - 1] = rows as u32 - 1;
        }
        ids
    }

    fn check_gather_half(isa: Isa) {
        let mut rng = Rng::new(41);
        for &dim in AWKWARD_SIZES.iter().chain(&[0usize]) {
            let rows = 13;
            let t = rng.normal_vec(rows * dim, 3.0);
            // Include specials so that a lossy conversion would show.
            let mut t16: Vec<f16> = t.iter().map(|&v| f16::from_f32(v)).collect();
            let mut tb16: Vec<bf16> = t.iter().map(|&v| bf16::from_f32(v)).collect();
            if dim > 0 {
                t16[0] = f16::from_bits(0x0001);
                tb16[0] = bf16::NAN;
                t16[rows * dim - 1] = f16::NEG_INFINITY;
            }
            for n in [0, 1, 5, 40] {
                let ids = random_ids(&mut rng, n, rows);
                let mut want = vec![0.0; n * dim];
                let mut got = vec![f32::NAN; n * dim];
                gather_f16_ref(&t16, dim, &ids, &mut want);
                gather_f16_isa(isa, &t16, dim, &ids, &mut got);
                // Exact: bit-for-bit equal.
                assert_eq!(bits(&got), bits(&want), "gather_f16 {isa} dim={dim} n={n}");

                gather_bf16_ref(&tb16, dim, &ids, &mut want);
                gather_bf16_isa(isa, &tb16, dim, &ids, &mut got);
                // Exact: bit-for-bit equal.
                assert_eq!(bits(&got), bits(&want), "gather_bf16 {isa} dim={dim} n={n}");
            }
        }
    }
    crate::isa_tests!(gather_half, check_gather_half);

    #[test]
    fn gather_f32_and_fast_paths_match_reference() {
        let mut rng = Rng::new(42);
        for &dim in AWKWARD_SIZES.iter().chain(&[0usize]) {
            let rows = 9;
            let t = rng.normal_vec(rows * dim, 1.0);
            let t16: Vec<f16> = t.iter().map(|&v| f16::from_f32(v)).collect();
            let tb16: Vec<bf16> = t.iter().map(|&v| bf16::from_f32(v)).collect();
            for n in [0, 1, 7, 30] {
                let ids = random_ids(&mut rng, n, rows);
                let mut want = vec![0.0; n * dim];
                let mut got = vec![f32::NAN; n * dim];
                gather_ref(&t, dim, &ids, &mut want);
                gather(&t, dim, &ids, &mut got);
                // Exact: a copy.
                assert_eq!(bits(&got), bits(&want), "gather dim={dim} n={n}");
                for (i, &id) in ids.iter().enumerate() {
                    assert_eq!(
                        &got[i * dim..(i + 1) * dim],
                        &t[id as usize * dim..(id as usize + 1) * dim]
                    );
                }

                gather_f16_ref(&t16, dim, &ids, &mut want);
                gather_f16(&t16, dim, &ids, &mut got);
                assert_eq!(bits(&got), bits(&want), "gather_f16 dim={dim} n={n}");
                gather_bf16_ref(&tb16, dim, &ids, &mut want);
                gather_bf16(&tb16, dim, &ids, &mut got);
                assert_eq!(bits(&got), bits(&want), "gather_bf16 dim={dim} n={n}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "gather: ids[2] = 4 is out of range for a table of 4 rows")]
    fn gather_names_the_bad_id() {
        let table = [0.0f32; 8];
        let mut out = [0.0f32; 6];
        gather(&table, 2, &[0, 3, 4], &mut out);
    }

    #[test]
    #[should_panic(expected = "gather_f16: ids[0] = 4000000000 is out of range")]
    fn gather_f16_names_the_bad_id() {
        let table = [f16::ZERO; 8];
        let mut out = [0.0f32; 2];
        gather_f16(&table, 2, &[4_000_000_000], &mut out);
    }

    #[test]
    #[should_panic(expected = "gather_bf16: out has 3 values, expected ids.len()·dim = 2·2")]
    fn gather_bf16_checks_out_len() {
        let table = [bf16::ZERO; 8];
        let mut out = [0.0f32; 3];
        gather_bf16(&table, 2, &[0, 1], &mut out);
    }
}
