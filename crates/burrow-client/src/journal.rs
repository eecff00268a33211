//! The op journal: an append-only, checksummed copy of the pending ops beside the database
//! (`<db file>.journal`), so that pending ops survive damage to the database's pages.
//!
//! Capture stays in the SQLite triggers. The library copies outbox rows into the journal
//! right after its own write transactions commit ([`crate::Client::write`]) and whenever it
//! reads the outbox for an upload ([`crate::outbox::read_batch`]), so every op that ever
//! reached the server is journaled first. After a sync, or when the outbox is empty, the
//! journal is rewritten (temp file + rename) with only the ops still in the outbox.
//!
//! File format: a sequence of records, each
//! `magic (4 bytes) | length (u32 LE) | CRC-32 of length and payload (u32 LE) | payload`.
//! The payload is a JSON [`Record`]. The first record is a [`JournalHeader`]. A record
//! that is torn, fails its checksum or does not decode is skipped; reading resumes at the next
//! record magic, so a torn tail (a crash mid-append) is ignored. See
//! `docs/design/corruption.md`.

use crate::error::{Error, Result};
use rusqlite::{Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Marks the start of every record. `0xFF` never occurs in a JSON payload (UTF-8).
const RECORD_MAGIC: [u8; 4] = [0xFF, b'B', b'J', 0x01];
/// Bytes before a record's payload: magic, length, CRC.
const RECORD_HEAD: usize = 12;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

fn crc32_update(state: u32, bytes: &[u8]) -> u32 {
    let mut c = state;
    for b in bytes {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    c
}

/// CRC-32 (IEEE 802.3, the one of zip and PNG) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    !crc32_update(!0, bytes)
}

fn record_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    !crc32_update(crc32_update(!0, &len), payload)
}

/// The first record of a journal: whose ops these are and how far its numbering went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalHeader {
    /// The client id of the database.
    pub client_id: String,
    /// The schema file text stored in the database.
    pub schema_text: String,
    /// Every op sequence up to this one was assigned when the header was written.
    pub seq_floor: i64,
    /// The local transaction counter when the header was written.
    pub tx_floor: i64,
    /// The HLC when the header was written.
    pub hlc_floor: i64,
}

/// One outbox row, as the triggers captured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalOp {
    /// The op's client sequence (`_burrow_outbox.seq`).
    pub seq: i64,
    /// Its local transaction (capture group).
    pub tx: i64,
    /// Table.
    pub tbl: String,
    /// Row id.
    pub row_id: String,
    /// 1 insert, 2 update, 3 delete.
    pub kind: i64,
    /// The trigger JSON of the values, if any.
    pub data: Option<String>,
    /// The op's HLC.
    pub hlc: i64,
    /// The cursor when it was captured.
    pub base_seq: i64,
    /// Its upload lane.
    pub lane: i64,
}

/// A journal record's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// Identity and numbering floors; written first.
    Header(JournalHeader),
    /// One captured op.
    Op(JournalOp),
}

/// Highest numbers known to have been used, so a rebuilt database never reuses one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Floors {
    /// Highest op sequence.
    pub seq: i64,
    /// Highest local transaction number.
    pub tx: i64,
    /// Highest HLC.
    pub hlc: i64,
}

impl Floors {
    fn absorb_op(&mut self, op: &JournalOp) {
        self.seq = self.seq.max(op.seq);
        self.tx = self.tx.max(op.tx);
        self.hlc = self.hlc.max(op.hlc);
    }

    fn absorb_header(&mut self, h: &JournalHeader) {
        self.seq = self.seq.max(h.seq_floor);
        self.tx = self.tx.max(h.tx_floor);
        self.hlc = self.hlc.max(h.hlc_floor);
    }

    /// The larger of each number.
    pub fn max(self, other: Floors) -> Floors {
        Floors {
            seq: self.seq.max(other.seq),
            tx: self.tx.max(other.tx),
            hlc: self.hlc.max(other.hlc),
        }
    }
}

/// What a journal file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contents {
    /// The last valid header record.
    pub header: Option<JournalHeader>,
    /// Valid op records by sequence (a duplicate record replaces an earlier one).
    pub ops: BTreeMap<i64, JournalOp>,
    /// Number of valid op records (duplicates included).
    pub op_records: u64,
    /// The highest numbers in any valid record.
    pub floors: Floors,
    /// Bytes that were not part of a valid record (a torn tail, garbage, a bad checksum).
    pub skipped_bytes: u64,
    /// Records dropped because their checksum did not match.
    pub bad_checksums: u64,
}

