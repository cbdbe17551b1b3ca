//! The readers, splits and evaluation on the real data sets in `../shared/data` (skipped with
//! a printed notice when the folder is absent). Expected counts are those of
//! `shared/data/README.md`.

use seqrec_trainer::data::{
    DataFormat, Dataset, Interactions, Split, SplitMethod, TrainPart, detect, load, session_starts,
};
use seqrec_trainer::eval::{EvalOptions, Evaluator, Popularity, Protocol, parse_metrics};
use std::path::PathBuf;

/// `$SEQREC_SHARED/data/NAME`, else `../shared/data/NAME` beside the workspace; `None`, with a
/// notice, when absent.
fn data_dir(name: &str) -> Option<PathBuf> {
    let shared = std::env::var_os("SEQREC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = shared.join("data").join(name);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: data set {name} not found at {} (set SEQREC_SHARED)",
            dir.display()
        );
        None
    }
}

fn interactions(name: &str) -> Option<Interactions> {
    let dir = data_dir(name)?;
    match load(&dir, None).unwrap() {
        Dataset::Interactions(i) => Some(i),
        Dataset::Presplit(_) => panic!("{name}: expected interactions"),
    }
}

fn assert_time_ordered(inter: &Interactions) {
    for (u, t) in inter.timestamps.as_ref().unwrap().iter().enumerate() {
        assert!(
            t.windows(2).all(|w| w[0] <= w[1]),
            "user {u} not in time order"
        );
    }
}

/// Total sessions and users with at least 2 and at least 5 sessions, at a 60-minute gap.
fn session_stats(inter: &Interactions) -> (usize, usize, usize) {
    let counts: Vec<usize> = (inter.timestamps.as_ref().unwrap().iter().skip(1))
        .map(|t| session_starts(t, 3600.0).len())
        .collect();
    let at_least = |n| counts.iter().filter(|&&c| c >= n).count();
    (counts.iter().sum(), at_least(2), at_least(5))
}

#[test]
fn ml_100k() {
    let Some(inter) = interactions("ml-100k") else {
        return;
    };
    assert_eq!(inter.n_users() - 1, 943);
    assert_eq!(inter.n_items() - 1, 1682);
    assert_eq!(inter.n_interactions(), 100_000);
    assert_eq!(inter.n_interacted_items(), 1682);
    // RecBole numbers tokens by first appearance: the first row is `196 242`.
    assert_eq!(
        (inter.users.token(1), inter.items.token(1)),
        (Some("196"), Some("242"))
    );
    assert_eq!(inter.item_features.as_ref().unwrap().n_rows(), 1682);
    assert_eq!(inter.user_features.as_ref().unwrap().n_rows(), 943);
    let lens: Vec<usize> = inter.sequences[1..].iter().map(Vec::len).collect();
    assert_eq!(
        (lens.iter().min(), lens.iter().max()),
        (Some(&20), Some(&737))
    );
    assert_time_ordered(&inter);
    assert_eq!(session_stats(&inter), (2692, 368, 136));

    let loo = seqrec_trainer::data::split(&inter, &SplitMethod::LeaveOneOut).unwrap();
    assert_eq!((loo.valid.len(), loo.test.len()), (943, 943));
    assert_eq!(loo.train_examples(50).len(), 100_000 - 3 * 943);
    assert!(loo.train_examples(50).iter().all(|e| e.history.len() <= 50));

    let ratio = seqrec_trainer::data::split(&inter, &SplitMethod::ratio_8_1_1()).unwrap();
    let TrainPart::Sequences(train) = &ratio.train else {
        panic!()
    };
    assert_eq!(
        (train.len(), ratio.valid.len(), ratio.test.len()),
        (754, 94, 95)
    );

    let sessions = seqrec_trainer::data::split(&inter, &SplitMethod::sessions_60min()).unwrap();
    // Users with ≥ 2 sessions have a test session; those whose last session has one item
    // give no event.
    assert!(
        sessions.test.len() <= 368 && sessions.test.len() > 300,
        "{}",
        sessions.test.len()
    );
    assert!(sessions.valid.len() < sessions.test.len());
}

#[test]
fn ml_latest_small() {
    let Some(inter) = interactions("ml-latest-small") else {
        return;
    };
    assert_eq!(inter.n_users() - 1, 610);
    assert_eq!(inter.n_interactions(), 100_836);
    assert_eq!(inter.n_interacted_items(), 9724);
    assert_eq!(
        inter.n_items() - 1,
        9742,
        "rated items plus those only in movies.csv"
    );
    assert_time_ordered(&inter);
    assert_eq!(session_stats(&inter), (6960, 288, 131));
    let title = inter
        .item_features
        .as_ref()
        .unwrap()
        .get(inter.items.id("11").unwrap(), "title");
    assert_eq!(
        title.unwrap().text().unwrap(),
        "American President, The (1995)"
    );
}

