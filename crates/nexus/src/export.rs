//! `nexus export` and `nexus verify`: the commit log as JSON lines, and its offline
//! verification, with a progress bar on stderr when stderr is a terminal or the work is
//! long.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nexus_client::{ClientError, Problem, VerifyError, VerifyOptions, VerifyReport};
use serde_json::{Value, json};

use crate::Global;
use crate::cli;

/// Entries (or bytes / 256) from which a non-terminal stderr still gets progress lines.
pub const LONG: u64 = 50_000;

/// Progress on stderr: an indicatif bar on a terminal; plain lines every few seconds
/// when stderr is not a terminal but the work is long; nothing otherwise.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    lines: Option<(String, Instant)>,
    total: u64,
}

impl Progress {
    pub(crate) fn new(total: u64, long: bool, what: &str, bytes: bool) -> Self {
        let tty = io::stderr().is_terminal();
        let bar = tty.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let template = if bytes {
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})"
            } else {
                "{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let lines = (!tty && long).then(|| (what.to_owned(), Instant::now()));
        Self { bar, lines, total }
    }

    pub(crate) fn set(&mut self, pos: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
        }
        if let Some((what, last)) = &mut self.lines
            && last.elapsed() >= Duration::from_secs(2)
        {
            eprintln!("{what}: {pos}/{}", self.total);
            *last = Instant::now();
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `nexus export [--out FILE]`.
pub fn export(g: &Global, out: Option<&Path>) -> Result<()> {
    let c = cli::client(g)?;
    let head = c.health()?.log_head;
    let mut progress = Progress::new(head, head >= LONG, "exporting", false);
    let mut n = 0u64;
    let entries = c.log_entries(1).inspect(|_| {
        n += 1;
        if n.is_multiple_of(256) {
            progress.set(n);
        }
    });
    let written = match out {
        Some(path) => {
            // Write beside, then rename: a failed export leaves no half file behind.
            let tmp = path.with_extension("partial");
            let file =
                File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            let written = nexus_client::export_to(&file, entries)?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written
        }
        None => {
            let stdout = io::stdout().lock();
            nexus_client::export_to(stdout, entries)?
        }
    };
    progress.finish();
    eprintln!(
        "exported {written} entries (log head {head}){}",
        out.map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// Reads the log of a server as export bytes, page by page.
struct LogReader<I> {
    entries: I,
    buf: Vec<u8>,
    pos: usize,
}

impl<I: Iterator<Item = Result<Value, ClientError>>> Read for LogReader<I> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<I: Iterator<Item = Result<Value, ClientError>>> BufRead for LogReader<I> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if let Some(entry) = self.entries.next() {
                let entry = entry.map_err(io::Error::other)?;
                serde_json::to_writer(&mut self.buf, &entry).map_err(io::Error::other)?;
                self.buf.push(b'\n');
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Page cache of the store a replay rebuilds.
const REPLAY_CACHE_BYTES: usize = 64 << 20;

/// Verifies `reader`; with `on_disk` a replay runs on a scratch redb store in a
/// temporary directory (removed after), so that its memory stays bounded however long
/// the log.
fn verify_reader(
    reader: impl BufRead,
    options: &VerifyOptions,
    on_disk: bool,
    progress: impl FnMut(u64),
) -> Result<Result<VerifyReport, VerifyError>> {
    if !(options.replay && on_disk) {
        return Ok(nexus_client::verify_export_with(reader, options, progress));
    }
    let dir = tempfile::Builder::new()
        .prefix("nexus-replay")
        .tempdir()
        .context("cannot create a temporary directory for the replay (set TMPDIR)")?;
    let store =
        nexus_store_redb::RedbStore::scratch(dir.path().join("replay.redb"), REPLAY_CACHE_BYTES)
            .context("cannot create the replay's store")?;
    Ok(nexus_client::verify_export_on(
        reader, options, store, progress,
    ))
}

/// Verifies the whole log of the server at `url` (page by page, with progress on a
/// long log): the outer error is a failure to read it, the inner one a broken entry.
pub fn verify_server(
    g: &Global,
    url: &str,
    options: &VerifyOptions,
    on_disk: bool,
) -> Result<Result<VerifyReport, VerifyError>> {
    let c = crate::cli::client_for(g, url)?;
    let head = c.health()?.log_head;
    let mut progress = Progress::new(head, head >= LONG, "verifying", false);
    let reader = LogReader {
        entries: c.log_entries(1),
        buf: Vec::new(),
        pos: 0,
    };
    let r = verify_reader(reader, options, on_disk, |n| progress.set(n))?;
    progress.finish();
    Ok(r)
}

/// The checkpoint options of `nexus verify`.
pub struct TlogArgs<'a> {
    /// A checkpoint file the log must match.
    pub checkpoint: Option<&'a Path>,
    /// The verifier key checkpoints must be signed by.
    pub log_key: Option<&'a str>,
    /// The server whose consistency proofs locate the first entry that differs when
    /// the entries do not match a checkpoint (`--server` given, or SOURCE a URL).
    pub locate: Option<&'a str>,
}

/// `nexus verify FILE|URL|DIR`: exits 0 with counts, or 1 naming the first broken entry.
pub fn verify(
    g: &Global,
    source: &str,
    replay: bool,
    threads: usize,
    on_disk: bool,
    tlog: &TlogArgs<'_>,
) -> Result<ExitCode> {
    let mut options = VerifyOptions {
        replay,
        threads,
        ..VerifyOptions::default()
    };
    if let Some(path) = tlog.checkpoint {
        let (_, cp) = crate::tlog_cmd::read_checkpoint(path, tlog.log_key)?;
        options.checkpoints.push(cp);
    }
    if Path::new(source).is_dir() {
        let dir = Path::new(source);
        let found = crate::tlog_cmd::archive_key_file(dir);
        let key = tlog.log_key.or(found.as_deref());
        return verify_archive_dir(g, dir, &options, on_disk, key);
    }
    let result = if source.starts_with("http://") || source.starts_with("https://") {
        verify_server(g, source, &options, on_disk)?
    } else {
        let read = Arc::new(AtomicU64::new(0));
        let (reader, size): (Box<dyn Read>, u64) = if source == "-" {
            (Box::new(io::stdin().lock()), 0)
        } else {
            let f = File::open(source).with_context(|| format!("cannot open {source}"))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(f), size)
        };
        let reader = BufReader::with_capacity(
            1 << 16,
            Counting {
                inner: reader,
                read: Arc::clone(&read),
            },
        );
        let mut progress = Progress::new(size, size >= LONG * 256, "verifying", true);
        let r = verify_reader(reader, &options, on_disk, |_| {
            progress.set(read.load(Ordering::Relaxed));
        })?;
        progress.finish();
        r
    };
    match result {
        Ok(report) => {
            print_report(g, source, &report, replay);
            Ok(ExitCode::SUCCESS)
        }
        Err(mut e) => {
            if let Problem::RootMismatch {
                size,
                first_difference,
                ..
            } = &mut *e.problem
                && let Some(url) = tlog.locate
                && let Some(cp) = options.checkpoints.iter().find(|c| c.size == *size)
            {
                match locate(g, url, source, cp) {
                    Ok(found) => {
                        *first_difference = found;
                        if let Some(seq) = found {
                            (e.line, e.seq) = (seq, Some(seq));
                        }
                    }
                    Err(why) => eprintln!(
                        "note: the first entry that differs was not located: {}",
                        crate::cli::chain_text(&why)
                    ),
                }
            }
            print_failure(g, source, &e);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The first seq of `source` (a file or a server URL) that differs from the log of
/// checkpoint `cp`, by bisection over the consistency proofs of the server at `url`.
fn locate(g: &Global, url: &str, source: &str, cp: &nexus_tlog::Checkpoint) -> Result<Option<u64>> {
    let limits = nexus_core::Limits::default();
    let ours = if source.starts_with("http://") || source.starts_with("https://") {
        let c = crate::cli::client_for(g, source)?;
        let reader = LogReader {
            entries: c.log_entries(1),
            buf: Vec::new(),
            pos: 0,
        };
        nexus_client::export_tree(reader, cp.size, &limits)
    } else {
        let f = File::open(source).with_context(|| format!("cannot open {source}"))?;
        nexus_client::export_tree(BufReader::new(f), cp.size, &limits)
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = crate::cli::client_for(g, url)?;
    nexus_client::first_difference(&ours, cp, |m, n| {
        let (_, p) = c.get_json(&format!("/v1/proof/consistency?from={m}&to={n}"))?;
        crate::tlog_cmd::hashes(&crate::tlog_cmd::proof_of(&p)?)
    })
}

/// `nexus verify DIR` of an archive directory: the manifest chain, each window's lines
/// (one per seq, in order), the concatenation of the archives as an export (what
/// `verify FILE` checks, errors named by archive and line), then each archive's length
/// and BLAKE3 against its manifest.
fn verify_archive_dir(
    g: &Global,
    dir: &Path,
    options: &VerifyOptions,
    on_disk: bool,
    log_key: Option<&str>,
) -> Result<ExitCode> {
    use nexus_core::archive::{archive_lines, check_archive_bytes};
    use nexus_store::BlobStore as _;
    let source = dir.display().to_string();
    let fail = |what: String| {
        eprintln!("error: {source} does not verify: {what}");
        if g.json {
            say!(
                "{}",
                json!({"ok": false, "source": source, "problem": what})
            );
        }
        Ok(ExitCode::FAILURE)
    };
    let blobs = crate::archive::DirBlobs::new(dir);
    let chain = match nexus_api::restore::read_chain(&blobs) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    // Every window's checkpoint is matched where it ends (refused if not signed by the
    // pinned key, else by the key the first one names).
    let mut options = options.clone();
    let origin = chain
        .windows
        .iter()
        .find_map(|m| m.checkpoint.as_ref()?.get("origin")?.as_str());
    let mut key = match origin {
        Some(o) => crate::tlog_cmd::pinned_key(log_key, o)?,
        None => None,
    };
    for m in &chain.windows {
        match m.verified_checkpoint(key.as_deref()) {
            Ok(Some((signed, cp))) => {
                key.get_or_insert(signed.log_key);
                options.checkpoints.push(cp);
            }
            Ok(None) => {}
            Err(e) => return fail(e.to_string()),
        }
    }
    let options = &options;
    let mut all = Vec::new();
    let mut starts = Vec::new();
    let mut archives = Vec::new();
    for m in &chain.windows {
        let Some(bytes) = blobs.get_blob(&m.archive)? else {
            return fail(format!("{} is missing", m.archive));
        };
        if let Err(e) = archive_lines(m, &bytes) {
            return fail(e.to_string());
        }
        starts.push(m.first);
        all.extend_from_slice(&bytes);
        archives.push(bytes);
    }
    let mut progress = Progress::new(
        all.len() as u64,
        all.len() as u64 >= LONG * 256,
        "verifying",
        true,
    );
    let r = verify_reader(io::Cursor::new(&all), options, on_disk, |_| {})?;
    progress.finish();
    match r {
        Ok(report) => {
            for (m, bytes) in chain.windows.iter().zip(&archives) {
                if let Err(e) = check_archive_bytes(m, bytes) {
                    return fail(e.to_string());
                }
            }
            progress.set(all.len() as u64);
            print_report(g, &source, &report, options.replay);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // Lines are seqs (checked above): the window holding line L has first <= L.
            let i = starts
                .partition_point(|first| *first <= e.line)
                .saturating_sub(1);
            let m = &chain.windows[i];
            fail(format!(
                "{} line {}{}: {}",
                m.archive,
                e.line + 1 - m.first,
                e.hash.map(|h| format!(" ({h})")).unwrap_or_default(),
                e.problem
            ))
        }
    }
}

fn print_report(g: &Global, source: &str, r: &VerifyReport, replay: bool) {
    if g.json {
        say!(
            "{}",
            json!({
                "ok": true, "source": source, "replayed": replay,
                "entries": r.lines, "head": r.head,
                "records": r.records, "intents": r.intents, "facts": r.facts,
                "resolving_facts": r.resolving_facts, "hints": r.hints,
                "actions": r.actions, "claims": r.claims, "renewals": r.renewals,
                "withdrawals": r.withdrawals, "retractions": r.retractions,
                "checkpoint_size": r.checkpoint_size,
            })
        );
        return;
    }
    if r.lines == 0 {
        say!("ok: the log is empty (no entries)");
        return;
    }
    say!(
        "ok: {} verified (seq 1..{}){}",
        count(r.lines, "entry", "entries"),
        r.head,
        if replay { ", lifecycle replayed" } else { "" }
    );
    say!(
        "  {}: {}, {} ({} resolving), {}",
        count(r.records, "record", "records"),
        count(r.intents, "intent", "intents"),
        count(r.facts, "fact", "facts"),
        r.resolving_facts,
        count(r.hints, "hint", "hints"),
    );
    let retractions = match r.retractions {
        0 => String::new(),
        n => format!(", {}", count(n, "retraction", "retractions")),
    };
    say!(
        "  {}: {}, {}, {}{retractions}",
        count(r.actions, "action", "actions"),
        count(r.claims, "claim", "claims"),
        count(r.renewals, "renewal", "renewals"),
        count(r.withdrawals, "withdrawal", "withdrawals"),
    );
    if let Some(size) = r.checkpoint_size {
        let past = match r.head - size {
            0 => String::new(),
            n => format!("; {} after it", count(n, "entry", "entries")),
        };
        say!("  matches the checkpoint of tree size {size} (seq 1..={size}){past}");
    }
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_failure(g: &Global, source: &str, e: &VerifyError) {
    eprintln!("error: {source} does not verify: {e}");
    if g.json {
        say!(
            "{}",
            json!({
                "ok": false, "source": source, "line": e.line, "seq": e.seq,
                "hash": e.hash.map(|h| h.to_string()), "problem": e.problem.to_string(),
            })
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_reader_yields_json_lines_and_errors() {
        let entries = vec![Ok(json!({"seq": 1})), Ok(json!({"seq": 2}))];
        let mut r = LogReader {
            entries: entries.into_iter(),
            buf: Vec::new(),
            pos: 0,
        };
        let mut s = String::new();
        r.read_to_string(&mut s).expect("read");
        assert_eq!(s, "{\"seq\":1}\n{\"seq\":2}\n");
    }
}
