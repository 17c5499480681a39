//! The page for people and its switch, the headers every answer carries (request id, trace
//! context, timing, the model that answered), and the request id in the access log.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_worker::page::{Asset, OPENAPI_JSON, page_bytes};
use arbiter_worker::{OPENAPI_YAML, Peer, Service, ServiceConfig};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::HeaderMap;

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

async fn call(service: &Service, req: Request<Full<Bytes>>) -> Answer {
    let response = service.handle(req, Peer::Unix).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::default()).unwrap()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn with_ui(ui: bool) -> (Service, impl Sized) {
    let config = ServiceConfig {
        ui,
        ..common::config(options("").limits)
    };
    let (service, board, slot, thread) = service_configured(
        || Ok(Fake::new(Duration::ZERO)),
        options("").models.remove(0).batching,
        config,
    );
    (service, (board, slot, thread))
}

fn predict_request() -> Request<Full<Bytes>> {
    let (ct, body) = multipart::curl("image", "w.png", "image/png", &png(4, 4, [9, 9, 9]));
    Request::post("/model_predict")
        .header("content-type", ct)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test]
async fn the_page_its_files_and_the_docs_are_served_with_security_headers() {
    let (service, _keep) = with_ui(true);
    for (path, asset) in [
        ("/", Asset::Index),
        ("/page.js", Asset::Script),
        ("/page.css", Asset::Style),
        ("/docs", Asset::Docs),
        ("/docs.js", Asset::DocsScript),
    ] {
        let a = call(&service, get(path)).await;
        let (body, media_type) = asset.content();
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.body, body, "{path}");
        assert_eq!(
            header(&a.headers, "content-type"),
            Some(media_type),
            "{path}"
        );
        assert_eq!(
            header(&a.headers, "x-content-type-options"),
            Some("nosniff")
        );
        if media_type.starts_with("text/html") {
            let csp = header(&a.headers, "content-security-policy").expect("a CSP");
            assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
            // Scripts are their own routes, and nothing comes from elsewhere.
            assert!(
                !body.contains("<script>") && !body.contains("style="),
                "{path}"
            );
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{path}"
            );
        }
    }
    // The page uses the API's routes and links the docs.
    let (html, _) = Asset::Index.content();
    let (js, _) = Asset::Script.content();
    assert!(html.contains("href=\"/docs\"") && html.contains("capture"));
    assert!(js.contains("/model_predict") && js.contains("/v2/repository/index"));
    // A few KB.
    assert!(page_bytes() < 16 * 1024, "{} bytes", page_bytes());
}

#[tokio::test]
async fn openapi_json_is_the_yaml() {
    let (service, _keep) = with_ui(true);
    let a = call(&service, get("/openapi.json")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, OPENAPI_JSON);
    let json: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let yaml: serde_json::Value = serde_yaml_ng::from_str(OPENAPI_YAML).unwrap();
    assert_eq!(json, yaml);
}

#[tokio::test]
async fn ui_false_turns_the_page_and_the_docs_off() {
    let (service, _keep) = with_ui(false);
    for path in ["/", "/page.js", "/page.css", "/docs", "/docs.js"] {
        let a = call(&service, get(path)).await;
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(a.body, format!(r#"{{"error":"no route for {path}"}}"#));
    }
    let post = Request::post("/").body(Full::default()).unwrap();
    assert_eq!(call(&service, post).await.status, 404, "not 405");
    // The API is all there.
    assert_eq!(call(&service, get("/openapi.yaml")).await.status, 200);
    assert_eq!(call(&service, predict_request()).await.status, 200);
}

#[tokio::test]
async fn an_answer_names_its_model_and_time_and_the_body_stays_the_seeds() {
    let (service, _keep) = with_ui(true);
    let a = call(&service, predict_request()).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, r#"{"result":"No Categories","status":0}"#);
    assert_eq!(header(&a.headers, "x-model-name"), Some("resnet50"));
    assert_eq!(header(&a.headers, "x-model-version"), Some("1"));
    let timing = header(&a.headers, "server-timing").unwrap();
    let ms: f64 = timing.strip_prefix("total;dur=").unwrap().parse().unwrap();
    assert!((0.0..10_000.0).contains(&ms), "{timing}");
    // Routes about no model name none.
    let h = call(&service, get("/healthz")).await;
    assert_eq!(header(&h.headers, "x-model-name"), None);
    assert!(header(&h.headers, "server-timing").is_some());
}

#[tokio::test]
async fn request_ids_are_echoed_made_or_replaced_and_traceparent_passed_on() {
    let (service, _keep) = with_ui(true);
    let sent = Request::get("/healthz")
        .header("x-request-id", "client-id-42")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Full::default())
        .unwrap();
    let a = call(&service, sent).await;
    assert_eq!(header(&a.headers, "x-request-id"), Some("client-id-42"));
    assert_eq!(
        header(&a.headers, "traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );

    let made = call(&service, get("/healthz")).await;
    let id = header(&made.headers, "x-request-id").unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(header(&made.headers, "traceparent"), None);
    let again = call(&service, get("/healthz")).await;
    assert_ne!(header(&again.headers, "x-request-id"), Some(id));

    let insane = Request::get("/nope")
        .header("x-request-id", "x".repeat(300))
        .header("traceparent", "00-zz-00f067aa0ba902b7-01")
        .body(Full::default())
        .unwrap();
    let a = call(&service, insane).await;
    assert_eq!(a.status, 404);
    assert_eq!(header(&a.headers, "x-request-id").unwrap().len(), 32);
    assert_eq!(header(&a.headers, "traceparent"), None);
    let binary = Request::get("/healthz")
        .header(
            "x-request-id",
            hyper::header::HeaderValue::from_bytes(b"a\tb\xffc").unwrap(),
        )
        .body(Full::default())
        .unwrap();
    let a = call(&service, binary).await;
    assert_eq!(header(&a.headers, "x-request-id").unwrap().len(), 32);
}

/// Collects the access log's events as `field=value` text.
#[derive(Default, Clone)]
struct Collect(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!("{}={} ", field.name(), value));
    }
}

impl tracing::Subscriber for Collect {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == "arbiter::access" {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn the_access_log_names_the_request_id_and_traceparent() {
    // The process-wide subscriber (this test is the only one that sets it): a thread's own, with
    // the other tests running beside it on no subscriber, could find the access log's callsite
    // cached as uninteresting. The other tests' lines are collected too; these are found by id.
    let collect = Collect::default();
    tracing::subscriber::set_global_default(collect.clone()).expect("no other global subscriber");
    let (service, _keep) = with_ui(true);
    let sent = Request::get("/healthz")
        .header("x-request-id", "logged-7")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Full::default())
        .unwrap();
    call(&service, sent).await;
    let made = call(&service, get("/healthz")).await;
    let made_id = header(&made.headers, "x-request-id").unwrap().to_owned();
    let lines = collect.0.lock().unwrap().clone();
    let line = |id: &str| {
        let ours: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(&format!("request_id={id} ")))
            .collect();
        assert_eq!(ours.len(), 1, "{id} in {lines:?}");
        ours[0].clone()
    };
    let sent = line("logged-7");
    assert!(
        sent.contains("traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        "{sent}"
    );
    assert!(line(&made_id).contains("traceparent=- "));
}
