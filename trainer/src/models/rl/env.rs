//! The built-in language environment (`spec/thesis-models.md` §7.1) on the text encoder seqrec
//! runs (e.g. all-MiniLM-L6-v2) instead of a 7B decoder: a reward model and a state model that
//! share the encoder and its LoRA adapters, over prompts in which every item is one **item
//! token**.
//!
//! - **Item tokens** `I^e` (`[n_items, H]`, frozen): an item's token is the mean of the word
//!   embeddings of its text's tokens, a vector in the encoder's input space (the thesis learns
//!   a new token per item so that the model reproduces the item's description; the mean of
//!   the description's own word embeddings is the closed-form start of that). In a prompt the
//!   token is a soft token: its vector replaces a word embedding.
//! - **State model**: `s'^e_t` is the encoder's sentence vector (its pooling) of the user
//!   part, `[CLS] USER i_1 … i_t [SEP]` (`USER` = [`USER_TEXT`], saying that the user
//!   consumed these items, in order; the most recent `window` items).
//! - **Reward model**: `r^e(p_t, a) = θ·v + b` with `v` the sentence vector of the user part
//!   followed by the action part, `[CLS] USER i_1 … i_t [SEP] ASK a [SEP]` (`ASK` =
//!   [`ASK_TEXT`], asking whether the item comes next). A bidirectional encoder has no "last
//!   token" state; its pooled vector stands for the decoder's `h_last`.
//! - **Losses** (weights 1 each): `L_rm = mean_t −log σ(r(p_t, a⁺_t) − r(p_t, a⁻_t))`
//!   (Bradley–Terry, one sampled negative) and the in-batch contrastive
//!   `L_sm = (1/B) Σ_t (1/B) Σ_j −log σ(s'_t·a⁺_t − s'_t·a_j)` over the batch's positives'
//!   item tokens (the `j = t` term is the constant `log 2`).
//!
//! Gradients reach the encoder's trained part (its LoRA adapters, or top layers) and the
//! score head; the item tokens stay fixed.

use crate::error::{Error, Result};
use crate::nn::loss::{sigmoid, softplus};
use crate::nn::text::encoder::DELTA_KEY;
use crate::nn::text::{TextBatch, TextEncoder};
use crate::nn::{Linear, Module, Param, Rng};
use seqrec_engine::WeightFile;
use seqrec_engine::weights::serialize;
use std::path::Path;

/// Metadata key of a saved environment ([`LanguageEnv::to_safetensors`]).
pub const ENV_KEY: &str = "seqrec.le_env";

/// Prefix of the encoder's trained tensors in a saved environment.
const ENCODER_PREFIX: &str = "encoder.";

/// The fixed words of the prompts, as token ids of the encoder's tokenizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// `[CLS]`.
    pub cls: u32,
    /// `[SEP]`.
    pub sep: u32,
    /// The id written at an item token's position (its word embedding is replaced).
    pub slot: u32,
    /// The user part's sentence (without special tokens).
    pub user: Vec<u32>,
    /// The action part's question (without special tokens).
    pub ask: Vec<u32>,
}

/// The words of [`Prompt::user`] and [`Prompt::ask`]: short, because every prompt token costs
/// a full pass of the encoder (the thesis's sentences suit a 7B decoder that reads them; a
/// small encoder adapted with LoRA takes them as markers of the two parts).
pub const USER_TEXT: &str = "the user consumed:";
/// See [`USER_TEXT`].
pub const ASK_TEXT: &str = "next?";

/// Loss parts of one LE training step.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct EnvLoss {
    /// `L_rm + L_sm`.
    pub total: f64,
    /// The reward model's Bradley–Terry loss.
    pub rm: f64,
    /// The state model's contrastive loss.
    pub sm: f64,
    /// Pairs the reward model orders right (`r⁺ > r⁻`), of [`Self::pairs`].
    pub right: usize,
    /// Pairs scored.
    pub pairs: usize,
}

