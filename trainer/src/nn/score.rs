//! Item scores from user vectors and an item table (`score = h · item`), as the engine scores,
//! with their backward passes, and a seeded uniform negative sampler.
//!
//! - [`full_scores`]: `S[r, i] = h_r · E_i` over the whole table (`[rows, n_items]`, the padding
//!   row 0 included, as RecBole's full-softmax loss and the engine's raw scores). Backward:
//!   `dh = dS·E`, `dE += dSᵀ·h`.
//! - [`candidate_scores`]: `S[r, c] = h_r · E_{ids[r, c]}` for a few candidates per row (the
//!   target and sampled negatives). Backward: `dh_r = Σ_c dS[r, c]·E_{ids[r, c]}` and a
//!   scatter-add of `dS[r, c]·h_r` into row `ids[r, c]` of `dE`.
//!
//! The item table is usually also the input embedding (tied weights): both uses add into the
//! same gradient.

use super::linear::{input_grad, weight_grad};
use super::param::Param;
use crate::nn::Rng;
use seqrec_kernels::cpu::linear::linear;
use seqrec_kernels::cpu::vector;

/// `(rows, dim)` of an item table `[n_items, dim]`.
#[track_caller]
fn table_dims(table: &Param) -> (usize, usize) {
    match table.shape.as_slice() {
        [n, d] => (*n, *d),
        s => panic!("item table `{}` must be 2-D, has shape {s:?}", table.name),
    }
}

#[track_caller]
fn check_h(h: &[f32], rows: usize, dim: usize, table: &Param) {
    assert_eq!(
        h.len(),
        rows * dim,
        "scores against `{}`: h has {} values, expected rows·dim = {rows}·{dim}",
        table.name,
        h.len()
    );
}

#[track_caller]
fn check_ids(ids: &[u32], rows: usize, cands: usize, n: usize, table: &Param) {
    assert_eq!(
        ids.len(),
        rows * cands,
        "candidate scores against `{}`: {} ids, expected rows·candidates = {rows}·{cands}",
        table.name,
        ids.len()
    );
    if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= n) {
        panic!(
            "candidate scores against `{}`: id {id} at index {i} is not below {n} rows",
            table.name
        );
    }
}

/// `S = h·Eᵀ`, `[rows, n_items]`, for `h` `[rows, dim]` and the table `E` `[n_items, dim]`.
pub fn full_scores(h: &[f32], rows: usize, table: &Param) -> Vec<f32> {
    full_scores_into(h, rows, table, Vec::new())
}

/// [`full_scores`] into `out`'s allocation (resized to `rows·n_items`).
pub fn full_scores_into(h: &[f32], rows: usize, table: &Param, mut out: Vec<f32>) -> Vec<f32> {
    let (n, d) = table_dims(table);
    check_h(h, rows, d, table);
    out.clear();
    out.resize(rows * n, 0.0);
    linear(h, &table.value, None, &mut out, rows, d, n);
    out
}

/// Backward of [`full_scores`]: adds `dSᵀ·h` to the table's gradient and returns `dh = dS·E`.
pub fn full_scores_backward(
    h: &[f32],
    rows: usize,
    table: &mut Param,
    d_scores: &[f32],
) -> Vec<f32> {
    let (n, d) = table_dims(table);
    check_h(h, rows, d, table);
    assert_eq!(
        d_scores.len(),
        rows * n,
        "scores against `{}` backward: d_scores has {} values, expected rows·n_items = {rows}·{n}",
        table.name,
        d_scores.len()
    );
    weight_grad(&mut table.grad, d_scores, h, rows, n, d);
    let mut dh = vec![0.0; rows * d];
    input_grad(&mut dh, d_scores, &table.value, rows, n, d, false);
    dh
}

/// `S[r, c] = h_r · E_{ids[r·cands + c]}`, `[rows, cands]`.
///
/// # Panics
/// If `ids` does not hold `rows·cands` ids below the table's row count.
pub fn candidate_scores(
    h: &[f32],
    rows: usize,
    table: &Param,
    ids: &[u32],
    cands: usize,
) -> Vec<f32> {
    let (n, d) = table_dims(table);
    check_h(h, rows, d, table);
    check_ids(ids, rows, cands, n, table);
    let mut s = vec![0.0; rows * cands];
    for (r, out) in s.chunks_exact_mut(cands.max(1)).enumerate().take(rows) {
        let hr = &h[r * d..(r + 1) * d];
        for (o, &id) in out.iter_mut().zip(&ids[r * cands..(r + 1) * cands]) {
            let i = id as usize;
            *o = vector::dot(hr, &table.value[i * d..(i + 1) * d]);
        }
    }
    s
}

