//! Preference judges (`spec/thesis-models.md` §8.1, thesis Ch.7): given a user's history and a
//! short list of candidate items, a judge names the candidate the user most likely takes next,
//! or answers that the user would take none of them. iALP distils these verdicts into the
//! pre-training of its actor-critic ([`distil`]).
//!
//! - [`build_prompt`] writes the instruction-tuning prompt of Table 7.1 for a language model.
//! - [`CommandJudge`] asks an external program, one JSON line per query (a language model
//!   behind a small script).
//! - [`TextJudge`] is the built-in judge: the candidate whose text embedding lies nearest to the
//!   mean of the history's, or none when even that one is not near enough.

use super::env::Catalog;
use crate::nn::Rng;
use crate::objectives::Similarity;
use serde_json::{Value, json};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most candidates one question may offer (labels `a` to `j`).
pub const MAX_CANDIDATES: usize = 10;

/// Candidate labels, in order: the `i`-th candidate is labelled `LABELS[i]`.
pub const LABELS: [&str; MAX_CANDIDATES] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];

/// The answer that declines every candidate.
pub const NONE_LABEL: &str = "None";

/// Characters of a judge's answer (or standard error) quoted in an error message.
const EXCERPT_CHARS: usize = 200;

/// Bytes of one answer line a [`CommandJudge`] reads before it gives up on the line.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Bytes at the end of a [`CommandJudge`]'s standard error that are kept for error messages.
const STDERR_TAIL_BYTES: usize = 2048;

/// A judge's answer to one question.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The user takes this candidate next (an index into the question's candidates).
    Choice(usize),
    /// The user would take none of the candidates.
    None,
}

/// What can go wrong while asking a judge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JudgeError {
    /// The question is malformed: no candidates, more than [`MAX_CANDIDATES`], a repeated
    /// candidate, or an item id outside the catalog.
    #[error("{0}")]
    Question(String),
    /// A judge's setting is invalid (a vector table's shape, a zero timeout).
    #[error("{0}")]
    Invalid(String),
    /// The judge command could not be started.
    #[error("judge command `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// A query got no valid answer: the judge exited, closed its output, took longer than its
    /// timeout, or answered something that is not one of the question's labels.
    #[error("judge query {query}: {cause}")]
    Query {
        /// The query's number, counted from 1 over the judge's life.
        query: u64,
        /// What happened, with an excerpt of what came back.
        cause: String,
    },
    /// The text encoder could not be loaded or run.
    #[error("text encoder {dir}: {source}")]
    Encoder {
        /// The model folder.
        dir: String,
        /// The engine's error.
        #[source]
        source: seqrec_engine::Error,
    },
}

/// Something that names the candidate a user most likely takes next.
pub trait Judge: Send {
    /// The verdict on `candidates` (item ids, at most [`MAX_CANDIDATES`], distinct) for a user
    /// who has taken `history` (item ids, oldest first), with `catalog` describing the items.
    fn judge(
        &mut self,
        catalog: &Catalog,
        history: &[u32],
        candidates: &[u32],
    ) -> Result<Verdict, JudgeError>;
}

/// Checks a question: 1 to [`MAX_CANDIDATES`] distinct candidates, every id (candidates and
/// history) a real item `1..n_items`.
fn check_question(n_items: usize, history: &[u32], candidates: &[u32]) -> Result<(), JudgeError> {
    if candidates.is_empty() {
        return Err(JudgeError::Question(
            "a judge needs at least one candidate".into(),
        ));
    }
    if candidates.len() > MAX_CANDIDATES {
        return Err(JudgeError::Question(format!(
            "{} candidates: a judge takes at most {MAX_CANDIDATES} (labels a to j)",
            candidates.len()
        )));
    }
    let known = |id: u32| id != 0 && (id as usize) < n_items;
    if let Some(&id) = candidates.iter().find(|&&id| !known(id)) {
        return Err(JudgeError::Question(format!(
            "candidate {id} is not an item id (the catalog has items 1..{n_items})"
        )));
    }
    if let Some(&id) = history.iter().find(|&&id| !known(id)) {
        return Err(JudgeError::Question(format!(
            "history item {id} is not an item id (the catalog has items 1..{n_items})"
        )));
    }
    for (i, id) in candidates.iter().enumerate() {
        if candidates[..i].contains(id) {
            return Err(JudgeError::Question(format!(
                "candidate {id} is offered twice"
            )));
        }
    }
    Ok(())
}

