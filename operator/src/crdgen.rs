//! `rig-operator crdgen`: write the CRD manifests generated from the `rig-crds` types, or check
//! that the checked-in copies are current.
//!
//! Two copies are kept: `crds/` (for `kubectl apply -f crds/`) and `charts/rig/crds/` (Helm installs
//! CRDs from there before anything else). Both must equal what the types generate.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The folders, relative to the repository root, that hold a copy of the CRD manifests.
pub const OUTPUT_DIRS: [&str; 2] = ["crds", "charts/rig/crds"];

/// What `crdgen` should do with the generated manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Overwrite the files.
    Write,
    /// Compare only; fail listing the files that differ.
    Check,
}

/// Generate the manifests under `root` (the repository root) according to `mode`.
pub fn run(root: &Path, mode: Mode) -> Result<()> {
    let manifests = rig_crds::manifests()?;
    let mut stale: Vec<PathBuf> = Vec::new();
    for dir in OUTPUT_DIRS {
        let dir = root.join(dir);
        for (file, yaml) in &manifests {
            let path = dir.join(file);
            let current = std::fs::read_to_string(&path).ok();
            if current.as_deref() == Some(yaml.as_str()) {
                continue;
            }
            match mode {
                Mode::Write => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    std::fs::write(&path, yaml)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("wrote {}", path.display());
                }
                Mode::Check => stale.push(path),
            }
        }
    }
    if !stale.is_empty() {
        let list: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "CRD manifests differ from what the rig-crds types generate: {}\n\
             run `cargo run -p rig-operator -- crdgen` and commit the result",
            list.join(", ")
        );
    }
    Ok(())
}
