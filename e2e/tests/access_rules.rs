//! Standalone mode (`RIG_MANIFESTS`): every access rule an `EventRoute` declares is enforced
//! (`rig_e2e::access::prove`, the same scenario cluster mode runs), and a `ProxyRoute` whose
//! `pathRegex` would escape the anchoring is refused here as the operator refuses it, at start
//! and on reload.

use std::path::PathBuf;
use std::time::Duration;

use rig_e2e::dataplane::{self, DataPlane, DataPlaneConfig};
use rig_e2e::{access, http, unique_name, wait_until};

const T: Duration = Duration::from_secs(30);

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("rig-access"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn proxy_route(name: &str, path_regex: &str, target: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: rig.dev/v1alpha1\nkind: ProxyRoute\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [{{id: get, method: GET, pathRegex: '{path_regex}'}}]\n  target: {{kind: Http, url: 'http://{target}'}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_route_access_rules_are_enforced_in_standalone_mode() {
    let (check, log) = access::check_service().await;
    let dir = temp_dir();
    std::fs::write(
        dir.join("routes.yaml"),
        access::manifests(check, "acc-sealed"),
    )
    .expect("write");
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("JWT_SECRET_KEY", access::SECRET)
        .env("RIG_MANIFESTS", dir.to_str().expect("utf-8"));
    let dp = DataPlane::start(config).await.expect("start");
    access::prove(dp.inbound(), dp.internal(), &log).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_regex_escaping_its_anchors_is_refused_at_start_and_on_reload() {
    // Something that would answer if the route were installed.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = backend.local_addr().expect("addr");
    let escaping = proxy_route("escape", "/public)|(/admin/.*", target);

    // At start: the process refuses, with the operator's reason.
    let dir = temp_dir();
    std::fs::write(dir.join("escape.yaml"), &escaping).expect("write");
    let out = std::process::Command::new(dataplane::binary().expect("binary"))
        .env("RIG_BIND_ADDRESS", "127.0.0.1")
        .env(
            "INBOUND_PORT",
            dataplane::free_addr().expect("port").port().to_string(),
        )
        .env(
            "API_HTTP_PORT",
            dataplane::free_addr().expect("port").port().to_string(),
        )
        .env("RIG_MANIFESTS", dir.as_path())
        .output()
        .expect("runs");
    assert!(!out.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ProxyRoute default/escape: InvalidPathRegex"),
        "{stderr}"
    );

    // On reload: rejected whole, the previous table stays; nothing reaches the target.
    std::fs::write(
        dir.join("escape.yaml"),
        proxy_route("escape", "/public", target),
    )
    .expect("write");
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_MANIFESTS", dir.to_str().expect("utf-8"));
    let dp = DataPlane::start(config).await.expect("start");
    std::fs::write(dir.join("escape.yaml"), &escaping).expect("write");
    wait_until("the escaping route is rejected", T, || async {
        (dp.metric("rig_config_reload_failures_total").await >= 1.0).then_some(())
    })
    .await;
    for path in ["/publicXYZ", "/x/admin/y"] {
        let (status, body) = http::get(dp.inbound(), path).await.expect("request");
        assert_eq!(
            (status, body.as_str()),
            (404, "{\"message\":\"Not Found\"}"),
            "{path}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
