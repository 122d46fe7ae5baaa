//! Every bad argument returns an `Err` whose message names the offending values; nothing
//! panics.

use candle_core::{DType, Device, Result, Tensor};
use conv2d_candle::{
    conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward, Conv2dOptions,
    ConvTranspose2dOptions, GradMask, PaddingMode, Same,
};

fn zeros(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(shape, dtype, &Device::Cpu).unwrap()
}

fn f32s(shape: &[usize]) -> Tensor {
    zeros(shape, DType::F32)
}

/// Asserts that `result` is an error whose message contains every one of `parts`.
#[track_caller]
fn assert_err(result: Result<Tensor>, parts: &[&str]) {
    match result {
        Ok(t) => panic!(
            "expected an error mentioning {parts:?}, got a tensor {:?}",
            t.dims()
        ),
        Err(e) => {
            let msg = e.to_string();
            for part in parts {
                assert!(msg.contains(part), "{msg:?} does not mention {part:?}");
            }
        }
    }
}

#[test]
fn conv2d_rejects_bad_options_with_conv2d_messages() {
    let (x, w) = (f32s(&[1, 4, 8, 8]), f32s(&[8, 4, 3, 3]));
    let bad = [
        (Conv2dOptions::default().stride(0), "non-positive stride"),
        (
            Conv2dOptions::default().dilation((1, 0)),
            "dilation should be greater than zero",
        ),
        (Conv2dOptions::default().groups(0), "non-positive groups"),
        (Conv2dOptions::default().groups(3), "groups=3"),
        (
            Conv2dOptions::default().padding(Same).stride(2),
            "padding='same'",
        ),
        (
            Conv2dOptions::default()
                .padding(8)
                .padding_mode(PaddingMode::Reflect),
            "reflect",
        ),
    ];
    for (opts, message) in bad {
        assert_err(conv2d(&x, &w, None, &opts), &["conv2d: ", message]);
    }
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let opts = Conv2dOptions::default();
    let w = f32s(&[8, 4, 3, 3]);
    assert_err(
        conv2d(&f32s(&[4, 8]), &w, None, &opts),
        &["3D (unbatched) or 4D (batched)", "[4, 8]"],
    );
    assert_err(
        conv2d(&f32s(&[1, 1, 4, 8, 8]), &w, None, &opts),
        &["[1, 1, 4, 8, 8]"],
    );
    assert_err(
        conv2d(&f32s(&[1, 4, 8, 8]), &f32s(&[8, 4, 3]), None, &opts),
        &["4-dimensional weight", "[8, 4, 3]"],
    );
    assert_err(
        conv2d(&f32s(&[1, 5, 8, 8]), &w, None, &opts),
        &["to have 4 channels, but got 5 channels"],
    );
    assert_err(
        conv2d(&f32s(&[1, 4, 2, 2]), &w, None, &opts),
        &["Kernel size can't be greater than actual input size"],
    );
    let x = f32s(&[1, 4, 8, 8]);
    assert_err(
        conv2d(&x, &w, Some(&f32s(&[7])), &opts),
        &["bias", "8", "[7]"],
    );
    assert_err(
        conv2d(&x, &w, Some(&f32s(&[1, 8])), &opts),
        &["1-dimensional bias", "[1, 8]"],
    );
}

#[test]
fn dtypes_must_match_and_be_floating_point() {
    let opts = Conv2dOptions::default();
    let x = f32s(&[1, 4, 8, 8]);
    assert_err(
        conv2d(&x, &zeros(&[8, 4, 3, 3], DType::F64), None, &opts),
        &["one dtype", "F32", "F64"],
    );
    assert_err(
        conv2d(
            &x,
            &f32s(&[8, 4, 3, 3]),
            Some(&zeros(&[8], DType::BF16)),
            &opts,
        ),
        &["one dtype", "BF16"],
    );
    for dtype in [DType::U8, DType::U32, DType::I64] {
        let (x, w) = (zeros(&[1, 4, 8, 8], dtype), zeros(&[8, 4, 3, 3], dtype));
        assert_err(
            conv2d(&x, &w, None, &opts),
            &["not supported", &format!("{dtype:?}"), "F32"],
        );
    }
}

#[test]
fn conv_transpose2d_rejects_bad_arguments() {
    let (x, w) = (f32s(&[1, 16, 6, 6]), f32s(&[16, 8, 3, 3]));
    let o = || ConvTranspose2dOptions::default().stride(2).padding(1);
    let bad = [
        (
            o().output_padding(2),
            "output padding must be smaller than either stride or dilation",
        ),
        (
            o().output_size([13, 13]),
            "valid sizes range from [11, 11] to [12, 12]",
        ),
        (
            o().output_size([1, 12, 12]),
            "output_size must have 2 or 4 elements (got 3)",
        ),
        (o().groups(3), "groups=3"),
        (o().stride(0), "non-positive stride"),
    ];
    for (opts, message) in bad {
        assert_err(
            conv_transpose2d(&x, &w, None, &opts),
            &["conv_transpose2d: ", message],
        );
    }
    // unbatched: 2 or 3 numbers
    let x3 = f32s(&[16, 6, 6]);
    assert_err(
        conv_transpose2d(&x3, &w, None, &o().output_size([1, 8, 12, 12])),
        &["for 3D input, output_size must have 2 or 3 elements (got 4)"],
    );
    assert_err(
        conv_transpose2d(&f32s(&[1, 15, 6, 6]), &w, None, &o()),
        &["expected input[1, 15, 6, 6] to have 16 channels"],
    );
    assert_err(
        conv_transpose2d(&x, &w, Some(&f32s(&[16])), &o()),
        &["bias", "[16]"],
    );
}

#[test]
fn backward_rejects_a_grad_output_of_the_wrong_shape() -> Result<()> {
    let (x, w) = (f32s(&[2, 4, 8, 8]), f32s(&[8, 4, 3, 3]));
    let opts = Conv2dOptions::default();
    let gy = f32s(&[2, 8, 6, 5]);
    let err = conv2d_backward(&x, &w, &gy, &opts, GradMask::ALL).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("grad_output of shape [2, 8, 6, 6], but got [2, 8, 6, 5]"),
        "{msg}"
    );
    let gy = f32s(&[2, 8, 6, 6]);
    assert!(conv2d_backward(&x, &w, &gy, &opts, GradMask::ALL).is_ok());

    let t = ConvTranspose2dOptions::default();
    let (x, w) = (f32s(&[1, 4, 5, 5]), f32s(&[4, 2, 2, 2]));
    let err = conv_transpose2d_backward(&x, &w, &f32s(&[1, 2, 5, 5]), &t, GradMask::ALL);
    assert!(err.unwrap_err().to_string().contains("[1, 2, 6, 6]"));
    Ok(())
}