/// The language environment (see the module docs).
#[derive(Clone, Debug)]
pub struct LanguageEnv {
    /// The shared encoder (its fine-tuning setting says what trains).
    pub encoder: TextEncoder,
    /// The reward model's score head, `H → 1` (`score_head.*`).
    pub score: Linear,
    items: Vec<f32>,
    prompt: Prompt,
    window: usize,
    /// Whether training adds the state model's loss `L_sm` (off: the ablation without it).
    pub state_loss: bool,
}

impl LanguageEnv {
    /// An environment over `encoder` with item tokens from the items' token ids `texts`
    /// (`texts[i]` with its special tokens, which are left out of the mean; `texts[0]`,
    /// padding, ignored), histories of at most `window` items, and a score head drawn from
    /// `rng`.
    pub fn new(
        encoder: TextEncoder,
        texts: &[Vec<u32>],
        prompt: Prompt,
        window: usize,
        rng: &mut Rng,
    ) -> Result<LanguageEnv> {
        if window == 0 {
            return Err(Error::Invalid(
                "an LE window needs at least one item".into(),
            ));
        }
        let h = encoder.dim();
        let table = &encoder.bert.embeddings.word.weight.value;
        let vocab = table.len() / h;
        let mut items = vec![0.0f32; texts.len() * h];
        for (i, t) in texts.iter().enumerate().skip(1) {
            let words: Vec<u32> = t
                .iter()
                .copied()
                .filter(|&w| w != prompt.cls && w != prompt.sep)
                .collect();
            if words.is_empty() {
                return Err(Error::Invalid(format!(
                    "item {i} has no text token: its item token needs one"
                )));
            }
            let row = &mut items[i * h..(i + 1) * h];
            for &w in &words {
                let w = w as usize;
                if w >= vocab {
                    return Err(Error::Invalid(format!(
                        "item {i}: token id {w} is outside the vocabulary of {vocab}"
                    )));
                }
                for (r, &e) in row.iter_mut().zip(&table[w * h..(w + 1) * h]) {
                    *r += e / words.len() as f32;
                }
            }
        }
        let score = Linear::new("score_head", h, 1, true, 0.02, rng);
        Ok(LanguageEnv {
            encoder,
            score,
            items,
            prompt,
            window,
            state_loss: true,
        })
    }

