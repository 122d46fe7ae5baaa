//! The library's thread pool and its size, the counterpart of `torch.set_num_threads`.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;
use rayon::ThreadPool;

use crate::error::{ConvError, Result};

/// The environment variable read once, at first use, for the default thread count.
///
/// # Example
/// ```
/// // Set before the first convolution, e.g. `CONV2D_NUM_THREADS=1 cargo run`;
/// // `set_num_threads` overrides it.
/// assert_eq!(conv2d::NUM_THREADS_ENV, "CONV2D_NUM_THREADS");
/// assert!(conv2d::num_threads() >= 1);
/// ```
pub const NUM_THREADS_ENV: &str = "CONV2D_NUM_THREADS";

/// 0 means "not set in code": fall back to the environment, then to the machine.
static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static POOL: Mutex<Option<(usize, Arc<ThreadPool>)>> = Mutex::new(None);

fn default_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var(NUM_THREADS_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Sets how many threads later calls use, like `torch.set_num_threads`.
///
/// Results do not depend on the thread count: every output element is summed by one thread
/// in a fixed order.
///
/// # Errors
/// `n == 0`.
///
/// # Example
/// ```
/// conv2d::set_num_threads(2).unwrap();
/// assert_eq!(conv2d::num_threads(), 2);
/// assert!(conv2d::set_num_threads(0).is_err());
/// ```
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(ConvError::invalid(
            "set_num_threads expects a positive number of threads, but got 0",
        ));
    }
    REQUESTED.store(n, Ordering::Relaxed);
    Ok(())
}

/// The number of threads calls use: the last [`set_num_threads`], else `CONV2D_NUM_THREADS`,
/// else the number of CPUs.
///
/// # Example
/// ```
/// assert!(conv2d::num_threads() >= 1);
/// ```
pub fn num_threads() -> usize {
    match REQUESTED.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// Multiply-adds (or elements) below which a call runs on the caller's thread: waking the
/// pool would cost more than it saves. Kernels that do a multiply-add in a fraction of a
/// cycle pass their own threshold (see `Algorithm::inline_below`).
pub(crate) const INLINE_WORK: usize = 1 << 16;

thread_local! {
    /// Set while a call runs on the caller's thread: the task helpers below then loop.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `op`, which does about `work` multiply-adds, inside the pool of [`num_threads`]
/// threads (rebuilt when the count changes), or on the caller's thread when there is one
/// thread or less work than `inline_below`. If no pool can be built, `op` runs on the
/// caller's thread too.
pub(crate) fn install<R: Send>(
    work: usize,
    inline_below: usize,
    op: impl FnOnce() -> R + Send,
) -> R {
    let threads = num_threads();
    if threads == 1 || work < inline_below {
        return inline(op);
    }
    let pool = {
        let mut guard = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_ref() {
            Some((n, pool)) if *n == threads => Some(Arc::clone(pool)),
            _ => {
                let built = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("conv2d-{i}"))
                    .build()
                    .ok()
                    .map(Arc::new);
                if let Some(pool) = &built {
                    *guard = Some((threads, Arc::clone(pool)));
                }
                built
            }
        }
    };
    match pool {
        Some(pool) => pool.install(op),
        None => inline(op),
    }
}

/// Runs `op` on this thread with the task helpers looping, restoring the previous mode
/// afterwards (even if `op` panics).
fn inline<R>(op: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INLINE.with(|f| f.set(self.0));
        }
    }
    let _restore = Restore(INLINE.with(|f| f.replace(true)));
    op()
}

fn is_inline() -> bool {
    INLINE.with(Cell::get)
}

/// `f(i, chunk)` for each `size`-element chunk of `data`, in parallel unless inline.
pub(crate) fn for_each_chunk<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if size == 0 {
        return;
    }
    if is_inline() {
        data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}

/// [`for_each_chunk`] with per-worker scratch state made by `init`.
pub(crate) fn for_each_chunk_init<T: Send, S>(
    data: &mut [T],
    size: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    if size == 0 {
        return;
    }
    if is_inline() {
        let mut state = init();
        data.chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(&mut state, i, c));
    } else {
        data.par_chunks_mut(size)
            .enumerate()
            .for_each_init(init, |state, (i, c)| f(state, i, c));
    }
}

/// `f(item)` for each of `items`, in parallel unless inline.
pub(crate) fn for_each_item<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    if is_inline() {
        items.into_iter().for_each(f);
    } else {
        items.into_par_iter().for_each(f);
    }
}

/// [`for_each_item`] with per-worker scratch state made by `init`.
pub(crate) fn for_each_item_init<T: Send, S>(
    items: Vec<T>,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, T) + Sync + Send,
) {
    if is_inline() {
        let mut state = init();
        items.into_iter().for_each(|item| f(&mut state, item));
    } else {
        items.into_par_iter().for_each_init(init, f);
    }
}

/// `f(state, i)` for each `i` in `0..n`, with per-worker scratch state made by `init`.
pub(crate) fn for_each_index_init<S>(
    n: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize) + Sync + Send,
) {
    if is_inline() {
        let mut state = init();
        (0..n).for_each(|i| f(&mut state, i));
    } else {
        (0..n).into_par_iter().for_each_init(init, f);
    }
}
