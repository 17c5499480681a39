//! What Arbiter's tests share, so that each fact about talking to a server lives once.
//!
//! - [`http`]: a blocking HTTP/1.1 client over `std::net::TcpStream`, one request per
//!   connection (`Connection: close`) unless a test keeps the stream itself; it sends well-formed
//!   requests, raw bytes for malformed ones, and bodies streamed in pieces to a server that may
//!   answer before the end.
//! - [`multipart`]: `multipart/form-data` bodies as curl and Python `requests` build them, and
//!   any other parts and boundary a test needs.
//! - [`setup`]: the files `scripts/setup` makes under `var/` (the ResNet50, ONNX Runtime's
//!   library, the photos, the reference answers), or a failure that says to run it.
//!
//! - [`max_difference`]: how far a model's outputs are from a reference's.
//!
//! Nothing here knows Arbiter's crates: the tests of any package can use it.

pub mod http;
pub mod multipart;
pub mod setup;

pub use http::Response;

/// The largest absolute difference between two outputs of the same length; infinite when their
/// lengths differ, so no comparison passes by accident.
pub fn max_difference(ours: &[f32], theirs: &[f32]) -> f32 {
    if ours.len() != theirs.len() {
        return f32::INFINITY;
    }
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}
