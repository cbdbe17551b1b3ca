//! PDiT (thesis Ch.8, stage 1): a personalised diffusion transformer that generates the latent
//! of a user's next item's text from the latents of their history and of a prompt built from
//! it. `spec/pdit.md` is the contract: configuration ([`config`]), tensors and forward pass
//! ([`net`]), the diffusion (schedule, reverse step, respacing, loss: [`diffusion`]) and the
//! sampler (Algorithm 7), here on any [`Backend`] and for batches.
//!
//! ```no_run
//! use seqrec_engine::pdit::{NoiseSource, Pdit, PditWorkspace};
//! let m = Pdit::load("pdit.safetensors")?;
//! let (d, dp) = (m.config().latent_dim, m.config().cond_dim);
//! let (p, history) = (vec![0.1f32; dp], vec![0.2f32; 3 * d]); // 3 history latents, scaled
//! let mut ws = PditWorkspace::default();
//! let mut z0 = vec![0.0f32; d];
//! let chain = m.respaced(50)?;
//! m.sample(&chain, 1, Some(&p), Some((&history, &[3])), NoiseSource::seed(7), &mut ws, &mut z0)?;
//! # Ok::<(), seqrec_engine::Error>(())
//! ```
//!
//! Latents enter and leave at the network's scale: the caller multiplies the prompt, history
//! and target latents by `latent_scale` and divides a sample by it (`spec/pdit.md` §7.8).

pub mod config;
pub mod diffusion;
pub mod guide;
pub mod net;
pub mod noise;
pub mod rank;

pub use config::{PditConfig, Variant};
pub use diffusion::{LossTerms, Schedule, StepCoefs, hybrid_loss, p_mean_variance, q_sample};
pub use guide::Guidance;
pub use net::{Conditioning, NetWorkspace, PditNet, Trace};
pub use noise::Noise;
pub use rank::Catalog;

use crate::backend::Backend;
use crate::config::{CONFIG_KEY, Config};
use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::weights::{TensorLoader, WeightFile};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// A loaded PDiT on backend `B`, with its base diffusion chain. Immutable after load.
#[derive(Debug)]
pub struct Pdit<B: Backend = Cpu> {
    be: B,
    net: PditNet<B>,
    base: Schedule,
    config: Config,
}

/// Buffers reused across calls: grown to the largest batch, then nothing is allocated.
#[derive(Debug)]
pub struct PditWorkspace<B: Backend = Cpu> {
    net: NetWorkspace<B>,
    cond: Conditioning<B>,
    z: B::Buf,
    out: B::Buf,
    p: B::Buf,
    hist: B::Buf,
    noise: B::Buf,
    scan: B::Scratch,
    t: Vec<usize>,
    host: Vec<f32>,
    guide_out: Vec<f32>,
    guide_z: Vec<f32>,
}

impl<B: Backend> Default for PditWorkspace<B> {
    fn default() -> Self {
        PditWorkspace {
            net: NetWorkspace::default(),
            cond: Conditioning::default(),
            z: B::Buf::default(),
            out: B::Buf::default(),
            p: B::Buf::default(),
            hist: B::Buf::default(),
            noise: B::Buf::default(),
            scan: B::Scratch::default(),
            t: Vec::new(),
            host: Vec::new(),
            guide_out: Vec::new(),
            guide_z: Vec::new(),
        }
    }
}

/// Where a sampler's Gaussian noise comes from.
#[derive(Debug)]
pub enum NoiseSource<'a> {
    /// A seeded stream ([`Noise`]): `z_T` first, then the noise of each step from `T′` down
    /// to 2, sample by sample.
    Seeded(Noise),
    /// Given values: `init` is `z_T` (`[samples, d]`), `steps` the noise of the steps from
    /// `T′` down to 2 (`[T′ − 1, samples, d]`).
    Given {
        /// `z_T`.
        init: &'a [f32],
        /// The steps' noise.
        steps: &'a [f32],
    },
}

impl NoiseSource<'_> {
    /// The stream of `seed`.
    pub fn seed(seed: u64) -> NoiseSource<'static> {
        NoiseSource::Seeded(Noise::new(seed))
    }
}

