//! A blocking HTTP/1.1 client over `std::net::TcpStream`, small enough to read in one sitting.
//!
//! Requests built here carry `Host`, `Connection: close` and a `Content-Length`, so each one owns
//! its connection and a response ends where the server closes it or where its length says.
//! [`read_response`] reads the head a byte at a time and the body to its length, never past it,
//! so a test that keeps a connection alive can read several responses from the same stream.
//! A malformed request is sent as raw bytes with [`send`]; a large body that the server may
//! refuse before the end is streamed with [`send_streamed`], which stops writing when the
//! server has closed and still reads its answer, as a careful client does.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits for an answer: a debug build on a busy machine can take seconds.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write may block on a server that has stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics, showing the body, when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` field of a JSON error body; panics when the body is not one.
    pub fn error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.text()))
            .to_owned()
    }
}

/// The head of a request: request line, `Host`, `Connection: close`, `Content-Length`, then
/// `headers`, then the blank line.
pub fn head(method: &str, path: &str, headers: &[(&str, &str)], content_length: usize) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {content_length}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A whole request: [`head`] and `body`.
pub fn encode(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut bytes = head(method, path, headers, body.len());
    bytes.extend_from_slice(body);
    bytes
}

/// Sends one request on a fresh connection and reads the answer; panics on an I/O failure.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`request`], but an I/O failure is returned, for load loops that count failures.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    send(addr, &encode(method, path, headers, body))
}

/// `GET path` on a fresh connection; panics on an I/O failure.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

/// Opens a connection with this client's timeouts.
pub fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    Ok(stream)
}

/// Writes `bytes` (a request, well-formed or not) on a fresh connection and reads one answer.
/// A failed write is an error: the server must read what it is sent.
pub fn send(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Response> {
    let mut stream = connect(addr)?;
    stream.write_all(bytes)?;
    read_response(&mut stream)
}

/// Writes `head`, then the pieces of `body`, on a fresh connection, and reads the answer.
///
/// A server may answer and close before the whole body is sent (a 413): a failed write then
/// stops sending and the answer is read all the same; when there is none, the write's error is
/// the one returned.
pub fn send_streamed(
    addr: SocketAddr,
    head: &[u8],
    body: impl IntoIterator<Item = Vec<u8>>,
) -> std::io::Result<Response> {
    let mut stream = connect(addr)?;
    let mut sent = stream.write_all(head);
    if sent.is_ok() {
        for piece in body {
            sent = stream.write_all(&piece);
            if sent.is_err() {
                break;
            }
        }
    }
    match read_response(&mut stream) {
        Err(e) if e.kind() != ErrorKind::InvalidData => Err(sent.err().unwrap_or(e)),
        Err(e) => Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("{e} (write: {sent:?})"),
        )),
        answer => answer,
    }
}

/// Reads one response from `stream`: the head, then a body framed by `Content-Length`, by
/// chunks, or (neither) by the end of the connection. Reads nothing past the response.
pub fn read_response(stream: &mut impl Read) -> std::io::Result<Response> {
    let status_line = read_line(stream)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(stream)?;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let length = response.header("content-length").map(str::parse::<usize>);
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    response.body = if matches!(status, 100..=199 | 204 | 304) {
        Vec::new()
    } else if let Some(length) = length {
        let length = length.map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
        let mut body = vec![0; length];
        stream.read_exact(&mut body)?;
        body
    } else if chunked {
        read_chunks(stream)?
    } else {
        // Framed by the close. A server that answers early may reset the connection as it
        // closes: what arrived before is the body.
        let mut body = Vec::new();
        let _ = stream.read_to_end(&mut body);
        body
    };
    Ok(response)
}

/// The data of a chunked body, trailers skipped.
fn read_chunks(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|e| {
            std::io::Error::new(ErrorKind::InvalidData, format!("chunk size {line:?}: {e}"))
        })?;
        if size == 0 {
            while !read_line(stream)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        stream.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        stream.read_exact(&mut crlf)?;
    }
}

/// One line without its CRLF, read a byte at a time so nothing after it is consumed.
fn read_line(stream: &mut impl Read) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                if line.is_empty() {
                    "closed before a response".to_owned()
                } else {
                    format!(
                        "closed within the line {:?}",
                        String::from_utf8_lossy(&line)
                    )
                },
            ));
        }
        if byte[0] == b'\n' {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_length_framed_response_and_nothing_past_it() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhiHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let mut stream = &bytes[..];
        let first = read_response(&mut stream).unwrap();
        assert_eq!((first.status, first.text()), (200, "hi".to_owned()));
        assert_eq!(first.header("x-a"), Some("b"));
        let second = read_response(&mut stream).unwrap();
        assert_eq!((second.status, second.body.len()), (404, 0));
        assert!(stream.is_empty());
    }

    #[test]
    fn reads_a_chunked_body() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = read_response(&mut &bytes[..]).unwrap();
        assert_eq!(r.text(), "abcde");
    }

    #[test]
    fn reads_a_body_framed_by_the_close() {
        let r = read_response(&mut &b"HTTP/1.1 200 OK\r\n\r\nuntil the end"[..]).unwrap();
        assert_eq!(r.text(), "until the end");
    }

    #[test]
    fn refuses_what_is_not_a_response() {
        let e = read_response(&mut &b"garbage\r\n\r\n"[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        let e = read_response(&mut &b""[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_request_carries_its_length_and_closes() {
        let bytes = encode("POST", "/p", &[("Content-Type", "text/plain")], b"hello");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "POST /p HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
        );
    }
}
