//! `seqrec`: the command-line tool. See `seqrec --help`.

fn main() {
    std::process::exit(seqrec_trainer::cli::main());
}