/// One reverse step of one sample, with the Gaussian it drew from (`spec/pdit.md` §4).
#[derive(Clone, Debug, PartialEq)]
pub struct ReverseStep {
    /// The network's ε.
    pub eps: Vec<f32>,
    /// The network's v (learn_sigma).
    pub v: Option<Vec<f32>>,
    /// `√(1/ᾱ)·z − √(1/ᾱ − 1)·ε`.
    pub pred_xstart: Vec<f64>,
    /// The reverse step's mean.
    pub mean: Vec<f64>,
    /// Its log-variance.
    pub log_variance: Vec<f64>,
    /// `z_{j−1}`.
    pub z_prev: Vec<f32>,
}

/// The training loss of one sample and what it was computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Loss {
    /// `z_t = √ᾱ·z_0 + √(1 − ᾱ)·ε`.
    pub z_t: Vec<f32>,
    /// The network's ε at `(z_t, t)`.
    pub eps: Vec<f32>,
    /// Its v (learn_sigma).
    pub v: Option<Vec<f32>>,
    /// The terms and the gradients with respect to ε and v.
    pub terms: LossTerms,
}

impl Pdit<Cpu> {
    /// Memory-maps and loads a PDiT checkpoint on the CPU (configuration in the file's
    /// `seqrec.config` metadata, else a `config.json` beside it).
    #[cfg(feature = "std")]
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Pdit::load_on(Cpu::new(), path)
    }

    /// Loads a PDiT checkpoint from a file image on the CPU.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Pdit::from_weight_file(Cpu::new(), &WeightFile::from_bytes(bytes)?, None)
    }
}

impl<B: Backend> Pdit<B> {
    /// [`Pdit::load`] onto backend `be`.
    #[cfg(feature = "std")]
    pub fn load_on(be: B, path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = WeightFile::open(path)?;
        let sidecar = path.with_file_name("config.json");
        let config = if file.metadata(CONFIG_KEY).is_none() && sidecar.is_file() {
            let origin = alloc::string::ToString::to_string(&sidecar.display());
            let text = std::fs::read_to_string(&sidecar).map_err(|source| Error::Io {
                path: origin.clone(),
                source,
            })?;
            Some(Config::from_json(&text).map_err(|e| e.in_origin(&origin))?)
        } else {
            None
        };
        Pdit::from_weight_file(be, &file, config)
    }

    /// Builds a PDiT on `be` from a parsed weight file, with `config` or else the file's
    /// `seqrec.config` metadata. Every tensor is checked against the configuration, and a
    /// tensor the configuration does not imply is an error.
    pub fn from_weight_file(be: B, file: &WeightFile, config: Option<Config>) -> Result<Self> {
        (|| {
            let config = match config {
                Some(c) => c,
                None => match file.metadata(CONFIG_KEY) {
                    Some(text) => Config::from_json(text)?,
                    None => {
                        return Err(Error::Config(format!(
                            "no configuration: the file has no `{CONFIG_KEY}` metadata"
                        )));
                    }
                },
            };
            let cfg = PditConfig::from_config(&config)?;
            let mut ld = TensorLoader::new(file);
            let net = PditNet::load(&be, &mut ld, cfg)?;
            ld.finish("pdit")?;
            let base = Schedule::linear(net.config());
            Ok(Pdit {
                be,
                net,
                base,
                config,
            })
        })()
        .map_err(|e: Error| e.in_origin(file.origin()))
    }

    /// The checked configuration.
    pub fn config(&self) -> &PditConfig {
        self.net.config()
    }

    /// The configuration as stored.
    pub fn raw_config(&self) -> &Config {
        &self.config
    }

    /// The base chain (`T` steps, the network fed `t = j`).
    pub fn schedule(&self) -> &Schedule {
        &self.base
    }

    /// The base chain respaced to `steps` steps (`steps = T` is the base chain).
    pub fn respaced(&self, steps: usize) -> Result<Schedule> {
        if steps == self.config().timesteps {
            return Ok(self.base.clone());
        }
        Schedule::respaced(self.config(), steps)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.be
    }

    /// The network.
    pub fn net(&self) -> &PditNet<B> {
        &self.net
    }

