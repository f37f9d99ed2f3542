//! The env file written by `e2e/env/up.sh`: `KEY=VALUE` lines naming where each real component
//! listens (`KAFKA_BROKERS`, `KUBECONFIG`, `KUBE_APISERVER`, `HELM`, `KUBECTL`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why the environment could not be read.
#[derive(Debug, Error)]
pub enum Error {
    /// The env file is missing: the environment is not up.
    #[error("cannot read {path} ({source}); start the test environment with `bash e2e/env/up.sh`")]
    Missing {
        /// The file looked for.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key the test needs is not in the file (that component did not start).
    #[error("{key} is not set in {path}; did `bash e2e/env/up.sh` finish?")]
    MissingKey {
        /// The key.
        key: String,
        /// The file read.
        path: PathBuf,
    },
}

/// The running test environment.
#[derive(Debug, Clone)]
pub struct Env {
    path: PathBuf,
    values: BTreeMap<String, String>,
}

impl Env {
    /// Read the env file named by `RIG_ENV_FILE`, or `e2e/.run/env`.
    pub fn load() -> Result<Self, Error> {
        let path = std::env::var_os("RIG_ENV_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".run/env"));
        Self::from_file(&path)
    }

    /// Read a given env file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Missing {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            values: parse(&text),
        })
    }

    /// The value of `key`, or an error saying which component is missing.
    pub fn get(&self, key: &str) -> Result<&str, Error> {
        self.values
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::MissingKey {
                key: key.to_owned(),
                path: self.path.clone(),
            })
    }

    /// `host:port` of the Kafka broker.
    pub fn kafka_brokers(&self) -> Result<&str, Error> {
        self.get("KAFKA_BROKERS")
    }

    /// Path of the admin kubeconfig of the test apiserver.
    pub fn kubeconfig(&self) -> Result<&str, Error> {
        self.get("KUBECONFIG")
    }

    /// Path of the helm binary built by the environment scripts.
    pub fn helm(&self) -> Result<&str, Error> {
        self.get("HELM")
    }

    /// The kubectl command.
    pub fn kubectl(&self) -> &str {
        self.get("KUBECTL").unwrap_or("kubectl")
    }
}

fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_lines_and_last_one_wins() {
        let v = parse("# comment\nKAFKA_BROKERS=127.0.0.1:1\n\nA=b=c\nKAFKA_BROKERS=127.0.0.1:2\n");
        assert_eq!(v["KAFKA_BROKERS"], "127.0.0.1:2");
        assert_eq!(v["A"], "b=c");
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn a_missing_file_says_how_to_start_the_environment() {
        let err = Env::from_file(Path::new("/nonexistent/env")).expect_err("missing");
        assert!(err.to_string().contains("e2e/env/up.sh"), "{err}");
    }
}
