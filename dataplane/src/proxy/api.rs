//! `/v3/apis` on the internal port: RIG's CRUD API for proxy definitions.
//!
//! Statuses and texts are RIG's: list and get (200, 404 `API with id=<id> doesn't exists.`),
//! create (201, 409 when active, re-activation of a deleted one), update (200, the body merged
//! over the current definition, `ref_number` + 1), soft delete (204), validation errors 400 with
//! RIG's error map. APIs from `ProxyRoute` objects are listed too (marked
//! `"managed_by": "ProxyRoute"`) but are read-only here: a write to one answers **409** with a
//! message naming the object, because the object is the source of truth and a change here would
//! be undone by the next reload.
//!
//! In cluster mode every write (`POST`, `PUT`, `DELETE`) answers **405** (`allow: GET`) with a
//! JSON `message` saying that APIs are managed by `ProxyRoute` objects: the operator's snapshot is
//! the whole route table there, and a change on one pod would neither reach the others nor
//! survive the next snapshot. Reads work as in standalone mode.

use std::sync::Arc;

use ::http::{Method, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::routes::Origin;
use super::{Proxy, RigEntry, rig};
use crate::http::{Body, json, read_body};

/// Largest accepted definition: a few hundred endpoints.
const MAX_DEFINITION_BYTES: usize = 1024 * 1024;

/// Answer a request on `/v3/apis` or `/v3/apis/<id>`.
pub async fn handle(proxy: &Arc<Proxy>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let id = path
        .strip_prefix("/v3/apis/")
        .or_else(|| path.strip_prefix("/v2/apis/"))
        .filter(|id| !id.is_empty())
        .map(percent_decode);
    let method = req.method().clone();
    if proxy.settings.cluster_mode && matches!(method, Method::POST | Method::PUT | Method::DELETE)
    {
        return managed_by_proxy_routes();
    }
    match (method, id) {
        (Method::GET, None) => list(proxy),
        (Method::GET, Some(id)) => get(proxy, &id),
        (Method::POST, None) => match body(req, proxy.settings.api_body_idle_timeout).await {
            Ok(body) => create(proxy, body),
            Err(res) => res,
        },
        (Method::PUT, Some(id)) => match body(req, proxy.settings.api_body_idle_timeout).await {
            Ok(body) => update(proxy, &id, body),
            Err(res) => res,
        },
        (Method::DELETE, Some(id)) => delete(proxy, &id),
        _ => json(
            StatusCode::NOT_FOUND,
            &json!({"errors": {"detail": "Not found"}}),
        ),
    }
}

fn percent_decode(text: &str) -> String {
    form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| text.to_owned())
}

async fn body(req: Request<Incoming>, idle: std::time::Duration) -> Result<Value, Response<Body>> {
    let json_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_type {
        return Err(crate::http::text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected a JSON body (content-type: application/json).",
        ));
    }
    let bytes = read_body(req.into_body(), MAX_DEFINITION_BYTES, idle).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        json(
            StatusCode::BAD_REQUEST,
            &json!({"api": [{"body": format!("must be a JSON object: {e}")}]}),
        )
    })
}

fn message(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    json(status, &json!({"message": text.into()}))
}

fn missing(id: &str) -> Response<Body> {
    message(
        StatusCode::NOT_FOUND,
        format!("API with id={id} doesn't exists."),
    )
}

/// Cluster mode: the route table is the operator's; writes here would be undone by the next
/// snapshot (and reach one pod only), so they are refused.
fn managed_by_proxy_routes() -> Response<Body> {
    let mut res = message(
        StatusCode::METHOD_NOT_ALLOWED,
        "In cluster mode, APIs are managed by ProxyRoute objects: create, change or delete the \
         ProxyRoute instead (kubectl apply / delete). This API is read-only here.",
    );
    res.headers_mut()
        .insert(header::ALLOW, ::http::HeaderValue::from_static("GET"));
    res
}

fn read_only(id: &str) -> Response<Body> {
    message(
        StatusCode::CONFLICT,
        format!(
            "API with id={id} is managed by a ProxyRoute object and is read-only here; change the ProxyRoute instead."
        ),
    )
}

fn manifest_ids(proxy: &Proxy) -> Vec<String> {
    proxy
        .manifest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|a| a.shared.id.clone())
        .collect()
}

fn list(proxy: &Proxy) -> Response<Body> {
    let table = proxy.table();
    let mut out: Vec<Value> = table
        .apis()
        .iter()
        .filter(|a| a.origin == Origin::Manifest)
        .map(|a| a.definition.clone())
        .collect();
    out.extend(
        proxy
            .rig
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|e| e.api.is_some())
            .map(|e| e.definition.clone()),
    );
    json(StatusCode::OK, &Value::Array(out))
}

