//! Data-plane processes for tests: the real `rig-dataplane` binary on free loopback ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::wait_until;

/// How to start a data plane; ports are chosen once and kept across restarts.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// Environment variables (RIG's names).
    pub env: BTreeMap<String, String>,
    /// Inbound address.
    pub inbound: SocketAddr,
    /// Internal API address.
    pub internal: SocketAddr,
    /// A file the process's standard output goes to (else the test's).
    pub stdout: Option<PathBuf>,
}

impl DataPlaneConfig {
    /// Free loopback ports, no extra environment.
    pub fn new() -> Result<Self> {
        Ok(Self {
            env: BTreeMap::new(),
            inbound: free_addr()?,
            internal: free_addr()?,
            stdout: None,
        })
    }

    /// Send the process's standard output to `path` (appended across restarts).
    pub fn stdout_to(mut self, path: PathBuf) -> Self {
        self.stdout = Some(path);
        self
    }

    /// Add an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }
}

/// A running data plane; killed when dropped.
#[derive(Debug)]
pub struct DataPlane {
    /// Its configuration.
    pub config: DataPlaneConfig,
    child: Child,
}

/// A free TCP port on 127.0.0.1.
///
/// Chosen outside the kernel's ephemeral range (where `:0` would pick, and where every outgoing
/// connection — Kafka clients, HTTP clients — takes its local port), so a port released here is not
/// taken by someone else's connection before the data plane binds it.
pub fn free_addr() -> Result<SocketAddr> {
    let mut seed = [0u8; 4];
    getrandom_fill(&mut seed);
    let mut n = u32::from_le_bytes(seed);
    for _ in 0..200 {
        // xorshift: a different candidate each time.
        n ^= n << 13;
        n ^= n >> 17;
        n ^= n << 5;
        let port = 20_000 + (n % 12_000) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Ok(listener.local_addr()?);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Some randomness without a dependency: the clock's nanoseconds and the process id.
fn getrandom_fill(out: &mut [u8; 4]) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    *out = (nanos ^ std::process::id().rotate_left(16) ^ 0x9e37_79b9).to_le_bytes();
}

/// Run the binary with `env` (on unused loopback ports) and expect it to refuse to start: it must
/// exit unsuccessfully within 30 s. Returns its standard error.
pub async fn refused(env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(binary().expect("binary"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RIG_BIND_ADDRESS", "127.0.0.1")
        .env(
            "INBOUND_PORT",
            free_addr().expect("port").port().to_string(),
        )
        .env(
            "API_HTTP_PORT",
            free_addr().expect("port").port().to_string(),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the process exits at start")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the process must refuse to start with {env:?}; stderr: {stderr}"
    );
    stderr
}

/// The `rig-dataplane` binary next to the test executable (`e2e/test.sh` builds it first), or
/// `RIG_DATAPLANE_BIN`.
pub fn binary() -> Result<PathBuf> {
    crate::workspace_binary("rig-dataplane", "RIG_DATAPLANE_BIN")
}

impl DataPlane {
    /// Start a data plane and wait until its health endpoint answers.
    pub async fn start(config: DataPlaneConfig) -> Result<Self> {
        let mut cmd = Command::new(binary()?);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("RIG_BIND_ADDRESS", "127.0.0.1")
            .env("INBOUND_PORT", config.inbound.port().to_string())
            .env("API_HTTP_PORT", config.internal.port().to_string())
            .envs(&config.env)
            .stdin(Stdio::null())
            .stdout(match &config.stdout {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .context("the data plane's stdout file")?,
                ),
                None => Stdio::inherit(),
            })
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting rig-dataplane")?;
        let mut dp = Self { config, child };
        let internal = dp.config.internal;
        let mut exited = None;
        wait_until("the data plane's /health", Duration::from_secs(30), || {
            if exited.is_none() {
                exited = dp.child.try_wait().ok().flatten();
            }
            let exited = exited;
            async move {
                assert!(
                    exited.is_none(),
                    "rig-dataplane exited at start: {exited:?}"
                );
                let (status, _) = crate::http::get(internal, "/health").await.ok()?;
                (status == 200).then_some(())
            }
        })
        .await;
        Ok(dp)
    }

    /// Stop gracefully (SIGTERM), wait for the exit; returns the config for a restart.
    pub async fn stop(mut self) -> Result<DataPlaneConfig> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.kill().await?;
            }
        }
        Ok(self.config.clone())
    }

    /// Inbound address.
    pub fn inbound(&self) -> SocketAddr {
        self.config.inbound
    }

    /// Internal API address.
    pub fn internal(&self) -> SocketAddr {
        self.config.internal
    }

    /// The value of a metric line of this process (see [`crate::http::metric`]).
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        crate::http::metric(self.config.internal, line_prefix).await
    }
}
