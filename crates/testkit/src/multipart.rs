//! `multipart/form-data` bodies: the two that real clients send ([`curl`], [`requests`]) and any
//! other a test builds part by part with [`Form`], in bytes, so a test can also send a name,
//! filename or boundary that is not valid UTF-8.
//!
//! Every part is `--BOUNDARY`, its `Content-Disposition` (and `Content-Type` when it has one),
//! a blank line, its data and CRLF; the body ends with `--BOUNDARY--` and CRLF.

/// The boundary curl draws (24 dashes and 16 hex digits); this one is fixed.
pub const CURL_BOUNDARY: &str = "------------------------d74496d66958873e";

/// The boundary Python `requests` draws (32 hex digits); this one is fixed.
pub const REQUESTS_BOUNDARY: &str = "3b2b8c6e3b0c4f5e9a6d1f7c2e4a8b90";

/// A body being built, part by part.
#[derive(Debug, Clone)]
pub struct Form {
    boundary: Vec<u8>,
    body: Vec<u8>,
}

impl Form {
    /// An empty form with this boundary.
    pub fn new(boundary: impl AsRef<[u8]>) -> Form {
        Form {
            boundary: boundary.as_ref().to_vec(),
            body: Vec::new(),
        }
    }

    /// Appends a part: field `name`, a `filename` when it is a file, a `content_type` when it
    /// declares one, and its data.
    pub fn part(
        mut self,
        name: &[u8],
        filename: Option<&[u8]>,
        content_type: Option<&[u8]>,
        data: &[u8],
    ) -> Form {
        let body = &mut self.body;
        body.extend_from_slice(b"--");
        body.extend_from_slice(&self.boundary);
        body.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        body.extend_from_slice(name);
        body.push(b'"');
        if let Some(filename) = filename {
            body.extend_from_slice(b"; filename=\"");
            body.extend_from_slice(filename);
            body.push(b'"');
        }
        if let Some(content_type) = content_type {
            body.extend_from_slice(b"\r\nContent-Type: ");
            body.extend_from_slice(content_type);
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
        self
    }

    /// Appends a text field, without a Content-Type, as browsers and `requests` send one.
    pub fn field(self, name: &str, value: &str) -> Form {
        self.part(name.as_bytes(), None, None, value.as_bytes())
    }

    /// Appends a file with its declared type.
    pub fn file(self, name: &str, filename: &str, content_type: &str, data: &[u8]) -> Form {
        self.part(
            name.as_bytes(),
            Some(filename.as_bytes()),
            Some(content_type.as_bytes()),
            data,
        )
    }

    /// The request's `Content-Type`: `multipart/form-data; boundary=...`.
    pub fn content_type(&self) -> String {
        format!(
            "multipart/form-data; boundary={}",
            String::from_utf8_lossy(&self.boundary)
        )
    }

    /// The body, closed by the final boundary.
    pub fn finish(mut self) -> Vec<u8> {
        self.body.extend_from_slice(b"--");
        self.body.extend_from_slice(&self.boundary);
        self.body.extend_from_slice(b"--\r\n");
        self.body
    }

    /// The request's Content-Type and the finished body.
    pub fn build(self) -> (String, Vec<u8>) {
        (self.content_type(), self.finish())
    }
}

/// The body curl sends for `-F field=@filename;type=content_type`: (Content-Type, body).
pub fn curl(field: &str, filename: &str, content_type: &str, data: &[u8]) -> (String, Vec<u8>) {
    Form::new(CURL_BOUNDARY)
        .file(field, filename, content_type, data)
        .build()
}

/// The body Python `requests.post(url, data={"note": "hello"}, files={"image": f})` sends: a
/// text field first, as forms often have, then the file with no Content-Type of its own.
pub fn requests(filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    Form::new(REQUESTS_BOUNDARY)
        .field("note", "hello")
        .part(b"image", Some(filename.as_bytes()), None, data)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_s_body() {
        let (content_type, body) = curl("image", "a.png", "image/png", b"PNG");
        assert_eq!(
            content_type,
            format!("multipart/form-data; boundary={CURL_BOUNDARY}")
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!(
                "--{CURL_BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\nPNG\r\n--{CURL_BOUNDARY}--\r\n"
            )
        );
    }

    #[test]
    fn requests_s_body() {
        let (_, body) = requests("b.png", b"PNG");
        let b = REQUESTS_BOUNDARY;
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"b.png\"\r\n\r\nPNG\r\n--{b}--\r\n"
            )
        );
    }

    #[test]
    fn an_empty_form_is_its_closing_boundary() {
        assert_eq!(Form::new("x").finish(), b"--x--\r\n");
    }
}
