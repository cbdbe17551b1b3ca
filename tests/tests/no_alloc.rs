//! After warm-up, scoring allocates nothing: a counting global allocator watches the calling
//! thread while it scores (full catalog and fused top-k) with a reused workspace, also when
//! the catalog scan is split across the threads of a rayon pool, and for every item dtype.

use seqrec_engine::Config;
use seqrec_engine::{Model, Query};
use seqrec_tests::{random_model_bytes, small_config, small_rl_config};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the thread-local counter is a `Cell` of
// plain integers with const initialisation, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    COUNT.with(Cell::get)
}

#[test]
fn scoring_does_not_allocate_after_warm_up() {
    let mut configs: Vec<(String, Config)> = ["sasrec", "gru4rec", "nextitnet", "caser"]
        .iter()
        .map(|a| (a.to_string(), small_config(a, 300, 10)))
        .collect();
    for (method, backbone, head) in [
        ("sqn", "gru4rec", "linear"),
        ("smorl", "sasrec", "linear"),
        ("smorl", "caser", "tied"),
    ] {
        let cfg = small_rl_config(method, backbone, head, 300, 10);
        configs.push((format!("{method} on {backbone} ({head})"), cfg));
    }
    for (arch, cfg) in &configs {
        let bytes = random_model_bytes(cfg, 3, 0.2);
        let m = Model::from_bytes(&bytes, &Default::default()).unwrap();
        let user = m.info().n_users.map(|_| 2);
        let histories: Vec<Vec<u32>> = vec![vec![5; 10], vec![1, 2, 3], (1..40).collect(), vec![7]];
        let mut ws = m.new_workspace();
        let mut scores = vec![0f32; 300];
        let (mut items, mut top) = (vec![0u32; 10], vec![0f32; 10]);
        let run = |ws: &mut _, scores: &mut Vec<f32>, items: &mut Vec<u32>, top: &mut Vec<f32>| {
            for h in &histories {
                let mut q = Query::new(h).exclude_history(true);
                if let Some(u) = user {
                    q = q.user(u);
                }
                m.score(&q, ws, scores).unwrap();
                m.topk_into(&q, 10, ws, items, top).unwrap();
            }
        };
        run(&mut ws, &mut scores, &mut items, &mut top);
        let before = allocations();
        for _ in 0..5 {
            run(&mut ws, &mut scores, &mut items, &mut top);
        }
        assert_eq!(
            allocations() - before,
            0,
            "{arch}: scoring allocated after warm-up"
        );
    }
}

/// Inside a pool of two threads a large catalog is scanned in shares on both threads; neither
/// the caller nor the split allocates after warm-up (the count covers the calling worker).
#[test]
fn split_scans_do_not_allocate_after_warm_up() {
    use seqrec_engine::{DType, LoadOptions};
    let n_items = 40_000;
    let bytes = random_model_bytes(&small_config("sasrec", n_items, 10), 4, 0.2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::I8] {
        let opts = LoadOptions {
            item_dtype: dtype,
            ..Default::default()
        };
        let m = Model::from_bytes(&bytes, &opts).unwrap();
        let histories: Vec<Vec<u32>> = vec![vec![5; 10], (1..9).collect(), vec![39_999]];
        let allocated = pool.install(|| {
            let mut ws = m.new_workspace();
            let (mut items, mut top) = (vec![0u32; 10], vec![0f32; 10]);
            let mut run = |ws: &mut _| {
                for h in &histories {
                    let q = Query::new(h).exclude_history(true);
                    m.topk_into(&q, 10, ws, &mut items, &mut top).unwrap();
                }
            };
            run(&mut ws);
            let before = allocations();
            for _ in 0..20 {
                run(&mut ws);
            }
            allocations() - before
        });
        assert_eq!(
            allocated, 0,
            "{dtype}: split scoring allocated after warm-up"
        );
    }
}

/// The multi-objective and hierarchical models too: their tokens are assembled on the
/// backend and their returns computed in reused memory, so a request allocates nothing after
/// warm-up.
#[test]
fn decision_transformers_do_not_allocate_after_warm_up() {
    for arch in ["modt4r", "mrdt", "hdt", "interdt", "hier"] {
        let bytes = random_model_bytes(&small_config(arch, 300, 10), 3, 0.2);
        let m = Model::from_bytes(&bytes, &Default::default()).unwrap();
        let histories: Vec<Vec<u32>> = vec![vec![5; 10], vec![1, 2, 3], (1..40).collect(), vec![7]];
        let mut knobs = m.default_objectives();
        if let Some(spec) = knobs.specs().first() {
            knobs.set(spec.name, spec.max.min(2.0)).unwrap();
        }
        let mut ws = m.new_workspace();
        let mut scores = vec![0f32; 300];
        let (mut items, mut top) = (vec![0u32; 10], vec![0f32; 10]);
        let mut run = |ws: &mut _| {
            for h in &histories {
                let q = Query::new(h).exclude_history(true).objectives(&knobs);
                m.score(&q, ws, &mut scores).unwrap();
                m.topk_into(&q, 10, ws, &mut items, &mut top).unwrap();
            }
        };
        run(&mut ws);
        let before = allocations();
        for _ in 0..5 {
            run(&mut ws);
        }
        assert_eq!(
            allocations() - before,
            0,
            "{arch}: scoring allocated after warm-up"
        );
    }
}

/// Online adaptation allocates its state at a session's first feedback and nothing afterwards:
/// neither the feedback calls (mini-batch draws, catalog scans, SGD step) nor the session's
/// scoring by the mixture policy allocate more than the same pushes and scoring of a session
/// without feedback (whose only allocations are the history's growth).
#[test]
fn feedback_does_not_allocate_after_the_first_call() {
    use seqrec_engine::FeedbackOptions;
    for backbone in ["gru4rec", "sasrec"] {
        let cfg = small_rl_config("sa2c", backbone, "linear", 300, 10);
        let m = Model::from_bytes(&random_model_bytes(&cfg, 5, 0.2), &Default::default()).unwrap();
        let opts = FeedbackOptions {
            buffer: 16,
            batch: 4,
            ..FeedbackOptions::default()
        };
        let mut scores = vec![0f32; 300];
        let (mut items, mut top) = (vec![0u32; 10], vec![0f32; 10]);
        // Past the window (10) the pushes re-encode; the ring buffer (16) wraps around.
        let mut count = |feedback: bool| {
            let mut state = m.new_session().unwrap();
            let mut ws = m.new_workspace();
            m.session_set_feedback_options(&mut state, &opts).unwrap();
            m.session_extend(&mut state, &[3, 4], &mut ws).unwrap();
            let mut step = |t: u32, state: &mut _, ws: &mut _| {
                let item = 1 + (t * 37) % 299;
                if feedback {
                    m.session_feedback(state, item, t as f32 % 3.0 - 1.0, ws)
                        .unwrap();
                } else {
                    m.session_push(state, item, ws).unwrap();
                }
                m.session_topk_into(state, 10, t.is_multiple_of(2), ws, &mut items, &mut top)
                    .unwrap();
                m.session_scores(state, &mut scores).unwrap();
            };
            step(0, &mut state, &mut ws);
            let before = allocations();
            for t in 1..40 {
                step(t, &mut state, &mut ws);
            }
            assert_eq!(state.feedback_steps(), if feedback { 40 } else { 0 });
            allocations() - before
        };
        let plain = count(false);
        assert_eq!(
            count(true),
            plain,
            "{backbone}: feedback allocated after its first call"
        );
    }
}
