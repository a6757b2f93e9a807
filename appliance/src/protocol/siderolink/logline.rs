//! Talos log lines as sent to the SideroLink log receiver (TCP 4001): JSON objects, one per
//! line (`talos.logging.kernel=tcp://…`, Talos `sender_jsonlines.go`). Keys: `msg`,
//! `talos-time`, `talos-level`, for kernel messages also `facility`, `seq`, `clock`,
//! `priority`, plus any extra tags from the machine config.
//!
//! [`LogDecoder`] is one connection's streaming decoder, like Sidero's `json.Decoder`: an
//! object may span reads, several may share a line. It is bounded: an object (or pending
//! partial object) longer than `max_line` bytes is dropped with an error and the decoder
//! resynchronises at the next newline; so is any bytes that are not a JSON object. One bad
//! line never stops the connection's later lines. Pure: bytes in, lines out.

use serde_json::Value;

/// One decoded log object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `msg` (a non-string `msg` is kept as its JSON text; missing = empty).
    pub msg: String,
    /// `talos-time` (RFC 3339 with nanoseconds), as sent.
    pub time: Option<String>,
    /// `talos-level`, as sent.
    pub level: Option<String>,
    /// Every other key, sorted by key; strings as they are, other values as JSON text.
    pub fields: Vec<(String, String)>,
}

/// Why bytes on a log connection produced no line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogLineError {
    #[error("log object longer than {max} bytes dropped")]
    TooLong { max: usize },
    #[error("not JSON ({reason})")]
    Syntax { reason: String },
    #[error("JSON value is not an object")]
    NotAnObject,
    #[error("connection ended inside a log object")]
    Truncated,
}

/// The streaming decoder of one log connection.
#[derive(Debug)]
pub struct LogDecoder {
    buf: Vec<u8>,
    max_line: usize,
    /// Dropping bytes up to the next newline (after an overlong or malformed object).
    skipping: bool,
}

impl LogDecoder {
    /// A decoder that refuses objects longer than `max_line` bytes (at least 1).
    pub fn new(max_line: usize) -> LogDecoder {
        LogDecoder {
            buf: Vec::new(),
            max_line: max_line.max(1),
            skipping: false,
        }
    }

    /// Bytes buffered for an object not complete yet (never more than `max_line`).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feeds the next bytes read; lines and per-line errors are appended to `out` in order.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Result<LogLine, LogLineError>>) {
        if self.skipping {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.skipping = false;
                    data = &data[i + 1..];
                }
                None => return,
            }
        }
        self.buf.extend_from_slice(data);
        // An object can only end with `}`; a line with `\n`. Without either there is
        // nothing new to decode (this keeps slowly arriving objects linear, not quadratic).
        if data.iter().any(|&b| b == b'}' || b == b'\n') || self.buf.len() > self.max_line {
            self.drain(out, false);
        }
    }

    /// The connection ended: decodes what is left and reports a truncated object.
    pub fn finish(&mut self, out: &mut Vec<Result<LogLine, LogLineError>>) {
        self.drain(out, true);
        self.buf.clear();
        self.skipping = false;
    }

    fn drain(&mut self, out: &mut Vec<Result<LogLine, LogLineError>>, eof: bool) {
        let mut pos = 0;
        loop {
            while pos < self.buf.len() && self.buf[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if pos == self.buf.len() {
                break;
            }
            let rest = &self.buf[pos..];
            if rest[0] != b'{' {
                // Only objects are log lines; deciding on the first byte keeps the outcome
                // independent of how the stream was split into reads.
                out.push(Err(LogLineError::NotAnObject));
                pos = self.resync(pos);
                continue;
            }
            let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
            match stream.next() {
                Some(Ok(value)) => {
                    let len = stream.byte_offset();
                    pos += len;
                    out.push(if len > self.max_line {
                        Err(LogLineError::TooLong { max: self.max_line })
                    } else {
                        to_line(value)
                    });
                }
                Some(Err(e)) if e.is_eof() => {
                    if eof {
                        out.push(Err(LogLineError::Truncated));
                        pos = self.buf.len();
                    } else if rest.len() > self.max_line {
                        out.push(Err(LogLineError::TooLong { max: self.max_line }));
                        pos = self.resync(pos);
                    }
                    break;
                }
                Some(Err(e)) => {
                    out.push(Err(LogLineError::Syntax {
                        reason: e.to_string(),
                    }));
                    pos = self.resync(pos);
                }
                None => break,
            }
        }
        self.buf.drain(..pos);
    }

    /// Position after the next newline at or after `from`; without one, everything is
    /// dropped and the decoder skips input until a newline arrives.
    fn resync(&mut self, from: usize) -> usize {
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(i) => from + i + 1,
            None => {
                self.skipping = true;
                self.buf.len()
            }
        }
    }
}

