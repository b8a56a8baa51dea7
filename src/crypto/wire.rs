//! The fixed, length-prefixed binary encoding used for everything signed or MACed.
//!
//! Integers are big-endian; variable fields carry a `u32` length prefix and every decoder states
//! a maximum, so a hostile length cannot make us allocate. Signing JSON (or any encoding with
//! more than one representation of the same value) is never done.

use super::{CryptoError, Result};

/// Builds an encoding; infallible.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
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

    /// Appends a `u32` length prefix and the bytes.
    ///
    /// # Panics
    /// Never for inputs below 4 GiB; larger inputs are truncated to `u32::MAX` in the prefix,
    /// which no decoder accepts, so the value fails to decode rather than being misread.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends an optional fixed-size value as a presence byte and the value.
    pub fn opt_fixed(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(v) => self.u8(1).fixed(v),
            None => self.u8(0),
        }
    }

    /// The encoding so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Consumes the writer, returning the encoding.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
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
    fn round_trip_and_golden_bytes() {
        let mut w = Writer::new();
        w.u8(7).u32(0x0102_0304).bytes(b"ab").opt_fixed(None);
        assert_eq!(
            w.as_slice(),
            &[7, 1, 2, 3, 4, 0, 0, 0, 2, b'a', b'b', 0][..]
        );
        let mut r = Reader::new(w.as_slice(), "test");
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
