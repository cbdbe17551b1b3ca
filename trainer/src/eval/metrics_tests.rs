use super::*;

fn o(seq: usize, user: u32, target: u32, rank: Option<u32>, top: &[u32]) -> Outcome {
    Outcome {
        seq,
        user,
        target,
        rank,
        top: top.to_vec(),
    }
}

/// Catalog 1..=10; item 1 is the only popular item; H_1 = {1, 2}, H_2 = {}.
fn fixture() -> (Vec<Outcome>, Vec<bool>, Vec<Vec<u32>>) {
    let outcomes = vec![
        o(0, 1, 3, Some(3), &[1, 4, 3]),
        o(0, 1, 5, Some(1), &[5, 1, 4]),
        o(1, 2, 2, None, &[1, 2, 6]),
        o(2, 1, 1, Some(8), &[1, 7, 8]),
    ];
    let long_tail = (0..11).map(|i| i >= 2).collect();
    let user_items = vec![vec![], vec![1, 2], vec![]];
    (outcomes, long_tail, user_items)
}

fn run(spec: &str) -> Report {
    let (outcomes, long_tail, user_items) = fixture();
    let ctx = MetricContext {
        n_items: 11,
        long_tail: &long_tail,
        user_items: &user_items,
    };
    compute(&parse_metrics(spec).unwrap(), &outcomes, &ctx)
}

/// Values are sums of a few exact fractions: 1e-12 absorbs the rounding of the divisions.
fn close(r: &Report, name: &str, want: f64) {
    let got = r.get(name).unwrap_or_else(|| panic!("{name} missing"));
    assert!((got - want).abs() < 1e-12, "{name}: got {got}, want {want}");
}

#[test]
fn accuracy_metrics_by_hand() {
    let r = run("hr@3,hr@1,ndcg@3,mrr@3,hr@10,ndcg@10");
    close(&r, "hr@3", 2.0 / 4.0);
    close(&r, "hr@1", 1.0 / 4.0);
    // Rank 3 gives 1/log2(4) = 0.5, rank 1 gives 1.
    close(&r, "ndcg@3", (0.5 + 1.0) / 4.0);
    close(&r, "mrr@3", (1.0 / 3.0 + 1.0) / 4.0);
    close(&r, "hr@10", 3.0 / 4.0);
    close(&r, "ndcg@10", (0.5 + 1.0 + 1.0 / 9f64.log2()) / 4.0);
    assert_eq!((r.n_events, r.n_sequences, r.n_users), (4, 3, 2));
}

#[test]
fn beyond_accuracy_metrics_by_hand() {
    let r = run("cv_div@3,cv_div@1,cv_nov@3,cv_nov@1,r@3,r@1,up@3,up@1,hr_ser@3,ndcg_ser@3");
    // Union of the top-3 lists: {1,2,3,4,5,6,7,8} of 10 items.
    close(&r, "cv_div@3", 0.8);
    close(&r, "cv_div@1", 2.0 / 10.0);
    // Long tail = items 2..=10 (9 items); covered {2..8} = 7, and at k=1 only {5}.
    close(&r, "cv_nov@3", 7.0 / 9.0);
    close(&r, "cv_nov@1", 1.0 / 9.0);
    // Sequence 0 has 6 slots over 4 distinct items; the others repeat nothing.
    close(&r, "r@3", 2.0 / 3.0);
    close(&r, "r@1", 0.0);
    // User 1: 2, 2, 2 unseen items (mean 2); user 2: 3 → (2 + 3) / 2.
    close(&r, "up@3", 2.5);
    // k = 1: user 1 gets [1], [5], [1] → 1/3; user 2 gets [1] → 1.
    close(&r, "up@1", (1.0 / 3.0 + 1.0) / 2.0);
    // Serendipity events: the first three (the fourth's target 1 is in H_1).
    assert_eq!(r.n_serendipity_events, 3);
    close(&r, "hr_ser@3", 2.0 / 3.0);
    close(&r, "ndcg_ser@3", 1.5 / 3.0);
}

#[test]
fn empty_averages_are_nan_and_json_keeps_order() {
    let ctx = MetricContext {
        n_items: 3,
        long_tail: &[false, false, true],
        user_items: &[],
    };
    let metrics = parse_metrics("ndcg@10, hr@5,cv_div@2").unwrap();
    let r = compute(&metrics, &[], &ctx);
    assert!(r.get("ndcg@10").unwrap().is_nan());
    assert_eq!(r.get("cv_div@2"), Some(0.0));
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"ndcg@10":null,"hr@5":null,"cv_div@2":0.0}"#
    );
    let r = run("ndcg@10,hr@3,mrr@3");
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.starts_with(r#"{"ndcg@10":"#) && json.contains(r#""hr@3":0.5,"mrr@3":"#),
        "{json}"
    );
}

#[test]
fn metric_names_parse() {
    let all = "hr@10,ndcg@10,mrr@10,cv_div@10,cv_nov@10,r@10,up@10,hr_ser@10,ndcg_ser@10";
    let ms = parse_metrics(all).unwrap();
    assert_eq!(ms.len(), 9);
    let names: Vec<String> = ms.iter().map(ToString::to_string).collect();
    assert_eq!(names.join(","), all);
    assert_eq!(
        "Recall@20".parse::<Metric>().unwrap(),
        Metric {
            kind: MetricKind::Hr,
            k: 20
        }
    );
    assert_eq!(
        "CV-div@5".parse::<Metric>().unwrap(),
        Metric {
            kind: MetricKind::CvDiv,
            k: 5
        }
    );
    assert_eq!(parse_metrics("hr@10,hr@10").unwrap().len(), 1);
    for bad in ["hr", "hr@0", "hr@x", "precision@10", "@10", ""] {
        let e = parse_metrics(bad).unwrap_err().to_string();
        assert!(e.contains("metric") && e.contains("ndcg_ser"), "{bad}: {e}");
    }
}
