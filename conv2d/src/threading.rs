//! The library's thread pool and its size, the counterpart of `torch.set_num_threads`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

use crate::error::{ConvError, Result};

/// The environment variable read once, at first use, for the default thread count.
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

/// Runs `op` inside the pool of [`num_threads`] threads (rebuilt when the count changes).
/// If no pool can be built, `op` runs on rayon's global pool instead.
pub(crate) fn install<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    let threads = num_threads();
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
        None => op(),
    }
}
