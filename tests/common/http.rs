//! Raw HTTP/1.1 client on `std::net::TcpStream`, for tests that send or
//! check exact bytes.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Connect, read and write timeout of a [`Conn`].
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Time that [`Conn::is_closed_by_peer`] waits for the peer to close.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Number of header fields that the parser starts with. It doubles the
/// number up to [`MAX_RESPONSE_HEADERS`] when a response has more.
const INITIAL_RESPONSE_HEADERS: usize = 64;
const MAX_RESPONSE_HEADERS: usize = 4096;

/// Maximum length of a chunk-size or trailer line, so that a broken peer
/// cannot make the client buffer without end.
const MAX_LINE_LENGTH: usize = 64 * 1024;

/// One parsed HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header fields in the order received. Values that are not UTF-8 are
    /// decoded lossily.
    pub headers: Vec<(String, String)>,
    /// Body after removing the chunked transfer coding, if any.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// Returns the value of the first header named `name`, compared
    /// case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Returns the values of all headers named `name`, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// Returns the body as text, decoding non-UTF-8 bytes lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Parses the body as JSON. Panics with the status and body when it is
    /// not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "response body of status {} is not JSON ({err}): {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// Client connection that reads responses one after another, so it can
/// check keep-alive and pipelining.
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes received but not yet consumed by a parsed response.
    buffer: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`. Panics when the connection fails.
    pub fn connect(addr: SocketAddr) -> Conn {
        Self::try_connect(addr).unwrap_or_else(|err| panic!("failed to connect to {addr}: {err}"))
    }

    /// Connects to `addr` with [`IO_TIMEOUT`] for connecting, reading and
    /// writing.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        Self::from_stream(stream, addr)
    }

    /// Connects to `addr` from the local address `source` (port chosen by
    /// the system), such as 127.0.0.2 to be another peer than 127.0.0.1.
    pub fn try_connect_from(source: IpAddr, addr: SocketAddr) -> io::Result<Conn> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
        Self::from_stream(socket.into(), addr)
    }

    fn from_stream(stream: TcpStream, addr: SocketAddr) -> io::Result<Conn> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            peer: addr,
            buffer: Vec::new(),
        })
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes all of `bytes`. Panics when writing fails.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|err| {
            panic!(
                "failed to send {} bytes to {}: {err}",
                bytes.len(),
                self.peer
            )
        });
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Closes the sending half, so the peer reads end of stream.
    pub fn shutdown_write(&mut self) {
        // An error means the connection is already gone, which is what a
        // caller of this method wants anyway.
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("failed to set the read timeout");
    }

    /// Reads the next response. Panics when it is incomplete, malformed or
    /// does not arrive within [`IO_TIMEOUT`].
    pub fn read_response(&mut self) -> Response {
        self.try_read_response()
            .unwrap_or_else(|err| panic!("failed to read a response from {}: {err}", self.peer))
    }

    /// Reads the response to a HEAD request, which has no body even when its
    /// headers declare a length.
    pub fn read_head_response(&mut self) -> Response {
        self.read_response_with_body(false).unwrap_or_else(|err| {
            panic!("failed to read a HEAD response from {}: {err}", self.peer)
        })
    }

    /// Reads the next response. A 1xx response is returned on its own, so a
    /// caller that expects `100 Continue` reads twice.
    pub fn try_read_response(&mut self) -> io::Result<Response> {
        self.read_response_with_body(true)
    }

    /// Reads the status line and header fields of the next response and
    /// leaves its body unread, for checks on a body that arrives in parts.
    pub fn read_response_head(&mut self) -> Response {
        self.read_head().unwrap_or_else(|err| {
            panic!("failed to read a response head from {}: {err}", self.peer)
        })
    }

    /// Reads exactly `length` bytes of a body whose head
    /// [`Conn::read_response_head`] returned.
    pub fn try_read_body_bytes(&mut self, length: usize) -> io::Result<Vec<u8>> {
        self.take_exact(length)
    }

    /// Returns the bytes received but not yet read as part of a response.
    pub fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// Returns whether the peer closes the connection within [`CLOSE_WAIT`].
    /// Bytes that arrive before the close are kept for the next read.
    pub fn is_closed_by_peer(&mut self) -> bool {
        self.closed_by_peer_within(CLOSE_WAIT)
    }

    /// Returns whether a read returns end of stream, or the connection is
    /// reset, within `wait`.
    pub fn closed_by_peer_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 4096];
        let closed = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break false;
            }
            self.stream
                .set_read_timeout(Some(remaining))
                .expect("failed to set the read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(count) => self.buffer.extend_from_slice(&chunk[..count]),
                Err(err) if is_timeout(&err) => break false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // A reset or any other failure leaves no usable connection.
                Err(_) => break true,
            }
        };
        self.stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("failed to set the read timeout");
        closed
    }

    fn read_response_with_body(&mut self, body_allowed: bool) -> io::Result<Response> {
        let mut response = self.read_head()?;
        let has_body = body_allowed
            && !(100..200).contains(&response.status)
            && response.status != 204
            && response.status != 304;
        if !has_body {
            return Ok(response);
        }

        if is_chunked(&response.headers) {
            self.read_chunked_body(&mut response)?;
        } else if let Some(length) = content_length(&response.headers)? {
            response.body = self.take_exact(length)?;
        } else {
            // Without a length the body ends when the server closes.
            response.body = self.read_to_end()?;
        }
        Ok(response)
    }

    /// Parses the status line and header fields, leaving the body in the
    /// buffer.
    fn read_head(&mut self) -> io::Result<Response> {
        let mut header_slots = INITIAL_RESPONSE_HEADERS;
        loop {
            let mut headers = vec![httparse::EMPTY_HEADER; header_slots];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buffer) {
                Ok(httparse::Status::Complete(head_length)) => {
                    let response = Response {
                        status: parsed.code.unwrap_or(0),
                        reason: parsed.reason.unwrap_or("").to_owned(),
                        version: parsed.version.unwrap_or(1),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|field| {
                                let value = String::from_utf8_lossy(field.value).into_owned();
                                (field.name.to_owned(), value)
                            })
                            .collect(),
                        body: Vec::new(),
                        trailers: Vec::new(),
                    };
                    self.buffer.drain(..head_length);
                    return Ok(response);
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill_buffer()? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "connection closed before a complete response head, {} bytes received",
                                self.buffer.len()
                            ),
                        ));
                    }
                }
                Err(httparse::Error::TooManyHeaders) if header_slots < MAX_RESPONSE_HEADERS => {
                    header_slots *= 2;
                }
                Err(err) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("invalid response head ({err}): {:?}", preview(&self.buffer)),
                    ));
                }
            }
        }
    }

    /// Reads a chunked body and its trailer fields into `response`.
    fn read_chunked_body(&mut self, response: &mut Response) -> io::Result<()> {
        loop {
            let size_line = self.take_line()?;
            let size_text = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("invalid chunk size line {size_line:?}"),
                )
            })?;
            if size == 0 {
                break;
            }
            let chunk = self.take_exact(size)?;
            response.body.extend_from_slice(&chunk);
            let end_of_chunk = self.take_line()?;
            if !end_of_chunk.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "chunk of {size} bytes is followed by {end_of_chunk:?} instead of CRLF"
                    ),
                ));
            }
        }

        loop {
            let line = self.take_line()?;
            if line.is_empty() {
                return Ok(());
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("invalid trailer line {line:?}"),
                ));
            };
            let trailer = (name.trim().to_owned(), value.trim().to_owned());
            response.trailers.push(trailer);
        }
    }

    /// Removes one CRLF-terminated line from the buffer, without the CRLF.
    fn take_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 2);
                return Ok(line);
            }
            if self.buffer.len() > MAX_LINE_LENGTH {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("line longer than {MAX_LINE_LENGTH} bytes in a chunked body"),
                ));
            }
            if self.fill_buffer()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a chunked body",
                ));
            }
        }
    }

    /// Removes exactly `length` bytes from the buffer, reading as needed.
    fn take_exact(&mut self, length: usize) -> io::Result<Vec<u8>> {
        while self.buffer.len() < length {
            if self.fill_buffer()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} of {length} body bytes",
                        self.buffer.len()
                    ),
                ));
            }
        }
        Ok(self.buffer.drain(..length).collect())
    }

    fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill_buffer()? > 0 {}
        Ok(std::mem::take(&mut self.buffer))
    }

    /// Reads once from the socket into the buffer and returns the number of
    /// bytes read, 0 at end of stream.
    fn fill_buffer(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(count) => {
                    self.buffer.extend_from_slice(&chunk[..count]);
                    return Ok(count);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if is_timeout(&err) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "read timed out with {} unparsed bytes buffered: {:?}",
                            self.buffer.len(),
                            preview(&self.buffer)
                        ),
                    ));
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Sends one request on a new connection and reads the response.
///
/// `Host` and `Content-Length` are added unless `headers` contains them. A
/// `Content-Length` is not added either when `headers` has a
/// `Transfer-Encoding`, in which case `body` must already be encoded.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|err| panic!("request {method} {path} to {addr} failed: {err}"))
}

/// Like [`request`], but returns connection and parse errors.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    try_request_from(None, addr, method, path, headers, body)
}

/// Like [`try_request`], from the local address `source` when it is set
/// (see [`Conn::try_connect_from`]).
pub fn try_request_from(
    source: Option<IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let has_header = |name: &str| {
        headers
            .iter()
            .any(|(field, _)| field.eq_ignore_ascii_case(name))
    };

    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has_header("host") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_header("content-length") && !has_header("transfer-encoding") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");

    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);

    let mut conn = match source {
        Some(source) => Conn::try_connect_from(source, addr)?,
        None => Conn::try_connect(addr)?,
    };
    conn.try_send(&bytes)?;
    if method.eq_ignore_ascii_case("HEAD") {
        conn.read_response_with_body(false)
    } else {
        conn.try_read_response()
    }
}

/// Fetches `GET /metrics` from keygate's metrics listener and returns the
/// body. Panics unless the status is 200.
pub fn metrics_text(addr: SocketAddr) -> String {
    let response = request(addr, "GET", "/metrics", &[], b"");
    assert_eq!(
        response.status,
        200,
        "GET /metrics on {addr} returned {}: {}",
        response.status,
        response.text()
    );
    response.text()
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Returns whether the last transfer coding is `chunked`, which makes the
/// body chunked.
fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, value)| value.split(','))
        .last()
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// Returns the Content-Length, or an error when the header fields disagree
/// or are not numbers.
fn content_length(headers: &[(String, String)]) -> io::Result<Option<usize>> {
    let mut length = None;
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        for part in value.split(',') {
            let parsed: usize = part.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("invalid Content-Length {value:?}"),
                )
            })?;
            if length.is_some_and(|previous| previous != parsed) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response has conflicting Content-Length values",
                ));
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// Returns the first bytes of `bytes` as text for error messages.
fn preview(bytes: &[u8]) -> String {
    let end = bytes.len().min(200);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
