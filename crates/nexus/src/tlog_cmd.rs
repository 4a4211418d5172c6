//! `nexus checkpoint`, `nexus proof`, and the transparency-log checks of `nexus verify`
//! (`--checkpoint`, `--inclusion`, `--consistent`): spec/tlog.md, "Checking the log".
//!
//! A checkpoint file is the JSON `GET /v1/checkpoint` answers ([`SignedCheckpoint`]:
//! the signed note and the verifier key the host names); a bare signed note is read
//! too when `--log-key` gives the key. A proof file ([`InclusionFile`]) is a log
//! entry, its inclusion proof and the checkpoint the proof is against: it is checked
//! with no network.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use nexus_client::Client;
use nexus_core::Limits;
use nexus_tlog::{Checkpoint, Hash, SignedCheckpoint};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Global;

/// What an offline inclusion proof file holds (`nexus proof`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionFile {
    /// The entry's seq.
    pub seq: u64,
    /// The log entry, as `GET /v1/log` and `nexus export` write it.
    pub entry: Value,
    /// The RFC 9162 inclusion proof of leaf `seq - 1` in the tree of the checkpoint's
    /// size, standard base64 hashes, leaf side first.
    pub proof: Vec<String>,
    /// The checkpoint the proof is against.
    pub checkpoint: SignedCheckpoint,
}

/// The verifier key `--log-key` names: a verifier key (`<origin>+<id>+<key>`), or the
/// path of a log key file (a data directory's `log.key`), whose key is named by
/// `origin`. `None` without `--log-key`.
pub fn pinned_key(arg: Option<&str>, origin: &str) -> Result<Option<String>> {
    let Some(arg) = arg else { return Ok(None) };
    let path = Path::new(arg);
    if path.is_file() {
        let signer = crate::logkey::load(path)?
            .signer(origin)
            .with_context(|| format!("origin {origin:?} names no log key"))?;
        return Ok(Some(signer.verifier_key()));
    }
    nexus_tlog::parse_verifier_key(arg).with_context(|| {
        format!("--log-key {arg:?} is neither a verifier key nor a log key file")
    })?;
    Ok(Some(arg.to_owned()))
}

/// The key an archive directory's checkpoints are checked against without
/// `--log-key`: the `log.key` of the data directory it lies in (`DATA/archive`, the
/// default place), when there is one.
pub fn archive_key_file(dir: &Path) -> Option<String> {
    let file = dir.parent()?.join(crate::logkey::FILE);
    file.is_file().then(|| file.to_string_lossy().into_owned())
}

/// Verifies `cp` under the pinned key, else under the key it names.
pub fn verify_signed(cp: &SignedCheckpoint, log_key: Option<&str>) -> Result<Checkpoint> {
    let key = pinned_key(log_key, &cp.origin)?;
    cp.verify(key.as_deref()).with_context(|| {
        format!(
            "the checkpoint of {} at size {} is refused",
            cp.origin, cp.size
        )
    })
}

/// Reads and verifies a checkpoint file (JSON, or a bare signed note with `--log-key`).
pub fn read_checkpoint(
    path: &Path,
    log_key: Option<&str>,
) -> Result<(SignedCheckpoint, Checkpoint)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let signed = match serde_json::from_str::<SignedCheckpoint>(&text) {
        Ok(cp) => cp,
        Err(json) => {
            let Some(arg) = log_key else {
                bail!(
                    "{} is not a checkpoint file ({json}); a bare signed note needs --log-key",
                    path.display()
                );
            };
            let origin = text.lines().next().unwrap_or_default();
            let key = pinned_key(Some(arg), origin)?.unwrap_or_default();
            let cp = nexus_tlog::verify_checkpoint(&text, &key)
                .with_context(|| format!("the checkpoint {} is refused", path.display()))?;
            SignedCheckpoint {
                origin: cp.origin.clone(),
                size: cp.size,
                root: cp.root.to_string(),
                log_key: key,
                checkpoint: text,
            }
        }
    };
    let cp = verify_signed(&signed, log_key)
        .with_context(|| format!("{} does not verify", path.display()))?;
    Ok((signed, cp))
}

