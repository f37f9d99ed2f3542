//! The Helm chart: `helm lint --strict` passes; what `helm template` renders (CRDs included) is
//! accepted by the real apiserver in a server-side dry run, with the default values and with a set
//! of non-default ones; the rendered objects carry the cluster-mode contract (environment, probes,
//! RBAC, PDBs, security context, the peers DNS names); values outside `values.schema.json` are
//! refused with an error that names them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rig_e2e::kube_env::{helm, helm_ok, kubectl, kubectl_ok};
use rig_e2e::{Env, repo_root};
use serde::Deserialize;
use serde_json::{Value, json};

/// Values that change everything the chart lets a user change.
const CUSTOM_VALUES: &str = r#"
image: {repository: registry.example.com/team, tag: "1.2.3", pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
commonAnnotations: {argocd.argoproj.io/sync-wave: "1"}
operator:
  replicas: 3
  image: {repository: registry.example.com/custom/operator, tag: op-9}
  streamPort: 9191
  leaseNamespace: rig-smoke-leases
  watchNamespace: team-a
  logLevel: debug
  env: {RIG_EXTRA: "x"}
  resources: {requests: {cpu: 200m, memory: 128Mi}, limits: {cpu: "1", memory: 512Mi}}
  podAnnotations: {example.com/team: gateway}
  pdb: {enabled: true, maxUnavailable: "50%"}
dataplane:
  replicas: 4
  inboundPort: 8080
  internalPort: 8081
  kafka:
    brokers: "kafka-0.kafka:9092,kafka-1.kafka:9092"
    sourceTopics: [greetings, orders]
    responseTopics: [responses]
  jwt:
    secretKeyRef: {name: rig-jwt, key: hs512}
    algorithm: RS256,ES256
    jwks: https://issuer.example.com/.well-known/jwks.json
    sessionField: /sid
  tokenKey:
    secretKeyRef: {name: rig-token, key: token}
  tls:
    secretName: rig-tls
    inboundHttpsPort: 8443
    internalHttpsPort: 8444
    keyPassword: {secretKeyRef: {name: rig-tls-pass, key: pass}}
    reloadIntervalMs: 5000
  snapshotCache: {enabled: false}
  logLevel: warn
  env: {MAX_CONNECTIONS_PER_SESSION: "3"}
  extraEnv:
    - name: EXTRACTORS
      valueFrom: {configMapKeyRef: {name: rig-extractors, key: extractors.json}}
  preStopSleepSeconds: 0
  terminationGracePeriodSeconds: 45
  resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {memory: 4Gi}}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: gateway, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions: [{key: example.com/pool, operator: In, values: [edge]}]
  pdb: {enabled: false, maxUnavailable: 1}
  service: {type: NodePort, nodePort: 30444, annotations: {example.com/lb: internal}}
serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}
"#;

/// Namespaces of the non-default install (created for real: a dry run needs them to exist).
const CUSTOM_NAMESPACE: &str = "rig-smoke-system";
const CUSTOM_LEASE_NAMESPACE: &str = "rig-smoke-leases";

struct Chart {
    env: Env,
    path: String,
    /// The apiserver's version: lint and render for it (helm's offline default is 1.20).
    kube_version: String,
}

impl Chart {
    fn new() -> Self {
        let env = Env::load().expect("test environment");
        let path = repo_root().join("charts/rig");
        let path = path.to_str().expect("utf-8 path").to_owned();
        let version = kubectl_ok(&env, &["version", "-o", "json"], None).expect("kubectl version");
        let version: Value = serde_json::from_str(&version).expect("version JSON");
        let kube_version = version["serverVersion"]["gitVersion"]
            .as_str()
            .expect("server gitVersion")
            .to_owned();
        Self {
            env,
            path,
            kube_version,
        }
    }

