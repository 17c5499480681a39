//! The route table: every (method, path) the server answers, used by the router itself and
//! checked against `docs/openapi.yaml` in a test, so the two cannot drift apart.

use arbiter_scoreboard::Route;

use crate::page::Asset;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The seed's `POST /model_predict` (the default model, or `?model=NAME[&version=V]`), and
    /// `POST /model_predict/{model_name}[/versions/{model_version}]`.
    ModelPredict,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /openapi.yaml`.
    OpenApi,
    /// `GET /openapi.json`: the same description as JSON.
    OpenApiJson,
    /// The page for people and the documentation (`GET /`, `/docs`, their scripts and style),
    /// served only with `server.ui = true`.
    Page(Asset),
    /// `GET /v2`.
    ServerMetadata,
    /// `GET /v2/health/live`.
    ServerLive,
    /// `GET /v2/health/ready`.
    ServerReady,
    /// `GET /v2/models/{model_name}[/versions/{model_version}]`.
    ModelMetadata,
    /// `GET /v2/models/{model_name}[/versions/{model_version}]/ready`.
    ModelReady,
    /// `POST /v2/models/{model_name}[/versions/{model_version}]/infer`.
    Infer,
    /// `GET /v2/models/{model_name}[/versions/{model_version}]/config`: Triton's model
    /// configuration.
    ModelConfig,
    /// `POST /v2/repository/index`: Triton's model repository extension.
    RepositoryIndex,
    /// `POST /v2/repository/models/{model_name}/load`.
    RepositoryLoad,
    /// `POST /v2/repository/models/{model_name}/unload`.
    RepositoryUnload,
}

impl Endpoint {
    /// The metrics' `route` label.
    pub fn metric_route(self) -> Route {
        match self {
            Endpoint::ModelPredict => Route::ModelPredict,
            Endpoint::Infer => Route::V2Infer,
            Endpoint::ServerMetadata
            | Endpoint::ModelMetadata
            | Endpoint::ModelReady
            | Endpoint::ModelConfig
            | Endpoint::RepositoryIndex
            | Endpoint::RepositoryLoad
            | Endpoint::RepositoryUnload => Route::V2Metadata,
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::ServerLive | Endpoint::ServerReady => {
                Route::Health
            }
            Endpoint::Metrics => Route::Metrics,
            Endpoint::OpenApi | Endpoint::OpenApiJson | Endpoint::Page(_) => Route::Other,
        }
    }
}

/// One route: a method, a path pattern (`{param}` matches one non-empty segment), an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// The HTTP method, upper case.
    pub method: &'static str,
    /// The path pattern, OpenAPI style.
    pub path: &'static str,
    /// What it does.
    pub endpoint: Endpoint,
}

const fn route(method: &'static str, path: &'static str, endpoint: Endpoint) -> RouteSpec {
    RouteSpec {
        method,
        path,
        endpoint,
    }
}

/// Every route the server has.
pub const ROUTE_TABLE: &[RouteSpec] = &[
    route("POST", "/model_predict", Endpoint::ModelPredict),
    route(
        "POST",
        "/model_predict/{model_name}",
        Endpoint::ModelPredict,
    ),
    route(
        "POST",
        "/model_predict/{model_name}/versions/{model_version}",
        Endpoint::ModelPredict,
    ),
    route("GET", "/healthz", Endpoint::Healthz),
    route("GET", "/readyz", Endpoint::Readyz),
    route("GET", "/metrics", Endpoint::Metrics),
    route("GET", "/openapi.yaml", Endpoint::OpenApi),
    route("GET", "/openapi.json", Endpoint::OpenApiJson),
    route("GET", "/", Endpoint::Page(Asset::Index)),
    route("GET", "/page.js", Endpoint::Page(Asset::Script)),
    route("GET", "/page.css", Endpoint::Page(Asset::Style)),
    route("GET", "/docs", Endpoint::Page(Asset::Docs)),
    route("GET", "/docs.js", Endpoint::Page(Asset::DocsScript)),
    route("GET", "/v2", Endpoint::ServerMetadata),
    route("GET", "/v2/health/live", Endpoint::ServerLive),
    route("GET", "/v2/health/ready", Endpoint::ServerReady),
    route("GET", "/v2/models/{model_name}", Endpoint::ModelMetadata),
    route("GET", "/v2/models/{model_name}/ready", Endpoint::ModelReady),
    route("POST", "/v2/models/{model_name}/infer", Endpoint::Infer),
    route(
        "GET",
        "/v2/models/{model_name}/config",
        Endpoint::ModelConfig,
    ),
    route(
        "GET",
        "/v2/models/{model_name}/versions/{model_version}",
        Endpoint::ModelMetadata,
    ),
    route(
        "GET",
        "/v2/models/{model_name}/versions/{model_version}/ready",
        Endpoint::ModelReady,
    ),
    route(
        "POST",
        "/v2/models/{model_name}/versions/{model_version}/infer",
        Endpoint::Infer,
    ),
    route(
        "GET",
        "/v2/models/{model_name}/versions/{model_version}/config",
        Endpoint::ModelConfig,
    ),
    route("POST", "/v2/repository/index", Endpoint::RepositoryIndex),
    route(
        "POST",
        "/v2/repository/models/{model_name}/load",
        Endpoint::RepositoryLoad,
    ),
    route(
        "POST",
        "/v2/repository/models/{model_name}/unload",
        Endpoint::RepositoryUnload,
    ),
];

/// The outcome of routing one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched<'p> {
    /// A route: its endpoint and the path parameters, in pattern order.
    Found(Endpoint, Vec<&'p str>),
    /// The path exists (this is its first route's endpoint), with these methods only.
    MethodNotAllowed(Endpoint, Vec<&'static str>),
    /// No route has this path.
    NotFound,
}

/// Finds the route for `method` and `path` in [`ROUTE_TABLE`].
pub fn find<'p>(method: &str, path: &'p str) -> Matched<'p> {
    let mut allow = Vec::new();
    let mut path_endpoint = None;
    for spec in ROUTE_TABLE {
        let Some(params) = match_path(spec.path, path) else {
            continue;
        };
        if spec.method == method {
            return Matched::Found(spec.endpoint, params);
        }
        path_endpoint.get_or_insert(spec.endpoint);
        if !allow.contains(&spec.method) {
            allow.push(spec.method);
        }
    }
    match path_endpoint {
        Some(endpoint) => Matched::MethodNotAllowed(endpoint, allow),
        None => Matched::NotFound,
    }
}

/// Matches `path` against `pattern`; returns the `{param}` segments.
fn match_path<'p>(pattern: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut params = Vec::new();
    let mut pat = pattern.split('/');
    let mut segs = path.split('/');
    loop {
        match (pat.next(), segs.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with('}') => {
                if s.is_empty() {
                    return None;
                }
                params.push(s);
            }
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing() {
        assert_eq!(
            find("POST", "/model_predict"),
            Matched::Found(Endpoint::ModelPredict, vec![])
        );
        assert_eq!(
            find("GET", "/model_predict"),
            Matched::MethodNotAllowed(Endpoint::ModelPredict, vec!["POST"])
        );
        assert_eq!(find("GET", "/nope"), Matched::NotFound);
        assert_eq!(
            find("GET", "/"),
            Matched::Found(Endpoint::Page(Asset::Index), vec![])
        );
        assert_eq!(
            find("POST", "/"),
            Matched::MethodNotAllowed(Endpoint::Page(Asset::Index), vec!["GET"])
        );
        assert_eq!(find("GET", "//"), Matched::NotFound);
        assert_eq!(find("GET", "/model_predict/"), Matched::NotFound);
        assert_eq!(
            find("GET", "/v2/models/resnet50"),
            Matched::Found(Endpoint::ModelMetadata, vec!["resnet50"])
        );
        assert_eq!(
            find("POST", "/v2/models/m/versions/1/infer"),
            Matched::Found(Endpoint::Infer, vec!["m", "1"])
        );
        assert_eq!(find("GET", "/v2/models//ready"), Matched::NotFound);
        assert_eq!(
            find("POST", "/model_predict/effnet/versions/2"),
            Matched::Found(Endpoint::ModelPredict, vec!["effnet", "2"])
        );
        assert_eq!(
            find("GET", "/v2/models/m/config"),
            Matched::Found(Endpoint::ModelConfig, vec!["m"])
        );
        assert_eq!(
            find("POST", "/v2/repository/models/m/unload"),
            Matched::Found(Endpoint::RepositoryUnload, vec!["m"])
        );
        assert_eq!(
            find("DELETE", "/v2/models/m/infer"),
            Matched::MethodNotAllowed(Endpoint::Infer, vec!["POST"])
        );
    }
}
