//! The fixed, length-prefixed binary encoding used for everything signed or MACed.
//!
//! Integers are big-endian; variable fields carry a `u32` length prefix and every decoder states
//! a maximum, so a hostile length cannot make us allocate. Signing JSON (or any encoding with
//! more than one representation of the same value) is never done.

use super::{CryptoError, Result};

/// Builds an encoding. A field too long for its `u32` length prefix cannot be encoded; the
/// writer remembers that and [`Writer::finish`] fails, so no caller can sign or send an
/// encoding with a wrong length in it.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
    /// Set by the first field that did not fit; nothing is written after it.
    too_long: bool,
}

/// The `u32` length prefix of a field of `len` bytes (or a count of `len` items).
///
/// # Errors
/// [`CryptoError::Limit`] when `len` does not fit in a `u32` (4 GiB and more).
pub fn length_prefix(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| CryptoError::Limit("a field of 4 GiB or more cannot be encoded"))
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
            too_long: false,
        }
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends bytes whose length both sides know (keys, ids, hashes).
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends a `u32` length prefix and the bytes. A field of 4 GiB or more is not written
    /// and makes [`Self::finish`] fail.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        match length_prefix(v.len()) {
            Ok(len) if !self.too_long => {
                self.u32(len);
                self.buf.extend_from_slice(v);
            }
            _ => self.too_long = true,
        }
        self
    }

    /// Appends the `u32` count of a list that follows; a count that does not fit makes
    /// [`Self::finish`] fail, like [`Self::bytes`].
    pub fn count(&mut self, n: usize) -> &mut Self {
        match length_prefix(n) {
            Ok(n) => self.u32(n),
            Err(_) => {
                self.too_long = true;
                self
            }
        }
    }

    /// Appends an optional fixed-size value as a presence byte and the value.
    pub fn opt_fixed(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(v) => self.u8(1).fixed(v),
            None => self.u8(0),
        }
    }

    /// Consumes the writer, returning the encoding.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] when a field was too long for its length prefix.
    pub fn finish(self) -> Result<Vec<u8>> {
        if self.too_long {
            Err(CryptoError::Limit(
                "a field of 4 GiB or more cannot be encoded",
            ))
        } else {
            Ok(self.buf)
        }
    }
}

/// Decodes an encoding; every method fails with [`CryptoError::Malformed`] naming `what`.
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts decoding `buf`; `what` names the structure in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(CryptoError::Malformed(self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads exactly `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads exactly `n` bytes.
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n)
    }

    /// Reads a length-prefixed field of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(CryptoError::Malformed(self.what));
        }
        self.take(len)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize) -> Result<&'a str> {
        let b = self.bytes(max)?;
        std::str::from_utf8(b).map_err(|_| CryptoError::Malformed(self.what))
    }

    /// Reads an optional fixed-size value written by [`Writer::opt_fixed`].
    pub fn opt_array<const N: usize>(&mut self) -> Result<Option<[u8; N]>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.array()?)),
            _ => Err(CryptoError::Malformed(self.what)),
        }
    }

    /// Reads a boolean byte (0 or 1 only).
    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CryptoError::Malformed(self.what)),
        }
    }

    /// The bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Fails unless every byte was consumed, so trailing garbage is never silently accepted.
    pub fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CryptoError::Malformed(self.what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_of_4_gib_and_more_are_refused_not_truncated() {
        assert_eq!(length_prefix(0).unwrap(), 0);
        assert_eq!(length_prefix(u32::MAX as usize).unwrap(), u32::MAX);
        let over = u32::MAX as usize + 1;
        assert!(matches!(length_prefix(over), Err(CryptoError::Limit(_))));
        assert!(matches!(
            length_prefix(usize::MAX),
            Err(CryptoError::Limit(_))
        ));
        let mut w = Writer::new();
        w.u8(1).count(over).u8(2);
        assert!(w.finish().is_err());
        let mut w = Writer::new();
        w.count(3);
        assert_eq!(w.finish().unwrap(), [0, 0, 0, 3]);
    }

    #[test]
    fn round_trip_and_golden_bytes() {
        let mut w = Writer::new();
        w.u8(7).u32(0x0102_0304).bytes(b"ab").opt_fixed(None);
        let w = w.finish().unwrap();
        assert_eq!(w, &[7, 1, 2, 3, 4, 0, 0, 0, 2, b'a', b'b', 0][..]);
        let mut r = Reader::new(&w, "test");
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 0x0102_0304);
        assert_eq!(r.bytes(2).unwrap(), b"ab");
        assert_eq!(r.opt_array::<4>().unwrap(), None);
        r.finish().unwrap();
    }

    #[test]
    fn hostile_lengths_and_trailing_bytes_are_rejected() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1], "test");
        assert!(matches!(
            r.bytes(1 << 20),
            Err(CryptoError::Malformed("test"))
        ));
        let mut r = Reader::new(&[0, 0, 0, 1, 9, 9], "test");
        assert_eq!(r.bytes(4).unwrap(), &[9]);
        assert!(r.finish().is_err());
        let mut r = Reader::new(&[2], "test");
        assert!(r.opt_array::<1>().is_err());
    }
}
