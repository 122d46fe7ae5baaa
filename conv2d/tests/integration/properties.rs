//! Property tests: the fast paths against the oracle on random shapes, adjointness of
//! conv2d and conv_transpose2d, finite-difference gradients, and thread-count independence.

use conv2d::{
    conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward, Algorithm, Conv2dOptions,
    Conv2dPlan, ConvTranspose2dOptions, ConvTranspose2dPlan, Element, GradMask, Padding,
    PaddingMode,
};

const ALGORITHMS: [Algorithm; 6] = Algorithm::ALL;
use crate::support::reference::{self, ConvSpec, Mode};
use crate::support::{check_close, random_vec, to_tensor};
use half::{bf16, f16};
use ndarray::{Array1, Array4};
use num_complex::Complex;
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A random, valid conv2d problem.
#[derive(Debug, Clone)]
struct Problem {
    n: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: (usize, usize),
    /// `padding = "same"` (`pad` unused).
    same: bool,
    mode: u8,
    bias: bool,
    seed: u64,
}

fn problems() -> impl Strategy<Value = Problem> {
    (
        (0usize..3, 1usize..4, 1usize..4, 1usize..4),
        (1usize..12, 1usize..40, (1usize..5, 1usize..5)),
        (
            (1usize..4, 1usize..4),
            (1usize..4, 1usize..4),
            (0usize..4, 0usize..4),
        ),
        (0u8..4, any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                (n, groups, cin_g, cout_g),
                (h, w, k),
                (stride, dilation, pad),
                (mode, bias, seed),
            )| {
                Problem {
                    n,
                    groups,
                    cin_g,
                    cout_g,
                    h,
                    w,
                    k,
                    stride,
                    dilation,
                    pad,
                    mode,
                    same: false,
                    bias,
                    seed,
                }
            },
        )
        .prop_filter("kernel must fit the padded input", |p| {
            p.h + 2 * p.pad.0 > p.dilation.0 * (p.k.0 - 1)
                && p.w + 2 * p.pad.1 > p.dilation.1 * (p.k.1 - 1)
        })
}

/// Stride-1 problems with `padding = "same"`, kernels 1-5 columns wide and column
/// dilations 1-3 (an odd reach pads one more column on the right), maps narrower and wider
/// than a vector: `direct-tiled`'s masked AVX-512 tiles (output rows as wide as the input's).
fn same_problems() -> impl Strategy<Value = Problem> {
    (tile_problems(), 1usize..6, 1usize..4).prop_map(|(mut p, kw, dilation)| {
        p.same = true;
        p.k.1 = kw;
        p.dilation.1 = dilation;
        p
    })
}

/// Stride-1 problems with `padding = "same"`, kernels of 1-5 rows dilated 1-7 times, on
/// maps 16-55 pixels wide: `direct-tiled`'s masked AVX-512 tiles, whose runs of vectors
/// within the rows where a kernel row reads the padding leave that row's taps out (most
/// maps have such runs in `f64`, 24 pixels, and the wider ones in `f32`, 48).
fn dilated_row_problems() -> impl Strategy<Value = Problem> {
    (tile_problems(), (1usize..6, 1usize..8), 16usize..56).prop_map(|(mut p, (kh, d), w)| {
        p.same = true;
        p.k.0 = kh;
        p.dilation.0 = d;
        p.w = w;
        p
    })
}

/// Strided problems whose output rows and columns are the input's divided by the stride
/// (strides 2-3, or 1 on one axis; each side padded by half the kernel's reach, as in
/// ResNet's 7x7 stem), kernels up to 7x7, dilations 1-2, maps narrower and wider than a
/// vector: `direct-tiled`'s masked AVX-512 tiles over the input's phase planes.
fn strided_same_problems() -> impl Strategy<Value = Problem> {
    let shapes = (
        (1usize..8, 1usize..8),
        (1usize..4, 2usize..4),
        (1usize..3, 1usize..3),
    );
    (
        shaped_problems(1..40, 3..15, 1..2, 1..2),
        shapes,
        (1usize..10, 1usize..24),
    )
        .prop_map(|(mut p, (k, stride, dilation), (oh, ow))| {
            // Either axis may take the stride 1.
            p.stride = if p.seed % 2 == 0 {
                stride
            } else {
                (stride.1, stride.0)
            };
            p.k = k;
            p.dilation = dilation;
            p.h = oh * p.stride.0;
            p.w = ow * p.stride.1;
            p.pad = ((k.0 - 1) * dilation.0 / 2, (k.1 - 1) * dilation.1 / 2);
            p
        })
        .prop_filter("kernel must fit the padded input", |p| {
            p.h + 2 * p.pad.0 > p.dilation.0 * (p.k.0 - 1)
                && p.w + 2 * p.pad.1 > p.dilation.1 * (p.k.1 - 1)
        })
}

/// Shapes whose taps never overlap (no padding, a dilated kernel no wider than its stride,
/// input rows and columns past the last patch) with 64-71 output channels per group: the
/// GEMM algorithms' patch planes, over one to two images and groups.
fn patch_problems() -> impl Strategy<Value = Problem> {
    let patches = (
        (1usize..5, 1usize..5),
        (1usize..3, 1usize..3),
        (0usize..2, 0usize..2),
    );
    (
        shaped_problems(1..12, 64..72, 5..6, 1..2),
        patches,
        (1usize..8, 1usize..8),
    )
        .prop_map(|(mut p, (k, dilation, extra), (oh, ow))| {
            p.k = k;
            p.dilation = dilation;
            p.pad = (0, 0);
            p.stride = (
                (k.0 - 1) * dilation.0 + 1 + extra.0,
                (k.1 - 1) * dilation.1 + 1 + extra.1,
            );
            p.h = oh * p.stride.0 + p.seed as usize % p.stride.0;
            p.w = ow * p.stride.1 + (p.seed / 7) as usize % p.stride.1;
            p
        })
        .prop_filter("a kernel of several taps", |p| p.k.0 * p.k.1 > 1)
}

/// A random stride-1 problem with several output channels per group and up to 35 input
/// channels: `direct-tiled`'s register tiles of output channels, partial last tiles, sums
/// carried across blocks of 16 input channels, and (on maps of 512 or more pixels) its
/// weight-gradient tiles.
fn tile_problems() -> impl Strategy<Value = Problem> {
    shaped_problems(1..36, 3..15, 1..40, 1..2)
}