impl Contents {
    /// Whether every byte of the file belonged to a valid record.
    pub fn is_clean(&self) -> bool {
        self.skipped_bytes == 0
    }
}

enum Parsed {
    Record(Record, usize),
    BadChecksum,
    Invalid,
}

fn parse_at(bytes: &[u8], pos: usize) -> Parsed {
    let Some(head) = bytes.get(pos..pos + RECORD_HEAD) else {
        return Parsed::Invalid;
    };
    if head[..4] != RECORD_MAGIC {
        return Parsed::Invalid;
    }
    let len_bytes = [head[4], head[5], head[6], head[7]];
    let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let len = u32::from_le_bytes(len_bytes) as usize;
    let start = pos + RECORD_HEAD;
    let Some(payload) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
        return Parsed::Invalid; // torn: the file ends inside the record
    };
    if record_crc(len_bytes, payload) != crc {
        return Parsed::BadChecksum;
    }
    match serde_json::from_slice::<Record>(payload) {
        Ok(r) => Parsed::Record(r, start + len),
        Err(_) => Parsed::Invalid,
    }
}

/// Decodes a journal's bytes, skipping whatever is not a valid record.
pub fn decode(bytes: &[u8]) -> Contents {
    let mut c = Contents::default();
    let mut pos = 0;
    while pos < bytes.len() {
        match parse_at(bytes, pos) {
            Parsed::Record(record, next) => {
                match record {
                    Record::Header(h) => {
                        c.floors.absorb_header(&h);
                        c.header = Some(h);
                    }
                    Record::Op(op) => {
                        c.floors.absorb_op(&op);
                        c.op_records += 1;
                        c.ops.insert(op.seq, op);
                    }
                }
                pos = next;
            }
            bad => {
                if matches!(bad, Parsed::BadChecksum) {
                    c.bad_checksums += 1;
                }
                // Resume at the next record magic, if any.
                let next = bytes[pos + 1..]
                    .windows(RECORD_MAGIC.len())
                    .position(|w| w == RECORD_MAGIC)
                    .map_or(bytes.len(), |i| pos + 1 + i);
                c.skipped_bytes += (next - pos) as u64;
                pos = next;
            }
        }
    }
    c
}

/// Appends one framed record to `out`.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<()> {
    let payload = serde_json::to_vec(record)
        .map_err(|e| Error::Corrupt(format!("cannot encode a journal record: {e}")))?;
    let len = u32::try_from(payload.len())
        .map_err(|_| Error::Corrupt("a journal record above 4 GiB".into()))?
        .to_le_bytes();
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&record_crc(len, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The journal file of the database at `db`: `<db>.journal`.
pub fn path_for(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Journal {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the journal at `path`; `None` when there is no such file.
pub fn read(path: &Path) -> Result<Option<Contents>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(decode(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Makes a rename or a new file in `dir` durable (best effort: not every platform can open a
/// directory).
pub(crate) fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The outbox columns a journal op holds, in [`JournalOp`] order.
pub(crate) const OUTBOX_COLUMNS: &str = "seq, tx, tbl, row_id, kind, data, hlc, base_seq, lane";

pub(crate) fn op_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalOp> {
    Ok(JournalOp {
        seq: r.get(0)?,
        tx: r.get(1)?,
        tbl: r.get(2)?,
        row_id: r.get(3)?,
        kind: r.get(4)?,
        data: r.get(5)?,
        hlc: r.get(6)?,
        // Not needed to decode an op: never let an odd value here stop journaling.
        base_seq: r.get::<_, Option<i64>>(7).ok().flatten().unwrap_or(0),
        lane: r.get::<_, Option<i64>>(8).ok().flatten().unwrap_or(1),
    })
}

/// Outbox rows with `seq > after`, in order.
pub fn outbox_ops_after(conn: &Connection, after: i64) -> Result<Vec<JournalOp>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM _burrow_outbox WHERE seq > ?1 ORDER BY seq"
    ))?;
    let ops = stmt
        .query_map([after], op_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ops)
}

/// The numbering floors of a healthy database: `sqlite_sequence`, `tx` and `hlc`.
fn db_floors(conn: &Connection) -> Result<Floors> {
    let seq: i64 = conn.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = '_burrow_outbox'), 0)",
        [],
        |r| r.get(0),
    )?;
    let (tx, hlc): (i64, i64) =
        conn.query_row("SELECT tx, hlc FROM _burrow_local WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(Floors { seq, tx, hlc })
}

/// The journal of one open database, with what this process has journaled so far.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    enabled: bool,
    client_id: String,
    schema_text: String,
    /// Every outbox op with a sequence up to this one is journaled (or had left the outbox).
    hi: i64,
    /// The highest numbers known from the journal (kept across compactions).
    floors: Floors,
    /// Op records written since the last compaction (duplicates included).
    op_records: u64,
}

