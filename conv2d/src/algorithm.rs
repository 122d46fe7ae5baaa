//! Which algorithm computes a convolution, chosen from its shape or forced by the caller.

use crate::geometry::Geometry;

/// Multiply-adds up to which [`Algorithm::choose`] takes [`Algorithm::DirectSmall`] where it
/// would take [`Algorithm::DirectTiled`]. Over `conv2d-bench/sweeps/small.json` (22 stride-1
/// layers of 7 Ki to 7 Mi multiply-adds, 1-64 channels on 4x4 to 64x64 maps, one thread,
/// 2026-12-07, an Intel Xeon with AVX-512, and the same CPU with `CONV2D_ISA=avx2`):
/// `direct-small` ran every layer up to 147 Ki multiply-adds 1.11-3.0x as fast as
/// `direct-tiled` on AVX-512 and 1.07-3.3x on AVX2, a 157 Ki layer of 8 output channels
/// 2.1x and 0.93-1.00x, a 295 Ki one of 4 input channels 1.46x and 0.95x, and lost from
/// 451 Ki on layers of 16 and more channels (0.55-0.79x on both), winning beyond that only
/// on layers of 3-8 input channels. The bound does not depend on the CPU, so that a plan's
/// choice does not either.
pub(crate) const SMALL_WORK: usize = 1 << 18;