fn get(proxy: &Proxy, id: &str) -> Response<Body> {
    let table = proxy.table();
    if let Some(api) = table
        .apis()
        .iter()
        .find(|a| a.origin == Origin::Manifest && a.shared.id == id)
    {
        return json(StatusCode::OK, &api.definition);
    }
    let rig = proxy
        .rig
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match rig
        .iter()
        .find(|e| e.api.is_some() && def_id(e) == Some(id))
    {
        Some(e) => json(StatusCode::OK, &e.definition),
        None => missing(id),
    }
}

fn def_id(entry: &RigEntry) -> Option<&str> {
    entry.definition.get("id").and_then(Value::as_str)
}

fn bump(definition: &mut Value, previous: Option<&Value>) {
    let n = previous
        .and_then(|p| p.get("ref_number"))
        .and_then(Value::as_u64)
        .map_or(0, |n| n + 1);
    definition["ref_number"] = n.into();
}

fn create(proxy: &Proxy, body: Value) -> Response<Body> {
    // RIG validates what was sent (every problem at once), before defaults and before looking the
    // id up.
    if let Err(errors) = proxy.compile_rig(&rig::as_sent(body.clone())) {
        return json(StatusCode::BAD_REQUEST, &Value::Object(errors));
    }
    let mut definition = rig::with_defaults(body);
    let api = match proxy.compile_rig(&definition) {
        Ok(api) => api,
        Err(errors) => return json(StatusCode::BAD_REQUEST, &Value::Object(errors)),
    };
    let id = api.shared.id.clone();
    if manifest_ids(proxy).contains(&id) {
        return read_only(&id);
    }
    let mut rig = proxy
        .rig
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match rig.iter_mut().find(|e| def_id(e) == Some(id.as_str())) {
        Some(e) if e.api.is_some() => {
            return message(
                StatusCode::CONFLICT,
                format!("API with id={id} already exists."),
            );
        }
        Some(e) => {
            // Re-activation of a deleted definition.
            definition["active"] = true.into();
            bump(&mut definition, Some(&e.definition));
            e.definition = definition;
            e.api = Some(Arc::new(api));
        }
        None => rig.push(RigEntry {
            definition,
            api: Some(Arc::new(api)),
        }),
    }
    drop(rig);
    proxy.rebuild();
    tracing::info!(api = %id, "proxy API created");
    message(StatusCode::CREATED, "ok")
}

fn update(proxy: &Proxy, id: &str, body: Value) -> Response<Body> {
    let Value::Object(mut changes) = body else {
        return json(
            StatusCode::BAD_REQUEST,
            &json!({"api": [{"body": "must be a JSON object"}]}),
        );
    };
    changes.insert("id".into(), id.into());
    // RIG validates the body as sent (with the path's id) before looking the API up.
    if let Err(errors) = proxy.compile_rig(&rig::as_sent(Value::Object(changes.clone()))) {
        return json(StatusCode::BAD_REQUEST, &Value::Object(errors));
    }
    if manifest_ids(proxy).iter().any(|m| m == id) {
        return read_only(id);
    }
    let mut rig = proxy
        .rig
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(entry) = rig
        .iter_mut()
        .find(|e| e.api.is_some() && def_id(e) == Some(id))
    else {
        return missing(id);
    };
    let mut merged = entry.definition.clone();
    if let Some(obj) = merged.as_object_mut() {
        for (k, v) in changes {
            obj.insert(k, v);
        }
    }
    let mut merged = rig::with_defaults(merged);
    bump(&mut merged, Some(&entry.definition));
    let api = match proxy.compile_rig(&merged) {
        Ok(api) => api,
        Err(errors) => return json(StatusCode::BAD_REQUEST, &Value::Object(errors)),
    };
    entry.definition = merged;
    entry.api = Some(Arc::new(api));
    drop(rig);
    proxy.rebuild();
    tracing::info!(api = %id, "proxy API updated");
    message(StatusCode::OK, "ok")
}

fn delete(proxy: &Proxy, id: &str) -> Response<Body> {
    if manifest_ids(proxy).iter().any(|m| m == id) {
        return read_only(id);
    }
    let mut rig = proxy
        .rig
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(entry) = rig
        .iter_mut()
        .find(|e| e.api.is_some() && def_id(e) == Some(id))
    else {
        return missing(id);
    };
    let previous = entry.definition.clone();
    entry.definition["active"] = false.into();
    bump(&mut entry.definition, Some(&previous));
    entry.api = None;
    drop(rig);
    proxy.rebuild();
    tracing::info!(api = %id, "proxy API deleted");
    let mut res = Response::new(crate::http::full(""));
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}
