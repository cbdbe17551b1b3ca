//! The MiniLM sentence encoder on seqrec and on candle, back to back in one process, on the
//! same titles and the same threads: one title at a time (latency, tokenization included) and a
//! batch of titles (throughput). Both produce the sentence-transformers embedding (mean pooling
//! over the attention mask, L2 normalisation); the program first checks that they agree.
//!
//!   cargo run --release --manifest-path scripts/candle-bert/Cargo.toml -- \
//!       [--model-dir .minilm] [--items ../shared/data/ml-100k/ml-100k.item] [--threads 2]
//!       [--rounds 3] [--batch 256]
//!
//! Prints a markdown table; every figure is the median of `--rounds` rounds, each round timing
//! seqrec and candle in turn (the order reversed every other round).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use seqrec_engine::text::{TextEncoder, TextOptions};
use std::path::PathBuf;
use std::time::Instant;
use tokenizers::Tokenizer;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    model_dir: PathBuf,
    items: PathBuf,
    threads: usize,
    rounds: usize,
    batch: usize,
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        model_dir: PathBuf::from(".minilm"),
        items: PathBuf::from("../shared/data/ml-100k/ml-100k.item"),
        threads: 2,
        rounds: 3,
        batch: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model-dir" => a.model_dir = value.into(),
            "--items" => a.items = value.into(),
            "--threads" => a.threads = value.parse()?,
            "--rounds" => a.rounds = value.parse()?,
            "--batch" => a.batch = value.parse()?,
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    Ok(a)
}

/// candle's BERT with the sentence-transformers pooling, tokenized by `tokenizers`.
struct Candle {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Candle {
    fn load(dir: &std::path::Path) -> Result<Candle, Error> {
        let device = Device::Cpu;
        let config: Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
        // SAFETY: the weight file is not modified while the model lives (a benchmark's input).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )?
        };
        let model = BertModel::load(vb, &config)?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        tokenizer.with_padding(Some(tokenizers::PaddingParams::default()));
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: 256,
                ..Default::default()
            }))
            .map_err(|e| format!("truncation: {e}"))?;
        Ok(Candle {
            model,
            tokenizer,
            device,
        })
    }

    /// The normalised mean-pooled embeddings of `texts`, `[texts.len(), dim]` row-major.
    fn encode(&self, texts: &[&str]) -> Result<Vec<f32>, Error> {
        let enc = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<Vec<u32>> = enc
            .iter()
            .map(|e| e.get_attention_mask().to_vec())
            .collect();
        let ids = Tensor::new(ids, &self.device)?;
        let mask = Tensor::new(mask, &self.device)?;
        let types = ids.zeros_like()?;
        let h = self.model.forward(&ids, &types, Some(&mask))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let pooled = (h.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?))?;
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
        Ok(pooled
            .broadcast_div(&norm)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per call of `f` (its result dropped): the median of `n` calls after one warm-up
/// call.
fn per_call<T>(n: usize, mut f: impl FnMut() -> Result<T, Error>) -> Result<f64, Error> {
    f()?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

fn main() -> Result<(), Error> {
    let a = args()?;
    let titles: Vec<String> = std::fs::read_to_string(&a.items)
        .map_err(|e| format!("{}: {e}", a.items.display()))?
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(1).map(String::from))
        .collect();
    if titles.len() < a.batch {
        return Err(format!(
            "{}: {} titles, fewer than --batch {}",
            a.items.display(),
            titles.len(),
            a.batch
        )
        .into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()?;
    let seqrec_f32 = TextEncoder::load_with(
        &a.model_dir,
        &TextOptions {
            weight_dtype: seqrec_engine::DType::F32,
        },
    )?;
    let seqrec_i16 = TextEncoder::load(&a.model_dir)?;
    let candle = Candle::load(&a.model_dir)?;
    let batch: Vec<&str> = titles[..a.batch].iter().map(String::as_str).collect();

    // Agreement on the batch (f32 weights on both sides): the largest component difference.
    let (ours, theirs) = pool.install(|| -> Result<_, Error> {
        Ok((seqrec_f32.encode_batch(&batch)?, candle.encode(&batch)?))
    })?;
    let diff = ours
        .iter()
        .zip(&theirs)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    println!(
        "agreement: {} titles, largest component difference seqrec f32 vs candle {diff:.2e}",
        batch.len()
    );
    if diff > 1e-4 {
        return Err(format!("seqrec and candle disagree by {diff:e} (more than 1e-4)").into());
    }

    let one = ["Toy Story", "Mr. Holland's Opus"];
    let reps = |s: f64| ((0.5 / s.max(1e-6)) as usize).clamp(5, 2000);
    // Per workload: its name and the times of seqrec i16, seqrec f32 and candle per round.
    type Times = (String, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut rows: Vec<Times> = Vec::new();
    let workloads: Vec<(String, Vec<&str>)> = one
        .iter()
        .map(|t| (format!("1 title, \"{t}\""), vec![*t]))
        .chain([(format!("{} titles", batch.len()), batch.clone())])
        .collect();
    for (name, texts) in &workloads {
        let (mut s16, mut s32, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..a.rounds {
            pool.install(|| -> Result<(), Error> {
                let probe = per_call(1, || candle.encode(texts))?;
                let n = reps(probe);
                let mut run_seqrec = || -> Result<(), Error> {
                    s16.push(per_call(n, || Ok(seqrec_i16.encode_batch(texts)?))?);
                    s32.push(per_call(n, || Ok(seqrec_f32.encode_batch(texts)?))?);
                    Ok(())
                };
                if round % 2 == 0 {
                    run_seqrec()?;
                    c.push(per_call(n, || candle.encode(texts))?);
                } else {
                    c.push(per_call(n, || candle.encode(texts))?);
                    run_seqrec()?;
                }
                Ok(())
            })?;
        }
        rows.push((name.clone(), s16, s32, c));
    }
    println!(
        "\n{} threads, medians of {} rounds (each the median of its calls), tokenization included\n",
        a.threads, a.rounds
    );
    println!(
        "| workload | seqrec i16 weights | seqrec f32 weights | candle (f32) | candle / seqrec i16 | candle / seqrec f32 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, s16, s32, c) in rows {
        let (s16, s32, c) = (median(s16), median(s32), median(c));
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x | {:.2}x |",
            s16 * 1e3,
            s32 * 1e3,
            c * 1e3,
            c / s16,
            c / s32
        );
    }
    Ok(())
}