/// How a plan computes the forward convolution (and, for a transposed convolution, its
/// input gradient, which is the same computation).
///
/// Plans choose from the shape; [`Conv2dPlan::with_algorithm`](crate::Conv2dPlan::with_algorithm)
/// forces one (every algorithm is exact to the same tolerance; they may differ in the last
/// bits, as summation orders differ).
///
/// # Example
/// ```
/// use conv2d::{Algorithm, Conv2dOptions, Conv2dPlan};
///
/// let depthwise = Conv2dPlan::new([1, 32, 28, 28], [32, 1, 3, 3], &Conv2dOptions::default().groups(32))?;
/// assert_eq!(depthwise.algorithm(), Algorithm::Direct);
/// let dense = Conv2dPlan::new([1, 64, 28, 28], [64, 64, 3, 3], &Conv2dOptions::default())?;
/// assert_eq!(dense.algorithm(), Algorithm::DirectTiled);
/// let narrow = Conv2dPlan::new([1, 64, 28, 28], [256, 64, 1, 1], &Conv2dOptions::default())?;
/// assert_eq!(narrow.algorithm(), Algorithm::DirectTiled);
/// let wide = Conv2dPlan::new([1, 256, 28, 28], [64, 256, 1, 1], &Conv2dOptions::default())?;
/// assert_eq!(wide.algorithm(), Algorithm::Im2colGemm);
/// let atrous = Conv2dOptions::default().padding(6).dilation(6);
/// let aspp = Conv2dPlan::new([1, 256, 65, 65], [256, 256, 3, 3], &atrous)?;
/// assert_eq!(aspp.algorithm(), Algorithm::ImplicitGemm);
/// let halving = Conv2dOptions::default().stride(2).padding(1);
/// let down = Conv2dPlan::new([1, 64, 56, 56], [128, 64, 3, 3], &halving)?;
/// assert_eq!(down.algorithm(), Algorithm::DirectTiled);
/// let narrow_down = Conv2dPlan::new([1, 32, 112, 112], [64, 32, 3, 3], &halving)?;
/// assert_eq!(narrow_down.algorithm(), Algorithm::ImplicitGemm);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Direct convolution, one output row and one tap at a time: the simplest kernel, and
    /// the strided input gradient of [`Algorithm::Direct`].
    DirectRows,
    /// Patches of a bounded block of output pixels unrolled into a column buffer, then one
    /// GEMM with the group's weight panel: best for many channels (a stride-1 1x1 kernel
    /// reads the input planes in place, forward and for the weight gradient). Scratch: at
    /// most 128 Ki elements of column buffer per task, plus the GEMM's packing buffers. A
    /// forward pass whose taps never overlap, and its input gradient, run on whole patch
    /// planes (see [`Algorithm::ImplicitGemm`]); the forward pass here always with the
    /// `gemm` crate.
    Im2colGemm,
    /// Direct convolution with the sums in registers: the input rows a band of output rows
    /// reads, zero-padded and split by stride phase, then 64 outputs at a time, tap after
    /// tap (for `f32` sums on AVX2/AVX-512: two rows at a time, fused multiply-adds): best
    /// for depthwise and small grouped convolutions. Its weight gradient reduces vectors of
    /// partial sums over the same slabs (`f32` on AVX-512: nine taps' sums in registers,
    /// fused multiply-adds); its input gradient, with stride 1, is
    /// the same kernel on the flipped weight (other strides run [`Algorithm::DirectRows`]).
    /// Scratch: per task, the padded rows of its band in each input channel of the group.
    /// Where those rows would be mostly padding no tap reads (a huge stride, padding or
    /// dilation), [`Algorithm::Im2colGemm`] runs instead.
    Direct,
    /// The forward pass of a convolution with at least 3 output channels per group, as
    /// register tiles of 8 output channels by 48 pixels (6 by 16 on AVX2) over a band's
    /// input rows,
    /// zero-padded and split by stride phase of rows and of columns (each tap a shifted
    /// window of one phase plane, for any stride), summed with fused multiply-adds in
    /// blocks of 16 input channels; a pointwise one (1x1, unpadded, any stride) as a GEMM
    /// of the same tiles over the input planes as they are (strided ones subsampled
    /// first), in blocks of 64 input channels: for `f32`, `f16` and `bf16` (which sum in
    /// `f32`) and `f64` on CPUs with AVX2 or AVX-512. With AVX-512, a layer whose output rows
    /// and columns are its input's divided by the stride (`padding = "same"` and the like
    /// at stride 1, half the kernel's reach when strided; padding narrower than the input)
    /// reads input rows stored without padding columns (split into stride phases), the
    /// terms that would read one masked out of the fused multiply-add, and sums straight
    /// into the output; where an output is not finite (where a masked term could have made `0 *
    /// inf = NaN`), the padded tiles recompute the call. Its stride-1 input gradient is the
    /// same kernel on the flipped weight, and its stride-1 weight gradient (`f32`, `f16`,
    /// `bf16`; for a finite input) tiles of 4 output channels by 6 taps of dot products
    /// over the same padded rows, or, with 64 or more output channels per group and 512 or
    /// more taps, tiles of 64 output channels (vectors, the output gradient transposed) by
    /// 6 taps (broadcast); a pointwise weight gradient is `im2col-gemm`'s single GEMM of the
    /// output gradient with the input planes read in place. Every other pass, type, shape
    /// or CPU runs what the shape would be given without it ([`Algorithm::Direct`] or
    /// [`Algorithm::Im2colGemm`]). Scratch:
    /// the group's padded input rows (at most 1 Mi elements per band, 64 Ki when strided
    /// (1 MiB in the masked tiles),
    /// or one output row's worth where that is more) and per task a
    /// 6-channel output block of the band; pointwise, the group's subsampled input planes
    /// when strided (or not whole vectors of 16).
    ///
    /// `bf16` on CPUs with AMX-BF16 (16 or more output channels per group, zero padding, and
    /// with stride 1 16 or more input channels per group, else 32 or more terms per output;
    /// chosen by this algorithm or [`Algorithm::ImplicitGemm`]): the forward pass, and the
    /// stride-1 input gradient, run on the matrix unit instead, `tdpbf16ps` summing exact
    /// products into `f32` tiles of 32 output channels by 32 pixels. With stride 1 on maps
    /// of more than 128 padded pixels the input is padded into a slab of channel pairs read
    /// as shifted windows (as above) and the weights are packed per call into tiles of 32
    /// input channels per tap; otherwise the weights are read in place (padded to whole
    /// tiles where needed) and the input unrolled (an im2col, any stride or dilation).
    /// Subnormal `bf16` operands read as zero there, and sums below `f32::MIN_POSITIVE` as
    /// zero (as PyTorch's oneDNN on those CPUs). AMD CPUs with AVX512-BF16 but no AMX (Zen 4
    /// and 5) run those layers with 14x14 or more output pixels per image (or input times
    /// output channels per group of 256 x 256 or more) and at most a quarter of their work
    /// padded into blocks of 32 channels on `vdpbf16ps` dot products instead (products and
    /// flushing as on the matrix unit); Intel CPUs without AMX, whose dot products run at
    /// half the FLOPs of their `f32` multiply-adds, widen `bf16` to `f32`. Scratch: the
    /// packed weights (or the unrolled input), the group's padded input and per task 32 rows
    /// of sums.
    DirectTiled,
    /// The forward pass as an implicit GEMM on `direct`'s padded input rows (split by
    /// stride phase when strided), vectorised over output channels: register tiles of 6
    /// output pixels by up to 64 output channels, each (input channel, tap) a step of the
    /// reduction, the weights packed per call into panels of 64 channels, the reduction in
    /// blocks of whole input channels (at most 72 steps). It computes no padding column, so
    /// it suits dilated maps, where [`Algorithm::DirectTiled`]'s windows compute many, and
    /// strided ones, with no column buffer (on AVX2, tiles of 6 pixels by 16 channels). For
    /// `f32` on CPUs with AVX-512 or AVX2, 16 or more output channels per group; its
    /// stride-1 input gradient is the same kernel on the flipped weight, and its strided input gradient (a strided transposed convolution's
    /// forward pass; finite weights, 16 or more input channels per group, at most 64
    /// phases) splits into stride phases: the input-gradient pixels of one phase receive
    /// the same taps, each from one output-gradient pixel, so each phase is an implicit
    /// GEMM over the zero-padded output gradient (no zero insertion, no col2im). Everything
    /// else (weight gradient, other types, CPUs) runs [`Algorithm::DirectTiled`]'s choice.
    /// Scratch: the packed weights (the weight's size, channels rounded up to 16), the
    /// group's padded input rows (as `direct-tiled`; the padded output gradient for the
    /// phases) and per worker the sums of a task's pixels by 64 channels.
    ///
    /// A forward pass whose taps never overlap (no padding, a dilated kernel no wider than
    /// its stride, 64 or more output channels per group: 2x2 stride-2 downsampling,
    /// "patchify" stems), with this algorithm or [`Algorithm::Im2colGemm`], is a pointwise
    /// GEMM on the input's patches instead: each image's patches copied once into a plane
    /// per (input channel, kernel row, kernel column), no more values than the image holds,
    /// the images in parallel, then the 1x1 convolution on those planes as a plan would run
    /// it (`direct-tiled`'s tiles up to 64 terms per output, else the `gemm` crate). With at
    /// most 8 input channels per group (a first layer), its weight gradient runs on the same
    /// planes too, image by image (`im2col-gemm`'s pointwise weight gradient, each image's
    /// added in order), and its input gradient (the forward pass of such a transposed
    /// convolution, U-Net's 2x2 stride-2 upsampling) is the 1x1 convolution of the output
    /// gradient with the weight transposed, into the input gradient's patch planes, then
    /// written out: each input-gradient pixel receives one tap at most, so that nothing is
    /// summed twice. Scratch: the patch planes of each image in flight.
    ImplicitGemm,
    /// The forward pass of a small convolution (at most 256 Ki multiply-adds where the shape
    /// would take [`Algorithm::DirectTiled`]) read straight from the caller's buffers:
    /// output row by output row, the sums of up to 8 output channels by 48 pixels (6 by 16
    /// on AVX2) in registers, every term in the weight's order, padding terms as zeros (so
    /// non-finite values come out as PyTorch's), nothing staged, allocated or shared out to
    /// other threads: a call costs little more than its multiply-adds (the 1x3x8x8 by
    /// 4x3x3x3 call 2.3-2.8x as fast as `direct-tiled`'s). For `f32`, `f16` and `bf16`
    /// (which sum in `f32`) on CPUs with AVX2 or AVX-512, column stride 1 and at most 16
    /// kernel columns; its stride-1 input gradient (finite weights) is the same kernel on the
    /// flipped weight. Every other pass, type, shape or CPU (and `bf16` on AMX) runs
    /// [`Algorithm::DirectTiled`]. Scratch: none (the flipped weight for the input
    /// gradient).
    DirectSmall,
}

