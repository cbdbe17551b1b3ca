//! RecBole checkpoints (`.pth`) without PyTorch: `tests/pth/torch_save.py` writes each
//! fixture model the way RecBole's trainer saves it (torch.save's zip layout, a protocol-2
//! pickle with RecBole's `Config`, enums, `torch.device`, an optimizer state), in f32, with
//! strided and shared storages, in f16/bf16, with protocol 4 and unaligned records; the loaded
//! and the converted models reproduce the fixtures. Mutated checkpoints (truncations, bit
//! flips, huge lengths, unknown classes and opcodes) load or fail with an error naming the
//! problem, never a panic.

use seqrec_engine::pth::{self, zip};
use seqrec_engine::{Error, Model};
use seqrec_kernels::testing::Rng;
use seqrec_tests::TempDir;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pth/torch_save.py")
}

fn python_ok(what: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: {what}: python3 with numpy not found");
    }
    ok
}

fn write_pth(model: &Path, out: &Path, extra: &[&str]) {
    let o = Command::new("python3")
        .arg(script())
        .arg(model)
        .arg(out)
        .args(extra)
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "torch_save.py {extra:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every variant of one fixture: loaded directly and converted, against the fixture's cases.
fn check_backbone(name: &str, variants: &[&[&str]]) {
    let what = format!("RecBole .pth of {name}");
    let Some(shared) = seqrec_tests::shared_dir(&what) else {
        return;
    };
    if !python_ok(&what) {
        return;
    }
    let dir = shared.join("fixtures/recbole").join(name);
    let reference = Model::load(dir.join("model.safetensors")).unwrap();
    let tmp = TempDir::new(&format!("pth-{name}"));
    for (v, args) in variants.iter().enumerate() {
        let path = tmp.0.join(format!("{name}-{v}.pth"));
        write_pth(&dir.join("model.safetensors"), &path, args);
        let ctx = format!("{name} {args:?}");
        let model = Model::load(&path).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(model.info(), reference.info(), "{ctx}");
        seqrec_tests::check_fixture_cases(&model, &dir, &ctx);
        // The conversion, written and loaded as safetensors, is the same model.
        let conv = pth::convert_file(&path, None).unwrap();
        let st = tmp.0.join(format!("{name}-{v}.safetensors"));
        std::fs::write(&st, conv.bytes()).unwrap();
        let converted = Model::load(&st).unwrap();
        assert_eq!(converted.fingerprint(), model.fingerprint(), "{ctx}");
        seqrec_tests::check_fixture_cases(&converted, &dir, &ctx);
        if args.is_empty() || args.contains(&"--strided") {
            // f32 weights arrive bit for bit: the very model of the fixture file.
            assert_eq!(model.fingerprint(), reference.fingerprint(), "{ctx}");
        }
    }
}

#[test]
fn sasrec_pth_matches_the_fixtures() {
    check_backbone("sasrec", &[&[], &["--strided"], &["--protocol", "4"]]);
}

#[test]
fn gru4rec_pth_matches_the_fixtures() {
    check_backbone("gru4rec", &[&[], &["--strided", "--no-align"]]);
}

#[test]
fn nextitnet_pth_matches_the_fixtures() {
    check_backbone("nextitnet", &[&[], &["--protocol", "4", "--strided"]]);
}

#[test]
fn caser_pth_matches_the_fixtures() {
    check_backbone("caser", &[&[], &["--strided"]]);
}

/// f16 and bf16 checkpoints load as the f32 model of their rounded values.
#[test]
fn half_precision_checkpoints_load_their_values() {
    let what = "half-precision .pth";
    let Some(shared) = seqrec_tests::shared_dir(what) else {
        return;
    };
    if !python_ok(what) {
        return;
    }
    let src = shared.join("fixtures/recbole/sasrec/model.safetensors");
    let tmp = TempDir::new("pth-half");
    for dtype in ["f16", "bf16"] {
        let (pth, reference) = (tmp.0.join(format!("{dtype}.pth")), tmp.0.join("ref.st"));
        let r = reference.to_str().unwrap();
        write_pth(
            &src,
            &pth,
            &["--dtype", dtype, "--strided", "--reference", r],
        );
        let a = Model::load(&pth).unwrap();
        let b = Model::load(&reference).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint(), "{dtype}");
        let (mut wa, mut wb) = (a.new_workspace(), b.new_workspace());
        let (mut sa, mut sb) = (vec![0f32; 1000], vec![0f32; 1000]);
        let q = seqrec_engine::Query::new(&[5, 17, 400, 3]);
        a.score(&q, &mut wa, &mut sa).unwrap();
        b.score(&q, &mut wb, &mut sb).unwrap();
        assert_eq!(sa, sb, "{dtype}");
    }
}