    /// `helm lint --strict` with the given extra arguments; the output, whether it passed or not.
    fn lint(&self, extra: &[&str]) -> (bool, String) {
        let mut args = vec![
            "lint",
            "--strict",
            "--kube-version",
            &self.kube_version,
            &self.path,
        ];
        args.extend_from_slice(extra);
        let out = helm(&self.env, &args).expect("helm runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `helm template <release> --namespace <ns> --include-crds` plus `extra`: the YAML text.
    fn template(&self, release: &str, namespace: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "template",
            release,
            &self.path,
            "--namespace",
            namespace,
            "--include-crds",
            "--kube-version",
            &self.kube_version,
        ];
        args.extend_from_slice(extra);
        helm_ok(&self.env, &args).expect("helm template")
    }

    /// Apply `objects` in a server-side dry run; the objects the apiserver returns.
    fn dry_run(&self, objects: &[Value]) -> Vec<Value> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let input = serde_json::to_vec(&list).expect("JSON");
        let out = kubectl(
            &self.env,
            &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
            Some(&input),
        )
        .expect("kubectl runs");
        assert!(
            out.status.success(),
            "server dry run failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let applied: Value = serde_json::from_slice(&out.stdout).expect("dry-run JSON");
        applied["items"].as_array().expect("items").clone()
    }

    /// A values file holding `text`, removed when dropped.
    fn values_file(&self, tag: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("rig-helm-smoke-{tag}-{}.yaml", std::process::id()));
        std::fs::write(&path, text).expect("write values file");
        TempFile(path)
    }
}

struct TempFile(PathBuf);

impl TempFile {
    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every object in a multi-document YAML stream (empty documents skipped).
fn parse(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the rendered objects"))
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The only container of a workload's pod template.
fn container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// The entry of environment variable `name` (panics naming it when absent).
fn env_var<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name} missing: {}", container["env"]))
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    env_var(container, name)["value"]
        .as_str()
        .unwrap_or_else(|| panic!("env {name} has no plain value"))
}

fn has_env(container: &Value, name: &str) -> bool {
    container["env"]
        .as_array()
        .is_some_and(|env| env.iter().any(|e| e["name"] == name))
}

/// The container port number behind a probe's named port.
fn probe(container: &Value, which: &str) -> (String, u64) {
    let get = &container[which]["httpGet"];
    let port_name = get["port"].as_str().expect("probes use named ports");
    let port = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == port_name)
        .unwrap_or_else(|| panic!("{which} names port {port_name}, which the container lacks"));
    (
        get["path"].as_str().expect("probe path").to_owned(),
        port["containerPort"].as_u64().expect("port number"),
    )
}

/// Whether `selector` (matchLabels or a Service's selector) selects the pods of `workload`.
fn selects(selector: &Value, workload: &Value) -> bool {
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    let selector = selector.as_object().expect("selector map");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

/// A Role's or ClusterRole's rules as (group, resource, sorted verbs).
fn rules(role: &Value) -> BTreeSet<(String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .unwrap_or_else(|| panic!("rule without {key}: {rule}"))
                .iter()
                .map(|s| s.as_str().expect("string").to_owned())
                .collect()
        };
        let mut verbs = strings("verbs");
        verbs.sort();
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                out.insert((group.clone(), resource, verbs.clone()));
            }
        }
    }
    out
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> (String, String, Vec<String>) {
    let mut verbs: Vec<String> = verbs.iter().map(|v| (*v).to_owned()).collect();
    verbs.sort();
    (group.to_owned(), resource.to_owned(), verbs)
}

/// The binding `name` grants `role_kind`/`role` to the ServiceAccount `account` in `namespace`.
fn assert_binding(binding: &Value, role_kind: &str, role: &str, account: &str, namespace: &str) {
    assert_eq!(binding["roleRef"]["kind"], role_kind, "{binding}");
    assert_eq!(binding["roleRef"]["name"], role, "{binding}");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": account, "namespace": namespace}]),
        "{binding}"
    );
}

/// Non-root, read-only root filesystem, no privilege escalation, no capabilities.
fn assert_locked_down(workload: &Value) {
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{pod}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &container(workload)["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
}

/// The parts of the cluster-mode contract every install must satisfy, whatever the values.
struct Install<'a> {
    objects: &'a [Value],
    fullname: &'a str,
    namespace: &'a str,
    lease_namespace: &'a str,
}

