//! Convolutions on a picture: edge detection, a Gaussian blur, a strided downsample and a
//! transposed-convolution upsample, each written as a PNG you can look at.
//!
//! Run with `cargo run --release --example image` (reads `examples/assets/scene.png`, writes
//! into `target/image-example/`), or `cargo run --release --example image -- IN.png OUT_DIR`.
//!
//! What it writes:
//! - `edges.png`: Sobel gradient magnitude of the grey image, with replicate padding so the
//!   picture's own border is not an edge;
//! - `blur.png`: a 7x7 Gaussian (sigma 1.5) applied per colour channel (a depthwise
//!   convolution, `groups = 3`) with reflect padding;
//! - `down.png`: half size, a binomial low-pass filter applied with stride 2;
//! - `up.png`: `down.png` brought back to full size by a bilinear transposed convolution
//!   (stride 2), divided by the same transposed convolution of ones so the border keeps its
//!   brightness.

use conv2d::{conv2d, conv_transpose2d, Conv2dOptions, ConvTranspose2dOptions, PaddingMode};
use image::{GrayImage, RgbImage};
use ndarray::{s, Array1, Array4, ArrayView2, Axis};
use std::error::Error;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let input = args.next().map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/assets/scene.png"),
        PathBuf::from,
    );
    let out_dir = args
        .next()
        .map_or_else(|| PathBuf::from("target/image-example"), PathBuf::from);
    std::fs::create_dir_all(&out_dir)?;

    let picture = image::open(&input)?.to_rgb8();
    let rgb = to_tensor(&picture);
    let (height, width) = (rgb.shape()[2], rgb.shape()[3]);
    println!("read {} ({width}x{height})", input.display());

    // Edges: grey = 1x1 convolution with the luma weights, then Sobel x and y as the two
    // output channels of one 3x3 convolution.
    let luma = Array4::from_shape_vec((1, 3, 1, 1), vec![0.299, 0.587, 0.114])?;
    let grey = conv2d(&rgb, &luma, None, &Conv2dOptions::default())?;
    let sobel_x = [-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0];
    let sobel_y = [-1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0];
    let sobel = Array4::from_shape_vec((2, 1, 3, 3), [sobel_x, sobel_y].concat())?;
    let replicate = Conv2dOptions::default()
        .padding(1)
        .padding_mode(PaddingMode::Replicate);
    let gradient = conv2d(&grey, &sobel, None, &replicate)?;
    let magnitude = gradient
        .index_axis(Axis(0), 0)
        .map_axis(Axis(0), |g| g.dot(&g).sqrt());
    let peak = magnitude.fold(0.0f32, |m, &v| m.max(v));
    save_grey(
        magnitude.mapv(|v| v / peak).view(),
        &out_dir.join("edges.png"),
    )?;
    // The sky's gentle gradient is not an edge; the house wall's side is.
    let (sky, wall) = (magnitude[[10, 10]] / peak, magnitude[[70, 40]] / peak);
    check(sky < 0.1 && wall > 0.3, "edges: sky flat, wall edge strong")?;

    // Gaussian blur: one 7x7 kernel per channel (depthwise), reflect padding.
    let gauss = gaussian(7, 1.5);
    let blur_kernel = separable(&gauss, 3);
    let reflect = Conv2dOptions::default()
        .padding(3)
        .padding_mode(PaddingMode::Reflect)
        .groups(3);
    let blurred = conv2d(&rgb, &blur_kernel, None, &reflect)?;
    save_rgb(&blurred, &out_dir.join("blur.png"))?;
    let mean_shift = (blurred.mean().unwrap_or(0.0) - rgb.mean().unwrap_or(0.0)).abs();
    check(mean_shift < 0.01, "blur: mean brightness kept")?;

    // Downsample: binomial [1, 2, 1]/4 low-pass with stride 2.
    let binomial = Array1::from(vec![0.25f32, 0.5, 0.25]);
    let down_kernel = separable(&binomial, 3);
    let halve = Conv2dOptions::default()
        .stride(2)
        .padding(1)
        .padding_mode(PaddingMode::Replicate)
        .groups(3);
    let down = conv2d(&rgb, &down_kernel, None, &halve)?;
    save_rgb(&down, &out_dir.join("down.png"))?;
    check(
        down.shape() == [1, 3, height.div_ceil(2), width.div_ceil(2)],
        "down: half size",
    )?;

    // Upsample: bilinear 4x4 transposed convolution with stride 2, normalised by the
    // coverage (the same transposed convolution of ones), which is below one at the border.
    let bilinear = Array1::from(vec![0.25f32, 0.75, 0.75, 0.25]);
    let up_kernel = separable(&bilinear, 3);
    let double = ConvTranspose2dOptions::default()
        .stride(2)
        .padding(1)
        .groups(3);
    let up = conv_transpose2d(&down, &up_kernel, None, &double)?;
    let coverage = conv_transpose2d(&Array4::ones(down.raw_dim()), &up_kernel, None, &double)?;
    let up = up / coverage;
    save_rgb(&up, &out_dir.join("up.png"))?;
    let up_crop = up.slice(s![.., .., ..height, ..width]);
    let psnr = psnr(&rgb, &up_crop.to_owned());
    println!("up: {psnr:.1} dB PSNR against the original");
    check(psnr > 20.0, "up: close to the original")?;

    println!(
        "wrote edges.png, blur.png, down.png, up.png into {}",
        out_dir.display()
    );
    Ok(())
}

