//! What protects `nexus serve` from its clients: the flags (timeouts, connection cap,
//! rate limits, read access, TLS) and the rate limits themselves — token buckets (GCRA,
//! the `governor` crate) per client address, checked before a request's body is read,
//! and per author key, checked for a signed write after [`nexus_api::Api::prepare`]
//! has verified who signed it.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use nexus_core::AuthorKey;

/// Default sustained writes per second of one author key. A ceiling against a runaway
/// agent, not a fair share: one agent that loops propose → claim → resolve on this
/// 2-core machine makes about 1,600 writes/s (BENCHMARKS.md §2, K = 1), so the default
/// must sit above what one agent can do on a fast machine.
pub const DEFAULT_AUTHOR_RATE: u32 = 5_000;
/// Default sustained requests per second of one client address (IPv6: one /64).
/// Every benchmark agent on loopback shares one address: K = 64 agents made about
/// 8,400 requests/s here, so the default leaves room for twice that.
pub const DEFAULT_ADDRESS_RATE: u32 = 20_000;
/// How often buckets that are full again are forgotten (memory bound on keys).
pub const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Default most connections served at once: above the 3,000 idle or slow connections
/// one client could hold and the agents that must still be served beside them.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// File descriptors kept for the store, the agent list and the runtime, beyond the
/// connections.
const SPARE_FDS: u64 = 128;

/// The flags of `nexus serve` that limit what clients can do.
#[derive(Debug, Clone, Args)]
pub struct GuardArgs {
    /// Time a connection has to send a request's headers, counted from when the server
    /// waits for them: also the idle keep-alive timeout and the TLS handshake's.
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub header_timeout: u64,
    /// Time a request has to send its body once its headers are in (then `408
    /// request_timeout` and the connection is closed).
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub body_timeout: u64,
    /// Most connections served at once; above it new ones are answered `503
    /// too_many_connections` and closed (the open-files limit is raised to fit, or the cap
    /// lowered to it).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,
    /// Writes per second one author key may make, sustained (0: no limit); `429
    /// rate_limited` with `Retry-After` above it.
    #[arg(long, default_value_t = DEFAULT_AUTHOR_RATE, value_name = "N")]
    pub author_rate: u32,
    /// Writes one author key may make at once (default: one second's worth).
    #[arg(long, value_name = "N")]
    pub author_burst: Option<u32>,
    /// Requests per second one client address (IPv6: one /64) may make, sustained (0: no
    /// limit).
    #[arg(long, default_value_t = DEFAULT_ADDRESS_RATE, value_name = "N")]
    pub address_rate: u32,
    /// Requests one client address may make at once (default: one second's worth).
    #[arg(long, value_name = "N")]
    pub address_burst: Option<u32>,
    /// Reads need `Authorization: Bearer <token>` with a token of this file (one a line;
    /// blank lines and `#` comments skipped); writes are authorized by their signatures.
    #[arg(long, env = "NEXUS_READ_TOKEN_FILE", value_name = "PATH")]
    pub read_token_file: Option<PathBuf>,
    /// Serve reads to anyone even on a non-loopback address (without it, such a server
    /// refuses to start unless --read-token-file is given).
    #[arg(long, conflicts_with = "read_token_file")]
    pub public_reads: bool,
    /// Serve /v1/health and /metrics without the read token (for load balancers and
    /// scrapers); without a read token they are public anyway.
    #[arg(long)]
    pub public_status: bool,
    /// TLS certificate chain (PEM): serve HTTPS.
    #[arg(long, requires = "tls_key", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
}

impl GuardArgs {
    /// The settings, with the token file read.
    pub fn guard(self) -> Result<crate::serve::Guard> {
        let read_access = match &self.read_token_file {
            None => nexus_api::ReadAccess::public(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?;
                let access = nexus_api::ReadAccess::from_token_file(&text);
                if !access.requires_token() {
                    anyhow::bail!("the token file {} holds no token", path.display());
                }
                access
            }
        }
        .with_public_status(self.public_status);
        let rate = |per_second, burst: Option<u32>| Rate {
            per_second,
            burst: burst.unwrap_or(0),
        };
        if self.max_connections == 0 {
            anyhow::bail!("--max-connections must be at least 1");
        }
        Ok(crate::serve::Guard {
            header_timeout: Duration::from_millis(self.header_timeout.max(1)),
            body_timeout: Duration::from_millis(self.body_timeout.max(1)),
            max_connections: self.max_connections,
            author_rate: rate(self.author_rate, self.author_burst),
            address_rate: rate(self.address_rate, self.address_burst),
            read_access,
            public_reads: self.public_reads,
            tls: self.tls_cert.zip(self.tls_key),
        })
    }
}

/// The connection cap the open-files limit allows: raises the soft limit towards the
/// hard one to fit `wanted` connections (plus the overflow answered 503 and spare
/// descriptors); if the hard limit is lower, lowers the cap to fit it, with a warning.
pub fn fit_connections(wanted: usize) -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let overflow = crate::net::OVERFLOW_CONNECTIONS as u64;
        let need = (wanted as u64)
            .saturating_add(overflow)
            .saturating_add(SPARE_FDS);
        let limit = getrlimit(Resource::Nofile);
        let current = limit.current.unwrap_or(u64::MAX);
        if current >= need {
            return wanted;
        }
        let hard = limit.maximum.unwrap_or(u64::MAX);
        let raised = need.min(hard);
        let new = Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        let have = match setrlimit(Resource::Nofile, new) {
            Ok(()) => raised,
            Err(e) => {
                tracing::warn!("cannot raise the open-files limit to {raised}: {e}");
                current
            }
        };
        if have >= need {
            return wanted;
        }
        let fit = have.saturating_sub(overflow + SPARE_FDS).max(1) as usize;
        tracing::warn!(
            "the open-files limit ({have}) leaves room for {fit} connections, not {wanted}: \
             serving at most {fit}"
        );
        fit
    }
    #[cfg(not(unix))]
    wanted
}

