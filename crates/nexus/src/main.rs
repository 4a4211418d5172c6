//! `nexus`: the neXus server on its embedded store, and the command-line client.

mod agents;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nexus_client::KeyFile;

/// neXus: a content-addressed, CAS-governed blackboard for agents.
#[derive(Debug, Parser)]
#[command(name = "nexus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        #[arg(long, default_value = "nexus-data", env = "NEXUS_DATA")]
        data: PathBuf,
        #[command(subcommand)]
        action: AgentsAction,
    },
}

#[derive(Debug, Subcommand)]
enum AgentsAction {
    /// Allow an author key (default: your own key).
    Add {
        /// The author key, 64 hex digits.
        key: Option<String>,
    },
    /// List allowed keys.
    List,
    /// Remove an author key.
    Remove {
        /// The author key, 64 hex digits.
        key: String,
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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { data, addr, open } => serve::run(serve::ServeOptions { data, addr, open }),
        Command::Keygen { out, force } => {
            let path = match out {
                Some(p) => p,
                None => KeyFile::default_path().context("no default key location")?,
            };
            let mut key = KeyFile::generate().context("cannot generate a key")?;
            key.save(&path, force)
                .with_context(|| format!("cannot save the key to {}", path.display()))?;
            println!("{}", key.author());
            eprintln!("key written to {}", path.display());
            Ok(())
        }
        Command::Agents { data, action } => match action {
            AgentsAction::Add { key } => {
                let key = match key {
                    Some(k) => k.parse().context("not an author key")?,
                    None => KeyFile::load_default()
                        .context("no key given and no default key")?
                        .author(),
                };
                if agents::add(&data, key)? {
                    println!("allowed {key}");
                } else {
                    println!("{key} was already allowed");
                }
                eprintln!("restart `nexus serve` for the change to take effect");
                Ok(())
            }
            AgentsAction::List => {
                for k in agents::load(&data)? {
                    println!("{k}");
                }
                Ok(())
            }
            AgentsAction::Remove { key } => {
                let key = key.parse().context("not an author key")?;
                agents::remove(&data, &key)?;
                println!("removed {key}");
                eprintln!("restart `nexus serve` for the change to take effect");
                Ok(())
            }
        },
    }
}
