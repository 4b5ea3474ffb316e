//! Event JSON stored compressed: zstd with a dictionary trained on the shape
//! of Matrix events.
//!
//! A stored event is mostly structure every event repeats (`"auth_events"`,
//! `"origin_server_ts"`, `"signatures"`, the event type) and base64 IDs,
//! hashes and signatures. Compressed one row at a time without a dictionary
//! it shrinks by a fifth; with [`DICTIONARY`] (4 KiB, trained on synthetic
//! events by `dict/generate.py`) a room version 11 PDU shrinks by about 45%
//! and a client-format event by half, and each row still reads on its own.
//!
//! A column that holds event JSON accepts both forms: `TEXT` (rows written
//! before compression, read as they are) and `BLOB` (a zstd frame, which names
//! its dictionary), so no migration rewrites old rows. SQL never looks inside
//! these columns; code reads them through [`PackedJson`].

use std::cell::RefCell;
use std::sync::LazyLock;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::StorageError;

/// The trained dictionary (zstd format, dictionary ID 1); see `dict/generate.py`.
pub const DICTIONARY: &[u8] = include_bytes!("../dict/events.dict");

/// zstd level: 3 is zstd's default; higher levels gain ~2% on these sizes.
pub const LEVEL: i32 = 3;

/// The largest JSON a packed value may expand to: a PDU is at most 64 KiB
/// (spec), and a client-format copy adds little; anything larger is corrupt.
pub const UNPACKED_BYTES_MAX: usize = 1 << 20;

static ENCODER: LazyLock<EncoderDictionary<'static>> = LazyLock::new(|| EncoderDictionary::copy(DICTIONARY, LEVEL));
static DECODER: LazyLock<DecoderDictionary<'static>> = LazyLock::new(|| DecoderDictionary::copy(DICTIONARY));

thread_local! {
    // One context per thread that packs or unpacks: contexts are reused,
    // not rebuilt per row (a few hundred KiB each, only on database threads).
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses event JSON for a packed column (bind the result as a `BLOB`).
pub fn pack(json: &str) -> Result<Vec<u8>, StorageError> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(Compressor::with_prepared_dictionary(&ENCODER).map_err(corrupt)?),
        };
        compressor.compress(json.as_bytes()).map_err(corrupt)
    })
}

/// Decompresses a value written by [`pack`].
pub fn unpack(bytes: &[u8]) -> Result<String, StorageError> {
    let raw = DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(Decompressor::with_prepared_dictionary(&DECODER).map_err(corrupt)?),
        };
        decompressor.decompress(bytes, UNPACKED_BYTES_MAX).map_err(corrupt)
    })?;
    String::from_utf8(raw).map_err(|e| StorageError::Corrupt(format!("packed JSON is not UTF-8: {e}")))
}

fn corrupt(e: std::io::Error) -> StorageError {
    StorageError::Corrupt(format!("packed JSON: {e}"))
}

/// Event JSON read from (or written to) a packed column: `TEXT` as it is,
/// `BLOB` through [`unpack`]; written always as a packed `BLOB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedJson(pub String);

impl FromSql for PackedJson {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Text(text) => std::str::from_utf8(text)
                .map(|s| PackedJson(s.to_owned()))
                .map_err(|e| FromSqlError::Other(Box::new(e))),
            ValueRef::Blob(bytes) => unpack(bytes).map(PackedJson).map_err(|e| FromSqlError::Other(Box::new(e))),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

impl rusqlite::ToSql for PackedJson {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let bytes = pack(&self.0).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(ToSqlOutput::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PDU: &str = r#"{"auth_events":["$yG30dnaM5PWamh_Pc7IQ_dvdyD30TXerNVMPyUeoH8M","$2yf4FfVAZU1TQ41lIqxT1ezyR79I0z99lC1eb7hI6EI"],"content":{"body":"message 0","msgtype":"m.text"},"depth":10,"hashes":{"sha256":"ombl3w/t8t6EZRvxzpsvsynv2bHZx93T9j+RRca8/JE"},"origin_server_ts":1795501621364,"prev_events":["$ODvKvfPx8ukrodbNrybC4I_HGTJHAmfXgyIDP4dLFjo"],"room_id":"!5_T8mWcVsSFNQC-WHcJY3LJyy3pDELira24IYGHLp2U","sender":"@lpubefqjr100x1:localhost","signatures":{"localhost":{"ed25519:a_NdzwAA":"6icvtK0WPye0dZLNXhGjamtP6tudji4Td4BOHzHVm5U9RHIIdynWuKfnZ+Uoqms/lSeZ/pqdL7F9h53W9A7ICg"}},"type":"m.room.message"}"#;

    #[test]
    fn a_packed_event_unpacks_to_the_same_text_and_is_much_smaller() {
        let packed = pack(PDU).unwrap();
        assert_eq!(unpack(&packed).unwrap(), PDU);
        // The dictionary is what makes a single event shrink this far.
        assert!(packed.len() * 10 < PDU.len() * 7, "{} of {} bytes", packed.len(), PDU.len());
    }

    #[test]
    fn a_column_reads_old_text_rows_and_new_packed_rows_alike() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, json TEXT NOT NULL)").unwrap();
        conn.execute("INSERT INTO t (id, json) VALUES (1, ?1)", [PDU]).unwrap();
        conn.execute("INSERT INTO t (id, json) VALUES (2, ?1)", [PackedJson(PDU.to_owned())]).unwrap();
        let kinds: Vec<String> = conn
            .prepare("SELECT typeof(json) FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kinds, ["text", "blob"]);
        for id in [1, 2] {
            let PackedJson(json) = conn.query_row("SELECT json FROM t WHERE id = ?1", [id], |r| r.get(0)).unwrap();
            assert_eq!(json, PDU);
        }
    }

    #[test]
    fn a_damaged_value_is_a_corrupt_error_not_a_panic() {
        let mut packed = pack(PDU).unwrap();
        let middle = packed.len() / 2;
        packed[middle] ^= 0xff;
        packed.truncate(packed.len() - 3);
        assert!(matches!(unpack(&packed), Err(StorageError::Corrupt(_))));
        assert!(matches!(unpack(b"not zstd"), Err(StorageError::Corrupt(_))));
    }

    #[test]
    fn the_dictionary_loads() {
        assert_eq!(zstd::zstd_safe::get_dict_id_from_dict(DICTIONARY).map(|id| id.get()), Some(1));
    }
}