    /// Checks the inputs of `samples` requests, moves them to the backend and conditions the
    /// network on them.
    fn condition(
        &self,
        samples: usize,
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        ws: &mut PditWorkspace<B>,
    ) -> Result<()> {
        let c = self.config();
        let be = &self.be;
        let p = match (c.variant.has_gen(), p) {
            (true, Some(p)) => {
                check_width("prompt latent p", p.len(), samples, c.cond_dim)?;
                be.write(p, &mut ws.p, 0)?;
                Some(&ws.p)
            }
            (true, None) => {
                return Err(Error::InvalidArgument(format!(
                    "variant {} needs the prompt latent p",
                    c.variant.name()
                )));
            }
            (false, _) => None,
        };
        let history = match (c.variant.has_tem(), history) {
            (true, Some((h, lens))) => {
                if lens.len() != samples {
                    return Err(Error::InvalidArgument(format!(
                        "{} history lengths for {samples} samples",
                        lens.len()
                    )));
                }
                if lens.contains(&0) {
                    return Err(Error::InvalidArgument(
                        "empty history: PDiT needs at least one history item".into(),
                    ));
                }
                let rows: usize = lens.iter().sum();
                check_width("history latents", h.len(), rows, c.latent_dim)?;
                be.write(h, &mut ws.hist, 0)?;
                Some((&ws.hist, lens))
            }
            (true, None) => {
                return Err(Error::InvalidArgument(format!(
                    "variant {} needs the history latents",
                    c.variant.name()
                )));
            }
            (false, _) => None,
        };
        self.net.condition(be, samples, p, history, &mut ws.cond)
    }

    /// The network's outputs for `samples` latents `z` (`[samples, d]`) at network steps `t`
    /// (one per sample, `1..=T`), the prompt latents `p` (`[samples, cond_dim]`, variants full
    /// and gen) and the histories (`[Σ lens, d]` and `lens`, variants full and tem): `out` is
    /// `[samples, k·P]`, each row ε then v.
    pub fn forward(
        &self,
        z: &[f32],
        t: &[usize],
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        ws: &mut PditWorkspace<B>,
        out: &mut [f32],
    ) -> Result<()> {
        self.forward_traced(z, t, p, history, ws, out, None)
    }

    /// [`Self::forward`], recording the intermediate values in `trace` when given.
    pub fn forward_traced(
        &self,
        z: &[f32],
        t: &[usize],
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        ws: &mut PditWorkspace<B>,
        out: &mut [f32],
        trace: Option<&mut Trace>,
    ) -> Result<()> {
        let (c, samples) = (self.config(), t.len());
        check_width("latent z_t", z.len(), samples, c.latent_dim)?;
        check_width("output", out.len(), samples, c.out_dim())?;
        self.condition(samples, p, history, ws)?;
        self.be.write(z, &mut ws.z, 0)?;
        let PditWorkspace {
            net,
            cond,
            z,
            out: o,
            ..
        } = ws;
        self.net.forward(&self.be, z, t, cond, net, o, trace)?;
        self.be.read(o, 0, out)
    }

    /// ε and v (learn_sigma) of one sample.
    fn eps_v(&self, out: &[f32]) -> (Vec<f32>, Option<Vec<f32>>) {
        let d = self.config().latent_dim;
        let v = self.config().learn_sigma.then(|| out[d..2 * d].to_vec());
        (out[..d].to_vec(), v)
    }

    /// One reverse step of one sample at step `j` of `chain` (the network fed
    /// `chain.model_t[j − 1]`), with the noise `noise` (ignored at `j = 1`).
    pub fn reverse_step(
        &self,
        chain: &Schedule,
        j: usize,
        z: &[f32],
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        noise: &[f32],
        ws: &mut PditWorkspace<B>,
    ) -> Result<ReverseStep> {
        let c = self.config();
        let i = chain.row(j)?;
        check_width("noise", noise.len(), 1, c.latent_dim)?;
        let mut out = vec![0.0f32; c.out_dim()];
        self.forward(z, &[chain.model_t[i]], p, history, ws, &mut out)?;
        let (eps, v) = self.eps_v(&out);
        let coefs = chain.step(j, c.learn_sigma)?;
        let (mean, log_variance, pred_xstart) = p_mean_variance(&coefs, z, &eps, v.as_deref());
        let z_prev = mean
            .iter()
            .zip(&log_variance)
            .zip(noise)
            .map(|((&m, &lv), &n)| {
                if j > 1 {
                    (m + libm::exp(lv / 2.0) * f64::from(n)) as f32
                } else {
                    m as f32
                }
            })
            .collect();
        Ok(ReverseStep {
            eps,
            v,
            pred_xstart,
            mean,
            log_variance,
            z_prev,
        })
    }

