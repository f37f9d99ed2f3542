//! `rig-operator`: the RIG for Kubernetes control plane.
//!
//! Subcommands:
//! - `crdgen [--check] [--root DIR]`: write (or verify) the generated CRD manifests.

mod crdgen;

use std::path::PathBuf;

use anyhow::{Result, bail};

const USAGE: &str = "usage: rig-operator crdgen [--check] [--root DIR]";

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
        Some(other) => bail!("unknown subcommand {other:?}\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}
