//! The operator's side of the one compiler ([`rig_crds::compile`]): cluster objects → the
//! compiler's [`Objects`] → one [`Snapshot`](rig_crds::Snapshot) plus a [`Verdict`] per object.
//!
//! Every rule (what is valid, how conflicts are settled, how regexes are anchored) lives in
//! `rig_crds::compile`, which the data plane runs too, on standalone manifests and on each
//! snapshot; this module only reads what the apiserver adds (namespace, name, generation,
//! creation time).

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use rig_crds::compile::{Object, Objects};
use rig_crds::{Blacklist, EventRoute, NamedSpec, ProxyRoute};

pub use rig_crds::compile::{Compiled, Kind, Outcome, Verdict};

/// Compile all objects as of `now` (see [`Compiler::compile`]), with no memo.
pub fn compile(
    event_routes: &[Arc<EventRoute>],
    proxy_routes: &[Arc<ProxyRoute>],
    blacklists: &[Arc<Blacklist>],
    now: Timestamp,
) -> Compiled {
    Compiler::default().compile(event_routes, proxy_routes, blacklists, now)
}

/// The compiler, with its memo of compiled `ProxyRoute`s (see [`rig_crds::compile::Compiler`]).
#[derive(Debug, Default)]
pub struct Compiler {
    inner: rig_crds::compile::Compiler,
}

impl Compiler {
    /// Compile all objects as of `now`. Objects without a namespace or name (never the case for
    /// objects read from the apiserver) are skipped.
    pub fn compile(
        &mut self,
        event_routes: &[Arc<EventRoute>],
        proxy_routes: &[Arc<ProxyRoute>],
        blacklists: &[Arc<Blacklist>],
        now: Timestamp,
    ) -> Compiled {
        let objects = Objects {
            event_routes: event_routes
                .iter()
                .filter_map(|o| object(&**o, &o.spec))
                .collect(),
            proxy_routes: proxy_routes
                .iter()
                .filter_map(|o| object(&**o, &o.spec))
                .collect(),
            blacklists: blacklists
                .iter()
                .filter_map(|o| object(&**o, &o.spec))
                .collect(),
        };
        self.inner.compile(&objects, now)
    }
}

fn object<K: ResourceExt, S: Clone>(resource: &K, spec: &S) -> Option<Object<S>> {
    Some(Object {
        named: NamedSpec {
            namespace: resource.namespace()?,
            name: resource.meta().name.clone()?,
            generation: resource.meta().generation.unwrap_or_default(),
            spec: spec.clone(),
        },
        created: resource.meta().creation_timestamp.as_ref().map(|t| t.0),
    })
}

#[cfg(test)]
mod tests;
