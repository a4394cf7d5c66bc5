//! HTTP at the cluster's edge: how a model's external requests and answers look on the wire
//! when its clients speak HTTP/1.1 instead of retrace's framed JSON.
//!
//! The runtime parses and serves HTTP (the recorder's client port); the simulator's workload
//! makes the same requests (`[workload] protocol = "http"`). Both go through the model's
//! [`HttpApi`], so one mapping decides what a request means everywhere, and both record the
//! request and the response (`Record::HttpRequest`, `Record::HttpResponse`) beside the
//! external request and its answer. This module does no I/O.

use serde::{de::DeserializeOwned, Serialize};

/// Most header lines a request may carry (the recorder's parser refuses more).
pub const HTTP_HEADERS_MAX: usize = 64;

/// An HTTP request as a client sent it: what is recorded with the external request it
/// became.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// The request target as sent: path and query (`/kv/x?consistent=1`).
    pub target: String,
    /// Header lines in the order sent; names as sent (compare them case-insensitively).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An HTTP response: what the client was sent for the node's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn new(method: &str, target: &str, body: impl Into<Vec<u8>>) -> HttpRequest {
        HttpRequest {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }
}

impl HttpResponse {
    /// A response with a body of `content_type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body: body.into(),
        }
    }

    /// A JSON body.
    pub fn json(status: u16, value: &impl Serialize) -> HttpResponse {
        let body = serde_json::to_vec(value).unwrap_or_default();
        HttpResponse::new(status, "application/json", body)
    }

    /// A plain-text error (a status and why), ending in a newline as curl users expect.
    pub fn error(status: u16, why: impl std::fmt::Display) -> HttpResponse {
        HttpResponse::new(status, "text/plain; charset=utf-8", format!("{why}\n"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The response as bytes on the wire (HTTP/1.1, with its `Content-Length`; a
    /// `Content-Length` or `Connection` the mapping set is replaced by the server's).
    pub fn to_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).as_bytes(),
        );
        for (name, value) in &self.headers {
            let framing = name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("transfer-encoding");
            // A mapping's value cannot smuggle a header line in.
            if framing || name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
                continue;
            }
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What a key-value REST request asks: the face kv and webcache show `curl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyValueRequest {
    /// `GET PREFIXKEY`.
    Get { key: String },
    /// `PUT` (or `POST`) `PREFIXKEY`, the value as the body.
    Put { key: String, value: String },
}

/// Reads a key-value REST request under `prefix` (as `"/kv/"`) for the system `what`: the
/// key is one non-empty path segment, percent-decoded; a value is UTF-8 text of at most
/// `value_bytes_max` bytes. Anything else is refused with its status and why (`404` another
/// path, `400` a bad key or value, `413` a value too large, `405` another method).
pub fn key_value_request(
    request: &HttpRequest,
    what: &str,
    prefix: &str,
    value_bytes_max: usize,
) -> Result<KeyValueRequest, HttpResponse> {
    let Some(segment) = request.path().strip_prefix(prefix) else {
        return Err(HttpResponse::error(
            404,
            format!("{what} serves {prefix}KEY (GET to read, PUT to write)"),
        ));
    };
    let key = match percent_decode(segment) {
        Some(key) if !key.is_empty() && !key.contains('/') => key,
        _ => {
            return Err(HttpResponse::error(
                400,
                "a key is one non-empty path segment",
            ))
        }
    };
    match request.method.as_str() {
        "GET" => Ok(KeyValueRequest::Get { key }),
        "PUT" | "POST" => {
            if request.body.len() > value_bytes_max {
                return Err(HttpResponse::error(
                    413,
                    format!("a value is at most {value_bytes_max} bytes"),
                ));
            }
            let value = String::from_utf8(request.body.clone())
                .map_err(|_| HttpResponse::error(400, "a value is UTF-8 text"))?;
            Ok(KeyValueRequest::Put { key, value })
        }
        other => Err(HttpResponse::error(
            405,
            format!("{other} is not GET or PUT"),
        )),
    }
}

/// A path segment with its `%XX` escapes decoded; `None` if an escape is malformed or
/// the result is not UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `text` as one path segment: every byte but RFC 3986's unreserved ones escaped.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Bytes as a person reads them: quoted text when they are UTF-8 without control
/// characters other than whitespace, else hex; at most `chars_max` characters of either,
/// then how many bytes were left out.
pub fn show_bytes(bytes: &[u8], chars_max: usize) -> String {
    let printable = |c: char| !c.is_control() || c == '\n' || c == '\r' || c == '\t';
    let (mut shown, used) = match std::str::from_utf8(bytes) {
        Ok(text) if text.chars().all(printable) => {
            let cut: String = text.chars().take(chars_max).collect();
            let used = cut.len();
            (format!("{cut:?}"), used)
        }
        _ => {
            let used = bytes.len().min(chars_max / 2);
            let hex: String = bytes[..used].iter().map(|b| format!("{b:02x}")).collect();
            (format!("0x{hex}"), used)
        }
    };
    if used < bytes.len() {
        shown.push_str(&format!(" (+{} bytes)", bytes.len() - used));
    }
    shown
}

impl std::fmt::Display for HttpRequest {
    /// One line: method, target, headers counted, body shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.target)?;
        if !self.body.is_empty() {
            write!(f, " {}", show_bytes(&self.body, 96))?;
        }
        write!(f, " ({} headers)", self.headers.len())
    }
}

impl std::fmt::Display for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, reason(self.status))?;
        if !self.body.is_empty() {
            write!(f, " {}", show_bytes(&self.body, 96))?;
        }
        Ok(())
    }
}

/// The reason phrase for the statuses a mapping is likely to use.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// How a model's external requests travel over HTTP: the server's side (a request to the
/// model's message, its answer back to a response) and the client's (the request that
/// carries a message, so the simulator's workload and `retrace cluster` can make them).
///
/// The default, [`JsonBodies`], carries the message as the JSON body of a `POST` and
/// answers `200` with the answer as JSON.
pub trait HttpApi<M>: Send + Sync {
    /// What `request` asks the node for, or the response that refuses it (`400`, `404`):
    /// a refused request never reaches the node and is not recorded.
    fn request(&self, request: &HttpRequest) -> Result<M, HttpResponse>;

    /// The response that carries the node's answer.
    fn response(&self, answer: &M) -> HttpResponse;

    /// The request a client sends to ask for `message`; `None` if it has none (the
    /// simulator then delivers the message as it would over the framed port).
    fn client_request(&self, message: &M) -> Option<HttpRequest>;
}

/// The default mapping: `POST /` (any path) with the message as its JSON body; the answer
/// as JSON with `200`.
pub struct JsonBodies;

impl<M: Serialize + DeserializeOwned> HttpApi<M> for JsonBodies {
    fn request(&self, request: &HttpRequest) -> Result<M, HttpResponse> {
        if request.method != "POST" {
            return Err(HttpResponse::error(
                405,
                "send the request as the JSON body of a POST",
            ));
        }
        serde_json::from_slice(&request.body)
            .map_err(|e| HttpResponse::error(400, format!("not a request of this model: {e}")))
    }

    fn response(&self, answer: &M) -> HttpResponse {
        HttpResponse::json(200, answer)
    }

    fn client_request(&self, message: &M) -> Option<HttpRequest> {
        let mut request = HttpRequest::new("POST", "/", serde_json::to_vec(message).ok()?);
        request
            .headers
            .push(("Content-Type".into(), "application/json".into()));
        Some(request)
    }
}

/// Which protocol a workload's clients speak to the nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// retrace's own client port: 4-byte length and JSON.
    #[default]
    Framed,
    /// HTTP/1.1 through the model's [`HttpApi`].
    Http,
}

impl Protocol {
    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "framed" => Some(Protocol::Framed),
            "http" => Some(Protocol::Http),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Framed => "framed",
            Protocol::Http => "http",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mappings_framing_headers_cannot_override_the_servers() {
        let mut r = HttpResponse::new(200, "text/plain", "hi");
        r.headers.push(("Content-Length".into(), "99".into()));
        r.headers
            .push(("X-Evil".into(), "a\r\nSet-Cookie: x".into()));
        let wire = String::from_utf8(r.to_bytes(true)).unwrap();
        assert_eq!(
            wire,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
    }

    #[test]
    fn bytes_show_as_text_or_hex_and_say_what_was_cut() {
        assert_eq!(show_bytes(b"hello", 10), "\"hello\"");
        assert_eq!(show_bytes(b"hello world", 5), "\"hello\" (+6 bytes)");
        assert_eq!(show_bytes(&[0, 1, 0xff], 10), "0x0001ff");
        assert_eq!(show_bytes(&[0, 1, 0xff], 4), "0x0001 (+1 bytes)");
    }

    #[test]
    fn path_segments_round_trip_through_percent_escapes() {
        for text in ["k1", "a b/c%d", "ключ"] {
            assert_eq!(percent_decode(&percent_encode(text)).as_deref(), Some(text));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn json_bodies_round_trip_a_message() {
        let api = JsonBodies;
        let request = HttpApi::<Vec<u32>>::client_request(&api, &vec![1, 2]).unwrap();
        assert_eq!(HttpApi::<Vec<u32>>::request(&api, &request), Ok(vec![1, 2]));
        let get = HttpRequest::new("GET", "/", "");
        assert_eq!(
            HttpApi::<Vec<u32>>::request(&api, &get).unwrap_err().status,
            405
        );
    }
}
