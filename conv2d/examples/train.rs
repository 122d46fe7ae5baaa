//! Trains a tiny convolutional autoencoder (Conv2d down, ConvTranspose2d up) with plain SGD
//! through the library's backward API, on images it generates, and prints a falling loss.
//!
//! Run with `cargo run --release --example train`.

use conv2d::nn::{Conv2dConfig, ConvTranspose2dConfig};
use conv2d::GradMask;
use ndarray::{Array4, Zip};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A batch of 16x16 images, each a soft disc at a random place and of a random size.
fn batch(rng: &mut StdRng, n: usize) -> Array4<f32> {
    let mut x = Array4::zeros((n, 1, 16, 16));
    for mut image in x.outer_iter_mut() {
        let (cy, cx, r) = (
            rng.random_range(4.0..12.0),
            rng.random_range(4.0..12.0),
            rng.random_range(2.0..5.0f32),
        );
        for ((_, y, x), v) in image.indexed_iter_mut() {
            let d = ((y as f32 - cy).powi(2) + (x as f32 - cx).powi(2)).sqrt();
            *v = (1.0 - (d - r).max(0.0) / 2.0).max(0.0);
        }
    }
    x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut down = Conv2dConfig::new(1, 8, 3)
        .stride(2)
        .padding(1)
        .init::<f32>(&mut rng)?;
    let mut up = ConvTranspose2dConfig::new(8, 1, 3)
        .stride(2)
        .padding(1)
        .output_padding(1)
        .init::<f32>(&mut rng)?;
    let learning_rate = 0.05;
    let mut first = None;
    let mut last = 0.0;
    for step in 0..=300 {
        let x = batch(&mut rng, 16);
        // Forward: x -> conv -> ReLU -> transposed conv -> reconstruction.
        let pre = down.forward(&x)?;
        let hidden = pre.mapv(|v| v.max(0.0));
        let y = up.forward(&hidden)?;
        let diff = &y - &x;
        let loss = diff.mapv(|d| d * d).mean().unwrap_or(0.0);
        // Backward: mean squared error, then each layer through the library.
        let grad_y = diff.mapv(|d| 2.0 * d / diff.len() as f32);
        let g_up = up.backward(&hidden, &grad_y, GradMask::ALL)?;
        let mut grad_pre = g_up.input.ok_or("input gradient requested")?;
        Zip::from(&mut grad_pre).and(&pre).for_each(|g, &p| {
            if p <= 0.0 {
                *g = 0.0
            }
        });
        let g_down = down.backward(
            &x,
            &grad_pre,
            GradMask {
                input: false,
                ..GradMask::ALL
            },
        )?;
        // SGD.
        up.weight.scaled_add(
            -learning_rate,
            &g_up.weight.ok_or("weight gradient requested")?,
        );
        down.weight.scaled_add(
            -learning_rate,
            &g_down.weight.ok_or("weight gradient requested")?,
        );
        for (bias, grad) in [(&mut up.bias, g_up.bias), (&mut down.bias, g_down.bias)] {
            if let (Some(b), Some(g)) = (bias.as_mut(), grad) {
                b.scaled_add(-learning_rate, &g);
            }
        }
        if step % 50 == 0 {
            println!("step {step:>3}: reconstruction loss {loss:.5}");
        }
        first.get_or_insert(loss);
        last = loss;
    }
    let first = first.unwrap_or(last);
    println!("loss fell from {first:.5} to {last:.5}");
    if last >= first / 2.0 {
        return Err(format!("training did not halve the loss ({first} -> {last})").into());
    }
    Ok(())
}
