//! The ingest log: an append-only sequence of validated messages in segment files.
//!
//! A tracking request is acknowledged once its messages are here and fsynced; the
//! indexer applies them to the store later, in large batches. Each record carries a
//! sequence number; the store remembers the last one it applied, in the same
//! transaction as the data, so after a crash the log is replayed from exactly there.
//!
//! Record: `len: u32 | crc32(seq ‖ payload): u32 | seq: u64 | payload` (little endian);
//! the payload is the message as JSON. A torn record at the end of the last segment
//! (a crash mid-write, never acknowledged) is cut off on open.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use siyu_core::Message;

use crate::StoreError;

/// Segments roll over at this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const HEADER: usize = 16;
/// No single record is larger than this (a message is at most 32 KB as JSON on the
/// wire; its stored form is close to that).
const MAX_RECORD: usize = 4 * 1024 * 1024;

pub struct IngestLog {
    dir: PathBuf,
    writer: BufWriter<File>,
    written: u64,
    next_seq: u64,
}

fn io(context: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("ingest log: {context}: {e}"))
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

impl IngestLog {
    /// Opens the log in `dir`, checking every record and cutting off a torn one at the
    /// end. Records after `applied` (the store's last applied sequence number) are left
    /// in the log for the indexer to read back in batches: a long backlog is never
    /// held in memory at once.
    pub fn open(dir: &Path, applied: u64) -> Result<IngestLog, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io("creating the directory", e))?;
        let mut segments = segment_firsts(dir)?;
        segments.sort_unstable();

        let mut next_seq = applied + 1;
        for (i, &first) in segments.iter().enumerate() {
            let last_segment = i + 1 == segments.len();
            let path = segment_path(dir, first);
            let (last_seq, valid_len) = scan_segment(&path)?;
            if let Some(last) = last_seq {
                next_seq = next_seq.max(last + 1);
            }
            let len = fs::metadata(&path).map_err(|e| io("reading a segment", e))?.len();
            if valid_len < len {
                if !last_segment {
                    return Err(StoreError::Io(format!("ingest log segment {} is damaged before its end", path.display())));
                }
                tracing::warn!(segment = %path.display(), kept = valid_len, dropped = len - valid_len, "cutting off a torn record at the end of the ingest log");
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| io("opening a segment", e))?;
                f.set_len(valid_len).map_err(|e| io("truncating a torn record", e))?;
                f.sync_all().map_err(|e| io("syncing", e))?;
            }
        }

        if segments.is_empty() {
            segments.push(next_seq);
        }
        let active = *segments.last().expect("a segment");
        let path = segment_path(dir, active);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io("opening the active segment", e))?;
        let written = file.metadata().map_err(|e| io("reading the active segment", e))?.len();
        sync_dir(dir)?;
        let log = IngestLog { dir: dir.to_path_buf(), writer: BufWriter::with_capacity(1 << 20, file), written, next_seq };
        Ok(log)
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Buffers one message; returns its sequence number. Call [`IngestLog::sync`]
    /// before acknowledging anything.
    pub fn append(&mut self, msg: &Message) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let payload = serde_json::to_vec(msg).map_err(|e| StoreError::Io(format!("encoding a message: {e}")))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(&payload);
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        header[8..].copy_from_slice(&seq.to_le_bytes());
        self.writer.write_all(&header).map_err(|e| io("writing", e))?;
        self.writer.write_all(&payload).map_err(|e| io("writing", e))?;
        self.written += (HEADER + payload.len()) as u64;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Makes everything appended so far durable (one fdatasync), then rolls over to a
    /// new segment if this one is full.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.writer.flush().map_err(|e| io("flushing", e))?;
        self.writer.get_ref().sync_data().map_err(|e| io("syncing", e))?;
        if self.written >= SEGMENT_BYTES {
            let first = self.next_seq;
            let path = segment_path(&self.dir, first);
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io("starting a segment", e))?;
            sync_dir(&self.dir)?;
            self.writer = BufWriter::with_capacity(1 << 20, file);
            self.written = 0;
        }
        Ok(())
    }
}

