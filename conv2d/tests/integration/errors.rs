//! Every invalid argument returns an `Err` whose message names the offending values.

use conv2d::nn::{Conv2dConfig, ConvTranspose2dConfig};
use conv2d::{
    conv2d, conv2d_backward, conv_transpose2d, Algorithm, Conv2dOptions, Conv2dPlan,
    ConvTranspose2dOptions, ConvTranspose2dPlan, ErrorKind, GradMask, PaddingMode, Same,
};
use ndarray::{Array, Array1, Array4, IxDyn};

fn zeros(shape: [usize; 4]) -> Array4<f32> {
    Array4::zeros(shape)
}

/// The error of a conv2d call, with its message required to contain every fragment.
fn conv_err(x: [usize; 4], w: [usize; 4], opts: Conv2dOptions, fragments: &[&str]) -> ErrorKind {
    let err = conv2d(&zeros(x), &zeros(w), None, &opts).expect_err("must be rejected");
    for f in fragments {
        assert!(err.to_string().contains(f), "{err:?} lacks {f:?}");
    }
    err.kind()
}

fn transpose_err(
    x: [usize; 4],
    w: [usize; 4],
    opts: ConvTranspose2dOptions,
    fragments: &[&str],
) -> ErrorKind {
    let err = conv_transpose2d(&zeros(x), &zeros(w), None, &opts).expect_err("must be rejected");
    for f in fragments {
        assert!(err.to_string().contains(f), "{err:?} lacks {f:?}");
    }
    err.kind()
}

#[test]
fn groups_not_dividing_out_channels() {
    let kind = conv_err(
        [1, 4, 8, 8],
        [6, 1, 3, 3],
        Conv2dOptions::default().groups(4),
        &[
            "Given groups=4, expected weight to be divisible by 4 at dimension 0",
            "[6, 1, 3, 3]",
        ],
    );
    assert_eq!(kind, ErrorKind::ShapeMismatch);
}

#[test]
fn input_channels_not_matching_weight_and_groups() {
    conv_err(
        [1, 5, 8, 8],
        [8, 4, 3, 3],
        Conv2dOptions::default(),
        &["to have 4 channels", "got 5 channels", "[1, 5, 8, 8]"],
    );
    conv_err(
        [1, 8, 8, 8],
        [8, 2, 3, 3],
        Conv2dOptions::default().groups(2),
        &["to have 4 channels", "got 8 channels", "groups=2"],
    );
}

#[test]
fn wrong_input_ranks() {
    let w = zeros([8, 4, 3, 3]);
    for shape in [&[4, 8][..], &[1, 1, 4, 8, 8][..], &[][..]] {
        let x = Array::<f32, _>::zeros(IxDyn(shape));
        let err = conv2d(&x, &w, None, &Conv2dOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("Expected 3D (unbatched) or 4D (batched) input to conv2d"),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("{shape:?}")), "{err}");
        let err = conv_transpose2d(&x, &w, None, &ConvTranspose2dOptions::default()).unwrap_err();
        assert!(err.to_string().contains("conv_transpose2d"), "{err}");
    }
}

#[test]
fn zero_stride_dilation_or_groups() {
    let (x, w) = ([1, 4, 8, 8], [8, 4, 3, 3]);
    conv_err(
        x,
        w,
        Conv2dOptions::default().stride((1, 0)),
        &["non-positive stride", "(1, 0)"],
    );
    conv_err(
        x,
        w,
        Conv2dOptions::default().dilation(0),
        &["dilation should be greater than zero", "(0, 0)"],
    );
    conv_err(
        x,
        w,
        Conv2dOptions::default().groups(0),
        &["non-positive groups", "groups=0"],
    );
    let t = ConvTranspose2dOptions::default();
    transpose_err(
        [1, 8, 4, 4],
        [8, 4, 3, 3],
        t.clone().stride(0),
        &["non-positive stride"],
    );
    transpose_err(
        [1, 8, 4, 4],
        [8, 4, 3, 3],
        t.clone().dilation((0, 1)),
        &["dilation should be greater than zero"],
    );
    transpose_err(
        [1, 8, 4, 4],
        [8, 4, 3, 3],
        t.groups(0),
        &["non-positive groups"],
    );
}

