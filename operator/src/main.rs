//! `rig-operator`: the RIG for Kubernetes control plane.
//!
//! Subcommands:
//! - `crdgen [--check] [--root DIR]`: write (or verify) the generated CRD manifests.
//! - `run`: the operator (configuration from the environment, see `config.rs`).

mod crdgen;

use std::path::PathBuf;

use anyhow::{Result, bail};

const USAGE: &str = "usage: rig-operator crdgen [--check] [--root DIR] | rig-operator run";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("crdgen") => {
            let mut mode = crdgen::Mode::Write;
            let mut root = PathBuf::from(".");
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--check" => mode = crdgen::Mode::Check,
                    "--root" => match args.next() {
                        Some(dir) => root = PathBuf::from(dir),
                        None => bail!("--root needs a directory\n{USAGE}"),
                    },
                    other => bail!("unknown argument {other:?}\n{USAGE}"),
                }
            }
            crdgen::run(&root, mode)
        }
        Some("run") => {
            if let Some(arg) = args.next() {
                bail!("unknown argument {arg:?}\n{USAGE}");
            }
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let config = rig_operator::config::Config::from_env()?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(rig_operator::run::run(config))
        }
        Some(other) => bail!("unknown subcommand {other:?}\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}
