//! Scratch buffers kept per thread between calls. A fresh buffer of a few hundred KiB or
//! more is often mapped anew by the allocator on every call (glibc gives the top of its
//! heap back to the system when such a buffer at the top is freed), and the system's
//! zeroing of its pages cost more than the work: 2.5x the time of a `bf16` depthwise layer
//! widened to `f32`; `bf16` `resnet_3x3_c128` on AMX ran 0.48 ms alone in a process and
//! 0.35 ms after other layers had moved the heap's top (Intel Xeon, one thread).

use std::any::Any;
use std::cell::RefCell;

use crate::error::{try_reserve, Result};

thread_local! {
    /// Each kept buffer (a `Vec` of some type) and its bytes.
    static SPARE: RefCell<Vec<(usize, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// Buffers kept per thread (a call's widened input, weight and output, or a kernel's packed
/// weights, slab and sums), and the sizes kept: smaller ones come from the allocator's free
/// lists, larger ones would hold too much memory.
const SPARE_BUFFERS: usize = 6;
const SPARE_MIN_BYTES: usize = 64 << 10;
const SPARE_MAX_BYTES: usize = 64 << 20;

/// An empty buffer with room for `len` values: the smallest of this thread's kept ones
/// that holds them if it has one, else a new one (growing a kept one would copy its old
/// values).
pub(crate) fn take<T: 'static>(len: usize) -> Result<Vec<T>> {
    let kept = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        let capacity =
            |(_, b): &(usize, Box<dyn Any>)| b.downcast_ref::<Vec<T>>().map(Vec::capacity);
        // The smallest that fits, so that a small request leaves a large buffer for a
        // large one.
        let fits = (0..spare.len())
            .filter_map(|i| capacity(&spare[i]).filter(|&c| c >= len).map(|c| (c, i)))
            .min();
        let kept = fits.map(|(_, i)| spare.swap_remove(i).1.downcast::<Vec<T>>());
        kept.and_then(|b| b.ok()).map(|b| *b)
    });
    let mut buffer = kept.ok().flatten().unwrap_or_default();
    buffer.clear();
    try_reserve(&mut buffer, len)?;
    Ok(buffer)
}

/// Keeps `buffer` for this thread's next [`take`] if its size is within the limits (in
/// place of the smallest kept one when this thread keeps as many as it may); drops it
/// otherwise.
pub(crate) fn recycle<T: 'static>(buffer: Vec<T>) {
    let bytes = buffer.capacity().saturating_mul(size_of::<T>());
    if !(SPARE_MIN_BYTES..=SPARE_MAX_BYTES).contains(&bytes) {
        return;
    }
    // A thread whose kept buffers are gone (it is exiting) drops this one.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() == SPARE_BUFFERS {
            let smallest = (0..spare.len()).min_by_key(|&i| spare[i].0);
            match smallest {
                Some(i) if spare[i].0 < bytes => drop(spare.swap_remove(i)),
                _ => return,
            }
        }
        spare.push((bytes, Box::new(buffer)));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept buffer comes back for a request it holds, of its own type only; buffers under
    /// the smallest size kept are not kept.
    #[test]
    fn kept_buffers_come_back_for_requests_they_hold() {
        let len = SPARE_MIN_BYTES / 4;
        let buffer: Vec<f32> = take(len).unwrap();
        let at = buffer.as_ptr();
        recycle(buffer);
        let other: Vec<u32> = take(len).unwrap();
        assert_ne!(other.as_ptr().cast::<f32>(), at, "a buffer of another type");
        let again: Vec<f32> = take(len / 2).unwrap();
        assert_eq!(again.as_ptr(), at, "the kept buffer");
        assert!(again.is_empty() && again.capacity() >= len);

        let kept = || SPARE.with_borrow(Vec::len);
        let before = kept();
        recycle(Vec::<f32>::with_capacity(16));
        assert_eq!(kept(), before, "a small buffer is not kept");
        // The larger one kept first, so that the first that fits would be it.
        let larger: Vec<f32> = take(4 * len).unwrap();
        let larger_at = larger.as_ptr();
        recycle(larger);
        recycle(again);
        assert_eq!(kept(), before + 2);

        let fitting: Vec<f32> = take(len).unwrap();
        assert_eq!(fitting.as_ptr(), at, "the smallest kept buffer that fits");
        let large: Vec<f32> = take(2 * len).unwrap();
        assert_eq!(large.as_ptr(), larger_at, "the larger one, still kept");
    }
}
