//! Reads `backup_label` and the end of `backup_manifest` out of the tar
//! stream `pg_basebackup -D - -Ft` writes, as it passes through on its way
//! to the pipeline: with `-X none` the tool does not print its WAL end
//! point, and these two files are where the server states the backup's
//! start (`START WAL LOCATION`, `START TIMELINE`) and end (`WAL-Ranges`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The most of `backup_label` kept (it is a few hundred bytes).
const LABEL_LIMIT: usize = 64 * 1024;
/// The tail of `backup_manifest` kept: its WAL ranges come last.
const MANIFEST_TAIL: usize = 16 * 1024;

/// What the stream said so far.
#[derive(Debug, Default)]
pub struct Seen {
    pub label: Vec<u8>,
    pub manifest_tail: Vec<u8>,
    pub saw_manifest: bool,
}

#[derive(Debug)]
enum State {
    Header {
        buf: Box<[u8; 512]>,
        filled: usize,
    },
    Body {
        remaining: u64,
        pad: u64,
        capture: Capture,
    },
    End,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Capture {
    None,
    Label,
    Manifest,
}

/// Follows the tar structure of the bytes fed to it.
#[derive(Debug)]
pub struct Watch {
    state: State,
    pub seen: Seen,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            state: State::Header {
                buf: Box::new([0u8; 512]),
                filled: 0,
            },
            seen: Seen::default(),
        }
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256 (GNU) for sizes past 8 GiB.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

impl Watch {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::End => return,
                State::Header { buf, filled } => {
                    let n = (512 - *filled).min(data.len());
                    buf[*filled..*filled + n].copy_from_slice(&data[..n]);
                    *filled += n;
                    data = &data[n..];
                    if *filled < 512 {
                        continue;
                    }
                    if buf.iter().all(|&b| b == 0) {
                        self.state = State::End;
                        continue;
                    }
                    let name_end = buf[..100].iter().position(|&b| b == 0).unwrap_or(100);
                    let name = String::from_utf8_lossy(&buf[..name_end]).to_string();
                    let name = name.trim_start_matches("./");
                    let Some(size) = octal(&buf[124..136]) else {
                        self.state = State::End;
                        continue;
                    };
                    let capture = match name {
                        "backup_label" => Capture::Label,
                        "backup_manifest" => {
                            self.seen.saw_manifest = true;
                            Capture::Manifest
                        }
                        _ => Capture::None,
                    };
                    let pad = (512 - size % 512) % 512;
                    self.state = State::Body {
                        remaining: size,
                        pad,
                        capture,
                    };
                }
                State::Body {
                    remaining,
                    pad,
                    capture,
                } => {
                    if *remaining > 0 {
                        let n = (*remaining).min(data.len() as u64) as usize;
                        match capture {
                            Capture::Label if self.seen.label.len() < LABEL_LIMIT => {
                                self.seen.label.extend_from_slice(&data[..n])
                            }
                            Capture::Manifest => {
                                let tail = &mut self.seen.manifest_tail;
                                tail.extend_from_slice(&data[..n]);
                                if tail.len() > 2 * MANIFEST_TAIL {
                                    let cut = tail.len() - MANIFEST_TAIL;
                                    tail.drain(..cut);
                                }
                            }
                            _ => {}
                        }
                        *remaining -= n as u64;
                        data = &data[n..];
                    } else if *pad > 0 {
                        let n = (*pad).min(data.len() as u64) as usize;
                        *pad -= n as u64;
                        data = &data[n..];
                    }
                    if let State::Body {
                        remaining: 0,
                        pad: 0,
                        ..
                    } = self.state
                    {
                        self.state = State::Header {
                            buf: Box::new([0u8; 512]),
                            filled: 0,
                        };
                    }
                }
            }
        }
    }
}

/// Passes a stream through, feeding a [`Watch`].
pub struct Watched<R> {
    pub inner: R,
    pub watch: Arc<Mutex<Watch>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            if let Ok(mut w) = self.watch.lock() {
                w.feed(&buf.filled()[before..]);
            }
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn label_and_manifest_tail_are_found_whatever_the_read_sizes() {
        let label =
            b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n";
        let big = vec![b'x'; 70_000];
        let manifest = [
            big.as_slice(),
            b"\"WAL-Ranges\": [ { \"Timeline\": 1, \"End-LSN\": \"0/2000100\" } ]",
        ]
        .concat();
        let stream = tar_of(&[
            ("base/1/1259", &big),
            ("backup_label", label),
            ("backup_manifest", &manifest),
        ]);
        for step in [1, 7, 512, 4096, stream.len()] {
            let mut w = Watch::default();
            for chunk in stream.chunks(step) {
                w.feed(chunk);
            }
            assert_eq!(w.seen.label, label, "step {step}");
            assert!(w.seen.saw_manifest);
            assert!(
                String::from_utf8_lossy(&w.seen.manifest_tail).ends_with("\"0/2000100\" } ]"),
                "step {step}"
            );
        }
    }
}