    /// The training loss of one sample: `z_t = q_sample(z0, t, noise)`, the network at
    /// `(z_t, t)`, then [`hybrid_loss`].
    pub fn loss(
        &self,
        t: usize,
        z0: &[f32],
        noise: &[f32],
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        ws: &mut PditWorkspace<B>,
    ) -> Result<Loss> {
        let c = self.config();
        check_width("target latent z0", z0.len(), 1, c.latent_dim)?;
        check_width("noise", noise.len(), 1, c.latent_dim)?;
        let z_t: Vec<f32> = q_sample(&self.base, z0, t, noise)?
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let mut out = vec![0.0f32; c.out_dim()];
        self.forward(&z_t, &[t], p, history, ws, &mut out)?;
        let (eps, v) = self.eps_v(&out);
        let terms = hybrid_loss(
            &self.base,
            c.learn_sigma,
            t,
            z0,
            noise,
            &z_t,
            &eps,
            v.as_deref(),
        )?;
        Ok(Loss { z_t, eps, v, terms })
    }

    /// Algorithm 7 for `samples` requests along `chain`: `z_T` from `noise`, then for
    /// `j = T′ … 1` the network at `chain.model_t[j − 1]` and the reverse step (noise for
    /// `j > 1`). Writes `z_0` (`[samples, d]`) to `z0`.
    pub fn sample(
        &self,
        chain: &Schedule,
        samples: usize,
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        noise: NoiseSource<'_>,
        ws: &mut PditWorkspace<B>,
        z0: &mut [f32],
    ) -> Result<()> {
        self.run_chain(chain, samples, p, history, noise, None, ws, z0, None)
    }

    /// [`Self::sample`] with attribute guidance ([`Guidance`]; scale 0 is the plain chain up
    /// to rounding: the guided step reads the network's output back to the host every step).
    pub fn sample_guided(
        &self,
        chain: &Schedule,
        samples: usize,
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        noise: NoiseSource<'_>,
        guidance: Option<&Guidance<'_>>,
        ws: &mut PditWorkspace<B>,
        z0: &mut [f32],
    ) -> Result<()> {
        self.run_chain(chain, samples, p, history, noise, guidance, ws, z0, None)
    }

