//! The HTTP service: routing, handlers, the request deadline and metrics.
//!
//! [`Service::handle`] turns one request into one response and never fails: every error becomes
//! a `{"error": ...}` response through [`ApiError::into_response`]. It is generic over the body
//! type, so tests drive it with in-memory bodies and no socket. Each request is counted and
//! logged once (`access.rs`); the routes that run the model share one path, [`Service::infer`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arbiter_scoreboard::{Route, Scoreboard, SlotRef, Stage};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::header::{CONNECTION, CONTENT_TYPE, EXPECT, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::access::Record;
use crate::batcher::{InferenceError, Input, JobOutput, Permit};
use crate::body::{self, BodyBudget, BoxError, content_length};
use crate::client::{Peer, client_address};
use crate::decode::DecodePool;
use crate::error::ApiError;
use crate::kserve;
use crate::models::{Models, ServedModel};
use crate::options::{IpCidr, Limits, WorkerOptions};
use crate::page::OPENAPI_JSON;
use crate::request_id::{self, REQUEST_ID, TRACEPARENT};
use crate::routes::{self, Endpoint, Matched};
use crate::upload;

/// The OpenAPI description served at `/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

/// The header naming the model that answered (or was asked and refused).
pub const MODEL_NAME: &str = "x-model-name";
/// The header with that model's version.
pub const MODEL_VERSION: &str = "x-model-version";
/// The time the server spent on the request, as `total;dur=MILLISECONDS` (W3C Server Timing).
const SERVER_TIMING: &str = "server-timing";
/// On every answer: a browser takes each for its declared type only.
const NOSNIFF: (&str, &str) = ("x-content-type-options", "nosniff");

/// Bytes of an unwanted body read and dropped, past the limit, so the client sees our error.
const DISCARD_MAX: u64 = 64 * 1024 * 1024;
/// Longest time spent dropping an unwanted body.
const DISCARD_TIME: Duration = Duration::from_secs(10);
/// Request bodies held in memory at once, at least: requests beyond it wait before reading
/// their body, its bytes left in the kernel's socket buffers (TCP backpressure), until earlier
/// bodies are decoded. Raised to the body limit when that is larger, so any allowed body fits.
const BODY_MEMORY: u64 = 16 * 1024 * 1024;
/// What a body of unknown length (chunked) reserves of [`BODY_MEMORY`] before it is read.
const UNKNOWN_LENGTH_RESERVE: u64 = 1024 * 1024;
/// The unit of the body memory semaphore's permits.
const BODY_UNIT: u64 = 1024;

/// What a route's preparation hands to the model, and what it keeps to render the answer.
struct ForModel<T> {
    /// The images, as the model's queue takes them.
    input: Input,
    /// How many images `input` holds.
    images: usize,
    /// What the route needs besides the outputs to render its answer.
    kept: T,
}

/// The service's settings, taken from [`WorkerOptions`].
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Request limits.
    pub limits: Limits,
    /// Threads preparing requests (decode, resize, parsing) per nice value they run at.
    pub preprocess_threads: usize,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpCidr>,
    /// Whether unix-socket peers are trusted proxies.
    pub trust_unix_peers: bool,
    /// Drain after this many requests.
    pub max_requests: Option<u64>,
    /// Serve the page (`/`) and the documentation (`/docs`): `server.ui`.
    pub ui: bool,
}

impl ServiceConfig {
    /// The service part of the worker's options.
    pub fn from_options(opts: &WorkerOptions) -> ServiceConfig {
        ServiceConfig {
            limits: opts.limits.clone(),
            preprocess_threads: opts.preprocess_threads.max(1),
            trusted_proxies: opts.trusted_proxies.clone(),
            trust_unix_peers: opts.trust_unix_peers,
            max_requests: opts.max_requests,
            ui: opts.ui,
        }
    }
}

/// The HTTP service of one worker. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ServiceConfig,
    models: Models,
    /// One pool of threads preparing requests per nice value they run at (`decode_nice`).
    decoders: Vec<DecodePool>,
    /// Bytes of request bodies in memory, in [`BODY_UNIT`]s.
    bodies: Arc<Semaphore>,
    body_units: u32,
    scoreboard: Scoreboard,
    slot: SlotRef,
    draining: AtomicBool,
    answered: AtomicU64,
    drain_wanted: Notify,
}