#[test]
fn same_padding_with_stride() {
    let kind = conv_err(
        [1, 4, 8, 8],
        [8, 4, 3, 3],
        Conv2dOptions::default().padding(Same).stride((1, 2)),
        &["padding='same'", "strided", "(1, 2)"],
    );
    assert_eq!(kind, ErrorKind::InvalidArgument);
    let err = Conv2dConfig::new(4, 8, 3)
        .padding(Same)
        .stride(2)
        .init_seeded::<f32>(0)
        .unwrap_err();
    assert!(err.to_string().contains("padding='same'"), "{err}");
}

#[test]
fn kernel_larger_than_padded_input() {
    conv_err(
        [1, 1, 2, 4],
        [1, 1, 3, 3],
        Conv2dOptions::default(),
        &[
            "padded input size per channel: (2 x 4)",
            "Kernel size: (3 x 3)",
        ],
    );
    // Dilation makes a 3x3 kernel reach 5x5.
    conv_err(
        [1, 1, 4, 4],
        [1, 1, 3, 3],
        Conv2dOptions::default().dilation(2).padding((0, 1)),
        &["(4 x 6)", "Kernel size: (5 x 5)"],
    );
    conv_err(
        [1, 1, 0, 4],
        [1, 1, 1, 1],
        Conv2dOptions::default(),
        &["(0 x 4)"],
    );
}

#[test]
fn output_padding_not_smaller_than_stride_or_dilation() {
    let t = ConvTranspose2dOptions::default()
        .stride(2)
        .output_padding((0, 2));
    let kind = transpose_err(
        [1, 4, 4, 4],
        [4, 4, 3, 3],
        t,
        &[
            "output padding must be smaller than either stride or dilation",
            "output_padding_width: 2",
            "stride_width: 2",
        ],
    );
    assert_eq!(kind, ErrorKind::InvalidArgument);
    // Allowed when smaller than the dilation, as in PyTorch.
    let ok = ConvTranspose2dOptions::default()
        .dilation(2)
        .output_padding(1);
    assert_eq!(
        conv_transpose2d(&zeros([1, 4, 4, 4]), &zeros([4, 4, 3, 3]), None, &ok)
            .unwrap()
            .dim(),
        (1, 4, 9, 9)
    );
}

#[test]
fn output_size_outside_the_valid_range_or_of_wrong_length() {
    let t = ConvTranspose2dOptions::default().stride(2).padding(1);
    transpose_err(
        [1, 4, 6, 6],
        [4, 4, 3, 3],
        t.clone().output_size([13, 12]),
        &[
            "requested an output size of [13, 12]",
            "from [11, 11] to [12, 12]",
            "[6, 6]",
        ],
    );
    transpose_err(
        [1, 4, 6, 6],
        [4, 4, 3, 3],
        t.clone().output_size([10, 11]),
        &["[10, 11]"],
    );
    transpose_err(
        [1, 4, 6, 6],
        [4, 4, 3, 3],
        t.clone().output_size([1, 1, 4, 12, 12]),
        &["must have 2 or 4 elements (got 5)"],
    );
    let x3 = Array::<f32, _>::zeros((4, 6, 6));
    let err = conv_transpose2d(
        &x3,
        &zeros([4, 4, 3, 3]),
        None,
        &t.clone().output_size([1, 4, 12, 12]),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("for 3D input, output_size must have 2 or 3 elements (got 4)"),
        "{err}"
    );
    assert_eq!(
        conv_transpose2d(&x3, &zeros([4, 4, 3, 3]), None, &t.output_size([4, 12, 12]))
            .unwrap()
            .dim(),
        (4, 12, 12)
    );
}

