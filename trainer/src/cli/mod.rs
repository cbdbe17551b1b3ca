//! The `seqrec` command line. Output meant for machines is JSON on stdout with
//! `--format json`; errors are one line on stderr. Exit codes: 0 success, 2 bad input (bad
//! arguments, unreadable or invalid model, invalid ids), 1 internal failure.

mod bench;
mod bench_kernels;
mod convert;
mod defaults;
mod demo;
mod embed;
mod eval;
mod filter;
mod hier;
mod info;
mod item_text;
mod le;
mod objectives;
mod online;
mod pdit;
mod pdit_bench;
mod pdit_guide;
mod rl;
mod score;
mod train;
mod train_dt;
mod train_pdit;
mod train_state;
mod transrec;

use clap::{Parser, Subcommand, ValueEnum};
use std::fmt::Display;

/// Exit code for bad input.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for internal failures.
pub const EXIT_INTERNAL: i32 = 1;

/// A failure of a subcommand, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: i32,
    /// One-line message.
    pub message: String,
}

impl CliError {
    /// Bad input (exit 2).
    pub fn input(message: impl Display) -> Self {
        CliError {
            code: EXIT_BAD_INPUT,
            message: one_line(message),
        }
    }
    /// Internal failure (exit 1).
    pub fn internal(message: impl Display) -> Self {
        CliError {
            code: EXIT_INTERNAL,
            message: one_line(message),
        }
    }
}

fn one_line(message: impl Display) -> String {
    message.to_string().replace('\n', " ")
}

impl From<seqrec_engine::Error> for CliError {
    fn from(e: seqrec_engine::Error) -> Self {
        match e.root() {
            seqrec_engine::Error::Unsupported(_) => CliError::internal(e),
            _ => CliError::input(e),
        }
    }
}

/// Parses `--device`: `cpu`, `cuda` or `cuda:N`.
pub(crate) fn parse_device(s: &str) -> crate::Result<seqrec_engine::Device> {
    seqrec_engine::Device::parse(s)
        .ok_or_else(|| crate::Error::unknown_name("device", s, "cpu, cuda, cuda:N"))
}

/// Loads a model onto GPU `ordinal` (the engine's CUDA backend). A machine without CUDA, or
/// without that GPU, gets a one-line error naming what is missing (exit 2).
#[cfg(feature = "cuda")]
pub(crate) fn load_cuda(
    path: &std::path::Path,
    opts: &seqrec_engine::LoadOptions,
    ordinal: usize,
) -> Result<seqrec_engine::Model<seqrec_engine::Cuda>, CliError> {
    let gpu = seqrec_engine::Cuda::new(ordinal)?;
    Ok(seqrec_engine::Model::load_on(gpu, path, opts)?)
}

/// Without the `cuda` feature: the one-line error that says so.
#[cfg(not(feature = "cuda"))]
pub(crate) fn load_cuda(
    path: &std::path::Path,
    opts: &seqrec_engine::LoadOptions,
    ordinal: usize,
) -> Result<seqrec_engine::Model, CliError> {
    let _ = (path, opts);
    Err(CliError::input(format!(
        "--device cuda:{ordinal}: this seqrec was built without CUDA support (build it with \
         `--features cuda`)"
    )))
}

/// Result of a subcommand.
pub type CliResult = Result<(), CliError>;

