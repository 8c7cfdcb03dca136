//! One HTTP/1.1 exchange: a request over a std `TcpStream` to an IP
//! literal, and its answer, read within a time limit and a size limit.
//! No TLS, no proxy, no redirects and no DNS: an HTTP client crate would
//! resolve names through getaddrinfo, which costs about 300 KiB in the
//! static glibc binary (whose budget is 2 MiB in all).
//!
//! The status line and header fields are parsed by `httparse` (the parser
//! under hyper; no dependencies). What it leaves to its caller is here:
//! skipping interim `1xx` answers, and framing the body by its length, its
//! chunks or the end of the connection. Every byte of an answer is
//! untrusted input, so every size it states is checked against the bytes
//! there are and against `MAX_ANSWER` before it is used, and no message
//! quotes a byte of it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use httparse::Status;

/// The most of an answer that is read, head and body; the supervisor's are
/// a few hundred bytes.
pub const MAX_ANSWER: usize = 64 * 1024;

/// The most header fields a head may have.
const MAX_HEADERS: usize = 32;

/// Time limits of one exchange.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// To connect.
    pub(crate) connect: Duration,
    /// For the whole exchange, connecting included.
    pub(crate) total: Duration,
}

/// A request, sent with `Connection: close`. No `Debug`: the target may
/// hold the API key.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// The path and the query. It may hold a secret, so no error shows it.
    pub(crate) target: &'a str,
    /// The `Host` header.
    pub(crate) host: &'a str,
    /// A JSON body, if any.
    pub(crate) json: Option<&'a str>,
}

/// A final answer: its status code and its body (de-chunked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why an exchange brought no usable answer.
#[derive(Debug)]
pub(crate) enum Error {
    /// Nothing came back: no connection, no answer in time, or the
    /// connection closed before the first byte of one.
    Io(io::Error),
    /// An answer came back, but not one that can be read as HTTP/1.x.
    Malformed(Malformed),
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::Io(err)
    }
}

impl From<Malformed> for Error {
    fn from(err: Malformed) -> Error {
        Error::Malformed(err)
    }
}

/// What is wrong with an answer, in words of our own (never a byte of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn malformed(why: impl Into<String>) -> Malformed {
    Malformed(why.into())
}

/// Send `request` to `socket` and read the final answer, within `bounds`.
pub(crate) fn exchange(
    socket: SocketAddr,
    request: &Request,
    bounds: Bounds,
) -> Result<Answer, Error> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&socket, bounds.connect)?;
    stream.set_write_timeout(Some(bounds.total))?;
    stream.write_all(&request.to_bytes())?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = bounds.total.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut).into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        };
        if n == 0 && raw.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed without an answer",
            )
            .into());
        }
        if raw.len().saturating_add(n) > MAX_ANSWER {
            return Err(too_large().into());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(answer) = parse_answer(&raw, n == 0)? {
            return Ok(answer);
        }
        if n == 0 {
            // parse_answer never waits for more once the server has closed.
            return Err(malformed("the answer is cut short").into());
        }
    }
}

impl Request<'_> {
    fn to_bytes(&self) -> Vec<u8> {
        let mut text = format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: resin-lock/{version}\r\n\
             Accept: application/json\r\nConnection: close\r\n",
            method = self.method,
            target = self.target,
            host = self.host,
            version = env!("CARGO_PKG_VERSION"),
        );
        match self.json {
            Some(body) => text.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => text.push_str("\r\n"),
        }
        text.into_bytes()
    }
}

/// Parse an HTTP/1.x answer from the bytes read so far.
///
/// `Ok(Some(answer))` once the final answer is complete (interim `1xx`
/// answers before it are skipped); `Ok(None)` while more must be read;
/// `Err` when the bytes cannot be an acceptable answer. `closed` says that
/// the server has closed the connection: nothing more will come, so the
/// answer is complete or an error, never `Ok(None)`. A body is framed by
/// `Transfer-Encoding: chunked`, else by `Content-Length`, else by the end
/// of the connection.
/// No size the answer states is trusted: a body or a chunk over
/// [`MAX_ANSWER`] is an error. Never panics, whatever the bytes.
pub fn parse_answer(raw: &[u8], closed: bool) -> Result<Option<Answer>, Malformed> {
    let mut rest = raw;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let (head_len, status) = match head.parse(rest) {
            Ok(Status::Complete(len)) => (len, head.code.unwrap_or_default()),
            Ok(Status::Partial) => return incomplete(closed, "the answer is cut short"),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(malformed(format!(
                    "the answer has more than {MAX_HEADERS} header fields"
                )));
            }
            Err(err) => return Err(malformed(format!("the answer is not HTTP ({err})"))),
        };
        let body = rest.get(head_len..).unwrap_or_default();
        match status {
            // Interim answers (100 Continue, 102 Processing, 103 Early
            // Hints): the final answer follows.
            100..=199 if status != 101 => {
                rest = body;
                continue;
            }
            // No body, whatever the header fields say. 101 (a protocol
            // switch nobody asked for) is final and unexpected.
            101 | 204 | 304 => {
                return Ok(Some(Answer {
                    status,
                    body: Vec::new(),
                }));
            }
            _ => {}
        }
        let body = match framing(head.headers)? {
            Framing::Chunked => match dechunk(body, closed)? {
                Some(body) => body,
                None => return incomplete(closed, "the chunked answer is cut short"),
            },
            Framing::Length(len) => match body.get(..len) {
                Some(body) => body.to_vec(),
                None => return incomplete(closed, "the answer is cut short"),
            },
            Framing::Close if closed => body.to_vec(),
            Framing::Close => return Ok(None),
        };
        return Ok(Some(Answer { status, body }));
    }
}