/// An item's attribute text, or a placeholder when it has none.
fn item_text(catalog: &Catalog, id: u32) -> String {
    let text = catalog.describe(id);
    if text.is_empty() {
        "(no attributes)".to_string()
    } else {
        text
    }
}

/// The instruction-tuning prompt of Table 7.1 (§8.1) for one question.
///
/// Three parts: an instruction header; the task (the platform `{scenario}`, the item noun, the
/// attribute list, the user's `{behavior}`, and the rule: pick the candidate the user most
/// likely prefers next judging by those attributes, or answer `None`); and a response scaffold
/// with the history as attribute text, the question, the candidates labelled `a`, `b`, … plus
/// `None`, ending at `Answer:` where the model writes its label.
///
/// Errors: no candidates, more than [`MAX_CANDIDATES`], a repeated candidate, or an id (history
/// or candidate) outside `1..catalog.n_items()`.
pub fn build_prompt(
    catalog: &Catalog,
    history: &[u32],
    candidates: &[u32],
) -> Result<String, JudgeError> {
    check_question(catalog.n_items(), history, candidates)?;
    let scenario = &catalog.scenario;
    let item = &catalog.item_noun;
    let behavior = &catalog.behavior;
    let attributes = if catalog.attribute_names.is_empty() {
        "(none)".to_string()
    } else {
        catalog.attribute_names.join("; ")
    };

    let mut p = String::new();
    p.push_str("### Instruction:\n");
    p.push_str("Below is a task description. Complete the task.\n\n");
    p.push_str("### Input:\n");
    p.push_str(&format!(
        "On a {scenario} platform, a user is {behavior} one {item} after another. \
         Each {item} is described by these attributes: {attributes}.\n"
    ));
    p.push_str(&format!(
        "Given the {item} history of the user, pick the candidate {item} the user most likely \
         prefers next, judging by those attributes. If the user would choose none of the \
         candidates, answer \"{NONE_LABEL}\". Answer with one label only.\n\n"
    ));
    p.push_str("### Response:\n");
    if history.is_empty() {
        p.push_str(&format!(
            "The user has not been {behavior} any {item} yet.\n"
        ));
    } else {
        p.push_str(&format!(
            "The user has been {behavior} these {item} items, oldest first:\n"
        ));
        for (i, &id) in history.iter().enumerate() {
            p.push_str(&format!("{}. {}\n", i + 1, item_text(catalog, id)));
        }
    }
    p.push_str(&format!(
        "Which candidate {item} will the user choose next?\n"
    ));
    for (label, &id) in LABELS.iter().zip(candidates) {
        p.push_str(&format!("({label}) {}\n", item_text(catalog, id)));
    }
    p.push_str(&format!("({NONE_LABEL}) none of these\n"));
    p.push_str("Answer:");
    Ok(p)
}

/// §8.1's distillation of a verdict into an action and a reward: a choice gives that candidate
/// and reward 1; `None` gives a uniformly drawn candidate and reward 0.
///
/// # Panics
/// If `candidates` is empty, or a choice indexes past it (a verdict on another question).
pub fn distil(verdict: &Verdict, candidates: &[u32], rng: &mut Rng) -> (u32, f32) {
    match *verdict {
        Verdict::Choice(i) => (candidates[i], 1.0),
        Verdict::None => (candidates[rng.below(candidates.len())], 0.0),
    }
}

