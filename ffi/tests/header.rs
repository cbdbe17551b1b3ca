//! `include/seqrec.h` is what cbindgen (pinned in Cargo.toml) generates from this crate with
//! `ffi/cbindgen.toml`. Set `SEQREC_BLESS=1` to rewrite the header instead of failing.

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let header = crate_dir.join("../include/seqrec.h");
    if std::env::var_os("SEQREC_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("write include/seqrec.h");
        eprintln!("wrote {}", header.display());
        return;
    }
    let current = std::fs::read(&header).unwrap_or_default();
    if current != generated {
        let (old, new) = (
            String::from_utf8_lossy(&current),
            String::from_utf8_lossy(&generated),
        );
        let first = old
            .lines()
            .zip(new.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| old.lines().count().min(new.lines().count()));
        panic!(
            "include/seqrec.h is out of date (first difference at line {}: checked in {:?}, \
             generated {:?}); regenerate with `SEQREC_BLESS=1 cargo test -p seqrec-ffi --test \
             header`",
            first + 1,
            old.lines().nth(first).unwrap_or("<end of file>"),
            new.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}
