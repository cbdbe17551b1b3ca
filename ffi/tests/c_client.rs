//! Builds the C++17 client `tests/cpp/client.cpp` and the README's C example
//! `tests/cpp/minimal.c` with the system compiler against the freshly built `libseqrec` (the
//! cdylib and the staticlib cargo put next to this test binary), then runs them: results equal
//! the Rust API's, eight threads share one model, every error path has its status, and mutated
//! files load or fail cleanly.
//!
//! A SMORL and a MODT4R model go through `client knobs`: objective knobs set through
//! `seqrec_session_set_objective` change the ranking exactly as the Rust sessions say, bad knob
//! names and values are refused without touching the session, and `seqrec_session_end` marks a
//! boundary.
//!
//! A PDiT (variants full and tem) goes through `client pdit`: its sizes, generated latents and
//! catalog top-k equal the Rust API's, four threads share one handle, and every refused call
//! names its problem and leaves the outputs as they were.
//!
//! An SA2C model with a linear head goes through `client feedback`: its feedback options are
//! read and set, and the top-k after each `seqrec_session_feedback` equals the Rust session's;
//! a session saved and restored halfway continues identically; refusals leave the session as
//! it was, and a plain SASRec answers `SEQREC_ERR_UNSUPPORTED`.
//!
//! `SEQREC_SANITIZE=1` builds the client with `-fsanitize=address,undefined` instead (leaks
//! included, through LeakSanitizer); `.ci/run` runs that. Skips with a notice when no C++
//! compiler is found (`CXX`, else `c++`, `g++`, `clang++`).

mod common;

#[path = "common/mutate.rs"]
mod mutate;

use seqrec_engine::pdit::{Catalog, NoiseSource, Pdit, PditWorkspace};
use seqrec_engine::{Model, Query};
use seqrec_kernels::testing::Rng;
use seqrec_tests::TempDir;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first compiler among `$var` and `candidates` that answers `--version`.
fn compiler(var: &str, candidates: &[&str]) -> Option<String> {
    let from_env = std::env::var(var).ok().filter(|s| !s.is_empty());
    from_env
        .into_iter()
        .chain(candidates.iter().map(|s| s.to_string()))
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// The folder holding `libseqrec.{so,dylib}` and `libseqrec.a` for this build: cargo writes
/// the library's artifacts into `target/<profile>/deps`, beside this test binary.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps folder").to_path_buf();
    for dir in [deps.clone(), deps.join("..")] {
        if dir.join("libseqrec.a").is_file() {
            return dir;
        }
    }
    panic!(
        "libseqrec.a not found in {} or its parent: build seqrec-ffi first",
        deps.display()
    );
}