/// A short, one-line quotation of `text` for an error message.
fn excerpt(text: &str) -> String {
    let text = text.trim_end_matches(['\n', '\r']);
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    let cut = out.len() < text.len();
    out = out.escape_debug().to_string();
    if cut {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// The verdict a protocol answer line names, or why it names none.
fn parse_answer(line: &str, n_candidates: usize) -> Result<Verdict, String> {
    let value: Value = serde_json::from_str(line.trim())
        .map_err(|_| format!("the answer is not JSON: {}", excerpt(line)))?;
    let Some(choice) = value.get("choice").and_then(Value::as_str) else {
        return Err(format!(
            "the answer has no string `choice`: {}",
            excerpt(line)
        ));
    };
    let choice = choice.trim();
    if choice == NONE_LABEL {
        return Ok(Verdict::None);
    }
    match LABELS[..n_candidates].iter().position(|&l| l == choice) {
        Some(i) => Ok(Verdict::Choice(i)),
        None => Err(format!(
            "`{}` is not a label of the {n_candidates} candidates (a..{} or {NONE_LABEL}): {}",
            choice.escape_debug(),
            LABELS[n_candidates - 1],
            excerpt(line)
        )),
    }
}

/// What the threads around a [`CommandJudge`]'s child report.
#[derive(Debug)]
enum Event {
    /// One line of standard output.
    Answer(String),
    /// Standard output reached its end.
    Closed,
    /// A line of standard output was longer than [`MAX_ANSWER_BYTES`].
    TooLong,
    /// Reading standard output failed.
    ReadFailed(std::io::Error),
    /// Writing a query to standard input failed.
    WriteFailed(std::io::Error),
}

/// A judge behind an external command: a language model served by a script, for instance.
///
/// The command runs once, as `sh -c COMMAND`, for the judge's life. Each query is one JSON
/// object on a line of its standard input,
///
/// ```text
/// {"query": 1, "prompt": "...", "candidates": [{"label": "a", "id": 17, "text": "..."}, ...]}
/// ```
///
/// (`prompt` from [`build_prompt`], `text` from [`Catalog::describe`]), and the answer is one
/// line of its standard output, `{"choice": "a"}` … `{"choice": "j"}` within the candidates, or
/// `{"choice": "None"}`.
///
/// A query fails, with a message naming its number and what came back, when the command has
/// exited or closed its output, gives no answer within the timeout (the command is then
/// killed), or answers anything else. A failure stops the judge: later queries fail too. The
/// command's standard error is not shown; its last 2 KiB are quoted when it exits. The child is
/// killed when the judge is dropped; a compound command should `exec` its long-running program
/// so that the kill reaches it.
pub struct CommandJudge {
    command: String,
    timeout: Duration,
    child: Child,
    /// Query lines for the writer thread; dropping it closes the child's standard input.
    queries: Option<Sender<String>>,
    events: Receiver<Event>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    stderr_done: Receiver<()>,
    asked: u64,
    /// Why the judge stopped, once a query has failed.
    stopped: Option<String>,
}

impl fmt::Debug for CommandJudge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandJudge")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .field("pid", &self.child.id())
            .field("queries", &self.asked)
            .field("stopped", &self.stopped)
            .finish()
    }
}