#[test]
fn transposed_output_that_would_be_empty() {
    transpose_err(
        [1, 4, 1, 1],
        [4, 4, 1, 1],
        ConvTranspose2dOptions::default().padding(1),
        &["(1 x 1)", "(-1 x -1)", "too small"],
    );
}

#[test]
fn bias_of_the_wrong_length() {
    let b = Array1::<f32>::zeros(7);
    let err = conv2d(
        &zeros([1, 4, 5, 5]),
        &zeros([8, 4, 3, 3]),
        Some(b.view()),
        &Conv2dOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("expected bias to be 1-dimensional with 8 elements"),
        "{err}"
    );
    assert!(err.to_string().contains("[7]"), "{err}");
    let err = conv_transpose2d(
        &zeros([1, 4, 5, 5]),
        &zeros([4, 2, 3, 3]),
        Some(b.view()),
        &ConvTranspose2dOptions::default().groups(2),
    )
    .unwrap_err();
    assert!(err.to_string().contains("with 4 elements"), "{err}");
}

#[test]
fn reflect_and_circular_padding_too_large() {
    let reflect = Conv2dOptions::default()
        .padding((1, 3))
        .padding_mode(PaddingMode::Reflect);
    conv_err(
        [1, 1, 5, 3],
        [1, 1, 1, 1],
        reflect,
        &[
            "reflect padding",
            "padding (3, 3) at dimension 3",
            "[1, 1, 5, 3]",
        ],
    );
    let circular = Conv2dOptions::default()
        .padding((6, 0))
        .padding_mode(PaddingMode::Circular);
    conv_err(
        [1, 1, 5, 3],
        [1, 1, 1, 1],
        circular,
        &[
            "circular padding",
            "wrap around more than once",
            "padding (6, 6) at dimension 2",
        ],
    );
    // The limits themselves are allowed: reflect up to size-1, circular up to size.
    let ok = Conv2dOptions::default()
        .padding((4, 2))
        .padding_mode(PaddingMode::Reflect);
    assert_eq!(
        conv2d(&zeros([1, 1, 5, 3]), &zeros([1, 1, 1, 1]), None, &ok)
            .unwrap()
            .dim(),
        (1, 1, 13, 7)
    );
    let ok = Conv2dOptions::default()
        .padding((5, 3))
        .padding_mode(PaddingMode::Circular);
    assert_eq!(
        conv2d(&zeros([1, 1, 5, 3]), &zeros([1, 1, 1, 1]), None, &ok)
            .unwrap()
            .dim(),
        (1, 1, 15, 9)
    );
}

#[test]
fn padding_modes_on_the_transposed_layer() {
    for mode in [
        PaddingMode::Reflect,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ] {
        let err = ConvTranspose2dConfig::new(4, 4, 3)
            .padding_mode(mode)
            .init_seeded::<f32>(0)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("Only \"zeros\" padding mode is supported for ConvTranspose2d"),
            "{err}"
        );
        assert!(err.to_string().contains(mode.as_str()), "{err}");
    }
}

#[test]
fn layer_constructor_arguments() {
    let err = Conv2dConfig::new(5, 4, 3)
        .groups(2)
        .init_seeded::<f32>(0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("in_channels must be divisible by groups")
            && err.to_string().contains("in_channels=5"),
        "{err}"
    );
    let err = ConvTranspose2dConfig::new(4, 5, 3)
        .groups(2)
        .init_seeded::<f32>(0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("out_channels must be divisible by groups")
            && err.to_string().contains("out_channels=5"),
        "{err}"
    );
    let err = Conv2dConfig::new(4, 4, 3)
        .groups(0)
        .init_seeded::<f32>(0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("groups must be a positive integer"),
        "{err}"
    );
    let err = Conv2dConfig::new(4, 4, (3, 0))
        .init_seeded::<f32>(0)
        .unwrap_err();
    assert!(err.to_string().contains("kernel_size=(3, 0)"), "{err}");
}

#[test]
fn weight_with_no_output_channels() {
    conv_err(
        [1, 4, 5, 5],
        [0, 4, 3, 3],
        Conv2dOptions::default(),
        &["[0, 4, 3, 3]"],
    );
}

