//! The chart is valid: `helm lint` passes and everything `helm template` renders (CRDs included) is
//! accepted by the real apiserver in a server-side dry run.

use rig_e2e::kube_env::{helm, helm_ok, kubectl, kubectl_ok};
use rig_e2e::{Env, repo_root};

#[test]
fn chart_lints_and_renders_objects_the_apiserver_accepts() {
    let env = Env::load().expect("test environment");
    let chart = repo_root().join("charts/rig");
    let chart = chart.to_str().expect("utf-8 path");

    // Lint and render for the version the apiserver reports (helm's offline default is 1.20).
    let version = kubectl_ok(&env, &["version", "-o", "json"], None).expect("kubectl version");
    let version: serde_json::Value = serde_json::from_str(&version).expect("version JSON");
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .expect("server gitVersion")
        .to_owned();

    let lint = helm_ok(
        &env,
        &["lint", "--strict", "--kube-version", &server, chart],
    )
    .expect("helm lint");
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let rendered = helm_ok(
        &env,
        &[
            "template",
            "rig",
            chart,
            "--namespace",
            "default",
            "--include-crds",
            "--kube-version",
            &server,
        ],
    )
    .expect("helm template");
    for kind in [
        "kind: Deployment",
        "kind: CustomResourceDefinition",
        "kind: ClusterRole",
        "kind: PodDisruptionBudget",
    ] {
        assert!(
            rendered.contains(kind),
            "{kind} missing from the rendered chart"
        );
    }

    let out = kubectl(
        &env,
        &["apply", "--dry-run=server", "-n", "default", "-f", "-"],
        Some(rendered.as_bytes()),
    )
    .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "server dry run failed:\n{stderr}\n{stdout}"
    );
    assert!(stdout.contains("(server dry run)"), "{stdout}");
    assert!(stdout.contains("deployment.apps/rig-dataplane"), "{stdout}");
    assert!(
        stdout.contains("customresourcedefinition.apiextensions.k8s.io/proxyroutes.rig.dev"),
        "{stdout}"
    );

    // A value outside values.schema.json is refused before anything reaches the cluster.
    let out = helm(
        &env,
        &[
            "template",
            "rig",
            chart,
            "--kube-version",
            &server,
            "--set",
            "dataplane.replicas=zero",
        ],
    )
    .expect("helm runs");
    assert!(
        !out.status.success(),
        "schema must reject a non-integer replica count"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replicas"),
        "the error names the value: {stderr}"
    );
}
