//! Bounds-checked little-endian byte reading and writing, and CRC-32: the pieces shared by the
//! session-state format (`SessionState::save`) and the PyTorch checkpoint
//! reader (`pth`). Both read untrusted bytes, so every read checks the remaining length and a
//! failure names what was read, the offset and how many bytes were needed.

use crate::error::{Error, Result};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// A cursor over untrusted bytes. Every failure is made by `err`, so that each format reports
/// in its own [`Error`] variant.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    err: fn(String) -> Error,
}

impl<'a> Reader<'a> {
    /// A reader at offset 0 of `bytes`.
    pub fn new(bytes: &'a [u8], err: fn(String) -> Error) -> Self {
        Reader { bytes, pos: 0, err }
    }

    /// An error of this reader's format mentioning the current offset.
    pub fn error(&self, msg: impl core::fmt::Display) -> Error {
        (self.err)(format!("{msg} (at byte offset {})", self.pos))
    }

    /// The current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Moves to absolute offset `pos` (at most the length).
    pub fn seek(&mut self, pos: usize) -> Result<()> {
        if pos > self.bytes.len() {
            return Err(self.error(format_args!(
                "offset {pos} is past the end ({} bytes)",
                self.bytes.len()
            )));
        }
        self.pos = pos;
        Ok(())
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format_args!(
                "{what} needs {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, what: &str) -> Result<u16> {
        self.array(what).map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// An unsigned LEB128 number of at most 64 bits.
    pub fn varint(&mut self, what: &str) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.error(format_args!("{what}: varint overflows 64 bits")));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error(format_args!("{what}: varint longer than 10 bytes")))
    }

    /// A varint that must be at most `max` (a count or a length read from untrusted bytes).
    pub fn count(&mut self, what: &str, max: usize) -> Result<usize> {
        let v = self.varint(what)?;
        if v > max as u64 {
            return Err(self.error(format_args!("{what} is {v}, at most {max} allowed")));
        }
        Ok(v as usize)
    }

    /// A count-prefixed list of f32 values (see [`Writer::f32s`]) that must hold `expected`
    /// values, appended to `out`.
    pub fn f32s(&mut self, what: &str, expected: usize, out: &mut Vec<f32>) -> Result<()> {
        let n = self.count(what, usize::MAX >> 3)?;
        if n != expected {
            return Err(self.error(format_args!("{what}: {n} values, expected {expected}")));
        }
        let bytes = self.take(4 * n, what)?;
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        Ok(())
    }
}

/// A growing little-endian byte string.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    /// The bytes so far.
    pub bytes: Vec<u8>,
}

impl Writer {
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends an unsigned LEB128 number.
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.bytes.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
    }

    /// Appends a count (varint) and the f32 values, little-endian, bit for bit.
    pub fn f32s(&mut self, values: &[f32]) {
        self.varint(values.len() as u64);
        self.bytes.reserve(4 * values.len());
        for v in values {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
}

const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

static CRC: [[u32; 256]; 8] = crc_tables();

/// CRC-32 (IEEE 802.3, as zip and PNG use it) of `bytes`, continuing from `crc` (0 to start).
/// Slice-by-8: about 1.5 GB/s on one core.
pub fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    let mut chunks = bytes.chunks_exact(8);
    for ch in &mut chunks {
        let lo = c ^ u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
        let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        c = CRC[7][(lo & 0xff) as usize]
            ^ CRC[6][((lo >> 8) & 0xff) as usize]
            ^ CRC[5][((lo >> 16) & 0xff) as usize]
            ^ CRC[4][(lo >> 24) as usize]
            ^ CRC[3][(hi & 0xff) as usize]
            ^ CRC[2][((hi >> 8) & 0xff) as usize]
            ^ CRC[1][((hi >> 16) & 0xff) as usize]
            ^ CRC[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = CRC[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// A 64-bit FNV-1a hash step over `bytes` (for fingerprints of small host data).
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a's offset basis.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A fast 64-bit hash of a large byte string, continuing from `h` (model fingerprints hash
/// every weight): four independent multiply-rotate lanes over 32-byte blocks, the tail and
/// the length folded in with [`fnv1a`], the lanes mixed with a final avalanche. Not
/// cryptographic: it tells models apart, it does not authenticate them.
pub fn hash_bytes(h: u64, bytes: &[u8]) -> u64 {
    const P1: u64 = 0x9e37_79b1_85eb_ca87;
    const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let mut lanes = [h ^ P1, h.rotate_left(17) ^ P2, h.rotate_left(31), !h];
    let mut blocks = bytes.chunks_exact(32);
    for b in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes([
                b[8 * i],
                b[8 * i + 1],
                b[8 * i + 2],
                b[8 * i + 3],
                b[8 * i + 4],
                b[8 * i + 5],
                b[8 * i + 6],
                b[8 * i + 7],
            ]);
            *lane = (*lane ^ w.wrapping_mul(P2))
                .rotate_left(31)
                .wrapping_mul(P1);
        }
    }
    let mut out = fnv1a(h, blocks.remainder());
    for lane in lanes {
        out = (out ^ lane).wrapping_mul(P1).rotate_left(27);
    }
    out ^= bytes.len() as u64;
    out ^= out >> 33;
    out = out.wrapping_mul(P2);
    out ^ (out >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn err(msg: String) -> Error {
        Error::Format(msg)
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(0, b""), 0);
        // Chunked equals whole, across the 8-byte boundary.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = crc32(0, &data);
        assert_eq!(crc32(crc32(0, &data[..13]), &data[13..]), whole);
    }

    #[test]
    fn hash_bytes_sees_every_byte() {
        let data: Vec<u8> = (0..257u32).map(|i| (i * 13) as u8).collect();
        let h = hash_bytes(1, &data);
        assert_eq!(h, hash_bytes(1, &data));
        assert_ne!(h, hash_bytes(2, &data));
        for i in [0, 31, 32, 100, 256] {
            let mut d = data.clone();
            d[i] ^= 1;
            assert_ne!(hash_bytes(1, &d), h, "byte {i}");
        }
        assert_ne!(hash_bytes(1, &data[..256]), h);
    }

    #[test]
    fn reads_round_trip_and_fail_cleanly_past_the_end() {
        let mut w = Writer::default();
        w.u8(7);
        w.u16(0xbeef);
        w.u32(123_456);
        w.u64(u64::MAX - 1);
        for v in [0u64, 127, 128, 300, u64::MAX] {
            w.varint(v);
        }
        w.f32s(&[1.5, -0.0, f32::MIN_POSITIVE]);
        let mut r = Reader::new(&w.bytes, err);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u16("b").unwrap(), 0xbeef);
        assert_eq!(r.u32("c").unwrap(), 123_456);
        assert_eq!(r.u64("d").unwrap(), u64::MAX - 1);
        for v in [0u64, 127, 128, 300, u64::MAX] {
            assert_eq!(r.varint("v").unwrap(), v);
        }
        let mut out = Vec::new();
        r.f32s("f", 3, &mut out).unwrap();
        assert_eq!(out[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(r.remaining(), 0);
        let e = r.u32("trailer").unwrap_err().to_string();
        assert!(e.contains("trailer needs 4 bytes, 0 left"), "{e}");
        // Overlong and overflowing varints.
        let e = Reader::new(&[0xff; 11], err).varint("n").unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        let e = Reader::new(&[0x80, 0x80, 0x01], err)
            .count("n", 100)
            .unwrap_err();
        assert!(e.to_string().contains("n is 16384, at most 100"), "{e}");
    }
}
