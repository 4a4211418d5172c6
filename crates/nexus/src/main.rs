//! `nexus`: the neXus server on its embedded store, and the command-line client.

/// `println!` that ends the process quietly on a closed pipe instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {
        $crate::cli::say(format_args!($($t)*))
    };
}

mod agents;
mod archive;
mod batch;
mod cli;
mod contract_cmd;
mod demo;
mod events;
mod export;
mod limits;
mod logkey;
mod mcp;
mod net;
mod serve;
mod tlog_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use nexus_client::KeyFile;

/// neXus: a content-addressed, CAS-governed blackboard for agents.
#[derive(Debug, Parser)]
#[command(name = "nexus", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options of every client command.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The neXus server to talk to.
    #[arg(
        long,
        global = true,
        env = "NEXUS_SERVER",
        default_value = "http://127.0.0.1:7878"
    )]
    pub server: String,
    /// The agent key that signs (default: $NEXUS_HOME/key, else ~/.config/nexus/key).
    #[arg(long, global = true, env = "NEXUS_KEY")]
    pub key: Option<PathBuf>,
    /// Print one JSON document (for scripts) instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// Trust only the CA certificates of this PEM file for https:// servers (instead of
    /// the public roots): for a server whose certificate a private CA signed.
    #[arg(long, global = true, env = "NEXUS_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
    /// Send the bearer token of this file (its first line that is not blank or a `#`
    /// comment) with every request: for a server whose reads need one.
    #[arg(long, global = true, env = "NEXUS_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API on the embedded store (durable before it acknowledges).
    Serve {
        /// Data directory: the store (`nexus.redb`) and the agent allowlist (`agents`).
        #[arg(long, default_value = "nexus-data", env = "NEXUS_DATA")]
        data: PathBuf,
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = "127.0.0.1:7878")]
        addr: SocketAddr,
        /// Accept writes signed by any valid key, not only allowlisted agents (local work only).
        #[arg(long)]
        open: bool,
        /// Deployment id of a new store (1..=64 of [A-Za-z0-9._-]; default: 32 random hex
        /// digits). Signed actions name it; an existing store keeps its own.
        #[arg(long, value_name = "ID")]
        deployment: Option<nexus_core::Deployment>,
        /// The store's page cache, in MiB: most of the server's resident memory on a
        /// large store (pages it does not hold are read from the file).
        #[arg(long, value_name = "MIB", default_value_t = 256, env = "NEXUS_CACHE_MB",
              value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
        cache_mb: u64,
        #[command(flatten)]
        guard: limits::GuardArgs,
        #[command(flatten)]
        hints: serve::HintArgs,
        #[command(flatten)]
        archive: serve::ArchiveArgs,
    },
    /// Create a signing key (default: $NEXUS_HOME/key, else ~/.config/nexus/key).
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Manage the agents allowed to write to a data directory.
    Agents {
        /// Data directory.
        #[arg(long, global = true, default_value = "nexus-data", env = "NEXUS_DATA")]
        data: PathBuf,
        #[command(subcommand)]
        action: AgentsAction,
    },
    /// Propose, claim, renew, withdraw and list Intents.
    #[command(subcommand)]
    Intent(IntentCmd),
    /// Submit Facts (optionally resolving a claimed Intent).
    #[command(subcommand)]
    Fact(FactCmd),
    /// Add, list and retract Hints (deny and allow need an operator key; priority).
    #[command(subcommand)]
    Hint(HintCmd),
    /// Check, deploy and show the governance contract (`contract.nex`).
    #[command(subcommand)]
    Contract(ContractCmd),
    /// List the Hints in force, or explain one: the rule and the Facts behind it.
    Hints {
        /// Explain this Hint (full hash or prefix).
        #[arg(long, value_name = "ID")]
        explain: Option<String>,
    },
    /// Sign the steps of a plan (JSON lines, or a JSON array; `-`: standard input) and
    /// commit them all or nothing in one atomic commit. A step is one of
    /// `{"propose": {"topic", "body", "parents"}}`, `{"fact": {"topic", "body",
    /// "parents", "resolves", "token"}}`, `{"claim": {"intent", "lease"}}`, `{"renew":
    /// {"intent", "token", "lease"}}`, `{"withdraw": {"intent"}}`, or a signed
    /// `{"record": …}` / `{"action": …}`; an id is a hash, a prefix, or `@N` for the
    /// record of step N (from 0) of the plan. At most 64 steps.
    Batch {
        /// The plan file (`-` for standard input).
        plan: PathBuf,
    },
    /// Show a record (full hash or a prefix of at least 8 hex digits) and its parents.
    Show {
        /// The record's hash or prefix.
        id: String,
    },
    /// Show the commit log.
    Log {
        /// First sequence number.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most entries (server default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Serve neXus as MCP tools for LLM agents (stdio, or streamable HTTP with --http),
    /// talking to --server and signing with --key; records, Intents' states and the
    /// Hints are resources (nexus://record/{id}, nexus://intent/{id}, nexus://hints),
    /// and subscribers are notified when an Intent or the Hints change.
    Mcp {
        /// Serve MCP over streamable HTTP at http://ADDR/mcp instead of stdio.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
    /// Print log entries as they commit (the server's event stream), until interrupted.
    Watch {
        /// Only records under this topic glob (e.g. `chem/**`) and actions on Intents under it.
        #[arg(long, value_name = "GLOB")]
        topic: Option<String>,
        /// Start at this seq (1: the whole log first; default: what commits from now on).
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
    },
    /// Run a swarm of agents on a seeded search (on an embedded server, or --server),
    /// live, then verify the whole log with --replay and print a summary.
    Demo(demo::DemoArgs),
    /// Write the whole commit log as JSON lines (what `nexus verify` checks).
    Export {
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rewrite a data directory's store compactly (the server must be stopped): every
    /// table copied in key order, which packs the pages random-order writes leave half
    /// full. Also migrates a store of an older layout (1) to the current one. The store
    /// is replaced only once the copy is complete.
    Compact {
        /// Data directory.
        #[arg(long, default_value = "nexus-data", env = "NEXUS_DATA")]
        data: PathBuf,
    },
    /// Rebuild a data directory from an archive directory (`nexus serve --archive-dir`):
    /// the window chain, every entry's hash and signature and the latest snapshot are
    /// checked, the entries after it replayed. The target must be new or empty.
    Restore {
        /// The archive directory.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The new data directory.
        #[arg(long, value_name = "NEW_DIR")]
        data: PathBuf,
        /// The verifier key the last window's checkpoint must be signed by
        /// (`<origin>+<id>+<key>`, or the old data directory's `log.key`, which the new
        /// one then gets); default: the `log.key` beside the archive directory
        /// (`DATA/log.key` of `DATA/archive`), else the key the checkpoint names.
        #[arg(long, value_name = "VKEY")]
        log_key: Option<String>,
    },
    /// Fetch and verify the server's signed checkpoint of its log (spec/tlog.md), and
    /// keep it: the JSON the server answers, with its verifier key.
    Checkpoint {
        /// Where to save it (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The verifier key the checkpoint must be signed by (`<origin>+<id>+<key>`, or a
        /// data directory's `log.key` file); default: the key the server names.
        #[arg(long, value_name = "VKEY")]
        log_key: Option<String>,
    },
    /// Save a log entry with its inclusion proof and the server's checkpoint, for
    /// `nexus verify --inclusion FILE` to check with no network.
    Proof {
        /// The entry's seq.
        #[arg(long)]
        seq: u64,
        /// Where to save it (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The verifier key the checkpoint must be signed by (as for `nexus checkpoint`).
        #[arg(long, value_name = "VKEY")]
        log_key: Option<String>,
    },
    /// Verify an export file, a server's log (an http:// or https:// URL) or an archive
    /// directory, offline; against a kept checkpoint with --checkpoint. Or check an
    /// inclusion proof (--inclusion) or that the log extends a kept checkpoint
    /// (--consistent).
    Verify {
        /// An export file (`-` for standard input), a server URL or an archive directory.
        #[arg(required_unless_present_any = ["inclusion", "consistent"])]
        source: Option<String>,
        /// A checkpoint file (`nexus checkpoint`): the first `size` entries must be
        /// exactly the checkpoint's (none dropped, added, reordered or changed). With
        /// --consistent: the newer checkpoint (default: the server's current one).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// The verifier key checkpoints must be signed by (`<origin>+<id>+<key>`, or a
        /// data directory's `log.key` file); default: for `DATA/archive`, `DATA/log.key`
        /// when it is there, else the key the checkpoint names.
        #[arg(long, value_name = "VKEY")]
        log_key: Option<String>,
        /// Check an inclusion proof file (`nexus proof`), with no network.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["source", "consistent", "replay", "checkpoint"])]
        inclusion: Option<PathBuf>,
        /// Check that the log (the server's, or --checkpoint's) extends this kept
        /// checkpoint, with the server's consistency proof.
        #[arg(long, value_name = "OLD_FILE", conflicts_with_all = ["source", "replay"])]
        consistent: Option<PathBuf>,
        /// Also replay the Intent lifecycle (tokens, leases, admissibility) at each entry's time.
        #[arg(long)]
        replay: bool,
        /// Threads that check hashes and signatures (default: one per core; 1: no others).
        #[arg(long, default_value_t = 0, hide_default_value = true)]
        threads: usize,
        /// Replay on a scratch store in a temporary directory ($TMPDIR) instead of in
        /// memory: memory stays bounded (about 100 MB) however long the log, at several
        /// times the time.
        #[arg(long, requires = "replay")]
        on_disk: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AgentsAction {
    /// Allow an author key (default: your own key).
    Add {
        /// The author key, 64 hex digits.
        #[arg(value_name = "KEY")]
        author: Option<String>,
        /// Add it as an operator key (`DATA/operators`): it may write, post deny and
        /// allow Hints, and retract any Hint.
        #[arg(long)]
        operator: bool,
    },
    /// List allowed keys (operator keys are marked `operator`).
    List,
    /// Remove an author key.
    Remove {
        /// The author key, 64 hex digits.
        #[arg(value_name = "KEY")]
        author: String,
        /// Remove it from the operator keys.
        #[arg(long)]
        operator: bool,
    },
}

/// `nexus intent …`.
#[derive(Debug, Subcommand)]
pub enum IntentCmd {
    /// Propose an Intent.
    Propose {
        /// Its topic (`a/b/c`).
        topic: String,
        /// Its body, as JSON (default `{}`).
        #[arg(long)]
        body: Option<String>,
        /// A parent record (repeatable; full hash or prefix).
        #[arg(long = "parent")]
        parents: Vec<String>,
    },
    /// Claim an Intent: a compare-and-swap that answers a fencing token and a lease.
    Claim {
        /// The Intent (full hash or prefix).
        id: String,
        /// Lease length (`30s`, `1500ms`, `5m`, `1h`).
        #[arg(long, default_value = "30s", value_parser = cli::parse_duration)]
        lease: u64,
    },
    /// Renew your claim's lease (same token).
    Renew {
        /// The Intent (full hash or prefix).
        id: String,
        /// The fencing token of your claim.
        #[arg(long)]
        token: u64,
        /// New lease length, from now.
        #[arg(long, default_value = "30s", value_parser = cli::parse_duration)]
        lease: u64,
    },
    /// Withdraw an Intent you proposed.
    Withdraw {
        /// The Intent (full hash or prefix).
        id: String,
    },
    /// List Intents (available ones by priority, highest first).
    List {
        /// `available`, `claimed`, `resolved` or `withdrawn`.
        #[arg(long)]
        state: Option<String>,
        /// Topic (subtopics included).
        #[arg(long)]
        topic: Option<String>,
        /// Most Intents (server default 50, max 500).
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `nexus fact …`.
#[derive(Debug, Subcommand)]
pub enum FactCmd {
    /// Submit a Fact.
    Submit {
        /// Its topic.
        topic: String,
        /// Its body, as JSON (default `{}`).
        #[arg(long)]
        body: Option<String>,
        /// A parent record (repeatable; full hash or prefix).
        #[arg(long = "parent")]
        parents: Vec<String>,
        /// The Intent this Fact resolves (you must hold its claim).
        #[arg(long, requires = "token")]
        resolves: Option<String>,
        /// The fencing token of your claim on `--resolves`.
        #[arg(long, requires = "resolves")]
        token: Option<u64>,
    },
}

/// `nexus contract …`.
#[derive(Debug, Subcommand)]
pub enum ContractCmd {
    /// Parse and check a contract locally (positions, unknown fields, types); exit 1 on problems.
    Check {
        /// The contract file.
        file: PathBuf,
    },
    /// Deploy a contract: moves the server's pointer by compare-and-swap from the version in force.
    Deploy {
        /// The contract file.
        file: PathBuf,
        /// The hash of the version expected in force (`none`: no contract yet); default: what the server says now.
        #[arg(long, value_name = "HASH")]
        expect: Option<String>,
    },
    /// Show the contract in force.
    Show {
        /// List every deployed version instead.
        #[arg(long)]
        history: bool,
    },
}

/// `nexus hint …`.
#[derive(Debug, Subcommand)]
pub enum HintCmd {
    /// Add a Hint: deny, allow or prioritise the Intents it selects.
    #[command(group(ArgGroup::new("effect").required(true).args(["deny", "allow", "priority"])))]
    Add {
        /// Selected Intents may not be proposed or claimed (needs an operator key).
        #[arg(long)]
        deny: bool,
        /// Selected Intents are admissible even where a deny Hint selects them (needs
        /// an operator key).
        #[arg(long)]
        allow: bool,
        /// Selected Intents rank this much higher (negative: lower).
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i64>,
        /// Topic glob (`*` one segment, a final `**` any number).
        #[arg(long)]
        topic: Option<String>,
        /// Body members the Intent must have with equal values (a JSON object).
        #[arg(long = "where")]
        where_: Option<String>,
        /// Why, for people.
        #[arg(long)]
        reason: String,
        /// Expire after this long (`10m`, `2h`, …).
        #[arg(long, value_parser = cli::parse_duration)]
        expires_in: Option<u64>,
    },
    /// List the Hints in force.
    List,
    /// Take a Hint out of force (your own Hint, or any Hint with an operator key).
    Retract {
        /// The Hint's hash or prefix.
        id: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches();
    // `nexus demo` starts its own server unless --server (or $NEXUS_SERVER) names one.
    let server_given = matches
        .value_source("server")
        .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let json = cli.global.json;
    match run(cli, server_given) {
        Ok(code) => code,
        Err(e) => {
            cli::report_error(&e, json);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, server_given: bool) -> Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Serve {
            data,
            addr,
            open,
            deployment,
            cache_mb,
            guard,
            hints,
            archive,
        } => serve::run(serve::ServeOptions {
            archive: archive.options(&data)?,
            data,
            addr,
            open,
            cache_bytes: usize::try_from(cache_mb << 20).unwrap_or(usize::MAX),
            guard: guard.guard()?,
            hints,
            deployment,
        })?,
        Command::Keygen { out, force } => {
            let path = match out {
                Some(p) => p,
                None => KeyFile::default_path().context("no default key location")?,
            };
            let mut key = KeyFile::generate().context("cannot generate a key")?;
            key.save(&path, force)
                .with_context(|| format!("cannot save the key to {}", path.display()))?;
            say!("{}", key.author());
            eprintln!("key written to {}", path.display());
        }
        Command::Agents { data, action } => agents_cmd(&g, &data, action)?,
        Command::Intent(c) => cli::intent(&g, c)?,
        Command::Fact(c) => cli::fact(&g, c)?,
        Command::Hint(c) => cli::hint(&g, c)?,
        Command::Contract(ContractCmd::Check { file }) => {
            if !contract_cmd::check(&g, &file)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Contract(ContractCmd::Deploy { file, expect }) => {
            contract_cmd::deploy(&g, &file, expect.as_deref())?
        }
        Command::Contract(ContractCmd::Show { history }) => contract_cmd::show(&g, history)?,
        Command::Hints { explain: None } => cli::hint(&g, HintCmd::List)?,
        Command::Hints { explain: Some(id) } => contract_cmd::explain(&g, &id)?,
        Command::Show { id } => cli::show(&g, &id)?,
        Command::Batch { plan } => batch::run(&g, &plan)?,
        Command::Log { from, limit } => cli::log(&g, from, limit)?,
        Command::Demo(args) => return demo::run(&g, server_given, &args),
        Command::Export { out } => export::export(&g, out.as_deref())?,
        Command::Compact { data } => serve::compact(&data)?,
        Command::Restore {
            from,
            data,
            log_key,
        } => archive::restore(&from, &data, log_key.as_deref())?,
        Command::Watch { topic, from } => cli::watch(&g, topic.as_deref(), from)?,
        Command::Mcp { http } => {
            let (client, key) = (cli::client(&g)?, cli::load_key(&g)?);
            mcp::run(client, key, http)?
        }
        Command::Checkpoint { out, log_key } => {
            tlog_cmd::checkpoint(&g, out.as_deref(), log_key.as_deref())?
        }
        Command::Proof { seq, out, log_key } => {
            tlog_cmd::proof(&g, seq, out.as_deref(), log_key.as_deref())?
        }
        Command::Verify {
            source,
            checkpoint,
            log_key,
            inclusion,
            consistent,
            replay,
            threads,
            on_disk,
        } => {
            let log_key = log_key.as_deref();
            if let Some(file) = inclusion {
                return tlog_cmd::verify_inclusion(&g, &file, log_key);
            }
            if let Some(old) = consistent {
                return tlog_cmd::verify_consistent(&g, &old, checkpoint.as_deref(), log_key);
            }
            let source = source.unwrap_or_default();
            let is_url = source.starts_with("http://") || source.starts_with("https://");
            let tlog = export::TlogArgs {
                checkpoint: checkpoint.as_deref(),
                log_key,
                locate: if is_url {
                    Some(source.as_str())
                } else {
                    server_given.then_some(g.server.as_str())
                },
            };
            return export::verify(&g, &source, replay, threads, on_disk, &tlog);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn agents_cmd(g: &Global, data: &std::path::Path, action: AgentsAction) -> Result<()> {
    match action {
        AgentsAction::Add { author, operator } => {
            let key = match author {
                Some(k) => k.parse().context("not an author key")?,
                None => cli::load_key(g)?.author(),
            };
            let (tier, what) = tier(operator);
            if agents::add(data, tier, key)? {
                say!("allowed {key}{what}");
            } else {
                say!("{key} was already allowed{what}");
            }
            eprintln!("restart `nexus serve` for the change to take effect");
        }
        AgentsAction::List => {
            for k in agents::load(data)? {
                say!("{k}");
            }
            for k in agents::load_tier(data, agents::Tier::Operator)? {
                say!("{k} operator");
            }
        }
        AgentsAction::Remove { author, operator } => {
            let key = author.parse().context("not an author key")?;
            agents::remove(data, tier(operator).0, &key)?;
            say!("removed {key}");
            eprintln!("restart `nexus serve` for the change to take effect");
        }
    }
    Ok(())
}

/// The list `--operator` names, and how to say it.
fn tier(operator: bool) -> (agents::Tier, &'static str) {
    if operator {
        (agents::Tier::Operator, " as an operator")
    } else {
        (agents::Tier::Agent, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_parse_anywhere() {
        let cli = Cli::try_parse_from([
            "nexus",
            "intent",
            "claim",
            "0123abcd",
            "--lease",
            "1500ms",
            "--json",
            "--server",
            "http://h:1",
        ])
        .expect("parses");
        assert!(cli.global.json);
        assert_eq!(cli.global.server, "http://h:1");
        assert!(matches!(
            cli.command,
            Command::Intent(IntentCmd::Claim { lease: 1_500, .. })
        ));
        assert!(Cli::try_parse_from(["nexus", "hint", "add", "--reason", "r"]).is_err());
        assert!(
            Cli::try_parse_from(["nexus", "hint", "add", "--deny", "--allow", "--reason", "r"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["nexus", "fact", "submit", "t", "--token", "1"]).is_err());
        let cli =
            Cli::try_parse_from(["nexus", "hint", "add", "--priority", "-2", "--reason", "r"])
                .expect("negative priority");
        assert!(matches!(
            cli.command,
            Command::Hint(HintCmd::Add {
                priority: Some(-2),
                ..
            })
        ));
    }
}
