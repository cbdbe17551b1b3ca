//! The defaults of `seqrec train` that depend on the model, in one place: the constants that
//! training reads when a flag is absent, and the table that `seqrec train --help` prints after
//! the flags ([`table`]), built from those constants and from the models' own configuration
//! constructors, so that the help and the training cannot disagree.
//!
//! How they were chosen: RecBole's defaults for the sequence models (sizes, dropout, loss), the
//! thesis's settings for the RL methods and the Decision Transformers, and validation on
//! ml-100k where RecBole's batch size (2048, one GPU) does not carry over to these
//! CPU-sized steps: SASRec's batch of 64 gave the best mean validation NDCG@10 of batch 64 and
//! 256 × dropout 0.2 and 0.5 over three seeds (`docs/results.md`, "Defaults").

use crate::models::dt::{DtConfig, TokenOrder};
use crate::models::hdt::{BackboneKind, HdtConfig, Variant};
use crate::models::pdit::dreamrec::DreamRecConfig;
use crate::models::transrec::TransRecConfig;
use crate::models::{CaserConfig, Gru4RecConfig, NextItNetConfig, SasRecConfig};
use std::fmt::Write;

/// Training windows per step of the sequence models other than SASRec, the RL methods (their
/// transitions: the thesis's 256) and the Decision Transformers.
pub(crate) const BATCH: usize = 256;
/// SASRec's training windows per step (chosen on validation, see the module docs).
pub(crate) const SASREC_BATCH: usize = 64;
/// Adam's learning rate of every model but the generators.
pub(crate) const LR: f32 = 1e-3;
/// Window length (RecBole's `MAX_ITEM_LIST_LENGTH`) of the sequence models and RL methods.
pub(crate) const WINDOW: usize = 50;
/// Window length of the Decision Transformers (the thesis's 10 steps).
pub(crate) const DT_WINDOW: usize = 10;
/// TransRec's and IDRec's training windows per step.
pub(crate) const TRANSREC_BATCH: usize = 64;
/// The generators' (pdit, dreamrec) examples per step, learning rate and AdamW weight decay.
pub(crate) const GEN_BATCH: usize = 100;
/// See [`GEN_BATCH`].
pub(crate) const GEN_LR: f32 = 1e-4;
/// See [`GEN_BATCH`].
pub(crate) const GEN_WEIGHT_DECAY: f32 = 0.01;
/// PDiT's hidden size and attention heads.
pub(crate) const PDIT_HIDDEN: usize = 128;
/// See [`PDIT_HIDDEN`].
pub(crate) const PDIT_HEADS: usize = 4;

/// The batch size of `model` (a sequence model, an RL method or a Decision Transformer) when
/// `--batch-size` is absent.
pub(crate) fn batch_size(model: &str) -> usize {
    if model == "sasrec" {
        SASREC_BATCH
    } else {
        BATCH
    }
}

/// The window length of `model` when `--max-len` is absent.
pub(crate) fn window(model: &str) -> usize {
    if matches!(model, "modt4r" | "mrdt") {
        DT_WINDOW
    } else {
        WINDOW
    }
}

/// One model's row of the table.
struct Row {
    models: &'static str,
    batch: String,
    lr: f32,
    weight_decay: f32,
    window: String,
    width: String,
    layers: String,
    heads: String,
    dropout: String,
}

/// The sequence models' rows, from their configuration constructors.
fn sequence_rows() -> Vec<Row> {
    let row = |models, width: String, layers: String, heads: String, dropout: String| Row {
        models,
        batch: batch_size(models).to_string(),
        lr: LR,
        weight_decay: 0.0,
        window: WINDOW.to_string(),
        width,
        layers,
        heads,
        dropout,
    };
    let sas = SasRecConfig::new(1, WINDOW);
    let gru = Gru4RecConfig::new(1, WINDOW);
    let nin = NextItNetConfig::new(1, WINDOW);
    let caser = CaserConfig::new(1, 1, WINDOW);
    let dilations = nin
        .dilations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    vec![
        row(
            "sasrec",
            format!("{} (FFN {})", sas.hidden, sas.inner),
            sas.n_layers.to_string(),
            sas.n_heads.to_string(),
            format!("{} (attention {})", sas.hidden_dropout, sas.attn_dropout),
        ),
        row(
            "gru4rec",
            format!("{} (GRU {})", gru.emb, gru.hidden),
            gru.n_layers.to_string(),
            "-".into(),
            gru.dropout.to_string(),
        ),
        row(
            "nextitnet",
            nin.emb.to_string(),
            format!("{} blocks of dilations {dilations}", nin.block_num),
            "-".into(),
            "-".into(),
        ),
        row(
            "caser",
            format!(
                "{} ({} vertical, {} horizontal filters)",
                caser.emb, caser.nv, caser.nh
            ),
            "-".into(),
            "-".into(),
            caser.dropout.to_string(),
        ),
    ]
}