impl CommandJudge {
    /// Starts `sh -c command`; each query waits at most `timeout` for its answer.
    pub fn spawn(command: &str, timeout: Duration) -> Result<CommandJudge, JudgeError> {
        if timeout.is_zero() {
            return Err(JudgeError::Invalid(
                "the judge's timeout must be positive".into(),
            ));
        }
        let spawn_error = |source| JudgeError::Spawn {
            command: command.to_string(),
            source,
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let missing = || spawn_error(std::io::Error::other("a standard stream was not piped"));
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => {
                    // The child would wait for input nobody sends; it is of no use.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(missing());
                }
            };

        let (event_tx, events) = mpsc::channel();
        let (query_tx, query_rx) = mpsc::channel::<String>();
        let writer_events = event_tx.clone();
        std::thread::spawn(move || write_queries(stdin, query_rx, writer_events));
        std::thread::spawn(move || read_answers(stdout, event_tx));
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, stderr_done) = mpsc::channel();
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || keep_stderr_tail(stderr, tail, done_tx));

        Ok(CommandJudge {
            command: command.to_string(),
            timeout,
            child,
            queries: Some(query_tx),
            events,
            stderr_tail,
            stderr_done,
            asked: 0,
            stopped: None,
        })
    }

    /// Queries asked so far (failed ones included).
    pub fn queries(&self) -> u64 {
        self.asked
    }

    /// The exit status once the child has exited, waiting at most `wait` for it.
    fn exit_status(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => return None,
            }
        }
    }

    /// The last lines of the child's standard error, as an error-message suffix (empty when
    /// it wrote none).
    fn stderr_suffix(&self) -> String {
        // The child has exited; its standard error ends as soon as the reader drains it.
        let _ = self.stderr_done.recv_timeout(Duration::from_millis(200));
        let tail = match self.stderr_tail.lock() {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(poisoned) => String::from_utf8_lossy(&poisoned.into_inner()).into_owned(),
        };
        let tail = tail.trim();
        if tail.is_empty() {
            return String::new();
        }
        // The end of standard error says most: quote its last characters.
        let skip = tail.chars().count().saturating_sub(EXCERPT_CHARS);
        let last: String = tail.chars().skip(skip).collect();
        format!("; its standard error ends with {}", excerpt(&last))
    }

    /// Why the child did not answer: it exited (with its status and standard error) or it only
    /// closed its output.
    fn gone(&mut self, what: &str) -> String {
        match self.exit_status(Duration::from_millis(500).min(self.timeout)) {
            Some(status) => format!("the judge exited ({status}) {what}{}", self.stderr_suffix()),
            None => format!("the judge closed its standard output {what}"),
        }
    }

    /// Kills the child and reaps it (errors ignored: it may have exited already).
    fn stop(&mut self) {
        self.queries = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends one query line and waits for the answer line.
    fn ask(&mut self, line: String) -> Result<String, String> {
        let Some(queries) = &self.queries else {
            return Err("the judge's input is closed".into());
        };
        if queries.send(line).is_err() {
            return Err(self.gone("before the query was sent"));
        }
        match self.events.recv_timeout(self.timeout) {
            Ok(Event::Answer(answer)) => Ok(answer),
            Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => {
                Err(self.gone("without answering"))
            }
            Ok(Event::WriteFailed(e)) => Err(self.gone(&format!("before reading the query ({e})"))),
            Ok(Event::ReadFailed(e)) => Err(format!("reading the judge's answer failed: {e}")),
            Ok(Event::TooLong) => Err(format!(
                "the answer line is longer than {MAX_ANSWER_BYTES} bytes"
            )),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "no answer within {:?}; the judge was stopped",
                self.timeout
            )),
        }
    }
}

impl Judge for CommandJudge {
    fn judge(
        &mut self,
        catalog: &Catalog,
        history: &[u32],
        candidates: &[u32],
    ) -> Result<Verdict, JudgeError> {
        let prompt = build_prompt(catalog, history, candidates)?;
        self.asked += 1;
        let query = self.asked;
        if let Some(why) = &self.stopped {
            return Err(JudgeError::Query {
                query,
                cause: format!("the judge was stopped earlier: {why}"),
            });
        }
        let listed: Vec<Value> = LABELS
            .iter()
            .zip(candidates)
            .map(|(label, &id)| json!({"label": label, "id": id, "text": catalog.describe(id)}))
            .collect();
        let line = json!({"query": query, "prompt": prompt, "candidates": listed}).to_string();
        let result = self
            .ask(line)
            .and_then(|answer| parse_answer(&answer, candidates.len()));
        result.map_err(|cause| {
            self.stop();
            self.stopped = Some(format!("query {query}: {cause}"));
            JudgeError::Query { query, cause }
        })
    }
}

impl Drop for CommandJudge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writer thread: sends each query line to the child, then closes its input.
fn write_queries(mut stdin: ChildStdin, queries: Receiver<String>, events: Sender<Event>) {
    for line in queries {
        let written = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush());
        if let Err(e) = written {
            let _ = events.send(Event::WriteFailed(e));
            return;
        }
    }
}

/// Reader thread: forwards each line of the child's output until it ends.
fn read_answers(stdout: impl Read, events: Sender<Event>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut buf = Vec::new();
        let event = match (&mut reader)
            .take(MAX_ANSWER_BYTES)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) => Event::Closed,
            Ok(n) if n as u64 == MAX_ANSWER_BYTES && buf.last() != Some(&b'\n') => Event::TooLong,
            Ok(_) => Event::Answer(String::from_utf8_lossy(&buf).into_owned()),
            Err(e) => Event::ReadFailed(e),
        };
        let last = !matches!(event, Event::Answer(_));
        if events.send(event).is_err() || last {
            return;
        }
    }
}

