//! HTTP `Range: bytes=…` for one file of known length (RFC 9110 §14): a single range
//! `a-b`, `a-` or `-n`. Pure.
//!
//! Multi-range requests and unknown units are answered with the whole file (RFC 9110 lets a
//! server ignore Range); a syntactically valid single range that selects no byte is
//! unsatisfiable (416).

/// What to send for a request's Range header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end` (`end` < length).
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */<length>`.
    Unsatisfiable,
}

/// Decides the answer for `header` (the Range value, if any) on a file of `len` bytes.
pub fn answer(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(h) = header else {
        return RangeAnswer::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if a.is_empty() {
        // Suffix: the last n bytes.
        let Some(n) = num(b) else {
            return RangeAnswer::Full;
        };
        if n == 0 || len == 0 {
            return RangeAnswer::Unsatisfiable;
        }
        let n = n.min(len);
        return RangeAnswer::Partial {
            start: len - n,
            end: len - 1,
        };
    }
    let Some(start) = num(a) else {
        return RangeAnswer::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match num(b) {
            Some(e) => e,
            None => return RangeAnswer::Full,
        }
    };
    if end < start {
        // Syntactically invalid (last < first): ignore the header.
        return RangeAnswer::Full;
    }
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial {
        start,
        end: end.min(len - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAnswer::*;

    #[test]
    fn table() {
        let len = 1000;
        let cases: &[(Option<&str>, RangeAnswer)] = &[
            (None, Full),
            (Some("bytes=0-99"), Partial { start: 0, end: 99 }),
            (
                Some("bytes=500-"),
                Partial {
                    start: 500,
                    end: 999,
                },
            ),
            (
                Some("bytes=-100"),
                Partial {
                    start: 900,
                    end: 999,
                },
            ),
            (Some("bytes=-5000"), Partial { start: 0, end: 999 }),
            (
                Some("bytes=990-5000"),
                Partial {
                    start: 990,
                    end: 999,
                },
            ),
            (
                Some("bytes=999-999"),
                Partial {
                    start: 999,
                    end: 999,
                },
            ),
            (Some("bytes=1000-"), Unsatisfiable),
            (Some("bytes=5000-6000"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=10-5"), Full),
            (Some("bytes=0-1,5-6"), Full),
            (Some("items=0-1"), Full),
            (Some("bytes=abc"), Full),
            (Some("bytes=-"), Full),
            (Some("bytes=+1-2"), Full),
            (Some("bytes=99999999999999999999999-"), Full),
            (Some(""), Full),
        ];
        for (h, want) in cases {
            assert_eq!(answer(*h, len), *want, "{h:?}");
        }
        assert_eq!(answer(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(answer(Some("bytes=-1"), 0), Unsatisfiable);
        assert_eq!(answer(None, 0), Full);
    }

    #[test]
    fn never_out_of_bounds() {
        // Bounded exhaustive check over small inputs: every Partial lies inside the file.
        let parts = [
            "",
            "0",
            "1",
            "2",
            "7",
            "8",
            "9",
            "18446744073709551615",
            "x",
        ];
        for len in 0..10u64 {
            for a in parts {
                for b in parts {
                    let h = format!("bytes={a}-{b}");
                    if let Partial { start, end } = answer(Some(&h), len) {
                        assert!(start <= end && end < len, "{h} len {len}");
                    }
                }
            }
        }
    }
}
