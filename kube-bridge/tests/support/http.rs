//! A minimal blocking HTTP/1.1 client for talking to the in-test API server byte by byte:
//! one request per connection; a watch reads its chunked stream line by line.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Status code, headers (lower-cased names) and JSON body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: raw-test/1\r\nAccept: application/json\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (code, headers) = head(&mut r);
    let mut raw = Vec::new();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        while let Some(chunk) = read_chunk(&mut r) {
            raw.extend(chunk);
        }
    } else {
        r.read_to_end(&mut raw).unwrap();
    }
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw).unwrap()
    };
    (code, headers, body)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (c, _, b) = request(addr, "GET", path, "application/json", "");
    (c, b)
}

fn head(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let code = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_lowercase(), v.trim().to_owned()));
    }
    (code, headers)
}

fn read_chunk(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    if r.read_line(&mut size).ok()? == 0 {
        return None;
    }
    let n = usize::from_str_radix(size.trim(), 16).ok()?;
    if n == 0 {
        return None;
    }
    let mut buf = vec![0; n + 2];
    r.read_exact(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// An open watch: its events one by one.
pub struct Watch {
    r: BufReader<TcpStream>,
    pending: Vec<u8>,
}

impl Watch {
    pub fn open(addr: SocketAddr, path: &str) -> Watch {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: application/json\r\nConnection: close\r\n\r\n").unwrap();
        let mut r = BufReader::new(s);
        let (code, _) = head(&mut r);
        assert_eq!(code, 200, "watch {path}");
        Watch {
            r,
            pending: Vec::new(),
        }
    }

    /// The next event (`None` when the server ended the stream).
    pub fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let chunk = read_chunk(&mut self.r)?;
            self.pending.extend(chunk);
        }
    }

    /// The next event that is not a BOOKMARK.
    pub fn next_change(&mut self) -> Option<Value> {
        loop {
            let e = self.next()?;
            if e["type"] != "BOOKMARK" {
                return Some(e);
            }
        }
    }
}