#[test]
fn amazon_scientific() {
    let Some(dir) = data_dir("amazon-scientific") else {
        return;
    };
    assert_eq!(detect(&dir).unwrap().format, DataFormat::RecboleBenchmark);
    let Dataset::Presplit(p) = load(&dir, None).unwrap() else {
        panic!("expected a benchmark")
    };
    assert_eq!(p.users.len() - 1, 8442);
    assert_eq!(p.items.len() - 1, 4385);
    let s = &p.split;
    let TrainPart::Examples(train) = &s.train else {
        panic!()
    };
    assert_eq!(
        (train.len(), s.valid.len(), s.test.len()),
        (34_101, 8442, 8442)
    );
    // Training interactions: every interaction but the last two of each user.
    assert_eq!(s.item_counts().iter().sum::<u64>(), 59_427 - 2 * 8442);
    // The test history ends with the validation target, for every user.
    for (v, t) in s.valid.iter().zip(&s.test) {
        assert_eq!(v.user, t.user);
        assert_eq!(*t.event(0).0.last().unwrap(), v.event(0).1);
    }
    assert!(train.iter().all(|e| e.history.len() <= 50));
    // Split again by sequence, 8:1:1 by user. A user's sequence is its test row, so the few
    // users longer than the benchmark's 50-item history cap plus the target keep their last
    // 51 items: 43 of the 59,427 interactions are not recovered.
    let inter = p.interactions();
    assert_eq!(inter.n_interactions(), 59_427 - 43);
    assert!(inter.sequences.iter().all(|s| s.len() <= 51));
    let r = Dataset::Presplit(p.clone())
        .split(&SplitMethod::ratio_8_1_1())
        .unwrap();
    let TrainPart::Sequences(seqs) = &r.train else {
        panic!()
    };
    assert_eq!((seqs.len(), r.valid.len(), r.test.len()), (6753, 844, 845));
    assert!(
        Dataset::Presplit(p)
            .split(&SplitMethod::LeaveOneOut)
            .is_err()
    );
}

/// The most-popular baseline on ml-100k, leave-one-out, full ranking over the catalog: a
/// floor far below trained models (RecBole's GRU4Rec: HR@10 0.110 on the same files).
#[test]
fn ml_100k_popularity_baseline() {
    let Some(inter) = interactions("ml-100k") else {
        return;
    };
    let split: Split = seqrec_trainer::data::split(&inter, &SplitMethod::LeaveOneOut).unwrap();
    let pop = Popularity::from_split(&split);
    let all = "hr@10,ndcg@10,mrr@10,cv_div@10,cv_nov@10,r@10,up@10,hr_ser@10,ndcg_ser@10";
    let mut report = Vec::new();
    for (protocol, exclude) in [
        (Protocol::Full, false),
        (Protocol::Full, true),
        (Protocol::sampled_100(), false),
    ] {
        let opts = EvalOptions {
            metrics: parse_metrics(all).unwrap(),
            protocol,
            exclude_history: exclude,
            session_history_only: false,
        };
        let ev = Evaluator::new(&split, opts).unwrap();
        let r = ev.evaluate_par(&split.test, &pop).unwrap();
        eprintln!("ml-100k popularity, loo test, {protocol}, exclude_history={exclude}: {r}");
        assert_eq!(r.n_events, 943);
        report.push(r);
    }
    let full = &report[0];
    let hr = full.get("hr@10").unwrap();
    let ndcg = full.get("ndcg@10").unwrap();
    assert!(hr > 0.0 && hr < 0.08, "HR@10 {hr}");
    assert!(ndcg > 0.0 && ndcg < hr, "NDCG@10 {ndcg}");
    // One list for everyone: 10 items covered, none of them long tail, no repetition.
    assert_eq!(full.get("cv_div@10"), Some(10.0 / 1682.0));
    assert_eq!(full.get("cv_nov@10"), Some(0.0));
    assert_eq!(full.get("r@10"), Some(0.0));
    // The sampled protocol is far easier than the full ranking.
    assert!(report[2].get("hr@10").unwrap() > 2.0 * hr);
    let json = serde_json::to_string(full).unwrap();
    assert!(json.starts_with(r#"{"hr@10":"#), "{json}");
}