/// The server's current checkpoint, verified (under the pinned key, else the one it names).
fn fetch_checkpoint(c: &Client, log_key: Option<&str>) -> Result<(SignedCheckpoint, Checkpoint)> {
    let (_, v) = c
        .get_json("/v1/checkpoint")
        .context("cannot get the checkpoint")?;
    let signed: SignedCheckpoint =
        serde_json::from_value(v).context("the server's checkpoint is not a checkpoint")?;
    let cp = verify_signed(&signed, log_key)?;
    Ok((signed, cp))
}

/// Writes `value` as pretty JSON to `out` (beside, then renamed) or standard output.
fn write_json(out: Option<&Path>, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode")?;
    match out {
        Some(path) => {
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, format!("{text}\n"))
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            say!("{text}");
            Ok(())
        }
    }
}

fn unpinned_note(log_key: Option<&str>, cp: &SignedCheckpoint) {
    if log_key.is_none() {
        eprintln!(
            "note: signed by the key the server names, {}: compare it with the key you \
             trust (`nexus serve` logs it) and pin it with --log-key",
            cp.log_key
        );
    }
}

/// `nexus checkpoint [--out FILE] [--log-key VKEY]`.
pub fn checkpoint(g: &Global, out: Option<&Path>, log_key: Option<&str>) -> Result<()> {
    let c = crate::cli::client(g)?;
    let (signed, cp) = fetch_checkpoint(&c, log_key)?;
    write_json(out, &signed)?;
    eprintln!(
        "checkpoint of {} at size {} (root {}){}",
        cp.origin,
        cp.size,
        cp.root,
        out.map(|p| format!(" saved to {}", p.display()))
            .unwrap_or_default()
    );
    unpinned_note(log_key, &signed);
    Ok(())
}

/// The hashes of a proof, from base64.
pub fn hashes(proof: &[String]) -> Result<Vec<Hash>> {
    proof
        .iter()
        .map(|h| nexus_tlog::hash_from_base64(h).with_context(|| format!("{h:?} is not a hash")))
        .collect()
}

/// The `proof` member of a server's proof answer.
pub fn proof_of(v: &Value) -> Result<Vec<String>> {
    serde_json::from_value(v["proof"].clone()).context("the server's proof is not a list of hashes")
}

/// Checks an inclusion file; answers the verified checkpoint.
fn check_inclusion(file: &InclusionFile, log_key: Option<&str>) -> Result<Checkpoint> {
    let cp = verify_signed(&file.checkpoint, log_key)?;
    let line = serde_json::to_vec(&file.entry).unwrap_or_default();
    let (seq, leaf) = nexus_client::verify::line_leaf(&line, &Limits::default())
        .map_err(|e| anyhow::anyhow!("the entry does not verify: {}", e.problem))?;
    if seq != file.seq {
        bail!("the entry is seq {seq}, the proof is for seq {}", file.seq);
    }
    if seq == 0 {
        bail!("seq 0 is no log entry");
    }
    nexus_tlog::verify_inclusion(&hashes(&file.proof)?, cp.size, cp.root, seq - 1, leaf).map_err(
        |e| {
            anyhow::anyhow!(
                "seq {seq} is not shown in the log of {} at size {}: {e}",
                cp.origin,
                cp.size
            )
        },
    )?;
    Ok(cp)
}

/// `nexus proof --seq N [--out FILE] [--log-key VKEY]`.
pub fn proof(g: &Global, seq: u64, out: Option<&Path>, log_key: Option<&str>) -> Result<()> {
    let c = crate::cli::client(g)?;
    let (signed, cp) = fetch_checkpoint(&c, log_key)?;
    if seq == 0 || seq > cp.size {
        bail!(
            "seq {seq} is not in the checkpoint of {} (entries 1..={})",
            cp.origin,
            cp.size
        );
    }
    let entry = c
        .log_entries(seq)
        .next()
        .with_context(|| format!("the server has no log entry {seq}"))??;
    let (_, p) = c
        .get_json(&format!("/v1/proof/inclusion?seq={seq}&size={}", cp.size))
        .context("cannot get the inclusion proof")?;
    let file = InclusionFile {
        seq,
        entry,
        proof: proof_of(&p)?,
        checkpoint: signed,
    };
    // A proof that does not verify is not worth keeping.
    check_inclusion(&file, log_key).context("the server's proof is refused")?;
    write_json(out, &file)?;
    eprintln!(
        "inclusion proof of seq {seq} in the log of {} at size {}{}",
        cp.origin,
        cp.size,
        out.map(|p| format!(" saved to {}", p.display()))
            .unwrap_or_default()
    );
    unpinned_note(log_key, &file.checkpoint);
    Ok(())
}

