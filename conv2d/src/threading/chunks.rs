//! A slice's chunks handed to parallel tasks by index, without a lock per chunk.

use std::marker::PhantomData;

/// The `size`-element chunks of a slice (the last may be short), each taken by the one task
/// its index is given to. A lock per chunk cost 20% of a two-thread depthwise layer of 960
/// 7x7 planes: both cores took locks on the same lines.
pub(super) struct Chunks<'a, T> {
    data: *mut T,
    len: usize,
    size: usize,
    borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a `Chunks` only hands out disjoint `&mut [T]` (see `take`), which may move to
// another thread when `T: Send`, as `&mut [T]` may.
unsafe impl<T: Send> Sync for Chunks<'_, T> {}

impl<'a, T> Chunks<'a, T> {
    /// The chunks of `data`; `size` is at least 1.
    pub(super) fn new(data: &'a mut [T], size: usize) -> Self {
        assert!(size > 0);
        Self {
            data: data.as_mut_ptr(),
            len: data.len(),
            size,
            borrow: PhantomData,
        }
    }

    /// How many chunks there are.
    pub(super) fn count(&self) -> usize {
        self.len.div_ceil(self.size)
    }

    /// Chunk `i`: panics if `i` is not below [`count`](Self::count).
    ///
    /// # Safety
    /// Each index is taken at most once (the chunks then never alias).
    pub(super) unsafe fn take(&self, i: usize) -> &'a mut [T] {
        assert!(i < self.count());
        let start = i * self.size;
        let len = self.size.min(self.len - start);
        // SAFETY: `start + len <= self.len`: inside the slice `new` borrowed mutably for
        // `'a`; no other chunk overlaps it, and this one is taken once (the contract).
        unsafe { std::slice::from_raw_parts_mut(self.data.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_the_slice_in_order() {
        let mut values: Vec<u32> = (0..10).collect();
        let chunks = Chunks::new(&mut values, 4);
        assert_eq!(chunks.count(), 3);
        // SAFETY: each index is taken once.
        let parts: Vec<&mut [u32]> = (0..3).map(|i| unsafe { chunks.take(i) }).collect();
        assert_eq!(parts, [&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]]);
        for part in parts {
            part.iter_mut().for_each(|v| *v += 1);
        }
        assert_eq!(values, (1..11).collect::<Vec<_>>());
    }

    #[test]
    #[should_panic]
    fn an_index_past_the_end_panics() {
        let mut values = [0u8; 8];
        let chunks = Chunks::new(&mut values, 4);
        // SAFETY: index 2 is taken once (and is past the end: `take` panics).
        let _ = unsafe { chunks.take(2) };
    }
}
