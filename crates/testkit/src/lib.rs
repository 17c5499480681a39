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
//! Nothing here knows Arbiter's crates: the tests of any package can use it.

pub mod http;
pub mod multipart;
pub mod setup;

pub use http::Response;
