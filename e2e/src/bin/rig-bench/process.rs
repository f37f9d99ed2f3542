//! The processes under measurement: the real `rig-dataplane` (release build) on loopback, the
//! client processes, and what `/proc` says about them (memory, CPU time).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rig_e2e::dataplane::free_addr;
use rig_e2e::http;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::client::ClientArgs;
use crate::{Transport, deadline_poll};

/// A running data plane; killed when dropped.
#[derive(Debug)]
pub struct DataPlane {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Inbound address (connections).
    pub inbound: SocketAddr,
    /// Internal address (`/v3/messages`, `/metrics`).
    pub internal: SocketAddr,
}

impl DataPlane {
    /// Start `bin` with `env` on free loopback ports (no connection rate limit), logging to `log`,
    /// and wait for `/health` (and for a Kafka partition when a topic is given).
    pub async fn start(
        bin: &Path,
        env: &[(String, String)],
        kafka: bool,
        log: &Path,
    ) -> Result<Self> {
        let inbound = free_addr()?;
        let internal = free_addr()?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("RIG_BIND_ADDRESS", "127.0.0.1")
            .env("INBOUND_PORT", inbound.port().to_string())
            .env("API_HTTP_PORT", internal.port().to_string())
            .env("MAX_CONNECTIONS_PER_MINUTE", "0")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("data plane pid")?;
        let dp = Self {
            child,
            pid,
            inbound,
            internal,
        };
        deadline_poll(
            "the data plane's /health",
            Duration::from_secs(30),
            || async { matches!(http::get(internal, "/health").await, Ok((200, _))) },
        )
        .await?;
        if kafka {
            deadline_poll(
                "a Kafka partition assigned",
                Duration::from_secs(60),
                || async {
                    dp.metric("rig_kafka_assigned_partitions")
                        .await
                        .is_ok_and(|v| v >= 1.0)
                },
            )
            .await?;
        }
        Ok(dp)
    }

    /// The value of a metric line starting with `name` (labels included in `name`).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let (status, text) = http::get(self.internal, "/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .filter(|rest| rest.starts_with(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .with_context(|| format!("metric {name} not found"))
    }

    /// Open connections of `transport` as the data plane counts them.
    pub async fn connections(&self, transport: Transport) -> Result<f64> {
        self.metric(&format!(
            "rig_connections{{transport=\"{}\"}}",
            transport.name()
        ))
        .await
    }

    /// Stop gracefully (SIGTERM), bounded; killed after 20 s.
    pub async fn stop(mut self) -> Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// Memory of a process, in KiB, from `/proc/<pid>/status` and `/proc/<pid>/smaps_rollup`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// `VmRSS`.
    pub rss: u64,
    /// `Pss` (shared pages divided among their users).
    pub pss: u64,
    /// `Private_Clean + Private_Dirty`.
    pub private: u64,
    /// `Anonymous` (heap and stacks).
    pub anon: u64,
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    })
}

