//! `seqrec pdit attributes` and `seqrec pdit guide`: attribute-guided decoding of PDiT
//! samples (thesis §9.5–9.6 without a language model). The first fits one logistic classifier
//! per attribute value on the items' text latents (held-out accuracy and AUC printed); the
//! second samples the test (or validation) examples with classifier guidance at several
//! scales, decodes each sample to its nearest catalog item, and reports compliance (the share
//! of decoded items that really have the attribute, by the items' own labels) with HR@20 and
//! NDCG@20 of the same samples.

use super::{CliError, CliResult, Format, out};
use crate::eval::parse_metrics;
use crate::models::pdit::PditData;
use crate::models::pdit::attr::{Attributes, FitOptions, ItemLabels};
use crate::models::pdit::eval::{EngineRanker, GuideSpec, report, top_lists};
use clap::Args;
use seqrec_engine::pdit::Pdit;
use serde_json::json;
use std::path::{Path, PathBuf};

/// `seqrec pdit attributes`.
#[derive(Args, Debug)]
pub struct AttributesArgs {
    /// PDiT data file (`seqrec pdit data`): the items' text latents and ids.
    #[arg(long)]
    pdit_data: PathBuf,
    /// RecBole `.item` file with the labels (e.g. ../shared/data/ml-100k/ml-100k.item).
    #[arg(long)]
    items: PathBuf,
    /// Its column of space-separated attribute values (ml-100k: `class`, the genres).
    #[arg(long, default_value = "class")]
    field: String,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the 80/20 split of the labelled items.
    #[arg(long, default_value_t = crate::data::DEFAULT_SEED)]
    seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// `seqrec pdit guide`.
#[derive(Args, Debug)]
pub struct GuideArgs {
    /// PDiT checkpoint.
    model: PathBuf,
    /// The PDiT data file it was trained on.
    #[arg(long)]
    pdit_data: PathBuf,
    /// Attribute classifiers (`seqrec pdit attributes`).
    #[arg(long)]
    attributes: PathBuf,
    /// The attribute value to follow (e.g. Comedy), or `history`: per example, the value
    /// most frequent among its history's items.
    #[arg(long)]
    attribute: String,
    /// Steer away from the attribute instead of towards it.
    #[arg(long)]
    away: bool,
    /// Guidance scales, comma-separated (0: unguided).
    #[arg(long, default_value = "0,1,2,4,8")]
    scales: String,
    /// Sampling steps (respaced chain; default the model's T).
    #[arg(long)]
    steps: Option<usize>,
    /// Seed of the noise.
    #[arg(long, default_value_t = crate::data::DEFAULT_SEED)]
    seed: u64,
    /// Validation examples instead of test ones.
    #[arg(long)]
    valid: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

fn tokens(data: &PditData, path: &Path) -> Result<Vec<String>, CliError> {
    let text = data.meta.get("item_tokens").ok_or_else(|| {
        CliError::input(format!(
            "{}: no `item_tokens` metadata (remake it with this version of `seqrec pdit data`)",
            path.display()
        ))
    })?;
    serde_json::from_str(text)
        .map_err(|e| CliError::input(format!("{}: `item_tokens`: {e}", path.display())))
}

/// Runs `seqrec pdit attributes`.
pub fn attributes(a: AttributesArgs) -> CliResult {
    let data = PditData::load(&a.pdit_data).map_err(CliError::input)?;
    let labels = ItemLabels::read_recbole(&a.items, &a.field, &tokens(&data, &a.pdit_data)?)
        .map_err(CliError::input)?;
    let opts = FitOptions {
        seed: a.seed,
        ..Default::default()
    };
    let mut attrs =
        Attributes::fit(&data.item_latents, data.dim, &labels, &opts).map_err(CliError::input)?;
    attrs
        .meta
        .insert("items".into(), a.items.display().to_string());
    attrs.meta.insert("field".into(), a.field.clone());
    attrs
        .meta
        .insert("pdit_data".into(), a.pdit_data.display().to_string());
    let bytes = attrs.to_bytes().map_err(CliError::input)?;
    std::fs::write(&a.out, bytes)
        .map_err(|e| CliError::input(format!("{}: {e}", a.out.display())))?;
    match a.format {
        Format::Json => out(json!({ "out": a.out, "heldout": attrs.heldout })),
        Format::Text => {
            out(format!(
                "{:<14} {:>9} {:>9} {:>9} {:>7}",
                "attribute", "positives", "base rate", "accuracy", "AUC"
            ))?;
            for h in &attrs.heldout {
                out(format!(
                    "{:<14} {:>9} {:>9.3} {:>9.3} {:>7.3}",
                    h.name, h.positives, h.base_rate, h.accuracy, h.auc
                ))?;
            }
            out(format!("saved {}", a.out.display()))
        }
    }
}

/// Runs `seqrec pdit guide`.
pub fn guide(a: GuideArgs) -> CliResult {
    let model = Pdit::load(&a.model)?;
    let data = PditData::load(&a.pdit_data).map_err(CliError::input)?;
    let attrs = Attributes::load(&a.attributes).map_err(CliError::input)?;
    if attrs.dim != data.dim {
        return Err(CliError::input(format!(
            "{}: the classifiers read latents of {} values, the data file's have {}",
            a.attributes.display(),
            attrs.dim,
            data.dim
        )));
    }
    let meta = |k: &str| {
        attrs.meta.get(k).cloned().ok_or_else(|| {
            CliError::input(format!(
                "{}: no `{k}` metadata (remake it with `seqrec pdit attributes`)",
                a.attributes.display()
            ))
        })
    };
    let items = PathBuf::from(meta("items")?);
    let labels = ItemLabels::read_recbole(&items, &meta("field")?, &tokens(&data, &a.pdit_data)?)
        .map_err(CliError::input)?;
    let examples = if a.valid { &data.valid } else { &data.test };
    // The attribute each example follows: the one named, or with `history` the value most
    // frequent among the example's labelled history items (the latest on ties; none when no
    // history item is labelled: that example is sampled unguided).
    let personal = a.attribute == "history";
    let choice: Vec<Option<usize>> = if personal {
        examples
            .iter()
            .map(|e| {
                let mut count = vec![(0usize, 0usize); labels.names.len()];
                for (pos, &id) in e.history.iter().enumerate() {
                    for &v in labels
                        .labels
                        .get(id as usize)
                        .map_or(&[][..], Vec::as_slice)
                    {
                        count[v] = (count[v].0 + 1, pos + 1);
                    }
                }
                (0..count.len())
                    .filter(|&v| count[v].0 > 0)
                    .max_by_key(|&v| count[v])
            })
            .collect()
    } else {
        vec![Some(labels.index(&a.attribute).map_err(CliError::input)?); examples.len()]
    };
    // The classifier of each label index, by name.
    let classifier = |v: usize| attrs.index(&labels.names[v]).map_err(CliError::input);
    let scales: Vec<f32> = a
        .scales
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    CliError::input(format!("--scales: `{s}` is not a finite number at least 0"))
                })
        })
        .collect::<Result<_, _>>()?;
    let metrics = parse_metrics("hr@20,ndcg@20").map_err(CliError::input)?;
    let steps = a.steps.unwrap_or(model.config().timesteps);
    let has = |e: usize, id: u32| choice[e].is_some_and(|v| labels.has(id, v));
    let share = |n: usize| n as f64 / examples.len().max(1) as f64;
    let targets = share(
        (0..examples.len())
            .filter(|&e| has(e, examples[e].target))
            .count(),
    );
    let catalog: Vec<u32> = (1..data.n_items() as u32)
        .filter(|&i| labels.known[i as usize])
        .collect();
    let base = (0..examples.len())
        .map(|e| catalog.iter().filter(|&&i| has(e, i)).count() as f64)
        .sum::<f64>()
        / (catalog.len().max(1) * examples.len().max(1)) as f64;
    let mut groups: std::collections::BTreeMap<Option<usize>, Vec<usize>> = Default::default();
    for (e, c) in choice.iter().enumerate() {
        groups.entry(*c).or_default().push(e);
    }
    let mut rows = Vec::new();
    for &scale in &scales {
        let mut lists = vec![Vec::new(); examples.len()];
        for (c, members) in &groups {
            let mut ranker =
                EngineRanker::new(&model, &data, steps, false).map_err(CliError::input)?;
            if let Some(v) = c {
                let idx = classifier(*v)?;
                let spec = GuideSpec {
                    weight: attrs.weight[idx * attrs.dim..(idx + 1) * attrs.dim].to_vec(),
                    bias: attrs.bias[idx],
                    toward: !a.away,
                    scale,
                };
                ranker = ranker.guided(spec).map_err(CliError::input)?;
            }
            let subset: Vec<_> = members.iter().map(|&e| examples[e].clone()).collect();
            let got = top_lists(&ranker, &subset, 20, a.seed).map_err(CliError::input)?;
            for (&e, l) in members.iter().zip(got) {
                lists[e] = l;
            }
        }
        let rep = report(&metrics, examples, &lists, data.n_items());
        let top1 = share(
            (0..lists.len())
                .filter(|&e| lists[e].first().is_some_and(|&i| has(e, i)))
                .count(),
        );
        let top20 = (0..lists.len())
            .map(|e| {
                let l = &lists[e];
                l.iter().filter(|&&i| has(e, i)).count() as f64 / l.len().max(1) as f64
            })
            .sum::<f64>()
            / lists.len().max(1) as f64;
        rows.push(json!({
            "scale": scale,
            "compliance": top1,
            "compliance@20": top20,
            "hr@20": rep.get("hr@20"),
            "ndcg@20": rep.get("ndcg@20"),
        }));
    }
    let unguided = groups.get(&None).map_or(0, Vec::len);
    let head = json!({
        "model": a.model,
        "attribute": a.attribute,
        "toward": !a.away,
        "on": if a.valid { "valid" } else { "test" },
        "examples": examples.len(),
        "steps": steps,
        "seed": a.seed,
        "catalog_rate": base,
        "target_rate": targets,
        "unguided_examples": unguided,
    });
    match a.format {
        Format::Json => out(json!({ "run": head, "scales": rows })),
        Format::Text => {
            out(format!(
                "{} {} `{}` on {} {} examples ({} steps, seed {}, {unguided} without a labelled history item): {:.3} of the catalog and {:.3} of the targets have it",
                a.model.display(),
                if a.away { "away from" } else { "towards" },
                a.attribute,
                examples.len(),
                head["on"].as_str().unwrap_or(""),
                steps,
                a.seed,
                base,
                head["target_rate"].as_f64().unwrap_or(0.0)
            ))?;
            out(format!(
                "{:>6} {:>11} {:>14} {:>8} {:>8}",
                "scale", "compliance", "compliance@20", "HR@20", "NDCG@20"
            ))?;
            for r in &rows {
                out(format!(
                    "{:>6} {:>11.3} {:>14.3} {:>8.4} {:>8.4}",
                    r["scale"],
                    r["compliance"].as_f64().unwrap_or(0.0),
                    r["compliance@20"].as_f64().unwrap_or(0.0),
                    r["hr@20"].as_f64().unwrap_or(0.0),
                    r["ndcg@20"].as_f64().unwrap_or(0.0)
                ))?;
            }
            Ok(())
        }
    }
}
