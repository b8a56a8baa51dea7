//! Framing: bytes -> frame -> typed message, with precise errors and golden-byte tests.

use prost::Message;

use super::{DEFAULT_MAX_FRAME, Frame, PROTOCOL_VERSION};

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Zero bytes: not even a version byte.
    #[error("empty frame")]
    Empty,
    /// The version byte is not ours.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// Larger than the limit.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The protobuf body did not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame without a body.
    #[error("frame has no body")]
    NoBody,
}

/// Encodes a frame: version byte, then the protobuf message.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + frame.encoded_len());
    out.push(PROTOCOL_VERSION);
    // Encoding into a Vec cannot run out of space.
    let _ = frame.encode(&mut out);
    out
}

/// Decodes a frame of at most `limit` bytes (use [`DEFAULT_MAX_FRAME`] unless configured).
///
/// # Errors
/// [`FrameError`] naming what was wrong.
pub fn decode_frame(bytes: &[u8], limit: usize) -> Result<Frame, FrameError> {
    if bytes.len() > limit {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(FrameError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let frame = Frame::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if frame.body.is_none() {
        return Err(FrameError::NoBody);
    }
    Ok(frame)
}

/// Convenience: decode with the default limit.
///
/// # Errors
/// As [`decode_frame`].
pub fn decode_default(bytes: &[u8]) -> Result<Frame, FrameError> {
    decode_frame(bytes, DEFAULT_MAX_FRAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ack, Ping, frame::Body};

    #[test]
    fn golden_bytes() {
        let f = Frame {
            id: 7,
            body: Some(Body::Ping(Ping {})),
        };
        let bytes = encode_frame(&f);
        // version 1; field 1 (id) varint 7; field 18 (ping) length-delimited, empty.
        assert_eq!(bytes, vec![1, 0x08, 7, 0x92, 0x01, 0x00]);
        assert_eq!(decode_default(&bytes).unwrap(), f);
        let ack = Frame {
            id: 1,
            body: Some(Body::Ack(Ack { seqs: vec![1, 300] })),
        };
        assert_eq!(decode_default(&encode_frame(&ack)).unwrap(), ack);
    }

    #[test]
    fn malformed_frames_are_precise_errors() {
        assert_eq!(decode_default(&[]), Err(FrameError::Empty));
        assert_eq!(
            decode_default(&[9, 1, 2]),
            Err(FrameError::UnsupportedVersion(9))
        );
        assert!(matches!(
            decode_default(&[1, 0xff, 0xff]),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(decode_default(&[1]), Err(FrameError::NoBody));
        assert_eq!(
            decode_frame(&[1; 20], 10),
            Err(FrameError::TooLarge {
                size: 20,
                limit: 10
            })
        );
        // Truncating a valid frame never panics.
        let bytes = encode_frame(&Frame {
            id: 99,
            body: Some(Body::Ack(Ack { seqs: vec![5; 40] })),
        });
        for n in 0..bytes.len() {
            let _ = decode_default(&bytes[..n]);
        }
    }
}