    /// [`Self::sample`], calling `keep(j − 1, z)` (when given) with the latents after every
    /// step `j` (which moves them to the host every step).
    pub fn sample_keeping(
        &self,
        chain: &Schedule,
        samples: usize,
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        noise: NoiseSource<'_>,
        ws: &mut PditWorkspace<B>,
        z0: &mut [f32],
        keep: Option<&mut Keep<'_>>,
    ) -> Result<()> {
        self.run_chain(chain, samples, p, history, noise, None, ws, z0, keep)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_chain(
        &self,
        chain: &Schedule,
        samples: usize,
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        mut noise: NoiseSource<'_>,
        guidance: Option<&Guidance<'_>>,
        ws: &mut PditWorkspace<B>,
        z0: &mut [f32],
        mut keep: Option<&mut Keep<'_>>,
    ) -> Result<()> {
        let c = self.config();
        if let Some(g) = guidance {
            g.check(c.latent_dim)?;
        }
        let (d, steps, n) = (c.latent_dim, chain.steps(), samples * c.latent_dim);
        check_width("sample output", z0.len(), samples, d)?;
        if let NoiseSource::Given { init, steps: s } = &noise {
            check_width("initial noise", init.len(), samples, d)?;
            check_width("steps' noise", s.len(), (steps - 1) * samples, d)?;
        }
        self.condition(samples, p, history, ws)?;
        let be = &self.be;
        let PditWorkspace {
            net,
            cond,
            z,
            out,
            noise: nb,
            t,
            host,
            guide_out,
            guide_z,
            ..
        } = ws;
        host.resize(n, 0.0);
        match &mut noise {
            NoiseSource::Seeded(rng) => {
                rng.fill(host);
                be.write(host, z, 0)?;
            }
            NoiseSource::Given { init, .. } => be.write(init, z, 0)?,
        }
        for j in (1..=steps).rev() {
            t.clear();
            t.resize(samples, chain.model_t[j - 1]);
            self.net.forward(be, z, t, cond, net, out, None)?;
            let coefs = chain.step(j, c.learn_sigma)?;
            if let Some(g) = guidance.filter(|g| g.scale != 0.0) {
                let w = c.out_dim();
                guide_out.resize(samples * w, 0.0);
                guide_z.resize(n, 0.0);
                be.read(out, 0, guide_out)?;
                be.read(z, 0, guide_z)?;
                for (row, zr) in guide_out.chunks_exact_mut(w).zip(guide_z.chunks_exact(d)) {
                    g.apply(
                        zr,
                        &mut row[..d],
                        coefs.sqrt_recip_alpha_bar,
                        coefs.sqrt_recipm1_alpha_bar,
                        c.latent_scale,
                    );
                }
                be.write(guide_out, out, 0)?;
            }
            let eta = if j > 1 {
                match &mut noise {
                    NoiseSource::Seeded(rng) => {
                        rng.fill(host);
                        be.write(host, nb, 0)?;
                    }
                    NoiseSource::Given { steps: s, .. } => {
                        let r = steps - j;
                        be.write(&s[r * n..(r + 1) * n], nb, 0)?;
                    }
                }
                Some(&*nb)
            } else {
                None
            };
            be.ddpm_step(out, c.out_dim(), z, eta, samples, d, &coefs.ddpm)?;
            if let Some(keep) = keep.as_mut().filter(|_| j > 1) {
                be.read(z, 0, host)?;
                keep(j - 1, host)?;
            }
        }
        be.read(z, 0, z0)?;
        match keep {
            Some(keep) => keep(0, z0),
            None => Ok(()),
        }
    }
}

/// The tensors (names and shapes, in loading order) a PDiT with configuration `cfg` has
/// (`spec/pdit.md` §2): the list a checkpoint writer must produce and the loader checks.
pub fn tensor_specs(cfg: &Config) -> Result<Vec<crate::weights::TensorSpec>> {
    let pc = PditConfig::from_config(cfg)?;
    let mut ld = TensorLoader::recording();
    PditNet::load(&Cpu::new(), &mut ld, pc)?;
    ld.finish("pdit")
}

/// What [`Pdit::sample_keeping`] calls after each step: `(j − 1, z)`.
pub type Keep<'a> = dyn FnMut(usize, &[f32]) -> Result<()> + 'a;

/// Checks that `len` values are `rows` rows of `width`, naming `what`.
fn check_width(what: &str, len: usize, rows: usize, width: usize) -> Result<()> {
    if len != rows * width {
        return Err(Error::InvalidArgument(format!(
            "{what}: {len} values, expected {rows} × {width}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Tensor;
    use alloc::string::ToString;

    fn config_json(variant: &str) -> alloc::string::String {
        format!(
            r#"{{"model":"pdit","variant":"{variant}","latent_dim":8,"cond_dim":6,
                "hidden_size":12,"num_tokens":4,"num_heads":3,"depth_gen":1,"depth_tem":1,
                "mlp_ratio":2.0,"max_hist_len":3,"num_timesteps":20,"beta_start":0.0001,
                "beta_end":0.02,"learn_sigma":true,"latent_scale":2.0,"freq_embed_size":8}}"#
        )
    }

    fn model(variant: &str) -> Pdit {
        let cfg = Config::from_json(&config_json(variant)).unwrap();
        Pdit::from_bytes(&crate::testing::random_pdit_bytes(&cfg, 1, 0.3).unwrap()).unwrap()
    }

    /// A PDiT checkpoint given to the ranking models' loader says where it belongs.
    #[test]
    fn model_load_points_at_pdit() {
        let json = config_json("full");
        let bytes = crate::weights::serialize(&[], &[(crate::CONFIG_KEY, json.as_str())]).unwrap();
        let e = crate::Model::from_bytes(&bytes, &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("pdit::Pdit") && e.contains("seqrec_pdit_load"),
            "{e}"
        );
    }

    /// Bad input is an error naming the problem, and changes nothing for the next call.
    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let m = model("full");
        let mut ws = PditWorkspace::default();
        let (z, p) = (vec![0.5f32; 8], vec![0.1f32; 6]);
        let mut out = vec![0.0f32; 16];
        let mut run = |z: &[f32], t: usize, p: Option<&[f32]>, h: &[f32], n: &[usize]| {
            m.forward(z, &[t], p, Some((h, n)), &mut ws, &mut out)
                .map_err(|e| e.to_string())
        };
        let hist = vec![0.2f32; 4 * 8];
        let e = run(&z, 5, Some(&p), &hist, &[4]).unwrap_err();
        assert!(e.contains("4 items") && e.contains("max_hist_len"), "{e}");
        let e = run(&z, 5, Some(&p), &[], &[0]).unwrap_err();
        assert!(e.contains("empty history"), "{e}");
        for t in [0, 21] {
            let e = run(&z, t, Some(&p), &hist[..8], &[1]).unwrap_err();
            assert!(
                e.contains(&format!("t = {t}")) && e.contains("1..=20"),
                "{e}"
            );
        }
        let e = run(&z[..7], 5, Some(&p), &hist[..8], &[1]).unwrap_err();
        assert!(e.contains("latent z_t") && e.contains("1 × 8"), "{e}");
        let e = run(&z, 5, Some(&p[..5]), &hist[..8], &[1]).unwrap_err();
        assert!(e.contains("prompt latent p"), "{e}");
        let e = run(&z, 5, None, &hist[..8], &[1]).unwrap_err();
        assert!(e.contains("needs the prompt latent"), "{e}");
        let e = run(&z, 5, Some(&p), &hist[..7], &[1]).unwrap_err();
        assert!(e.contains("history latents"), "{e}");
        run(&z, 5, Some(&p), &hist[..8], &[1]).unwrap();
        // A catalog of another width.
        let table = Tensor::from_vec(vec![5, 6], vec![0.1; 30]).unwrap();
        let cat = Catalog::new(&Cpu::new(), &table).unwrap();
        let mut z0 = vec![0.0f32; 8];
        let e = m
            .recommend(
                &m.respaced(5).unwrap(),
                &cat,
                1,
                Some(&p),
                Some((&hist[..8], &[1])),
                NoiseSource::seed(1),
                3,
                &[],
                &mut PditWorkspace::default(),
                &mut z0,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("rows of 6") && e.contains("8 wide"), "{e}");
        assert!(m.respaced(21).is_err() && m.respaced(1).is_err());
    }

    /// A seed gives one sample; the history and the prompt move it.
    #[test]
    fn sampling_is_deterministic_and_conditioned() {
        let m = model("full");
        let chain = m.respaced(10).unwrap();
        let mut ws = PditWorkspace::default();
        let (p, hist) = (vec![0.3f32; 6], vec![-0.4f32; 16]);
        let draw = |seed: u64, p: &[f32], h: &[f32], ws: &mut PditWorkspace| {
            let mut z0 = vec![0.0f32; 8];
            let n = [h.len() / 8];
            m.sample(
                &chain,
                1,
                Some(p),
                Some((h, &n)),
                NoiseSource::seed(seed),
                ws,
                &mut z0,
            )
            .unwrap();
            z0
        };
        let a = draw(3, &p, &hist, &mut ws);
        assert_eq!(a, draw(3, &p, &hist, &mut ws));
        assert_ne!(a, draw(4, &p, &hist, &mut ws));
        assert_ne!(a, draw(3, &p, &hist[..8], &mut ws));
        assert_ne!(a, draw(3, &[0.9; 6], &hist, &mut ws));
    }

    #[test]
    fn the_catalog_ranks_by_cosine() {
        // Items 1..4 on the axes and one diagonal; a latent along (1, 1) ranks 3 first.
        let rows = vec![0.0, 0.0, 2.0, 0.0, 0.0, 3.0, 1.0, 1.0, -1.0, 0.0f32];
        let table = Tensor::from_vec(vec![5, 2], rows).unwrap();
        let be = Cpu::new();
        let cat = Catalog::new(&be, &table).unwrap();
        let mut scan = Default::default();
        let (mut items, mut scores) = (vec![0u32; 3], vec![0f32; 3]);
        let h = vec![5.0f32, 5.0];
        let n = be
            .topk(
                &cat.items,
                &h,
                0,
                3,
                &[0],
                &mut scan,
                &mut items,
                &mut scores,
            )
            .unwrap();
        assert_eq!((n, items[0]), (3, 3));
        assert!((scores[0] / 50f32.sqrt() - 1.0).abs() < 1e-6);
    }

    /// The guided ε̂ is ε − s·√(1 − ᾱ)·∇_z log p(a | x̂_0(z)/scale) with ε held fixed: checked
    /// against central differences of the log-probability, towards and away.
    #[test]
    fn guidance_follows_the_classifier_gradient() {
        let (d, scale) = (5usize, 2.0f64);
        let w = [0.7f32, -1.2, 0.4, 0.0, 2.0];
        let z = [0.3f32, -0.8, 1.1, 0.5, -0.2];
        let eps = [0.1f32, 0.4, -0.6, 0.9, 0.2];
        let alpha_bar: f64 = 0.37;
        let (ra, rm1) = ((1.0 / alpha_bar).sqrt(), (1.0 / alpha_bar - 1.0).sqrt());
        for toward in [true, false] {
            let g = Guidance {
                weight: &w,
                bias: -0.3,
                toward,
                scale: 1.5,
            };
            let log_p = |z: &[f64]| {
                let x: Vec<f32> = z
                    .iter()
                    .zip(&eps)
                    .map(|(&z, &e)| ((ra * z - rm1 * f64::from(e)) / scale) as f32)
                    .collect();
                let p = g.probability(&x);
                if toward { p.ln() } else { (1.0 - p).ln() }
            };
            let mut guided = eps;
            g.apply(&z, &mut guided, ra, rm1, scale);
            for i in 0..d {
                let h = 1e-3;
                let mut up: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
                let mut dn = up.clone();
                up[i] += h;
                dn[i] -= h;
                let grad = (log_p(&up) - log_p(&dn)) / (2.0 * h);
                let want = f64::from(eps[i]) - 1.5 * (1.0 - alpha_bar).sqrt() * grad;
                assert!(
                    (f64::from(guided[i]) - want).abs() < 1e-4,
                    "toward {toward}, i {i}: {} vs {want}",
                    guided[i]
                );
            }
        }
    }

    /// Scale 0 is the plain chain bit for bit; a positive scale moves samples towards the
    /// attribute (and away from it when asked); a classifier of another width is refused.
    #[test]
    fn guided_sampling_moves_samples_along_the_classifier() {
        let m = model("full");
        let chain = m.respaced(10).unwrap();
        let mut ws = PditWorkspace::default();
        let (p, hist) = (vec![0.3f32; 6], vec![-0.4f32; 16]);
        let w: Vec<f32> = (0..8)
            .map(|i| if i % 2 == 0 { 1.0 } else { -0.5 })
            .collect();
        let mut draw = |g: Option<&Guidance<'_>>, seed: u64| {
            let mut z0 = vec![0.0f32; 3 * 8];
            m.sample_guided(
                &chain,
                3,
                Some(&[p.clone(), p.clone(), p.clone()].concat()),
                Some((
                    &[hist.clone(), hist[..8].to_vec(), hist.clone()].concat(),
                    &[2, 1, 2],
                )),
                NoiseSource::seed(seed),
                g,
                &mut ws,
                &mut z0,
            )
            .map(|_| z0)
        };
        let guide = |toward: bool, scale: f32| Guidance {
            weight: &w,
            bias: 0.0,
            toward,
            scale,
        };
        let mean_logit = |z0: &[f32]| {
            z0.chunks(8)
                .map(|z| z.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() / 2.0)
                .sum::<f32>()
                / 3.0
        };
        for seed in 0..3 {
            let plain = draw(None, seed).unwrap();
            assert_eq!(plain, draw(Some(&guide(true, 0.0)), seed).unwrap());
            let up = mean_logit(&draw(Some(&guide(true, 4.0)), seed).unwrap());
            let down = mean_logit(&draw(Some(&guide(false, 4.0)), seed).unwrap());
            let base = mean_logit(&plain);
            assert!(down < base && base < up, "{down} {base} {up}");
        }
        let short = Guidance {
            weight: &w[..7],
            ..guide(true, 1.0)
        };
        let e = draw(Some(&short), 0).unwrap_err().to_string();
        assert!(e.contains("7 weights") && e.contains("8 wide"), "{e}");
        let e = draw(Some(&guide(true, -1.0)), 0).unwrap_err().to_string();
        assert!(e.contains("scale -1"), "{e}");
    }
}