    /// The trained part as a safetensors file image: the encoder's trained tensors (its LoRA
    /// adapters, or its top layers) under `encoder.`, with the delta metadata that ties them
    /// to the base folder, and `score_head.*`; metadata `seqrec.le_env` holds the window.
    /// Item tokens are not stored: they come from the item texts again.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let delta = self.encoder.delta_metadata()?;
        let env = serde_json::json!({"version": 1, "window": self.window}).to_string();
        let bert = self.encoder.bert.params();
        let names: Vec<String> = bert
            .iter()
            .map(|p| format!("{ENCODER_PREFIX}{}", p.name))
            .collect();
        let tensors: Vec<(&str, &[usize], &[f32])> = bert
            .iter()
            .zip(&names)
            .map(|(p, n)| (n.as_str(), p.shape.as_slice(), p.value.as_slice()))
            .chain(
                self.score
                    .params()
                    .into_iter()
                    .map(|p| (p.name.as_str(), p.shape.as_slice(), p.value.as_slice())),
            )
            .collect();
        Ok(serialize(
            &tensors,
            &[(DELTA_KEY, &delta), (ENV_KEY, &env)],
        )?)
    }

    /// A saved environment ([`Self::to_safetensors`]) over the base encoder folder `base_dir`
    /// (checked against the file's fingerprint), with item tokens from `texts` as
    /// [`Self::new`].
    pub fn load(
        base_dir: &Path,
        file: &WeightFile,
        texts: &[Vec<u32>],
        prompt: Prompt,
    ) -> Result<LanguageEnv> {
        let bad = |msg: String| Error::Invalid(format!("{}: {msg}", file.origin()));
        let meta: serde_json::Value = file
            .metadata(ENV_KEY)
            .and_then(|m| serde_json::from_str(m).ok())
            .ok_or_else(|| bad(format!("no valid `{ENV_KEY}` metadata: not a saved LE")))?;
        let window =
            meta.get("window")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| bad(format!("`{ENV_KEY}` has no `window`")))? as usize;
        let encoder = TextEncoder::load_with_delta_prefixed(base_dir, file, ENCODER_PREFIX)?;
        let mut env = Self::new(encoder, texts, prompt, window, &mut Rng::new(0))?;
        for p in env.score.params_mut() {
            let t = file
                .tensor(&p.name, &p.shape)
                .map_err(|e| Error::from(e.in_origin(file.origin())))?;
            p.value.copy_from_slice(t.as_slice());
        }
        Ok(env)
    }

    /// The history window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Item ids, padding included.
    pub fn n_items(&self) -> usize {
        self.items.len() / self.encoder.dim()
    }

    /// Width `d_e` of an LE state.
    pub fn state_dim(&self) -> usize {
        self.encoder.dim()
    }

    /// The item token of `item`.
    pub fn item_token(&self, item: u32) -> &[f32] {
        let h = self.encoder.dim();
        &self.items[item as usize * h..(item as usize + 1) * h]
    }

    fn check_ids(&self, ids: &[u32], what: &str) -> Result<()> {
        match ids
            .iter()
            .find(|&&i| i == 0 || i as usize >= self.n_items())
        {
            Some(bad) => Err(Error::Invalid(format!(
                "{what}: item {bad} is not in 1..{}",
                self.n_items()
            ))),
            None => Ok(()),
        }
    }

    /// The prompts of `histories` (each its most recent `window` items), followed by the
    /// action part for `actions` when given.
    fn batch(&self, histories: &[&[u32]], actions: Option<&[u32]>) -> Result<TextBatch> {
        let p = &self.prompt;
        let mut seqs = Vec::with_capacity(histories.len());
        let mut soft_at = Vec::new();
        let mut soft_items = Vec::new();
        for (s, h) in histories.iter().enumerate() {
            if h.is_empty() {
                return Err(Error::Invalid(format!("history {s} is empty")));
            }
            self.check_ids(h, "a history")?;
            let h = &h[h.len().saturating_sub(self.window)..];
            let mut seq = vec![p.cls];
            seq.extend_from_slice(&p.user);
            for &item in h {
                soft_at.push((s, seq.len()));
                soft_items.push(item);
                seq.push(p.slot);
            }
            seq.push(p.sep);
            if let Some(a) = actions {
                seq.extend_from_slice(&p.ask);
                soft_at.push((s, seq.len()));
                soft_items.push(a[s]);
                seq.push(p.slot);
                seq.push(p.sep);
            }
            seqs.push(seq);
        }
        if let Some(a) = actions {
            self.check_ids(a, "an action")?;
        }
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let values: Vec<f32> = soft_items
            .iter()
            .flat_map(|&i| self.item_token(i).iter().copied())
            .collect();
        self.encoder.batch(&refs)?.with_soft(&soft_at, values)
    }

    /// LE states `s'^e` (`[histories.len(), H]`), in evaluation mode.
    pub fn states(&self, histories: &[&[u32]]) -> Result<Vec<f32>> {
        Ok(self.encoder.infer(&self.batch(histories, None)?))
    }

    /// Rewards `r^e(p, a)` of each history with its action, in evaluation mode.
    pub fn rewards(&self, histories: &[&[u32]], actions: &[u32]) -> Result<Vec<f32>> {
        if histories.len() != actions.len() {
            return Err(Error::Invalid(format!(
                "{} histories, {} actions",
                histories.len(),
                actions.len()
            )));
        }
        let v = self.encoder.infer(&self.batch(histories, Some(actions))?);
        Ok(self.score.infer(&v, histories.len()))
    }

    /// One step's loss `L_rm + L_sm` on `histories` with their logged actions `positives` and
    /// sampled `negatives`; adds its gradient into the trained parameters. `rng` drives
    /// dropout (`None`: evaluation mode).
    pub fn loss_backward(
        &mut self,
        histories: &[&[u32]],
        positives: &[u32],
        negatives: &[u32],
        mut rng: Option<&mut Rng>,
    ) -> Result<EnvLoss> {
        let b = histories.len();
        if b == 0 || positives.len() != b || negatives.len() != b {
            return Err(Error::Invalid(format!(
                "an LE step needs as many positives and negatives as histories: {b}, {}, {}",
                positives.len(),
                negatives.len()
            )));
        }
        let h = self.encoder.dim();
        let mut loss = EnvLoss::default();

        // Reward model: positives' prompts, then negatives', in one batch.
        let twice: Vec<&[u32]> = histories.iter().chain(histories).copied().collect();
        let actions: Vec<u32> = positives.iter().chain(negatives).copied().collect();
        let rb = self.batch(&twice, Some(&actions))?;
        let (v, cache) = self.encoder.forward(&rb, rng.as_deref_mut());
        let (r, score_cache) = self.score.forward(&v, 2 * b);
        let mut dr = vec![0.0f32; 2 * b];
        for t in 0..b {
            let delta = f64::from(r[t]) - f64::from(r[b + t]);
            loss.rm += softplus(-delta) / b as f64;
            let g = (-sigmoid(-delta) / b as f64) as f32;
            dr[t] = g;
            dr[b + t] = -g;
            loss.right += usize::from(delta > 0.0);
        }
        loss.pairs = b;
        let dv = self.score.backward(&score_cache, &dr);
        self.encoder.backward(&rb, &cache, &dv);

        if !self.state_loss {
            loss.total = loss.rm;
            return Ok(loss);
        }
        // State model: in-batch contrastive against the positives' item tokens.
        let sb = self.batch(histories, None)?;
        let (s, cache) = self.encoder.forward(&sb, rng);
        let a: Vec<&[f32]> = positives.iter().map(|&p| self.item_token(p)).collect();
        let dot = |x: &[f32], y: &[f32]| -> f64 {
            x.iter()
                .zip(y)
                .map(|(p, q)| f64::from(*p) * f64::from(*q))
                .sum()
        };
        let mut ds = vec![0.0f32; b * h];
        let scale = 1.0 / (b * b) as f64;
        for t in 0..b {
            let st = &s[t * h..(t + 1) * h];
            let z: Vec<f64> = a.iter().map(|aj| dot(st, aj)).collect();
            let mut coef = vec![0.0f64; b];
            for j in 0..b {
                let m = z[t] - z[j];
                loss.sm += softplus(-m) * scale;
                let g = -sigmoid(-m) * scale;
                coef[t] += g;
                coef[j] -= g;
            }
            let row = &mut ds[t * h..(t + 1) * h];
            for (j, aj) in a.iter().enumerate() {
                for (d, &x) in row.iter_mut().zip(*aj) {
                    *d += (coef[j] * f64::from(x)) as f32;
                }
            }
        }
        self.encoder.backward(&sb, &cache, &ds);
        loss.total = loss.rm + loss.sm;
        Ok(loss)
    }
}