// ---- a minimal stored-zip writer, to hand the parser arbitrary pickles with valid CRCs

fn zip_of(records: &[(&str, &[u8])]) -> Vec<u8> {
    let crc = |b: &[u8]| seqrec_engine::codec::crc32(0, b);
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in records {
        let offset = out.len() as u32;
        let c = crc(data);
        let mut local = vec![];
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        local.extend_from_slice(&c.to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&c.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    let n = records.len() as u16;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A checkpoint holding `pickle` and one storage of 6 floats.
fn with_pickle(pickle: &[u8]) -> Vec<u8> {
    let storage: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    zip_of(&[("archive/data.pkl", pickle), ("archive/data/0", &storage)])
}

/// `{"state_dict": {"item_embedding.weight": tensor[3, 2] of storage 0}, "config": {"model":
/// "SASRec", "hidden_size": 2, ...}}` as protocol 2 opcodes.
fn good_pickle() -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    let s = |p: &mut Vec<u8>, t: &str| {
        p.push(0x8c);
        p.push(t.len() as u8);
        p.extend_from_slice(t.as_bytes());
    };
    s(&mut p, "state_dict");
    p.extend_from_slice(b"ccollections\nOrderedDict\n)R(");
    s(&mut p, "item_embedding.weight");
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.extend_from_slice(b"(");
    s(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    s(&mut p, "0");
    s(&mut p, "cpu");
    p.extend_from_slice(&[b'K', 6, b't', b'Q']);
    p.extend_from_slice(&[
        b'K', 0, b'K', 3, b'K', 2, 0x86, b'K', 2, b'K', 1, 0x86, 0x89,
    ]);
    p.extend_from_slice(b"ccollections\nOrderedDict\n)Rtq\x01R");
    p.push(b'u');
    s(&mut p, "config");
    p.push(b'}');
    p.push(b'(');
    for (k, v) in [("model", "SASRec"), ("hidden_act", "gelu")] {
        s(&mut p, k);
        s(&mut p, v);
    }
    for (k, v) in [
        ("hidden_size", 2u8),
        ("n_layers", 0),
        ("n_heads", 1),
        ("inner_size", 2),
        ("MAX_ITEM_LIST_LENGTH", 4),
    ] {
        s(&mut p, k);
        p.extend_from_slice(&[b'K', v]);
    }
    p.extend_from_slice(b"uu.");
    p
}

#[test]
fn a_hand_written_pickle_converts_and_bad_ones_name_the_problem() {
    let conv = pth::convert(&with_pickle(&good_pickle()), None).unwrap();
    assert_eq!(conv.tensors, ["item_embedding.weight"]);
    assert_eq!(conv.config.usize("n_items").unwrap(), 3);
    // The model has tensors missing (n_layers 0 still needs position embeddings and LayerNorm).
    let file = conv.into_weight_file("<test>").unwrap();
    let e = Model::from_weight_file(seqrec_engine::Cpu::new(), &file, &Default::default());
    assert!(e.unwrap_err().to_string().contains("position_embedding"));

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.".to_vec(),
            "calls `os.system`, which is not allowed",
        ),
        (
            b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.".to_vec(),
            "`builtins.eval`",
        ),
        (b"\x80\x02(cos\nsystem\nX\x00\x00\x00\x00o.".to_vec(), "OBJ"),
        (b"\x80\x02(ios\nsystem\n.".to_vec(), "INST"),
        (b"\x80\x02(S'x'\n.".to_vec(), "STRING"),
        (
            b"\x80\x02X\xf0\xff\xff\xff".to_vec(),
            "BINUNICODE needs 4294967280 bytes",
        ),
        (
            b"\x80\x02\x8e\xff\xff\xff\xff\xff\xff\xff\x7f".to_vec(),
            "BINBYTES8",
        ),
        (b"\x80\x02h\x05.".to_vec(), "memo index 5"),
        (b"\x80\x02e.".to_vec(), "without a MARK"),
        (
            b"\x80\x02\x8b\x00\x00\x01\x00".to_vec(),
            "an integer of 65536 bytes",
        ),
        (b"\x80\x09}.".to_vec(), "pickle protocol 9"),
        (b"\x80\x02].".to_vec(), "not a dict"),
        (
            b"\x80\x02}X\x01\x00\x00\x00aK\x01s.".to_vec(),
            "`a` is not a tensor",
        ),
        (b"\x80\x02}".to_vec(), "opcode needs 1 bytes"),
    ];
    for (pickle, want) in cases {
        let e = pth::convert(&with_pickle(&pickle), None).unwrap_err();
        assert!(matches!(e, Error::Checkpoint(_)), "{e}");
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
    // A view past its storage, and a storage record that is missing.
    let mut p = good_pickle();
    let at = p.windows(3).position(|w| w == [b'K', 3, b'K']).unwrap();
    p[at + 1] = 9;
    let e = pth::convert(&with_pickle(&p), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("reaches past its storage of 6 elements"), "{e}");
    let e = pth::convert(&zip_of(&[("archive/data.pkl", &good_pickle())]), None).unwrap_err();
    assert!(e.to_string().contains("`data/0` is missing"), "{e}");
    // Not a zip, and the legacy format.
    let e = pth::convert(b"\x80\x02}q\x00.", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("legacy format"), "{e}");
    let e = pth::convert(b"hello", None).unwrap_err().to_string();
    assert!(e.contains("not a zip archive"), "{e}");
}

#[test]
fn mutated_pickles_convert_or_fail_cleanly() {
    let good = good_pickle();
    let mut rng = Rng::new(3);
    let (mut ok, mut failed) = (0, 0);
    for round in 0..4000 {
        let mut p = good.clone();
        for _ in 0..1 + round % 3 {
            let i = rng.below(p.len());
            match rng.below(4) {
                0 => p[i] = rng.below(256) as u8,
                1 => p[i] ^= 1 << rng.below(8),
                2 => {
                    p.insert(i, [0xff, 0x7f, 0x80, 0x00][rng.below(4)]);
                }
                _ => p.truncate(i.max(1)),
            }
        }
        match pth::convert(&with_pickle(&p), None) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(matches!(e, Error::Checkpoint(_)), "{e}");
                failed += 1;
            }
        }
    }
    eprintln!("mutated pickles: {ok} converted, {failed} rejected");
    assert!(failed > 0);
}