/// First sequence numbers of the segments in `dir`, in no particular order.
fn segment_firsts(dir: &Path) -> Result<Vec<u64>, StoreError> {
    Ok(fs::read_dir(dir)
        .map_err(|e| io("listing", e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect())
}

/// Deletes segments whose every record the store has applied. The newest segment is
/// the one being written and is always kept.
pub fn remove_applied(dir: &Path, applied: u64) -> Result<usize, StoreError> {
    let mut firsts = segment_firsts(dir)?;
    firsts.sort_unstable();
    let mut removed = 0;
    // Segment i holds [firsts[i], firsts[i + 1]).
    for pair in firsts.windows(2) {
        if pair[1] <= applied + 1 {
            match fs::remove_file(segment_path(dir, pair[0])) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing an applied segment", e)),
            }
        }
    }
    Ok(removed)
}

/// Reads logged messages in order, for an indexer that fell behind its in-memory feed.
/// Only records the appender has already made durable are read.
pub struct LogReader {
    dir: PathBuf,
    current: Option<BufReader<File>>,
    next_seq: u64,
}

impl LogReader {
    pub fn new(dir: &Path, from_seq: u64) -> LogReader {
        LogReader { dir: dir.to_path_buf(), current: None, next_seq: from_seq }
    }

    /// The sequence number the next read starts at.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records with sequence numbers from the reader's position up to `until`, at most
    /// `max`. Stops early at the end of what is written (a segment opened afresh that
    /// holds nothing new), so `until` may lie beyond it.
    pub fn read(&mut self, until: u64, max: usize) -> Result<Vec<(u64, Message)>, StoreError> {
        let mut out = Vec::new();
        let mut fresh = false;
        while self.next_seq <= until && out.len() < max {
            if self.current.is_none() {
                self.open_segment_for(self.next_seq)?;
                fresh = true;
            }
            let reader = self.current.as_mut().expect("open segment");
            match read_record(reader)? {
                Some((seq, _)) if seq < self.next_seq => continue,
                Some((seq, payload)) => {
                    let msg: Message = serde_json::from_slice(&payload).map_err(|e| StoreError::Io(format!("ingest log record {seq}: {e}")))?;
                    out.push((seq, msg));
                    self.next_seq = seq + 1;
                    fresh = false;
                }
                // The end of what is written: nothing new since the segment was opened.
                None if fresh => {
                    self.current = None;
                    break;
                }
                // The end of this segment: the next one starts at next_seq.
                None => self.current = None,
            }
        }
        Ok(out)
    }

    fn open_segment_for(&mut self, seq: u64) -> Result<(), StoreError> {
        let mut firsts: Vec<u64> = segment_firsts(&self.dir)?.into_iter().filter(|first| *first <= seq).collect();
        firsts.sort_unstable();
        let first = *firsts.last().ok_or_else(|| StoreError::Io(format!("ingest log: no segment holds record {seq}")))?;
        let file = File::open(segment_path(&self.dir, first)).map_err(|e| io("opening a segment", e))?;
        self.current = Some(BufReader::with_capacity(1 << 20, file));
        Ok(())
    }
}

/// One whole record, or `None` at the end of what has been written.
fn read_record(reader: &mut impl Read) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let mut header = [0u8; HEADER];
    if !read_full(reader, &mut header).map_err(|e| io("reading", e))? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    if !read_full(reader, &mut payload).map_err(|e| io("reading", e))? {
        return Ok(None);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&payload);
    if h.finalize() != crc {
        return Ok(None);
    }
    Ok(Some((seq, payload)))
}

