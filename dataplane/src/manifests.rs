//! Standalone configuration: a file or a folder of the same YAML manifests users `kubectl apply`
//! (`EventRoute`, `ProxyRoute`, `Blacklist`), so one data-plane process runs with no cluster.
//!
//! `RIG_MANIFESTS` names a file or a folder (`*.yaml`, `*.yml`, `*.json`, read in name order;
//! multi-document YAML allowed). The set is validated whole: one bad document rejects the load,
//! with the file, the document number and the reason, and the previous configuration stays.
//! [`watch`] re-reads the set when a file changes (polled: one task, a cheap `stat` per file).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kube::ResourceExt;
use rig_crds::compile::{Object, Objects};
use rig_crds::{Blacklist, EventRoute, NamedSpec, ProxyRoute};
use serde::Deserialize;

/// Environment variable naming the manifests file or folder.
pub const ENV_MANIFESTS: &str = "RIG_MANIFESTS";

/// How often the files are checked for changes. A reload costs a few `stat` calls when nothing
/// changed; two seconds keeps edits feeling immediate.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why the manifests could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML or not a valid object of its kind.
    #[error("{path}, document {document}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based document number within the file.
        document: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The objects read from the manifests.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    /// `EventRoute` objects.
    pub event_routes: Vec<EventRoute>,
    /// `ProxyRoute` objects.
    pub proxy_routes: Vec<ProxyRoute>,
    /// `Blacklist` objects.
    pub blacklists: Vec<Blacklist>,
}

impl Manifests {
    /// The objects for the compiler. An object without a namespace is in `default`, as
    /// `kubectl apply` would put it.
    pub fn objects(&self) -> Objects {
        fn object<K: ResourceExt, S: Clone>(resource: &K, spec: &S) -> Object<S> {
            Object {
                named: NamedSpec {
                    namespace: resource.namespace().unwrap_or_else(|| "default".to_owned()),
                    name: resource.name_any(),
                    generation: resource.meta().generation.unwrap_or_default(),
                    spec: spec.clone(),
                },
                created: resource.meta().creation_timestamp.as_ref().map(|t| t.0),
            }
        }
        Objects {
            event_routes: self
                .event_routes
                .iter()
                .map(|o| object(o, &o.spec))
                .collect(),
            proxy_routes: self
                .proxy_routes
                .iter()
                .map(|o| object(o, &o.spec))
                .collect(),
            blacklists: self.blacklists.iter().map(|o| object(o, &o.spec)).collect(),
        }
    }

    /// The Kafka topics of all event routes, sorted and without duplicates.
    pub fn kafka_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .event_routes
            .iter()
            .filter_map(|r| r.spec.source.kafka.as_ref())
            .flat_map(|k| k.topics.iter().map(|t| t.0.clone()))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

/// Read and validate every manifest under `path`.
pub fn load(path: &Path) -> Result<Manifests, Error> {
    let mut out = Manifests::default();
    for file in files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let invalid = |reason: String| Error::Invalid {
                path: file.clone(),
                document: i + 1,
                reason,
            };
            let value =
                serde_yaml::Value::deserialize(document).map_err(|e| invalid(e.to_string()))?;
            if value.is_null() {
                continue; // an empty document (e.g. a trailing `---`)
            }
            let meta: TypeMeta =
                serde_yaml::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
            if meta.api_version.as_deref() != Some("rig.dev/v1alpha1") {
                return Err(invalid(format!(
                    "apiVersion must be rig.dev/v1alpha1, got {:?}",
                    meta.api_version.unwrap_or_default()
                )));
            }
            let parse_err = |e: serde_yaml::Error| invalid(e.to_string());
            match meta.kind.as_deref() {
                Some("EventRoute") => out
                    .event_routes
                    .push(serde_yaml::from_value(value).map_err(parse_err)?),
                Some("ProxyRoute") => out
                    .proxy_routes
                    .push(serde_yaml::from_value(value).map_err(parse_err)?),
                // What a spec means is judged by the compiler (`rig_crds::compile`), as in
                // cluster mode; here only the documents' form.
                Some("Blacklist") => out
                    .blacklists
                    .push(serde_yaml::from_value(value).map_err(parse_err)?),
                other => {
                    return Err(invalid(format!(
                        "kind must be EventRoute, ProxyRoute or Blacklist, got {:?}",
                        other.unwrap_or_default()
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// The manifest files under `path` (the file itself, or the folder's manifests in name order).
fn files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// One file's name, size and modification time.
pub type Fingerprint = (PathBuf, u64, Option<SystemTime>);

/// A cheap summary of the files (names, sizes, modification times): it changes when they do.
pub fn fingerprint(path: &Path) -> Vec<Fingerprint> {
    files(path)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (p, size, modified)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rig-manifests-{}-{}",
            std::process::id(),
            files.len() * 7 + files.first().map_or(0, |f| f.1.len())
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
        dir
    }

    #[test]
    fn reads_the_repository_examples_folder() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/examples");
        let m = load(&examples).expect("examples load");
        assert_eq!(m.event_routes.len(), 1);
        assert_eq!(m.proxy_routes.len(), 2);
        assert_eq!(m.blacklists.len(), 1);
        assert_eq!(m.kafka_topics(), vec!["greetings".to_owned()]);
    }

    #[test]
    fn multi_document_files_and_empty_documents() {
        let text = "apiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata: {name: a}\nspec:\n  source: {kafka: {topics: [t1]}}\n  events: [{type: x}]\n---\n---\napiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata: {name: b}\nspec:\n  source: {kafka: {topics: [t0, t1]}}\n  events: [{type: y}]\n";
        let d = dir(&[("routes.yaml", text)]);
        let m = load(&d).expect("load");
        assert_eq!(m.event_routes.len(), 2);
        assert_eq!(m.kafka_topics(), vec!["t0".to_owned(), "t1".to_owned()]);
    }

    #[test]
    fn a_bad_document_names_file_document_and_reason() {
        let text = "apiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata: {name: a}\nspec:\n  source: {kafka: {topics: [t]}}\n  events: [{type: x}]\n---\napiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata: {name: b}\nspec:\n  sauce: {}\n";
        let d = dir(&[("bad.yaml", text)]);
        let err = load(&d).expect_err("unknown field").to_string();
        assert!(
            err.contains("bad.yaml") && err.contains("document 2"),
            "{err}"
        );
        assert!(err.contains("sauce"), "{err}");
        let d = dir(&[("k.yaml", "apiVersion: v1\nkind: ConfigMap\n")]);
        let err = load(&d).expect_err("foreign kind").to_string();
        assert!(err.contains("apiVersion must be rig.dev/v1alpha1"), "{err}");
    }
}
