//! Opening the queue: reading the ledger, checking every record not yet
//! acknowledged, cutting a torn tail, skipping (and counting) damage, and
//! finding where each tailed file resumes.

use super::*;

impl Queue {
    /// Opens (or creates) the queue in `opts.dir`, checking every record not
    /// yet acknowledged; a torn record at the end of the last segment (a
    /// crash mid-write) is cut off, corrupt ones are counted and skipped.
    pub fn open(opts: QueueOptions) -> Result<(Arc<Queue>, Recovered), QueueError> {
        let dir = opts.dir.clone();
        private_dir(&dir).map_err(|error| QueueError::CreateDir {
            dir: dir.clone(),
            error,
        })?;
        let ledger_path = dir.join("ledger");
        let ledger: Ledger = match std::fs::read(&ledger_path) {
            // A damaged ledger re-sends what is on disk (at least once).
            Ok(bytes) => serde_json::from_slice(&bytes)
                .ok()
                .filter(|l: &Ledger| l.acked_id < MAX_ID)
                .unwrap_or_default(),
            Err(_) => Ledger::default(),
        };
        let mut numbers: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(|error| QueueError::ListDir {
                dir: dir.clone(),
                error,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
            })
            .collect();
        numbers.sort_unstable();

        let stats = QueueStats::default();
        let mut skips = HashMap::new();
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        let mut next_id = ledger.acked_id;
        let (mut acked_seg, mut acked_off) = (ledger.acked_segment, ledger.acked_offset);
        let last = numbers.last().copied();
        for number in numbers {
            let path = segment_path(&dir, number);
            if number < ledger.acked_segment {
                // Fully acknowledged; the previous run died before deleting it.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let opened = File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f)));
            let (len, file) = opened.map_err(|error| QueueError::OpenSegment {
                path: path.clone(),
                error,
            })?;
            let mut off = if number == ledger.acked_segment {
                ledger.acked_offset.min(len)
            } else {
                0
            };
            let mut seg = Segment {
                number,
                bytes: len,
                first_id: u64::MAX,
                end_id: 0,
                items: Vec::new(),
            };
            loop {
                match read_record(&file, off, len) {
                    Ok(None) => break,
                    Ok(Some((body, end))) => {
                        if let Some((id, entry)) = decode(body) {
                            // Padding a gap wider than the file has room
                            // for would allocate without bound: damage,
                            // which the reader skips too.
                            let expected = seg.first_id.saturating_add(seg.items.len() as u64);
                            let room = len / (HEADER + META) as u64;
                            if id.saturating_sub(expected) > room {
                                stats
                                    .dropped_corrupt_records
                                    .fetch_add(1, Ordering::Relaxed);
                                skips.insert((number, off), end);
                            } else if id >= ledger.acked_id {
                                if seg.first_id == u64::MAX {
                                    seg.first_id = id;
                                }
                                // Ids are contiguous within a run; pad gaps.
                                while seg.first_id + (seg.items.len() as u64) < id {
                                    seg.items.push(0);
                                }
                                seg.items.push(entry.items);
                                seg.end_id = id + 1;
                                next_id = next_id.max(id + 1);
                                recovered.records += 1;
                                recovered.items += entry.items as u64;
                                for p in &entry.positions {
                                    let slot = recovered.positions.entry(p.file_id).or_insert(0);
                                    *slot = (*slot).max(p.offset);
                                }
                            }
                        }
                        off = end;
                    }
                    Err(()) => {
                        stats
                            .dropped_corrupt_records
                            .fetch_add(1, Ordering::Relaxed);
                        if let Some(next) = resync(&file, off, len) {
                            // Records after a damaged one are still good:
                            // lose only the damaged one.
                            tracing::warn!(segment = %path.display(), offset = off, skipped_bytes = next - off, "telemetry queue: skipped one corrupt record");
                            skips.insert((number, off), next);
                            off = next;
                            continue;
                        }
                        if Some(number) == last {
                            // A torn tail: cut it so appends continue cleanly.
                            let cut = OpenOptions::new().write(true).open(&path).and_then(|f| {
                                f.set_len(off)?;
                                f.sync_all()
                            });
                            cut.map_err(|error| QueueError::OpenSegment {
                                path: path.clone(),
                                error,
                            })?;
                            seg.bytes = off;
                            tracing::warn!(segment = %path.display(), offset = off, "telemetry queue: cut a torn record at the end");
                        } else {
                            tracing::warn!(segment = %path.display(), offset = off, "telemetry queue: corrupt record with nothing readable after it; skipping the rest of the segment");
                            skips.insert((number, off), len);
                        }
                        break;
                    }
                }
            }
            if seg.first_id == u64::MAX {
                seg.first_id = next_id;
                seg.end_id = next_id;
            }
            segments.push_back(seg);
        }
        if segments.is_empty() {
            let number = ledger.acked_segment.max(1);
            let path = segment_path(&dir, number);
            private_file()
                .open(&path)
                .map_err(|error| QueueError::CreateSegment { path, error })?;
            segments.push_back(Segment {
                number,
                bytes: 0,
                first_id: next_id,
                end_id: next_id,
                items: Vec::new(),
            });
            acked_seg = number;
            acked_off = 0;
        }
        if acked_seg < segments[0].number {
            acked_seg = segments[0].number;
            acked_off = 0;
        }
        let tail = segments.back().expect("at least one segment");
        let tail_path = tail.path(&dir);
        let writer = OpenOptions::new()
            .append(true)
            .open(&tail_path)
            .map_err(|error| QueueError::OpenSegment {
                path: tail_path,
                error,
            })?;
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let state = State {
            segments,
            writer,
            next_id,
            read_seg: acked_seg,
            read_off: acked_off,
            acked_id: ledger.acked_id,
            acked_seg,
            acked_off,
            in_flight: BTreeMap::new(),
            read_next_id: ledger.acked_id,
            skips,
            acked_ahead: BTreeMap::new(),
            total_bytes,
            unacked_items: recovered.items,
            unacked_records: recovered.records,
            dirty: false,
            ledger_dirty: false,
            closed: false,
            reader: None,
        };
        let queue = Arc::new(Queue {
            dir,
            opts,
            state: Mutex::new(state),
            notify: Notify::new(),
            stats,
        });
        Ok((queue, recovered))
    }
}
