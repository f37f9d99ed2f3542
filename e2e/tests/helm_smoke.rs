//! The chart is valid: `helm lint` passes and everything `helm template` renders (CRDs included) is
//! accepted by the real apiserver in a server-side dry run.

use rig_e2e::kube_env::{helm_ok, kubectl};
use rig_e2e::{Env, repo_root};

#[test]
fn chart_lints_and_renders_objects_the_apiserver_accepts() {
    let env = Env::load().expect("test environment");
    let chart = repo_root().join("charts/rig");
    let chart = chart.to_str().expect("utf-8 path");

    let lint = helm_ok(&env, &["lint", "--strict", chart]).expect("helm lint");
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
        ],
    )
    .expect("helm template");
    for kind in [
        "kind: Deployment",
        "kind: CustomResourceDefinition",
        "kind: ClusterRole",
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

    // A value outside values.schema.json is refused before anything reaches the cluster.
    let out = rig_e2e::kube_env::helm(
        &env,
        &["template", "rig", chart, "--set", "dataplane.replicas=zero"],
    )
    .expect("helm runs");
    assert!(
        !out.status.success(),
        "schema must reject a non-integer replica count"
    );
}
