//! A `mariadb-dump --single-transaction --master-data=2 --gtid` source that
//! reads the dump's binlog coordinates as they stream by: the
//! `-- CHANGE MASTER TO MASTER_LOG_FILE='f', MASTER_LOG_POS=n;` comment near
//! the head and the `-- SET GLOBAL gtid_slave_pos='...';` comment near the
//! tail. Both describe the snapshot the dump reads (the tool takes them
//! under the same lock that starts its consistent transaction), so the
//! manifest records them instead of leaving them in a SQL comment. A dump
//! without a position fails: it would not be a base for replaying binlogs.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{Error, Result};
use crate::manifest::BinlogPosition;
use crate::source::Source;
use crate::target::ByteReader;

/// The position comment is in the first few KiB; never look further.
const HEAD_BYTES: usize = 64 * 1024;
/// The GTID comment is among the last lines.
const TAIL_BYTES: usize = 4096;

#[derive(Default)]
struct Seen {
    head: Vec<u8>,
    head_done: bool,
    file_pos: Option<(String, u64)>,
    seen_at: Option<DateTime<Utc>>,
    tail: VecDeque<u8>,
}

/// Wraps a dump source and records its binlog position.
pub struct PositionedDump {
    inner: Box<dyn Source>,
    seen: Arc<Mutex<Seen>>,
    position: Option<BinlogPosition>,
}

impl PositionedDump {
    pub fn new(inner: Box<dyn Source>) -> Self {
        PositionedDump {
            inner,
            seen: Arc::new(Mutex::new(Seen::default())),
            position: None,
        }
    }
}

#[async_trait]
impl Source for PositionedDump {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn open(&mut self) -> Result<ByteReader> {
        let reader = self.inner.open().await?;
        Ok(Box::pin(Watch {
            inner: reader,
            seen: Arc::clone(&self.seen),
        }))
    }

    async fn finish(&mut self) -> Result<()> {
        self.inner.finish().await?;
        let seen = self
            .seen
            .lock()
            .map_err(|_| Error::Internal("binlog position lock poisoned".into()))?;
        let (Some((file, position)), Some(seen_at)) = (seen.file_pos.clone(), seen.seen_at) else {
            return Err(Error::Source(format!(
                "{}: the dump does not record a binlog position (no `-- CHANGE MASTER TO MASTER_LOG_FILE=...` line); the job has binlog = true, so the server must have binary logging on (log_bin) and the dump tool must support --master-data",
                self.inner.describe()
            )));
        };
        let tail: Vec<u8> = seen.tail.iter().copied().collect();
        self.position = Some(BinlogPosition {
            file,
            position,
            gtid: parse_gtid(&String::from_utf8_lossy(&tail)),
            seen_at,
        });
        Ok(())
    }

    fn binlog_position(&self) -> Option<BinlogPosition> {
        self.position.clone()
    }
}

struct Watch {
    inner: ByteReader,
    seen: Arc<Mutex<Seen>>,
}

impl AsyncRead for Watch {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let new = &buf.filled()[before..];
            if let Ok(mut seen) = self.seen.lock() {
                observe(&mut seen, new);
            }
        }
        poll
    }
}

fn observe(seen: &mut Seen, new: &[u8]) {
    if !seen.head_done {
        let room = HEAD_BYTES - seen.head.len();
        seen.head.extend_from_slice(&new[..new.len().min(room)]);
        if let Some(found) = parse_file_pos(&String::from_utf8_lossy(&seen.head)) {
            seen.file_pos = Some(found);
            seen.seen_at = Some(Utc::now());
            seen.head_done = true;
            seen.head = Vec::new();
        } else if seen.head.len() >= HEAD_BYTES {
            seen.head_done = true;
            seen.head = Vec::new();
        }
    }
    let skip = new.len().saturating_sub(TAIL_BYTES);
    for &b in &new[skip..] {
        if seen.tail.len() == TAIL_BYTES {
            seen.tail.pop_front();
        }
        seen.tail.push_back(b);
    }
}

/// `-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000002', MASTER_LOG_POS=599;`
/// (MySQL 8 writes `SOURCE_LOG_FILE`/`SOURCE_LOG_POS`). Only a complete
/// line counts, so a position cut by a read boundary is not misread.
pub fn parse_file_pos(text: &str) -> Option<(String, u64)> {
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break;
        }
        let line = line.trim();
        let Some(rest) = line
            .strip_prefix("-- CHANGE MASTER TO ")
            .or_else(|| line.strip_prefix("-- CHANGE REPLICATION SOURCE TO "))
            .or_else(|| line.strip_prefix("CHANGE MASTER TO "))
        else {
            continue;
        };
        let mut file = None;
        let mut pos = None;
        for part in rest.trim_end_matches(';').split(',') {
            let Some((k, v)) = part.trim().split_once('=') else {
                continue;
            };
            match k.trim() {
                "MASTER_LOG_FILE" | "SOURCE_LOG_FILE" => {
                    file = Some(v.trim().trim_matches('\'').to_string())
                }
                "MASTER_LOG_POS" | "SOURCE_LOG_POS" => pos = v.trim().parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(f), Some(p)) = (file, pos) {
            if is_binlog_name(&f) {
                return Some((f, p));
            }
        }
    }
    None
}

/// A binlog file name as a server writes it (`mysql-bin.000042`): it
/// becomes part of object keys, so nothing else passes.
fn is_binlog_name(name: &str) -> bool {
    crate::layout::is_valid_segment(name)
        && name.rsplit_once('.').is_some_and(|(b, n)| {
            !b.is_empty() && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())
        })
}

/// `-- SET GLOBAL gtid_slave_pos='0-1-5';` (MariaDB `--gtid`).
pub fn parse_gtid(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l
            .trim()
            .strip_prefix("-- SET GLOBAL gtid_slave_pos='")?
            .strip_suffix("';")?;
        v.bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
            .then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_and_gtid_are_read_from_the_comments() {
        let head = "-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;\n\n-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000002', MASTER_LOG_POS=599;\n";
        assert_eq!(
            parse_file_pos(head),
            Some(("mysql-bin.000002".to_string(), 599))
        );
        // Cut mid-line: not yet.
        assert_eq!(parse_file_pos(&head[..head.len() - 3]), None);
        let tail = "-- Preferably use GTID\n\n-- SET GLOBAL gtid_slave_pos='0-1-5';\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n";
        assert_eq!(parse_gtid(tail).as_deref(), Some("0-1-5"));
        assert_eq!(
            parse_gtid("-- SET GLOBAL gtid_slave_pos='x'; DROP';\n"),
            None
        );
    }

    #[test]
    fn the_head_is_watched_across_reads() {
        let mut seen = Seen::default();
        let text =
            b"-- header\n-- CHANGE MASTER TO MASTER_LOG_FILE='b.000001', MASTER_LOG_POS=42;\nrest";
        for piece in text.chunks(7) {
            observe(&mut seen, piece);
        }
        assert_eq!(seen.file_pos, Some(("b.000001".into(), 42)));
        assert!(seen.seen_at.is_some());
    }
}