impl Service {
    /// A service answering with `models`, counting into `slot` of `scoreboard`. Starts the
    /// threads that prepare the models' requests, at each model's nice value: call it before the
    /// calling thread raises its own.
    ///
    /// # Panics
    ///
    /// If the system refuses those threads (as `std::thread::spawn` would).
    pub fn new(
        config: ServiceConfig,
        models: Models,
        scoreboard: Scoreboard,
        slot: SlotRef,
    ) -> Service {
        let mut decoders: Vec<DecodePool> = Vec::new();
        for model in models.iter() {
            let nice = decode_nice(model, &config.limits);
            if decoders.iter().all(|d| d.nice() != nice) {
                let pool = DecodePool::start(config.preprocess_threads, nice)
                    .unwrap_or_else(|e| panic!("cannot start the decode threads: {e}"));
                decoders.push(pool);
            }
        }
        // Each decoding thread reuses one image buffer instead of faulting in a new one per
        // image.
        arbiter_vision::keep_spare_buffers(config.preprocess_threads.max(1) * decoders.len());
        let body_memory = BODY_MEMORY.max(config.limits.max_body_bytes);
        let body_units = u32::try_from(body_memory.div_ceil(BODY_UNIT))
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        Service {
            inner: Arc::new(Inner {
                config,
                models,
                decoders,
                bodies: Arc::new(Semaphore::new(body_units as usize)),
                body_units,
                scoreboard,
                slot,
                draining: AtomicBool::new(false),
                answered: AtomicU64::new(0),
                drain_wanted: Notify::new(),
            }),
        }
    }

    /// The service's settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// Marks the service as draining: readiness answers 503 from now on.
    pub fn start_drain(&self) {
        self.inner.draining.store(true, Relaxed);
    }

