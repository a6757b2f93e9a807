//! Properties of the SideroLink cores that must hold for ANY input, as functions that panic
//! on a violation. Called by the cargo-fuzz targets `fuzz/fuzz_targets/siderolink_*.rs`
//! with fuzzer input and by the bounded fuzz smokes in `cargo test`. Pure; no IO.

use super::logline::{LogDecoder, LogLine, LogLineError};

/// Decodes `chunks` as one connection; checks after every read that the decoder's buffer
/// holds at most `max` bytes beyond that read.
pub fn decode_chunks(max: usize, chunks: &[&[u8]]) -> Vec<Result<LogLine, LogLineError>> {
    let mut d = LogDecoder::new(max);
    let mut out = Vec::new();
    for c in chunks {
        d.push(c, &mut out);
        assert!(
            d.pending() <= max.max(1) + c.len(),
            "decoder buffer over its bound"
        );
    }
    d.finish(&mut out);
    assert_eq!(d.pending(), 0, "finish leaves nothing buffered");
    out
}

/// Byte 0 picks the line bound, the rest is the stream: no panic, the buffer bound holds,
/// and when no object can hit the bound, reading the stream in two pieces or byte by byte
/// decodes exactly the same lines as reading it whole.
pub fn check_logline(data: &[u8]) {
    let max = 1 + (data.first().copied().unwrap_or(0) as usize % 64) * 8;
    let body = data.get(1..).unwrap_or_default();
    let whole = decode_chunks(max, &[body]);
    let half = body.len() / 2;
    let split = decode_chunks(max, &[&body[..half], &body[half..]]);
    let ok = |v: &[Result<LogLine, LogLineError>]| -> Vec<LogLine> {
        v.iter().filter_map(|r| r.as_ref().ok().cloned()).collect()
    };
    if max >= body.len() {
        assert_eq!(ok(&whole), ok(&split), "chunking changed the decoded lines");
        if body.len() <= 512 {
            let singles: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(
                ok(&whole),
                ok(&decode_chunks(max, &singles)),
                "byte-wise reads"
            );
        }
    }
}