#[test]
fn mutated_checkpoint_files_load_or_fail_cleanly() {
    let what = "mutated .pth files";
    let Some(shared) = seqrec_tests::shared_dir(what) else {
        return;
    };
    if !python_ok(what) {
        return;
    }
    let tmp = TempDir::new("pth-mutants");
    let path = tmp.0.join("caser.pth");
    write_pth(
        &shared.join("fixtures/recbole/caser/model.safetensors"),
        &path,
        &["--strided"],
    );
    let good = std::fs::read(&path).unwrap();
    let records = zip::records(&good).unwrap();
    assert!(records.iter().any(|r| r.name == "archive/data.pkl"));
    // Truncations anywhere: the end-of-directory record goes first, so each is an error.
    let mut rng = Rng::new(9);
    for _ in 0..60 {
        let n = rng.below(good.len());
        let e = pth::convert(&good[..n], None).unwrap_err();
        assert!(matches!(e, Error::Checkpoint(_)), "len {n}: {e}");
    }
    // Bit flips: anywhere in a record's bytes the CRC catches them; in the headers they fail
    // or (padding, dates) change nothing.
    let (mut loaded, mut rejected) = (0, 0);
    for _ in 0..300 {
        let mut bad = good.clone();
        let i = rng.below(bad.len());
        bad[i] ^= 1 << rng.below(8);
        match pth::convert(&bad, None) {
            Ok(c) => {
                let file = c.into_weight_file("<mutant>").unwrap();
                if let Ok(m) =
                    Model::from_weight_file(seqrec_engine::Cpu::new(), &file, &Default::default())
                {
                    let mut ws = m.new_workspace();
                    let q = seqrec_engine::Query::new(&[1, 2]).user(1);
                    m.topk(&q, 5, &mut ws).unwrap();
                }
                loaded += 1;
            }
            Err(_) => rejected += 1,
        }
    }
    eprintln!("bit flips: {loaded} loaded, {rejected} rejected");
    // Huge lengths in the directory: sizes and offsets.
    let eocd = good.len() - 22;
    for (field, value) in [
        (10usize, 0xffffu16 as u32),
        (12, 0xffff_fff0),
        (16, 0x7fff_ffff),
    ] {
        let mut bad = good.clone();
        if field == 10 {
            bad[eocd + 10..eocd + 12].copy_from_slice(&(value as u16).to_le_bytes());
        } else {
            bad[eocd + field..eocd + field + 4].copy_from_slice(&value.to_le_bytes());
        }
        let e = pth::convert(&bad, None).unwrap_err();
        assert!(e.to_string().contains("zip"), "{e}");
    }
}
