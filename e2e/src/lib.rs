//! Support code for the end-to-end tests: the environment that `e2e/env/up.sh` started (real Kafka,
//! real kube-apiserver with etcd, helm), and helpers to wait for conditions with a deadline.
//!
//! Tests never sleep to "wait for" something: they poll a condition until a deadline
//! ([`wait_until`]) and fail with a message naming what did not happen.

pub mod access;
pub mod clients;
pub mod dataplane;
pub mod env;
pub mod http;
pub mod kafka;
pub mod kube_env;
pub mod operator;
pub mod pki;
pub mod sse;
pub mod wait;

pub use env::Env;
pub use wait::wait_until;

use std::path::PathBuf;

/// The repository root (the workspace that contains this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A workspace binary for the tests: `$<env_var>` when set, else `name` next to the test
/// executable (`target/<profile>/deps/<test>` → `target/<profile>/<name>`; `e2e/test.sh` builds it
/// first). The error says how to build it.
pub fn workspace_binary(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| anyhow::anyhow!("test executable has no target directory"))?;
    let bin = dir.join(name);
    if !bin.exists() {
        anyhow::bail!(
            "{} not found: build it with `cargo build -p {name}`",
            bin.display()
        );
    }
    Ok(bin)
}

/// A name unique to this test run, for topics, namespaces and consumer groups (lowercase, DNS-safe).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}