fn to_line(value: Value) -> Result<LogLine, LogLineError> {
    let Value::Object(map) = value else {
        return Err(LogLineError::NotAnObject);
    };
    let mut line = LogLine {
        msg: String::new(),
        time: None,
        level: None,
        fields: Vec::with_capacity(map.len()),
    };
    for (k, v) in map {
        let text = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        match k.as_str() {
            "msg" => line.msg = text,
            "talos-time" => line.time = Some(text),
            "talos-level" => line.level = Some(text),
            _ => line.fields.push((k, text)),
        }
    }
    line.fields.sort();
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::properties::decode_chunks;

    const KMSG: &str = r#"{"clock":6252819,"facility":"kern","msg":"[talos] task startAllServices (1/1): done","priority":"info","seq":711,"talos-level":"info","talos-time":"2026-12-02T10:11:12.123456789Z"}"#;

    #[test]
    fn decodes_a_talos_kernel_line() {
        let out = decode_chunks(4096, &[format!("{KMSG}\n").as_bytes()]);
        assert_eq!(
            out,
            vec![Ok(LogLine {
                msg: "[talos] task startAllServices (1/1): done".into(),
                time: Some("2026-12-02T10:11:12.123456789Z".into()),
                level: Some("info".into()),
                fields: vec![
                    ("clock".into(), "6252819".into()),
                    ("facility".into(), "kern".into()),
                    ("priority".into(), "info".into()),
                    ("seq".into(), "711".into()),
                ],
            })]
        );
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_lines() {
        let stream =
            format!("{KMSG}\n{{\"msg\":\"two\"}}{{\"msg\":\"three\"}}\n  {{\"msg\":\n\"four\"}}\n");
        let whole = decode_chunks(4096, &[stream.as_bytes()]);
        assert_eq!(whole.len(), 4);
        assert!(whole.iter().all(Result::is_ok));
        let bytes = stream.as_bytes();
        for split in 0..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decode_chunks(4096, &[a, b]), whole, "split at {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_chunks(4096, &singles), whole);
    }

    #[test]
    fn bad_input_costs_one_line_only() {
        let out = decode_chunks(
            64,
            &[
                b"not json at all\n{\"msg\":\"ok1\"}\n[1,2]\n",
                format!("{{\"msg\":\"{}", "a".repeat(100)).as_bytes(),
                b"\"x\n{\"msg\":\"ok2\"}\n{\"msg\":}\n{\"msg\":\"",
            ],
        );
        let msgs: Vec<_> = out
            .iter()
            .map(|r| r.as_ref().map(|l| l.msg.as_str()).map_err(Clone::clone))
            .collect();
        assert_eq!(msgs[0], Err(LogLineError::NotAnObject));
        assert_eq!(msgs[1], Ok("ok1"));
        assert_eq!(msgs[2], Err(LogLineError::NotAnObject));
        assert_eq!(msgs[3], Err(LogLineError::TooLong { max: 64 }));
        assert_eq!(msgs[4], Ok("ok2"));
        assert!(
            matches!(msgs[5], Err(LogLineError::Syntax { .. })),
            "{msgs:?}"
        );
        assert_eq!(msgs[6], Err(LogLineError::Truncated));
        assert_eq!(msgs.len(), 7);
    }

    #[test]
    fn an_object_longer_than_the_bound_in_one_read_is_refused() {
        let long = format!(
            "{{\"msg\":\"{}\"}}\n{{\"msg\":\"short\"}}\n",
            "a".repeat(100)
        );
        let out = decode_chunks(64, &[long.as_bytes()]);
        assert_eq!(out[0], Err(LogLineError::TooLong { max: 64 }));
        assert_eq!(out[1].as_ref().map(|l| l.msg.as_str()), Ok("short"));
    }

    /// Bounded fuzz smoke (the real fuzzer is `fuzz/fuzz_targets/siderolink_logline.rs`).
    #[test]
    fn fuzz_smoke_never_panics_and_stays_bounded() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let seeds = [
            KMSG.as_bytes(),
            b"{\"msg\":\"a\"}\n",
            b"{\"msg\":{\"n\":[1,2,{}]}}",
        ];
        for _ in 0..3000 {
            let mut data = seeds[(next() % 3) as usize].to_vec();
            for _ in 0..(next() % 8) {
                let i = (next() as usize) % (data.len() + 1);
                match next() % 3 {
                    0 => data.insert(i, next() as u8),
                    1 if i < data.len() => data[i] = b"{}\"\n\\:,["[(next() % 8) as usize],
                    _ => data.truncate(i),
                }
            }
            super::super::properties::check_logline(&data);
        }
    }
}