fn sanitize() -> bool {
    std::env::var("SEQREC_SANITIZE").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// Compiles the client once and links it against the shared library and the static library,
/// or (sanitizers) only against the static library, with ASan + UBSan. Returns (label,
/// executable) pairs.
fn build_clients(cxx: &str, libs: &Path, out: &Path) -> Vec<(String, PathBuf)> {
    let san = [
        "-fsanitize=address,undefined",
        "-fno-omit-frame-pointer",
        "-fno-sanitize-recover=undefined",
    ];
    let flags: &[&str] = if sanitize() { &san } else { &[] };
    let object = out.join("client.o");
    run(
        Command::new(cxx)
            .args([
                "-std=c++17",
                "-g",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pthread",
                "-c",
            ])
            .arg(if sanitize() { "-O1" } else { "-O0" })
            .args(flags)
            .arg("-I")
            .arg(root().join("include"))
            .arg(root().join("tests/cpp/client.cpp"))
            .arg("-o")
            .arg(&object),
        "compiling tests/cpp/client.cpp",
    );
    let link = |exe: &Path, libs_args: &[std::ffi::OsString], what: &str| {
        run(
            Command::new(cxx)
                .arg("-pthread")
                .args(flags)
                .arg(&object)
                .args(libs_args)
                .arg("-o")
                .arg(exe),
            what,
        );
    };
    let stat = vec![
        libs.join("libseqrec.a").into_os_string(),
        "-ldl".into(),
        "-lm".into(),
    ];
    if sanitize() {
        let exe = out.join("client-asan");
        link(
            &exe,
            &stat,
            "linking the client with libseqrec.a, ASan + UBSan",
        );
        return vec![("static, ASan + UBSan".to_string(), exe)];
    }
    let shared = out.join("client-shared");
    let dynamic = vec![
        "-L".into(),
        libs.as_os_str().to_owned(),
        format!("-Wl,-rpath,{}", libs.display()).into(),
        "-lseqrec".into(),
    ];
    link(
        &shared,
        &dynamic,
        "linking the client with libseqrec (shared)",
    );
    let static_exe = out.join("client-static");
    link(&static_exe, &stat, "linking the client with libseqrec.a");
    vec![
        ("shared".to_string(), shared),
        ("static".to_string(), static_exe),
    ]
}

/// A command running `exe` against this build's `libseqrec`: the loader searches
/// `LD_LIBRARY_PATH` (which cargo sets to include `target/<profile>`, where an older `cargo
/// build` may have left an older library) before the executable's run path.
fn with_this_lib(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env("LD_LIBRARY_PATH", lib_dir());
    cmd
}

fn client(exe: &Path) -> Command {
    let mut cmd = with_this_lib(exe);
    // Leaks fail the run; UBSan stops at the first report.
    cmd.env(
        "ASAN_OPTIONS",
        "detect_leaks=1:abort_on_error=0:exitcode=23",
    )
    .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1");
    cmd
}

fn floats(out: &mut String, xs: &[f32]) {
    for x in xs {
        write!(out, " {x:?}").unwrap();
    }
}

fn ids(out: &mut String, xs: &[u32]) {
    for x in xs {
        write!(out, " {x}").unwrap();
    }
}

fn with_user(q: Query<'_>, u: Option<u32>) -> Query<'_> {
    match u {
        Some(u) => q.user(u),
        None => q,
    }
}

/// A multi-objective model with random weights: SMORL on SASRec (knobs `w_acc`, `w_div`,
/// `w_nov`) or MODT4R (`alpha`, `lambda_div`, `novelty_eps`, ...), its long-tail flags 0 or 1.
fn knob_model_bytes(kind: &str, n_items: usize, seed: u64) -> Vec<u8> {
    let cfg = match kind {
        "smorl" => seqrec_tests::small_rl_config("smorl", "sasrec", "linear", n_items, 6),
        "modt4r" => seqrec_tests::small_config("sasrec", n_items, 6)
            .with("model", "modt4r")
            .with("dt_n_layers", 1)
            .with("dt_inner_size", 32)
            .with("dt_similarity_dim", 4),
        other => panic!("no knob model {other}"),
    };
    let mut rng = Rng::new(seed ^ 0x7a11);
    seqrec_engine::testing::random_model_bytes_with(&cfg, seed, 0.5, |name, v| {
        if name == "objectives.long_tail" {
            for x in v.iter_mut() {
                *x = rng.below(2) as f32;
            }
        }
    })
    .expect("valid knob model")
}

/// What Rust sessions answer under a sequence of knob changes, in the format `client knobs`
/// reads: the knob list, the history, then each change followed by the session's top-10.
fn knob_expected(model: &Model, changes: &[(&str, f32)], seed: u64) -> String {
    let specs = model.objective_specs();
    let mut out = format!("objectives {}\n", specs.len());
    for s in specs {
        writeln!(out, "objective {} {:?}", s.name, s.default).unwrap();
    }
    let n = model.info().n_items;
    let mut rng = Rng::new(seed);
    let history: Vec<u32> = (0..5).map(|_| 1 + rng.below(n - 1) as u32).collect();
    write!(out, "history {}", history.len()).unwrap();
    ids(&mut out, &history);
    out.push('\n');
    let mut session = model.session().unwrap();
    for &id in &history {
        session.push(id).unwrap();
    }
    let top = |session: &mut seqrec_engine::Session<'_>, out: &mut String| {
        let t = session.topk(10, false).unwrap();
        write!(out, "topk").unwrap();
        ids(out, &t.iter().map(|r| r.item).collect::<Vec<_>>());
        floats(out, &t.iter().map(|r| r.score).collect::<Vec<_>>());
        out.push('\n');
        t.iter().map(|r| r.item).collect::<Vec<_>>()
    };
    let first = top(&mut session, &mut out);
    let mut changed = false;
    for &(name, value) in changes {
        session.set_objective(name, value).unwrap();
        writeln!(out, "set {name} {value:?}").unwrap();
        changed |= top(&mut session, &mut out) != first;
    }
    assert!(changed, "the knob changes leave the ranking as it was");
    out
}

fn option_fields(out: &mut String, o: &seqrec_engine::FeedbackOptions) {
    writeln!(
        out,
        " {:?} {:?} {:?} {} {} {} {}",
        o.lr, o.gamma, o.alpha0, o.ramp, o.buffer, o.batch, o.seed
    )
    .unwrap();
}

/// What a Rust session of `model` (SA2C, linear head) answers to pushes and feedback calls, in
/// the format `client feedback` reads: the default options, the options set, then each event
/// or feedback call followed by the session's top-10 (history excluded), and a `save` halfway.
fn feedback_expected(model: &Model, seed: u64) -> String {
    let mut out = String::from("options");
    option_fields(&mut out, model.feedback_defaults().unwrap());
    let opts = seqrec_engine::FeedbackOptions {
        lr: 0.2,
        buffer: 8,
        batch: 3,
        ramp: 10,
        seed: 3,
        ..*model.feedback_defaults().unwrap()
    };
    out.push_str("set");
    option_fields(&mut out, &opts);
    let mut session = model.session().unwrap();
    session.set_feedback_options(&opts).unwrap();
    let n = model.info().n_items;
    let mut rng = Rng::new(seed);
    for t in 0..14 {
        let item = 1 + rng.below(n - 1) as u32;
        if t < 2 || t % 5 == 3 {
            session.push(item).unwrap();
            writeln!(out, "push {item}").unwrap();
        } else {
            let reward = rng.normal() * 2.0;
            session.feedback(item, reward).unwrap();
            writeln!(out, "feedback {item} {reward:?}").unwrap();
        }
        if t == 7 {
            out.push_str("save\n");
        }
        if t >= 1 {
            let top = session.topk(10, true).unwrap();
            out.push_str("topk");
            ids(&mut out, &top.iter().map(|r| r.item).collect::<Vec<_>>());
            floats(&mut out, &top.iter().map(|r| r.score).collect::<Vec<_>>());
            out.push('\n');
        }
    }
    out
}

/// A small PDiT of `variant` (full: prompt and history; tem: history only).
fn pdit_config(variant: &str) -> seqrec_engine::Config {
    seqrec_engine::Config::from_json(&format!(
        r#"{{"model":"pdit","variant":"{variant}","latent_dim":8,"cond_dim":6,"hidden_size":12,
            "num_tokens":4,"num_heads":3,"depth_gen":1,"depth_tem":1,"mlp_ratio":2.0,
            "max_hist_len":4,"num_timesteps":40,"beta_start":0.0001,"beta_end":0.02,
            "learn_sigma":true,"latent_scale":2.0}}"#
    ))
    .unwrap()
}