/// Standard-error thread: keeps the last [`STDERR_TAIL_BYTES`] bytes, then signals the end.
fn keep_stderr_tail(mut stderr: impl Read, tail: Arc<Mutex<Vec<u8>>>, done: Sender<()>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut buf) {
        let mut t = match tail.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        t.extend_from_slice(&buf[..n]);
        let excess = t.len().saturating_sub(STDERR_TAIL_BYTES);
        t.drain(..excess);
    }
    let _ = done.send(());
}

/// The built-in judge: one unit vector per item id (from a text encoder, or given); the verdict
/// is the candidate with the largest cosine to the mean of the history's vectors, or `None`
/// when that cosine is below the threshold (or the history is empty, giving nothing to compare
/// with).
#[derive(Clone)]
pub struct TextJudge {
    /// The row-normalised vectors (an all-zero row stays zero).
    table: Similarity,
    threshold: f32,
}

impl fmt::Debug for TextJudge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextJudge")
            .field("n_items", &self.n_items())
            .field("dim", &self.dim())
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl TextJudge {
    /// A judge over `vectors`, `[n_items, dim]` row-major by item id (row 0, the padding id, is
    /// never a candidate). Rows are scaled to unit length; an all-zero row stays zero (cosine 0
    /// to everything). `threshold` is the cosine below which the verdict is `None`.
    ///
    /// Errors: `dim` 0, a length that is not a multiple of `dim`, a non-finite value or a
    /// non-finite threshold.
    pub fn new(vectors: Vec<f32>, dim: usize, threshold: f32) -> Result<TextJudge, JudgeError> {
        if !threshold.is_finite() {
            return Err(JudgeError::Invalid(format!(
                "the judge's threshold {threshold} is not finite"
            )));
        }
        let table =
            Similarity::new(&vectors, dim).map_err(|e| JudgeError::Invalid(e.to_string()))?;
        Ok(TextJudge { table, threshold })
    }

    /// A judge whose vectors embed each item's attribute text ([`Catalog::describe`]) with the
    /// text encoder in `dir` (a sentence-transformers folder, as for `seqrec embed-items`).
    /// Items without attribute text get a zero vector.
    pub fn from_text_encoder(
        dir: &Path,
        catalog: &Catalog,
        threshold: f32,
    ) -> Result<TextJudge, JudgeError> {
        let encoder_error = |source| JudgeError::Encoder {
            dir: dir.display().to_string(),
            source,
        };
        let encoder = seqrec_engine::text::TextEncoder::load(dir).map_err(encoder_error)?;
        let dim = encoder.dim();
        let n = catalog.n_items();
        let mut vectors = vec![0.0f32; n * dim];
        let texts: Vec<(usize, String)> = (1..n)
            .map(|id| (id, catalog.describe(id as u32)))
            .filter(|(_, t)| !t.is_empty())
            .collect();
        const BATCH: usize = 256;
        let mut rows = vec![0.0f32; BATCH * dim];
        for chunk in texts.chunks(BATCH) {
            let batch: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
            let rows = &mut rows[..chunk.len() * dim];
            encoder
                .encode_batch_into(&batch, rows)
                .map_err(encoder_error)?;
            for ((id, _), row) in chunk.iter().zip(rows.chunks_exact(dim)) {
                vectors[id * dim..(id + 1) * dim].copy_from_slice(row);
            }
        }
        TextJudge::new(vectors, dim, threshold)
    }

    /// Items covered, including the padding id 0.
    pub fn n_items(&self) -> usize {
        self.table.n_items()
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.table.dim()
    }

    /// The cosine below which the verdict is `None`.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }
}

