//! The test apiserver: a kube-rs client and a `kubectl`/`helm` runner bound to its kubeconfig.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::Env;

/// A kube-rs client for the test apiserver (admin credentials).
pub async fn client(env: &Env) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(env.kubeconfig()?).context("reading the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("building the client config")?;
    kube::Client::try_from(config).context("creating the client")
}

/// Run `kubectl` against the test apiserver; `stdin` is piped in when given.
pub fn kubectl(env: &Env, args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
    let mut cmd = Command::new(env.kubectl());
    cmd.env("KUBECONFIG", env.kubeconfig()?).args(args);
    run(cmd, stdin).with_context(|| format!("kubectl {}", args.join(" ")))
}

/// Run the environment's `helm` against the test apiserver.
pub fn helm(env: &Env, args: &[&str]) -> Result<Output> {
    let mut cmd = Command::new(env.helm()?);
    cmd.env("KUBECONFIG", env.kubeconfig()?).args(args);
    run(cmd, None).with_context(|| format!("helm {}", args.join(" ")))
}

/// Like [`kubectl`], but a non-zero exit is an error carrying stderr.
pub fn kubectl_ok(env: &Env, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    ok(kubectl(env, args, stdin)?)
}

/// Like [`helm`], but a non-zero exit is an error carrying stderr.
pub fn helm_ok(env: &Env, args: &[&str]) -> Result<String> {
    ok(helm(env, args)?)
}

/// Install the generated CRDs (`crds/*.yaml`) and wait until the apiserver serves them.
pub fn install_crds(env: &Env) -> Result<()> {
    let dir = crate::repo_root().join("crds");
    let dir = dir.to_str().context("non-UTF-8 repository path")?;
    kubectl_ok(
        env,
        &["apply", "--server-side", "--force-conflicts", "-f", dir],
        None,
    )?;
    kubectl_ok(
        env,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/eventroutes.rig.dev",
            "crd/proxyroutes.rig.dev",
            "crd/blacklists.rig.dev",
        ],
        None,
    )?;
    Ok(())
}

fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)?;
    }
    Ok(child.wait_with_output()?)
}

fn ok(out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "exit {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A new namespace named after `prefix` ([`crate::unique_name`]) on the test apiserver.
pub async fn namespace(client: &kube::Client, prefix: &str) -> Result<String> {
    use k8s_openapi::api::core::v1::Namespace;
    let name = crate::unique_name(prefix);
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .context("namespace object")?;
    kube::Api::<Namespace>::all(client.clone())
        .create(&kube::api::PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(name)
}