/// A catalog safetensors file of `n` unit rows of `d` values (row 0 padding).
fn catalog_bytes(n: usize, d: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut rows = vec![0f32; d];
    for _ in 1..n {
        let r = rng.normal_vec(d, 1.0);
        let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        rows.extend(r.iter().map(|x| x / norm));
    }
    seqrec_engine::weights::serialize(&[("item_latents", &[n, d], &rows)], &[]).unwrap()
}

/// What the Rust API generates and ranks, in the format `client pdit` reads: the sizes, then
/// per case the request, the latent (text-encoder scale) and the top-k.
fn pdit_expected(model: &Pdit, catalog: &Catalog, n_items: usize, seed: u64) -> String {
    let c = model.config();
    let (d, cond) = (
        c.latent_dim,
        if c.variant.has_gen() { c.cond_dim } else { 0 },
    );
    let scale = c.latent_scale as f32;
    let mut out = format!("dims {d} {cond} {} {}\n", c.max_hist_len, c.timesteps);
    let mut rng = Rng::new(seed);
    let mut ws = PditWorkspace::default();
    for (case, steps) in [0usize, 10, 2, 0, 25].into_iter().enumerate() {
        let prompt = rng.normal_vec(cond, 0.4);
        let n_hist = if c.variant.has_tem() {
            1 + case % c.max_hist_len
        } else {
            0
        };
        let history = rng.normal_vec(n_hist * d, 0.4);
        let exclude: Vec<u32> = (0..case)
            .map(|_| 1 + rng.below(n_items - 1) as u32)
            .collect();
        let k = [5, 10, n_items - 1][case % 3];
        let seed = 1000 + case as u64;
        let chain = model
            .respaced(if steps == 0 { c.timesteps } else { steps })
            .unwrap();
        let p: Vec<f32> = prompt.iter().map(|v| v * scale).collect();
        let h: Vec<f32> = history.iter().map(|v| v * scale).collect();
        let lens = [n_hist];
        let hist = c.variant.has_tem().then_some((&h[..], &lens[..]));
        let mut z0 = vec![0f32; d];
        let top = model
            .recommend(
                &chain,
                catalog,
                1,
                c.variant.has_gen().then_some(&p[..]),
                hist,
                NoiseSource::seed(seed),
                k,
                &[&exclude[..]],
                &mut ws,
                &mut z0,
            )
            .unwrap()
            .remove(0);
        let mut items: Vec<u32> = top.iter().map(|r| r.item).collect();
        let mut scores: Vec<f32> = top.iter().map(|r| r.score).collect();
        items.resize(k, 0);
        scores.resize(k, f32::NEG_INFINITY);
        write!(out, "case {steps} {seed} {n_hist} {} {k}", exclude.len()).unwrap();
        floats(&mut out, &prompt);
        floats(&mut out, &history);
        ids(&mut out, &exclude);
        floats(&mut out, &z0.iter().map(|z| z / scale).collect::<Vec<_>>());
        ids(&mut out, &items);
        floats(&mut out, &scores);
        out.push('\n');
    }
    out
}

