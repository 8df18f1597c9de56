//! The on-disk record format: a version byte, a CRC32 of the payload, the payload.
//!
//! Every log record and checkpoint value goes through `encode` and `decode`, so a record
//! is checked right before it is written (`check`) and right after it is read back.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use stockd_domain::{Command, Millis};

/// Version of the record layout and payload encoding. Bump it with any change to
/// `LogRecord`, the domain's `Command` or `EngineSnapshot`. Version 2: hold parts carry
/// their cart version, update record and tombstone flag (issue #12). Version 3: the shards
/// of a core share one log, whose frames carry their shard and sequence; the layout
/// record counts the logs (issue #12).
pub const FORMAT_VERSION: u8 = 3;

/// Bytes before the payload: version (1) and CRC32 (4).
const HEADER_LEN: usize = 5;

/// One write-ahead record: a command and the moment it ran.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRecord {
    pub now: Millis,
    pub command: Command,
}

/// Why a stored record cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("record has format version {0}, this stockd reads {FORMAT_VERSION}")]
    Version(u8),
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record payload does not decode: {0}")]
    Decode(String),
}

/// Encodes a value as a checksummed record.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = postcard::to_extend(value, vec![FORMAT_VERSION, 0, 0, 0, 0])
        .expect("in-memory encoding cannot fail");
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[1..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a record's header and checksum without decoding it.
pub fn check(bytes: &[u8]) -> Result<(), RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Truncated(bytes.len()));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(RecordError::Version(bytes[0]));
    }
    let stored = u32::from_le_bytes(bytes[1..HEADER_LEN].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&bytes[HEADER_LEN..]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    Ok(())
}

/// Checks and decodes a record.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    check(bytes)?;
    postcard::from_bytes(&bytes[HEADER_LEN..]).map_err(|e| RecordError::Decode(e.to_string()))
}

/// Checks and decodes a record into a value that borrows from its bytes (refs as `&str`),
/// so that decoding copies nothing.
pub fn decode_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, RecordError> {
    check(bytes)?;
    postcard::from_bytes(&bytes[HEADER_LEN..]).map_err(|e| RecordError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_detect_damage() {
        let record = LogRecord {
            now: 42,
            command: Command::Release {
                hold_ref: "cart-1".into(),
            },
        };
        let mut bytes = encode(&record);
        assert_eq!(decode::<LogRecord>(&bytes).unwrap(), record);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert!(matches!(
            decode::<LogRecord>(&bytes),
            Err(RecordError::Checksum { .. })
        ));
        assert!(matches!(
            decode::<LogRecord>(&bytes[..3]),
            Err(RecordError::Truncated(3))
        ));
    }
}
