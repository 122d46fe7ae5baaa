//! Scratch buffers that cannot be allocated give an error, never an abort: this test binary's
//! allocator refuses every allocation above a limit while the test runs (it is the only test
//! here, so nothing else in the process meets the limit).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use conv2d::{Algorithm, Conv2dOptions, Conv2dPlan, ErrorKind};

/// The system allocator, returning null above `LIMIT` bytes.
struct Refusing;

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

// SAFETY: every call is forwarded unchanged to `System`, or refused with a null pointer,
// which the `GlobalAlloc` contract allows for any request.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Refusing = Refusing;

#[test]
fn scratch_that_cannot_be_had_is_an_error() {
    // A 1024 x 1024 image with 4 channels (16 MiB of f32), so that `direct`'s padded slab
    // (the group's input) is far above the limit while the output, weights and `im2col`'s
    // column blocks (at most 512 KiB) are not.
    let (shape, kernel) = ([1, 4, 1024, 1024], [4, 1, 3, 3]);
    let opts = Conv2dOptions::default().padding(1).groups(4);
    let x = vec![1.0f32; 4 << 20];
    let w = vec![0.5f32; 36];
    let mut y = vec![0.0f32; 4 << 20];
    let mut gw = vec![0.0f32; 36];
    let plan = Conv2dPlan::new(shape, kernel, &opts).unwrap();
    let mut refused = 0;
    for algorithm in Algorithm::ALL {
        let plan = plan.clone().with_algorithm(algorithm);
        LIMIT.store(1 << 20, Ordering::Relaxed);
        let results = [
            plan.forward_into(&x, &w, None, &mut y),
            plan.backward_weight_into(&x, &y, &mut gw),
        ];
        LIMIT.store(usize::MAX, Ordering::Relaxed);
        for (pass, result) in ["forward", "backward_weight"].iter().zip(results) {
            if let Err(e) = result {
                assert_eq!(
                    e.kind(),
                    ErrorKind::Allocation,
                    "{}, {pass}: {e}",
                    algorithm.name()
                );
                refused += 1;
            }
        }
    }
    // At least `direct`'s passes met the limit (the others may fit under it).
    assert!(refused >= 2, "{refused} passes refused");
    // With memory to spare the same calls succeed.
    let plan = plan.with_algorithm(Algorithm::Direct);
    plan.forward_into(&x, &w, None, &mut y).unwrap();
    assert!(y[1024 * 5 + 5] == 4.5);
}