/// Backward of [`candidate_scores`]: scatter-adds `dS[r, c]·h_r` into the table's gradient
/// rows and returns `dh`.
pub fn candidate_scores_backward(
    h: &[f32],
    rows: usize,
    table: &mut Param,
    ids: &[u32],
    cands: usize,
    d_scores: &[f32],
) -> Vec<f32> {
    let (n, d) = table_dims(table);
    check_h(h, rows, d, table);
    check_ids(ids, rows, cands, n, table);
    assert_eq!(
        d_scores.len(),
        rows * cands,
        "candidate scores against `{}` backward: d_scores has {} values, expected {rows}·{cands}",
        table.name,
        d_scores.len()
    );
    let mut dh = vec![0.0; rows * d];
    for r in 0..rows {
        let hr = &h[r * d..(r + 1) * d];
        let dhr = &mut dh[r * d..(r + 1) * d];
        for (&g, &id) in d_scores[r * cands..(r + 1) * cands]
            .iter()
            .zip(&ids[r * cands..(r + 1) * cands])
        {
            let i = id as usize;
            vector::axpy(g, &table.value[i * d..(i + 1) * d], dhr);
            vector::axpy(g, hr, &mut table.grad[i * d..(i + 1) * d]);
        }
    }
    dh
}

/// `count` item ids drawn uniformly from `1..n_items` (never the padding id 0) and never one of
/// `exclude` (e.g. the target, or the user's whole history as in the SASRec paper), with
/// replacement among the allowed ids.
///
/// # Panics
/// If no id is allowed (every id of `1..n_items` is excluded).
pub fn sample_negatives(rng: &mut Rng, n_items: usize, exclude: &[u32], count: usize) -> Vec<u32> {
    let mut banned: Vec<u32> = exclude
        .iter()
        .copied()
        .filter(|&i| i >= 1 && (i as usize) < n_items)
        .collect();
    banned.sort_unstable();
    banned.dedup();
    let allowed = n_items.saturating_sub(1) - banned.len();
    assert!(
        count == 0 || allowed > 0,
        "sample_negatives: every id of 1..{n_items} is excluded"
    );
    (0..count)
        .map(|_| {
            // The k-th allowed id, found by stepping over the sorted banned ids below it.
            let mut id = 1 + rng.below(allowed) as u32;
            for &b in &banned {
                if b <= id {
                    id += 1;
                } else {
                    break;
                }
            }
            id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{GradCheck, assert_grad, project};

    #[test]
    fn score_gradients() {
        // Bilinear in h and E: the 4-point rule is exact; f32 noise only, ≈ 1.5·6e-8·|s|·√21/h
        // ≈ 1.5e-5 for scores of size 2 at h = 2^-4: atol 4e-5, rtol 1e-4. Candidate ids repeat (row 0 scores item 2 twice) to
        // exercise the scatter-add.
        let mut rng = Rng::new(80);
        let (rows, d, n, c) = (3, 5, 7, 3);
        let table = Param::normal("item_embedding.weight", &[n, d], 1.0, &mut rng);
        let h = rng.normal_vec(rows * d, 1.0);
        let ids = [2u32, 2, 6, 0, 1, 4, 5, 3, 2];
        let cfg = GradCheck::new(0.0625, 4e-5, 1e-4);
        for full in [true, false] {
            let cols = if full { n } else { c };
            let w = rng.normal_vec(rows * cols, 1.0);
            let score = |h: &[f32], t: &Param| {
                if full {
                    full_scores(h, rows, t)
                } else {
                    candidate_scores(h, rows, t, &ids, c)
                }
            };
            let mut trained = table.clone();
            let dh = if full {
                full_scores_backward(&h, rows, &mut trained, &w)
            } else {
                candidate_scores_backward(&h, rows, &mut trained, &ids, c, &w)
            };
            assert_grad(
                "scores dh",
                |hp| project(&score(hp, &table), &w),
                &h,
                &dh,
                &cfg,
            );
            let mut probe = table.clone();
            assert_grad(
                "scores dE",
                |ep| {
                    probe.value.copy_from_slice(ep);
                    project(&score(&h, &probe), &w)
                },
                &table.value,
                &trained.grad,
                &cfg,
            );
        }
    }

    #[test]
    fn negatives_avoid_padding_and_exclusions() {
        let mut rng = Rng::new(81);
        let neg = sample_negatives(&mut rng, 10, &[3, 3, 9, 0, 42], 2000);
        assert!(
            neg.iter()
                .all(|&i| (1..10).contains(&i) && i != 3 && i != 9)
        );
        // Every allowed id appears (7 ids, 2000 draws: each expected ~286 times).
        for id in [1u32, 2, 4, 5, 6, 7, 8] {
            let k = neg.iter().filter(|&&i| i == id).count();
            assert!((200..380).contains(&k), "id {id} drawn {k} times");
        }
        let again = sample_negatives(&mut Rng::new(81), 10, &[3, 3, 9, 0, 42], 2000);
        assert_eq!(neg, again, "seeded");
        assert_eq!(sample_negatives(&mut rng, 3, &[1], 4), vec![2; 4]);
    }

    #[test]
    #[should_panic(expected = "every id of 1..3 is excluded")]
    fn negatives_need_an_allowed_id() {
        sample_negatives(&mut Rng::new(1), 3, &[1, 2], 1);
    }
}
