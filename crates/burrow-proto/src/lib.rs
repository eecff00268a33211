//! Burrow's wire format: protobuf messages (compiled from `proto/` at build time) and the
//! framing that wraps them (zstd compression, size limits). No IO.
//!
//! ```
//! use burrow_proto::{v1, encode_frame, decode_frame, PROTOCOL_VERSION};
//! let req = v1::SyncRequest { protocol_version: PROTOCOL_VERSION, ..Default::default() };
//! let bytes = encode_frame(&req).unwrap();
//! let back: v1::SyncRequest = decode_frame(&bytes, 1 << 20).unwrap();
//! assert_eq!(back, req);
//! ```

use prost::Message;
use std::io::Read;

/// Generated protobuf types of protocol version 1.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/burrow.v1.rs"));
}

/// The protocol version this build speaks; sent in every request.
pub const PROTOCOL_VERSION: u32 = 1;

/// Content type of sync request and response bodies.
pub const CONTENT_TYPE: &str = "application/x-burrow-sync";

/// zstd level for frames: fast, and most of the gain for our message shapes.
pub const ZSTD_LEVEL: i32 = 3;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The body is not a zstd frame or is truncated.
    #[error("body is not a valid zstd frame: {0}")]
    Compression(std::io::Error),
    /// The decompressed body is larger than allowed.
    #[error("decompressed body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The decompressed bytes are not a valid message.
    #[error("body is not a valid protobuf message: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Compression failed (out of memory).
    #[error("cannot compress frame: {0}")]
    Encode(std::io::Error),
}

/// Encodes `msg` as protobuf and compresses it with zstd.
pub fn encode_frame<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let raw = msg.encode_to_vec();
    zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(FrameError::Encode)
}

/// Decompresses and decodes a frame, refusing more than `max_decoded` bytes after
/// decompression (a small body must not expand into gigabytes).
pub fn decode_frame<M: Message + Default>(
    body: &[u8],
    max_decoded: usize,
) -> Result<M, FrameError> {
    let decoder = zstd::stream::read::Decoder::new(body).map_err(FrameError::Compression)?;
    let mut raw = Vec::new();
    let read = decoder
        .take(max_decoded as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(FrameError::Compression)?;
    if read > max_decoded {
        return Err(FrameError::TooLarge { limit: max_decoded });
    }
    Ok(M::decode(raw.as_slice())?)
}

pub mod convert;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn truncated_and_garbage_bodies_are_errors() {
        let req = v1::SyncRequest {
            client_id: "abc".repeat(100),
            ..Default::default()
        };
        let bytes = encode_frame(&req).unwrap();
        assert!(decode_frame::<v1::SyncRequest>(&bytes[..bytes.len() / 2], 1 << 20).is_err());
        assert!(decode_frame::<v1::SyncRequest>(b"hello", 1 << 20).is_err());
        assert!(decode_frame::<v1::SyncRequest>(&[], 1 << 20).is_err());
    }

    #[test]
    fn decompression_bomb_is_refused() {
        let req = v1::SyncRequest {
            client_id: "a".repeat(1 << 20),
            ..Default::default()
        };
        let bytes = encode_frame(&req).unwrap();
        assert!(bytes.len() < 4096);
        assert!(matches!(
            decode_frame::<v1::SyncRequest>(&bytes, 1000),
            Err(FrameError::TooLarge { limit: 1000 })
        ));
    }

    proptest! {
        #[test]
        fn frames_round_trip(client_id in ".{0,64}", seqs in proptest::collection::vec(any::<u64>(), 0..20)) {
            let req = v1::SyncRequest {
                client_id,
                upload: vec![v1::LocalTx { more_parts: false,
                    tx_id: 1,
                    ops: seqs.iter().map(|s| v1::Op { client_seq: *s, ..Default::default() }).collect(),
                }],
                ..Default::default()
            };
            let back: v1::SyncRequest = decode_frame(&encode_frame(&req).unwrap(), 1 << 24).unwrap();
            prop_assert_eq!(back, req);
        }
    }
}