/// Output format.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON on stdout.
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "seqrec",
    version,
    about = "Serve, train and benchmark sequential recommenders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job on an embedded default: synthetic log, train SASRec, evaluate against
    /// popularity, save, reload through the engine, recommend.
    Demo(demo::DemoArgs),
    /// Architecture, configuration, tensors and catalog size of a model file.
    Info(info::InfoArgs),
    /// Top-k recommendations for one history or a file of histories.
    Score(score::ScoreArgs),
    /// Accuracy and beyond-accuracy metrics on a data set (`MODEL` = `pop` for the most-popular
    /// baseline).
    Eval(eval::EvalArgs),
    /// Train a model with hand-derived gradients; saves the best validation checkpoint.
    #[command(after_long_help = defaults::table())]
    Train(Box<train::TrainArgs>),
    /// Time top-k scoring (latency percentiles and throughput) on random histories.
    Bench(bench::BenchArgs),
    /// Sentence embeddings of texts with a text encoder (all-MiniLM-L6-v2).
    Embed(embed::EmbedArgs),
    /// The id-aligned item-text embedding table of a dataset.
    EmbedItems(embed::EmbedItemsArgs),
    /// A servable model from a TransRec / IDRec checkpoint: every item's vector computed from
    /// the data set's texts (cold-start items included), for `score`, `eval` and the C ABI.
    ExportItems(transrec::ExportItemsArgs),
    /// PDiT, the personalised diffusion transformer: fixture replay, data files.
    Pdit(pdit::PditArgs),
    /// A PDiT's recommendations for one history: a sampled latent of the next item's text,
    /// and the catalog items closest to it.
    Generate(pdit::GenerateArgs),
    /// Convert a checkpoint of another framework to a safetensors model file (`recbole`:
    /// a RecBole `.pth`, read without PyTorch).
    Convert(convert::ConvertArgs),
    /// An agent learning online in a simulated environment (DQN, REINFORCE, A2C, iALP,
    /// A-iALP): learning curve, plot and the final agent.
    Rl(online::RlOnlineArgs),
    /// The learning curves of several `seqrec rl` runs in one PNG.
    RlPlot(online::RlPlotArgs),
    /// The language environment of the RL heads: its cache built, or the samples it covers
    /// listed for another program to write.
    Le(le::LeArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_INPUT } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match dispatch(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.code
        }
    }
}

thread_local! {
    /// Where [`out`] writes on this thread while [`run_captured`] runs (stdout otherwise).
    static CAPTURE: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs one command line in process (`args[0]` is the program name, as for `seqrec`) and
/// returns the lines it would print on stdout: how the Python package's `seqrec.train` and
/// `seqrec.evaluate` mirror the command line. Progress still goes to stderr.
pub fn run_captured<I, T>(args: I) -> Result<Vec<String>, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| CliError::input(e.to_string().trim_end()))?;
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let result = dispatch(cli);
    let lines = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    result.map(|()| lines)
}

fn dispatch(cli: Cli) -> CliResult {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Info(args) => info::run(args),
        Command::Score(args) => score::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Train(args) => train::run(*args),
        Command::Embed(args) => embed::run(args),
        Command::EmbedItems(args) => embed::run_items(args),
        Command::ExportItems(args) => transrec::export_items(args),
        Command::Pdit(args) => pdit::run(args),
        Command::Generate(args) => pdit::generate(args),
        Command::Convert(args) => convert::run(args),
        Command::Rl(args) => online::run(args),
        Command::RlPlot(args) => online::plot(args),
        Command::Le(args) => le::run(args),
    }
}

/// The value of `flag` among `options` (`name`, value), or an error that lists them.
pub(crate) fn choice<T: Copy>(
    flag: &str,
    given: &str,
    options: &[(&str, T)],
) -> Result<T, CliError> {
    options
        .iter()
        .find(|(name, _)| *name == given)
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|o| o.0).collect();
            CliError::input(format!(
                "{flag} `{given}` is not one of {}",
                names.join(", ")
            ))
        })
}

/// Writes a line to stdout; a closed pipe is not an error worth a panic.
pub(crate) fn out(line: impl Display) -> CliResult {
    use std::io::Write;
    let captured = CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some(lines) => {
            lines.push(line.to_string());
            true
        }
        None => false,
    });
    if captured {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}") {
        Ok(()) => Ok(()),
        // The reader went away (`seqrec ... | head`): stop quietly, as Unix tools do.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(CliError::internal(format!("writing to stdout: {e}"))),
    }
}
