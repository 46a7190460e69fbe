//! A TCP proxy that drops and stalls connections (issue 17's soak): put it between Gatehouse and
//! a queue emulator (moto, the Pub/Sub emulator) and the queue client sees what a flaky network
//! does to it: connections reset in the middle of a request or an answer, and bytes held back
//! for a while. Plain TCP, so it carries HTTP/1 (SQS) and HTTP/2 gRPC (Pub/Sub) alike.
//!
//! Faults are drawn per chunk forwarded (either direction), deterministically from a seed:
//! with probability `drop_per_mille / 1000` the connection is cut (both sides closed, what was
//! read is not forwarded), else with probability `stall_per_mille / 1000` the chunk is held for
//! `stall` before it goes on. [`FaultProxy::set_faults`] changes them while it runs (a soak turns
//! them off at the end so what is left can drain); [`FaultProxy::counts`] says how many of each
//! happened, so a test can check the faults were really injected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Per 1000 chunks forwarded: cut the connection instead.
    pub drop_per_mille: u32,
    /// Per 1000 chunks forwarded (that were not dropped): hold the chunk for `stall` first.
    pub stall_per_mille: u32,
    /// How long a stalled chunk is held.
    pub stall: Duration,
}

impl Faults {
    /// No fault: a plain proxy.
    pub const NONE: Faults = Faults {
        drop_per_mille: 0,
        stall_per_mille: 0,
        stall: Duration::ZERO,
    };
}

/// How many connections and faults the proxy saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultCounts {
    pub connections: u64,
    pub chunks: u64,
    pub dropped: u64,
    pub stalled: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    chunks: AtomicU64,
    dropped: AtomicU64,
    stalled: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    rng: Mutex<u64>,
    counters: Counters,
}

impl Shared {
    /// SplitMix64 over the shared state: one draw in 0..1000.
    fn draw(&self) -> u32 {
        let mut s = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % 1000) as u32
    }

    fn faults(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy on 127.0.0.1; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(upstream: SocketAddr, faults: Faults, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("the fault proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(faults),
            rng: Mutex::new(seed),
            counters: Counters::default(),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        FaultProxy { addr, shared, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the faults for every chunk from now on, on open connections too.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    pub fn counts(&self) -> FaultCounts {
        let c = &self.shared.counters;
        FaultCounts {
            connections: c.connections.load(Ordering::Relaxed),
            chunks: c.chunks.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            stalled: c.stalled.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(shared.upstream).await else {
                return; // the client sees its connection closed, as with a dead upstream
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // Either direction ending (EOF, error or a drop) ends both: a dropped connection is
            // closed on both sides, like a reset in the network.
            tokio::select! {
                () = pipe(cr, sw, &shared) => {}
                () = pipe(sr, cw, &shared) => {}
            }
        });
    }
}

/// Forwards `from` to `to` chunk by chunk, injecting faults, until EOF, an error or a drop.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        shared.counters.chunks.fetch_add(1, Ordering::Relaxed);
        let faults = shared.faults();
        if faults.drop_per_mille > 0 && shared.draw() < faults.drop_per_mille {
            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if faults.stall_per_mille > 0 && shared.draw() < faults.stall_per_mille {
            shared.counters.stalled.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(faults.stall).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `msg` through a fresh connection and reads until `msg.len()` bytes or EOF.
    async fn round_trip(proxy: &FaultProxy, msg: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(msg).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < msg.len() {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    }

    #[tokio::test]
    async fn without_faults_it_forwards_both_ways_byte_for_byte() {
        let proxy = FaultProxy::start(echo().await, Faults::NONE, 1).await;
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&proxy, &msg).await, msg);
        let c = proxy.counts();
        assert_eq!((c.connections, c.dropped, c.stalled), (1, 0, 0));
        assert!(c.chunks >= 2, "both directions forwarded: {c:?}");
    }

    #[tokio::test]
    async fn a_drop_cuts_the_connection_on_both_sides_and_forwards_nothing_more() {
        let all = Faults {
            drop_per_mille: 1000,
            ..Faults::NONE
        };
        let proxy = FaultProxy::start(echo().await, all, 2).await;
        assert_eq!(
            round_trip(&proxy, b"hello").await,
            b"",
            "the request was cut, not echoed"
        );
        assert_eq!(proxy.counts().dropped, 1);
        // Turned off while running: the next connection goes through.
        proxy.set_faults(Faults::NONE);
        assert_eq!(round_trip(&proxy, b"hello").await, b"hello");
        assert_eq!(proxy.counts().connections, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_holds_the_bytes_for_the_stall_and_then_delivers_them_intact() {
        let stall = Duration::from_secs(30);
        let faults = Faults {
            stall_per_mille: 1000,
            stall,
            ..Faults::NONE
        };
        let proxy = FaultProxy::start(echo().await, faults, 3).await;
        let started = tokio::time::Instant::now();
        assert_eq!(round_trip(&proxy, b"held back").await, b"held back");
        // Paused clock: time moves only by the proxy's sleeps, one per direction.
        assert!(started.elapsed() >= stall * 2, "{:?}", started.elapsed());
        assert_eq!(proxy.counts().stalled, 2);
        assert_eq!(proxy.counts().dropped, 0);
    }

    #[tokio::test]
    async fn faults_at_a_rate_hit_about_that_share_of_chunks_reproducibly() {
        let faults = Faults {
            drop_per_mille: 200,
            ..Faults::NONE
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let proxy = FaultProxy::start(echo().await, faults, 42).await;
            let mut delivered = 0;
            for _ in 0..200 {
                if round_trip(&proxy, b"x").await == b"x" {
                    delivered += 1;
                }
            }
            let c = proxy.counts();
            // Each delivered round trip is two chunks that passed; each failed one, one drop.
            assert_eq!(c.dropped, 200 - delivered, "{c:?}");
            // A round trip passes two chunks, each dropped with p = 0.2: 1 - 0.8² = 36% fail, ~72.
            assert!(
                (40..=110).contains(&c.dropped),
                "about a third of 200 round trips: {c:?}"
            );
            runs.push(c.dropped);
        }
        assert_eq!(runs[0], runs[1], "one seed, one sequence of faults");
    }
}