/// The rows of the models that are not plain sequence models.
fn other_rows() -> Vec<Row> {
    let sas = SasRecConfig::new(1, WINDOW);
    let dt = DtConfig::new(TokenOrder::StateFirst, 1, DT_WINDOW);
    let hdt = HdtConfig::new(Variant::Hdt, BackboneKind::Gru4Rec, 1);
    let tr = TransRecConfig::new(1);
    let dream = DreamRecConfig::new(1, 1);
    vec![
        Row {
            models: "sqn, snqn, sa2c, smorl",
            batch: BATCH.to_string(),
            lr: LR,
            weight_decay: 0.0,
            window: WINDOW.to_string(),
            width: format!("{} (the default --backbone, sasrec)", sas.hidden),
            layers: sas.n_layers.to_string(),
            heads: sas.n_heads.to_string(),
            dropout: sas.hidden_dropout.to_string(),
        },
        Row {
            models: "modt4r, mrdt",
            batch: BATCH.to_string(),
            lr: LR,
            weight_decay: 0.0,
            window: DT_WINDOW.to_string(),
            width: format!("{} (FFN {})", dt.user.hidden, dt.inner),
            layers: format!("{} (UserTrans {})", dt.layers, dt.user.n_layers),
            heads: dt.heads.to_string(),
            dropout: dt.dropout.to_string(),
        },
        Row {
            models: "hdt, interdt, hier",
            batch: "--slots users".into(),
            lr: LR,
            weight_decay: 0.0,
            window: format!("{} per session", hdt.max_len),
            width: hdt.dim.to_string(),
            layers: format!("IntraDT {} (--intra-layers)", hdt.intra_layers),
            heads: hdt.intra_heads.to_string(),
            dropout: hdt.dropout.to_string(),
        },
        Row {
            models: "transrec, idrec",
            batch: TRANSREC_BATCH.to_string(),
            lr: LR,
            weight_decay: 0.0,
            window: tr.max_len.to_string(),
            width: tr.dim.to_string(),
            layers: tr.n_layers.to_string(),
            heads: tr.n_heads.to_string(),
            dropout: tr.dropout.to_string(),
        },
        Row {
            models: "pdit",
            batch: GEN_BATCH.to_string(),
            lr: GEN_LR,
            weight_decay: GEN_WEIGHT_DECAY,
            window: "the data's history".into(),
            width: PDIT_HIDDEN.to_string(),
            layers: "--depth-gen, --depth-tem".into(),
            heads: PDIT_HEADS.to_string(),
            dropout: "-".into(),
        },
        Row {
            models: "dreamrec",
            batch: GEN_BATCH.to_string(),
            lr: GEN_LR,
            weight_decay: GEN_WEIGHT_DECAY,
            window: "the data's history".into(),
            width: dream.hidden.to_string(),
            layers: dream.layers.to_string(),
            heads: dream.heads.to_string(),
            dropout: dream.dropout.to_string(),
        },
    ]
}

/// The defaults by model, as `seqrec train --help` prints them after the flags.
pub(crate) fn table() -> String {
    let header = [
        "model",
        "--batch-size",
        "--lr",
        "--weight-decay",
        "--max-len",
        "--hidden-size",
        "--n-layers",
        "--n-heads",
        "--dropout",
    ];
    let rows: Vec<[String; 9]> = sequence_rows()
        .into_iter()
        .chain(other_rows())
        .map(|r| {
            [
                r.models.to_string(),
                r.batch,
                r.lr.to_string(),
                r.weight_decay.to_string(),
                r.window,
                r.width,
                r.layers,
                r.heads,
                r.dropout,
            ]
        })
        .collect();
    // Printed as one block per model (flag: value), which stays readable in any terminal width.
    let mut s = String::from(
        "Defaults by model (each flag given overrides its value; the loss is --loss ce, the \
         optimiser Adam (AdamW with a weight decay), patience 10 on validation NDCG@10, NDCG@20 \
         for pdit and dreamrec):\n",
    );
    for r in &rows {
        let _ = writeln!(s, "\n  {}", r[0]);
        for (flag, value) in header.iter().zip(r).skip(1) {
            let _ = writeln!(s, "    {flag:<15} {value}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_table_lists_every_trainable_model_with_the_values_training_reads() {
        let t = table();
        for model in [
            "sasrec",
            "gru4rec",
            "nextitnet",
            "caser",
            "sqn",
            "smorl",
            "modt4r",
            "mrdt",
            "hdt",
            "hier",
            "transrec",
            "idrec",
            "pdit",
            "dreamrec",
        ] {
            assert!(t.contains(model), "{model} missing from\n{t}");
        }
        // SASRec's block carries its own batch size and its configuration's dropout.
        let sas = t
            .split("\n\n  ")
            .find(|b| b.starts_with("sasrec\n"))
            .unwrap();
        assert!(
            sas.contains(&format!("--batch-size    {SASREC_BATCH}\n")),
            "{sas}"
        );
        let cfg = SasRecConfig::new(1, WINDOW);
        assert!(
            sas.contains(&format!("--dropout       {} ", cfg.hidden_dropout)),
            "{sas}"
        );
        assert_eq!(batch_size("sasrec"), SASREC_BATCH);
        assert_eq!(
            (batch_size("gru4rec"), window("modt4r")),
            (BATCH, DT_WINDOW)
        );
    }
}
