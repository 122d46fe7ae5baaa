//! A call's scratch memory stays bounded: no im2col buffer of a whole image, let alone a
//! batch; and training steps repeated keep memory flat. A counting allocator records the
//! live bytes and their peak; the tests here run one at a time, as they share it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use conv2d::{Algorithm, Conv2dOptions, Conv2dPlan};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(live, Ordering::SeqCst);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded unchanged; `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Held by each test: the counters are global.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Peak bytes allocated on top of what was live before `op` ran.
fn peak_scratch(op: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    op();
    PEAK.load(Ordering::SeqCst) - before
}

#[test]
fn scratch_memory_is_bounded_far_below_a_whole_im2col() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    conv2d::set_num_threads(2).unwrap();
    // An image whose full im2col would take 64*9 * 112*112 floats = 28.9 MB.
    let shape = [2, 64, 112, 112];
    let chosen =
        Conv2dPlan::new(shape, [64, 64, 3, 3], &Conv2dOptions::default().padding(1)).unwrap();
    let plan = chosen.clone().with_algorithm(Algorithm::Im2colGemm);
    let x = vec![0.5f32; shape.iter().product()];
    let w = vec![0.25f32; 64 * 64 * 9];
    let gy = vec![1.0f32; plan.output_shape().iter().product()];
    let (mut y, mut gx, mut gw) = (
        vec![0.0f32; gy.len()],
        vec![0.0f32; x.len()],
        vec![0.0f32; w.len()],
    );
    let whole_im2col = 64 * 9 * 112 * 112 * 4;
    // Two threads, each with a column buffer of at most 128 Ki floats (512 KiB), plus the
    // GEMM's packing buffers: a few MiB at most.
    let bound = 8 << 20;
    for (pass, peak) in [
        (
            "forward",
            peak_scratch(|| plan.forward_into(&x, &w, None, &mut y).unwrap()),
        ),
        (
            "backward_input",
            peak_scratch(|| plan.backward_input_into(&gy, &w, &mut gx).unwrap()),
        ),
        (
            "backward_weight",
            peak_scratch(|| plan.backward_weight_into(&x, &gy, &mut gw).unwrap()),
        ),
    ] {
        eprintln!("{pass}: peak scratch {peak} bytes");
        assert!(
            peak <= bound,
            "{pass}: {peak} bytes of scratch, bound {bound}"
        );
        assert!(
            peak * 3 < whole_im2col,
            "{pass}: {peak} bytes is near a whole im2col"
        );
    }
    // The direct algorithm pads, per task, the rows of its band in each input channel of the
    // group: at most one padded image group per thread (it is chosen for small groups).
    let direct = plan.clone().with_algorithm(Algorithm::Direct);
    let peak = peak_scratch(|| direct.forward_into(&x, &w, None, &mut y).unwrap());
    let slabs = 2 * 64 * 114 * 114 * 4 + (1 << 20);
    eprintln!("direct forward: peak scratch {peak} bytes");
    assert!(
        peak <= slabs,
        "direct forward: {peak} bytes of scratch, bound {slabs}"
    );
    // `direct-tiled` (the choice here) pads each image once (a band of at most 1 Mi
    // elements; here the whole padded image, plus a vector's tail), and each of its tasks
    // holds a 6-channel block of output rows and weights.
    assert_eq!(chosen.algorithm(), Algorithm::DirectTiled);
    let peak = peak_scratch(|| chosen.forward_into(&x, &w, None, &mut y).unwrap());
    let slabs = 2 * (64 * 114 * 114 + 64) * 4;
    let tiles = 2 * 6 * ((112 * 114 + 64) + 64 * 9) * 4;
    let bound = slabs + tiles + (1 << 20);
    eprintln!("direct-tiled forward: peak scratch {peak} bytes");
    assert!(
        peak <= bound,
        "direct-tiled forward: {peak} bytes of scratch, bound {bound}"
    );
    // Its weight gradient (64 channels, 576 taps: vectorised over channels) holds, image
    // after image, one padded image, that image's output gradient transposed to rows of
    // 64 channels per padded pixel, and 64 x 576 sums.
    let peak = peak_scratch(|| chosen.backward_weight_into(&x, &gy, &mut gw).unwrap());
    let slab = (64 * 114 * 114 + 16) * 4;
    let transposed = 112 * 114 * 64 * 4;
    let bound = slab + transposed + 64 * 576 * 4 + (1 << 20);
    eprintln!("direct-tiled backward_weight: peak scratch {peak} bytes");
    assert!(
        peak <= bound,
        "direct-tiled backward_weight: {peak} bytes of scratch, bound {bound}"
    );
}

/// The convolutions of ResNet-18 (input shape, weight shape, stride, padding), each once
/// per distinct shape, at batch `n`.
fn resnet18(n: usize) -> Vec<([usize; 4], [usize; 4], usize, usize)> {
    let mut layers = vec![([n, 3, 224, 224], [64, 3, 7, 7], 2, 3)];
    let mut size = 56;
    for (cin, cout) in [(64, 64), (64, 128), (128, 256), (256, 512)] {
        let stride = if cin == cout { 1 } else { 2 };
        layers.push(([n, cin, size, size], [cout, cin, 3, 3], stride, 1));
        size /= stride;
        layers.push(([n, cout, size, size], [cout, cout, 3, 3], 1, 1));
        if stride == 2 {
            layers.push(([n, cin, size * 2, size * 2], [cout, cin, 1, 1], 2, 0));
        }
    }
    layers
}

#[test]
fn repeated_resnet18_training_steps_keep_memory_flat() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    conv2d::set_num_threads(2).unwrap();
    let layers: Vec<_> = resnet18(8)
        .into_iter()
        .map(|(x, w, stride, padding)| {
            let opts = Conv2dOptions::default().stride(stride).padding(padding);
            let plan = Conv2dPlan::new(x, w, &opts).unwrap();
            let x = vec![0.5f32; x.iter().product()];
            let w = vec![0.01f32; w.iter().product()];
            (plan, x, w)
        })
        .collect();
    // Steps: every layer's forward, input gradient and weight gradient, results dropped.
    let step = || {
        for (plan, x, w) in &layers {
            let y = plan.forward(x, w, None).unwrap();
            let gx = plan.backward_input(&y, w).unwrap();
            let gw = plan.backward_weight(x, &y).unwrap();
            assert_eq!((gx.len(), gw.len()), (x.len(), w.len()));
        }
    };
    let steps = 4;
    let mut peaks = vec![];
    let mut live_after = vec![];
    for _ in 0..steps {
        peaks.push(peak_scratch(step));
        live_after.push(LIVE.load(Ordering::SeqCst));
    }
    eprintln!(
        "ResNet-18 convolutions, batch 8, {steps} steps: peak bytes {peaks:?}, live after \
         each {live_after:?}"
    );
    // The first step may leave caches behind (the pool's threads and the GEMM's per-thread
    // packing buffers, 4 MB here); after it nothing grows beyond a pool thread's first use
    // of some lazily made state (tens of bytes; the slack allows 64 KiB), while a buffer
    // leaked per call would be megabytes per step.
    let slack = 64 << 10;
    assert!(
        live_after[1..].iter().all(|&l| l <= live_after[0] + slack),
        "live bytes grew: {live_after:?}"
    );
    assert!(
        peaks[1..].iter().all(|&p| p <= peaks[0] + slack),
        "peaks grew: {peaks:?}"
    );
}
