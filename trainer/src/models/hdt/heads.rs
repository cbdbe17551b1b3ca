//! The catalog heads of the hierarchical models (`Ŷ`, the goal head, `Â`): a linear layer
//! `W h + b` over the N items (the specification's heads), or, with `tied_heads`, the item
//! table itself with a bias of its own, `E h + b` (the way the plain backbones score, fewer
//! parameters on small data). The tied table's gradient adds into the item embedding's.

use crate::nn::linear::LinearCache;
use crate::nn::score::{full_scores, full_scores_backward};
use crate::nn::{Linear, Module, Param, Rng};
use seqrec_kernels::cpu::vector;

/// A head over the catalog. See the module docs.
#[derive(Clone, Debug)]
pub enum Head {
    /// `{name}.weight` `[N, d]` and `{name}.bias` `[N]`.
    Linear(Linear),
    /// `{name}.bias` `[N]` over the item table.
    Tied(Param),
}

/// What [`Head::backward`] needs.
#[derive(Debug)]
pub struct HeadCache {
    h: Vec<f32>,
    rows: usize,
    lin: Option<LinearCache>,
}

impl Head {
    /// A head named `name` from width `d` to `n` items: `N(0, 0.02²)` weights, zero bias.
    pub fn new(name: &str, d: usize, n: usize, tied: bool, rng: &mut Rng) -> Self {
        if tied {
            Head::Tied(Param::zeros(format!("{name}.bias"), &[n]))
        } else {
            Head::Linear(Linear::new(name, d, n, true, 0.02, rng))
        }
    }

    /// Logits `[rows, N]` without a cache (`table` is the item table, used when tied).
    pub fn infer(&self, table: &Param, h: &[f32], rows: usize) -> Vec<f32> {
        match self {
            Head::Linear(l) => l.infer(h, rows),
            Head::Tied(b) => {
                let mut s = full_scores(h, rows, table);
                for row in s.chunks_exact_mut(b.len()) {
                    vector::add(row, &b.value);
                }
                s
            }
        }
    }

    /// Logits and the cache.
    pub fn forward(&self, table: &Param, h: &[f32], rows: usize) -> (Vec<f32>, HeadCache) {
        let (s, lin) = match self {
            Head::Linear(l) => {
                let (s, c) = l.forward(h, rows);
                (s, Some(c))
            }
            Head::Tied(_) => (self.infer(table, h, rows), None),
        };
        let h = if lin.is_some() {
            Vec::new()
        } else {
            h.to_vec()
        };
        (s, HeadCache { h, rows, lin })
    }

    /// Adds the parameter gradients (into `table` when tied) and returns `dh`.
    pub fn backward(&mut self, table: &mut Param, c: &HeadCache, d: &[f32]) -> Vec<f32> {
        match self {
            Head::Linear(l) => l.backward(c.lin.as_ref().expect("linear cache"), d),
            Head::Tied(b) => {
                for row in d.chunks_exact(b.len()) {
                    vector::add(&mut b.grad, row);
                }
                full_scores_backward(&c.h, c.rows, table, d)
            }
        }
    }
}

impl Module for Head {
    fn params(&self) -> Vec<&Param> {
        match self {
            Head::Linear(l) => l.params(),
            Head::Tied(b) => vec![b],
        }
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Head::Linear(l) => l.params_mut(),
            Head::Tied(b) => vec![b],
        }
    }
}
