//! The C ABI adds no allocation to the engine's: after warm-up, each scoring call through it
//! allocates exactly as often on the calling thread as the same call through the Rust API with
//! a reused workspace (the model handle lends each call a pooled workspace and the last-error
//! buffer is reused). Counted with a global allocator that tallies the current thread's
//! allocations.

mod common;

use common::*;
use seqrec::*;
use seqrec_engine::{Model, Query};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the thread-local counter is a const-initialised
// `Cell`, which needs no allocation, and is skipped once the thread-local is destroyed.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn count(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn the_c_abi_allocates_no_more_than_the_rust_api() {
    for arch in ["sasrec", "gru4rec", "nextitnet", "caser"] {
        let bytes = model_bytes(arch, 300, 8, 5);
        let m = ModelHandle::from_bytes(&bytes).unwrap();
        let rust = Model::from_bytes(&bytes, &Default::default()).unwrap();
        let user = (arch == "caser").then_some(1u32);
        let n = m.num_items();
        let histories: Vec<Vec<u32>> = (1..30u32)
            .map(|i| {
                (0..1 + i % 12)
                    .map(|j| 1 + (i * 31 + j * 7) % 299)
                    .collect()
            })
            .collect();
        let (mut items, mut scores, mut all) = (vec![0u32; 10], vec![0f32; 10], vec![0f32; n]);
        let ffi_round = |items: &mut [u32], scores: &mut [f32], all: &mut [f32]| {
            for h in &histories {
                // SAFETY: live handle, buffers of the stated lengths.
                unsafe {
                    let st = match user {
                        Some(u) => seqrec_model_topk_user(
                            m.0,
                            u,
                            h.as_ptr(),
                            h.len(),
                            10,
                            1,
                            items.as_mut_ptr(),
                            scores.as_mut_ptr(),
                        ),
                        None => seqrec_model_topk(
                            m.0,
                            h.as_ptr(),
                            h.len(),
                            10,
                            1,
                            items.as_mut_ptr(),
                            scores.as_mut_ptr(),
                        ),
                    };
                    assert_eq!(st, SEQREC_OK);
                    let st = match user {
                        Some(u) => seqrec_model_score_user(
                            m.0,
                            u,
                            h.as_ptr(),
                            h.len(),
                            all.as_mut_ptr(),
                            n,
                        ),
                        None => seqrec_model_score(m.0, h.as_ptr(), h.len(), all.as_mut_ptr(), n),
                    };
                    assert_eq!(st, SEQREC_OK);
                }
            }
        };
        let mut ws = rust.new_workspace();
        let mut rust_round = |items: &mut [u32], scores: &mut [f32], all: &mut [f32]| {
            for h in &histories {
                let q = Query::new(h).exclude_history(true);
                let q = match user {
                    Some(u) => q.user(u),
                    None => q,
                };
                rust.topk_into(&q, 10, &mut ws, items, scores).unwrap();
                rust.score(&q, &mut ws, all).unwrap();
            }
        };
        // Warm-up: workspaces and buffers grow to their largest size.
        ffi_round(&mut items, &mut scores, &mut all);
        rust_round(&mut items, &mut scores, &mut all);
        let ffi = count(|| ffi_round(&mut items, &mut scores, &mut all));
        let api = count(|| rust_round(&mut items, &mut scores, &mut all));
        assert_eq!(ffi, api, "{arch}: C ABI {ffi} allocations, Rust API {api}");
        let requests = ffi;

        // Sessions: one push + top-k per event, past the window.
        let s = SessionHandle::new(&m, user).unwrap();
        let mut rs = match user {
            Some(u) => rust.session_for_user(u).unwrap(),
            None => rust.session().unwrap(),
        };
        let events: Vec<u32> = (0..40).map(|i| 1 + (i * 13) % 299).collect();
        let mut ffi_events = |events: &[u32]| {
            for &e in events {
                // SAFETY: live session, `10`-long buffers.
                unsafe {
                    assert_eq!(seqrec_session_push(s.0, e), SEQREC_OK);
                    let st =
                        seqrec_session_topk(s.0, 10, 0, items.as_mut_ptr(), scores.as_mut_ptr());
                    assert_eq!(st, SEQREC_OK);
                }
            }
        };
        ffi_events(&events);
        let ffi = count(|| ffi_events(&events));
        // The Rust `Session::topk` returns a fresh Vec per call: count only its push.
        for &e in &events {
            rs.push(e).unwrap();
        }
        let api = count(|| {
            for &e in &events {
                rs.push(e).unwrap();
            }
        });
        assert!(
            ffi <= api,
            "{arch} sessions: C ABI {ffi} allocations, Rust pushes alone {api}"
        );
        eprintln!(
            "{arch}: {requests} allocations for {} top-k + score requests (as the Rust API), \
             {ffi} for {} session push + top-k",
            histories.len(),
            events.len()
        );
    }
}