/// Not all in yet: wait for more, unless nothing more can come.
fn incomplete(closed: bool, why: &str) -> Result<Option<Answer>, Malformed> {
    if closed {
        Err(malformed(why))
    } else {
        Ok(None)
    }
}

fn too_large() -> Malformed {
    malformed(format!(
        "the answer is too large (over {} KiB)",
        MAX_ANSWER / 1024
    ))
}

/// How the end of a body is found.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Chunked,
    /// A `Content-Length` within `MAX_ANSWER`.
    Length(usize),
    /// The server closes the connection.
    Close,
}

/// The framing the header fields announce. A transfer coding other than
/// `chunked` alone is an error (the request asks for none), and so are a
/// `Content-Length` that is not a plain number and two that disagree.
fn framing(headers: &[httparse::Header]) -> Result<Framing, Malformed> {
    let mut chunked = false;
    let mut length = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let codings: Vec<&[u8]> = header
                .value
                .split(|&b| b == b',')
                .map(|coding| coding.trim_ascii())
                .filter(|coding| !coding.is_empty())
                .collect();
            if chunked
                || !matches!(codings[..], [coding] if coding.eq_ignore_ascii_case(b"chunked"))
            {
                return Err(malformed(
                    "the answer uses a transfer coding other than chunked",
                ));
            }
            chunked = true;
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let value = header.value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(malformed("the answer's Content-Length is not a number"));
            }
            // All digits: the only way this fails is a number over u64::MAX.
            let Some(len) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v <= MAX_ANSWER)
            else {
                return Err(too_large());
            };
            if length.is_some_and(|seen| seen != len) {
                return Err(malformed(
                    "the answer has two different Content-Length values",
                ));
            }
            length = Some(len);
        }
    }
    // Transfer-Encoding wins over Content-Length (RFC 9112, section 6.3).
    Ok(match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(len)) => Framing::Length(len),
        (false, None) => Framing::Close,
    })
}

/// The body of a chunked answer once its last chunk and the trailer fields
/// after it are in (`None` until then). Once the server has closed, the last
/// chunk is enough: only the end of the trailer fields, which are ignored,
/// is missing.
fn dechunk(mut rest: &[u8], closed: bool) -> Result<Option<Vec<u8>>, Malformed> {
    let mut body = Vec::new();
    loop {
        // httparse takes an empty size line for 0; HTTP does not.
        if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
            return Err(bad_chunk_size());
        }
        let (line_len, size) = match httparse::parse_chunk_size(rest) {
            Ok(Status::Complete(found)) => found,
            Ok(Status::Partial) => return Ok(None),
            Err(httparse::InvalidChunkSize) => return Err(bad_chunk_size()),
        };
        let Some(size) = usize::try_from(size).ok().filter(|&size| {
            body.len()
                .checked_add(size)
                .is_some_and(|end| end <= MAX_ANSWER)
        }) else {
            return Err(malformed(format!(
                "a chunk of the answer is too large (over {} KiB)",
                MAX_ANSWER / 1024
            )));
        };
        let data = rest.get(line_len..).unwrap_or_default();
        if size == 0 {
            let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            return match httparse::parse_headers(data, &mut trailers) {
                Ok(Status::Complete(_)) => Ok(Some(body)),
                Ok(Status::Partial) if closed => Ok(Some(body)),
                Ok(Status::Partial) => Ok(None),
                Err(err) => Err(malformed(format!(
                    "the trailer fields of the answer are malformed ({err})"
                ))),
            };
        }
        let Some(chunk) = data.get(..size) else {
            return Ok(None);
        };
        let after = data.get(size..).unwrap_or_default();
        match after.get(..2) {
            Some(b"\r\n") => {}
            None if b"\r\n".starts_with(after) => return Ok(None),
            _ => {
                return Err(malformed(
                    "a chunk of the answer does not end where its size says",
                ));
            }
        }
        body.extend_from_slice(chunk);
        rest = after.get(2..).unwrap_or_default();
    }
}

