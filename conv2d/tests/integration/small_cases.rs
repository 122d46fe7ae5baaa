//! A few small problems through every algorithm, every pass and both padding kinds, against
//! the oracle: small enough to run under Miri (`scripts/miri.sh`), which checks the
//! raw-buffer and threading code for undefined behaviour on the portable kernels. Under
//! Miri the GEMM algorithm is left out (its GEMM crate runs SIMD intrinsics Miri does not
//! implement); the test also runs natively, with it.

use crate::support::reference::{self, ConvSpec, Mode};
use crate::support::{check_close, random_vec, to_tensor};
use conv2d::{Algorithm, Conv2dOptions, Conv2dPlan, ConvTranspose2dOptions, ConvTranspose2dPlan};
use rand::{rngs::StdRng, SeedableRng};

fn algorithms() -> Vec<Algorithm> {
    // Under Miri the kernels run their portable builds, where `direct-tiled` runs
    // `im2col-gemm` too.
    let gemm = [Algorithm::Im2colGemm, Algorithm::DirectTiled];
    (Algorithm::ALL.into_iter())
        .filter(|a| !cfg!(miri) || !gemm.contains(a))
        .collect()
}

#[test]
fn small_problems_match_the_oracle_on_every_algorithm() {
    let mut rng = StdRng::seed_from_u64(5);
    // (input, weight, stride, padding, dilation, groups, mode)
    let problems = [
        (
            [1, 2, 5, 6],
            [4, 1, 3, 3],
            2,
            1,
            1,
            2,
            conv2d::PaddingMode::Zeros,
        ),
        (
            [2, 3, 4, 4],
            [2, 3, 2, 3],
            1,
            1,
            2,
            1,
            conv2d::PaddingMode::Zeros,
        ),
        (
            [1, 2, 6, 5],
            [2, 2, 3, 3],
            1,
            2,
            1,
            1,
            conv2d::PaddingMode::Reflect,
        ),
        (
            [1, 16, 3, 3],
            [16, 16, 1, 1],
            1,
            0,
            1,
            1,
            conv2d::PaddingMode::Zeros,
        ),
    ];
    for (x_shape, w_shape, stride, padding, dilation, groups, mode) in problems {
        let opts = Conv2dOptions::default()
            .stride(stride)
            .padding(padding)
            .dilation(dilation)
            .groups(groups)
            .padding_mode(mode);
        let plan = Conv2dPlan::new(x_shape, w_shape, &opts).unwrap();
        let x = random_vec::<f32>(x_shape.iter().product(), &mut rng);
        let w = random_vec::<f32>(w_shape.iter().product(), &mut rng);
        let b = random_vec::<f32>(w_shape[0], &mut rng);
        let gy = random_vec::<f32>(plan.output_shape().iter().product(), &mut rng);
        let spec = ConvSpec {
            stride: [stride; 2],
            pads: [padding; 4],
            dilation: [dilation; 2],
            groups,
            mode: match mode {
                conv2d::PaddingMode::Reflect => Mode::Reflect,
                _ => Mode::Zeros,
            },
        };
        let want = reference::conv2d(
            &to_tensor(&x_shape, &x),
            &to_tensor(&w_shape, &w),
            Some(&to_tensor(&[b.len()], &b)),
            &spec,
            Some(&to_tensor(&plan.output_shape(), &gy)),
        );
        for algorithm in algorithms() {
            let plan = plan.clone().with_algorithm(algorithm);
            let what = format!("{x_shape:?} {w_shape:?} {}", algorithm.name());
            let checks = [
                (
                    "output",
                    plan.forward(&x, &w, Some(&b)).unwrap(),
                    &want.output,
                ),
                (
                    "grad_input",
                    plan.backward_input(&gy, &w).unwrap(),
                    &want.grad_input,
                ),
                (
                    "grad_weight",
                    plan.backward_weight(&x, &gy).unwrap(),
                    &want.grad_weight,
                ),
                (
                    "grad_bias",
                    plan.backward_bias(&gy).unwrap(),
                    &want.grad_bias,
                ),
            ];
            for (pass, got, want) in checks {
                check_close(&format!("{what} {pass}"), &got, want).unwrap();
            }
        }
    }
    // A transposed convolution with stride and output padding.
    let topts = ConvTranspose2dOptions::default()
        .stride(2)
        .padding(1)
        .output_padding(1);
    let tplan = ConvTranspose2dPlan::new([1, 2, 3, 4], [2, 3, 3, 3], &topts).unwrap();
    let x = random_vec::<f32>(24, &mut rng);
    let w = random_vec::<f32>(54, &mut rng);
    let out_shape = tplan.output_shape();
    let want = reference::conv_transpose2d(
        &to_tensor(&[1, 2, 3, 4], &x),
        &to_tensor(&[2, 3, 3, 3], &w),
        None,
        [2, 2],
        [1, 1],
        [1, 1],
        1,
        [out_shape[2], out_shape[3]],
        None,
    );
    for algorithm in algorithms() {
        let got = tplan
            .clone()
            .with_algorithm(algorithm)
            .forward(&x, &w, None)
            .unwrap();
        check_close(
            &format!("transposed {}", algorithm.name()),
            &got,
            &want.output,
        )
        .unwrap();
    }
}
