//! The one place that maps what went wrong to an HTTP status and a `{"error": "..."}` body.

use arbiter_infer::error_chain;
use arbiter_vision::{ErrorKind, VisionError};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::batcher::InferenceError;
use crate::body::BodyError;

/// Why a request failed. Each variant has exactly one status code, chosen in [`ApiError::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No route has this path.
    #[error("no route for {0}")]
    NotFound(String),
    /// The KServe v2 routes were asked for a model (or version) this server does not have.
    #[error("{0}")]
    ModelNotFound(String),
    /// The path exists, the method does not.
    #[error("method {method} is not allowed here; allowed: {}", .allow.join(", "))]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the path has.
        allow: Vec<&'static str>,
    },
    /// Understood and refused: what the API does not do, like unloading a configured model.
    #[error("{0}")]
    Refused(String),
    /// Malformed request: not multipart, no `image` field, bad JSON, an undecodable image.
    #[error("{0}")]
    BadRequest(String),
    /// The client was too slow sending the body.
    #[error("{0}")]
    Timeout(String),
    /// The body or the image is over a limit.
    #[error("{0}")]
    TooLarge(String),
    /// The image format (or media type) is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// Well-formed, but its content cannot be used (wrong tensor shape or datatype...).
    #[error("{0}")]
    Unprocessable(String),
    /// The inference pipeline is full.
    #[error("the server is overloaded (inference queue full); retry later")]
    Overloaded,
    /// The request was not answered within the request deadline.
    #[error("the request was not answered within the {0} s deadline; retry later")]
    DeadlineExceeded(u64),
    /// The worker is draining or not ready.
    #[error("{0}")]
    Unavailable(String),
    /// Our fault (the model run failed, the inference thread stopped): never caused by the
    /// request's content.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Refused(_) => StatusCode::FORBIDDEN,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Overloaded | ApiError::DeadlineExceeded(_) | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response: `{"error": "..."}` as JSON, plus `Allow` or `Retry-After` where they apply.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &self {
            ApiError::MethodNotAllowed { allow, .. } => {
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.insert(ALLOW, v);
                }
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        // A body the client was told was too large (or too slow) may still be arriving: do not
        // wait for it on this connection.
        if matches!(self, ApiError::TooLarge(_) | ApiError::Timeout(_)) {
            headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<BodyError> for ApiError {
    /// 413 too large, 408 too slow, 400 cut off.
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            BodyError::Timeout { .. } | BodyError::TooSlow { .. } => {
                ApiError::Timeout(e.to_string())
            }
            BodyError::Read(_) => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl From<multer::Error> for ApiError {
    /// A failed read as its [`BodyError`] says, a body or part over the limit 413, anything
    /// else (a malformed body) 400.
    fn from(e: multer::Error) -> ApiError {
        match e {
            multer::Error::StreamReadFailed(inner) => match inner.downcast::<BodyError>() {
                Ok(body_error) => ApiError::from(*body_error),
                Err(other) => {
                    ApiError::BadRequest(format!("the request body could not be read: {other}"))
                }
            },
            multer::Error::StreamSizeExceeded { limit }
            | multer::Error::FieldSizeExceeded { limit, .. } => {
                ApiError::from(BodyError::TooLarge { limit })
            }
            other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
        }
    }
}

impl From<VisionError> for ApiError {
    /// 400 invalid, 413 too large, 415 unsupported.
    fn from(e: VisionError) -> ApiError {
        let message = e.to_string();
        match e.kind() {
            ErrorKind::Invalid => ApiError::BadRequest(message),
            ErrorKind::Unsupported => ApiError::Unsupported(message),
            ErrorKind::TooLarge => ApiError::TooLarge(message),
        }
    }
}

impl From<InferenceError> for ApiError {
    /// 503 when the pipeline is full or the worker is stopping (the client may retry, here or on
    /// another worker); 500 when the model or the inference thread failed, never the request's
    /// content.
    fn from(e: InferenceError) -> ApiError {
        match e {
            InferenceError::Overloaded | InferenceError::Overtaken => ApiError::Overloaded,
            InferenceError::ShuttingDown => ApiError::Unavailable(e.to_string()),
            InferenceError::Stopped
            | InferenceError::Misfit { .. }
            | InferenceError::Run(_)
            | InferenceError::Panicked
            | InferenceError::Outputs { .. } => ApiError::Internal(error_chain(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_status() {
        let r = ApiError::MethodNotAllowed {
            method: "GET".into(),
            allow: vec!["POST"],
        }
        .into_response();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "POST");
        let r = ApiError::Overloaded.into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let r = ApiError::TooLarge("big".into()).into_response();
        assert_eq!(r.status(), 413);
        assert!(r.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn inference_errors_keep_their_statuses_and_messages() {
        let status = |e: InferenceError| ApiError::from(e).status();
        assert_eq!(status(InferenceError::Overloaded), 503);
        assert_eq!(status(InferenceError::ShuttingDown), 503);
        assert_eq!(status(InferenceError::Stopped), 500);
        assert_eq!(status(InferenceError::Panicked), 500);
        assert_eq!(status(InferenceError::Outputs { got: 1, images: 1 }), 500);
        let misfit = InferenceError::Misfit {
            n: 2,
            width: 224,
            height: 224,
        };
        assert_eq!(status(misfit), 500);
        let failed = InferenceError::Run(std::sync::Arc::new(arbiter_infer::InferError::Batch(
            "n = 0".into(),
        )));
        assert_eq!(
            ApiError::from(failed),
            ApiError::Internal("inference failed: bad batch: n = 0".into())
        );
        assert_eq!(
            ApiError::from(InferenceError::Stopped),
            ApiError::Internal("the inference thread has stopped".into())
        );
        assert_eq!(
            ApiError::from(InferenceError::ShuttingDown),
            ApiError::Unavailable("the worker is shutting down".into())
        );
    }
}