impl Judge for TextJudge {
    fn judge(
        &mut self,
        _catalog: &Catalog,
        history: &[u32],
        candidates: &[u32],
    ) -> Result<Verdict, JudgeError> {
        check_question(self.n_items(), history, candidates)?;
        let mut mean = vec![0.0f64; self.dim()];
        for &id in history {
            mean.iter_mut()
                .zip(self.table.row(id))
                .for_each(|(m, v)| *m += v);
        }
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Ok(Verdict::None);
        }
        let cosine = |id: u32| -> f64 {
            let dot: f64 = mean
                .iter()
                .zip(self.table.row(id))
                .map(|(m, v)| m * v)
                .sum();
            dot / norm
        };
        let mut best = (0, cosine(candidates[0]));
        for (i, &id) in candidates.iter().enumerate().skip(1) {
            let c = cosine(id);
            if c > best.1 {
                best = (i, c);
            }
        }
        Ok(if best.1 < f64::from(self.threshold) {
            Verdict::None
        } else {
            Verdict::Choice(best.0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six jackets (ids 1..=6) with a colour and a type; id 6 has no attributes.
    fn catalog() -> Catalog {
        let item = |c: &str, t: &str| vec![c.to_string(), t.to_string()];
        Catalog {
            scenario: "clothing".into(),
            item_noun: "jacket".into(),
            behavior: "buying".into(),
            attribute_names: vec!["colour".into(), "type".into()],
            attributes: vec![
                vec![],
                item("red", "parka"),
                item("blue", "bomber"),
                item("green", "denim"),
                item("black", "leather"),
                item("white", "rain"),
                item("", ""),
            ],
        }
    }

    #[test]
    fn prompt_has_the_task_history_candidates_and_none() {
        let c = catalog();
        let p = build_prompt(&c, &[1, 2], &[3, 4, 5]).unwrap();
        for part in [
            "### Instruction:",
            "complete the task",
            "clothing platform",
            "buying",
            "jacket",
            "colour; type",
            "answer \"None\"",
            "1. colour: red; type: parka",
            "2. colour: blue; type: bomber",
            "(a) colour: green; type: denim",
            "(b) colour: black; type: leather",
            "(c) colour: white; type: rain",
            "(None) none of these",
        ] {
            assert!(
                p.to_lowercase().contains(&part.to_lowercase()),
                "missing {part:?} in\n{p}"
            );
        }
        assert!(p.ends_with("Answer:"));
        assert!(!p.contains("(d)"));
        // The history comes before the question, the question before the candidates.
        let at = |s: &str| p.find(s).unwrap();
        assert!(at("1. colour: red") < at("Which candidate") && at("Which candidate") < at("(a)"));

        let empty = build_prompt(&c, &[], &[6]).unwrap();
        assert!(empty.contains("has not been buying any jacket"));
        assert!(empty.contains("(a) (no attributes)"));
    }

    #[test]
    fn prompt_rejects_bad_questions() {
        let c = catalog();
        let ten: Vec<u32> = (1..=6).cycle().take(11).collect();
        let msg = |h: &[u32], k: &[u32]| build_prompt(&c, h, k).unwrap_err().to_string();
        assert!(msg(&[1], &[]).contains("at least one candidate"));
        assert!(msg(&[1], &ten).contains("11 candidates"));
        assert!(msg(&[1], &[2, 7]).contains("candidate 7"));
        assert!(msg(&[1], &[0]).contains("candidate 0"));
        assert!(msg(&[9], &[2]).contains("history item 9"));
        assert!(msg(&[1], &[2, 3, 2]).contains("candidate 2 is offered twice"));
        // Ten is the most.
        let labels: Vec<u32> = (1..=10).collect();
        let mut big = catalog();
        big.attributes
            .resize(11, vec!["grey".into(), "coat".into()]);
        let p = build_prompt(&big, &[1], &labels).unwrap();
        assert!(p.contains("(j) ") && !p.contains("(k) "));
    }

    #[test]
    fn distil_rewards_a_choice_and_draws_for_none() {
        let mut rng = Rng::new(7);
        let cands = [11, 12, 13];
        assert_eq!(distil(&Verdict::Choice(1), &cands, &mut rng), (12, 1.0));
        let mut seen = [false; 3];
        for _ in 0..200 {
            let (item, reward) = distil(&Verdict::None, &cands, &mut rng);
            assert_eq!(reward, 0.0);
            let i = cands.iter().position(|&c| c == item).unwrap();
            seen[i] = true;
        }
        assert_eq!(seen, [true; 3], "None draws every candidate");
    }

    #[test]
    fn text_judge_picks_the_nearest_or_none_under_the_threshold() {
        let c = catalog();
        // Item vectors in 3-d: 1 and 2 near the x axis, 3 on x (scaled), 4 on y, 5 on z.
        #[rustfmt::skip]
        let vectors = vec![
            0.0, 0.0, 0.0,
            1.0, 0.1, 0.0,
            1.0, -0.1, 0.0,
            5.0, 0.0, 0.0,
            0.0, 1.0, 0.0,
            0.0, 0.0, 1.0,
            0.0, 0.0, 0.0,
        ];
        let mut judge = TextJudge::new(vectors.clone(), 3, 0.5).unwrap();
        assert_eq!(judge.n_items(), 7);
        assert_eq!(
            judge.judge(&c, &[1, 2], &[4, 3, 5]).unwrap(),
            Verdict::Choice(1)
        );
        assert_eq!(
            judge.judge(&c, &[4], &[3, 5, 4]).unwrap(),
            Verdict::Choice(2)
        );
        // Nothing near the x axis: below the threshold.
        assert_eq!(judge.judge(&c, &[1, 2], &[4, 5]).unwrap(), Verdict::None);
        // No history, or a history without vectors: nothing to compare with.
        assert_eq!(judge.judge(&c, &[], &[3]).unwrap(), Verdict::None);
        assert_eq!(judge.judge(&c, &[6], &[3]).unwrap(), Verdict::None);
        // A threshold below -1 always chooses.
        let mut any = TextJudge::new(vectors, 3, -2.0).unwrap();
        assert_eq!(any.judge(&c, &[1, 2], &[4, 5]).unwrap(), Verdict::Choice(0));
        assert!(
            any.judge(&c, &[1], &[7])
                .unwrap_err()
                .to_string()
                .contains("candidate 7")
        );

        assert!(TextJudge::new(vec![0.0; 7], 3, 0.5).is_err());
        assert!(TextJudge::new(vec![0.0; 6], 0, 0.5).is_err());
        assert!(TextJudge::new(vec![f32::NAN; 6], 3, 0.5).is_err());
        assert!(TextJudge::new(vec![0.0; 6], 3, f32::NAN).is_err());
    }

    #[test]
    fn text_judge_from_the_text_encoder() {
        let Some(dir) = crate::nn::text::minilm_dir("text_judge_from_the_text_encoder") else {
            return;
        };
        let c = catalog();
        let mut judge = TextJudge::from_text_encoder(&dir, &c, 0.0).unwrap();
        assert_eq!(judge.n_items(), c.n_items());
        // The item without attribute text has no vector.
        assert!(judge.table.row(6).iter().all(|&v| v == 0.0));
        let v = judge.judge(&c, &[1], &[2, 3, 4, 5]).unwrap();
        assert!(matches!(v, Verdict::Choice(_)), "{v:?}");
        let missing = TextJudge::from_text_encoder(Path::new("/nonexistent"), &c, 0.0);
        assert!(missing.unwrap_err().to_string().contains("/nonexistent"));
    }

    /// A shell script in a fresh temporary folder, and the command that runs it.
    fn script(name: &str, body: &str) -> String {
        let dir = std::env::temp_dir().join(format!("seqrec-judge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.sh"));
        std::fs::write(&path, body).unwrap();
        format!("sh '{}'", path.display())
    }

    fn spawn(name: &str, body: &str, timeout_ms: u64) -> CommandJudge {
        CommandJudge::spawn(&script(name, body), Duration::from_millis(timeout_ms)).unwrap()
    }

    #[test]
    fn command_judge_answers_and_sends_the_protocol() {
        let c = catalog();
        // Answers `b` and keeps every query line for inspection.
        let log = std::env::temp_dir().join(format!("seqrec-judge-log-{}", std::process::id()));
        let body = format!(
            "while read -r line; do printf '%s\\n' \"$line\" >> '{}'; \
             echo '{{\"choice\": \"b\"}}'; done\n",
            log.display()
        );
        let mut judge = spawn("valid", &body, 5000);
        assert_eq!(
            judge.judge(&c, &[1], &[3, 4, 5]).unwrap(),
            Verdict::Choice(1)
        );
        assert_eq!(
            judge.judge(&c, &[1, 4], &[2, 5]).unwrap(),
            Verdict::Choice(1)
        );
        assert_eq!(judge.queries(), 2);
        drop(judge);
        let lines = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first["query"], 1);
        assert_eq!(
            first["prompt"].as_str().unwrap(),
            build_prompt(&c, &[1], &[3, 4, 5]).unwrap()
        );
        let cands = first["candidates"].as_array().unwrap();
        assert_eq!(cands.len(), 3);
        assert_eq!(cands[1]["label"], "b");
        assert_eq!(cands[1]["id"], 4);
        assert_eq!(cands[1]["text"], "colour: black; type: leather");

        let mut none = spawn(
            "none",
            "while read -r l; do echo '{\"choice\":\"None\"}'; done",
            5000,
        );
        assert_eq!(none.judge(&c, &[1], &[2]).unwrap(), Verdict::None);
    }

    fn failure(judge: &mut CommandJudge, candidates: &[u32]) -> String {
        judge
            .judge(&catalog(), &[1], candidates)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn command_judge_that_exits_is_an_error() {
        let mut judge = spawn("exits", "echo 'no model here' >&2; exit 3", 5000);
        let msg = failure(&mut judge, &[2, 3]);
        assert!(msg.starts_with("judge query 1: the judge exited"), "{msg}");
        assert!(
            msg.contains("exit status: 3") && msg.contains("no model here"),
            "{msg}"
        );
        // The judge stays stopped.
        let again = failure(&mut judge, &[2, 3]);
        assert!(
            again.starts_with("judge query 2: the judge was stopped earlier: query 1"),
            "{again}"
        );
    }

    #[test]
    fn command_judge_that_hangs_is_killed_at_the_timeout() {
        let mut judge = spawn("hangs", "while read -r l; do sleep 5; done", 200);
        let start = Instant::now();
        let msg = failure(&mut judge, &[2, 3]);
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(
            msg.starts_with("judge query 1: no answer within 200ms"),
            "{msg}"
        );
        assert!(
            judge.child.try_wait().unwrap().is_some(),
            "the judge was killed"
        );
    }

    #[test]
    fn command_judge_that_answers_garbage_is_an_error() {
        // A valid first answer, then text that is not JSON.
        let body = "n=0; while read -r l; do n=$((n+1)); \
                    if [ $n -ge 2 ]; then echo 'I think the user likes (b)'; \
                    else echo '{\"choice\": \"a\"}'; fi; done";
        let mut judge = spawn("garbage", body, 5000);
        assert_eq!(
            judge.judge(&catalog(), &[1], &[2, 3]).unwrap(),
            Verdict::Choice(0)
        );
        let msg = failure(&mut judge, &[2, 3]);
        assert!(
            msg.starts_with("judge query 2: the answer is not JSON"),
            "{msg}"
        );
        assert!(msg.contains("I think the user likes (b)"), "{msg}");

        let mut judge = spawn(
            "nochoice",
            "while read -r l; do echo '{\"pick\": \"a\"}'; done",
            5000,
        );
        let msg = failure(&mut judge, &[2, 3]);
        assert!(
            msg.starts_with("judge query 1: the answer has no string `choice`"),
            "{msg}"
        );

        let long = format!("while read -r l; do echo '{}'; done", "x".repeat(500));
        let mut judge = spawn("long", &long, 5000);
        let msg = failure(&mut judge, &[2, 3]);
        assert!(msg.contains('…') && msg.len() < 400, "{msg}");
    }

    #[test]
    fn command_judge_label_beyond_the_candidates_is_an_error() {
        let mut judge = spawn(
            "beyond",
            "while read -r l; do echo '{\"choice\": \"d\"}'; done",
            5000,
        );
        let msg = failure(&mut judge, &[2, 3, 4]);
        assert!(
            msg.starts_with("judge query 1: `d` is not a label of the 3 candidates"),
            "{msg}"
        );
        assert!(msg.contains("a..c or None"), "{msg}");
    }

    #[test]
    fn command_judge_rejects_a_zero_timeout_and_names_a_failed_question() {
        assert!(CommandJudge::spawn("cat", Duration::ZERO).is_err());
        let mut judge = spawn(
            "idle",
            "while read -r l; do echo '{\"choice\": \"a\"}'; done",
            5000,
        );
        let msg = failure(&mut judge, &[]);
        assert!(msg.contains("at least one candidate"), "{msg}");
        // A malformed question is not sent and does not stop the judge.
        assert_eq!(
            judge.judge(&catalog(), &[1], &[2]).unwrap(),
            Verdict::Choice(0)
        );
    }
}
