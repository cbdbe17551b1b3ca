//! Loading rejects bad files and bad input with errors that name the problem, and never
//! panics: truncations, corrupt headers, wrong shapes, wrong dtypes, missing and unexpected
//! tensors, non-finite weights, configs that disagree with the tensors.

use seqrec_engine::weights::serialize;
use seqrec_engine::{CONFIG_KEY, Config, Error, Model, Query};
use seqrec_tests::{random_model_bytes, small_config};

fn load(bytes: &[u8]) -> Result<Model, Error> {
    Model::from_bytes(bytes, &Default::default())
}

fn err(bytes: &[u8]) -> String {
    match load(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn sasrec_bytes() -> Vec<u8> {
    random_model_bytes(&small_config("sasrec", 30, 6), 1, 0.2)
}

/// Rebuilds a file from the tensors of a valid one, letting `edit` change names, shapes,
/// values and the config.
fn rebuild(edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>, &mut String)) -> Vec<u8> {
    let cfg = small_config("sasrec", 30, 6);
    let specs = seqrec_engine::tensor_specs(&cfg).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = specs
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.shape.clone(),
                vec![0.1; s.shape.iter().product()],
            )
        })
        .collect();
    let mut json = cfg.to_json();
    edit(&mut tensors, &mut json);
    let views: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()))
        .collect();
    serialize(&views, &[(CONFIG_KEY, &json)]).unwrap()
}

#[test]
fn valid_file_loads_and_round_trips_through_disk() {
    let bytes = sasrec_bytes();
    let m = load(&bytes).unwrap();
    assert_eq!(m.info().arch, "sasrec");
    let dir = std::env::temp_dir().join(format!("seqrec-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let mapped = Model::load(&path).unwrap();
    let (mut w1, mut w2) = (m.new_workspace(), mapped.new_workspace());
    let q = Query::new(&[1, 2, 3]);
    assert_eq!(
        m.topk(&q, 5, &mut w1).unwrap(),
        mapped.topk(&q, 5, &mut w2).unwrap()
    );
    // Error names the file.
    let missing = Model::load(dir.join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("absent.safetensors"), "{missing}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn truncated_files_are_errors() {
    let bytes = sasrec_bytes();
    for cut in [0, 4, 8, 9, 50, bytes.len() / 2, bytes.len() - 1] {
        let e = err(&bytes[..cut]);
        assert!(e.contains("invalid safetensors"), "cut {cut}: {e}");
    }
}

#[test]
fn corrupt_headers_are_errors() {
    let bytes = sasrec_bytes();
    // Header length inflated far beyond the file.
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(err(&b).contains("invalid safetensors"));
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&((bytes.len() as u64) + 10).to_le_bytes());
    assert!(err(&b).contains("invalid safetensors"));
    // Garbage inside the JSON header.
    let mut b = bytes.clone();
    b[9] = b'#';
    assert!(err(&b).contains("invalid safetensors"));
    // An extra byte after the data.
    let mut b = bytes.clone();
    b.push(0);
    assert!(err(&b).contains("invalid safetensors"));
}

#[test]
fn dtype_changes_are_errors_naming_the_tensor() {
    let bytes = sasrec_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    // Retag the first tensor as I32 (same width, so offsets stay valid).
    let edited = header.replacen("\"F32\"", "\"I32\"", 1);
    let mut b = bytes.clone();
    b[8..8 + n].copy_from_slice(edited.as_bytes());
    let e = err(&b);
    assert!(e.contains("dtype I32") && e.contains("tensor `"), "{e}");
}

#[test]
fn shape_mismatch_names_tensor_and_both_shapes() {
    let b = rebuild(|t, _| {
        let (_, shape, vals) = t
            .iter_mut()
            .find(|(n, _, _)| n == "position_embedding.weight")
            .unwrap();
        *shape = vec![5, 16];
        vals.truncate(80);
    });
    let e = err(&b);
    assert!(
        e.contains("position_embedding.weight") && e.contains("[6, 16]") && e.contains("[5, 16]"),
        "{e}"
    );
}

#[test]
fn config_disagreeing_with_tensors_is_an_error() {
    let b = rebuild(|_, json| *json = json.replace("\"hidden_size\":16", "\"hidden_size\":32"));
    let e = err(&b);
    assert!(e.contains("expected shape") && e.contains("32"), "{e}");
    let b = rebuild(|_, json| *json = json.replace("\"n_heads\":2", "\"n_heads\":3"));
    assert!(err(&b).contains("not divisible by n_heads 3"));
}

#[test]
fn missing_and_unexpected_tensors_are_errors() {
    let b = rebuild(|t, _| t.retain(|(n, _, _)| n != "LayerNorm.bias"));
    assert!(err(&b).contains("tensor `LayerNorm.bias` is missing"));
    let b = rebuild(|t, _| t.push(("extra.weight".into(), vec![2], vec![0.0; 2])));
    let e = err(&b);
    assert!(e.contains("unexpected tensor `extra.weight`"), "{e}");
}

#[test]
fn non_finite_weights_are_reported_with_the_tensor() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let b = rebuild(|t, _| {
            let (_, _, vals) = t
                .iter_mut()
                .find(|(n, _, _)| n.ends_with("layer.1.feed_forward.dense_2.weight"))
                .unwrap();
            vals[7] = bad;
        });
        let e = err(&b);
        assert!(
            e.contains("trm_encoder.layer.1.feed_forward.dense_2.weight") && e.contains("index 7"),
            "{e}"
        );
    }
}