    /// Whether the service is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Relaxed)
    }

    /// Resolves once the service wants to be drained (it answered `max_requests`).
    pub async fn drain_wanted(&self) {
        self.inner.drain_wanted.notified().await;
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.inner.answered.load(Relaxed)
    }

    /// Counts and logs a request whose headers did not arrive in time (answered 408 by the
    /// connection, before any routing).
    pub fn note_header_timeout(&self, peer: Peer) {
        let client = self.client_address(&HeaderMap::new(), peer);
        let started = Instant::now() - self.inner.config.limits.header_read_timeout;
        let id = request_id::new_id();
        let mut record = Record::begin(
            &self.inner.slot,
            Route::Other,
            started,
            ("-", "-"),
            &client,
            (&id, None),
        );
        record.finish(408, 0);
    }

    /// Answers one request. Never fails and never panics on any input.
    pub async fn handle<B>(&self, req: Request<B>, peer: Peer) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let client = self.client_address(req.headers(), peer);
        let request_id = request_id::request_id(req.headers());
        let traceparent = request_id::traceparent(req.headers());
        let mut matched = routes::find(&method, &path);
        if !self.inner.config.ui
            && matches!(
                matched,
                Matched::Found(Endpoint::Page(_), _)
                    | Matched::MethodNotAllowed(Endpoint::Page(_), _)
            )
        {
            matched = Matched::NotFound;
        }
        let route = match &matched {
            Matched::Found(endpoint, _) | Matched::MethodNotAllowed(endpoint, _) => {
                endpoint.metric_route()
            }
            Matched::NotFound => Route::Other,
        };
        let mut record = Record::begin(
            &self.inner.slot,
            route,
            started,
            (&method, &path),
            &client,
            (&request_id, traceparent.as_deref()),
        );
        let mut answered_by = None;

        let deadline = self.inner.config.limits.request_deadline;
        let query = req.uri().query().map(str::to_owned);
        let result = match self.model_of(&matched, query.as_deref()) {
            Err(e) => Err(e),
            Ok(model) => {
                if let Some(model) = model {
                    record.model(&model.stats, &model.name);
                    answered_by = Some((model.name.as_str(), model.version.as_str()));
                }
                let work = self.dispatch(matched, model, req);
                match tokio::time::timeout(deadline, work).await {
                    Ok(result) => result,
                    Err(_) => Err(ApiError::DeadlineExceeded(deadline.as_secs())),
                }
            }
        };
        // A refusal for a full queue closes the connection: a client that sends again at once
        // (ignoring Retry-After) pays a new connection for it, and its unread body goes with it.
        let close = matches!(result, Err(ApiError::Overloaded))
            && self.inner.config.limits.close_on_overload;
        let mut response = result.unwrap_or_else(ApiError::into_response);
        let headers = response.headers_mut();
        if close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let trace = [
            (REQUEST_ID, Some(request_id.as_str())),
            (TRACEPARENT, traceparent.as_deref()),
            (MODEL_NAME, answered_by.map(|(name, _)| name)),
            (MODEL_VERSION, answered_by.map(|(_, version)| version)),
        ];
        for (name, value) in trace {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, v);
            }
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if let Ok(v) = HeaderValue::from_str(&format!("total;dur={ms:.1}")) {
            headers.insert(SERVER_TIMING, v);
        }
        headers.insert(NOSNIFF.0, HeaderValue::from_static(NOSNIFF.1));
        record.finish(
            response.status().as_u16(),
            response.body().size_hint().exact().unwrap_or(0),
        );

        let answered = self.inner.answered.fetch_add(1, Relaxed) + 1;
        if self
            .inner
            .config
            .max_requests
            .is_some_and(|max| answered >= max)
        {
            self.inner.drain_wanted.notify_one();
        }
        response
    }

    /// The model a request is for: named by the route's `{model_name}` (and
    /// `{model_version}`), by `?model=` (and `&version=`) on `/model_predict`, or the default
    /// one there. `None` for the routes about no model (and the repository's, which name one
    /// that need not be served).
    fn model_of(
        &self,
        matched: &Matched<'_>,
        query: Option<&str>,
    ) -> Result<Option<&ServedModel>, ApiError> {
        let Matched::Found(endpoint, params) = matched else {
            return Ok(None);
        };
        let models = &self.inner.models;
        match (endpoint, params.as_slice()) {
            (
                Endpoint::ModelPredict
                | Endpoint::Infer
                | Endpoint::ModelMetadata
                | Endpoint::ModelReady
                | Endpoint::ModelConfig,
                [name, rest @ ..],
            ) => models.find(name, rest.first().copied()).map(Some),
            (Endpoint::ModelPredict, []) => {
                let (name, version) = model_query(query)?;
                match name {
                    Some(name) => models.find(name, version).map(Some),
                    None if version.is_some() => Err(ApiError::BadRequest(
                        "`version` needs `model` beside it, like ?model=resnet50&version=1"
                            .to_owned(),
                    )),
                    None => Ok(Some(models.default_model())),
                }
            }
            _ => Ok(None),
        }
    }

    async fn dispatch<B>(
        &self,
        matched: Matched<'_>,
        model: Option<&ServedModel>,
        req: Request<B>,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (endpoint, params) = match matched {
            Matched::Found(endpoint, params) => (endpoint, params),
            Matched::MethodNotAllowed(_, allow) => {
                return Err(ApiError::MethodNotAllowed {
                    method: req.method().to_string(),
                    allow,
                });
            }
            Matched::NotFound => return Err(ApiError::NotFound(req.uri().path().to_owned())),
        };
        let models = &self.inner.models;
        match (endpoint, model) {
            (Endpoint::ModelPredict, Some(model)) => self.predict(model, req).await,
            (Endpoint::Infer, Some(model)) => self.v2_infer(model, req).await,
            (Endpoint::Healthz, _) => Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "status": "alive" }),
            )),
            (Endpoint::ServerLive, _) => {
                Ok(json(StatusCode::OK, &serde_json::json!({ "live": true })))
            }
            (Endpoint::Readyz | Endpoint::ServerReady, _) => {
                self.check_ready()?;
                Ok(json(StatusCode::OK, &serde_json::json!({ "ready": true })))
            }
            (Endpoint::Metrics, _) => {
                let text = arbiter_scoreboard::render_prometheus(&self.inner.scoreboard);
                Ok(with_type(
                    Response::new(Full::new(Bytes::from(text))),
                    "text/plain; version=0.0.4; charset=utf-8",
                ))
            }
            (Endpoint::OpenApi, _) => Ok(with_type(
                Response::new(Full::new(Bytes::from_static(OPENAPI_YAML.as_bytes()))),
                "application/yaml",
            )),
            (Endpoint::OpenApiJson, _) => Ok(with_type(
                Response::new(Full::new(Bytes::from_static(OPENAPI_JSON.as_bytes()))),
                "application/json",
            )),
            (Endpoint::Page(asset), _) => Ok(asset.response()),
            (Endpoint::ServerMetadata, _) => Ok(json(StatusCode::OK, &kserve::server_metadata())),
            (Endpoint::ModelMetadata, Some(model)) => {
                let versions = models.versions(&model.name);
                let info = model.queue.info();
                let body = kserve::model_metadata(info, &model.name, &versions);
                Ok(json(StatusCode::OK, &body))
            }
            (Endpoint::ModelReady, Some(model)) => {
                self.check_ready()?;
                let body = serde_json::json!({
                    "name": model.name,
                    "version": model.version,
                    "ready": true,
                });
                Ok(json(StatusCode::OK, &body))
            }
            (Endpoint::ModelConfig, Some(model)) => {
                let info = model.queue.info();
                let body = kserve::model_config(info, &model.name, &model.batching, model.on_gpu);
                Ok(json(StatusCode::OK, &body))
            }
            (Endpoint::RepositoryIndex, _) => {
                let (parts, body) = req.into_parts();
                let mut body = self.metered_body(&parts.headers, body).await?;
                let bytes = body::read_all(&mut body, self.budget())
                    .await
                    .map_err(ApiError::from)?;
                // Every model served is ready: `"ready": true` lists the same ones.
                kserve::parse_index_request(&bytes)?;
                let served = models.iter().map(|m| (m.name.as_str(), m.version.as_str()));
                Ok(json(StatusCode::OK, &kserve::repository_index(served)))
            }
            (Endpoint::RepositoryLoad, _) => {
                let name = params.first().copied().unwrap_or_default();
                if models.versions(name).is_empty() {
                    return Err(ApiError::ModelNotFound(format!(
                        "model `{name}` is not in the config; a model is loaded by adding a \
                         [[model]] table for it to the config and running `arbiter reload`"
                    )));
                }
                // Configured models are loaded before a worker serves: loading one is done.
                Ok(json(StatusCode::OK, &serde_json::json!({})))
            }
            (Endpoint::RepositoryUnload, _) => {
                let name = params.first().copied().unwrap_or_default();
                if models.versions(name).is_empty() {
                    return Err(ApiError::ModelNotFound(format!(
                        "model `{name}` is not in the config"
                    )));
                }
                Err(ApiError::Refused(format!(
                    "models are not unloaded through the API: remove model `{name}`'s [[model]] \
                     table from the config and run `arbiter reload` (the other models keep \
                     serving while the workers roll)"
                )))
            }
            (
                Endpoint::ModelPredict
                | Endpoint::Infer
                | Endpoint::ModelMetadata
                | Endpoint::ModelReady
                | Endpoint::ModelConfig,
                None,
            ) => Err(ApiError::Internal(
                "a model route was dispatched without its model".to_owned(),
            )),
        }
    }

    fn check_ready(&self) -> Result<(), ApiError> {
        if self.is_draining() {
            return Err(ApiError::Unavailable(
                "the worker is shutting down".to_owned(),
            ));
        }
        Ok(())
    }

    fn budget(&self) -> BodyBudget {
        let limits = &self.inner.config.limits;
        let now = Instant::now();
        BodyBudget {
            limit: limits.max_body_bytes,
            deadline: now + limits.body_read_timeout,
            timeout_secs: limits.body_read_timeout.as_secs(),
            min_rate: limits.min_data_rate,
            rate_from: now + limits.min_data_rate_grace,
        }
    }

    /// Refuses a body declared too large before reading any of it.
    fn check_declared_length(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let limit = self.inner.config.limits.max_body_bytes;
        match content_length(headers) {
            Some(len) if len > limit => Err(ApiError::TooLarge(format!(
                "the request body is {len} bytes, over the limit of {limit} bytes"
            ))),
            _ => Ok(()),
        }
    }

    /// `POST /model_predict`: the seed's API.
    async fn predict<B>(
        &self,
        model: &ServedModel,
        req: Request<B>,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let (permit, mut body) = self.admitted_body(model, &parts.headers, body).await?;
        let read = tokio::select! {
            read = upload::read_image(&parts.headers, &mut body, self.budget()) => read,
            () = permit.overtaken() => return Err(InferenceError::Overtaken.into()),
        };
        let image = match read {
            Ok(image) => image,
            Err(e) => return Err(self.after_unread_body(e, &parts.headers, &mut body).await),
        };
        let memory = body.take_reservation();
        let info = model.queue.info();
        let size = (info.width, info.height);
        let max_pixels = self.inner.config.limits.max_pixels;
        let recipe = model.recipe;
        let stats = model.stats.clone();
        let ((), out) = self
            .infer(model, permit, move || {
                let prepared = recipe.prepare(&image, max_pixels, size);
                drop((image, memory));
                let prepared = prepared?;
                stats.observe_stage(Stage::Decode, prepared.decode);
                stats.observe_stage(Stage::Preprocess, prepared.preprocess);
                Ok(ForModel {
                    input: Input::Image(prepared.image, recipe.tensor),
                    images: 1,
                    kept: (),
                })
            })
            .await?;
        let answer = recipe.answer(&out.outputs, &model.labels, model.threshold);
        Ok(with_type(
            Response::new(Full::new(Bytes::from(answer))),
            "application/json",
        ))
    }

    /// Before answering an error while the client may still be sending the body, reads and drops
    /// the rest (bounded), so the client gets to read the answer. Not when the client waits for
    /// `100 Continue`: it will then send nothing.
    async fn after_unread_body<B>(&self, e: ApiError, headers: &HeaderMap, body: &mut B) -> ApiError
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let expects_continue = headers
            .get(EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let timed_out = matches!(e, ApiError::Timeout(_));
        if !expects_continue && !timed_out && !body.is_end_stream() {
            let limits = &self.inner.config.limits;
            let time = DISCARD_TIME.min(limits.body_read_timeout);
            body::discard(body, DISCARD_MAX, Instant::now() + time).await;
        }
        e
    }

    /// `POST /v2/models/{name}/infer`.
    async fn v2_infer<B>(
        &self,
        model: &ServedModel,
        req: Request<B>,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let (permit, mut body) = self.admitted_body(model, &parts.headers, body).await?;
        let read = tokio::select! {
            read = body::read_all(&mut body, self.budget()) => read,
            () = permit.overtaken() => return Err(InferenceError::Overtaken.into()),
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                let e = ApiError::from(e);
                return Err(self.after_unread_body(e, &parts.headers, &mut body).await);
            }
        };
        let memory = body.take_reservation();
        let json_len = match parts.headers.get(kserve::HEADER_LENGTH) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "{} must be a byte count",
                            kserve::HEADER_LENGTH
                        ))
                    })?,
            ),
        };
        let info = model.queue.info().clone();
        let (call, out) = self
            .infer(model, permit, move || {
                let call = kserve::parse_request(&bytes, json_len, &info);
                drop((bytes, memory));
                let mut call = call?;
                Ok(ForModel {
                    input: Input::Tensor(std::mem::take(&mut call.tensor)),
                    images: call.n,
                    kept: call,
                })
            })
            .await?;
        let rendered = kserve::render_response(
            &call,
            &out.outputs,
            model.queue.info(),
            &model.name,
            &model.version,
        );
        let mut response = Response::new(Full::new(Bytes::from(rendered.body)));
        match rendered.json_len {
            None => response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json")),
            Some(len) => {
                response
                    .headers_mut()
                    .insert(kserve::HEADER_LENGTH, HeaderValue::from(len));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )
            }
        };
        Ok(response)
    }

    /// Admission of an inference request, decided from its headers before any of its body is
    /// read: the declared length, then a place in `model`'s pipeline (refused at once when the
    /// queue is full, the body left unread: a refusal costs no more than its headers, unless a
    /// request whose body is still arriving after `min_data_rate_grace` gives it its place), then
    /// room in the body memory. A length refusal is answered once the body is drained.
    async fn admitted_body<B>(
        &self,
        model: &ServedModel,
        headers: &HeaderMap,
        mut body: B,
    ) -> Result<(Permit, body::Metered<B>), ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        if let Err(e) = self.check_declared_length(headers) {
            return Err(self.after_unread_body(e, headers, &mut body).await);
        }
        let limits = &self.inner.config.limits;
        // Slow bodies are overtaken when slow clients are cut at all (`min_data_rate`).
        let overtake_after = (limits.min_data_rate > 0).then_some(limits.min_data_rate_grace);
        let permit = model.queue.admit(overtake_after)?;
        let body = self.metered_body(headers, body).await?;
        Ok((permit, body))
    }

    /// Checks a body's declared length and waits for room for it in the body memory; a refusal
    /// is answered once the body is drained.
    async fn metered_body<B>(
        &self,
        headers: &HeaderMap,
        mut body: B,
    ) -> Result<body::Metered<B>, ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let checked = match self.check_declared_length(headers) {
            Ok(()) => self.reserve_body_memory(headers).await,
            Err(e) => Err(e),
        };
        match checked {
            Ok(memory) => Ok(body::Metered::new(body, memory)),
            Err(e) => Err(self.after_unread_body(e, headers, &mut body).await),
        }
    }

    /// Room in the body memory for a body's declared length (or [`UNKNOWN_LENGTH_RESERVE`]),
    /// waited for before reading any of it (bounded by the request deadline): a burst of big
    /// uploads waits in the kernel's socket buffers rather than in this process. The body gives
    /// the room back if its client stalls ([`body::Metered`]), else once it is decoded.
    async fn reserve_body_memory(
        &self,
        headers: &HeaderMap,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        let limit = self.inner.config.limits.max_body_bytes;
        let bytes = content_length(headers)
            .unwrap_or(UNKNOWN_LENGTH_RESERVE)
            .min(limit);
        let units = u32::try_from(bytes.div_ceil(BODY_UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.inner.body_units);
        Arc::clone(&self.inner.bodies)
            .acquire_many_owned(units)
            .await
            .map_err(|_| ApiError::Unavailable("the worker is shutting down".to_owned()))
    }

    /// The pool preparing `model`'s requests: the one at its nice value.
    fn decoder(&self, model: &ServedModel) -> &DecodePool {
        let pools = &self.inner.decoders;
        pools
            .iter()
            .find(|d| d.nice() == decode_nice(model, &self.inner.config.limits))
            .unwrap_or(&pools[0])
    }

    /// The one path of every inference route, with the place in `model`'s pipeline its
    /// admission took ([`Service::admitted_body`]): waits for a place ahead of the model, runs
    /// `prepare` (decode, parse) on its model's decode pool, and runs what it prepared with the batch
    /// it joins. Returns what `prepare` kept for the answer, and the outputs.
    async fn infer<T, F>(
        &self,
        model: &ServedModel,
        mut permit: Permit,
        prepare: F,
    ) -> Result<(T, JobOutput), ApiError>
    where
        F: FnOnce() -> Result<ForModel<T>, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let queue = &model.queue;
        queue.before_preparing(&mut permit).await?;
        let prepared = self.decoder(model).run(prepare).await?;
        let out = queue.run(permit, prepared.input, prepared.images).await?;
        Ok((prepared.kept, out))
    }

    fn client_address(&self, headers: &HeaderMap, peer: Peer) -> String {
        let config = &self.inner.config;
        client_address(
            headers,
            peer,
            &config.trusted_proxies,
            config.trust_unix_peers,
        )
    }
}