#[test]
fn grad_output_of_the_wrong_shape() {
    let err = conv2d_backward(
        &zeros([1, 4, 5, 5]),
        &zeros([8, 4, 3, 3]),
        &zeros([1, 8, 4, 3]),
        &Conv2dOptions::default(),
        GradMask::ALL,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("[1, 8, 4, 3]") && err.to_string().contains("[1, 8, 3, 3]"),
        "{err}"
    );
}

#[test]
fn buffers_of_the_wrong_length() {
    let plan = Conv2dPlan::new([1, 2, 4, 4], [3, 2, 3, 3], &Conv2dOptions::default()).unwrap();
    let err = plan
        .forward_into(&[0.0f32; 32], &[0.0; 54], None, &mut [0.0; 11])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BufferLength);
    assert!(
        err.to_string().contains("output has 11 elements") && err.to_string().contains("needs 12"),
        "{err}"
    );
    assert!(plan
        .forward_into(&[0.0f32; 31], &[0.0; 54], None, &mut [0.0; 12])
        .is_err());
    assert!(plan
        .backward_weight_into(&[0.0f32; 32], &[0.0; 12], &mut [0.0; 53])
        .is_err());
    assert!(plan
        .backward_bias_into(&[0.0f32; 12], &mut [0.0; 2])
        .is_err());
    let tplan = ConvTranspose2dPlan::new(
        [1, 2, 4, 4],
        [2, 3, 3, 3],
        &ConvTranspose2dOptions::default(),
    )
    .unwrap();
    assert!(tplan
        .backward_input_into(&[0.0f32; 108], &[0.0; 54], &mut [0.0; 31])
        .is_err());
}

#[test]
fn sizes_that_overflow() {
    let huge = usize::MAX / 2;
    let err =
        Conv2dPlan::new([huge, 4, 8, 8], [8, 4, 3, 3], &Conv2dOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overflow, "{err}");
    let err =
        Conv2dPlan::new([1, 1, huge, huge], [1, 1, 1, 1], &Conv2dOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overflow, "{err}");
    let err = Conv2dPlan::new(
        [1, 1, 8, 8],
        [1, 1, huge, 1],
        &Conv2dOptions::default().dilation(4),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overflow, "{err}");
    let err = Conv2dPlan::new(
        [1, 1, usize::MAX, 8],
        [1, 1, 1, 1],
        &Conv2dOptions::default().padding(1),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overflow, "{err}");
    let err = ConvTranspose2dPlan::new(
        [1, 1, huge, huge],
        [1, 1, 1, 1],
        &ConvTranspose2dOptions::default().stride(4),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overflow, "{err}");
}

#[test]
fn an_allocation_that_cannot_be_had_is_an_error() {
    // Valid shapes whose output needs 2^62 bytes.
    let plan = Conv2dPlan::new(
        [1 << 20, 1, 1 << 20, 1 << 20],
        [1, 1, 1, 1],
        &Conv2dOptions::default(),
    )
    .unwrap();
    let err = plan.forward::<f32>(&[], &[0.0], None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Allocation, "{err}");
    assert!(
        err.to_string().contains(&(1usize << 60).to_string()),
        "{err}"
    );
    // A weight gradient of 2^60 elements.
    let plan = Conv2dPlan::new(
        [1, 1, 1, 1],
        [1 << 30, 1, 1 << 15, 1 << 15],
        &Conv2dOptions::default().padding(1 << 15),
    )
    .unwrap();
    let err = plan.backward_weight::<f32>(&[0.0], &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Allocation, "{err}");
}

