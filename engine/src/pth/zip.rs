//! The zip container of `torch.save` (PyTorch ≥ 1.6): stored (uncompressed) records found
//! through the central directory, ZIP64 included. Only what PyTorch writes is accepted:
//! compressed or encrypted records, multi-disk archives and overlapping records are errors.

use crate::codec::Reader;
use crate::error::{Error, Result};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// One record of the archive.
#[derive(Clone, Debug)]
pub struct Record {
    /// Its name (`archive/data.pkl`, `archive/data/0`, ...).
    pub name: String,
    /// Byte range of its data in the file.
    pub start: usize,
    /// Length of its data.
    pub len: usize,
    /// CRC-32 the central directory gives for it.
    pub crc: u32,
}

fn zip_err(msg: String) -> Error {
    Error::Checkpoint(format!("zip: {msg}"))
}

const EOCD: u32 = 0x0605_4b50;
const EOCD64: u32 = 0x0606_4b50;
const LOCATOR64: u32 = 0x0706_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

/// Every record of the archive `bytes`, in central-directory order.
pub fn records(bytes: &[u8]) -> Result<Vec<Record>> {
    let mut r = Reader::new(bytes, zip_err);
    // The end-of-central-directory record: 22 bytes plus a comment of at most 65,535.
    let lo = bytes.len().saturating_sub(22 + 0xffff);
    let eocd = (lo..=bytes.len().saturating_sub(22))
        .rev()
        .find(|&i| bytes.len() >= 22 && bytes[i..i + 4] == EOCD.to_le_bytes())
        .ok_or_else(|| {
            zip_err(format!(
                "no end-of-central-directory record in {} bytes: not a zip archive, or truncated",
                bytes.len()
            ))
        })?;
    r.seek(eocd + 4)?;
    let disk = r.u16("disk number")?;
    let cd_disk = r.u16("central directory disk")?;
    let _n_here = r.u16("entries on this disk")?;
    let mut n = u64::from(r.u16("entry count")?);
    let mut cd_size = u64::from(r.u32("central directory size")?);
    let mut cd_offset = u64::from(r.u32("central directory offset")?);
    if disk != 0 || cd_disk != 0 {
        return Err(r.error("multi-disk archives are not supported"));
    }
    if n == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // ZIP64: the locator sits just before the end record.
        let loc = eocd
            .checked_sub(20)
            .ok_or_else(|| zip_err("ZIP64 markers but no room for the ZIP64 locator".into()))?;
        r.seek(loc)?;
        if r.u32("ZIP64 locator signature")? != LOCATOR64 {
            return Err(r.error("ZIP64 markers but no ZIP64 locator"));
        }
        r.u32("ZIP64 disk")?;
        let at = r.u64("ZIP64 end record offset")?;
        r.seek(usize::try_from(at).unwrap_or(usize::MAX))?;
        if r.u32("ZIP64 end record signature")? != EOCD64 {
            return Err(r.error("no ZIP64 end-of-central-directory record"));
        }
        r.u64("ZIP64 record size")?;
        r.u16("version made by")?;
        r.u16("version needed")?;
        r.u32("disk number")?;
        r.u32("central directory disk")?;
        r.u64("entries on this disk")?;
        n = r.u64("entry count")?;
        cd_size = r.u64("central directory size")?;
        cd_offset = r.u64("central directory offset")?;
    }
    // Each central entry takes at least 46 bytes.
    if n.saturating_mul(46) > cd_size || cd_offset.saturating_add(cd_size) > bytes.len() as u64 {
        return Err(zip_err(format!(
            "{n} entries in a central directory of {cd_size} bytes at offset {cd_offset} \
             (file of {} bytes)",
            bytes.len()
        )));
    }
    r.seek(cd_offset as usize)?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        if r.u32("central entry signature")? != CENTRAL {
            return Err(r.error("bad central directory entry signature"));
        }
        r.u16("version made by")?;
        r.u16("version needed")?;
        let flags = r.u16("flags")?;
        let method = r.u16("compression method")?;
        r.u16("time")?;
        r.u16("date")?;
        let crc = r.u32("crc")?;
        let mut csize = u64::from(r.u32("compressed size")?);
        let mut usize_ = u64::from(r.u32("size")?);
        let name_len = r.u16("name length")? as usize;
        let extra_len = r.u16("extra length")? as usize;
        let comment_len = r.u16("comment length")? as usize;
        r.u16("disk")?;
        r.u16("internal attributes")?;
        r.u32("external attributes")?;
        let mut offset = u64::from(r.u32("local header offset")?);
        let name = core::str::from_utf8(r.take(name_len, "record name")?)
            .map_err(|_| r.error("a record name is not UTF-8"))?
            .to_string();
        let extra = r.take(extra_len, "extra field")?;
        r.take(comment_len, "comment")?;
        // ZIP64 extra field: the 64-bit values of the fields that were saturated.
        let mut e = Reader::new(extra, zip_err);
        while e.remaining() >= 4 {
            let id = e.u16("extra id")?;
            let len = e.u16("extra length")? as usize;
            let body = e.take(len, "extra field")?;
            if id == 1 {
                let mut z = Reader::new(body, zip_err);
                if usize_ == 0xffff_ffff {
                    usize_ = z.u64("ZIP64 size")?;
                }
                if csize == 0xffff_ffff {
                    csize = z.u64("ZIP64 compressed size")?;
                }
                if offset == 0xffff_ffff {
                    offset = z.u64("ZIP64 offset")?;
                }
            }
        }
        if flags & 1 != 0 {
            return Err(zip_err(format!("record `{name}` is encrypted")));
        }
        if method != 0 {
            return Err(zip_err(format!(
                "record `{name}` uses compression method {method}; torch.save writes stored \
                 (method 0) records only"
            )));
        }
        if csize != usize_ {
            return Err(zip_err(format!(
                "stored record `{name}`: compressed size {csize} differs from size {usize_}"
            )));
        }
        let mut l = Reader::new(bytes, zip_err);
        l.seek(usize::try_from(offset).unwrap_or(usize::MAX))?;
        if l.u32("local header signature")? != LOCAL {
            return Err(l.error(format_args!("record `{name}`: no local header")));
        }
        l.take(22, "local header")?;
        let ln = l.u16("local name length")? as usize;
        let le = l.u16("local extra length")? as usize;
        l.take(ln + le, "local name and extra")?;
        let start = l.pos();
        let len = usize::try_from(usize_).unwrap_or(usize::MAX);
        if len > l.remaining() {
            return Err(l.error(format_args!(
                "record `{name}` of {len} bytes runs past the end of the file"
            )));
        }
        out.push(Record {
            name,
            start,
            len,
            crc,
        });
    }
    Ok(out)
}