/// What the Rust API answers to re-ranking and one-shot requests with options, in the format
/// `client ranking` reads; `knobs` are set on every other request.
fn ranking_expected(model: &Model, knobs: &[(&str, f32)], seed: u64) -> String {
    let info = model.info();
    let n = info.n_items;
    let mut rng = Rng::new(seed);
    let mut ws = model.new_workspace();
    let mut out = String::new();
    let random = |rng: &mut Rng, len: usize| -> Vec<u32> {
        (0..len).map(|_| 1 + rng.below(n - 1) as u32).collect()
    };
    for i in 0..6 {
        let user = info.n_users.map(|u| (i % u) as u32);
        let len = 1 + rng.below(2 * info.max_len);
        let h = random(&mut rng, len);
        let mut objectives = model.default_objectives();
        let used: &[(&str, f32)] = if i % 2 == 1 { knobs } else { &[] };
        for &(name, v) in used {
            objectives.set(name, v).unwrap();
        }
        let mut q = with_user(Query::new(&h), user).objectives(&objectives);
        let cand = random(&mut rng, 7);
        let mut scores = vec![0f32; cand.len()];
        model
            .score_candidates(&q, &cand, &mut ws, &mut scores)
            .unwrap();
        let u = user.map_or(-1, i64::from);
        let knob_list = |out: &mut String| {
            write!(out, " {}", used.len()).unwrap();
            for (name, v) in used {
                write!(out, " {name} {v:?}").unwrap();
            }
        };
        write!(out, "candidates {u} {}", h.len()).unwrap();
        ids(&mut out, &h);
        write!(out, " {}", cand.len()).unwrap();
        ids(&mut out, &cand);
        floats(&mut out, &scores);
        knob_list(&mut out);
        out.push('\n');

        let excl = i % 3 == 0;
        let ex = random(&mut rng, 3);
        q = q.exclude_history(excl).exclude(&ex);
        let k = 8;
        let top = model.topk(&q, k, &mut ws).unwrap();
        let mut all = vec![0f32; n];
        model.score(&q, &mut ws, &mut all).unwrap();
        write!(out, "with {u} {}", h.len()).unwrap();
        ids(&mut out, &h);
        write!(out, " {} {}", excl as u8, ex.len()).unwrap();
        ids(&mut out, &ex);
        knob_list(&mut out);
        write!(out, " {k}").unwrap();
        ids(&mut out, &top.iter().map(|r| r.item).collect::<Vec<_>>());
        floats(&mut out, &top.iter().map(|r| r.score).collect::<Vec<_>>());
        write!(out, " {n}").unwrap();
        floats(&mut out, &all);
        out.push('\n');
    }
    out
}