#[test]
fn empty_batch_works() {
    let y = conv2d(
        &zeros([0, 4, 5, 5]),
        &zeros([8, 4, 3, 3]),
        None,
        &Conv2dOptions::default(),
    )
    .unwrap();
    assert_eq!(y.dim(), (0, 8, 3, 3));
    let g = conv2d_backward(
        &zeros([0, 4, 5, 5]),
        &Array4::ones((8, 4, 3, 3)),
        &zeros([0, 8, 3, 3]),
        &Conv2dOptions::default(),
        GradMask::ALL,
    )
    .unwrap();
    assert_eq!(g.input.unwrap().dim(), (0, 4, 5, 5));
    assert!(g.weight.unwrap().iter().all(|&v| v == 0.0));
    assert!(g.bias.unwrap().iter().all(|&v| v == 0.0));
    let y = conv_transpose2d(
        &zeros([0, 4, 5, 5]),
        &zeros([4, 2, 3, 3]),
        None,
        &ConvTranspose2dOptions::default().stride(2),
    )
    .unwrap();
    assert_eq!(y.dim(), (0, 2, 11, 11));
}

#[test]
fn zero_sized_kernels_and_images() {
    conv_err(
        [1, 3, 6, 6],
        [4, 3, 0, 3],
        Conv2dOptions::default(),
        &[
            "kernel size should be greater than zero",
            "kernel_height: 0 kernel_width: 3",
        ],
    );
    // Without padding the kernel does not fit; with padding PyTorch still refuses an empty image.
    conv_err(
        [1, 3, 0, 6],
        [4, 3, 3, 3],
        Conv2dOptions::default(),
        &["(0 x 6)"],
    );
    conv_err(
        [1, 3, 0, 6],
        [4, 3, 3, 3],
        Conv2dOptions::default().padding(2),
        &[
            "Only zero batch or zero channel inputs are supported",
            "[1, 3, 0, 6]",
        ],
    );
    // An empty batch with an empty image is fine, as in PyTorch.
    let y = conv2d(
        &zeros([0, 3, 0, 6]),
        &zeros([4, 3, 3, 3]),
        None,
        &Conv2dOptions::default().padding(2),
    );
    assert_eq!(y.unwrap().dim(), (0, 4, 2, 8));
}

#[test]
fn transposed_empty_images_and_kernels_are_rejected() {
    let opts = ConvTranspose2dOptions::default();
    let err = ConvTranspose2dPlan::new([1, 2, 0, 3], [2, 1, 3, 3], &opts).unwrap_err();
    assert!(
        err.to_string()
            .contains("Only zero batch or zero channel inputs are supported")
            && err.to_string().contains("[1, 2, 0, 3]"),
        "{err}"
    );
    let err =
        ConvTranspose2dPlan::new([1, 3, 3, 5], [3, 2, 0, 1], &opts.clone().groups(3)).unwrap_err();
    assert!(
        err.to_string().contains("kernel_height: 0 kernel_width: 1"),
        "{err}"
    );
    // An empty batch of empty images is fine, as in conv2d.
    let plan = ConvTranspose2dPlan::new([0, 2, 0, 3], [2, 1, 3, 3], &opts).unwrap();
    assert_eq!(
        plan.forward::<f32>(&[], &[0.0; 18], None).unwrap(),
        Vec::<f32>::new()
    );
}

