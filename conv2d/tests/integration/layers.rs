//! `nn.Conv2d` / `nn.ConvTranspose2d`: PyTorch's parameter shapes and initialisation, and
//! layers that agree with the functional API.

use crate::support::random_vec;
use conv2d::nn::{Conv2dConfig, ConvTranspose2dConfig};
use conv2d::{conv2d, conv_transpose2d, GradMask, PaddingMode, Same};
use ndarray::{Array3, Array4};
use num_complex::Complex;
use rand::{rngs::StdRng, SeedableRng};

/// Every value within `bound`, and the extremes close to it (the draw is uniform over the
/// whole interval, not a narrower one).
fn assert_uniform_within(values: &[f64], bound: f64) {
    assert!(
        values.iter().all(|v| v.abs() <= bound),
        "a value exceeds {bound}"
    );
    let max = values.iter().cloned().fold(f64::MIN, f64::max);
    let min = values.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        max > 0.9 * bound && min < -0.9 * bound,
        "range [{min}, {max}] too narrow for {bound}"
    );
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    assert!(mean.abs() < 0.1 * bound, "mean {mean} is not near 0");
}

#[test]
fn conv2d_initialises_like_pytorch() {
    // k = groups / (in_channels * kh * kw)
    let m = Conv2dConfig::new(6, 12, (3, 5))
        .groups(3)
        .init_seeded::<f64>(1)
        .unwrap();
    assert_eq!(m.weight.dim(), (12, 2, 3, 5));
    let bound = (3.0f64 / (6.0 * 15.0)).sqrt();
    assert_uniform_within(m.weight.as_slice().unwrap(), bound);
    let bias = m.bias.unwrap();
    assert_eq!(bias.len(), 12);
    assert!(bias.iter().all(|b| b.abs() <= bound));
}

#[test]
fn conv_transpose2d_initialises_like_pytorch() {
    // k = groups / (out_channels * kh * kw); weight (in, out/groups, kh, kw)
    let m = ConvTranspose2dConfig::new(8, 6, 4)
        .groups(2)
        .init_seeded::<f64>(2)
        .unwrap();
    assert_eq!(m.weight.dim(), (8, 3, 4, 4));
    let bound = (2.0f64 / (6.0 * 16.0)).sqrt();
    assert_uniform_within(m.weight.as_slice().unwrap(), bound);
    assert!(m.bias.unwrap().iter().all(|b| b.abs() <= bound));
}

#[test]
fn complex_parameters_draw_both_parts() {
    let m = Conv2dConfig::new(4, 8, 3)
        .init_seeded::<Complex<f64>>(3)
        .unwrap();
    let bound = (1.0f64 / 36.0).sqrt();
    let re: Vec<f64> = m.weight.iter().map(|c| c.re).collect();
    let im: Vec<f64> = m.weight.iter().map(|c| c.im).collect();
    assert_uniform_within(&re, bound);
    assert_uniform_within(&im, bound);
}

#[test]
fn seeds_reproduce_and_differ() {
    let c = Conv2dConfig::new(3, 4, 3);
    assert_eq!(
        c.init_seeded::<f32>(5).unwrap(),
        c.init_seeded::<f32>(5).unwrap()
    );
    assert_ne!(
        c.init_seeded::<f32>(5).unwrap().weight,
        c.init_seeded::<f32>(6).unwrap().weight
    );
}

#[test]
fn layers_agree_with_the_functional_api() {
    let mut rng = StdRng::seed_from_u64(4);
    let config = Conv2dConfig::new(4, 6, (2, 3))
        .padding(Same)
        .dilation((2, 1))
        .groups(2)
        .padding_mode(PaddingMode::Circular);
    let m = config.init_seeded::<f32>(0).unwrap();
    let x = Array4::from_shape_vec((2, 4, 7, 9), random_vec::<f32>(2 * 4 * 63, &mut rng)).unwrap();
    let y = m.forward(&x).unwrap();
    assert_eq!(y.dim(), (2, 6, 7, 9));
    assert_eq!(
        y,
        conv2d(
            &x,
            &m.weight,
            m.bias.as_ref().map(|b| b.view()),
            &config.options()
        )
        .unwrap()
    );

    let t = ConvTranspose2dConfig::new(4, 6, 3)
        .stride(2)
        .output_padding(1)
        .groups(2)
        .init_seeded::<f32>(0)
        .unwrap();
    let yt = t.forward(&x).unwrap();
    assert_eq!(yt.dim(), (2, 6, 16, 20));
    assert_eq!(
        yt,
        conv_transpose2d(
            &x,
            &t.weight,
            t.bias.as_ref().map(|b| b.view()),
            &t.config().options()
        )
        .unwrap()
    );
}

#[test]
fn unbatched_input_gives_unbatched_output_and_gradients() {
    let mut rng = StdRng::seed_from_u64(5);
    let m = Conv2dConfig::new(3, 5, 3)
        .padding(1)
        .padding_mode(PaddingMode::Reflect)
        .init_seeded::<f64>(0)
        .unwrap();
    let x3 = Array3::from_shape_vec((3, 6, 6), random_vec::<f64>(108, &mut rng)).unwrap();
    let y3 = m.forward(&x3).unwrap();
    assert_eq!(y3.dim(), (5, 6, 6));
    let y4 = m
        .forward(&x3.clone().insert_axis(ndarray::Axis(0)))
        .unwrap();
    assert_eq!(y4.index_axis(ndarray::Axis(0), 0), y3);
    let g = m
        .backward(&x3, &Array3::ones((5, 6, 6)), GradMask::ALL)
        .unwrap();
    assert_eq!(g.input.unwrap().dim(), (3, 6, 6));
    assert_eq!(g.bias.unwrap().to_vec(), vec![36.0; 5]);
}

#[test]
fn a_layer_without_bias_returns_no_bias_gradient() {
    let m = ConvTranspose2dConfig::new(2, 2, 2)
        .stride(2)
        .bias(false)
        .init_seeded::<f32>(0)
        .unwrap();
    let x = Array4::<f32>::ones((1, 2, 3, 3));
    let g = m
        .backward(&x, &Array4::ones((1, 2, 6, 6)), GradMask::ALL)
        .unwrap();
    assert!(g.bias.is_none());
    assert!(g.weight.is_some() && g.input.is_some());
}

#[test]
fn non_contiguous_views_give_the_same_result() {
    let mut rng = StdRng::seed_from_u64(6);
    let m = Conv2dConfig::new(3, 4, 3).init_seeded::<f32>(0).unwrap();
    let x = Array4::from_shape_vec((2, 3, 8, 8), random_vec::<f32>(384, &mut rng)).unwrap();
    // The same values through a transposed (non-standard-layout) view.
    let xt = x
        .clone()
        .permuted_axes([0, 1, 3, 2])
        .as_standard_layout()
        .to_owned();
    let view = xt.view().permuted_axes([0, 1, 3, 2]);
    assert!(!view.is_standard_layout());
    assert_eq!(m.forward(&view).unwrap(), m.forward(&x).unwrap());
}
