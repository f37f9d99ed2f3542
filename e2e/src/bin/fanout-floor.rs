//! `fanout-floor`: the least time this machine needs to write one small frame to each of N
//! loopback TCP connections, with no gateway at all — the floor under any data plane's
//! Kafka → client latency when one event goes to every connection.
//!
//! ```text
//! cargo run --release -p rig-e2e --bin fanout-floor -- [connections=10000] [rounds=20] [threads=1]
//! ```
//!
//! The parent process accepts N connections from a child process (this binary again, reading every
//! connection and discarding the bytes, like N idle browsers), then `rounds` times writes one
//! 200-byte frame to every connection with plain blocking `write(2)` calls from `threads` threads
//! (no async runtime, no queues, no encoding), and prints the time each fan-out took. A data plane
//! does at least this much work per event, so with every event reaching all N connections its p99
//! cannot be below these numbers on the same machine.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FRAME: [u8; 200] = [b'x'; 200];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--reader") {
        let addr: SocketAddr = args.get(1).map_or("", String::as_str).parse()?;
        let n: usize = args.get(2).map_or("0", String::as_str).parse()?;
        return reader(addr, n);
    }
    let n: usize = args.first().map_or(Ok(10_000), |a| a.parse())?;
    let rounds: usize = args.get(1).map_or(Ok(20), |a| a.parse())?;
    let threads: usize = args.get(2).map_or(Ok(1), |a| a.parse())?.max(1);

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--reader", &addr.to_string(), &n.to_string()])
        .stdin(Stdio::null())
        .spawn()?;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        conns.push(stream);
    }
    let chunk = n.div_ceil(threads);
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for part in conns.chunks_mut(chunk) {
                scope.spawn(move || {
                    for conn in part {
                        // A full socket buffer cannot happen: the reader drains every round.
                        let _ = conn.write_all(&FRAME);
                    }
                });
            }
        });
        took.push(start.elapsed());
        // Let the reader drain before the next round, as events arrive spaced in time.
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();

    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = took.iter().map(|d| ms(*d)).sum::<f64>() / took.len().max(1) as f64;
    println!(
        "| {n} | {threads} | {rounds} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
        ms(took[0]),
        ms(took[took.len() / 2]),
        mean,
        ms(took[took.len() - 1]),
        mean * 1e3 / n as f64,
    );
    Ok(())
}

/// The child: open `n` connections to `addr` and read them until the parent closes them.
fn reader(addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let stream = TcpStream::connect(addr)?;
            stream.set_nonblocking(true)?;
            let mut stream = tokio::net::TcpStream::from_std(stream)?;
            tasks.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf).await, Ok(k) if k > 0) {}
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