#[test]
fn extreme_strides_paddings_and_dilations_compute_the_taps_that_land() {
    let x: Vec<f32> = (0..4 * 3 * 6).map(|i| (i % 7) as f32 - 3.0).collect();
    let w: Vec<f32> = (0..6 * 2 * 9).map(|i| (i % 5) as f32 - 2.0).collect();
    let all = Algorithm::ALL;
    // A stride far past the image: one output pixel, the stride-1 convolution's first.
    let dense = Conv2dPlan::new(
        [1, 4, 3, 6],
        [6, 2, 3, 3],
        &Conv2dOptions::default().groups(2),
    )
    .unwrap()
    .forward(&x, &w, None)
    .unwrap();
    // Its gradients: the stride-1 convolution's, with only that pixel's output gradient.
    let gy: Vec<f32> = (0..6).map(|c| c as f32 - 2.5).collect();
    let dense_gy: Vec<f32> = (0..6 * 4)
        .map(|i| if i % 4 == 0 { gy[i / 4] } else { 0.0 })
        .collect();
    let dense_plan = Conv2dPlan::new(
        [1, 4, 3, 6],
        [6, 2, 3, 3],
        &Conv2dOptions::default().groups(2),
    )
    .unwrap();
    let dense_gx = dense_plan.backward_input(&dense_gy, &w).unwrap();
    let dense_gw = dense_plan.backward_weight(&x, &dense_gy).unwrap();
    for stride in [1 << 31, usize::MAX / 2] {
        let opts = Conv2dOptions::default().groups(2).stride(stride);
        let plan = Conv2dPlan::new([1, 4, 3, 6], [6, 2, 3, 3], &opts).unwrap();
        assert_eq!(plan.output_shape(), [1, 6, 1, 1]);
        for algorithm in all {
            let plan = plan.clone().with_algorithm(algorithm);
            let y = plan.forward(&x, &w, None).unwrap();
            let first: Vec<f32> = dense.chunks(4).map(|plane| plane[0]).collect();
            assert_eq!(y, first, "{}", algorithm.name());
            let gx = plan.backward_input(&gy, &w).unwrap();
            assert_eq!(gx, dense_gx, "{} input gradient", algorithm.name());
            let gw = plan.backward_weight(&x, &gy).unwrap();
            assert_eq!(gw, dense_gw, "{} weight gradient", algorithm.name());
        }
    }
    // 'same' padding with dilations of 2^31 and 2^32 - 1: only the centre tap lands.
    let x: Vec<f32> = (0..4 * 9 * 4).map(|i| (i % 11) as f32 - 5.0).collect();
    let w: Vec<f32> = (0..3 * 4 * 9).map(|i| (i % 3) as f32 - 1.0).collect();
    let centre: Vec<f32> = w.chunks(9).map(|taps| taps[4]).collect();
    let pointwise = Conv2dPlan::new([1, 4, 9, 4], [3, 4, 1, 1], &Conv2dOptions::default())
        .unwrap()
        .forward(&x, &centre, None)
        .unwrap();
    let opts = Conv2dOptions::default()
        .padding(Same)
        .dilation((1 << 31, (1 << 32) - 1));
    let plan = Conv2dPlan::new([1, 4, 9, 4], [3, 4, 3, 3], &opts).unwrap();
    let grad_out: Vec<f32> = (0..3 * 9 * 4).map(|i| (i % 4) as f32).collect();
    let pointwise_grads = (
        Conv2dPlan::new([1, 4, 9, 4], [3, 4, 1, 1], &Conv2dOptions::default())
            .unwrap()
            .backward_input(&grad_out, &centre)
            .unwrap(),
        Conv2dPlan::new([1, 4, 9, 4], [3, 4, 1, 1], &Conv2dOptions::default())
            .unwrap()
            .backward_weight(&x, &grad_out)
            .unwrap(),
    );
    for algorithm in all {
        let plan = plan.clone().with_algorithm(algorithm);
        assert_eq!(plan.forward(&x, &w, None).unwrap(), pointwise);
        assert_eq!(
            plan.backward_input(&grad_out, &w).unwrap(),
            pointwise_grads.0
        );
        let grad_w = plan.backward_weight(&x, &grad_out).unwrap();
        for (taps, &centre) in grad_w.chunks(9).zip(&pointwise_grads.1) {
            assert_eq!(taps, [0.0, 0.0, 0.0, 0.0, centre, 0.0, 0.0, 0.0, 0.0]);
        }
    }
}

