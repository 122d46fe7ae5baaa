//! The library's thread pool and its size, the counterpart of `torch.set_num_threads`.
//!
//! A call runs inside [`install`]; its kernels share their tasks out through the helpers
//! below ([`for_each_chunk`] and the like), which loop on the caller's thread when the call
//! runs inline (one thread, or too little work) and otherwise hand the tasks to
//! [`pool`]'s fork-join pool, the caller working too.

#[allow(unsafe_code)] // disjoint chunks of one slice from raw parts
mod chunks;
#[allow(unsafe_code)] // a region's job borrows its owner's stack (see `pool::Region`)
mod pool;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use chunks::Chunks;
use pool::{Claims, Pool};

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
static POOL: Mutex<Option<Pool>> = Mutex::new(None);

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

/// Elements below which an element-wise pass of a call (adding the bias, padding the
/// input) runs on the caller's thread: sharing it out would cost more than it saves. The
/// convolutions pass their algorithm's threshold (see `Algorithm::inline_below`).
pub(crate) const INLINE_WORK: usize = 1 << 16;

thread_local! {
    /// The pool a call's task helpers share their tasks with; `None` (the caller's thread
    /// alone) outside [`install`] and for a call run inline.
    static CURRENT: RefCell<Option<Pool>> = const { RefCell::new(None) };
}

/// Runs `op`, which does about `work` multiply-adds, with the pool of [`num_threads`]
/// threads (the caller among them; rebuilt when the count changes), or on the caller's
/// thread alone when there is one thread or less work than `inline_below`. If no pool can
/// be built, `op` runs on the caller's thread alone too.
pub(crate) fn install<R>(work: usize, inline_below: usize, op: impl FnOnce() -> R) -> R {
    let threads = num_threads();
    if threads == 1 || work < inline_below {
        return with_pool(None, op);
    }
    let pool = {
        let mut guard = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(pool) if pool.threads() == threads => Some(pool.clone()),
            _ => {
                let built = Pool::new(threads);
                if let Some(pool) = &built {
                    if let Some(old) = guard.replace(pool.clone()) {
                        old.shut_down();
                    }
                }
                built
            }
        }
    };
    with_pool(pool, op)
}

/// Runs `op` with the task helpers sharing out to `pool` (or looping on this thread if
/// `None`), restoring the previous pool afterwards (even if `op` panics).
fn with_pool<R>(pool: Option<Pool>, op: impl FnOnce() -> R) -> R {
    struct Restore(Option<Pool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(pool)));
    op()
}

/// Runs a worker thread's loop `op` with the task helpers sharing out to its pool (a
/// region started inside a task is shared out too).
fn as_worker(pool: Pool, op: impl FnOnce()) {
    with_pool(Some(pool), op);
}

fn current() -> Option<Pool> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The current pool for a region of `tasks` tasks; `None` for one task or none, which
/// runs inline without touching the pool (cloning it bumps a count that every thread
/// shares: per plane of 960 7x7 depthwise planes, whose one-task regions of rows run
/// inside the region of planes, that was 40% of a two-thread call).
fn pool_for(tasks: usize) -> Option<Pool> {
    if tasks > 1 {
        current()
    } else {
        None
    }
}

/// Takes each slot's value once, by task index.
fn take<T>(slots: &[Mutex<Option<T>>], i: usize) -> T {
    let value = slots[i]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    value.expect("each task is claimed once")
}

/// `f(state, i)` for each `i` in `0..n` on the current pool's threads, with a state made
/// by `init` for each thread that claims a task.
fn run_tasks<S>(
    pool: &Pool,
    n: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) + Sync,
) {
    pool.run(n, &|claims: &Claims<'_>| {
        let mut state = None;
        while let Some(i) = claims.next() {
            f(state.get_or_insert_with(&init), i);
        }
    });
}

/// `f(i, chunk)` for each `size`-element chunk of `data`, in parallel unless inline.
pub(crate) fn for_each_chunk<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    for_each_chunk_init(data, size, || (), |(), i, c| f(i, c));
}

/// [`for_each_chunk`] with per-thread scratch state made by `init`.
pub(crate) fn for_each_chunk_init<T: Send, S>(
    data: &mut [T],
    size: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    if size == 0 {
        return;
    }
    match pool_for(data.len().div_ceil(size)) {
        Some(pool) => {
            let chunks = Chunks::new(data, size);
            run_tasks(&pool, chunks.count(), init, |s, i| {
                // SAFETY: `run_tasks` gives each index in `0..count` to one task only.
                #[allow(unsafe_code)]
                let chunk = unsafe { chunks.take(i) };
                f(s, i, chunk)
            });
        }
        None => {
            let mut state = init();
            data.chunks_mut(size)
                .enumerate()
                .for_each(|(i, c)| f(&mut state, i, c));
        }
    }
}

/// `f(item)` for each of `items`, in parallel unless inline.
pub(crate) fn for_each_item<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    for_each_item_init(items, || (), |(), item| f(item));
}

/// [`for_each_item`] with per-thread scratch state made by `init`.
pub(crate) fn for_each_item_init<T: Send, S>(
    items: Vec<T>,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, T) + Sync + Send,
) {
    match pool_for(items.len()) {
        Some(pool) => {
            let slots: Vec<_> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
            run_tasks(&pool, slots.len(), init, |s, i| f(s, take(&slots, i)));
        }
        None => {
            let mut state = init();
            items.into_iter().for_each(|item| f(&mut state, item));
        }
    }
}

/// `f(state, i)` for each `i` in `0..n`, with per-thread scratch state made by `init`.
pub(crate) fn for_each_index_init<S>(
    n: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize) + Sync + Send,
) {
    match pool_for(n) {
        Some(pool) => run_tasks(&pool, n, init, f),
        None => {
            let mut state = init();
            (0..n).for_each(|i| f(&mut state, i));
        }
    }
}
