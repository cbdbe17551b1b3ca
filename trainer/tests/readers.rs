//! Every reader on small files written to a temporary directory: contents, id maps, ordering,
//! format detection, and errors that name the file and line.

use seqrec_trainer::data::{
    AtomicOptions, DataFormat, Dataset, FieldValue, SplitMethod, TrainPart, detect, load, locate,
    read_atomic, read_benchmark, read_movielens, read_sasrec_txt,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("seqrec-readers-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asserts that `err` mentions every fragment.
fn assert_mentions(err: impl std::fmt::Display, fragments: &[&str]) {
    let msg = err.to_string();
    for f in fragments {
        assert!(msg.contains(f), "error `{msg}` does not mention `{f}`");
    }
}

fn tokens(inter: &seqrec_trainer::data::Interactions, user: &str) -> Vec<String> {
    let u = inter.users.id(user).unwrap() as usize;
    inter.sequences[u]
        .iter()
        .map(|&i| inter.items.token(i).unwrap().to_string())
        .collect()
}

const INTER: &str = "timestamp:float\titem_id:token\tuser_id:token\trating:float\n\
                     30\tb\tu1\t4\n\
                     10\ta\tu1\t3\n\
                     5\tc\tu2\t5\n\
                     30\td\tu1\t1\n\
                     \n\
                     20\tc\tu1\t2\r\n";

#[test]
fn recbole_atomic_files() {
    let d = TempDir::new("atomic");
    d.write("toy.inter", INTER);
    d.write(
        "toy.item",
        "item_id:token\ttitle:token_seq\tyear:float\ttags:float_seq\n\
         a\tThe A Movie\t1999\t1 2\n\
         z\tOnly Listed\t\t\n",
    );
    d.write("toy.user", "user_id:token\tage:token\nu2\t30\n");
    let inter = read_atomic(d.path(), "toy", &AtomicOptions::default()).unwrap();
    // Columns found by name in any order; ids in order of first appearance, padding at 0.
    assert_eq!(inter.items.tokens(), ["[PAD]", "b", "a", "c", "d", "z"]);
    assert_eq!(inter.users.tokens(), ["[PAD]", "u1", "u2"]);
    // Sorted by time; the tie at t=30 keeps file order (b before d).
    assert_eq!(tokens(&inter, "u1"), ["a", "c", "b", "d"]);
    assert_eq!(
        inter.timestamps.as_ref().unwrap()[1],
        [10.0, 20.0, 30.0, 30.0]
    );
    assert_eq!(inter.ratings.as_ref().unwrap()[1], [3.0, 2.0, 4.0, 1.0]);
    assert_eq!(
        (inter.n_users(), inter.n_items(), inter.n_interactions()),
        (3, 6, 5)
    );
    assert_eq!(inter.n_interacted_items(), 4);
    let items = inter.item_features.as_ref().unwrap();
    let a = inter.items.id("a").unwrap();
    assert_eq!(
        items.get(a, "title").unwrap().text().unwrap(),
        "The A Movie"
    );
    assert_eq!(items.get(a, "year"), Some(&FieldValue::Float(1999.0)));
    assert_eq!(
        items.get(a, "tags"),
        Some(&FieldValue::FloatSeq(vec![1.0, 2.0]))
    );
    let z = inter.items.id("z").unwrap();
    assert!(matches!(items.get(z, "year"), Some(FieldValue::Float(v)) if v.is_nan()));
    assert_eq!(items.get(inter.items.id("b").unwrap(), "title"), None);
    let users = inter.user_features.as_ref().unwrap();
    assert_eq!(users.get(2, "age"), Some(&FieldValue::Token("30".into())));
    // Detection and loading by format name give the same thing.
    let src = detect(d.path()).unwrap();
    assert_eq!(
        (src.format, src.name.as_str()),
        (DataFormat::Recbole, "toy")
    );
    let Dataset::Interactions(again) = load(d.path(), Some(DataFormat::Recbole)).unwrap() else {
        panic!("expected interactions")
    };
    assert_eq!(again.sequences, inter.sequences);
    let by_file = locate(&d.path().join("toy.inter"), DataFormat::Recbole).unwrap();
    assert_eq!(by_file.name, "toy");
}

#[test]
fn recbole_without_timestamps_keeps_file_order() {
    let d = TempDir::new("notime");
    d.write(
        "x.inter",
        "user_id:token\titem_id:token\n1\t9\n1\t3\n2\t3\n1\t5\n",
    );
    let inter = read_atomic(d.path(), "x", &AtomicOptions::default()).unwrap();
    assert_eq!(tokens(&inter, "1"), ["9", "3", "5"]);
    assert!(inter.timestamps.is_none() && inter.ratings.is_none());
    let e = seqrec_trainer::data::split(&inter, &SplitMethod::sessions_60min()).unwrap_err();
    assert_mentions(e, &["timestamps"]);
}

#[test]
fn recbole_errors_name_file_and_line() {
    let cases: &[(&str, &[&str])] = &[
        // Column count.
        (
            "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t2\n",
            &["bad.inter:3", "expected 3 fields, found 2"],
        ),
        // Unparsable and non-finite timestamps.
        (
            "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tabc\n",
            &["bad.inter:2", "timestamp", "`abc`"],
        ),
        (
            "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t5\n1\t2\tinf\n",
            &["bad.inter:3", "`inf`"],
        ),
        // Unknown column type, missing type, duplicate name.
        (
            "user_id:int\titem_id:token\n1\t2\n",
            &["bad.inter:1", "user_id:int", "unknown column type `int`"],
        ),
        (
            "user_id\titem_id:token\n1\t2\n",
            &["bad.inter:1", "`user_id`", "name:type"],
        ),
        (
            "user_id:token\tuser_id:token\n1\t2\n",
            &["bad.inter:1", "duplicate"],
        ),
        // Missing required column, wrong type for a role, empty id.
        (
            "user_id:token\trating:float\n1\t2\n",
            &[
                "bad.inter",
                "missing required column `item_id`",
                "user_id:token, rating:float",
            ],
        ),
        (
            "user_id:token\titem_id:token\ttimestamp:token\n1\t2\t3\n",
            &["bad.inter", "`timestamp`", "expected `float`"],
        ),
        (
            "user_id:token\titem_id:token\n1\t\n",
            &["bad.inter:2", "`item_id` is empty"],
        ),
        // No rows at all.
        (
            "user_id:token\titem_id:token\n",
            &["bad.inter", "no interactions"],
        ),
    ];
    for (text, fragments) in cases {
        let d = TempDir::new("bad");
        d.write("bad.inter", text);
        let e = read_atomic(d.path(), "bad", &AtomicOptions::default()).unwrap_err();
        assert_mentions(e, fragments);
    }
    // A bad side file.
    let d = TempDir::new("badside");
    d.write("ok.inter", "user_id:token\titem_id:token\n1\t2\n");
    d.write("ok.item", "item_id:token\tyear:float\n2\t19x9\n");
    let e = read_atomic(d.path(), "ok", &AtomicOptions::default()).unwrap_err();
    assert_mentions(e, &["ok.item:2", "year", "`19x9`"]);
    // A missing file.
    let e = read_atomic(d.path(), "absent", &AtomicOptions::default()).unwrap_err();
    assert_mentions(e, &["absent.inter"]);
}

#[test]
fn recbole_benchmark_files() {
    let d = TempDir::new("bench");
    let h = "user_id:token\titem_id_list:token_seq\titem_id:token\n";
    d.write(
        "S.train.inter",
        &format!("{h}0\t10 11 12\t13\n0\t10 11\t12\n0\t10\t11\n1\t20\t21\n"),
    );
    d.write(
        "S.valid.inter",
        &format!("{h}0\t10 11 12 13\t14\n1\t20 21\t22\n"),
    );
    d.write(
        "S.test.inter",
        &format!("{h}0\t10 11 12 13 14\t15\n1\t20 21 22\t23\n"),
    );
    let src = detect(d.path()).unwrap();
    assert_eq!(
        (src.format, src.name.as_str()),
        (DataFormat::RecboleBenchmark, "S")
    );
    let p = read_benchmark(d.path(), "S", &AtomicOptions::default()).unwrap();
    assert_eq!(p.items.tokens()[1..5], ["10", "11", "12", "13"]);
    let s = &p.split;
    let TrainPart::Examples(train) = &s.train else {
        panic!("given examples")
    };
    assert_eq!(train.len(), 4);
    let id = |t: &str| p.items.id(t).unwrap();
    assert_eq!(train[0].history, [id("10"), id("11"), id("12")]);
    assert_eq!(train[0].target, id("13"));
    assert_eq!((s.valid.len(), s.test.len()), (2, 2));
    let (hist, target) = s.test[0].event(0);
    assert_eq!(hist.len(), 5);
    assert_eq!(target, id("15"));
    // Training popularity: shortest history (10) plus every target (13, 12, 11) for user 0,
    // and 20 + 21 for user 1.
    let counts = s.item_counts();
    assert_eq!(counts.iter().sum::<u64>(), 6);
    assert_eq!(counts[id("14") as usize], 0);
    // The given split refuses other methods.
    let ds = load(d.path(), None).unwrap();
    assert_eq!(ds.default_split_method(), SplitMethod::Given);
    assert_mentions(
        ds.split(&SplitMethod::LeaveOneOut).unwrap_err(),
        &["already split"],
    );
    assert_eq!(ds.split(&SplitMethod::Given).unwrap(), p.split);
    // A ratio split re-splits the longest sequence shown per user (here the test ones).
    let Dataset::Presplit(pre) = &ds else {
        panic!("a benchmark")
    };
    let inter = pre.interactions();
    let longest: Vec<usize> = s.test.iter().map(|e| e.items.len()).collect();
    assert_eq!(inter.n_interactions(), longest.iter().sum::<usize>());
    let r = ds.split(&SplitMethod::ratio_8_1_1()).unwrap();
    assert_eq!(r.n_items, s.n_items);
    // Errors: a missing history column, an empty history.
    d.write("S.valid.inter", "user_id:token\titem_id:token\n0\t1\n");
    assert_mentions(
        load(d.path(), None).unwrap_err(),
        &["S.valid.inter", "missing required column `item_id_list`"],
    );
    d.write("S.valid.inter", &format!("{h}0\t10\t11\n0\t \t11\n"));
    assert_mentions(
        load(d.path(), None).unwrap_err(),
        &["S.valid.inter:3", "`item_id_list` is empty"],
    );
}

#[test]
fn sasrec_text_file() {
    let d = TempDir::new("sasrec");
    let f = d.write("Beauty.txt", "1 5\n1 3\n2 5\n\n1\t7\n");
    let inter = read_sasrec_txt(&f).unwrap();
    assert_eq!(tokens(&inter, "1"), ["5", "3", "7"]);
    assert!(inter.timestamps.is_none());
    assert_eq!(detect(d.path()).unwrap().format, DataFormat::SasrecTxt);
    assert_eq!(detect(&f).unwrap().format, DataFormat::SasrecTxt);
    d.write("Bad.txt", "1 5\n1 3 9\n");
    assert_mentions(
        read_sasrec_txt(&d.path().join("Bad.txt")).unwrap_err(),
        &["Bad.txt:2", "expected 2 fields, found 3"],
    );
    // Two candidate files: detection gives up and says why.
    assert_mentions(
        detect(d.path()).unwrap_err(),
        &["cannot detect", "Bad.txt, Beauty.txt"],
    );
}

#[test]
fn movielens_100k_files() {
    let d = TempDir::new("ml100k");
    d.write(
        "u.data",
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t4\t881250940\n",
    );
    let flags = |set: &[usize]| {
        (0..19)
            .map(|i| if set.contains(&i) { "1" } else { "0" })
            .collect::<Vec<_>>()
            .join("|")
    };
    d.write(
        "u.item",
        &format!(
            "242|Kolya (1996)|24-Jan-1997||http://x|{}\n302|L.A. Confidential (1997)|01-Jan-1997||http://y|{}\n1|Toy Story (1995)|01-Jan-1995||http://z|{}\n",
            flags(&[5]),
            flags(&[6, 13, 16]),
            flags(&[3, 4, 5])
        ),
    );
    d.write(
        "u.user",
        "196|49|M|writer|55105\n186|39|F|executive|00000\n",
    );
    assert_eq!(detect(d.path()).unwrap().format, DataFormat::Movielens);
    let inter = read_movielens(d.path()).unwrap();
    assert_eq!(tokens(&inter, "196"), ["302", "242"], "sorted by timestamp");
    assert_eq!(inter.ratings.as_ref().unwrap()[1], [4.0, 3.0]);
    assert_eq!(inter.items.tokens(), ["[PAD]", "242", "302", "1"]);
    let items = inter.item_features.as_ref().unwrap();
    let genres = items.get(inter.items.id("302").unwrap(), "genres").unwrap();
    assert_eq!(genres.text().unwrap(), "Crime Mystery Thriller");
    assert_eq!(
        items.get(3, "movie_title").unwrap().text().unwrap(),
        "Toy Story (1995)"
    );
    let users = inter.user_features.as_ref().unwrap();
    assert_eq!(
        users.get(1, "occupation"),
        Some(&FieldValue::Token("writer".into()))
    );
    // Errors.
    d.write("u.data", "196\t242\t3\t881250949\n186\t302\tx\t891717742\n");
    assert_mentions(
        read_movielens(d.path()).unwrap_err(),
        &["u.data:2", "rating", "`x`"],
    );
    d.write("u.data", "196\t242\t3\n");
    assert_mentions(
        read_movielens(d.path()).unwrap_err(),
        &["u.data:1", "expected 4 fields, found 3"],
    );
    d.write("u.data", "196\t242\t3\t881250949\n");
    d.write("u.item", "242|Kolya (1996)|24-Jan-1997\n");
    assert_mentions(
        read_movielens(d.path()).unwrap_err(),
        &["u.item:1", "expected 24 fields, found 3"],
    );
}

#[test]
fn movielens_csv_files() {
    let d = TempDir::new("mlcsv");
    d.write(
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,11,4.0,964982703\n1,29,3.5,964981247\n2,11,5.0,1\n",
    );
    d.write(
        "movies.csv",
        "movieId,title,genres\n11,\"American President, The (1995)\",Comedy|Drama|Romance\n29,\"City of Lost Children, The (Cité des enfants perdus, La) (1995)\",Adventure\n5,Nothing (2000),(no genres listed)\n",
    );
    d.write("README.txt", "not data\n");
    assert_eq!(detect(d.path()).unwrap().format, DataFormat::Movielens);
    let inter = read_movielens(&d.path().join("ratings.csv")).unwrap();
    assert_eq!(tokens(&inter, "1"), ["29", "11"]);
    assert_eq!(
        (inter.n_users(), inter.n_items(), inter.n_interactions()),
        (3, 4, 3)
    );
    let items = inter.item_features.as_ref().unwrap();
    let t = items
        .get(inter.items.id("29").unwrap(), "title")
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        t,
        "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    );
    assert_eq!(items.get(3, "genres"), Some(&FieldValue::TokenSeq(vec![])));
    // Errors.
    d.write(
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,11,4.0,964982703\n1,29,3.5\n",
    );
    assert_mentions(
        read_movielens(d.path()).unwrap_err(),
        &["ratings.csv:3", "expected 4 fields, found 3"],
    );
    d.write("ratings.csv", "userId,item,rating,timestamp\n1,11,4.0,9\n");
    assert_mentions(
        read_movielens(d.path()).unwrap_err(),
        &["ratings.csv", "missing required column `movieId`"],
    );
    d.write(
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,11,4.0,9\n",
    );
    d.write("movies.csv", "movieId,title,genres\n11,\"Open,Drama\n");
    assert_mentions(
        read_movielens(d.path()).unwrap_err(),
        &["movies.csv:2", "unterminated"],
    );
}

#[test]
fn detection_failures() {
    let d = TempDir::new("empty");
    assert_mentions(
        detect(d.path()).unwrap_err(),
        &["empty directory", "--data-format"],
    );
    d.write("notes.md", "x");
    assert_mentions(detect(d.path()).unwrap_err(), &["notes.md"]);
    assert_mentions(
        locate(d.path(), DataFormat::Movielens).unwrap_err(),
        &["u.data"],
    );
    assert_mentions(
        load(&d.path().join("missing"), None).unwrap_err(),
        &["missing"],
    );
}
