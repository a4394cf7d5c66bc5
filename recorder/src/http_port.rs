//! HTTP/1.1 on the client port: a connection whose first byte is a method's letter (a
//! framed request's length starts with a zero byte) is
//! read as HTTP requests, one after another (keep-alive and pipelining), and answered in
//! order.
//!
//! Parsing is `httparse`'s (the parser under hyper): it parses a request head from a
//! buffer and allocates nothing, so it fits the client port's own threads, which already
//! bound what a connection may cost — a cap on connections, idle and stall deadlines and the
//! node's inbound byte budget. A server crate such as `tiny_http` brings its own threads
//! (one per connection, with no cap and no idle limit) and would undo those bounds.

use crate::client::MAX_CLIENT_FRAME_BYTES;
use crate::net::{ByteBudget, Deadline, Permit};
use retrace_sim::http::{HttpRequest, HttpResponse, HTTP_HEADERS_MAX};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes a request's head (request line and headers) may take.
pub const HTTP_HEAD_BYTES_MAX: usize = 64 * 1024;

/// How much is read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A request as read, with what the connection needs to answer it.
pub struct Incoming {
    pub request: HttpRequest,
    /// Whether the client keeps the connection open for another request.
    pub keep_alive: bool,
    /// The body's share of the node's inbound budget, held until the node handles it.
    pub permit: Option<Permit>,
}

/// Why no request was read.
pub enum ReadError {
    /// The client closed the connection between requests (or inside one).
    Closed,
    /// The request is refused with this response, and the connection closed: what follows
    /// it on the connection cannot be trusted to start where a request starts.
    Refuse(HttpResponse),
    Io(io::Error),
}

/// One client connection speaking HTTP.
pub struct HttpConn {
    conn: Deadline,
    /// Bytes read past the end of the last request (a pipelining client's next one).
    buf: Vec<u8>,
}

impl HttpConn {
    /// A connection whose first bytes (`read`) were already taken off the socket.
    pub fn new(conn: Deadline, read: &[u8]) -> HttpConn {
        HttpConn {
            conn,
            buf: read.to_vec(),
        }
    }

    /// Reads one request: between requests the client may be idle up to `idle`; once a
    /// request has begun, it must arrive within `stall`. The body's length is checked and
    /// reserved in `budget` before any of it is read.
    pub fn read_request(
        &mut self,
        idle: Duration,
        stall: Duration,
        budget: &Arc<ByteBudget>,
    ) -> Result<Incoming, ReadError> {
        if self.buf.is_empty() {
            self.conn.deadline = Some(Instant::now() + idle);
            if self.fill()? == 0 {
                return Err(ReadError::Closed);
            }
        }
        let deadline = Instant::now() + stall;
        self.conn.deadline = Some(deadline);
        let head = loop {
            match parse_head(&self.buf).map_err(ReadError::Refuse)? {
                Some(head) => break head,
                None => {
                    if self.fill()? == 0 {
                        return Err(ReadError::Closed);
                    }
                }
            }
        };
        let Head {
            len: head_len,
            mut request,
            version,
            keep_alive,
            body_len: len,
        } = head;
        let permit = if len > 0 {
            let permit = budget.acquire(len, deadline);
            if permit.is_none() {
                return Err(ReadError::Refuse(refusal(
                    503,
                    format!("no room in the node's inbound budget for a {len}-byte body"),
                )));
            }
            permit
        } else {
            None
        };
        let end = head_len + len as usize;
        let expects_continue = request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects_continue && version == 1 && self.buf.len() < end {
            self.conn
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(ReadError::Io)?;
        }
        while self.buf.len() < end {
            if self.fill()? == 0 {
                return Err(ReadError::Closed);
            }
        }
        request.body = self.buf[head_len..end].to_vec();
        self.buf.drain(..end);
        Ok(Incoming {
            request,
            keep_alive,
            permit,
        })
    }

    /// Writes a response.
    pub fn write_response(&mut self, response: &HttpResponse, keep_alive: bool) -> io::Result<()> {
        self.conn.write_all(&response.to_bytes(keep_alive))?;
        self.conn.flush()
    }

    /// Reads what the socket has (at most a chunk) onto the buffer; 0 at its end.
    fn fill(&mut self) -> Result<usize, ReadError> {
        let at = self.buf.len();
        self.buf.resize(at + READ_CHUNK_BYTES, 0);
        let got = self.conn.read(&mut self.buf[at..]);
        self.buf.truncate(at + *got.as_ref().unwrap_or(&0));
        got.map_err(ReadError::Io)
    }
}

/// A request head parsed from the front of a buffer, checked as the port requires.
pub struct Head {
    /// Bytes the head takes (the body starts there).
    pub len: usize,
    /// The request without its body.
    pub request: HttpRequest,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub keep_alive: bool,
    /// The body's length, at most the client port's frame limit.
    pub body_len: u64,
}

