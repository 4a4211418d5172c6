//! The client verbs of `nexus`: Intents, Facts, Hints, `show` and `log`, signed with
//! the local key and sent to `--server`. Text for people by default; `--json` prints
//! one JSON document.

use anyhow::{Context, Result, bail};
use nexus_client::builders::{self, now_ms};
use nexus_client::http::IntentQuery;
use nexus_client::{Client, ClientError, KeyFile};
use nexus_core::{Action, ActionContent, Content, Effect, FihHash, IntentState, Limits, Record};
use serde_json::{Value, json};

use crate::{FactCmd, Global, HintCmd, IntentCmd};

/// Parses a duration with a unit: `1500ms`, `30s`, `5m`, `2h`; answers milliseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit: write e.g. 30s, 1500ms, 5m or 1h"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}: use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// A duration in ms, for people (`30s`, `1500ms`, `2m5s`).
pub fn fmt_duration(ms: u64) -> String {
    if !ms.is_multiple_of(1_000) || ms == 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1_000;
    match (s / 3_600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// ms since the Unix epoch as UTC, `2026-11-25 06:40:00.123Z`.
pub fn fmt_time(ms: u64) -> String {
    let secs = ms / 1_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60,
        ms % 1_000
    )
}

pub(crate) fn short(h: &impl std::fmt::Display) -> String {
    let s = h.to_string();
    s.chars().take(12).collect()
}

/// Writes a line to stdout (the `say!` macro). A closed pipe (`nexus log | head -1`) ends
/// the process quietly with success; any other write error ends it with failure.
/// Never panics, unlike `println!`.
pub fn say(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Prints an error: the server's status, code and message (and its details) for people
/// on stderr; with `--json` also `{"error":{…}}` on stdout.
pub fn report_error(e: &anyhow::Error, json: bool) {
    eprintln!("error: {}", chain_text(e));
    let api = e
        .chain()
        .find_map(|c| c.downcast_ref::<ClientError>())
        .and_then(ClientError::api);
    if let Some(api) = api {
        let mut details = api.details.as_object().cloned().unwrap_or_default();
        details.retain(|_, v| !v.is_null());
        if !details.is_empty() {
            let text: Vec<String> = details
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect();
            eprintln!("  {}", text.join(" "));
        }
    }
    if json {
        let doc = match api {
            Some(api) => {
                let mut o = api.details.as_object().cloned().unwrap_or_default();
                o.insert("status".into(), json!(api.status));
                o.insert("code".into(), json!(api.code));
                o.insert("message".into(), json!(api.message));
                json!({"error": o})
            }
            None => json!({"error": {"code": "client", "message": format!("{e:#}")}}),
        };
        say!("{doc}");
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the
/// previous one already ends with (a client error repeats the server's).
pub fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The signing key: `--key`, else the default key file.
pub fn load_key(g: &Global) -> Result<KeyFile> {
    match &g.key {
        Some(p) => KeyFile::load(p).with_context(|| format!("cannot load the key {}", p.display())),
        None => {
            KeyFile::load_default().context("cannot load your key (make one with `nexus keygen`)")
        }
    }
}

/// A client for `--server`.
pub fn client(g: &Global) -> Result<Client> {
    client_for(g, &g.server)
}

/// A client for the server at `url`, trusting `--ca-cert` and sending `--token-file`.
pub fn client_for(g: &Global, url: &str) -> Result<Client> {
    let mut c = Client::new(url)?;
    if let Some(path) = &g.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
        c = c
            .with_ca_pem(&pem)
            .with_context(|| format!("cannot use the CA certificate {}", path.display()))?;
    }
    if let Some(path) = &g.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let token = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .with_context(|| format!("the token file {} holds no token", path.display()))?;
        c = c.with_bearer_token(token);
    }
    Ok(c)
}

/// A full hash from a full hash or a prefix (≥ 8 hex digits), asking the server.
pub fn resolve(c: &Client, id: &str) -> Result<FihHash> {
    if id.len() == 64
        && let Ok(h) = id.parse()
    {
        return Ok(h);
    }
    Ok(c.record(id)
        .with_context(|| format!("cannot resolve the id {id:?}"))?
        .record
        .hash())
}

fn resolve_all(c: &Client, ids: &[String]) -> Result<Vec<FihHash>> {
    ids.iter().map(|i| resolve(c, i)).collect()
}

fn parse_body(body: Option<&str>) -> Result<Value> {
    match body {
        None => Ok(json!({})),
        Some(b) => serde_json::from_str(b).with_context(|| format!("--body is not JSON: {b}")),
    }
}

pub(crate) fn out(g: &Global, doc: Value, text: impl FnOnce() -> String) {
    if g.json {
        say!("{doc}");
    } else {
        say!("{}", text());
    }
}

fn submitted(g: &Global, c: &Client, record: &Record) -> Result<()> {
    let s = c.submit(record)?;
    let kind = s.kind.as_str();
    out(
        g,
        json!({"hash": s.hash, "kind": kind, "duplicate": s.duplicate, "seq": s.seq}),
        || match s.seq {
            Some(seq) if !s.duplicate => format!("{kind} {} committed (seq {seq})", s.hash),
            _ => format!("{kind} {} was already committed (nothing changed)", s.hash),
        },
    );
    Ok(())
}

fn leased(g: &Global, verb: &str, l: nexus_client::http::Leased) {
    let left = l.lease_until.saturating_sub(now_ms());
    out(
        g,
        json!({"intent": l.intent, "token": l.token, "lease_until": l.lease_until, "takeover": l.takeover}),
        || {
            format!(
                "{verb} {}{}\n  token {}  lease until {} (in {})",
                l.intent,
                if l.takeover {
                    " (took over a lapsed claim)"
                } else {
                    ""
                },
                l.token,
                fmt_time(l.lease_until),
                fmt_duration(left / 1_000 * 1_000),
            )
        },
    );
}

/// `nexus intent …`.
pub fn intent(g: &Global, cmd: IntentCmd) -> Result<()> {
    let c = client(g)?;
    match cmd {
        IntentCmd::Propose {
            topic,
            body,
            parents,
        } => {
            let key = load_key(g)?;
            let body = parse_body(body.as_deref())?;
            let parents = resolve_all(&c, &parents)?;
            let r = builders::propose(key.key(), &topic, body, &parents)?;
            submitted(g, &c, &r)
        }
        IntentCmd::Claim { id, lease } => {
            let key = load_key(g)?;
            let intent = resolve(&c, &id)?;
            let l = c.claim(&builders::claim(
                key.key(),
                &c.deployment()?,
                intent,
                lease,
            )?)?;
            leased(g, "claimed", l);
            Ok(())
        }
        IntentCmd::Renew { id, token, lease } => {
            let key = load_key(g)?;
            let intent = resolve(&c, &id)?;
            let d = c.deployment()?;
            let l = c.renew(&builders::renew(key.key(), &d, intent, token, lease)?)?;
            leased(g, "renewed", l);
            Ok(())
        }
        IntentCmd::Withdraw { id } => {
            let key = load_key(g)?;
            let intent = resolve(&c, &id)?;
            let w = c.withdraw(&builders::withdraw(key.key(), &c.deployment()?, intent)?)?;
            out(g, json!({"intent": w.intent, "state": w.state}), || {
                format!("withdrew {}", w.intent)
            });
            Ok(())
        }
        IntentCmd::List {
            state,
            topic,
            limit,
        } => {
            let page = c.intents(&IntentQuery {
                state,
                topic,
                limit,
                cursor: None,
            })?;
            let doc = json!({
                "intents": page.intents.iter().map(|i| json!({
                    "record": i.record.to_value(),
                    "state": i.state,
                    "priority": i.priority,
                })).collect::<Vec<_>>(),
                "next": page.next,
            });
            out(g, doc, || {
                if page.intents.is_empty() {
                    return "no intents".into();
                }
                let mut s = format!(
                    "{:<12}  {:<9}  {:>8}  {:<12}  topic",
                    "id", "state", "priority", "author"
                );
                for i in &page.intents {
                    let topic = i
                        .record
                        .content()
                        .topic()
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    s.push_str(&format!(
                        "\n{:<12}  {:<9}  {:>8}  {:<12}  {topic}{}",
                        short(&i.record.hash()),
                        i.state.name(),
                        i.priority,
                        short(i.record.author()),
                        state_note(&i.state),
                    ));
                }
                if page.next.is_some() {
                    s.push_str("\n(more: raise --limit)");
                }
                s
            });
            Ok(())
        }
    }
}

fn state_note(s: &IntentState) -> String {
    match s {
        IntentState::Available { .. } | IntentState::Withdrawn { .. } => String::new(),
        IntentState::Claimed {
            holder,
            lease_until,
            token,
        } => format!(
            "  (held by {} until {}, token {token})",
            short(holder),
            fmt_time(*lease_until)
        ),
        IntentState::Resolved { fact, token, .. } => {
            format!("  (by fact {}, token {token})", short(fact))
        }
    }
}

/// `nexus fact …`.
pub fn fact(g: &Global, cmd: FactCmd) -> Result<()> {
    let c = client(g)?;
    match cmd {
        FactCmd::Submit {
            topic,
            body,
            parents,
            resolves,
            token,
        } => {
            let key = load_key(g)?;
            let body = parse_body(body.as_deref())?;
            let parents = resolve_all(&c, &parents)?;
            let resolves = match (resolves, token) {
                (Some(id), Some(t)) => Some((resolve(&c, &id)?, t)),
                (None, None) => None,
                _ => bail!("--resolves and --token go together"),
            };
            let r = builders::fact(key.key(), &topic, body, &parents, resolves)?;
            submitted(g, &c, &r)
        }
    }
}

fn describe_effect(e: &Effect) -> String {
    match e {
        Effect::Deny => "deny".into(),
        Effect::Allow => "allow".into(),
        Effect::Priority(p) => format!("priority {p:+}"),
    }
}

/// `nexus hint …`.
pub fn hint(g: &Global, cmd: HintCmd) -> Result<()> {
    let c = client(g)?;
    match cmd {
        HintCmd::Add {
            deny,
            allow,
            priority,
            topic,
            where_,
            reason,
            expires_in,
        } => {
            let key = load_key(g)?;
            let effect = match (deny, allow, priority) {
                (true, false, None) => Effect::Deny,
                (false, true, None) => Effect::Allow,
                (false, false, Some(p)) => Effect::Priority(p),
                _ => bail!("give exactly one of --deny, --allow, --priority N"),
            };
            let body = where_
                .as_deref()
                .map(|w| {
                    serde_json::from_str(w).with_context(|| format!("--where is not JSON: {w}"))
                })
                .transpose()?;
            let selector = builders::selector(topic.as_deref(), body)?;
            let now = now_ms();
            let r = builders::hint_at(
                key.key(),
                selector,
                effect,
                &reason,
                None,
                expires_in.map(|d| now + d),
                now,
            )?;
            submitted(g, &c, &r)
        }
        HintCmd::List => {
            let hints = c.hints()?;
            let doc = json!({"hints": hints.iter().map(|h| json!({"hash": h.hash, "hint": h.hint.to_value()})).collect::<Vec<_>>()});
            out(g, doc, || {
                if hints.is_empty() {
                    return "no hints in force".into();
                }
                let mut s = String::new();
                for h in &hints {
                    let Some(hint) = h.content() else { continue };
                    let mut sel = Vec::new();
                    if let Some(t) = &hint.selector.topic {
                        sel.push(format!("topic {t}"));
                    }
                    if let Some(b) = &hint.selector.body {
                        sel.push(format!("where {}", Value::Object(b.clone())));
                    }
                    if sel.is_empty() {
                        sel.push("every intent".into());
                    }
                    if !s.is_empty() {
                        s.push('\n');
                    }
                    s.push_str(&format!(
                        "{}  {:<12}  {}  — {}{}",
                        short(&h.hash),
                        describe_effect(&hint.effect),
                        sel.join(", "),
                        hint.reason,
                        hint.expires
                            .map(|e| format!(" (expires {})", fmt_time(e)))
                            .unwrap_or_default()
                    ));
                }
                s
            });
            Ok(())
        }
        HintCmd::Retract { id } => {
            let key = load_key(g)?;
            let hint = resolve(&c, &id)?;
            let r = c.retract(&builders::retract(key.key(), &c.deployment()?, hint)?)?;
            out(g, json!({"hint": r.hint, "seq": r.seq}), || {
                format!("retracted {}", r.hint)
            });
            Ok(())
        }
    }
}

pub(crate) fn describe_record(r: &Record) -> String {
    let content = r.content();
    let mut s = format!(
        "{} {}\n  author  {}\n  time    {}",
        content.kind().as_str(),
        r.hash(),
        r.author(),
        fmt_time(content.time())
    );
    match content {
        Content::Intent(i) => {
            s.push_str(&format!("\n  topic   {}\n  body    {}", i.topic, i.body));
        }
        Content::Fact(f) => {
            s.push_str(&format!("\n  topic   {}\n  body    {}", f.topic, f.body));
            if let Some(res) = &f.resolves {
                s.push_str(&format!(
                    "\n  resolves {} (token {})",
                    res.intent, res.token
                ));
            }
        }
        Content::Hint(h) => {
            s.push_str(&format!(
                "\n  effect  {}\n  reason  {}",
                describe_effect(&h.effect),
                h.reason
            ));
            if let Some(t) = &h.selector.topic {
                s.push_str(&format!("\n  topic   {t}"));
            }
            if let Some(b) = &h.selector.body {
                s.push_str(&format!("\n  where   {}", Value::Object(b.clone())));
            }
            if let Some(e) = h.expires {
                s.push_str(&format!("\n  expires {}", fmt_time(e)));
            }
        }
    }
    s
}

/// `nexus show ID`: the record and its parents (every link).
pub fn show(g: &Global, id: &str) -> Result<()> {
    let c = client(g)?;
    let info = c.record(id)?;
    let parents = info
        .parents
        .iter()
        .map(|p| c.record(&p.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let doc = json!({
        "record": info.record.to_value(),
        "kind": info.kind,
        "parents": info.parents,
        "parent_records": parents.iter().map(|p| p.record.to_value()).collect::<Vec<_>>(),
    });
    out(g, doc, || {
        let mut s = describe_record(&info.record);
        if parents.is_empty() {
            s.push_str("\n  parents (none)");
        } else {
            s.push_str("\n  parents");
            for p in &parents {
                let topic = p
                    .record
                    .content()
                    .topic()
                    .map(|t| format!(" {t}"))
                    .unwrap_or_default();
                s.push_str(&format!(
                    "\n    {} {}{topic}",
                    p.record.hash(),
                    p.kind.as_str()
                ));
            }
        }
        s
    });
    Ok(())
}

/// One log entry in a line, for people.
pub fn describe_entry(entry: &Value) -> String {
    let limits = Limits::default();
    let seq = entry.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let at = entry
        .get("at")
        .and_then(Value::as_u64)
        .map(fmt_time)
        .unwrap_or_default();
    let what = if let Some(r) = entry.get("record") {
        match Record::from_value(r.clone(), &limits) {
            Ok(r) => {
                let c = r.content();
                let mut s = format!("{:<8} {}", c.kind().as_str(), short(&r.hash()));
                if let Some(t) = c.topic() {
                    s.push_str(&format!(" {t}"));
                }
                if let Content::Fact(f) = c
                    && let Some(res) = &f.resolves
                {
                    s.push_str(&format!(
                        " resolves {} (token {})",
                        short(&res.intent),
                        res.token
                    ));
                }
                if let Content::Hint(h) = c {
                    s.push_str(&format!(" {}", describe_effect(&h.effect)));
                }
                s.push_str(&format!(" by {}", short(r.author())));
                s
            }
            Err(e) => format!("record (invalid: {e})"),
        }
    } else if let Some(a) = entry.get("action") {
        match Action::from_value(a.clone(), &limits) {
            Ok(a) => match a.content() {
                ActionContent::Claim {
                    intent, lease_ms, ..
                } => format!(
                    "{:<8} {} by {} for {}",
                    "claim",
                    short(intent),
                    short(a.author()),
                    fmt_duration(*lease_ms)
                ),
                ActionContent::Renew {
                    intent,
                    token,
                    lease_ms,
                    ..
                } => format!(
                    "{:<8} {} by {} token {token} for {}",
                    "renew",
                    short(intent),
                    short(a.author()),
                    fmt_duration(*lease_ms)
                ),
                ActionContent::Withdraw { intent: on, .. }
                | ActionContent::Retract { hint: on, .. } => format!(
                    "{:<8} {} by {}",
                    a.content().kind(),
                    short(on),
                    short(a.author())
                ),
            },
            Err(e) => format!("action (invalid: {e})"),
        }
    } else {
        "(unknown entry)".into()
    };
    format!("{seq:>6}  {at}  {what}")
}

/// `nexus log`.
pub fn log(g: &Global, from: u64, limit: Option<u32>) -> Result<()> {
    let c = client(g)?;
    let page = c.log(from, limit)?;
    let doc = json!({"head": page.head, "entries": page.entries});
    out(g, doc, || {
        let mut s = String::new();
        for e in &page.entries {
            s.push_str(&describe_entry(e));
            s.push('\n');
        }
        let last = page
            .entries
            .last()
            .and_then(|e| e.get("seq"))
            .and_then(Value::as_u64);
        match last {
            Some(l) if l < page.head => {
                s.push_str(&format!("(head {}; more with --from {})", page.head, l + 1))
            }
            _ => s.push_str(&format!("(head {})", page.head)),
        }
        s
    });
    Ok(())
}

/// `nexus watch [--topic GLOB] [--from SEQ]`: prints log entries as they commit
/// (`--json`: one JSON line each), following the server's event stream, and resumes
/// after the last one printed when the connection breaks. Runs until interrupted;
/// a refused request (a bad topic, no token) ends it with the API's error.
pub fn watch(g: &Global, topic: Option<&str>, from: Option<u64>) -> Result<()> {
    use std::io::Write as _;
    let c = client(g)?;
    // Default: what commits from now on.
    let mut next = match from {
        Some(f) => f,
        None => c.health()?.log_head + 1,
    };
    let mut stdout = std::io::stdout();
    let mut retry = std::time::Duration::from_millis(250);
    loop {
        let mut stream = match c.events(next, topic) {
            Ok(s) => s,
            // Busy (rate limited, too many streams): wait and try again.
            Err(e) if matches!(e.status(), Some(429 | 503)) => {
                eprintln!("watch: {e}; retrying in {retry:?}");
                std::thread::sleep(retry);
                retry = (retry * 2).min(std::time::Duration::from_secs(10));
                continue;
            }
            // Refused (a bad topic, no read token): retrying would not help.
            Err(e @ nexus_client::ClientError::Api { .. }) => return Err(e.into()),
            Err(e) => {
                eprintln!("watch: {e}; retrying in {retry:?}");
                std::thread::sleep(retry);
                retry = (retry * 2).min(std::time::Duration::from_secs(10));
                continue;
            }
        };
        for entry in stream.by_ref() {
            match entry {
                Ok(e) => {
                    retry = std::time::Duration::from_millis(250);
                    let line = if g.json {
                        e.to_string()
                    } else {
                        describe_entry(&e)
                    };
                    // A closed pipe (`nexus watch | head`) ends the watch quietly.
                    if writeln!(stdout, "{line}")
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(e) => {
                    eprintln!("watch: {e}; reconnecting");
                    break;
                }
            }
        }
        if let Some(last) = stream.last_seq() {
            next = last + 1;
        }
        std::thread::sleep(retry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("1500ms"), Ok(1_500));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3x").is_err());
        assert_eq!(fmt_duration(30_000), "30s");
        assert_eq!(fmt_duration(1_500), "1500ms");
        assert_eq!(fmt_duration(3_660_000), "1h1m0s");
        assert_eq!(fmt_duration(120_000), "2m");
    }

    #[test]
    fn times() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(fmt_time(1_764_000_000_123), "2025-11-24 16:00:00.123Z");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00.000Z");
    }
}
