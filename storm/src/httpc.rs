//! A minimal HTTP/1.1 GET client as iPXE's: one request per connection, the connection
//! leaving from the client's leased address, `Content-Length` or chunked bodies, the body
//! kept (scripts) or only counted (kernel, initrd).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("bad response: {0}")]
    Bad(&'static str),
    #[error("status {0}")]
    Status(u16),
    #[error("body cut short: {got} of {want} bytes")]
    Short { got: u64, want: u64 },
}

/// What a GET returned.
#[derive(Debug)]
pub struct Got {
    /// Body bytes received.
    pub len: u64,
    /// The body, when kept.
    pub body: Vec<u8>,
}

/// `http://host:port/path…` → (address, path with query).
pub fn split_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr = match host.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(host.parse::<IpAddr>().ok()?, 80),
    };
    Some((addr, path))
}

/// GETs `path` from `server` over a connection from `local`; a status other than 200 is an
/// error.
pub async fn get(
    local: IpAddr,
    server: SocketAddr,
    path: &str,
    keep: bool,
    timeout: Duration,
) -> Result<Got, HttpError> {
    tokio::time::timeout(timeout, get_inner(local, server, path, keep))
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

async fn get_inner(
    local: IpAddr,
    server: SocketAddr,
    path: &str,
    keep: bool,
) -> Result<Got, HttpError> {
    let sock = TcpSocket::new_v4().map_err(HttpError::Connect)?;
    sock.bind(SocketAddr::new(local, 0))
        .map_err(HttpError::Connect)?;
    let mut s = sock.connect(server).await.map_err(HttpError::Connect)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nConnection: close\r\nUser-Agent: iPXE/1.21.1+ (g988d2)\r\nHost: {server}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    // Head.
    let mut buf = vec![0u8; 16384];
    let mut have = 0;
    let head_end = loop {
        if have == buf.len() {
            return Err(HttpError::Bad("header too long"));
        }
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(HttpError::Bad("closed before the header ended"));
        }
        have += n;
        if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Bad("no status"))?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let length: Option<u64> = header("content-length:").and_then(|v| v.parse().ok());
    let chunked = header("transfer-encoding:").is_some_and(|v| v.contains("chunked"));
    let mut body = Vec::new();
    let mut len = 0u64;
    let store = keep || chunked;
    len += (have - head_end) as u64;
    if store {
        body.extend_from_slice(&buf[head_end..have]);
    }
    while length.is_none_or(|want| len < want) {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        len += n as u64;
        if store {
            body.extend_from_slice(&buf[..n]);
        }
    }
    if status != 200 {
        return Err(HttpError::Status(status));
    }
    if let Some(want) = length
        && len < want
    {
        return Err(HttpError::Short { got: len, want });
    }
    if chunked {
        body = dechunk(&body).ok_or(HttpError::Bad("bad chunked body"))?;
        len = body.len() as u64;
        if !keep {
            body = Vec::new();
        }
    }
    Ok(Got { len, body })
}

/// Decodes a whole chunked body; `None` when it is malformed or ends before the last chunk.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            split_url("http://10.0.0.1:8081/boot.ipxe"),
            Some(("10.0.0.1:8081".parse().unwrap(), "/boot.ipxe".into()))
        );
        assert_eq!(
            split_url("http://10.0.0.1/ipxe?uuid=x"),
            Some(("10.0.0.1:80".parse().unwrap(), "/ipxe?uuid=x".into()))
        );
        assert_eq!(split_url("tftp://10.0.0.1/x"), None);
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"3\r\nab"), None);
    }
}
