//! The Kubernetes API as the data plane uses it in cluster mode.
//!
//! One client per process, built at start from the in-cluster service account or `KUBECONFIG`
//! ([`Kube::connect`]), and only in cluster mode: a standalone data plane never talks to an
//! apiserver. The handle also carries where this pod writes (its namespace and name), and it is
//! shared with the request handlers through [`crate::api::state::State::kube`] (the cluster-mode
//! `POST /v3/session-blacklist` creates `Blacklist` objects with it).
//!
//! Everything written carries the field manager [`FIELD_MANAGER`].

use std::fmt;

use crate::config::Config;

/// The field manager of every write of the data plane (server-side apply and updates).
pub const FIELD_MANAGER: &str = "rig-dataplane";

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither an in-cluster service account nor a usable `KUBECONFIG` was found (the process
    /// stops: cluster mode cannot work without the apiserver).
    #[error("no Kubernetes client configuration (in-cluster service account or KUBECONFIG)")]
    Config(#[source] kube::Error),
}

/// The apiserver client and this pod's identity (module docs). Cheap to clone.
#[derive(Clone)]
pub struct Kube {
    client: kube::Client,
    namespace: String,
    pod: String,
    pod_uid: Option<String>,
}

impl fmt::Debug for Kube {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `kube::Client` is not `Debug`.
        f.debug_struct("Kube")
            .field("namespace", &self.namespace)
            .field("pod", &self.pod)
            .finish_non_exhaustive()
    }
}

impl Kube {
    /// Build the client (in-cluster or `KUBECONFIG`) for the pod `config.owner` in
    /// `config.pod_namespace`. Nothing is sent yet: an apiserver that is down shows up later, in
    /// the watches and writes, which retry.
    pub async fn connect(config: &Config) -> Result<Self, Error> {
        let client = kube::Client::try_default().await.map_err(Error::Config)?;
        let mut kube = Self::new(client, config.pod_namespace.clone(), config.owner.clone());
        kube.pod_uid = config.pod_uid.clone();
        Ok(kube)
    }

    /// A handle over an existing client.
    pub fn new(client: kube::Client, namespace: String, pod: String) -> Self {
        Self {
            client,
            namespace,
            pod,
            pod_uid: None,
        }
    }

    /// This pod's UID (`POD_UID`), when known.
    pub fn pod_uid(&self) -> Option<&str> {
        self.pod_uid.as_deref()
    }

    /// The client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// This pod's namespace (`POD_NAMESPACE`): where it writes its objects.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// This pod's name (`POD_NAME`).
    pub fn pod(&self) -> &str {
        &self.pod
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::error_chain;

    #[test]
    fn the_error_chain_names_every_cause() {
        let inner = std::io::Error::other("connection refused");
        let outer = Error::Config(kube::Error::Service(Box::new(inner)));
        let text = error_chain(&outer);
        assert!(
            text.starts_with("no Kubernetes client configuration")
                && text.ends_with(": connection refused"),
            "{text}"
        );
    }
}