/// What the text encoder gives for a few titles, in the format `client text` reads.
fn text_expected(dir: &Path) -> String {
    let texts = ["Toy Story", "GoldenEye", "Mr. Holland's Opus (1995)"];
    let enc = seqrec_engine::text::TextEncoder::load(dir).unwrap();
    let rows = enc.encode_batch(&texts).unwrap();
    let mut out = format!("{} {}\n", enc.dim(), texts.len());
    for t in texts {
        out.push_str(t);
        out.push('\n');
    }
    floats(&mut out, &rows);
    out.push('\n');
    out
}

/// What the Rust API answers, in the format `client check` reads.
fn expected(model: &Model, seed: u64) -> String {
    let info = model.info();
    let n = info.n_items;
    let users = info.n_users.unwrap_or(0);
    let user_for = |i: usize| (users > 0).then(|| (i % users) as u32);
    let mut out = format!(
        "info {n} {users} {} {} {}\n",
        info.max_len, info.dim, info.arch
    );
    let mut rng = Rng::new(seed);
    let mut ws = model.new_workspace();
    let histories: Vec<Vec<u32>> = (0..12)
        .map(|_| {
            (0..1 + rng.below(2 * info.max_len))
                .map(|_| 1 + rng.below(n - 1) as u32)
                .collect()
        })
        .collect();
    for (i, h) in histories.iter().enumerate() {
        for (exclude, k) in [(false, 10), (true, 10), (true, n - 1)] {
            let u = user_for(i);
            let top = model
                .topk(
                    &with_user(Query::new(h).exclude_history(exclude), u),
                    k,
                    &mut ws,
                )
                .unwrap();
            // Slots past the remaining items are filled with id 0 and -inf by the C ABI.
            let mut items: Vec<u32> = top.iter().map(|r| r.item).collect();
            let mut scores: Vec<f32> = top.iter().map(|r| r.score).collect();
            items.resize(k, 0);
            scores.resize(k, f32::NEG_INFINITY);
            let user = u.map_or(-1, i64::from);
            write!(out, "topk {user} {} {k} {}", exclude as u8, h.len()).unwrap();
            ids(&mut out, h);
            ids(&mut out, &items);
            floats(&mut out, &scores);
            out.push('\n');
        }
    }
    for (i, h) in histories.iter().take(2).enumerate() {
        let u = user_for(i);
        let mut scores = vec![0f32; n];
        model
            .score(&with_user(Query::new(h), u), &mut ws, &mut scores)
            .unwrap();
        write!(out, "score {} {}", u.map_or(-1, i64::from), h.len()).unwrap();
        ids(&mut out, h);
        write!(out, " {n}").unwrap();
        floats(&mut out, &scores);
        out.push('\n');
    }
    for s in 0..2 {
        let u = user_for(s + 1);
        let mut session = match u {
            Some(u) => model.session_for_user(u).unwrap(),
            None => model.session().unwrap(),
        };
        let events: Vec<u32> = (0..info.max_len + 3)
            .map(|_| 1 + rng.below(n - 1) as u32)
            .collect();
        let (k, exclude) = (5, s == 1);
        write!(
            out,
            "session {} {k} {} {}",
            u.map_or(-1, i64::from),
            exclude as u8,
            events.len()
        )
        .unwrap();
        ids(&mut out, &events);
        for &e in &events {
            session.push(e).unwrap();
            let top = session.topk(k, exclude).unwrap();
            let mut items: Vec<u32> = top.iter().map(|r| r.item).collect();
            let mut scores: Vec<f32> = top.iter().map(|r| r.score).collect();
            items.resize(k, 0);
            scores.resize(k, f32::NEG_INFINITY);
            ids(&mut out, &items);
            floats(&mut out, &scores);
        }
        out.push('\n');
    }
    out
}

