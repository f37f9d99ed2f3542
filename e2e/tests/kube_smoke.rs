//! The apiserver of the test environment is real and enforces our CRDs: the generated CRDs install,
//! the examples under `crds/examples/` are accepted and read back with kube-rs, and objects that
//! break a CEL rule are rejected with the rule's message.

use kube::api::{Api, Patch, PatchParams, PostParams};
use rig_crds::proxy_route::TargetKind;
use rig_crds::{Blacklist, EventRoute, ProxyRoute};
use rig_e2e::kube_env::{self, kubectl_ok};
use rig_e2e::{Env, repo_root};
use serde::de::DeserializeOwned;

fn example<T: DeserializeOwned>(file: &str) -> T {
    let path = repo_root().join("crds/examples").join(file);
    let text = std::fs::read_to_string(&path).expect("example file");
    serde_yaml::from_str(&text).expect("example parses")
}

async fn namespace(client: &kube::Client) -> String {
    kube_env::namespace(client, "smoke")
        .await
        .expect("namespace")
}

fn rejection(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "expected Invalid, got {status:?}");
            status.message
        }
        other => panic!("expected an API rejection, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_install_and_examples_round_trip_through_the_apiserver() {
    let env = Env::load().expect("test environment");
    kube_env::install_crds(&env).expect("install CRDs");
    let client = kube_env::client(&env).await.expect("client");
    let ns = namespace(&client).await;
    let pp = PostParams::default();

    let er: EventRoute = example("eventroute.yaml");
    let got = Api::<EventRoute>::namespaced(client.clone(), &ns)
        .create(&pp, &er)
        .await
        .expect("create EventRoute");
    assert_eq!(got.spec, er.spec);

    for file in ["proxyroute.yaml", "proxyroute-kafka.yaml"] {
        let pr: ProxyRoute = example(file);
        let api = Api::<ProxyRoute>::namespaced(client.clone(), &ns);
        api.create(&pp, &pr).await.expect("create ProxyRoute");
        let back = api
            .get(pr.metadata.name.as_deref().expect("name"))
            .await
            .expect("read back");
        assert_eq!(back.spec, pr.spec, "{file}");
    }

    let bl: Blacklist = example("blacklist.yaml");
    let api = Api::<Blacklist>::namespaced(client.clone(), &ns);
    api.create(&pp, &bl).await.expect("create Blacklist");
    let back = api.get("session-3b1f2c9e").await.expect("read back");
    assert_eq!(back.spec, bl.spec);

    // `kubectl get rig` lists all three kinds through the category. Discovery catches up with a
    // new CRD shortly after it is Established, so poll (bounded) until kubectl sees the category.
    let expected = [
        "eventroute.rig.dev/greetings",
        "proxyroute.rig.dev/books",
        "proxyroute.rig.dev/orders",
        "blacklist.rig.dev/session-3b1f2c9e",
    ];
    let env2 = env.clone();
    let ns2 = ns.clone();
    let listed = rig_e2e::wait_until(
        "`kubectl get rig` to list all kinds",
        std::time::Duration::from_secs(60),
        || {
            let listed = kubectl_ok(&env2, &["get", "rig", "-n", &ns2, "-o", "name"], None).ok();
            async move { listed.filter(|l| expected.iter().all(|e| l.contains(e))) }
        },
    )
    .await;
    for e in expected {
        assert!(listed.contains(e), "{e} missing in:\n{listed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_breaking_cel_rules_are_rejected_with_the_rule_message() {
    let env = Env::load().expect("test environment");
    kube_env::install_crds(&env).expect("install CRDs");
    let client = kube_env::client(&env).await.expect("client");
    let ns = namespace(&client).await;
    let pp = PostParams::default();

    // A Kafka target without a topic.
    let mut pr: ProxyRoute = example("proxyroute.yaml");
    pr.metadata.name = Some("kafka-without-topic".into());
    pr.spec.target.kind = TargetKind::Kafka;
    pr.spec.target.url = None;
    let api = Api::<ProxyRoute>::namespaced(client.clone(), &ns);
    let msg = rejection(api.create(&pp, &pr).await.expect_err("must be rejected"));
    assert!(
        msg.contains("topic is required when the target kind is Kafka"),
        "{msg}"
    );

    // Secured endpoints without auth settings.
    let mut pr: ProxyRoute = example("proxyroute.yaml");
    pr.metadata.name = Some("secured-without-auth".into());
    pr.spec.auth = None;
    let msg = rejection(api.create(&pp, &pr).await.expect_err("must be rejected"));
    assert!(msg.contains("secured endpoints need spec.auth"), "{msg}");

    // An EventRoute with no source at all.
    let mut er: EventRoute = example("eventroute.yaml");
    er.metadata.name = Some("no-source".into());
    er.spec.source = Default::default();
    let msg = rejection(
        Api::<EventRoute>::namespaced(client.clone(), &ns)
            .create(&pp, &er)
            .await
            .expect_err("must be rejected"),
    );
    assert!(msg.contains("a source needs kafka topics"), "{msg}");

    // A Blacklist's session id is immutable (a transition rule).
    let bl: Blacklist = example("blacklist.yaml");
    let bls = Api::<Blacklist>::namespaced(client.clone(), &ns);
    bls.create(&pp, &bl).await.expect("create Blacklist");
    let patch = serde_json::json!({"spec": {"sessionId": "someone-else"}});
    let msg = rejection(
        bls.patch(
            "session-3b1f2c9e",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect_err("must be rejected"),
    );
    assert!(msg.contains("sessionId is immutable"), "{msg}");

    // The schema (not CEL) rejects what the types do not allow, e.g. a lowercase method.
    let bad = serde_json::json!({
        "apiVersion": "rig.dev/v1alpha1", "kind": "ProxyRoute",
        "metadata": {"name": "bad-method", "namespace": ns},
        "spec": {"endpoints": [{"id": "a", "method": "get", "pathRegex": "/a"}],
                 "target": {"kind": "Http", "url": "http://a:1"}}
    });
    let out = kube_env::kubectl(
        &env,
        &["create", "-f", "-"],
        Some(bad.to_string().as_bytes()),
    )
    .expect("kubectl runs");
    assert!(!out.status.success(), "lowercase method must be rejected");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unsupported value: \"get\""), "{stderr}");
}
