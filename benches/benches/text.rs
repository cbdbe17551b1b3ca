//! Text item encoder (all-MiniLM-L6-v2, fetched by `scripts/fetch-minilm.sh` into `.minilm/`
//! or `$SEQREC_MINILM_DIR`) on ml-100k titles (`../shared/data/ml-100k/ml-100k.item`):
//! - latency of one title, tokenization included: `Toy Story` (4 tokens with `[CLS]` and
//!   `[SEP]`), `Mr. Holland's Opus` (8; the 256 titles average 6.1) and a long one (20);
//! - throughput of a batch of the first 256 titles;
//!
//! each on a rayon pool of 1 and of 2 threads, with the default i16 transformer weights
//! (`minilm/...`), with f16 ones (`minilm_f16/...`) and with f32 ones (`minilm_f32/...`). Prints a `skipped:` notice and
//! measures nothing when the model or the data is absent.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seqrec_engine::DType;
use seqrec_engine::text::{TextEncoder, TextOptions};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn encoder(weight_dtype: DType) -> Option<TextEncoder> {
    let dir = std::env::var_os("SEQREC_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".minilm"));
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "skipped: text benches: all-MiniLM-L6-v2 not found at {} (run scripts/fetch-minilm.sh)",
            dir.display()
        );
        return None;
    }
    let options = TextOptions { weight_dtype };
    Some(TextEncoder::load_with(&dir, &options).expect("all-MiniLM-L6-v2 loads"))
}

fn titles() -> Option<Vec<String>> {
    let shared = std::env::var_os("SEQREC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"));
    let path = shared.join("data/ml-100k/ml-100k.item");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipped: text benches: {} not found", path.display());
        return None;
    };
    Some(
        text.lines()
            .skip(1)
            .filter_map(|l| l.split('\t').nth(1).map(String::from))
            .collect(),
    )
}

fn text_encoder(c: &mut Criterion) {
    let dtypes = [
        (DType::I16, "minilm"),
        (DType::F16, "minilm_f16"),
        (DType::F32, "minilm_f32"),
    ];
    for (dtype, prefix) in dtypes {
        let (Some(enc), Some(titles)) = (encoder(dtype), titles()) else {
            return;
        };
        encoder_group(c, &enc, &titles, prefix);
    }
}

fn encoder_group(c: &mut Criterion, enc: &TextEncoder, titles: &[String], prefix: &str) {
    let batch: Vec<&str> = titles.iter().take(256).map(String::as_str).collect();
    let tokens: usize = batch.iter().map(|t| enc.tokenize(t).unwrap().len()).sum();
    let singles = [
        "Toy Story",
        "Mr. Holland's Opus",
        "Double vie de Véronique, La (Double Life of Veronique, The)",
    ];
    eprintln!("text benches: 256 titles = {tokens} tokens");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut g = c.benchmark_group(format!("{prefix}/threads{threads}"));
        g.sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Elements(1));
        for title in singles {
            let name = format!("one_title_{}tok", enc.tokenize(title).unwrap().len());
            g.bench_function(name, |b| {
                pool.install(|| b.iter(|| black_box(enc.encode(black_box(title)).unwrap())))
            });
        }
        g.throughput(Throughput::Elements(batch.len() as u64));
        g.bench_function("titles256", |b| {
            let mut out = vec![0.0f32; batch.len() * enc.dim()];
            pool.install(|| {
                b.iter(|| {
                    enc.encode_batch_into(&batch, &mut out).unwrap();
                    black_box(&out);
                })
            })
        });
        g.finish();
    }
}

criterion_group!(benches, text_encoder);
criterion_main!(benches);