/// PDiT generation and catalog ranking through the C ABI allocate nothing after warm-up (a
/// pooled scratch holds the workspace, the chain of the last step count and the scaled inputs).
/// A request that sets objective knobs through `seqrec_request_options` allocates no more
/// than the Rust API with a knob set made once and reused.
#[test]
fn requests_with_knobs_allocate_no_more_than_the_rust_api() {
    let bytes = model_bytes("modt4r", 300, 8, 5);
    let m = ModelHandle::from_bytes(&bytes).unwrap();
    let rust = Model::from_bytes(&bytes, &Default::default()).unwrap();
    let knobs = [
        seqrec_objective {
            name: c"alpha".as_ptr(),
            value: 2.0,
        },
        seqrec_objective {
            name: c"lambda_div".as_ptr(),
            value: 1.5,
        },
    ];
    let opts = seqrec_request_options {
        has_user: 0,
        user: 0,
        exclude_history: 1,
        exclude: std::ptr::null(),
        exclude_len: 0,
        objectives: knobs.as_ptr(),
        num_objectives: knobs.len(),
    };
    let mut objectives = rust.default_objectives();
    objectives.set("alpha", 2.0).unwrap();
    objectives.set("lambda_div", 1.5).unwrap();
    let histories: Vec<Vec<u32>> = (1..30u32)
        .map(|i| {
            (0..1 + i % 12)
                .map(|j| 1 + (i * 31 + j * 7) % 299)
                .collect()
        })
        .collect();
    let (mut items, mut scores) = (vec![0u32; 10], vec![0f32; 10]);
    let mut ffi_round = || {
        for h in &histories {
            // SAFETY: live handle, valid options, buffers of 10.
            let st = unsafe {
                seqrec_model_topk_with(
                    m.0,
                    h.as_ptr(),
                    h.len(),
                    &opts,
                    10,
                    items.as_mut_ptr(),
                    scores.as_mut_ptr(),
                )
            };
            assert_eq!(st, SEQREC_OK);
        }
    };
    ffi_round();
    let ffi = count(&mut ffi_round);
    let mut ws = rust.new_workspace();
    let (mut ri, mut rs) = (vec![0u32; 10], vec![0f32; 10]);
    let mut rust_round = || {
        for h in &histories {
            let q = Query::new(h).exclude_history(true).objectives(&objectives);
            rust.topk_into(&q, 10, &mut ws, &mut ri, &mut rs).unwrap();
        }
    };
    rust_round();
    let api = count(&mut rust_round);
    assert_eq!(ffi, api, "C ABI {ffi} allocations, Rust API {api}");
}

#[test]
fn pdit_generation_allocates_nothing_after_warm_up() {
    let cfg = seqrec_engine::Config::from_json(
        r#"{"model":"pdit","variant":"full","latent_dim":8,"cond_dim":6,"hidden_size":12,
            "num_tokens":4,"num_heads":3,"depth_gen":1,"depth_tem":1,"mlp_ratio":2.0,
            "max_hist_len":4,"num_timesteps":30,"beta_start":0.0001,"beta_end":0.02,
            "learn_sigma":true,"latent_scale":2.0,"tem_self_attn":true}"#,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("seqrec-pdit-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("pdit.safetensors");
    let catalog = dir.join("catalog.safetensors");
    std::fs::write(
        &model,
        seqrec_engine::testing::random_pdit_bytes(&cfg, 2, 0.3).unwrap(),
    )
    .unwrap();
    let rows: Vec<f32> = (0..50 * 8)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
        .collect();
    let table = seqrec_engine::weights::serialize(&[("item_latents", &[50, 8], &rows)], &[]);
    std::fs::write(&catalog, table.unwrap()).unwrap();
    let path = std::ffi::CString::new(model.to_str().unwrap()).unwrap();
    let cat = std::ffi::CString::new(catalog.to_str().unwrap()).unwrap();
    let mut h = std::ptr::null_mut();
    // SAFETY: NUL-terminated paths, a writable out-pointer.
    let st = unsafe { seqrec_pdit_load(path.as_ptr(), cat.as_ptr(), &mut h) };
    assert_eq!(st, SEQREC_OK);
    let prompt: Vec<f32> = (0..6).map(|i| i as f32 * 0.1).collect();
    let history: Vec<f32> = (0..3 * 8).map(|i| (i % 5) as f32 * 0.1).collect();
    let exclude = [3u32, 9];
    let (mut latent, mut items, mut scores, mut n) = (vec![0f32; 8], [0u32; 10], [0f32; 10], 0);
    let mut round = |steps: u32| {
        for seed in 0..4 {
            // SAFETY: live handle, buffers of the stated lengths.
            unsafe {
                let st = seqrec_pdit_generate(
                    h,
                    prompt.as_ptr(),
                    6,
                    history.as_ptr(),
                    3,
                    steps,
                    seed,
                    latent.as_mut_ptr(),
                    8,
                );
                assert_eq!(st, SEQREC_OK);
                let st = seqrec_pdit_topk(
                    h,
                    prompt.as_ptr(),
                    6,
                    history.as_ptr(),
                    3,
                    steps,
                    seed,
                    exclude.as_ptr(),
                    2,
                    10,
                    items.as_mut_ptr(),
                    scores.as_mut_ptr(),
                    &mut n,
                );
                assert_eq!(st, SEQREC_OK);
            }
        }
    };
    for steps in [0, 10] {
        round(steps);
        let allocations = count(|| round(steps));
        assert_eq!(allocations, 0, "{steps} steps: {allocations} allocations");
    }
    assert_eq!(n, 10);
    assert!(!items.contains(&3) && !items.contains(&9) && !items.contains(&0));
    // SAFETY: the handle from `seqrec_pdit_load`, freed once.
    unsafe { seqrec_pdit_free(h) };
    std::fs::remove_dir_all(&dir).ok();
}