#[test]
fn empty_tensors_with_per_plane_sizes_that_overflow() {
    // An empty batch: no padded rows are tabulated, whatever the height.
    let opts = Conv2dOptions::default()
        .stride(3)
        .padding(1)
        .dilation((2, 1))
        .groups(3)
        .padding_mode(PaddingMode::Reflect);
    let plan = Conv2dPlan::new([0, 3, usize::MAX / 2, 11], [9, 1, 1, 1], &opts).unwrap();
    assert_eq!(
        plan.forward::<f32>(&[], &[1.0; 9], None).unwrap(),
        Vec::<f32>::new()
    );
    assert_eq!(
        plan.backward_input::<f32>(&[], &[1.0; 9]).unwrap(),
        Vec::<f32>::new()
    );
    assert_eq!(plan.backward_weight::<f32>(&[], &[]).unwrap(), vec![0.0; 9]);
    // No batch and no channels, planes of 2^64 - 2 pixels.
    let opts = Conv2dOptions::default().groups(3);
    let plan = Conv2dPlan::new([0, 0, usize::MAX - 1, 12], [12, 0, 1, 1], &opts).unwrap();
    assert_eq!(
        plan.forward::<f32>(&[], &[], None).unwrap(),
        Vec::<f32>::new()
    );
    // No channels, a 2^40 x 2^40 image and kernel: one output pixel, the bias.
    let big = 1 << 40;
    let plan = Conv2dPlan::new([1, 0, big, big], [1, 0, big, big], &Default::default()).unwrap();
    assert_eq!(plan.output_shape(), [1, 1, 1, 1]);
    assert_eq!(plan.forward::<f32>(&[], &[], Some(&[2.5])).unwrap(), [2.5]);
    // Dilated kernel extents of 2^64: the message states them without overflowing.
    let err = Conv2dPlan::new(
        [1, 1, 5, 5],
        [1, 1, 2, 2],
        &Conv2dOptions::default().dilation(usize::MAX),
    )
    .unwrap_err();
    assert!(err.to_string().contains("18446744073709551616"), "{err}");
    // A transposed output size beyond i128: an overflow error.
    let m = usize::MAX - 1;
    let opts = ConvTranspose2dOptions::default().stride(m).dilation((3, 1));
    let err = ConvTranspose2dPlan::new([1, 1, m, m], [1, 1, m, m], &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overflow, "{err}");
}

#[test]
fn zero_channel_images_give_the_bias() {
    // Valid in PyTorch: no terms, so each output plane is its bias (zeros without one).
    let opts = Conv2dOptions::default().padding(2).groups(2);
    let plan = Conv2dPlan::new([1, 0, 10, 0], [6, 0, 3, 3], &opts).unwrap();
    assert_eq!(plan.output_shape(), [1, 6, 12, 2]);
    let bias = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let y = plan.forward(&[], &[], Some(&bias)).unwrap();
    for (plane, b) in y.chunks(24).zip(bias) {
        assert!(plane.iter().all(|&v| v == b));
    }
    assert_eq!(plan.backward_bias(&y).unwrap(), bias.map(|b| b * 24.0));
}

#[test]
fn bf16_strides_and_paddings_beyond_the_image() {
    // A stride and padding that leave the padded rows narrower than the left padding: every
    // output reads padding only. On CPUs with AMX this runs the bf16 tiles.
    use half::bf16;
    let x: Vec<bf16> = (0..32 * 3 * 3)
        .map(|i| bf16::from_f32((i % 7) as f32 - 3.0))
        .collect();
    let w: Vec<bf16> = (0..16 * 32 * 2 * 2)
        .map(|i| bf16::from_f32((i % 5) as f32 - 2.0))
        .collect();
    let b: Vec<bf16> = (0..16).map(|c| bf16::from_f32(c as f32)).collect();
    for (stride, padding) in [
        ((100, 100), (10, 10)),
        ((1, 100), (1, 10)),
        ((2, 7), (0, 5)),
    ] {
        let opts = Conv2dOptions::default().stride(stride).padding(padding);
        let plan = Conv2dPlan::new([1, 32, 3, 3], [16, 32, 2, 2], &opts).unwrap();
        let want = plan.clone().with_algorithm(Algorithm::DirectRows);
        let want = want.forward(&x, &w, Some(&b)).unwrap();
        for algorithm in Algorithm::ALL {
            let y = plan
                .clone()
                .with_algorithm(algorithm)
                .forward(&x, &w, Some(&b))
                .unwrap();
            let name = algorithm.name();
            assert_eq!(y, want, "stride {stride:?}, padding {padding:?}, {name}");
        }
    }
}