/// Column-stride-1 shapes with 1-19 output channels per group (`direct-small`'s tiles of 8,
/// 6, 4, 2 and 1 channels), rows of 1-69 outputs (runs of 1-3 vectors and a shorter last
/// run), kernels up to 7 columns wide, row strides 1 and 2, on at most 12 rows.
fn small_problems() -> impl Strategy<Value = Problem> {
    (shaped_problems(1..6, 1..20, 1..70, 1..3), 1usize..8)
        .prop_map(|(mut p, kw)| {
            p.stride.1 = 1;
            p.k.1 = kw;
            p.h = p.h.min(12);
            p
        })
        .prop_filter("kernel must fit the padded input", |p| {
            p.h + 2 * p.pad.0 > p.dilation.0 * (p.k.0 - 1)
                && p.w + 2 * p.pad.1 > p.dilation.1 * (p.k.1 - 1)
        })
}

/// Shapes with 16-80 output channels per group (whole and partial vectors and panels of
/// 64), strides 1 and 2: `implicit-gemm`'s tiles of 6 pixels (short last tiles),
/// reduction blocks and packed panels, dilated, padded and strided.
fn implicit_problems() -> impl Strategy<Value = Problem> {
    shaped_problems(1..24, 16..81, 1..14, 1..3)
}

/// Strided shapes with 16-80 input channels per group (the input gradient's channels):
/// `implicit-gemm`'s stride phases (with no taps, one, or several), partial panels and
/// bands of rows, through the input gradient and the transposed convolution.
fn subpixel_problems() -> impl Strategy<Value = Problem> {
    shaped_problems(16..81, 1..20, 1..14, 2..4)
}

/// Stride-1 shapes with 16-80 input and output channels per group: on CPUs with AMX, the
/// `bf16` forward pass's tiles (partial blocks of 32 channels, short last pixel runs,
/// dilated and padded windows).
fn amx_problems() -> impl Strategy<Value = Problem> {
    shaped_problems(16..81, 16..81, 1..20, 1..2)
}

/// Stride-1 shapes with 32 or 64 input and 32 to 96 output channels per group on maps up to
/// 11x11: on CPUs with AMX, the `bf16` tiles reading the weights in place (whole blocks of
/// 32 terms and channels) over the unrolled input.
fn amx_in_place_problems() -> impl Strategy<Value = Problem> {
    shaped_problems(16..81, 16..81, 1..12, 1..2).prop_map(|mut p| {
        p.cin_g = 32 * (1 + p.cin_g % 2);
        p.cout_g = 32 * (1 + p.cout_g % 3);
        p
    })
}

/// Strided shapes with 16-60 output channels per group: on CPUs with AMX, the `bf16` tiles
/// over the unrolled input (any stride and dilation, weights padded to whole tiles).
fn amx_strided_problems() -> impl Strategy<Value = Problem> {
    shaped_problems(4..40, 16..61, 2..20, 2..4)
}

/// Shapes of one image and group, 30-32 input and 30-32 or 62-64 output channels (at most
/// a quarter padded into blocks of 32) on 28x28 to 33x33 maps, stride 1 or 2 (14x14 outputs
/// and more), a third of them 256 channels on 5x5 to 8x8 maps, and a fifth of the others
/// stride 1 with `padding = "same"`: on CPUs with AVX512-BF16 but no AMX, the `bf16`
/// forward pass and both gradients on the dot-product kernel (see `kernels::direct::amx`),
/// small maps over the unrolled input, outputs as wide as the input on rows without
/// padding columns (uneven ones too, with kernels of even width).
fn bf16_dot_problems() -> impl Strategy<Value = Problem> {
    shaped_problems(30..33, 30..33, 28..34, 1..3).prop_map(|mut p| {
        (p.n, p.groups) = (1, 1);
        p.cout_g += 32 * (p.seed as usize % 2);
        if p.seed % 3 == 0 {
            (p.cin_g, p.cout_g) = (256, 256);
            (p.h, p.w) = (5 + p.h % 4, 5 + p.w % 4);
        } else if p.seed % 5 == 1 {
            (p.stride, p.same) = ((1, 1), true);
        }
        p
    })
}

/// Stride-2 and 3 shapes with 16-48 channels per group, kernels as large as the stride or
/// larger, dilation 1 and paddings their phases need not crop: on CPUs with AMX, the
/// `bf16` strided input gradient and transposed convolution in stride phases on the tiles.
fn amx_phase_problems() -> impl Strategy<Value = Problem> {
    (shaped_problems(16..49, 16..49, 2..14, 2..4), 0usize..3)
        .prop_map(|(mut p, k)| {
            p.dilation = (1, 1);
            p.k = (p.stride.0 + k % 2, p.stride.1 + k / 2);
            p.pad = (p.pad.0 % p.k.0.saturating_sub(1).max(1), p.pad.1 % 2);
            p
        })
        .prop_filter("kernel must fit the padded input", |p| {
            p.h + 2 * p.pad.0 >= p.k.0 && p.w + 2 * p.pad.1 >= p.k.1
        })
}

/// `conv_transpose2d(x, w) + b` with `algorithm` forced against the reference (the
/// problem's `cin_g` the transposed convolution's input channels per group).
fn transposed_plan_matches_reference<T: Element>(
    p: &Problem,
    algorithm: Algorithm,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0x7a);
    let cin = p.cin_g * p.groups;
    let (x_shape, w_shape) = ([p.n, cin, p.h, p.w], [cin, p.cout_g, p.k.0, p.k.1]);
    let x = random_vec::<T>(x_shape.iter().product(), &mut rng);
    let w = random_vec::<T>(w_shape.iter().product(), &mut rng);
    let b = random_vec::<T>(p.cout_g * p.groups, &mut rng);
    let opts = ConvTranspose2dOptions::default()
        .stride(p.stride)
        .padding(p.pad)
        .groups(p.groups);
    let Ok(plan) = ConvTranspose2dPlan::new(x_shape, w_shape, &opts) else {
        return Ok(()); // an empty output, rejected as PyTorch does
    };
    let [_, _, oh, ow] = plan.output_shape();
    let y = plan
        .with_algorithm(algorithm)
        .forward(&x, &w, p.bias.then_some(&b[..]))
        .map_err(|e| e.to_string())?;
    let bt = to_tensor(&[b.len()], &b);
    let oracle = reference::conv_transpose2d(
        &to_tensor(&x_shape, &x),
        &to_tensor(&w_shape, &w),
        p.bias.then_some(&bt),
        [p.stride.0, p.stride.1],
        [p.pad.0, p.pad.1],
        [1, 1],
        p.groups,
        [oh, ow],
        None,
    );
    check_close(
        &format!("{} transposed", algorithm.name()),
        &y,
        &oracle.output,
    )
}