#[test]
fn unknown_model_and_missing_config_are_errors() {
    let b = rebuild(|_, json| *json = json.replace("\"sasrec\"", "\"bert4rec\""));
    assert!(err(&b).contains("unknown model `bert4rec`"));
    let views: Vec<(&str, &[usize], &[f32])> = vec![("w", &[1], &[0.0])];
    let b = serialize(&views, &[]).unwrap();
    assert!(err(&b).contains("no configuration"));
    let b = rebuild(|_, json| *json = "{not json".into());
    assert!(err(&b).contains("not valid JSON"));
}

#[test]
fn bad_queries_are_errors_not_panics() {
    let m = load(&sasrec_bytes()).unwrap();
    let mut ws = m.new_workspace();
    assert!(matches!(
        m.topk(&Query::new(&[]), 5, &mut ws),
        Err(Error::EmptyHistory)
    ));
    let e = m
        .topk(&Query::new(&[3, 0]), 5, &mut ws)
        .unwrap_err()
        .to_string();
    assert!(e.contains("item id 0 at history position 1"), "{e}");
    let e = m
        .topk(&Query::new(&[3, 30]), 5, &mut ws)
        .unwrap_err()
        .to_string();
    assert!(e.contains("item id 30") && e.contains("1..=29"), "{e}");
    let e = m
        .topk(&Query::new(&[3]).user(1), 5, &mut ws)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no user embedding"), "{e}");
    let mut short = vec![0f32; 5];
    assert!(m.score(&Query::new(&[3]), &mut ws, &mut short).is_err());

    let caser = load(&random_model_bytes(&small_config("caser", 30, 6), 2, 0.2)).unwrap();
    let mut ws = caser.new_workspace();
    assert!(
        caser
            .topk(&Query::new(&[3]), 5, &mut ws)
            .unwrap_err()
            .to_string()
            .contains("user id is required")
    );
    assert!(
        caser
            .topk(&Query::new(&[3]).user(7), 5, &mut ws)
            .unwrap_err()
            .to_string()
            .contains("user id 7")
    );
    assert_eq!(
        caser
            .topk(&Query::new(&[3]).user(6), 5, &mut ws)
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn config_can_come_from_a_sidecar_file() {
    let cfg = small_config("gru4rec", 20, 5);
    let specs = seqrec_engine::tensor_specs(&cfg).unwrap();
    let vals: Vec<Vec<f32>> = specs
        .iter()
        .map(|s| vec![0.01; s.shape.iter().product()])
        .collect();
    let views: Vec<(&str, &[usize], &[f32])> = specs
        .iter()
        .zip(&vals)
        .map(|(s, v)| (s.name.as_str(), s.shape.as_slice(), v.as_slice()))
        .collect();
    let bytes = serialize(&views, &[]).unwrap();
    let dir = std::env::temp_dir().join(format!("seqrec-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    assert!(
        Model::load(dir.join("model.safetensors"))
            .unwrap_err()
            .to_string()
            .contains("no configuration")
    );
    std::fs::write(dir.join("config.json"), cfg.to_json()).unwrap();
    let m = Model::load(dir.join("model.safetensors")).unwrap();
    assert_eq!(m.info().arch, "gru4rec");
    let explicit = Model::from_bytes(
        &bytes,
        &seqrec_engine::LoadOptions {
            config: Some(Config::from_json(&cfg.to_json()).unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(explicit.info(), m.info());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn devices_parse_and_the_cpu_loaders_refuse_a_gpu() {
    use seqrec_engine::Device;
    assert_eq!(Device::parse("cpu"), Some(Device::Cpu));
    assert_eq!(Device::parse("cuda"), Some(Device::Cuda(0)));
    assert_eq!(Device::parse("cuda:3"), Some(Device::Cuda(3)));
    assert_eq!(Device::parse("cuda:x"), None);
    assert_eq!(Device::parse("tpu"), None);
    assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
    let cfg = seqrec_tests::small_config("sasrec", 20, 5);
    let bytes = seqrec_tests::random_model_bytes(&cfg, 1, 0.1);
    let opts = seqrec_engine::LoadOptions {
        device: Device::Cuda(0),
        ..Default::default()
    };
    let err = Model::from_bytes(&bytes, &opts).unwrap_err();
    assert!(err.to_string().contains("cuda:0"), "{err}");
}