impl Memory {
    /// Read it now.
    pub fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        Ok(Self {
            rss: kib_field(&status, "VmRSS").context("VmRSS")?,
            pss: kib_field(&rollup, "Pss").context("Pss")?,
            private: kib_field(&rollup, "Private_Clean").context("Private_Clean")?
                + kib_field(&rollup, "Private_Dirty").context("Private_Dirty")?,
            anon: kib_field(&rollup, "Anonymous").context("Anonymous")?,
        })
    }

    /// Read until two readings 500 ms apart differ by less than 256 KiB (allocations settled),
    /// at most 10 s.
    pub async fn settled(pid: u32) -> Result<Self> {
        let mut last = Self::of(pid)?;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = Self::of(pid)?;
            if now.rss.abs_diff(last.rss) < 256 {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .context("stat field")
    };
    // utime is field 14, stime 15 (1-based); `rest` starts at field 3.
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Counters of one client process (see `client`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Events received since the last reset.
    pub frames: u64,
    /// Fewest events on an open connection.
    pub min: u64,
    /// Most events on an open connection.
    pub max: u64,
    /// Open connections.
    pub open: u64,
    /// Connections closed (by the server, or failed).
    pub closed: u64,
    /// Unix time (ns) of the latest event received.
    pub last_ns: u64,
}

impl Stats {
    fn parse(line: &str) -> Result<Self> {
        let mut s = Self::default();
        let rest = line
            .strip_prefix("stats ")
            .with_context(|| format!("not a stats line: {line:?}"))?;
        for pair in rest.split_whitespace() {
            let (k, v) = pair.split_once('=').context("stats pair")?;
            let v: u64 = v.parse().context("stats value")?;
            match k {
                "frames" => s.frames = v,
                "min" => s.min = v,
                "max" => s.max = v,
                "open" => s.open = v,
                "closed" => s.closed = v,
                "last_ns" => s.last_ns = v,
                _ => {}
            }
        }
        Ok(s)
    }

    /// The sum over processes (min of mins, max of maxes, latest last).
    pub fn combine(all: &[Self]) -> Self {
        let open: Vec<&Self> = all.iter().filter(|s| s.open > 0).collect();
        Self {
            frames: all.iter().map(|s| s.frames).sum(),
            min: open.iter().map(|s| s.min).min().unwrap_or(0),
            max: all.iter().map(|s| s.max).max().unwrap_or(0),
            open: all.iter().map(|s| s.open).sum(),
            closed: all.iter().map(|s| s.closed).sum(),
            last_ns: all.iter().map(|s| s.last_ns).max().unwrap_or(0),
        }
    }
}

/// One client process and its command pipe.
#[derive(Debug)]
struct ClientProc {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ClientProc {
    async fn command(&mut self, command: &str) -> Result<String> {
        self.stdin.write_all(command.as_bytes()).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await?;
        self.lines
            .next_line()
            .await?
            .with_context(|| format!("client {} exited", self.pid))
    }
}

/// The client processes of one scenario.
#[derive(Debug)]
pub struct Clients {
    procs: Vec<ClientProc>,
    /// Connections that opened.
    pub ready: u64,
}

impl Clients {
    /// Spawn `processes` clients of this executable sharing `total` connections, each from its own
    /// source address 127.0.0.(10 + i), and wait until every connection opened or failed.
    pub async fn start(template: &ClientArgs, total: usize, processes: usize) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut procs = Vec::new();
        let mut offset = 0;
        for i in 0..processes {
            let count = total / processes + usize::from(i < total % processes);
            let index_offset = offset;
            offset += count;
            let mut child = Command::new(&exe)
                .arg("client")
                .args(["--addr", &template.addr.to_string()])
                .args(["--transport", template.transport.name()])
                .args(["--count", &count.to_string()])
                .args(["--local-ip", &format!("127.0.0.{}", 10 + i)])
                .args(["--event-type", &template.event_type])
                .args(["--event-types", &template.event_types.to_string()])
                .args(["--index-offset", &index_offset.to_string()])
                .args(["--sample-every", &template.sample_every.to_string()])
                .args(["--concurrency", &template.concurrency.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a client process")?;
            let pid = child.id().context("client pid")?;
            let stdin = child.stdin.take().context("client stdin")?;
            let stdout = child.stdout.take().context("client stdout")?;
            procs.push(ClientProc {
                child,
                pid,
                stdin,
                lines: BufReader::new(stdout).lines(),
            });
        }
        let mut ready = 0;
        for p in &mut procs {
            let line = p
                .lines
                .next_line()
                .await?
                .with_context(|| format!("client {} exited before it was ready", p.pid))?;
            let ok = line
                .strip_prefix("ready ok=")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("unexpected first line {line:?}"))?;
            ready += ok;
        }
        Ok(Self { procs, ready })
    }

    /// Process ids, for CPU accounting.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// Send `command` to every process; their answers.
    async fn all(&mut self, command: &str) -> Result<Vec<String>> {
        let mut answers = Vec::with_capacity(self.procs.len());
        for p in &mut self.procs {
            answers.push(p.command(command).await?);
        }
        Ok(answers)
    }

    /// Combined counters.
    pub async fn stats(&mut self) -> Result<Stats> {
        let all = self
            .all("stats")
            .await?
            .iter()
            .map(|l| Stats::parse(l))
            .collect::<Result<Vec<_>>>()?;
        Ok(Stats::combine(&all))
    }

    /// Zero the counters and drop recorded samples; `sampling` turns latency recording on/off.
    pub async fn reset(&mut self, sampling: bool) -> Result<()> {
        self.all("reset").await?;
        self.all(if sampling { "sample on" } else { "sample off" })
            .await?;
        self.samples().await?;
        Ok(())
    }

    /// Latency samples (ns) recorded since the last call, all processes.
    pub async fn samples(&mut self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for line in self.all("samples").await? {
            let rest = line.strip_prefix("samples").context("samples line")?;
            for v in rest.split_whitespace() {
                out.push(v.parse().context("sample")?);
            }
        }
        Ok(out)
    }

    /// Tell every process to exit and wait for it (bounded).
    pub async fn quit(mut self) -> Result<()> {
        for p in &mut self.procs {
            let _ = p.stdin.write_all(b"quit\n").await;
            let _ = p.stdin.flush().await;
        }
        for p in &mut self.procs {
            if tokio::time::timeout(Duration::from_secs(10), p.child.wait())
                .await
                .is_err()
            {
                p.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// Where logs go: `RIG_BENCH_LOGS` or the system temp folder.
pub fn log_dir() -> PathBuf {
    std::env::var_os("RIG_BENCH_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}