#[test]
fn cpp_client_matches_rust_and_checks_every_error_path() {
    let Some(cxx) = compiler("CXX", &["c++", "g++", "clang++"]) else {
        eprintln!("skipped: C++ client: no C++ compiler found (set CXX)");
        return;
    };
    if !cfg!(unix) {
        eprintln!("skipped: C++ client: the build commands here are for Unix linkers");
        return;
    }
    if sanitize() {
        let probe = TempDir::new("asan-probe");
        let src = probe.0.join("probe.cpp");
        std::fs::write(&src, "int main() { return 0; }\n").unwrap();
        let ok = Command::new(&cxx)
            .arg("-fsanitize=address,undefined")
            .arg(&src)
            .arg("-o")
            .arg(probe.0.join("probe"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipped: C++ client: {cxx} cannot link -fsanitize=address,undefined");
            return;
        }
    }
    let libs = lib_dir();
    let tmp = TempDir::new("cxx-client");
    let clients = build_clients(&cxx, &libs, &tmp.0);

    // Models: one of each architecture, and the RecBole SASRec fixture when present.
    let mut models: Vec<(String, PathBuf)> = Vec::new();
    for (a, (arch, n_items)) in [
        ("sasrec", 200),
        ("gru4rec", 150),
        ("nextitnet", 120),
        ("caser", 130),
        ("transrec", 90),
    ]
    .into_iter()
    .enumerate()
    {
        let path = tmp.0.join(format!("{arch}.safetensors"));
        std::fs::write(&path, common::model_bytes(arch, n_items, 8, 300 + a as u64)).unwrap();
        models.push((arch.to_string(), path));
    }
    if let Some(shared) = seqrec_tests::shared_dir("C++ client on the SASRec fixture") {
        let path = shared.join("fixtures/recbole/sasrec/model.safetensors");
        if path.is_file() {
            // The same model as RecBole saves it (`.pth`), loaded through seqrec_model_load.
            let pth = tmp.0.join("sasrec-fixture.pth");
            let made = Command::new("python3")
                .arg(root().join("tests/pth/torch_save.py"))
                .arg(&path)
                .arg(&pth)
                .output()
                .is_ok_and(|o| o.status.success());
            if made {
                models.push(("sasrec fixture .pth".to_string(), pth));
            } else {
                eprintln!("skipped: C++ client on a .pth: python3 with numpy not found");
            }
            models.push(("sasrec fixture".to_string(), path));
        }
    }
    // Mutated files for the client's loading path (the bulk runs in tests/robustness.rs).
    let valid = std::fs::read(&models[0].1).unwrap();
    let mut rng = Rng::new(0xc1);
    let mutants: Vec<PathBuf> = (0..90)
        .map(|i| {
            let path = tmp.0.join(format!("mutant-{i}.safetensors"));
            let bytes = mutate::mutate(&valid, i % mutate::KINDS.len(), &mut rng);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();

    // Multi-objective models and the knob changes their sessions go through.
    let mut knob_models = Vec::new();
    for (kind, changes) in [
        (
            "smorl",
            &[
                ("w_div", 30.0),
                ("w_acc", 1.0),
                ("w_nov", 1.0),
                ("w_div", 0.0),
            ][..],
        ),
        (
            "modt4r",
            &[
                ("alpha", 0.0),
                ("alpha", 5.0),
                ("lambda_div", 4.0),
                ("novelty_eps", 1.0),
            ][..],
        ),
    ] {
        let bytes = knob_model_bytes(kind, 60, 0x0b1);
        let path = tmp.0.join(format!("{kind}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let rust = Model::load(&path).unwrap();
        let want = tmp.0.join(format!("knobs-{kind}.txt"));
        std::fs::write(&want, knob_expected(&rust, changes, 21)).unwrap();
        knob_models.push((path, want));
    }

    // PDiTs, their catalog, one of the wrong width, and the Rust API's answers.
    let n_catalog = 40;
    let catalog = tmp.0.join("catalog.safetensors");
    std::fs::write(&catalog, catalog_bytes(n_catalog, 8, 0xca7)).unwrap();
    let bad_catalog = tmp.0.join("catalog-9.safetensors");
    std::fs::write(&bad_catalog, catalog_bytes(n_catalog, 9, 0xca7)).unwrap();
    let table = seqrec_engine::WeightFile::open(&catalog).unwrap();
    let table = table.tensor("item_latents", &[n_catalog, 8]).unwrap();
    let mut pdits = Vec::new();
    for (i, variant) in ["full", "tem"].into_iter().enumerate() {
        let bytes =
            seqrec_engine::testing::random_pdit_bytes(&pdit_config(variant), 40 + i as u64, 0.3)
                .unwrap();
        let path = tmp.0.join(format!("pdit-{variant}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let rust = Pdit::load(&path).unwrap();
        let cat = Catalog::new(rust.backend(), &table).unwrap();
        let want = tmp.0.join(format!("pdit-{variant}.txt"));
        std::fs::write(&want, pdit_expected(&rust, &cat, n_catalog, 60 + i as u64)).unwrap();
        pdits.push((path, want));
    }
    // Re-ranking and per-request options: a model with knobs and one with users.
    let mut ranking = Vec::new();
    for (path, knobs) in [
        (&knob_models[0].0, &[("w_div", 5.0), ("w_acc", 0.5)][..]),
        (
            &knob_models[1].0,
            &[("alpha", 3.0), ("lambda_div", 2.0)][..],
        ),
        (&models[3].1, &[][..]),
        (&models[0].1, &[][..]),
    ] {
        let rust = Model::load(path).unwrap();
        let want = tmp.0.join(format!("ranking-{}.txt", ranking.len()));
        std::fs::write(&want, ranking_expected(&rust, knobs, 5)).unwrap();
        ranking.push((path.clone(), want));
    }
    // Online adaptation: an SA2C agent with a linear head, and the Rust session's answers.
    let sa2c = tmp.0.join("sa2c.safetensors");
    let sa2c_cfg = seqrec_tests::small_rl_config("sa2c", "sasrec", "linear", 70, 6);
    std::fs::write(
        &sa2c,
        seqrec_tests::random_model_bytes(&sa2c_cfg, 0x5a2c, 0.3),
    )
    .unwrap();
    let feedback_want = tmp.0.join("feedback.txt");
    let rust = Model::load(&sa2c).unwrap();
    std::fs::write(&feedback_want, feedback_expected(&rust, 31)).unwrap();
    let text = seqrec_tests::minilm_dir("C++ client text encoder").map(|dir| {
        let want = tmp.0.join("text.txt");
        std::fs::write(&want, text_expected(&dir)).unwrap();
        (dir, want)
    });

    for (label, exe) in &clients {
        for (path, want) in &pdits {
            let out = run(
                client(exe)
                    .arg("pdit")
                    .arg(path)
                    .arg(&catalog)
                    .arg(&bad_catalog)
                    .arg(want),
                &format!("client ({label}) pdit {}", path.display()),
            );
            eprint!("[{label}] {out}");
        }
        for (i, (name, path)) in models.iter().enumerate() {
            let rust = Model::load(path).unwrap();
            let want = tmp.0.join(format!("expected-{i}.txt"));
            std::fs::write(&want, expected(&rust, 7 + i as u64)).unwrap();
            let out = run(
                client(exe).arg("check").arg(path).arg(&want),
                &format!("client ({label}) check {name}"),
            );
            eprint!("[{label}] {out}");
        }
        let out = run(
            client(exe)
                .arg("errors")
                .arg(&models[0].1)
                .arg(&models[3].1),
            &format!("client ({label}) errors"),
        );
        eprint!("[{label}] {out}");
        let out = run(
            client(exe).arg("mutants").args(&mutants),
            &format!("client ({label}) mutants"),
        );
        eprint!("[{label}] {out}");
        for (model, want) in &knob_models {
            let out = run(
                client(exe).arg("knobs").arg(model).arg(want),
                &format!("client ({label}) knobs {}", model.display()),
            );
            eprint!("[{label}] {out}");
        }
        for (model, want) in &ranking {
            let out = run(
                client(exe).arg("ranking").arg(model).arg(want),
                &format!("client ({label}) ranking {}", model.display()),
            );
            eprint!("[{label}] {out}");
        }
        for (a, b) in [(0, 1), (3, 0), (2, 3)] {
            let out = run(
                client(exe).arg("move").arg(&models[a].1).arg(&models[b].1),
                &format!("client ({label}) move {}", models[a].0),
            );
            eprint!("[{label}] {out}");
        }
        let out = run(
            client(exe)
                .arg("feedback")
                .arg(&sa2c)
                .arg(&models[0].1)
                .arg(&feedback_want),
            &format!("client ({label}) feedback"),
        );
        eprint!("[{label}] {out}");
        if let Some((dir, want)) = &text {
            let out = run(
                client(exe).arg("text").arg(dir).arg(want),
                &format!("client ({label}) text"),
            );
            eprint!("[{label}] {out}");
        }
    }
}

/// The README's minimal C example compiles as C99 with warnings as errors and prints the same
/// top-10 as the Rust API.
#[test]
fn readme_c_example_builds_and_runs() {
    let Some(cc) = compiler("CC", &["cc", "gcc", "clang"]) else {
        eprintln!("skipped: C example: no C compiler found (set CC)");
        return;
    };
    if !cfg!(unix) {
        eprintln!("skipped: C example: the build command here is for Unix linkers");
        return;
    }
    if sanitize() {
        // The sanitizer run covers the C++ client only.
        return;
    }
    let libs = lib_dir();
    let tmp = TempDir::new("c-example");
    let exe = tmp.0.join("minimal");
    run(
        Command::new(&cc)
            .args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I"])
            .arg(root().join("include"))
            .arg(root().join("tests/cpp/minimal.c"))
            .arg("-L")
            .arg(&libs)
            .arg(format!("-Wl,-rpath,{}", libs.display()))
            .args(["-lseqrec", "-o"])
            .arg(&exe),
        "compiling tests/cpp/minimal.c",
    );
    let bytes = common::model_bytes("sasrec", 200, 8, 11);
    let model = tmp.0.join("model.safetensors");
    std::fs::write(&model, &bytes).unwrap();
    let out = run(with_this_lib(&exe).arg(&model), "running the C example");
    let got: Vec<u32> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    let rust = Model::from_bytes(&bytes, &Default::default()).unwrap();
    let want: Vec<u32> = rust
        .topk(
            &Query::new(&[12, 7, 99]).exclude_history(true),
            10,
            &mut rust.new_workspace(),
        )
        .unwrap()
        .iter()
        .map(|r| r.item)
        .collect();
    assert_eq!(got, want, "C example output:\n{out}");
}
