//! The image a `/model_predict` request carries: the multipart field `image`, streamed within
//! the body's limits, or a raw `image/*` body.

use bytes::{Bytes, BytesMut};
use hyper::body::Body;
use hyper::header::{CONTENT_TYPE, HeaderMap};

use crate::body::{self, BodyBudget, BoxError, content_length};
use crate::error::ApiError;

/// Reads the image: the multipart field `image`, or a raw `image/*` body.
pub(crate) async fn read_image<B>(
    headers: &HeaderMap,
    body: &mut B,
    budget: BodyBudget,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "multipart/form-data" {
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            ApiError::BadRequest("the multipart Content-Type has no boundary".to_owned())
        })?;
        read_multipart_image(body, boundary, budget, content_length(headers)).await
    } else if essence.starts_with("image/") || essence == "application/octet-stream" {
        Ok(body::read_all(body, budget).await?)
    } else {
        let got = if content_type.is_empty() {
            "no Content-Type".to_owned()
        } else {
            format!("Content-Type {content_type}")
        };
        Err(ApiError::BadRequest(format!(
            "expected a multipart/form-data body with an `image` file field (or an image/* body), got {got}"
        )))
    }
}

/// Reads the `image` field of a multipart body, streaming, within the limits.
async fn read_multipart_image<B>(
    body: &mut B,
    boundary: String,
    budget: BodyBudget,
    declared: Option<u64>,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    // The image is most of the body: reserving its declared length up front saves the copies
    // (and the twice-the-size peak) of growing the buffer.
    let capacity = usize::try_from(declared.unwrap_or(0).min(budget.limit)).unwrap_or(0);
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(budget.limit));
    let mut multipart =
        multer::Multipart::with_constraints(body::stream(body, budget), boundary, constraints);
    let mut image = None;
    while let Some(mut field) = multipart.next_field().await? {
        if image.is_some() || field.name() != Some("image") {
            continue;
        }
        let mut buf = BytesMut::with_capacity(capacity);
        while let Some(chunk) = field.chunk().await? {
            buf.extend_from_slice(&chunk);
        }
        image = Some(buf.freeze());
    }
    // The whole body was read, so the connection can be kept alive.
    image.ok_or_else(|| ApiError::BadRequest("the multipart body has no `image` field".to_owned()))
}
