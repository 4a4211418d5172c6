//! Slow clients held open during a run (`--slow N`): each connection sends request
//! headers declaring a 60,000-byte body, then one byte, and then nothing — the
//! slowloris pattern issue 15 measured. A connection the server closes (its body
//! timeout) is opened again at once, so that about N are held for the whole run.
//!
//! One thread drives every connection with non-blocking sockets: the point is to
//! cost the server, not this process.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

const REQUEST: &[u8] =
    b"POST /v1/facts HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{";

/// Slow connections being held; stopped on drop.
pub struct SlowClients {
    stop: Arc<AtomicBool>,
    /// Connections opened, over the run.
    pub opened: Arc<AtomicU64>,
    /// Connections the server closed (or refused).
    pub closed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// `host:port` of an `http://host:port[/…]` URL.
fn socket_addr(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("--slow needs an http:// URL")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} has no address"))
}

fn open(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.write_all(REQUEST).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

impl SlowClients {
    /// Opens `n` slow connections to the server of `url` (waits until they are open).
    pub fn start(url: &str, n: usize) -> Result<Self> {
        let addr = socket_addr(url)?;
        let (stop, opened, closed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let mut conns: Vec<Option<TcpStream>> = Vec::with_capacity(n);
        for _ in 0..n {
            let c = open(addr);
            if c.is_some() {
                opened.fetch_add(1, Ordering::Relaxed);
            }
            conns.push(c);
        }
        let (st, op, cl) = (Arc::clone(&stop), Arc::clone(&opened), Arc::clone(&closed));
        let thread = std::thread::Builder::new()
            .name("slow-clients".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while !st.load(Ordering::Relaxed) {
                    for slot in conns.iter_mut() {
                        let gone = match slot {
                            None => true,
                            Some(s) => match s.read(&mut buf) {
                                Ok(0) => true,
                                // An answer (408, 503): the server will close it.
                                Ok(_) => false,
                                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                                Err(_) => true,
                            },
                        };
                        if gone {
                            if slot.take().is_some() {
                                cl.fetch_add(1, Ordering::Relaxed);
                            }
                            *slot = open(addr);
                            if slot.is_some() {
                                op.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
            .context("cannot spawn the slow-clients thread")?;
        Ok(Self {
            stop,
            opened,
            closed,
            thread: Some(thread),
        })
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