/// Parses the request head at the front of `buf`: `Ok(None)` while it is incomplete (and
/// under [`HTTP_HEAD_BYTES_MAX`]), or the response that refuses it. Bytes from the network,
/// so every limit is checked here, before anything is read further.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpResponse> {
    let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= HTTP_HEAD_BYTES_MAX => {
            return Err(refusal(
                431,
                format!("the request head is over {HTTP_HEAD_BYTES_MAX} bytes"),
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refusal(
                431,
                format!("more than {HTTP_HEADERS_MAX} header lines"),
            ))
        }
        Err(e) => return Err(refusal(400, format!("not an HTTP/1.x request: {e}"))),
    };
    let request = HttpRequest {
        method: parsed.method.unwrap_or("").to_string(),
        target: parsed.path.unwrap_or("").to_string(),
        headers: owned(parsed.headers),
        body: Vec::new(),
    };
    let version = parsed.version.unwrap_or(1);
    let connection = request.header("connection").unwrap_or("").to_lowercase();
    let keep_alive = match version {
        0 => connection.contains("keep-alive"),
        _ => !connection.contains("close"),
    };
    if request.header("transfer-encoding").is_some() {
        return Err(refusal(
            501,
            "chunked request bodies are not supported: send a Content-Length",
        ));
    }
    let body_len = content_length(&request.headers)?;
    Ok(Some(Head {
        len,
        request,
        version,
        keep_alive,
        body_len,
    }))
}

/// Parsed header lines as recorded: names as sent, values as text (bytes that are not
/// UTF-8 replaced).
fn owned(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

fn refusal(status: u16, why: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::error(status, why)
}

/// The body's length: every `Content-Length` must say the same number (a request with two
/// different lengths is a smuggling attempt), at most the client port's frame limit.
fn content_length(headers: &[(String, String)]) -> Result<u64, HttpResponse> {
    let mut len = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        let value = value.trim();
        let n = match value.parse::<u64>() {
            Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(refusal(
                    400,
                    format!("Content-Length {value:?} is not a length"),
                ))
            }
        };
        if len.is_some_and(|l| l != n) {
            return Err(refusal(400, "two different Content-Lengths"));
        }
        len = Some(n);
    }
    let len = len.unwrap_or(0);
    if len > u64::from(MAX_CLIENT_FRAME_BYTES) {
        return Err(refusal(
            413,
            format!("a body is at most {MAX_CLIENT_FRAME_BYTES} bytes; this one is {len}"),
        ));
    }
    Ok(len)
}

/// A client of a node's HTTP port (what `retrace cluster`'s workload and `bench record`
/// send through when the scenario's workload speaks HTTP). Responses are parsed with
/// `httparse`; one request at a time on a kept-alive connection.
pub struct HttpClient {
    stream: std::net::TcpStream,
    host: String,
    /// Bytes read past the last response.
    buf: Vec<u8>,
}

impl HttpClient {
    pub fn connect(addr: std::net::SocketAddr, timeout: Duration) -> io::Result<HttpClient> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(HttpClient {
            stream,
            host: addr.to_string(),
            buf: Vec::new(),
        })
    }

    /// How long [`HttpClient::request`] waits for a response (30 s unless set).
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
    }

    /// Sends `request` and reads its response (`1xx` interim responses skipped).
    pub fn request(&mut self, request: &HttpRequest) -> io::Result<HttpResponse> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            request.method, request.target, self.host
        )
        .into_bytes();
        for (name, value) in &request.headers {
            let ours =
                name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length");
            if !ours && !name.contains(['\r', '\n', ':']) && !value.contains(['\r', '\n']) {
                out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", request.body.len()).as_bytes());
        out.extend_from_slice(&request.body);
        self.stream.write_all(&out)?;
        loop {
            let response = self.read_response()?;
            if !(100..200).contains(&response.status) {
                return Ok(response);
            }
        }
    }

    fn read_response(&mut self) -> io::Result<HttpResponse> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let (head_len, mut response) = loop {
            let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let response = HttpResponse {
                        status: parsed.code.unwrap_or(0),
                        headers: owned(parsed.headers),
                        body: Vec::new(),
                    };
                    break (n, response);
                }
                Ok(httparse::Status::Partial) if self.buf.len() < HTTP_HEAD_BYTES_MAX => {
                    if self.fill()? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok(httparse::Status::Partial) => return Err(bad("response head too long".into())),
                Err(e) => return Err(bad(format!("not an HTTP response: {e}"))),
            }
        };
        let len = match content_length(&response.headers) {
            Ok(len) => len as usize,
            Err(_) => return Err(bad("a bad Content-Length".into())),
        };
        let len = if (100..200).contains(&response.status) {
            0
        } else {
            len
        };
        let end = head_len + len;
        while self.buf.len() < end {
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        response.body = self.buf[head_len..end].to_vec();
        self.buf.drain(..end);
        Ok(response)
    }

    fn fill(&mut self) -> io::Result<usize> {
        let at = self.buf.len();
        self.buf.resize(at + READ_CHUNK_BYTES, 0);
        let got = self.stream.read(&mut self.buf[at..]);
        self.buf.truncate(at + *got.as_ref().unwrap_or(&0));
        got
    }
}