/// Random problems with `cin_g` input and `cout_g` output channels per group, maps of
/// `map` pixels a side and strides in `strides`, kernels up to 3x3, dilations up to 2,
/// paddings up to 2.
fn shaped_problems(
    cin_g: std::ops::Range<usize>,
    cout_g: std::ops::Range<usize>,
    map: std::ops::Range<usize>,
    strides: std::ops::Range<usize>,
) -> impl Strategy<Value = Problem> {
    (
        (1usize..3, 1usize..3, cin_g, cout_g),
        (map.clone(), map, (1usize..4, 1usize..4)),
        ((1usize..3, 1usize..3), (0usize..3, 0usize..3)),
        ((strides.clone(), strides), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((n, groups, cin_g, cout_g), (h, w, k), (dilation, pad), (stride, bias, seed))| {
                Problem {
                    n,
                    groups,
                    cin_g,
                    cout_g,
                    h,
                    w,
                    k,
                    stride,
                    dilation,
                    pad,
                    mode: 0,
                    same: false,
                    bias,
                    seed,
                }
            },
        )
        .prop_filter("kernel must fit the padded input", |p| {
            p.h + 2 * p.pad.0 > p.dilation.0 * (p.k.0 - 1)
                && p.w + 2 * p.pad.1 > p.dilation.1 * (p.k.1 - 1)
        })
}

/// Depthwise-style 3x3 shapes (one input channel per group), strides 1 and 2, padding 0-2,
/// 3-11 rows of up to 299 columns (at stride 2 up to nine vectors of 16 outputs a row, so
/// that strips of four vectors reach neither edge of the row; few rows keep the oracle
/// cheap under valgrind), a third of them rows of whole vectors of
/// 16 outputs at stride 1 (where a window's last lane meets the row's end), most others
/// ending in a vector of 8 or an overlapping one of 16: `direct`'s row kernels for stacked
/// taps and its kernels reading the input planes with masked edges.
fn depthwise_problems() -> impl Strategy<Value = Problem> {
    shaped_problems(1..2, 1..4, 1..300, 1..3).prop_map(|mut p| {
        p.k = (3, 3);
        p.dilation = (1, 1);
        p.h = 3 + p.h % 9;
        p.w = match p.w % 3 {
            0 => (16 * (1 + p.w % 8) + 2).saturating_sub(2 * p.pad.1).max(3),
            _ => p.w.max(3),
        };
        p
    })
}

/// Depthwise shapes (one input and one output channel per group) of 1-40 groups on maps of
/// 1-24 rows and columns, kernels of 1-7 by 1-7, strides and dilations 1-2, padding 0-2,
/// one or two images: `direct`'s forward pass and weight gradient on AVX-512 and AVX2
/// vectorised over blocks of 16 channels (a last block of fewer), their planes transposed
/// into one zero-padded plane of pixels: every shape but the 3x3 ones the per-plane kernels
/// take, and on AVX-512 those of 8 or more channels on maps of up to 64 output pixels
/// (forward, and the stride-1 input gradient, a forward pass) or 160 (weight gradient).
fn depthwise_channel_problems() -> impl Strategy<Value = Problem> {
    let shapes = shaped_problems(1..2, 1..2, 1..25, 1..3);
    (shapes, 1usize..41, (1usize..8, 1usize..8))
        .prop_map(|(mut p, groups, k)| {
            p.groups = groups;
            p.k = k;
            p
        })
        .prop_filter("kernel must fit the padded input", |p| {
            p.h + 2 * p.pad.0 > p.dilation.0 * (p.k.0 - 1)
                && p.w + 2 * p.pad.1 > p.dilation.1 * (p.k.1 - 1)
        })
}

/// 3x3 stride-1 shapes padded by one column on each side, on maps narrower than a vector
/// (1-15 columns, 3-20 rows, 0-2 padding rows): `direct`'s weight gradient under 9 columns
/// (13 on maps no taller than wide), and with one input channel per group under 8 columns
/// its forward pass, on AVX-512 as one flat run of pixels, each tap's lanes masked where
/// they read a padding row or column (the lanes of a vector span several rows), the
/// weight gradient's vectors clear of the padding rows with two masks for the nine taps.
fn flat_problems() -> impl Strategy<Value = Problem> {
    shaped_problems(1..3, 1..4, 1..21, 1..2).prop_map(|mut p| {
        p.k = (3, 3);
        p.dilation = (1, 1);
        p.pad.1 = 1;
        p.h = p.h.max(3);
        p.w = 1 + p.w % 15;
        p
    })
}

/// Pointwise shapes (1x1, unpadded, strides 1 to 3): `direct-tiled`'s GEMM on the input
/// planes, staged when strided or not whole vectors, its sums carried across blocks of 64
/// input channels, planes split into chunks when the channel tiles are few.
fn pointwise_problems() -> impl Strategy<Value = Problem> {
    (
        (1usize..3, 1usize..3, 1usize..150, 3usize..15),
        (1usize..30, 1usize..30, (1usize..4, 1usize..4)),
        (any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((n, groups, cin_g, cout_g), (h, w, stride), (bias, seed))| Problem {
                n,
                groups,
                cin_g,
                cout_g,
                h,
                w,
                k: (1, 1),
                stride,
                dilation: (1, 1),
                pad: (0, 0),
                mode: 0,
                same: false,
                bias,
                seed,
            },
        )
}

/// Stride-1 pointwise shapes whose planes are whole vectors (16 or 32 pixels wide): a
/// misaligned input is read in place from its first pixel on a line, the pixels before it
/// and past the last whole vector after it staged (the input starts at every offset).
fn whole_vector_pointwise_problems() -> impl Strategy<Value = Problem> {
    (pointwise_problems(), 1usize..3).prop_map(|(p, vectors)| Problem {
        w: 16 * vectors,
        stride: (1, 1),
        ..p
    })
}

/// One image of a stride-1 pointwise shape whose planes are whole KiB and of 4096 or 4608
/// pixels (four chunks of pixels, or a half chunk more) with 32-47 input channels and
/// 3-8 output channels (a whole tile of the AVX2 kernel and partial ones): the pointwise
/// tiles' copy of rows that would alias in L1.
fn aliasing_pointwise_problems() -> impl Strategy<Value = Problem> {
    let heights = prop::sample::select(vec![64usize, 72]);
    (pointwise_problems(), heights, 32usize..48).prop_map(|(p, h, cin_g)| Problem {
        n: 1,
        groups: 1,
        h,
        w: 64,
        cin_g,
        cout_g: p.cout_g.min(8),
        stride: (1, 1),
        ..p
    })
}

/// Stride-1 shapes with 32-48, 64-72, 80-100 or 114-140 output channels and 15-71 input
/// channels per group, 3x3: `direct-tiled`'s weight gradient vectorised over output
/// channels (tiles of 64, last tiles of 1 to 4 vectors, partial vectors, tap tiles).
fn wide_problems() -> impl Strategy<Value = Problem> {
    (
        (
            Just(1usize),
            1usize..3,
            15usize..72,
            prop_oneof![32usize..49, 64usize..73, 80usize..101, 114usize..141],
        ),
        (1usize..10, 1usize..10, 1usize..3),
        (any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((n, groups, cin_g, cout_g), (h, w, dilation), (bias, seed))| Problem {
                n,
                groups,
                cin_g,
                cout_g,
                h,
                w,
                k: (3, 3),
                stride: (1, 1),
                dilation: (dilation, dilation),
                pad: (dilation, dilation),
                mode: 0,
                same: false,
                bias,
                seed,
            },
        )
}

/// [`wide_problems`] on maps of 25-29 rows of 8-12 pixels, over the 192 pixels of the weight
/// gradient's chunks, at most 72 output channels: a tile's sums carried from chunk to chunk;
/// on maps over 256 pixels the output gradient transposed in runs of whole rows, the last
/// one shorter.
fn wide_chunked_problems() -> impl Strategy<Value = Problem> {
    (wide_problems(), 25usize..30, 8usize..13).prop_map(|(p, h, w)| Problem {
        h,
        w,
        cout_g: p.cout_g.min(72),
        ..p
    })
}

impl Problem {
    fn padding_mode(&self) -> (PaddingMode, Mode) {
        match self.mode {
            1 if self.pad.0 < self.h && self.pad.1 < self.w => {
                (PaddingMode::Reflect, Mode::Reflect)
            }
            2 => (PaddingMode::Replicate, Mode::Replicate),
            3 if self.pad.0 <= self.h && self.pad.1 <= self.w => {
                (PaddingMode::Circular, Mode::Circular)
            }
            _ => (PaddingMode::Zeros, Mode::Zeros),
        }
    }
    fn options(&self) -> Conv2dOptions {
        let padding = match self.same {
            true => Padding::Same,
            false => self.pad.into(),
        };
        Conv2dOptions::default()
            .stride(self.stride)
            .padding(padding)
            .dilation(self.dilation)
            .groups(self.groups)
            .padding_mode(self.padding_mode().0)
    }
    fn spec(&self) -> ConvSpec {
        ConvSpec {
            stride: [self.stride.0, self.stride.1],
            pads: self.pads(),
            dilation: [self.dilation.0, self.dilation.1],
            groups: self.groups,
            mode: self.padding_mode().1,
        }
    }
    /// Top, bottom, left, right: PyTorch's split of `"same"` puts an odd one out at the
    /// bottom and right.
    fn pads(&self) -> [usize; 4] {
        if !self.same {
            return [self.pad.0, self.pad.0, self.pad.1, self.pad.1];
        }
        let reach_h = self.dilation.0 * (self.k.0 - 1);
        let reach_w = self.dilation.1 * (self.k.1 - 1);
        [
            reach_h / 2,
            reach_h - reach_h / 2,
            reach_w / 2,
            reach_w - reach_w / 2,
        ]
    }
    fn input_shape(&self) -> [usize; 4] {
        [self.n, self.cin_g * self.groups, self.h, self.w]
    }
    fn weight_shape(&self) -> [usize; 4] {
        [self.cout_g * self.groups, self.cin_g, self.k.0, self.k.1]
    }
}

/// Forward and all gradients of conv2d for `p` in type `T`, against the oracle.
fn conv2d_matches_reference<T: Element>(p: &Problem) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(p.seed);
    let x = Array4::from_shape_vec(
        p.input_shape(),
        random_vec::<T>(p.input_shape().iter().product(), &mut rng),
    )
    .unwrap();
    let w = Array4::from_shape_vec(
        p.weight_shape(),
        random_vec::<T>(p.weight_shape().iter().product(), &mut rng),
    )
    .unwrap();
    let b = Array1::from(random_vec::<T>(p.weight_shape()[0], &mut rng));
    let opts = p.options();
    let y = conv2d(&x, &w, p.bias.then(|| b.view()), &opts).map_err(|e| e.to_string())?;
    let gy_vals = random_vec::<T>(y.len(), &mut rng);
    let gy = Array4::from_shape_vec(y.dim(), gy_vals).unwrap();
    let g = conv2d_backward(&x, &w, &gy, &opts, GradMask::ALL).map_err(|e| e.to_string())?;
    let bt = to_tensor(&[b.len()], b.as_slice().unwrap());
    let oracle = reference::conv2d(
        &to_tensor(x.shape(), x.as_slice().unwrap()),
        &to_tensor(w.shape(), w.as_slice().unwrap()),
        p.bias.then_some(&bt),
        &p.spec(),
        Some(&to_tensor(gy.shape(), gy.as_slice().unwrap())),
    );
    if y.shape() != oracle.output_shape {
        return Err(format!(
            "shape {:?} vs {:?}",
            y.shape(),
            oracle.output_shape
        ));
    }
    check_close("output", y.as_slice().unwrap(), &oracle.output)?;
    check_close(
        "grad_input",
        g.input.unwrap().as_slice().unwrap(),
        &oracle.grad_input,
    )?;
    check_close(
        "grad_weight",
        g.weight.unwrap().as_slice().unwrap(),
        &oracle.grad_weight,
    )?;
    check_close(
        "grad_bias",
        g.bias.unwrap().as_slice().unwrap(),
        &oracle.grad_bias,
    )
}

/// conv_transpose2d for `p` read as a transposed problem (channels swapped), against the oracle.
fn conv_transpose2d_matches_reference<T: Element>(p: &Problem) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0x5eed);
    let cin = p.cin_g * p.groups;
    let x_shape = [p.n, cin, p.h, p.w];
    let w_shape = [cin, p.cout_g, p.k.0, p.k.1];
    let out_pad = (
        p.seed as usize % p.stride.0.max(p.dilation.0),
        (p.seed as usize / 7) % p.stride.1.max(p.dilation.1),
    );
    let x = Array4::from_shape_vec(x_shape, random_vec::<T>(x_shape.iter().product(), &mut rng))
        .unwrap();
    let w = Array4::from_shape_vec(w_shape, random_vec::<T>(w_shape.iter().product(), &mut rng))
        .unwrap();
    let b = Array1::from(random_vec::<T>(p.cout_g * p.groups, &mut rng));
    let opts = ConvTranspose2dOptions::default()
        .stride(p.stride)
        .padding(p.pad)
        .dilation(p.dilation)
        .groups(p.groups)
        .output_padding(out_pad);
    let y = match conv_transpose2d(&x, &w, p.bias.then(|| b.view()), &opts) {
        Ok(y) => y,
        // Padding can make the output empty; PyTorch rejects that too.
        Err(e) if e.to_string().contains("too small") => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let gy = Array4::from_shape_vec(y.dim(), random_vec::<T>(y.len(), &mut rng)).unwrap();
    let g =
        conv_transpose2d_backward(&x, &w, &gy, &opts, GradMask::ALL).map_err(|e| e.to_string())?;
    let bt = to_tensor(&[b.len()], b.as_slice().unwrap());
    let oracle = reference::conv_transpose2d(
        &to_tensor(x.shape(), x.as_slice().unwrap()),
        &to_tensor(w.shape(), w.as_slice().unwrap()),
        p.bias.then_some(&bt),
        [p.stride.0, p.stride.1],
        [p.pad.0, p.pad.1],
        [p.dilation.0, p.dilation.1],
        p.groups,
        [y.dim().2, y.dim().3],
        Some(&to_tensor(gy.shape(), gy.as_slice().unwrap())),
    );
    let expect_h = (p.h as isize - 1) * p.stride.0 as isize - 2 * p.pad.0 as isize
        + (p.dilation.0 * (p.k.0 - 1)) as isize
        + out_pad.0 as isize
        + 1;
    if y.dim().2 as isize != expect_h {
        return Err(format!("output height {} vs formula {expect_h}", y.dim().2));
    }
    check_close("output", y.as_slice().unwrap(), &oracle.output)?;
    check_close(
        "grad_input",
        g.input.unwrap().as_slice().unwrap(),
        &oracle.grad_input,
    )?;
    check_close(
        "grad_weight",
        g.weight.unwrap().as_slice().unwrap(),
        &oracle.grad_weight,
    )?;
    check_close(
        "grad_bias",
        g.bias.unwrap().as_slice().unwrap(),
        &oracle.grad_bias,
    )
}

/// Every algorithm's forward pass (and the transposed plan's input gradient, the same
/// computation) against the oracle.
fn every_algorithm_matches_reference<T: Element>(p: &Problem) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(p.seed);
    let (xs, ws) = (p.input_shape(), p.weight_shape());
    // The input starts 0-16 elements into its buffer, so that kernels reading it a vector
    // at a time meet every alignment (the pointwise one copies a misaligned input).
    let shift = rng.random_range(0..=16);
    let mut shifted = vec![T::from_parts(0.0, 0.0); shift];
    shifted.extend(random_vec::<T>(xs.iter().product(), &mut rng));
    let x = &shifted[shift..];
    let w = random_vec::<T>(ws.iter().product(), &mut rng);
    let b = random_vec::<T>(ws[0], &mut rng);
    let bias = p.bias.then_some(&b[..]);
    let plan = Conv2dPlan::new(xs, ws, &p.options()).map_err(|e| e.to_string())?;
    let bt = to_tensor(&[b.len()], &b);
    let gy = random_vec::<T>(plan.output_shape().iter().product(), &mut rng);
    let oracle = reference::conv2d(
        &to_tensor(&xs, x),
        &to_tensor(&ws, &w),
        p.bias.then_some(&bt),
        &p.spec(),
        Some(&to_tensor(&plan.output_shape(), &gy)),
    );
    // The transposed plan whose input gradient is this forward pass (zero padding only).
    let t_opts = ConvTranspose2dOptions::default()
        .stride(p.stride)
        .padding(p.pad)
        .dilation(p.dilation)
        .groups(p.groups)
        .output_size([p.h, p.w]);
    let t_weight = [ws[0], ws[1], ws[2], ws[3]];
    // Its expected result (the bias-free forward pass) and the conjugated weight it takes,
    // since conv_transpose2d's input gradient is conv2d with the conjugated weight.
    let transposed = match (
        ConvTranspose2dPlan::new(plan.output_shape(), t_weight, &t_opts),
        p.padding_mode().0,
    ) {
        (Ok(tplan), PaddingMode::Zeros) if !p.same => {
            let no_bias = reference::conv2d(
                &to_tensor(&xs, x),
                &to_tensor(&ws, &w),
                None,
                &p.spec(),
                None,
            );
            let wc: Vec<T> = w
                .iter()
                .map(|v| {
                    let c = v.to_complex64().conj();
                    T::from_parts(c.re, c.im)
                })
                .collect();
            Some((tplan, no_bias, wc))
        }
        _ => None,
    };
    for algorithm in ALGORITHMS {
        let forced = plan.clone().with_algorithm(algorithm);
        let y = forced.forward(x, &w, bias).map_err(|e| e.to_string())?;
        check_close(&format!("{} output", algorithm.name()), &y, &oracle.output)?;
        let gx = forced.backward_input(&gy, &w).map_err(|e| e.to_string())?;
        check_close(
            &format!("{} grad_input", algorithm.name()),
            &gx,
            &oracle.grad_input,
        )?;
        let gw = forced.backward_weight(x, &gy).map_err(|e| e.to_string())?;
        check_close(
            &format!("{} grad_weight", algorithm.name()),
            &gw,
            &oracle.grad_weight,
        )?;
        if let Some((tplan, no_bias, wc)) = &transposed {
            let gx = tplan
                .clone()
                .with_algorithm(algorithm)
                .backward_input(x, wc)
                .map_err(|e| e.to_string())?;
            check_close(
                &format!("{} transposed input gradient", algorithm.name()),
                &gx,
                &no_bias.output,
            )?;
        }
    }
    Ok(())
}

