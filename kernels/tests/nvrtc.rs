//! Every CUDA kernel source compiles with NVRTC: to PTX for sm_80 and sm_90, and to an sm_90
//! cubin (NVRTC assembles it itself, as the engine does at run time). Needs only the NVRTC
//! library, no GPU; where the library is missing the test prints why it did not run, unless
//! `SEQREC_REQUIRE_NVRTC` is set (CI sets it, so a missing library fails there).
#![cfg(feature = "cuda")]

use seqrec_kernels::cuda::{self, Target};

#[test]
fn every_cuda_source_compiles_with_nvrtc() {
    if !cuda::nvrtc_available() {
        assert!(
            std::env::var_os("SEQREC_REQUIRE_NVRTC").is_none(),
            "SEQREC_REQUIRE_NVRTC is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)"
        );
        println!(
            "skipped: libnvrtc not found (pip install nvidia-cuda-nvrtc, then put its lib folder on LD_LIBRARY_PATH)"
        );
        return;
    }
    let mut failures = Vec::new();
    let mut compiled = 0;
    for (family, _) in cuda::SOURCES {
        for target in [Target::Ptx(80), Target::Ptx(90), Target::Cubin(90)] {
            match cuda::compile(family, target) {
                Ok(image) => {
                    assert!(!image.is_empty(), "{family} {target:?}: empty image");
                    compiled += 1;
                }
                Err(e) => failures.push(format!("{target:?}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    println!(
        "compiled {compiled} images ({} sources × sm_80 PTX, sm_90 PTX, sm_90 cubin)",
        cuda::SOURCES.len()
    );
}

/// The kernels the engine launches are all there, under their documented names.
#[test]
fn the_sources_define_the_launched_symbols() {
    let all: String = cuda::SOURCES.iter().map(|(_, s)| *s).collect();
    for sym in [
        "activate_f32",
        "softmax_rows_f32",
        "mha_f32",
        "kv_append_f32",
        "mha_seqs_f32",
        "causal_conv1d_f32",
        "caser_vertical_f32",
        "caser_horizontal_f32",
        "f32_to_f16",
        "bf16_to_f32",
        "copy_rows_f32",
        "axpy_rows_f32",
        "gated_add_f32",
        "gather_f32_pos",
        "gru_layer_f32",
        "layer_norm_f32",
        "add_layer_norm_f32",
        "modulate_f32",
        "topk_scan_i8",
        "topk_merge",
    ] {
        assert!(all.contains(&format!(" {sym}(")), "no kernel {sym}");
    }
    for w in ["f32", "f16", "bf16", "i16"] {
        assert!(
            all.contains(&format!("LINEAR_ENTRY(linear_{w},")),
            "no linear_{w}"
        );
    }
    for t in ["f32", "f16", "bf16"] {
        assert!(
            all.contains(&format!("SCAN_ENTRY(topk_scan_{t},")),
            "no scan {t}"
        );
        assert!(all.contains(&format!("SCORE_ENTRY({t},")), "no scores {t}");
    }
    assert!(cuda::source("nope").is_none());
}