/// The records of one segment and the length of its valid prefix.
/// The last sequence number in a segment and the length of its whole records, read
/// one record at a time.
fn scan_segment(path: &Path) -> Result<(Option<u64>, u64), StoreError> {
    let file = File::open(path).map_err(|e| io("opening a segment", e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut last = None;
    let mut valid = 0u64;
    while let Some((seq, payload)) = read_record(&mut reader)? {
        valid += (HEADER + payload.len()) as u64;
        last = Some(seq);
    }
    Ok((last, valid))
}

/// Fills `buf`; `Ok(false)` if the file ended first (a torn or absent record).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(true)
}

/// New and removed segment files survive a power cut only once their directory is synced.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the directory", e))
}

type Records = Vec<(u64, Message)>;

/// A [`LogReader`] on its own thread, reading one batch ahead of the indexer. When the
/// indexer has fallen behind its in-memory feed, every batch comes from the log, and
/// reading and parsing 50,000 records took a fifth of its time; ahead of time, that
/// work runs on the other core while the batch before is applied.
pub struct LogPrefetch {
    requests: std::sync::mpsc::Sender<(u64, u64, usize)>,
    results: std::sync::mpsc::Receiver<Result<Records, StoreError>>,
    /// Where the read in flight starts, if one is.
    in_flight: Option<u64>,
}