fn with_type(
    mut response: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The nice value `model`'s requests are prepared at: its own, but never ahead of the HTTP
/// thread (`server.http_nice`) that reads them. A decode ahead of it would take the cores the
/// HTTP thread needs to feed the model: measured on the INT8 EfficientNet-Lite0 (8 clients, the
/// 512 x 600 photo), decode at 0 beside the HTTP thread at 19 answered 248 req/s against 300-310
/// with both at 19 (docs/defaults.md).
fn decode_nice(model: &ServedModel, limits: &Limits) -> i32 {
    model.nice.max(limits.http_nice)
}

/// A JSON response.
fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = with_type(
        Response::new(Full::new(Bytes::from(body))),
        "application/json",
    );
    *response.status_mut() = status;
    response
}

/// `?model=NAME&version=V` of `/model_predict`: each at most once, with a value; other keys are
/// ignored.
fn model_query(query: Option<&str>) -> Result<(Option<&str>, Option<&str>), ApiError> {
    let mut model = None;
    let mut version = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "model" => &mut model,
            "version" => &mut version,
            // Ignored, as the seed's service ignores every query parameter.
            _ => continue,
        };
        if value.is_empty() || slot.replace(value).is_some() {
            return Err(ApiError::BadRequest(format!(
                "`{key}` must be given once, with a value"
            )));
        }
    }
    Ok((model, version))
}