impl Module for LanguageEnv {
    fn params(&self) -> Vec<&Param> {
        let mut v = self.encoder.bert.params();
        v.extend(self.score.params());
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.encoder.bert.params_mut();
        v.extend(self.score.params_mut());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{GradCheck, assert_param_grads, randomize};
    use crate::nn::text::{FineTune, Lora};
    use seqrec_engine::testing::write_random_bert;
    use seqrec_engine::text::BertConfig;

    const VOCAB: &[&str] = &[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "toy", "story", "war", "space", "love",
        "night", "day",
    ];

    /// The 5 items' token ids, with `[CLS]` = 2 and `[SEP]` = 3.
    fn texts() -> Vec<Vec<u32>> {
        vec![
            vec![],
            vec![2, 5, 6, 3],
            vec![2, 7, 3],
            vec![2, 8, 9, 3],
            vec![2, 10, 3],
            vec![2, 11, 5, 3],
        ]
    }

    /// An environment over a random 2-layer BERT with LoRA adapters (rank 2) on query and
    /// value, over 6 items.
    fn env(seed: u64) -> LanguageEnv {
        let dir = std::env::temp_dir().join(format!("seqrec-le-env-{seed}-{}", std::process::id()));
        let cfg = BertConfig {
            vocab_size: VOCAB.len(),
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 12,
            max_position_embeddings: 32,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        };
        write_random_bert(&dir, &cfg, VOCAB, 16, seed).unwrap();
        let lora = Lora::parse("lora:rank=2,alpha=4").unwrap();
        let enc = TextEncoder::load(&dir, FineTune::Lora(lora)).unwrap();
        let texts = texts();
        let prompt = Prompt {
            cls: 2,
            sep: 3,
            slot: 4,
            user: vec![9, 10],
            ask: vec![11, 1],
        };
        let mut rng = Rng::new(seed);
        let mut e = LanguageEnv::new(enc, &texts, prompt, 3, &mut rng).unwrap();
        // Non-zero adapters (B starts at zero) and score head.
        randomize(&mut e, &mut rng, 0.3);
        e
    }

    #[test]
    fn a_saved_environment_loads_to_the_same_rewards_and_states() {
        let e = env(3);
        let bytes = e.to_safetensors().unwrap();
        let path =
            std::env::temp_dir().join(format!("seqrec-env-{}.safetensors", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let file = WeightFile::open(&path).unwrap();
        let dir = e.encoder.base().unwrap().dir.clone();
        let texts = texts();
        let back = LanguageEnv::load(&dir, &file, &texts, e.prompt.clone()).unwrap();
        let hist: Vec<&[u32]> = vec![&[1, 2], &[3, 4, 5, 1]];
        assert_eq!(back.window(), 3);
        assert_eq!(
            back.rewards(&hist, &[3, 2]).unwrap(),
            e.rewards(&hist, &[3, 2]).unwrap()
        );
        assert_eq!(back.states(&hist).unwrap(), e.states(&hist).unwrap());
        // Another base folder is refused, naming the file.
        let other = env(4);
        let err = LanguageEnv::load(
            &other.encoder.base().unwrap().dir,
            &file,
            &texts,
            e.prompt.clone(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("fingerprint"), "{err}");
    }

    #[test]
    fn item_tokens_are_the_mean_word_embedding_of_the_text() {
        let e = env(1);
        let w = &e.encoder.bert.embeddings.word.weight.value;
        let tok = e.item_token(3);
        for c in 0..8 {
            let want = (w[8 * 8 + c] + w[9 * 8 + c]) / 2.0;
            assert!((tok[c] - want).abs() < 1e-6);
        }
    }

    #[test]
    fn loss_gradients_against_finite_differences() {
        // Through the BERT layers, pooling, the score head and the losses (smooth, f64 sums
        // of f32 values of unit scale): eps 2^-5, atol 2e-4, rtol 2e-3, as the encoder's own
        // checks.
        let cfg = GradCheck::new(0.03125, 2e-4, 2e-3);
        let base = env(2);
        let hist: Vec<&[u32]> = vec![&[1, 2], &[3, 4, 5, 1], &[2]];
        let (pos, neg) = ([3u32, 2, 5], [4u32, 1, 1]);
        let mut trained = base.clone();
        let l = trained.loss_backward(&hist, &pos, &neg, None).unwrap();
        assert!(l.rm > 0.0 && l.sm > 0.0 && l.pairs == 3, "{l:?}");
        assert!(!trained.params().is_empty());
        assert_param_grads(
            "language environment",
            &base,
            &trained,
            |m| {
                let mut m = m.clone();
                m.loss_backward(&hist, &pos, &neg, None).unwrap().total
            },
            &cfg,
        );
        // The rewards of evaluation mode are those the loss saw.
        let r = base.rewards(&hist, &pos).unwrap();
        let rn = base.rewards(&hist, &neg).unwrap();
        let rm: f64 = r
            .iter()
            .zip(&rn)
            .map(|(a, b)| softplus(f64::from(b - a)) / 3.0)
            .sum();
        assert!((rm - l.rm).abs() < 1e-5, "{rm} vs {}", l.rm);
        // States: one vector per history, of the encoder's width; only the window counts.
        let s = base.states(&hist).unwrap();
        assert_eq!(s.len(), 3 * 8);
        let longer = base.states(&[&[4, 3, 4, 5, 1]]).unwrap();
        for (a, b) in longer.iter().zip(&s[8..16]) {
            // Equal up to the summation order of another padded length.
            assert!((a - b).abs() < 1e-5, "{longer:?} vs {:?}", &s[8..16]);
        }
        assert!(base.rewards(&[&[1, 9]], &[2]).is_err());
    }
}
