//! Record assembly for one tailed file: splits the bytes read into lines,
//! joins continuation lines into multiline records, and caps every record
//! at `max_record_bytes`. Knows nothing of files or batches: it is fed
//! bytes with their file offset and hands back records with the offset
//! right after them (what a checkpoint may advance to once they are sent).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use regex::Regex;

/// How a source's bytes become records.
pub(crate) struct Rules<'a> {
    pub max_record_bytes: usize,
    /// A line matching this starts a record; others continue the previous one.
    pub multiline_start: Option<&'a Regex>,
}

/// One complete record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub text: &'a [u8],
    /// File offset right after the record's last byte (and its newline).
    pub end: u64,
    /// The record was longer than `max_record_bytes` and was cut.
    pub truncated: bool,
}

/// A multiline record still open to continuation lines.
#[derive(Debug)]
struct Pending {
    text: Vec<u8>,
    end: u64,
    truncated: bool,
    updated: Instant,
}

/// The state between two reads of a file: an unterminated line and an
/// unfinished multiline record.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    /// Bytes of the current, unterminated line.
    partial: Vec<u8>,
    /// The current line passed `max_record_bytes`: the rest is skipped.
    partial_truncated: bool,
    pending: Option<Pending>,
}

impl Assembler {
    /// Splits `data`, read at file offset `base`, into lines and passes
    /// every complete record to `emit`. Returns the number of lines.
    pub fn push(
        &mut self,
        data: &[u8],
        base: u64,
        rules: &Rules<'_>,
        now: Instant,
        emit: &mut impl FnMut(Record<'_>),
    ) -> u64 {
        let max = rules.max_record_bytes;
        let mut start = 0usize;
        let mut lines = 0u64;
        while let Some(pos) = memchr::memchr(b'\n', &data[start..]) {
            let end = start + pos;
            let line_bytes = &data[start..end];
            let line_end_off = base + end as u64 + 1;
            // A line wholly inside this chunk is used in place (no copy).
            let (text, truncated) = if self.partial.is_empty() && !self.partial_truncated {
                if line_bytes.len() > max {
                    (Cow::Borrowed(&line_bytes[..max]), true)
                } else {
                    (Cow::Borrowed(line_bytes), false)
                }
            } else {
                let room = max.saturating_sub(self.partial.len());
                let take = line_bytes.len().min(room);
                self.partial.extend_from_slice(&line_bytes[..take]);
                let truncated = self.partial_truncated || take < line_bytes.len();
                self.partial_truncated = false;
                (Cow::Owned(std::mem::take(&mut self.partial)), truncated)
            };
            self.line(text, line_end_off, truncated, rules, now, emit);
            lines += 1;
            start = end + 1;
        }
        let rest = &data[start..];
        if !rest.is_empty() {
            let room = max.saturating_sub(self.partial.len());
            let take = rest.len().min(room);
            self.partial.extend_from_slice(&rest[..take]);
            if take < rest.len() {
                self.partial_truncated = true;
            }
        }
        lines
    }

    /// One complete line; joins multiline records.
    fn line(
        &mut self,
        text: Cow<'_, [u8]>,
        end: u64,
        truncated: bool,
        rules: &Rules<'_>,
        now: Instant,
        emit: &mut impl FnMut(Record<'_>),
    ) {
        let text = match text {
            Cow::Borrowed(b) => Cow::Borrowed(b.strip_suffix(b"\r").unwrap_or(b)),
            Cow::Owned(mut v) => {
                if v.last() == Some(&b'\r') {
                    v.pop();
                }
                Cow::Owned(v)
            }
        };
        let Some(re) = rules.multiline_start else {
            if !text.is_empty() {
                emit(Record {
                    text: &text,
                    end,
                    truncated,
                });
            }
            return;
        };
        let text = text.into_owned();
        let starts = re.is_match(&String::from_utf8_lossy(&text));
        match self.pending.take() {
            Some(mut p) if !starts => {
                let room = rules.max_record_bytes.saturating_sub(p.text.len());
                if room > 1 {
                    p.text.push(b'\n');
                    let take = text.len().min(room - 1);
                    p.text.extend_from_slice(&text[..take]);
                    p.truncated |= take < text.len() || truncated;
                } else {
                    p.truncated = true;
                }
                p.end = end;
                p.updated = now;
                self.pending = Some(p);
            }
            previous => {
                self.pending = Some(Pending {
                    text,
                    end,
                    truncated,
                    updated: now,
                });
                if let Some(p) = previous {
                    emit(p.record());
                }
            }
        }
    }

    /// A multiline record with no new line for `quiet` is whole: passes it
    /// to `emit`.
    pub fn flush_quiet(&mut self, now: Instant, quiet: Duration, emit: impl FnOnce(Record<'_>)) {
        let due = self
            .pending
            .as_ref()
            .is_some_and(|p| now.saturating_duration_since(p.updated) >= quiet);
        if due {
            if let Some(p) = self.pending.take() {
                emit(p.record());
            }
        }
    }

    /// The file is finished (rotated away and drained): the open multiline
    /// record, then an unterminated last line ending at `end`, are records
    /// too.
    pub fn finish(&mut self, end: u64, emit: &mut impl FnMut(Record<'_>)) {
        if let Some(p) = self.pending.take() {
            emit(p.record());
        }
        if !self.partial.is_empty() {
            let text = std::mem::take(&mut self.partial);
            emit(Record {
                text: &text,
                end,
                truncated: self.partial_truncated,
            });
        }
        self.partial_truncated = false;
    }

    /// The file's content was replaced (copytruncate): what it held is lost.
    pub fn reset(&mut self) {
        self.partial.clear();
        self.partial_truncated = false;
        self.pending = None;
    }
}

impl Pending {
    fn record(&self) -> Record<'_> {
        Record {
            text: &self.text,
            end: self.end,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned copy of a record, to compare.
    #[derive(Debug, PartialEq)]
    struct Got {
        text: String,
        end: u64,
        truncated: bool,
    }

    fn got(text: &str, end: u64, truncated: bool) -> Got {
        Got {
            text: text.into(),
            end,
            truncated,
        }
    }

    /// Feeds `chunks` in order (as consecutive reads of one file) and
    /// collects the records.
    fn feed(a: &mut Assembler, rules: &Rules<'_>, chunks: &[&[u8]], base: u64) -> Vec<Got> {
        let mut out = Vec::new();
        let mut off = base;
        let now = Instant::now();
        for chunk in chunks {
            a.push(chunk, off, rules, now, &mut |r| {
                out.push(Got {
                    text: String::from_utf8_lossy(r.text).into_owned(),
                    end: r.end,
                    truncated: r.truncated,
                })
            });
            off += chunk.len() as u64;
        }
        out
    }

    fn plain(max: usize) -> Rules<'static> {
        Rules {
            max_record_bytes: max,
            multiline_start: None,
        }
    }

    #[test]
    fn lines_end_at_the_offset_after_their_newline_and_lose_a_trailing_cr() {
        let mut a = Assembler::default();
        let out = feed(&mut a, &plain(100), &[b"one\r\ntwo\n\nthree"], 10);
        assert_eq!(out, vec![got("one", 15, false), got("two", 19, false)]);
        // The empty line is no record; "three" waits for its newline.
        let out = feed(&mut a, &plain(100), &[b"!\n"], 25);
        assert_eq!(out, vec![got("three!", 27, false)]);
    }

    #[test]
    fn a_line_split_across_reads_is_joined() {
        let mut a = Assembler::default();
        let out = feed(&mut a, &plain(100), &[b"hel", b"lo wo", b"rld\nnext\n"], 0);
        assert_eq!(
            out,
            vec![got("hello world", 12, false), got("next", 17, false)]
        );
    }

    #[test]
    fn push_counts_lines_including_empty_ones() {
        let mut a = Assembler::default();
        let n = a.push(b"a\n\nb\nc", 0, &plain(100), Instant::now(), &mut |_| {});
        assert_eq!(n, 3);
    }

    #[test]
    fn an_overlong_line_is_cut_at_max_and_its_rest_skipped() {
        let mut a = Assembler::default();
        // Inside one chunk.
        let out = feed(&mut a, &plain(4), &[b"abcdefgh\nok\n"], 0);
        assert_eq!(out, vec![got("abcd", 9, true), got("ok", 12, false)]);
        // Across chunks: the partial line is capped as it grows.
        let mut a = Assembler::default();
        let out = feed(&mut a, &plain(4), &[b"abc", b"defg", b"hi\nok\n"], 0);
        assert_eq!(out, vec![got("abcd", 10, true), got("ok", 13, false)]);
        assert!(a.partial.is_empty() && !a.partial_truncated);
    }

    #[test]
    fn multiline_joins_continuations_until_the_next_start() {
        let re = Regex::new(r"^\[").unwrap();
        let rules = Rules {
            max_record_bytes: 100,
            multiline_start: Some(&re),
        };
        let mut a = Assembler::default();
        let out = feed(&mut a, &rules, &[b"[1] boom\n  at a\n  at b\n[2] ok\n"], 0);
        assert_eq!(out, vec![got("[1] boom\n  at a\n  at b", 23, false)]);
        // The last record stays open until it is quiet long enough.
        let mut flushed = Vec::new();
        a.flush_quiet(Instant::now(), Duration::from_secs(3600), |r| {
            flushed.push(r.end)
        });
        assert!(flushed.is_empty());
        let later = Instant::now() + Duration::from_secs(2);
        a.flush_quiet(later, Duration::from_secs(1), |r| {
            flushed.push(r.end);
            assert_eq!(r.text, b"[2] ok");
        });
        assert_eq!(flushed, vec![30]);
    }

    #[test]
    fn a_multiline_record_is_capped_at_max() {
        let re = Regex::new(r"^\[").unwrap();
        let rules = Rules {
            max_record_bytes: 10,
            multiline_start: Some(&re),
        };
        let mut a = Assembler::default();
        let out = feed(&mut a, &rules, &[b"[1] abc\ndefgh\nmore\n[2]\n"], 0);
        assert_eq!(out, vec![got("[1] abc\nde", 19, true)]);
    }

    #[test]
    fn finish_emits_the_open_record_then_the_unterminated_line() {
        let re = Regex::new(r"^\[").unwrap();
        let rules = Rules {
            max_record_bytes: 100,
            multiline_start: Some(&re),
        };
        let mut a = Assembler::default();
        assert!(feed(&mut a, &rules, &[b"[1] x\n  y\ntail"], 0).is_empty());
        let mut out = Vec::new();
        a.finish(14, &mut |r| {
            out.push((String::from_utf8_lossy(r.text).into_owned(), r.end))
        });
        assert_eq!(out, vec![("[1] x\n  y".into(), 10), ("tail".into(), 14)]);
        let mut again = 0;
        a.finish(14, &mut |_| again += 1);
        assert_eq!(again, 0, "finish leaves nothing behind");
    }

    #[test]
    fn reset_drops_what_was_pending() {
        let mut a = Assembler::default();
        feed(&mut a, &plain(100), &[b"half a line"], 0);
        a.reset();
        let out = feed(&mut a, &plain(100), &[b"new\n"], 0);
        assert_eq!(out, vec![got("new", 4, false)]);
    }
}