impl Algorithm {
    /// Every algorithm, for callers that try each one.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 3, 8, 8], [6, 3, 3, 3], &Default::default())?;
    /// let (x, w) = (vec![1.0f32; 192], vec![0.5f32; 162]);
    /// let first = plan.forward(&x, &w, None)?;
    /// for algorithm in conv2d::Algorithm::ALL {
    ///     let y = plan.clone().with_algorithm(algorithm).forward(&x, &w, None)?;
    ///     assert_eq!(y, first); // sums of 27 halves: exact in any order
    /// }
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub const ALL: [Algorithm; 6] = [
        Algorithm::DirectRows,
        Algorithm::Im2colGemm,
        Algorithm::Direct,
        Algorithm::DirectTiled,
        Algorithm::ImplicitGemm,
        Algorithm::DirectSmall,
    ];

    /// A short name for tables and logs.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::Algorithm::Im2colGemm.name(), "im2col-gemm");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::DirectRows => "direct-rows",
            Algorithm::Im2colGemm => "im2col-gemm",
            Algorithm::Direct => "direct",
            Algorithm::DirectTiled => "direct-tiled",
            Algorithm::ImplicitGemm => "implicit-gemm",
            Algorithm::DirectSmall => "direct-small",
        }
    }

    /// The choice for a shape. `direct-tiled` wherever it applies and the kernel has more
    /// than one tap: a sweep of dense and grouped stride-1 shapes (16 to 512 channels, maps
    /// of 7 to 112 pixels, one thread, `--algorithm` in `conv2d-bench`) found it 1.1-5x
    /// faster than `im2col-gemm` with 3x3 kernels, about even (0.97-0.99x) at 7x7 maps of
    /// 256-512 channels; over `conv2d-bench/sweeps/strided.json` (AVX2, one thread,
    /// 2026-12-02) its phase planes ran the 7x7 stem 1.5-2.0x, 3x3 stride-2 layers
    /// 0.93-1.6x and 2x2 stride-2 ones 0.98-1.01x as fast as `im2col-gemm`. Pointwise (1x1,
    /// unpadded) layers take it when strided or with at most 64 input channels per group:
    /// over `conv2d-bench/sweeps/pointwise.json` it beat `im2col-gemm` 1.2-3.2x on every
    /// strided layer and (one thread) 1.15-1.34x on four of the six stride-1 layers up to
    /// 64 channels (0.88-0.93x on the other two), and lost 0.7-0.9x on stride 1 from 128
    /// channels, where the `gemm` crate reads the input in place. Dilated stride-1 layers on
    /// maps of 4096 or more pixels (with 128 or more input channels per group; 256 or more,
    /// and 144 pixels, where `direct-tiled`'s masked tiles do not apply), and strided
    /// layers with 144 or more output pixels an image (or
    /// 2048 in all), take `implicit-gemm` (32 or more output channels per group; see its
    /// sweeps in the README), but for the strided layers `direct-tiled`'s masked tiles
    /// take: taps overlapping along both axes, and 128 or more output or at most 8 input
    /// channels per group (the 7x7 stem). Shapes that would take `direct-tiled` with at
    /// most [`SMALL_WORK`] multiply-adds take `direct-small`.
    pub(crate) fn choose(g: &Geometry) -> Self {
        let taps = g.kh.saturating_mul(g.kw);
        use crate::kernels::direct::{fits, implicit_gemm_wins, pointwise, suits_tiles};
        let strided = g.stride.h > 1 || g.stride.w > 1;
        let pointwise_wins = pointwise(g) && (strided || g.cin_per_group() <= 64);
        if implicit_gemm_wins(g) && fits(g) {
            Algorithm::ImplicitGemm
        } else if suits_tiles(g) && (taps > 1 || pointwise_wins) && fits(g) {
            match g.work() <= SMALL_WORK {
                true => Algorithm::DirectSmall,
                false => Algorithm::DirectTiled,
            }
        } else {
            Self::untiled(g)
        }
    }

    /// Multiply-adds below which a call of this algorithm runs on the caller's thread, for
    /// shape `g`. `conv2d-bench` over `sweeps/threads.json` (27 small layers, 2026-12-01)
    /// with 1 and 2 threads, every call forced onto the pool: dense 3x3 layers of 0.6-4 M
    /// multiply-adds ran 0.54-0.97x as fast on two threads as on one, of 7 M and more
    /// 1.20-1.53x, so the tiled and GEMM kernels (a multiply-add in a fraction of a cycle)
    /// take a second thread from 4 Mi; `direct-tiled`'s pointwise GEMM (no slab to pad) ran
    /// 0.75-0.80x at 0.8 M and 1.34-1.50x from 1.6 M, so it takes one from 1 Mi
    /// (`im2col-gemm`'s pointwise layers 0.96-1.00x at 2.4-2.6 M, 1.36x at 3.2 M); depthwise
    /// (`direct`, several cycles per multiply-add) 0.99-1.04x at 7 K and 1.22-1.47x from
    /// 14 K, so `direct` takes it from 8 Ki.
    fn inline_below(self, g: &Geometry) -> usize {
        match self {
            Algorithm::DirectTiled if crate::kernels::direct::pointwise(g) => 1 << 20,
            Algorithm::DirectTiled | Algorithm::ImplicitGemm | Algorithm::Im2colGemm => 1 << 22,
            Algorithm::Direct | Algorithm::DirectRows => 1 << 13,
            // Its kernel runs on the caller's thread whatever the size.
            Algorithm::DirectSmall => usize::MAX,
        }
    }

    /// Runs `op`, a call of this algorithm on shape `g`, with the call's threads: on the
    /// caller's thread alone below [`inline_below`](Self::inline_below)'s work.
    pub(crate) fn install<R>(self, g: &Geometry, op: impl FnOnce() -> R) -> R {
        crate::threading::install(g.work(), self.inline_below(g), op)
    }

    /// The choice for a transposed convolution's forward pass (the input gradient of
    /// `g`): `implicit-gemm`'s phase split where strided with a kernel larger than the
    /// stride, 32 or more output channels per group and as many input pixels in all as
    /// input channels per group (sweep `conv2d-bench/sweeps/transposed.json`); with stride 1,
    /// `direct-tiled` (`direct-small` up to [`SMALL_WORK`] multiply-adds), whose input
    /// gradient is its forward kernel on the flipped weight, where the flipped convolution
    /// has at least 3 output channels per group (over 33 stride-1 transposed layers of 1 to
    /// 512 channels on 4x4-64x64 maps, 1x1 to 7x7 kernels, dilated and grouped, one thread,
    /// Intel Xeon with AVX-512, 2026-12-07: on the 32 with 3+ output channels `direct-tiled`
    /// 1.14-7x as fast as the `im2col-gemm` or `direct` chosen before but for a 4x4 map of
    /// 64 channels (0.91x), `direct-small` 1.76-11.6x on those up to 147 Ki multiply-adds;
    /// not measured on an AVX2-only CPU); else [`Algorithm::untiled`]'s choice.
    pub(crate) fn choose_transposed(g: &Geometry) -> Self {
        use crate::kernels::direct::{flipped_shape, subpixel_wins, suits_tiles};
        if subpixel_wins(g) {
            Algorithm::ImplicitGemm
        } else if flipped_shape(g).is_some_and(|f| suits_tiles(&f)) {
            match g.work() <= SMALL_WORK {
                true => Algorithm::DirectSmall,
                false => Algorithm::DirectTiled,
            }
        } else {
            Self::untiled(g)
        }
    }

    /// The choice among the other algorithms: a GEMM pays off once the weight panel has
    /// enough rows (output channels per group) and columns (terms per output), or when
    /// `direct`'s staged rows would not [`fit`](crate::kernels::direct::fits). Also what
    /// `direct-tiled` runs where it does not apply.
    pub(crate) fn untiled(g: &Geometry) -> Self {
        let terms = g.cin_per_group().saturating_mul(g.kh).saturating_mul(g.kw);
        if (g.cout_per_group() >= 8 && terms >= 16) || !crate::kernels::direct::fits(g) {
            Algorithm::Im2colGemm
        } else {
            Algorithm::Direct
        }
    }
}