/// A sustained rate and the burst a bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, sustained; 0 turns the limit off.
    pub per_second: u32,
    /// Requests a full bucket allows at once (0: as many as `per_second`).
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(rate);
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

/// One keyed token-bucket limiter, or none.
struct Buckets<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    /// What a full bucket holds.
    burst: u32,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(rate: Rate) -> Self {
        Self {
            limiter: rate.quota().map(RateLimiter::keyed),
            burst: if rate.burst == 0 {
                rate.per_second
            } else {
                rate.burst
            },
        }
    }

    /// `Err(ms)`: over the limit, the next request is allowed in `ms`.
    fn check(&self, key: &K) -> Result<(), u64> {
        self.check_n(key, 1)
    }

    /// Takes `n` tokens at once, or none (`Err(ms)`: they are there in `ms`). A request
    /// needing more than a full bucket takes the whole bucket, so that it can pass.
    fn check_n(&self, key: &K, n: u32) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let Some(n) = NonZeroU32::new(n.min(self.burst)) else {
            return Ok(());
        };
        match limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                Err(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1))
            }
            // `n` is at most the burst: cannot happen; refuse for a second.
            Err(_) => Err(1_000),
        }
    }

    fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The server's rate limits.
pub struct RateLimits {
    authors: Buckets<AuthorKey>,
    addresses: Buckets<IpAddr>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("authors", &self.authors.limiter.is_some())
            .field("addresses", &self.addresses.limiter.is_some())
            .finish()
    }
}

impl RateLimits {
    /// Limits per author key and per client address.
    pub fn new(per_author: Rate, per_address: Rate) -> Self {
        Self {
            authors: Buckets::new(per_author),
            addresses: Buckets::new(per_address),
        }
    }

    /// Takes one token per signed item of a write from its author's bucket, all or
    /// nothing per author (`Err(ms)`: the first author short of tokens has them in
    /// `ms`; the authors checked before it keep their tokens spent). An author with
    /// more items than a full bucket holds needs the whole bucket.
    pub fn check_authors(&self, authors: &[&AuthorKey]) -> Result<(), u64> {
        let mut counts: Vec<(&AuthorKey, u32)> = Vec::new();
        for a in authors {
            match counts.iter_mut().find(|(k, _)| k == a) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => counts.push((a, 1)),
            }
        }
        for (author, n) in counts {
            self.authors.check_n(author, n)?;
        }
        Ok(())
    }

    /// Takes one token of the bucket of `ip` (an IPv6 address counts as its /64, which
    /// one client usually holds whole); `Err(ms)` when it is empty.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), u64> {
        self.addresses.check(&address_key(ip))
    }

    /// Forgets the buckets that are full again (they behave as new ones), so that
    /// memory follows the clients of the last minute, not every client ever seen.
    pub fn forget_idle(&self) {
        self.authors.forget_idle();
        self.addresses.forget_idle();
    }
}

/// IPv4 as is (IPv4-mapped IPv6 too); IPv6 reduced to its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::SigningKey;

    /// Authors at 1 a second, 3 at once; addresses unlimited.
    fn authors_limited() -> RateLimits {
        RateLimits::new(
            Rate {
                per_second: 1,
                burst: 3,
            },
            Rate {
                per_second: 0,
                burst: 0,
            },
        )
    }

    #[test]
    fn a_bucket_allows_its_burst_then_says_when() {
        let limits = authors_limited();
        let a = SigningKey::from_seed(&[1; 32]).author();
        let b = SigningKey::from_seed(&[2; 32]).author();
        for _ in 0..3 {
            assert_eq!(limits.check_authors(&[&a]), Ok(()));
        }
        let wait = limits.check_authors(&[&a]).expect_err("burst spent");
        assert!((1..=1_000).contains(&wait), "{wait}");
        assert_eq!(limits.check_authors(&[&b]), Ok(()), "buckets are per key");
        for _ in 0..100 {
            assert_eq!(
                limits.check_address("10.0.0.1".parse().expect("ip")),
                Ok(())
            );
        }
    }

    #[test]
    fn a_batch_takes_its_items_tokens_at_once_or_none() {
        let limits = authors_limited();
        let a = SigningKey::from_seed(&[1; 32]).author();
        let b = SigningKey::from_seed(&[2; 32]).author();
        assert_eq!(limits.check_authors(&[&a]), Ok(()));
        // Three items of `a` with two tokens left: refused, and nothing is spent.
        assert!(limits.check_authors(&[&a, &a, &b, &a]).is_err());
        assert_eq!(limits.check_authors(&[&a, &b, &a]), Ok(()));
        assert!(limits.check_authors(&[&a]).is_err(), "both spent");
        // More items than a full bucket holds need the whole bucket, and pass then.
        assert!(limits.check_authors(&[&b; 5]).is_err(), "b has 2 of 3 left");
        let c = SigningKey::from_seed(&[3; 32]).author();
        assert_eq!(limits.check_authors(&[&c; 5]), Ok(()));
        assert!(limits.check_authors(&[&c]).is_err(), "the whole bucket");
    }

    #[test]
    fn ipv6_counts_per_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            address_key(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(address_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(address_key(ip("10.1.2.3")), ip("10.1.2.3"));
    }
}