fn bad_chunk_size() -> Malformed {
    malformed("a chunk size of the answer is not a hexadecimal number of at most 16 digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> Answer {
        parse_answer(raw, false)
            .unwrap_or_else(|err| panic!("{err}: {:?}", String::from_utf8_lossy(raw)))
            .unwrap_or_else(|| panic!("incomplete: {:?}", String::from_utf8_lossy(raw)))
    }

    fn error(raw: &[u8], closed: bool) -> String {
        match parse_answer(raw, closed) {
            Err(err) => err.0,
            Ok(answer) => panic!("{answer:?}: {:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn answers_are_parsed_when_complete() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            complete(full),
            Answer {
                status: 200,
                body: b"{}".to_vec()
            }
        );
        // Not all in yet.
        assert_eq!(parse_answer(&full[..full.len() - 1], false), Ok(None));
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\n", false), Ok(None));
        assert!(error(&full[..full.len() - 1], true).contains("cut short"));
        // No length: until the server closes.
        let open = b"HTTP/1.0 500 Oops\r\n\r\nbody";
        assert_eq!(parse_answer(open, false), Ok(None));
        assert_eq!(parse_answer(open, true).unwrap().unwrap().body, b"body");
        assert_eq!(complete(b"HTTP/1.1 204 No Content\r\n\r\n").status, 204);
        // Chunked.
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(complete(chunked).body, b"abcde");
        for cut in 1..chunked.len() {
            let part = &chunked[..cut];
            assert_eq!(parse_answer(part, false), Ok(None), "{cut}");
            if cut < chunked.len() - 2 {
                assert!(error(part, true).contains("cut short"), "{cut}");
            }
        }
        // With trailer fields; without the end of them once the server closed.
        let trailers =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(complete(trailers).body, b"x");
        let unended = &trailers[..trailers.len() - 2];
        assert_eq!(parse_answer(unended, false), Ok(None));
        assert_eq!(parse_answer(unended, true).unwrap().unwrap().body, b"x");
        // Not HTTP at all.
        assert!(error(b"SSH-2.0-OpenSSH\r\n\r\n", true).contains("not HTTP"));
        assert!(error(b"SSH-2.0", false).contains("not HTTP"));
    }

    #[test]
    fn interim_answers_are_skipped() {
        let answer = complete(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\
              HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(answer.status, 202);
        assert_eq!(
            parse_answer(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            Ok(None)
        );
        assert!(error(b"HTTP/1.1 100 Continue\r\n\r\n", true).contains("cut short"));
        // A protocol switch is final (and nobody asked for it).
        assert_eq!(complete(b"HTTP/1.1 101 Switching\r\n\r\nxyz").status, 101);
    }

    #[test]
    fn sizes_in_the_answer_are_checked() {
        let chunked = |size: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
            )
        };
        let cases = [
            (chunked("ffffffffffffffff"), "too large"),
            (chunked("fffffffffffffffe"), "too large"),
            (chunked(&format!("{:x}", MAX_ANSWER + 1)), "too large"),
            (chunked("10000000000000000"), "hexadecimal"),
            (chunked("-1"), "hexadecimal"),
            (chunked(""), "hexadecimal"),
            (chunked("2"), "does not end"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_owned(),
                "too large",
            ),
            (
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_ANSWER + 1),
                "too large",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".to_owned(),
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_owned(),
                "two different",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_owned(),
                "transfer coding",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                    .to_owned(),
                "transfer coding",
            ),
            (
                format!("HTTP/1.1 200 OK\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS + 1)),
                "header fields",
            ),
        ];
        for (raw, word) in cases {
            for closed in [false, true] {
                let err = error(raw.as_bytes(), closed);
                assert!(err.contains(word), "{raw:?}: {err}");
            }
        }
        // Repeated equal lengths are one length; chunked wins over a length.
        assert_eq!(
            complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n{}").body,
            b"{}"
        );
        assert_eq!(
            complete(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n").body,
            b"x"
        );
    }

    #[test]
    fn the_request_is_one_http_11_exchange() {
        let request = Request {
            method: "POST",
            target: "/v1/update?apikey=k",
            host: "127.0.0.1:48484",
            json: Some("{}"),
        };
        let text = String::from_utf8(request.to_bytes()).unwrap();
        assert!(text.starts_with("POST /v1/update?apikey=k HTTP/1.1\r\nHost: 127.0.0.1:48484\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"), "{text}");
    }
}
