//! Checked conversions of C arguments: NULL, alignment, lengths that fit in memory, buffers
//! that must not overlap. Each failure is an [`Error::InvalidArgument`] naming the argument.

use crate::error::{Error, Result, invalid};
use std::mem::{align_of, size_of};

fn check_ptr<T>(ptr: *const T, len: usize, what: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    if !ptr.is_aligned() {
        return Err(invalid(format!(
            "{what} is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    if len > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(invalid(format!(
            "{what}: length {len} does not fit in memory"
        )));
    }
    Ok(())
}

/// `len` values at `ptr`; an empty slice for `len == 0` (then `ptr` may be NULL).
///
/// # Safety
/// When `len > 0` and `ptr` is not NULL, `ptr` must point to `len` initialised values that stay
/// valid and unmodified for `'a`.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    check_ptr(ptr, len, what)?;
    // SAFETY: non-NULL, aligned, `len * size_of::<T>() <= isize::MAX` (checked above); the
    // caller guarantees `len` valid values for `'a`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A writable buffer of `len` values at `ptr`; an empty slice for `len == 0`.
///
/// # Safety
/// When `len > 0` and `ptr` is not NULL, `ptr` must point to `len` writable values, not
/// accessed through any other pointer for `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize, what: &str) -> Result<&'a mut [T]> {
    if len == 0 {
        return Ok(&mut []);
    }
    check_ptr(ptr, len, what)?;
    // SAFETY: non-NULL, aligned, size fits (checked above); the caller guarantees `len` writable
    // values with no other access for `'a`.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A shared reference to a handle.
///
/// # Safety
/// A non-NULL `ptr` must come from this library's constructor for `T` and not have been freed.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, what: &str) -> Result<&'a T> {
    check_ptr(ptr, 1, what)?;
    // SAFETY: non-NULL and aligned; the caller guarantees a live handle.
    Ok(unsafe { &*ptr })
}

/// An exclusive reference to a handle.
///
/// # Safety
/// A non-NULL `ptr` must come from this library's constructor for `T`, not have been freed, and
/// not be in use by another thread.
pub(crate) unsafe fn handle_mut<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T> {
    check_ptr(ptr, 1, what)?;
    // SAFETY: non-NULL and aligned; the caller guarantees a live handle used by this thread only.
    Ok(unsafe { &mut *ptr })
}

/// Checks an out-pointer (written only on success, by [`write_out`]).
pub(crate) fn out_ptr<T>(ptr: *mut T, what: &str) -> Result<()> {
    check_ptr(ptr, 1, what)
}

/// Writes `value` through an out-pointer already checked with [`out_ptr`].
///
/// # Safety
/// `ptr` must be valid for a write of one `T`.
pub(crate) unsafe fn write_out<T>(ptr: *mut T, value: T) {
    // SAFETY: checked non-NULL and aligned by `out_ptr`; the caller guarantees it is writable.
    // `write` does not drop the (possibly uninitialised) old value.
    unsafe { ptr.write(value) }
}

/// A buffer for the overlap check: name, start address, length in bytes.
pub(crate) type Region<'a> = (&'a str, usize, usize);

/// The region of a slice.
pub(crate) fn region<'a, T>(what: &'a str, s: &[T]) -> Region<'a> {
    (what, s.as_ptr() as usize, std::mem::size_of_val(s))
}

/// Fails when an output buffer overlaps another buffer of the call (Rust may not hold a
/// mutable and another reference to the same memory).
pub(crate) fn check_disjoint(outputs: &[Region<'_>], others: &[Region<'_>]) -> Result<()> {
    for (i, &(name_a, start_a, len_a)) in outputs.iter().enumerate() {
        for &(name_b, start_b, len_b) in outputs[i + 1..].iter().chain(others) {
            let overlap = len_a > 0
                && len_b > 0
                && start_a < start_b.saturating_add(len_b)
                && start_b < start_a.saturating_add(len_a);
            if overlap {
                return Err(Error::InvalidArgument(format!(
                    "{name_a} overlaps {name_b}"
                )));
            }
        }
    }
    Ok(())
}

/// `a * b`, or an error naming the product.
pub(crate) fn mul(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| invalid(format!("{what}: {a} x {b} overflows size_t")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_misaligned_and_oversized_buffers_are_rejected() {
        // SAFETY: every call below is rejected before the pointer is read, or has len 0.
        unsafe {
            assert!(slice::<u32>(std::ptr::null(), 0, "h").unwrap().is_empty());
            let e = slice::<u32>(std::ptr::null(), 3, "history").unwrap_err();
            assert_eq!(e.to_string(), "invalid argument: history is NULL");
            let words = [0u32; 4];
            let odd = (words.as_ptr() as *const u8).add(1) as *const u32;
            let e = slice(odd, 2, "history").unwrap_err();
            assert!(e.to_string().contains("not aligned to 4 bytes"), "{e}");
            let e = slice(words.as_ptr(), usize::MAX / 2, "history").unwrap_err();
            assert!(e.to_string().contains("does not fit in memory"), "{e}");
        }
    }

    #[test]
    fn overlapping_outputs_are_rejected() {
        let buf = [0u32; 8];
        let a = ("items_out", buf.as_ptr() as usize, 16);
        let b = ("scores_out", buf.as_ptr() as usize + 12, 16);
        let c = ("history", buf.as_ptr() as usize + 16, 16);
        assert!(check_disjoint(&[a], &[c]).is_ok());
        let e = check_disjoint(&[a, b], &[]).unwrap_err().to_string();
        assert!(e.contains("items_out overlaps scores_out"), "{e}");
        let e = check_disjoint(&[b], &[c]).unwrap_err().to_string();
        assert!(e.contains("scores_out overlaps history"), "{e}");
        assert!(check_disjoint(&[("x", 0, 0)], &[a]).is_ok());
    }
}