impl LogPrefetch {
    pub fn start(dir: &Path) -> Result<LogPrefetch, StoreError> {
        let (requests, wanted) = std::sync::mpsc::channel::<(u64, u64, usize)>();
        let (done, results) = std::sync::mpsc::channel();
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("ingest-log-read".into())
            .spawn(move || {
                let mut reader: Option<LogReader> = None;
                // Ends when the indexer drops its LogPrefetch.
                while let Ok((from, until, max)) = wanted.recv() {
                    let r = match &mut reader {
                        Some(r) if r.next_seq() == from => r,
                        _ => reader.insert(LogReader::new(&dir, from)),
                    };
                    let read = r.read(until, max);
                    if read.is_err() {
                        reader = None;
                    }
                    if done.send(read).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| io("starting the ingest-log reader", e))?;
        Ok(LogPrefetch { requests, results, in_flight: None })
    }

    /// Records from `from` up to `until`, at most `max`: the read ahead if it started
    /// at `from` (it may stop short of `until`), otherwise a read now.
    pub fn read(&mut self, from: u64, until: u64, max: usize) -> Result<Records, StoreError> {
        if self.in_flight.is_some_and(|ahead| ahead != from) {
            self.take()?; // read for a position the indexer has moved past
        }
        self.ahead(from, until, max);
        self.take()?.ok_or_else(|| StoreError::Io("the ingest-log reader stopped".into()))?
    }

    /// The result of the read in flight, if one is.
    fn take(&mut self) -> Result<Option<Result<Records, StoreError>>, StoreError> {
        let Some(_) = self.in_flight.take() else { return Ok(None) };
        let read = self.results.recv().map_err(|_| StoreError::Io("the ingest-log reader stopped".into()))?;
        Ok(Some(read))
    }

    /// Starts reading records from `from` up to `until`, at most `max`, for a later
    /// [`LogPrefetch::read`].
    pub fn ahead(&mut self, from: u64, until: u64, max: usize) {
        if self.in_flight.is_none() && self.requests.send((from, until, max)).is_ok() {
            self.in_flight = Some(from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siyu_core::Timestamp;
    use siyu_core::message::{ParseContext, parse_batch};

    fn msgs(n: usize) -> Vec<Message> {
        let batch: Vec<_> =
            (0..n).map(|i| serde_json::json!({"type": "track", "userId": format!("u{i}"), "event": "E", "messageId": format!("m{i}")})).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "batch": batch })).unwrap();
        parse_batch(&body, &ParseContext { received_at: Timestamp(1), new_message_id: &|| "x".into() }).unwrap().messages
    }

    /// What the store has not applied, read back from `applied + 1`.
    fn pending(dir: &Path, applied: u64) -> Vec<(u64, Message)> {
        LogReader::new(dir, applied + 1).read(u64::MAX, usize::MAX).unwrap()
    }

    #[test]
    fn replays_what_the_store_has_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IngestLog::open(dir.path(), 0).unwrap();
        for m in &msgs(10) {
            log.append(m).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let log = IngestLog::open(dir.path(), 4).unwrap();
        let pending = pending(dir.path(), 4);
        assert_eq!(pending.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (5..=10).collect::<Vec<_>>());
        assert_eq!(pending[0].1.message_id, "m4");
        assert_eq!(log.next_seq(), 11);
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IngestLog::open(dir.path(), 0).unwrap();
        for m in &msgs(3) {
            log.append(m).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let mut log = IngestLog::open(dir.path(), 0).unwrap();
        assert_eq!(pending(dir.path(), 0).len(), 3);
        log.append(&msgs(1)[0]).unwrap();
        log.sync().unwrap();
        drop(log);
        IngestLog::open(dir.path(), 0).unwrap();
        assert_eq!(pending(dir.path(), 0).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_reader_follows_the_log_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IngestLog::open(dir.path(), 0).unwrap();
        let all = msgs(7);
        for m in &all[..4] {
            log.append(m).unwrap();
        }
        log.written = SEGMENT_BYTES;
        log.sync().unwrap();
        let mut reader = LogReader::new(dir.path(), 2);
        let got = reader.read(3, 10).unwrap();
        assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 3]);
        for m in &all[4..] {
            log.append(m).unwrap();
        }
        log.sync().unwrap();
        let got = reader.read(7, 2).unwrap();
        assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![4, 5], "crosses into the next segment, at most max");
        let got = reader.read(7, 10).unwrap();
        assert_eq!(got.iter().map(|(s, m)| (*s, m.message_id.clone())).collect::<Vec<_>>(), vec![(6, "m5".to_string()), (7, "m6".to_string())]);
    }

    #[test]
    fn a_prefetch_reads_ahead_and_drops_a_read_the_indexer_moved_past() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IngestLog::open(dir.path(), 0).unwrap();
        for m in &msgs(6) {
            log.append(m).unwrap();
        }
        log.sync().unwrap();
        let mut prefetch = LogPrefetch::start(dir.path()).unwrap();
        let seqs = |r: Records| r.iter().map(|(s, _)| *s).collect::<Vec<_>>();
        assert_eq!(seqs(prefetch.read(1, 6, 2).unwrap()), vec![1, 2]);
        prefetch.ahead(3, 4, 10);
        // Asked for more than the read ahead (as when more was appended since): the read
        // ahead ends where it was asked to end.
        assert_eq!(seqs(prefetch.read(3, 6, 10).unwrap()), vec![3, 4]);
        prefetch.ahead(5, 6, 10);
        assert_eq!(seqs(prefetch.read(2, 6, 10).unwrap()), vec![2, 3, 4, 5, 6], "a read for another position is read afresh");
        assert_eq!(seqs(prefetch.read(6, 6, 10).unwrap()), vec![6]);
    }

    #[test]
    fn applied_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IngestLog::open(dir.path(), 0).unwrap();
        for m in &msgs(5) {
            log.append(m).unwrap();
        }
        log.written = SEGMENT_BYTES; // force a roll-over at the next sync
        log.sync().unwrap();
        for m in &msgs(2) {
            log.append(m).unwrap();
        }
        log.sync().unwrap();
        assert_eq!(segment_firsts(dir.path()).unwrap().len(), 2);
        assert_eq!(remove_applied(dir.path(), 3).unwrap(), 0, "segment 1 still has unapplied records");
        assert_eq!(remove_applied(dir.path(), 5).unwrap(), 1);
        assert_eq!(remove_applied(dir.path(), 7).unwrap(), 0, "the segment being written stays");
        drop(log);
        IngestLog::open(dir.path(), 5).unwrap();
        assert_eq!(pending(dir.path(), 5).len(), 2);
    }
}