/// Cases per property: `default`, or `CONV2D_PROPTEST_CASES` (fewer under valgrind, which
/// runs the whole suite again on each instruction-set level).
fn cases(default: u32) -> u32 {
    std::env::var("CONV2D_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `direct`'s 3x3 depthwise weight gradient on planes of more padded rows than a block of
/// its column sweep (256): the sums carried across blocks, each block's first rows meeting
/// the output-gradient rows of the block before, on rows ending in a vector of 8 or fewer
/// outputs, in a partial vector of 16, and in whole vectors; with padding 0-2.
#[test]
fn depthwise_columns_longer_than_a_block_match_reference() {
    for (w, pad) in [(20, 1), (37, 0), (32, 2)] {
        let p = Problem {
            groups: 2,
            pad: (pad, pad),
            bias: false,
            ..same_3x3(1, 1, 1, (300, w), 17)
        };
        every_algorithm_matches_reference::<f32>(&p).unwrap();
    }
}

proptest! {
    // Large channel counts: a quarter of the cases.
    #![proptest_config(ProptestConfig { cases: (cases(96) / 4).max(1), ..ProptestConfig::default() })]

    #[test]
    fn wide_tiles_match_reference(p in wide_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    // Large channel counts on maps over a chunk of pixels: a sixteenth of the cases.
    #![proptest_config(ProptestConfig { cases: (cases(96) / 16).max(1), ..ProptestConfig::default() })]

    #[test]
    fn wide_tiles_across_chunks_match_reference(p in wide_chunked_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
    }
}

/// A 3x3 layer of one group, stride 1, padding 1, with a bias: `n` images of `cin_g`
/// channels on `h` x `w` maps into `cout_g` channels.
fn same_3x3(n: usize, cin_g: usize, cout_g: usize, (h, w): (usize, usize), seed: u64) -> Problem {
    Problem {
        n,
        groups: 1,
        cin_g,
        cout_g,
        h,
        w,
        k: (3, 3),
        stride: (1, 1),
        dilation: (1, 1),
        pad: (1, 1),
        mode: 0,
        same: false,
        bias: true,
        seed,
    }
}

/// `direct-tiled`'s weight gradient vectorised over output channels with sums beyond 1 MiB
/// (128 padded channels x 2160 taps), allowed where each sums 192+ pixels (here 196), a
/// last tile of one partial vector.
#[test]
fn wide_tiles_with_large_sums_match_reference() {
    every_algorithm_matches_reference::<f32>(&same_3x3(1, 240, 72, (14, 14), 11)).unwrap();
}

/// `direct-tiled`'s weight-gradient tiles of 4 output channels (a partial last one) on rows
/// of two vectors and 5 outputs: with 27 taps (3 input channels) the output gradient read
/// in place, each row's last vector masked; with 45 taps copied into slab-row layout.
#[test]
fn weight_tiles_in_place_and_copied_match_reference() {
    for cin_g in [3, 5] {
        every_algorithm_matches_reference::<f32>(&same_3x3(2, cin_g, 10, (24, 37), 5)).unwrap();
    }
}

/// `bf16` layers of whole blocks of 32 channels, 3x3 and 1x1 at stride 1, on 28x30 maps
/// (on CPUs with AVX512-BF16 but no AMX, the dot products reading the weights in place,
/// each pair's terms 9 or 1 values apart, over rows without padding columns), one of them
/// in two groups: every algorithm against the oracle.
#[test]
fn bf16_weights_read_in_place_match_reference() {
    let pointwise = Problem {
        k: (1, 1),
        pad: (0, 0),
        ..same_3x3(1, 64, 32, (28, 30), 9)
    };
    let grouped = Problem {
        groups: 2,
        ..same_3x3(1, 32, 64, (28, 30), 10)
    };
    for p in [same_3x3(1, 32, 64, (28, 30), 8), pointwise, grouped] {
        every_algorithm_matches_reference::<bf16>(&p).unwrap();
    }
}

/// An infinite weight on a layer of 32 channels, 28x28, 3x3, padding 1 (on CPUs with
/// AVX512-BF16 but no AMX, the `bf16` dot products over rows without padding columns, whose
/// masked lanes leave out the terms that meet the padding): through every algorithm, its
/// output channel is NaN wherever its tap meets a padded zero (`0 * inf`, as PyTorch
/// defines it), infinite elsewhere, and every other channel finite.
#[test]
fn bf16_infinite_weight_meets_the_padding_on_every_algorithm() {
    let mut rng = StdRng::seed_from_u64(3);
    let (xs, ws) = ([1, 32, 28, 28], [32, 32, 3, 3]);
    // No zero input: every product with the infinite weight is infinite.
    let x: Vec<bf16> = (0..xs.iter().product())
        .map(|_| bf16::from_f32(rng.random_range(0.5f32..1.0)))
        .collect();
    let mut w = random_vec::<bf16>(ws.iter().product(), &mut rng);
    // Output channel 5's tap (ky, kx) = (0, 0) from input channel 7.
    w[(5 * 32 + 7) * 9] = bf16::INFINITY;
    let plan = Conv2dPlan::new(xs, ws, &Conv2dOptions::default().padding([1, 1])).unwrap();
    for algorithm in ALGORITHMS {
        let y = plan
            .clone()
            .with_algorithm(algorithm)
            .forward(&x, &w, None)
            .unwrap();
        for (i, v) in y.iter().enumerate() {
            let (c, oy, ox) = (i / 784, i % 784 / 28, i % 28);
            let padded = oy == 0 || ox == 0;
            let ok = match c {
                5 if padded => v.is_nan(),
                5 => v.is_infinite(),
                _ => v.is_finite(),
            };
            assert!(ok, "{}: channel {c} ({oy}, {ox}) is {v}", algorithm.name());
        }
    }
}

proptest! {
    // Large channel counts: a quarter of the cases.
    #![proptest_config(ProptestConfig { cases: (cases(96) / 4).max(1), ..ProptestConfig::default() })]

    #[test]
    fn implicit_gemm_matches_reference(p in implicit_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn bf16_tiles_match_reference(p in amx_problems()) {
        every_algorithm_matches_reference::<bf16>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn bf16_in_place_tiles_match_reference(p in amx_in_place_problems()) {
        every_algorithm_matches_reference::<bf16>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn bf16_strided_tiles_match_reference(p in amx_strided_problems()) {
        every_algorithm_matches_reference::<bf16>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn bf16_dot_products_match_reference(p in bf16_dot_problems()) {
        every_algorithm_matches_reference::<bf16>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn bf16_phases_match_reference(p in amx_phase_problems()) {
        every_algorithm_matches_reference::<bf16>(&p).map_err(TestCaseError::fail)?;
        transposed_plan_matches_reference::<bf16>(&p, Algorithm::DirectTiled)
            .map_err(TestCaseError::fail)?;
    }

    #[test]
    fn subpixel_phases_match_reference(p in subpixel_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        // Their bands follow the thread count.
        same_bits_on_one_and_three_threads(&p)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    #[test]
    fn small_tiles_match_reference(p in small_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f16>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn direct_tiles_match_reference(p in tile_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn same_padding_tiles_match_reference(p in same_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn dilated_same_padding_rows_match_reference(p in dilated_row_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn strided_same_padding_tiles_match_reference(p in strided_same_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn patch_planes_match_reference(p in patch_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<Complex<f64>>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn depthwise_rows_match_reference(p in depthwise_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn depthwise_channel_blocks_match_reference(p in depthwise_channel_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn flat_runs_match_reference(p in flat_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn pointwise_tiles_match_reference(p in pointwise_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn whole_vector_pointwise_tiles_match_reference(p in whole_vector_pointwise_problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn aliasing_pointwise_tiles_match_reference(p in aliasing_pointwise_problems()) {
        // The plan's own choice, `direct-tiled` (every algorithm on these planes would
        // cost valgrind minutes).
        conv2d_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn every_algorithm_matches_reference_all_dtypes(p in problems()) {
        every_algorithm_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<f16>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<Complex<f32>>(&p).map_err(TestCaseError::fail)?;
        every_algorithm_matches_reference::<Complex<f64>>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv2d_f32_matches_reference(p in problems()) {
        conv2d_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv2d_f64_matches_reference(p in problems()) {
        conv2d_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv2d_half_and_complex_match_reference(p in problems()) {
        conv2d_matches_reference::<f16>(&p).map_err(TestCaseError::fail)?;
        conv2d_matches_reference::<bf16>(&p).map_err(TestCaseError::fail)?;
        conv2d_matches_reference::<Complex<f32>>(&p).map_err(TestCaseError::fail)?;
        conv2d_matches_reference::<Complex<f64>>(&p).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv_transpose2d_matches_reference_all_dtypes(p in problems()) {
        conv_transpose2d_matches_reference::<f32>(&p).map_err(TestCaseError::fail)?;
        conv_transpose2d_matches_reference::<f64>(&p).map_err(TestCaseError::fail)?;
        conv_transpose2d_matches_reference::<bf16>(&p).map_err(TestCaseError::fail)?;
        conv_transpose2d_matches_reference::<Complex<f64>>(&p).map_err(TestCaseError::fail)?;
    }

    /// <conv2d(x, w), y> == <x, conv_transpose2d(y, w)> with the same stride, padding,
    /// dilation and groups, and output_size = x's size.
    #[test]
    fn conv_transpose2d_is_the_adjoint_of_conv2d(mut p in problems()) {
        p.mode = 0;
        let mut rng = StdRng::seed_from_u64(p.seed);
        let x = Array4::from_shape_vec(p.input_shape(), random_vec::<f64>(p.input_shape().iter().product(), &mut rng)).unwrap();
        let w = Array4::from_shape_vec(p.weight_shape(), random_vec::<f64>(p.weight_shape().iter().product(), &mut rng)).unwrap();
        let cx = conv2d(&x, &w, None, &p.options()).unwrap();
        let y = Array4::from_shape_vec(cx.dim(), random_vec::<f64>(cx.len(), &mut rng)).unwrap();
        let t_opts = ConvTranspose2dOptions::default()
            .stride(p.stride).padding(p.pad).dilation(p.dilation).groups(p.groups)
            .output_size([p.h, p.w]);
        let ty = conv_transpose2d(&y, &w, None, &t_opts).unwrap();
        prop_assert_eq!(ty.dim(), x.dim());
        let lhs: f64 = (&cx * &y).sum();
        let rhs: f64 = (&x * &ty).sum();
        let scale: f64 = cx.iter().map(|v| v.abs()).sum::<f64>() * 4.0 + 1.0;
        prop_assert!((lhs - rhs).abs() <= 1e-13 * scale, "{} vs {}", lhs, rhs);
    }

    /// The threads split work differently; every element must come out bit-identical.
    #[test]
    fn results_do_not_depend_on_the_thread_count(p in problems()) {
        same_bits_on_one_and_three_threads(&p)?;
    }

    /// As above where one thread runs whole planes as flat runs and three split them into
    /// bands of rows for the row kernels (4 to 11 planes).
    #[test]
    fn flat_runs_do_not_depend_on_the_thread_count(p in flat_problems()) {
        same_bits_on_one_and_three_threads(&p)?;
    }

    /// As above for the depthwise layers vectorised over blocks of 16 channels (a task per
    /// block, and per image forward; 1-40 groups).
    #[test]
    fn depthwise_channel_blocks_do_not_depend_on_the_thread_count(
        p in depthwise_channel_problems()
    ) {
        same_bits_on_one_and_three_threads(&p)?;
    }
}

/// Every algorithm's forward pass and input gradient, and the weight gradient, on one
/// thread and on three: bit-identical.
fn same_bits_on_one_and_three_threads(p: &Problem) -> Result<(), TestCaseError> {
    let mut rng = StdRng::seed_from_u64(p.seed);
    let plan = Conv2dPlan::new(p.input_shape(), p.weight_shape(), &p.options()).unwrap();
    let x = random_vec::<f32>(p.input_shape().iter().product(), &mut rng);
    let w = random_vec::<f32>(p.weight_shape().iter().product(), &mut rng);
    let gy = random_vec::<f32>(plan.output_shape().iter().product(), &mut rng);
    let run = || {
        (
            ALGORITHMS.map(|a| {
                let plan = plan.clone().with_algorithm(a);
                (
                    plan.forward(&x, &w, None).unwrap(),
                    plan.backward_input(&gy, &w).unwrap(),
                )
            }),
            plan.backward_weight(&x, &gy).unwrap(),
        )
    };
    let pool1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let one = pool1.install(|| {
        conv2d::set_num_threads(1).unwrap();
        run()
    });
    conv2d::set_num_threads(3).unwrap();
    let three = run();
    prop_assert_eq!(one, three);
    Ok(())
}

/// `direct-tiled`'s pointwise pass reads a misaligned input in place from its first pixel
/// on a line and stages the pixels around that: every output must come out bit-identical
/// to an aligned input's, from every element offset (`f32` and `f64`).
#[test]
fn pointwise_results_do_not_depend_on_the_input_alignment() {
    fn check<T: Element + PartialEq + std::fmt::Debug>() {
        let mut rng = StdRng::seed_from_u64(5);
        let (xs, ws) = ([2, 70, 3, 32], [19, 70, 1, 1]);
        let plan = Conv2dPlan::new(xs, ws, &Conv2dOptions::default())
            .unwrap()
            .with_algorithm(Algorithm::DirectTiled);
        let x = random_vec::<T>(xs.iter().product(), &mut rng);
        let w = random_vec::<T>(ws.iter().product(), &mut rng);
        let b = random_vec::<T>(ws[0], &mut rng);
        let mut buffer = vec![T::ZERO; x.len() + 16];
        let outputs: Vec<_> = (0..16)
            .map(|shift| {
                buffer[shift..][..x.len()].copy_from_slice(&x);
                plan.forward(&buffer[shift..][..x.len()], &w, Some(&b))
                    .unwrap()
            })
            .collect();
        for (shift, out) in outputs.iter().enumerate() {
            assert_eq!(out, &outputs[0], "input {shift} elements into its buffer");
        }
    }
    check::<f32>();
    check::<f64>();
}

/// Central differences of `L = <conv2d(x, w, b), gy>` against the analytic gradients, in f64.
#[test]
fn gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(11);
    let opts = Conv2dOptions::default()
        .stride((2, 1))
        .padding(Padding::Explicit((1, 2).into()))
        .dilation((1, 2))
        .groups(2)
        .padding_mode(PaddingMode::Reflect);
    let x =
        Array4::from_shape_vec((2, 4, 7, 6), random_vec::<f64>(2 * 4 * 7 * 6, &mut rng)).unwrap();
    let w =
        Array4::from_shape_vec((6, 2, 3, 2), random_vec::<f64>(6 * 2 * 3 * 2, &mut rng)).unwrap();
    let b = Array1::from(random_vec::<f64>(6, &mut rng));
    let y = conv2d(&x, &w, Some(b.view()), &opts).unwrap();
    let gy = Array4::from_shape_vec(y.dim(), random_vec::<f64>(y.len(), &mut rng)).unwrap();
    let loss = |x: &Array4<f64>, w: &Array4<f64>, b: &Array1<f64>| {
        (&conv2d(x, w, Some(b.view()), &opts).unwrap() * &gy).sum()
    };
    let g = conv2d_backward(&x, &w, &gy, &opts, GradMask::ALL).unwrap();
    let eps = 1e-6;
    let (gx, gw, gb) = (g.input.unwrap(), g.weight.unwrap(), g.bias.unwrap());
    for (i, idx) in [(0, 0, 0, 0), (1, 3, 6, 5), (0, 2, 3, 0), (1, 1, 0, 3)]
        .into_iter()
        .enumerate()
    {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[idx] += eps;
        xm[idx] -= eps;
        let fd = (loss(&xp, &w, &b) - loss(&xm, &w, &b)) / (2.0 * eps);
        assert!(
            (fd - gx[idx]).abs() < 1e-7,
            "input {i}: {fd} vs {}",
            gx[idx]
        );
    }
    for idx in [(0, 0, 0, 0), (5, 1, 2, 1), (3, 0, 1, 1)] {
        let (mut wp, mut wm) = (w.clone(), w.clone());
        wp[idx] += eps;
        wm[idx] -= eps;
        let fd = (loss(&x, &wp, &b) - loss(&x, &wm, &b)) / (2.0 * eps);
        assert!(
            (fd - gw[idx]).abs() < 1e-7,
            "weight {idx:?}: {fd} vs {}",
            gw[idx]
        );
    }
    let (mut bp, mut bm) = (b.clone(), b.clone());
    bp[4] += eps;
    bm[4] -= eps;
    let fd = (loss(&x, &w, &bp) - loss(&x, &w, &bm)) / (2.0 * eps);
    assert!((fd - gb[4]).abs() < 1e-7, "bias: {fd} vs {}", gb[4]);
}

/// Under `CONV2D_ISA` (as CI runs this suite), the kernels run the requested level, or the
/// CPU's own when that is lower: so the suite above really tested that level.
#[test]
fn the_requested_instruction_set_is_in_force() {
    use conv2d::{detected_isa, isa, Isa, ISA_ENV};
    let requested = match std::env::var(ISA_ENV).as_deref() {
        Ok("scalar") => Isa::Scalar,
        Ok("avx2") => Isa::Avx2,
        _ => Isa::Avx512,
    };
    assert_eq!(isa(), requested.min(detected_isa()));
}

/// Shapes large enough that every algorithm splits its work: several pixel blocks and
/// output-channel chunks in the GEMM forward pass, several channel blocks in its backward
/// passes, a pointwise convolution reading its input in place, several groups of four
/// vectors per row in the direct kernel, strided phases and masked last vectors, and
/// bands of rows in the masked tiles' strided phase planes (64 channels of 128 columns:
/// 15 of the 17 output rows a band of 1 MiB), and pointwise weight gradients summed in
/// parts of their pixels (four parts of a 363x363 map; two of three 25x40 images in two
/// groups, a part ending inside an image).
/// Same-padding layers of 300 input channels on 30x41 maps, whose whole-image slab exceeds
/// 1 MiB: `direct-tiled`'s masked AVX-512 tiles in slabs of whole blocks of input channels
/// (in `f32`, 192 and 108 for the first), each slab's sweeps
/// resuming the sums, with 4-pixel tails and, dilated, kernel rows left out.
#[test]
fn masked_tiles_match_reference_over_slabs_of_channel_blocks() {
    for (i, dilation) in [(1, 1), (2, 2)].into_iter().enumerate() {
        let p = Problem {
            n: 1,
            groups: 1,
            cin_g: 300,
            cout_g: 12,
            h: 30,
            w: 41,
            k: (3, 3),
            stride: (1, 1),
            dilation,
            pad: dilation,
            mode: 0,
            same: false,
            bias: true,
            seed: i as u64,
        };
        every_algorithm_matches_reference::<f32>(&p).unwrap_or_else(|e| panic!("case {i}: {e}"));
        every_algorithm_matches_reference::<f64>(&p).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}

#[test]
fn every_algorithm_matches_reference_on_shapes_that_split_into_blocks() {
    let cases = [
        // (n, groups, cin_g, cout_g, h, w, k, stride, dilation, pad)
        (1, 1, 64, 16, 20, 20, (3, 3), (1, 1), (1, 1), (1, 1)),
        (2, 2, 24, 12, 17, 23, (3, 2), (2, 1), (1, 2), (2, 1)),
        (1, 1, 64, 8, 64, 64, (1, 1), (1, 1), (1, 1), (0, 0)),
        (1, 1, 40, 24, 9, 9, (3, 3), (1, 1), (2, 2), (2, 2)),
        (1, 6, 1, 2, 21, 100, (3, 3), (1, 1), (1, 1), (1, 1)),
        (1, 4, 1, 1, 31, 70, (5, 3), (2, 3), (1, 1), (2, 1)),
        (2, 8, 4, 4, 18, 37, (3, 3), (1, 1), (1, 1), (1, 1)),
        (1, 1, 64, 3, 34, 128, (3, 3), (2, 2), (1, 1), (1, 1)),
        (1, 1, 2, 3, 363, 363, (1, 1), (1, 1), (1, 1), (0, 0)),
        (3, 2, 3, 5, 25, 40, (1, 1), (1, 1), (1, 1), (0, 0)),
    ];
    for (i, (n, groups, cin_g, cout_g, h, w, k, stride, dilation, pad)) in
        cases.into_iter().enumerate()
    {
        let p = Problem {
            n,
            groups,
            cin_g,
            cout_g,
            h,
            w,
            k,
            stride,
            dilation,
            pad,
            mode: 0,
            same: false,
            bias: true,
            seed: i as u64,
        };
        every_algorithm_matches_reference::<f32>(&p).unwrap_or_else(|e| panic!("case {i}: {e}"));
        every_algorithm_matches_reference::<Complex<f64>>(&p)
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}
