//! Every example from PyTorch's `F.conv2d`, `nn.Conv2d` and `nn.ConvTranspose2d` docs, with the
//! same shapes, printed as PyTorch prints `output.size()`.
//!
//! Run with `cargo run --release --example tour`.

use conv2d::nn::{Conv2dConfig, ConvTranspose2dConfig};
use conv2d::{conv2d, conv2d_backward, Conv2dOptions, GradMask};
use ndarray::{Array, Array4, Dimension};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// `torch.randn`-like data (uniform is enough to show shapes).
fn randn(shape: [usize; 4], rng: &mut StdRng) -> Array4<f32> {
    Array4::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0))
}

fn size<D: Dimension>(a: &Array<f32, D>) -> String {
    let dims: Vec<String> = a.shape().iter().map(usize::to_string).collect();
    format!("torch.Size([{}])", dims.join(", "))
}

fn main() -> Result<(), conv2d::ConvError> {
    let mut rng = StdRng::seed_from_u64(0);

    println!("# F.conv2d: with square kernels and equal stride");
    let filters = randn([8, 4, 3, 3], &mut rng);
    let inputs = randn([1, 4, 5, 5], &mut rng);
    let out = conv2d(
        &inputs,
        &filters,
        None,
        &Conv2dOptions::default().padding(1),
    )?;
    println!(
        "F.conv2d(inputs (1, 4, 5, 5), filters (8, 4, 3, 3), padding=1).size() = {}",
        size(&out)
    );

    let input = randn([20, 16, 50, 100], &mut rng);
    println!("\n# nn.Conv2d on input (20, 16, 50, 100)");
    let layers = [
        (
            "nn.Conv2d(16, 33, 3, stride=2)",
            Conv2dConfig::new(16, 33, 3).stride(2),
        ),
        (
            "nn.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2))",
            Conv2dConfig::new(16, 33, (3, 5))
                .stride((2, 1))
                .padding((4, 2)),
        ),
        (
            "nn.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1))",
            Conv2dConfig::new(16, 33, (3, 5))
                .stride((2, 1))
                .padding((4, 2))
                .dilation((3, 1)),
        ),
    ];
    for (text, config) in layers {
        let m = config.init::<f32>(&mut rng)?;
        println!("{text}: output.size() = {}", size(&m.forward(&input)?));
    }

    println!("\n# nn.ConvTranspose2d on input (20, 16, 50, 100)");
    let layers = [
        (
            "nn.ConvTranspose2d(16, 33, 3, stride=2)",
            ConvTranspose2dConfig::new(16, 33, 3).stride(2),
        ),
        (
            "nn.ConvTranspose2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2))",
            ConvTranspose2dConfig::new(16, 33, (3, 5))
                .stride((2, 1))
                .padding((4, 2)),
        ),
    ];
    for (text, config) in layers {
        let m = config.init::<f32>(&mut rng)?;
        println!("{text}: output.size() = {}", size(&m.forward(&input)?));
    }

    println!("\n# exact output size can be also specified as an argument");
    let input = randn([1, 16, 12, 12], &mut rng);
    let downsample = Conv2dConfig::new(16, 16, 3)
        .stride(2)
        .padding(1)
        .init::<f32>(&mut rng)?;
    let upsample = ConvTranspose2dConfig::new(16, 16, 3)
        .stride(2)
        .padding(1)
        .init::<f32>(&mut rng)?;
    let h = downsample.forward(&input)?;
    println!("h = downsample(input); h.size() = {}", size(&h));
    let output = upsample.forward_with_output_size(&h, input.shape())?;
    println!(
        "output = upsample(h, output_size=input.size()); output.size() = {}",
        size(&output)
    );

    println!("\n# and backward: the gradients of F.conv2d(inputs, filters, padding=1)");
    let gy = Array4::<f32>::ones(out.dim());
    let g = conv2d_backward(
        &inputs,
        &filters,
        &gy,
        &Conv2dOptions::default().padding(1),
        GradMask::ALL,
    )?;
    let (gx, gw) = (g.input.expect("requested"), g.weight.expect("requested"));
    println!(
        "grad_input.size() = {}, grad_weight.size() = {}",
        size(&gx),
        size(&gw)
    );
    Ok(())
}