fn refused(g: &Global, source: &str, e: &anyhow::Error) -> ExitCode {
    let what = crate::cli::chain_text(e);
    eprintln!("error: {source} does not verify: {what}");
    if g.json {
        say!(
            "{}",
            json!({"ok": false, "source": source, "problem": what})
        );
    }
    ExitCode::FAILURE
}

/// `nexus verify --inclusion FILE [--log-key VKEY]`: offline.
pub fn verify_inclusion(g: &Global, path: &Path, log_key: Option<&str>) -> Result<ExitCode> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {source}"))?;
    let file: InclusionFile = serde_json::from_str(&text)
        .with_context(|| format!("{source} is not an inclusion proof (`nexus proof`)"))?;
    match check_inclusion(&file, log_key) {
        Ok(cp) => {
            if g.json {
                say!(
                    "{}",
                    json!({"ok": true, "source": source, "seq": file.seq, "origin": cp.origin,
                           "size": cp.size, "root": cp.root.to_string()})
                );
            } else {
                say!(
                    "ok: seq {} is in the log of {} at size {} (root {})",
                    file.seq,
                    cp.origin,
                    cp.size,
                    cp.root
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(refused(g, &source, &e)),
    }
}

/// `nexus verify --consistent OLD [--checkpoint NEW] [--log-key VKEY]`: the newer
/// checkpoint (NEW, else the server's current one) must be signed by the key (pinned,
/// else OLD's) and the server's consistency proof must show OLD's tree a prefix of it.
pub fn verify_consistent(
    g: &Global,
    old_path: &Path,
    new_path: Option<&Path>,
    log_key: Option<&str>,
) -> Result<ExitCode> {
    let source = old_path.display().to_string();
    let run = || -> Result<(Checkpoint, Checkpoint)> {
        let (old_signed, old) = read_checkpoint(old_path, log_key)?;
        // The key of the checkpoint the user kept is the one the newer one must bear.
        let key = match pinned_key(log_key, &old.origin)? {
            Some(k) => k,
            None => old_signed.log_key.clone(),
        };
        let c = crate::cli::client(g)?;
        let new = match new_path {
            Some(p) => read_checkpoint(p, Some(&key))?.1,
            None => fetch_checkpoint(&c, Some(&key))?.1,
        };
        if new.size < old.size {
            bail!(
                "the newer checkpoint has size {}, smaller than the old one's {}",
                new.size,
                old.size
            );
        }
        let (_, p) = c
            .get_json(&format!(
                "/v1/proof/consistency?from={}&to={}",
                old.size, new.size
            ))
            .context("cannot get the consistency proof")?;
        nexus_tlog::verify_consistency(
            &hashes(&proof_of(&p)?)?,
            old.size,
            old.root,
            new.size,
            new.root,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "the log at size {} does not extend the checkpoint at size {} (root {}): {e}",
                new.size,
                old.size,
                old.root
            )
        })?;
        Ok((old, new))
    };
    match run() {
        Ok((old, new)) => {
            if g.json {
                say!(
                    "{}",
                    json!({"ok": true, "source": source, "origin": new.origin,
                           "old_size": old.size, "new_size": new.size,
                           "new_root": new.root.to_string()})
                );
            } else {
                say!(
                    "ok: the log of {} at size {} (root {}) extends the checkpoint at size {}",
                    new.origin,
                    new.size,
                    new.root,
                    old.size
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(refused(g, &source, &e)),
    }
}