impl Install<'_> {
    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.fullname)
    }

    fn operator(&self) -> &Value {
        find(self.objects, "Deployment", &self.name("operator"))
    }

    fn dataplane(&self) -> &Value {
        find(self.objects, "StatefulSet", &self.name("dataplane"))
    }

    fn assert_contract(&self) {
        let ns = self.namespace;
        // Every namespaced object goes to the release namespace, except the election Role and
        // the election Lease itself (the release owns it, so uninstalling removes it).
        for o in self.objects {
            let kind = o["kind"].as_str().unwrap_or_default();
            let cluster_scoped = matches!(
                kind,
                "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition"
            );
            let meta_ns = o["metadata"]["namespace"].as_str();
            if cluster_scoped {
                assert_eq!(meta_ns, None, "{kind} is cluster-scoped");
            } else if o["metadata"]["name"] == self.name("operator-leader-election").as_str()
                || (kind == "Lease" && o["metadata"]["name"] == "rig-operator")
            {
                assert_eq!(meta_ns, Some(self.lease_namespace), "{kind} election");
            } else {
                assert_eq!(meta_ns, Some(ns), "{kind} {}", o["metadata"]["name"]);
            }
        }

        // Operator: `run`, Downward API identity, Lease namespace, stream port, probes.
        let operator = self.operator();
        let op = container(operator);
        assert_eq!(op["args"], json!(["run"]));
        assert_eq!(
            env_var(op, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(
            env_var(op, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert_eq!(
            env_value(op, "RIG_OPERATOR_LEASE_NAMESPACE"),
            self.lease_namespace
        );
        // The data planes' report Leases live with them, in the release namespace (also when the
        // operator watches another namespace for routes).
        assert_eq!(env_value(op, "RIG_OPERATOR_REPORT_NAMESPACE"), ns);
        let stream_port = op["ports"][0]["containerPort"].as_u64().expect("port");
        assert_eq!(
            env_value(op, "RIG_OPERATOR_STREAM_ADDR"),
            format!("0.0.0.0:{stream_port}")
        );
        assert_eq!(probe(op, "livenessProbe"), ("/healthz".into(), stream_port));
        assert_eq!(probe(op, "readinessProbe"), ("/readyz".into(), stream_port));
        assert!(op["resources"]["requests"]["memory"].is_string(), "{op}");
        assert_locked_down(operator);

        let op_svc = find(self.objects, "Service", &self.name("operator"));
        assert!(selects(&op_svc["spec"]["selector"], operator));
        assert_eq!(
            op_svc["spec"]["ports"][0]["port"].as_u64(),
            Some(stream_port)
        );

        // Data plane: operator URL, identity, peers by stable DNS name, probes, drain.
        let dataplane = self.dataplane();
        let dp = container(dataplane);
        assert_eq!(
            env_value(dp, "RIG_OPERATOR_URL"),
            format!("http://{}.{ns}.svc:{stream_port}", self.name("operator"))
        );
        assert_eq!(
            env_var(dp, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(
            env_var(dp, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        let internal_port = probe(dp, "readinessProbe").1;
        assert_eq!(
            probe(dp, "readinessProbe"),
            ("/readyz".into(), internal_port)
        );
        assert_eq!(
            probe(dp, "livenessProbe"),
            ("/healthz".into(), internal_port)
        );
        assert_eq!(
            env_value(dp, "API_HTTP_PORT"),
            internal_port.to_string(),
            "the probes use the internal API port"
        );
        // The peers pattern resolves because the StatefulSet's pods get <pod>.<serviceName>
        // hostnames under a headless Service that selects them, even while not ready.
        let peers = self.name("peers");
        assert_eq!(
            env_value(dp, "RIG_PEERS"),
            format!("*=http://{{owner}}.{peers}.{ns}.svc:{internal_port}")
        );
        assert_eq!(dataplane["spec"]["serviceName"], peers.as_str());
        // Every pod has the same connection-token key, from a Secret, so that each accepts the
        // tokens the others issued (and forwards the request to their owner).
        assert!(
            env_var(dp, "RIG_TOKEN_KEY")["valueFrom"]["secretKeyRef"]["name"].is_string(),
            "{dp}"
        );
        let peers_svc = find(self.objects, "Service", &peers);
        assert_eq!(peers_svc["spec"]["clusterIP"], "None");
        assert_eq!(peers_svc["spec"]["publishNotReadyAddresses"], true);
        assert!(selects(&peers_svc["spec"]["selector"], dataplane));
        assert_eq!(
            dataplane["spec"]["template"]["spec"]["enableServiceLinks"],
            false
        );
        assert_locked_down(dataplane);
        let grace = dataplane["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace period");
        let pre_stop = dp["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            grace >= pre_stop + 10,
            "grace {grace}s leaves the 10 s drain no room after a {pre_stop}s preStop"
        );

        // Services: inbound and internal ports reach the data plane's named ports.
        for (svc, port) in [("inbound", "inbound"), ("internal", "internal")] {
            let svc = find(self.objects, "Service", &self.name(svc));
            assert!(selects(&svc["spec"]["selector"], dataplane));
            assert_eq!(svc["spec"]["ports"][0]["targetPort"], port);
        }

        // RBAC, exactly as the contract says.
        let sa_dp = self.name("dataplane");
        let sa_op = self.name("operator");
        assert_eq!(
            dataplane["spec"]["template"]["spec"]["serviceAccountName"],
            sa_dp.as_str()
        );
        assert_eq!(
            operator["spec"]["template"]["spec"]["serviceAccountName"],
            sa_op.as_str()
        );
        find(self.objects, "ServiceAccount", &sa_dp);
        find(self.objects, "ServiceAccount", &sa_op);
        assert_eq!(
            rules(find(self.objects, "ClusterRole", &sa_dp)),
            BTreeSet::from([rule("rig.dev", "blacklists", &["get", "list", "watch"])])
        );
        let revocations = self.name("dataplane-revocations");
        assert_eq!(
            rules(find(self.objects, "Role", &revocations)),
            BTreeSet::from([rule("rig.dev", "blacklists", &["create", "update"])])
        );
        assert_binding(
            find(self.objects, "RoleBinding", &revocations),
            "Role",
            &revocations,
            &sa_dp,
            ns,
        );
        let reports = self.name("dataplane-reports");
        assert_eq!(
            rules(find(self.objects, "Role", &reports)),
            BTreeSet::from([rule(
                "coordination.k8s.io",
                "leases",
                &["get", "create", "update", "patch", "delete"]
            )])
        );
        assert_binding(
            find(self.objects, "ClusterRoleBinding", &sa_dp),
            "ClusterRole",
            &sa_dp,
            &sa_dp,
            ns,
        );
        assert_binding(
            find(self.objects, "RoleBinding", &reports),
            "Role",
            &reports,
            &sa_dp,
            ns,
        );
        let mut operator_rules = BTreeSet::new();
        for kind in ["eventroutes", "proxyroutes", "blacklists"] {
            operator_rules.insert(rule("rig.dev", kind, &["get", "list", "watch"]));
            operator_rules.insert(rule(
                "rig.dev",
                &format!("{kind}/status"),
                &["get", "patch", "update"],
            ));
        }
        operator_rules.insert(rule(
            "coordination.k8s.io",
            "leases",
            &["get", "list", "watch"],
        ));
        for group in ["", "events.k8s.io"] {
            operator_rules.insert(rule(group, "events", &["create", "patch"]));
        }
        assert_eq!(
            rules(find(self.objects, "ClusterRole", &sa_op)),
            operator_rules
        );
        let election = self.name("operator-leader-election");
        assert_eq!(
            rules(find(self.objects, "Role", &election)),
            BTreeSet::from([rule("coordination.k8s.io", "leases", &["create", "update"])])
        );
        assert_binding(
            find(self.objects, "ClusterRoleBinding", &sa_op),
            "ClusterRole",
            &sa_op,
            &sa_op,
            ns,
        );
        assert_binding(
            find(self.objects, "RoleBinding", &election),
            "Role",
            &election,
            &sa_op,
            ns,
        );
    }

    /// A PodDisruptionBudget exists for `workload` and selects exactly its pods.
    fn assert_pdb(&self, name: &str, workload: &Value) -> &Value {
        let pdb = find(self.objects, "PodDisruptionBudget", &self.name(name));
        assert!(selects(&pdb["spec"]["selector"]["matchLabels"], workload));
        pdb
    }
}

#[test]
fn chart_lints_strictly_with_default_and_custom_values() {
    let chart = Chart::new();
    let (ok, out) = chart.lint(&[]);
    assert!(ok && out.contains("0 chart(s) failed"), "{out}");
    let values = chart.values_file("lint", CUSTOM_VALUES);
    let (ok, out) = chart.lint(&["-f", values.arg()]);
    assert!(ok && out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn default_values_render_the_contract_and_the_apiserver_accepts_them() {
    let chart = Chart::new();
    let objects = parse(&chart.template("rig", "default", &[]));
    let install = Install {
        objects: &objects,
        fullname: "rig",
        namespace: "default",
        lease_namespace: "default",
    };
    install.assert_contract();

    let operator = install.operator();
    let dataplane = install.dataplane();
    assert_eq!(operator["spec"]["replicas"], 2);
    assert_eq!(dataplane["spec"]["replicas"], 2);
    let op = container(operator);
    let dp = container(dataplane);
    assert_eq!(op["image"], "ghcr.io/rig-dev/rig-operator:0.1.0");
    assert_eq!(dp["image"], "ghcr.io/rig-dev/rig-dataplane:0.1.0");
    assert_eq!(probe(op, "readinessProbe").1, 9090);
    assert_eq!(probe(dp, "readinessProbe").1, 4010);
    assert_eq!(env_value(dp, "INBOUND_PORT"), "4000");
    assert_eq!(
        env_value(dp, "RIG_OPERATOR_URL"),
        "http://rig-operator.default.svc:9090"
    );
    assert_eq!(
        env_value(dp, "RIG_PEERS"),
        "*=http://{owner}.rig-peers.default.svc:4010"
    );
    assert!(
        !has_env(op, "RIG_OPERATOR_WATCH_NAMESPACE"),
        "cluster-wide by default"
    );
    for unset in [
        "JWT_ALG",
        "JWT_JWKS",
        "JWT_SESSION_FIELD",
        "KAFKA_SOURCE_TOPICS",
        "HTTPS_CERTFILE",
        "HTTPS_KEYFILE",
        "HTTPS_KEYFILE_PASS",
    ] {
        assert!(!has_env(dp, unset), "{unset}: the data plane's default");
    }
    assert!(
        !has_env(dp, "JWT_SECRET_KEY"),
        "no JWT key unless a Secret is named"
    );

    // No token-key Secret named: the chart makes one with a random key of at least 16 bytes.
    assert_eq!(
        env_var(dp, "RIG_TOKEN_KEY")["valueFrom"],
        json!({"secretKeyRef": {"name": "rig-token-key", "key": "RIG_TOKEN_KEY"}})
    );
    let secret = find(&objects, "Secret", "rig-token-key");
    let encoded = secret["data"]["RIG_TOKEN_KEY"].as_str().expect("key data");
    let padding = encoded.bytes().rev().take_while(|b| *b == b'=').count();
    assert!(
        encoded.len() * 3 / 4 - padding >= 16,
        "RIG_TOKEN_KEY needs at least 16 bytes"
    );

    // The snapshot cache lives on an emptyDir mounted where RIG_SNAPSHOT_CACHE points.
    let cache = env_value(dp, "RIG_SNAPSHOT_CACHE");
    let mount = dp["volumeMounts"]
        .as_array()
        .expect("volume mounts")
        .iter()
        .find(|m| cache.starts_with(m["mountPath"].as_str().unwrap_or("-")))
        .expect("the snapshot cache path is on a mounted volume");
    let volume = dataplane["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    assert!(volume["emptyDir"].is_object(), "{volume}");

    // Graceful drain: out of the endpoints first, then the data plane's own drain.
    assert_eq!(dp["lifecycle"]["preStop"]["sleep"]["seconds"], 5);

    // Replicas spread over nodes when they can.
    for workload in [operator, dataplane] {
        let term = &workload["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"];
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert!(selects(&term["labelSelector"]["matchLabels"], workload));
    }

    assert_eq!(
        install.assert_pdb("operator", operator)["spec"]["maxUnavailable"],
        1
    );
    assert_eq!(
        install.assert_pdb("dataplane", dataplane)["spec"]["maxUnavailable"],
        1
    );
    let found = kinds(&objects);
    assert!(!found.contains("ServiceMonitor"), "off by default");
    assert!(found.contains("CustomResourceDefinition"));

    // The apiserver accepts everything, and keeps what matters (nothing dropped by a disabled
    // feature gate: the preStop sleep action needs Kubernetes 1.30).
    let applied = chart.dry_run(&objects);
    assert_eq!(applied.len(), objects.len());
    let sts = find(&applied, "StatefulSet", "rig-dataplane");
    assert_eq!(
        container(sts)["lifecycle"]["preStop"]["sleep"]["seconds"],
        5
    );
    for name in [
        "eventroutes.rig.dev",
        "proxyroutes.rig.dev",
        "blacklists.rig.dev",
    ] {
        find(&applied, "CustomResourceDefinition", name);
    }
}

#[test]
fn custom_values_render_what_they_say_and_the_apiserver_accepts_them() {
    let chart = Chart::new();
    let values = chart.values_file("custom", CUSTOM_VALUES);
    let objects = parse(&chart.template("edge", CUSTOM_NAMESPACE, &["-f", values.arg()]));
    let install = Install {
        objects: &objects,
        fullname: "edge-rig",
        namespace: CUSTOM_NAMESPACE,
        lease_namespace: CUSTOM_LEASE_NAMESPACE,
    };
    install.assert_contract();

    let operator = install.operator();
    let dataplane = install.dataplane();
    let op = container(operator);
    let dp = container(dataplane);
    assert_eq!(operator["spec"]["replicas"], 3);
    assert_eq!(dataplane["spec"]["replicas"], 4);
    assert_eq!(op["image"], "registry.example.com/custom/operator:op-9");
    assert_eq!(dp["image"], "registry.example.com/team/rig-dataplane:1.2.3");
    assert_eq!(dp["imagePullPolicy"], "Always");
    for workload in [operator, dataplane] {
        assert_eq!(
            workload["spec"]["template"]["spec"]["imagePullSecrets"],
            json!([{"name": "regcred"}])
        );
    }
    assert_eq!(
        op["resources"],
        json!({"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}})
    );
    assert_eq!(dp["resources"]["limits"]["memory"], "4Gi");
    assert_eq!(env_value(op, "RIG_OPERATOR_WATCH_NAMESPACE"), "team-a");
    assert_eq!(env_value(op, "RUST_LOG"), "debug");
    assert_eq!(env_value(op, "RIG_EXTRA"), "x");
    assert_eq!(probe(op, "readinessProbe").1, 9191);
    assert_eq!(
        env_value(dp, "RIG_OPERATOR_URL"),
        "http://edge-rig-operator.rig-smoke-system.svc:9191"
    );
    assert_eq!(
        env_value(dp, "RIG_PEERS"),
        "*=http://{owner}.edge-rig-peers.rig-smoke-system.svc:8081"
    );
    assert_eq!(env_value(dp, "INBOUND_PORT"), "8080");
    assert_eq!(env_value(dp, "API_HTTP_PORT"), "8081");
    assert_eq!(
        env_value(dp, "KAFKA_BROKERS"),
        "kafka-0.kafka:9092,kafka-1.kafka:9092"
    );
    assert_eq!(env_value(dp, "KAFKA_SOURCE_TOPICS"), "greetings,orders");
    assert_eq!(env_value(dp, "PROXY_KAFKA_RESPONSE_TOPICS"), "responses");
    assert_eq!(
        env_var(dp, "JWT_SECRET_KEY")["valueFrom"],
        json!({"secretKeyRef": {"name": "rig-jwt", "key": "hs512"}})
    );
    assert_eq!(env_value(dp, "JWT_ALG"), "RS256,ES256");
    assert_eq!(
        env_value(dp, "JWT_JWKS"),
        "https://issuer.example.com/.well-known/jwks.json"
    );
    assert_eq!(
        env_var(dp, "RIG_TOKEN_KEY")["valueFrom"],
        json!({"secretKeyRef": {"name": "rig-token", "key": "token"}})
    );
    assert!(
        !kinds(&objects).contains("Secret"),
        "a named token-key Secret is the user's"
    );
    assert_eq!(env_value(dp, "JWT_SESSION_FIELD"), "/sid");
    assert_eq!(env_value(dp, "MAX_CONNECTIONS_PER_SESSION"), "3");
    assert_eq!(
        env_var(dp, "EXTRACTORS")["valueFrom"]["configMapKeyRef"]["name"],
        "rig-extractors"
    );
    assert_eq!(env_value(dp, "RUST_LOG"), "warn");
    assert!(!has_env(dp, "RIG_SNAPSHOT_CACHE"), "cache disabled");
    // TLS from the Secret, mounted whole (a renewal reaches the pod), on its own ports.
    assert_eq!(
        dataplane["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "tls", "secret": {"secretName": "rig-tls"}}])
    );
    assert_eq!(
        dp["volumeMounts"],
        json!([{"name": "tls", "mountPath": "/etc/rig/tls", "readOnly": true}])
    );
    assert_eq!(env_value(dp, "HTTPS_CERTFILE"), "/etc/rig/tls/tls.crt");
    assert_eq!(env_value(dp, "HTTPS_KEYFILE"), "/etc/rig/tls/tls.key");
    assert_eq!(env_value(dp, "INBOUND_HTTPS_PORT"), "8443");
    assert_eq!(env_value(dp, "API_HTTPS_PORT"), "8444");
    assert_eq!(env_value(dp, "RIG_TLS_RELOAD_INTERVAL_MS"), "5000");
    assert_eq!(
        env_var(dp, "HTTPS_KEYFILE_PASS")["valueFrom"]["secretKeyRef"],
        json!({"name": "rig-tls-pass", "key": "pass"})
    );
    let ports: Vec<(String, u64)> = dp["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["containerPort"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(ports.contains(&("inbound-tls".into(), 8443)), "{ports:?}");
    assert!(ports.contains(&("internal-tls".into(), 8444)), "{ports:?}");
    assert!(dp["lifecycle"].is_null(), "preStopSleepSeconds 0: no hook");
    let pod = &dataplane["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 45);
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(pod["tolerations"][0]["value"], "gateway");
    assert!(
        pod["affinity"]["podAntiAffinity"].is_null(),
        "the user's affinity replaces ours"
    );
    assert!(pod["affinity"]["nodeAffinity"].is_object());
    assert_eq!(
        operator["spec"]["template"]["metadata"]["annotations"]["example.com/team"],
        "gateway"
    );

    let inbound = find(&objects, "Service", "edge-rig-inbound");
    assert_eq!(inbound["spec"]["type"], "NodePort");
    assert_eq!(inbound["spec"]["ports"][0]["nodePort"], 30444);
    assert_eq!(inbound["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        inbound["spec"]["ports"][1],
        json!({"name": "inbound-tls", "port": 8443, "targetPort": "inbound-tls", "protocol": "TCP"})
    );
    let internal = find(&objects, "Service", "edge-rig-internal");
    assert_eq!(internal["spec"]["ports"][1]["port"], 8444);
    assert_eq!(
        inbound["metadata"]["annotations"]["example.com/lb"],
        "internal"
    );
    assert_eq!(
        install.assert_pdb("operator", operator)["spec"]["maxUnavailable"],
        "50%"
    );
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "PodDisruptionBudget"
                && o["metadata"]["name"] == "edge-rig-dataplane"),
        "dataplane.pdb.enabled=false"
    );

    // The sync-wave annotation is on every templated object (not the CRDs: Helm does not template
    // crds/, and they sync first).
    for o in &objects {
        let wave = &o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"];
        if o["kind"] == "CustomResourceDefinition" {
            assert!(wave.is_null());
        } else {
            assert_eq!(wave, "1", "{} {}", o["kind"], o["metadata"]["name"]);
        }
    }

    // The ServiceMonitors scrape /metrics of the data plane on the internal Service only (not the
    // peers Service, which has a port of the same name: every pod would be scraped twice), and of
    // the operator on its stream port.
    for (monitor, service, port) in [
        ("edge-rig-dataplane", "edge-rig-internal", "internal"),
        ("edge-rig-operator", "edge-rig-operator", "stream"),
    ] {
        let monitor = find(&objects, "ServiceMonitor", monitor);
        assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("selector");
        let services: Vec<&Value> = objects
            .iter()
            .filter(|o| {
                o["kind"] == "Service"
                    && selector
                        .iter()
                        .all(|(k, v)| &o["metadata"]["labels"][k] == v)
            })
            .collect();
        assert_eq!(services.len(), 1, "{monitor} selects one Service");
        assert_eq!(services[0]["metadata"]["name"], service);
        assert!(
            services[0]["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["name"] == port),
            "{service} has the port {port}"
        );
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["port"], port);
        assert_eq!(endpoint["path"], "/metrics");
        assert_eq!(endpoint["interval"], "15s");
        assert_eq!(
            monitor["spec"]["namespaceSelector"]["matchNames"],
            json!([CUSTOM_NAMESPACE])
        );
    }

    // The dry run needs the namespaces (created for real, idempotently). The ServiceMonitor's
    // CRD belongs to the Prometheus Operator, which the test apiserver does not have: it is checked
    // above and left out of the dry run.
    for namespace in [CUSTOM_NAMESPACE, CUSTOM_LEASE_NAMESPACE] {
        let manifest =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        kubectl_ok(
            &chart.env,
            &["apply", "-f", "-"],
            Some(manifest.to_string().as_bytes()),
        )
        .expect("create namespace");
    }
    let without_monitor: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] != "ServiceMonitor")
        .cloned()
        .collect();
    let applied = chart.dry_run(&without_monitor);
    assert_eq!(applied.len(), without_monitor.len());
    let election = find(&applied, "Role", "edge-rig-operator-leader-election");
    assert_eq!(election["metadata"]["namespace"], CUSTOM_LEASE_NAMESPACE);
    let sts = find(&applied, "StatefulSet", "edge-rig-dataplane");
    assert_eq!(sts["metadata"]["namespace"], CUSTOM_NAMESPACE);
}

#[test]
fn values_outside_the_schema_are_refused_naming_them() {
    let chart = Chart::new();
    let bad = chart.values_file(
        "bad",
        "dataplane:\n  replicas: two\n  bogus: true\noperator:\n  leaseNamespace: Not_A_Namespace\n",
    );
    let (ok, out) = chart.lint(&["-f", bad.arg()]);
    assert!(!ok, "lint must fail: {out}");
    for part in [
        "/dataplane/replicas",
        "want integer",
        "'bogus' not allowed",
        "/operator/leaseNamespace",
    ] {
        assert!(out.contains(part), "lint names {part:?}: {out}");
    }

    for args in [
        vec!["-f", bad.arg()],
        vec!["--set", "dataplane.replicas=zero"],
        vec![
            "--set",
            "serviceMonitor.enabled=true,serviceMonitor.interval=often",
        ],
        vec!["--set", "dataplane.kafka.brokers=no-port-here"],
        vec!["--set", "dataplane.jwt.algorithm=none"],
    ] {
        let mut full = vec![
            "template",
            "rig",
            chart.path.as_str(),
            "--kube-version",
            chart.kube_version.as_str(),
        ];
        full.extend_from_slice(&args);
        let out = helm(&chart.env, &full).expect("helm runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must be refused");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{args:?}: {stderr}"
        );
        let named = match args[1] {
            "dataplane.replicas=zero" => "/dataplane/replicas",
            s if s.starts_with("serviceMonitor") => "/serviceMonitor/interval",
            s if s.starts_with("dataplane.kafka") => "/dataplane/kafka/brokers",
            s if s.starts_with("dataplane.jwt") => "/dataplane/jwt/algorithm",
            _ => "/dataplane/replicas",
        };
        assert!(stderr.contains(named), "{args:?} names {named}: {stderr}");
    }
}

#[test]
fn install_and_upgrade_keep_the_generated_token_key() {
    // A real `helm install` (the test apiserver runs no pods: nothing starts), then an upgrade:
    // the random RIG_TOKEN_KEY is drawn once and kept (helm lookup), so pods started by the
    // upgrade accept the tokens of the pods they replace.
    let chart = Chart::new();
    let namespace = "rig-smoke-install";
    let release = format!("smoke-{}", std::process::id());
    let manifest =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    kubectl_ok(
        &chart.env,
        &["apply", "-f", "-"],
        Some(manifest.to_string().as_bytes()),
    )
    .expect("create namespace");
    let secret = format!("{release}-rig-token-key");
    let key = || {
        kubectl_ok(
            &chart.env,
            &[
                "get",
                "secret",
                &secret,
                "-n",
                namespace,
                "-o",
                "jsonpath={.data.RIG_TOKEN_KEY}",
            ],
            None,
        )
        .expect("token-key Secret")
    };
    let install = |extra: &[&str]| {
        let mut args = vec![
            "upgrade",
            "--install",
            &release,
            &chart.path,
            "--namespace",
            namespace,
        ];
        args.extend_from_slice(extra);
        helm_ok(&chart.env, &args).expect("helm upgrade --install")
    };
    install(&[]);
    let _uninstall = Uninstall {
        env: &chart.env,
        release: &release,
        namespace,
    };
    let first = key();
    assert!(first.len() >= 24, "a key of at least 16 bytes: {first:?}");
    install(&["--set", "dataplane.replicas=3"]);
    let replicas = kubectl_ok(
        &chart.env,
        &[
            "get",
            "statefulset",
            &format!("{release}-rig-dataplane"),
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    )
    .expect("statefulset");
    assert_eq!(replicas, "3", "the upgrade was applied");
    assert_eq!(key(), first, "the upgrade kept the token key");
}

/// Uninstalls a release when the test ends, passed or not.
struct Uninstall<'a> {
    env: &'a Env,
    release: &'a str,
    namespace: &'a str,
}

impl Drop for Uninstall<'_> {
    fn drop(&mut self) {
        let _ = helm(
            self.env,
            &["uninstall", self.release, "--namespace", self.namespace],
        );
    }
}