/// Fails the example (and CI) when a property of the result does not hold.
fn check(holds: bool, what: &str) -> Result<(), Box<dyn Error>> {
    if holds {
        println!("ok: {what}");
        Ok(())
    } else {
        Err(format!("failed: {what}").into())
    }
}

/// A normalised 1D Gaussian of `size` taps.
fn gaussian(size: usize, sigma: f32) -> Array1<f32> {
    let centre = (size - 1) as f32 / 2.0;
    let taps = Array1::from_shape_fn(size, |i| {
        (-((i as f32 - centre).powi(2)) / (2.0 * sigma * sigma)).exp()
    });
    let total = taps.sum();
    taps / total
}

/// The separable kernel `taps[i] * taps[j]` once per channel: a depthwise weight
/// `[channels, 1, n, n]` for `groups = channels`.
fn separable(taps: &Array1<f32>, channels: usize) -> Array4<f32> {
    let n = taps.len();
    Array4::from_shape_fn((channels, 1, n, n), |(_, _, i, j)| taps[i] * taps[j])
}

/// An RGB picture as a `[1, 3, H, W]` tensor with values in `[0, 1]`.
fn to_tensor(picture: &RgbImage) -> Array4<f32> {
    let (w, h) = picture.dimensions();
    Array4::from_shape_fn((1, 3, h as usize, w as usize), |(_, c, y, x)| {
        f32::from(picture.get_pixel(x as u32, y as u32)[c]) / 255.0
    })
}

fn to_byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

fn save_rgb(t: &Array4<f32>, path: &Path) -> Result<(), Box<dyn Error>> {
    let (h, w) = (t.shape()[2], t.shape()[3]);
    let picture = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb([0, 1, 2].map(|c| to_byte(t[[0, c, y as usize, x as usize]])))
    });
    picture.save(path)?;
    Ok(())
}

fn save_grey(t: ArrayView2<f32>, path: &Path) -> Result<(), Box<dyn Error>> {
    let (h, w) = t.dim();
    let picture = GrayImage::from_fn(w as u32, h as u32, |x, y| {
        image::Luma([to_byte(t[[y as usize, x as usize]])])
    });
    picture.save(path)?;
    Ok(())
}

/// Peak signal-to-noise ratio of `b` against `a`, both in `[0, 1]`.
fn psnr(a: &Array4<f32>, b: &Array4<f32>) -> f32 {
    let mse = (a - b).mapv(|d| d * d).mean().unwrap_or(0.0);
    10.0 * (1.0 / mse).log10()
}