impl Journal {
    /// A journal that does nothing (an in-memory database has no file to sit beside).
    pub fn disabled() -> Journal {
        Journal {
            path: PathBuf::new(),
            enabled: false,
            client_id: String::new(),
            schema_text: String::new(),
            hi: 0,
            floors: Floors::default(),
            op_records: 0,
        }
    }

    /// Opens the journal of the healthy database at `db_path`: re-derives what is journaled,
    /// rewrites the file when it is missing, damaged, belongs to another identity or schema,
    /// or when `rewrite` is set, and appends ops captured while no client had it open.
    pub fn open(
        conn: &mut Connection,
        db_path: &Path,
        client_id: &str,
        schema_text: &str,
        rewrite: bool,
    ) -> Result<Journal> {
        // No file (in-memory), or a `file:` URI whose file name is not the path given.
        if conn.path().is_none_or(str::is_empty) || db_path.to_string_lossy().starts_with("file:") {
            return Ok(Journal::disabled());
        }
        let path = path_for(db_path);
        let mut journal = Journal {
            path,
            enabled: true,
            client_id: client_id.to_string(),
            schema_text: schema_text.to_string(),
            hi: 0,
            floors: Floors::default(),
            op_records: 0,
        };
        let contents = read(&journal.path)?;
        let ours = contents
            .as_ref()
            .and_then(|c| c.header.as_ref())
            .is_some_and(|h| h.client_id == client_id);
        match contents {
            Some(c) if ours => {
                journal.floors = c.floors;
                journal.hi = c.floors.seq;
                journal.op_records = c.op_records;
                let current = c
                    .header
                    .as_ref()
                    .is_some_and(|h| h.schema_text == schema_text);
                if rewrite || !current || !c.is_clean() {
                    journal.compact(conn)?;
                } else {
                    journal.append_pending(conn)?;
                }
            }
            _ => journal.compact(conn)?,
        }
        Ok(journal)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest op sequence known to be journaled.
    pub fn journaled_through(&self) -> i64 {
        self.hi
    }

    fn header(&self, floors: Floors) -> Record {
        Record::Header(JournalHeader {
            client_id: self.client_id.clone(),
            schema_text: self.schema_text.clone(),
            seq_floor: floors.seq,
            tx_floor: floors.tx,
            hlc_floor: floors.hlc,
        })
    }

    /// Appends the outbox ops not yet journaled and syncs the file. Call it inside a
    /// transaction that holds the write lock (it serialises appends and rewrites across
    /// processes). Returns how many ops were appended.
    pub fn append_new(&mut self, conn: &Connection) -> Result<usize> {
        if !self.enabled {
            return Ok(0);
        }
        let ops = outbox_ops_after(conn, self.hi)?;
        let Some(last) = ops.last().map(|o| o.seq) else {
            return Ok(0);
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io_err(&self.path, e))?;
        let fresh = file.metadata().map_err(|e| io_err(&self.path, e))?.len() == 0;
        let mut buf = Vec::new();
        if fresh {
            // The file went missing: start it again with a header.
            let floors = self.floors.max(db_floors(conn)?);
            encode_record(&self.header(floors), &mut buf)?;
        }
        for op in &ops {
            self.floors.absorb_op(op);
            encode_record(&Record::Op(op.clone()), &mut buf)?;
        }
        file.write_all(&buf).map_err(|e| io_err(&self.path, e))?;
        file.sync_data().map_err(|e| io_err(&self.path, e))?;
        if fresh {
            sync_dir(&self.path);
        }
        self.hi = last;
        self.op_records += ops.len() as u64;
        Ok(ops.len())
    }

    /// Journals the ops captured since the last append (in a write transaction of its own),
    /// or rewrites the journal when the outbox is empty and the journal still lists ops.
    pub fn append_pending(&mut self, conn: &mut Connection) -> Result<usize> {
        if !self.enabled {
            return Ok(0);
        }
        let newest: Option<i64> =
            conn.query_row("SELECT max(seq) FROM _burrow_outbox", [], |r| r.get(0))?;
        match newest {
            None if self.op_records > 0 => {
                self.compact(conn)?;
                Ok(0)
            }
            Some(n) if n > self.hi => {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let n = self.append_new(&tx)?;
                tx.commit()?;
                Ok(n)
            }
            _ => Ok(0),
        }
    }

    /// Rewrites the journal when it lists ops that have left the outbox (after a sync).
    pub fn compact_if_stale(&mut self, conn: &mut Connection) -> Result<bool> {
        if !self.enabled || self.op_records == 0 {
            return Ok(false);
        }
        let still: i64 = conn.query_row(
            "SELECT count(*) FROM _burrow_outbox WHERE seq <= ?1",
            [self.hi],
            |r| r.get(0),
        )?;
        if self.op_records > still as u64 {
            self.compact(conn)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Rewrites the journal atomically (temp file, sync, rename) with a header and exactly the
    /// ops now in the outbox.
    pub fn compact(&mut self, conn: &mut Connection) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ops = outbox_ops_after(&tx, 0)?;
        let mut floors = self.floors.max(db_floors(&tx)?);
        for op in &ops {
            floors.absorb_op(op);
        }
        let mut buf = Vec::new();
        encode_record(&self.header(floors), &mut buf)?;
        for op in &ops {
            encode_record(&Record::Op(op.clone()), &mut buf)?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| io_err(&self.path, e))?;
        sync_dir(&self.path);
        tx.commit()?;
        self.floors = floors;
        self.hi = floors.seq;
        self.op_records = ops.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn op(seq: i64) -> JournalOp {
        JournalOp {
            seq,
            tx: seq / 2 + 1,
            tbl: "notes".into(),
            row_id: format!("n{seq}"),
            kind: 1,
            data: Some(format!("{{\"body\":\"v{seq}\"}}")),
            hlc: 1000 + seq,
            base_seq: 0,
            lane: 1,
        }
    }

    fn header() -> Record {
        Record::Header(JournalHeader {
            client_id: "c1".into(),
            schema_text: "version = 1".into(),
            seq_floor: 0,
            tx_floor: 1,
            hlc_floor: 0,
        })
    }

    fn file_of(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for r in records {
            starts.push(buf.len());
            encode_record(r, &mut buf).unwrap();
        }
        (buf, starts)
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip() {
        let (buf, _) = file_of(&[header(), Record::Op(op(1)), Record::Op(op(2))]);
        let c = decode(&buf);
        assert!(c.is_clean());
        assert_eq!(c.header.as_ref().unwrap().client_id, "c1");
        assert_eq!(c.ops.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(c.ops[&2], op(2));
        assert_eq!(c.floors.seq, 2);
        assert_eq!(c.floors.hlc, 1002);
    }

    #[test]
    fn a_torn_tail_is_ignored() {
        let (buf, _) = file_of(&[header(), Record::Op(op(1)), Record::Op(op(2))]);
        for cut in 1..40 {
            let torn = &buf[..buf.len() - cut];
            let c = decode(torn);
            assert_eq!(
                c.ops.keys().copied().collect::<Vec<_>>(),
                vec![1],
                "cut {cut}"
            );
            assert!(!c.is_clean());
        }
        // Garbage after the last record is skipped too.
        let mut garbage = buf.clone();
        garbage.extend_from_slice(&[0xFF, b'B', b'J', 0x01, 200, 0, 0, 0, 1, 2, 3]);
        garbage.extend_from_slice(b"not a record");
        let c = decode(&garbage);
        assert_eq!(c.ops.len(), 2);
        assert!(!c.is_clean());
    }

    #[test]
    fn a_checksum_mismatch_rejects_the_record_and_later_records_still_count() {
        let (mut buf, starts) = file_of(&[
            header(),
            Record::Op(op(1)),
            Record::Op(op(2)),
            Record::Op(op(3)),
        ]);
        // Flip one payload byte of op 2, keeping the JSON well-formed (a digit for a digit).
        let at = starts[2] + RECORD_HEAD + 20;
        buf[at] = if buf[at] == b'7' { b'8' } else { b'7' };
        let c = decode(&buf);
        assert_eq!(c.bad_checksums, 1);
        assert_eq!(c.ops.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert!(!c.is_clean());
        // A damaged length is caught as well.
        let (mut buf, starts) = file_of(&[header(), Record::Op(op(1)), Record::Op(op(2))]);
        buf[starts[1] + 4] ^= 0x01;
        let c = decode(&buf);
        assert_eq!(c.ops.keys().copied().collect::<Vec<_>>(), vec![2]);
    }

    fn db(dir: &Path) -> (Connection, PathBuf) {
        let path = dir.join("app.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(crate::ddl::INTERNAL_TABLES).unwrap();
        conn.execute(
            "INSERT INTO _burrow_local(id, client_id, schema_version, schema_text) VALUES (1, 'c1', 1, 'version = 1')",
            [],
        )
        .unwrap();
        (conn, path)
    }

    fn capture(conn: &Connection, n: usize) {
        for i in 0..n {
            conn.execute(
                "INSERT INTO _burrow_outbox(tx, tbl, row_id, kind, data, hlc) VALUES (1, 'notes', ?1, 1, '{}', 5)",
                [format!("r{i}")],
            )
            .unwrap();
        }
    }

    #[test]
    fn compaction_keeps_only_pending_ops_and_the_floors() {
        let dir = tempfile::tempdir().unwrap();
        let (mut conn, path) = db(dir.path());
        let mut j = Journal::open(&mut conn, &path, "c1", "version = 1", false).unwrap();
        capture(&conn, 5);
        assert_eq!(j.append_pending(&mut conn).unwrap(), 5);
        assert_eq!(j.append_pending(&mut conn).unwrap(), 0, "nothing new");
        let c = read(j.path()).unwrap().unwrap();
        assert_eq!(c.ops.len(), 5);
        // Ops 1..3 are acknowledged and leave the outbox.
        conn.execute("DELETE FROM _burrow_outbox WHERE seq <= 3", [])
            .unwrap();
        assert!(j.compact_if_stale(&mut conn).unwrap());
        assert!(!j.compact_if_stale(&mut conn).unwrap(), "already compact");
        let c = read(j.path()).unwrap().unwrap();
        assert!(c.is_clean());
        assert_eq!(c.ops.keys().copied().collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(c.header.as_ref().unwrap().seq_floor, 5);
        // Once the outbox is empty, the next append rewrites the journal with no ops, and the
        // floor still remembers the numbers used.
        conn.execute("DELETE FROM _burrow_outbox", []).unwrap();
        j.append_pending(&mut conn).unwrap();
        let c = read(j.path()).unwrap().unwrap();
        assert!(c.ops.is_empty());
        assert_eq!(c.floors.seq, 5);
        // Reopening re-derives what is journaled from the file.
        capture(&conn, 1);
        let j2 = Journal::open(&mut conn, &path, "c1", "version = 1", false).unwrap();
        assert_eq!(j2.journaled_through(), 6);
        let c = read(j2.path()).unwrap().unwrap();
        assert_eq!(c.ops.keys().copied().collect::<Vec<_>>(), vec![6]);
    }

    #[test]
    fn opening_rewrites_a_journal_with_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut conn, path) = db(dir.path());
        let mut j = Journal::open(&mut conn, &path, "c1", "version = 1", false).unwrap();
        capture(&conn, 2);
        j.append_pending(&mut conn).unwrap();
        let mut bytes = std::fs::read(j.path()).unwrap();
        bytes.extend_from_slice(&RECORD_MAGIC);
        bytes.extend_from_slice(&[9, 9, 9]);
        std::fs::write(j.path(), &bytes).unwrap();
        let j = Journal::open(&mut conn, &path, "c1", "version = 1", false).unwrap();
        let c = read(j.path()).unwrap().unwrap();
        assert!(c.is_clean());
        assert_eq!(c.ops.len(), 2);
    }
}
