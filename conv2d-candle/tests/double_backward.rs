//! Gradients of gradients: with `CANDLE_GRAD_DO_NOT_DETACH=1` candle keeps the backward
//! graph, and the backward ops' own `bwd` runs. Its own process, since the variable is read
//! once per thread.
//!
//! For `L1 = sum(conv(x, w, b) * gy)` the first gradients are `gx = Bx(gy, w)`,
//! `gw = Bw(x, gy)`, `gb = sum(gy)`; for `L2 = sum(gx * a) + sum(gw * c) + sum(gb * e)`:
//! `dL2/dx = Bx(gy, c)`, `dL2/dw = Bw(a, gy)`, `dL2/dgy = F(a, w) + F(x, c) + e`. Each is
//! computed independently with candle's own first-order convolution autograd in `f64`.

mod support;

use candle_core::{DType, Result, Tensor, Var};
use conv2d_candle::{conv2d, conv_transpose2d, Conv2dOptions, ConvTranspose2dOptions};
use support::{check_close, Rng};

type Conv<'a> = dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + 'a;

/// `(dL/dx, dL/dw)` for `L = sum(conv(x, w) * gy)` through candle's autograd.
fn first_order(conv: &Conv, x: &Tensor, w: &Tensor, gy: &Tensor) -> Result<(Tensor, Tensor)> {
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let grads = (conv(&xv, &wv)? * gy)?.sum_all()?.backward()?;
    Ok((
        grads.get(&xv).unwrap().clone(),
        grads.get(&wv).unwrap().clone(),
    ))
}

/// Checks the second-order gradients of `ours` (with a bias) against `candle`'s first-order
/// ones, on `f64` tensors. Every value is in (-1, 1) and every sum has at most 64 terms, so
/// 64 bounds the magnitude of each.
fn check(
    ours: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    candle: &Conv,
    x_shape: &[usize],
    w_shape: &[usize],
    seed: u64,
) -> Result<()> {
    let mut rng = Rng::new(seed);
    let x = Var::from_tensor(&rng.tensor(x_shape, DType::F64)?)?;
    let w = Var::from_tensor(&rng.tensor(w_shape, DType::F64)?)?;
    let y0 = candle(&x, &w)?;
    let cout = y0.dim(1)?;
    let b = Var::from_tensor(&rng.tensor(&[cout], DType::F64)?)?;
    let gy = Var::from_tensor(&rng.tensor(y0.dims(), DType::F64)?)?;
    let (a, c, e) = (
        rng.tensor(x_shape, DType::F64)?,
        rng.tensor(w_shape, DType::F64)?,
        rng.tensor(&[cout], DType::F64)?,
    );

    let y = ours(&x, &w, &b)?;
    let first = (&y * gy.as_tensor())?.sum_all()?.backward()?;
    let (gx, gw, gb) = (
        first.get(&x).unwrap(),
        first.get(&w).unwrap(),
        first.get(&b).unwrap(),
    );
    let l2 = ((gx * &a)?.sum_all()? + (gw * &c)?.sum_all()?)? + (gb * &e)?.sum_all()?;
    let second = l2?.backward()?;

    let (bx_gy_c, _) = first_order(candle, &x, &c, &gy)?;
    let (_, bw_a_gy) = first_order(candle, &a, &w, &gy)?;
    let e4 = e.reshape((1, cout, 1, 1))?.broadcast_as(y.shape())?;
    let d_gy = ((candle(&a, &w)? + candle(&x, &c)?)? + e4)?;
    let want = [("dx", &x, bx_gy_c), ("dw", &w, bw_a_gy), ("dgy", &gy, d_gy)];
    for (what, var, want) in want {
        let got = second
            .get(var)
            .ok_or_else(|| candle_core::Error::Msg(format!("no second-order {what}")))?;
        let magnitude = (want.ones_like()? * 64.0)?;
        check_close(what, got, &want, &magnitude, 64).map_err(candle_core::Error::Msg)?;
    }
    Ok(())
}

#[test]
fn second_order_gradients_of_conv2d_and_conv_transpose2d() -> Result<()> {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    let opts = Conv2dOptions::default().stride(2).padding(1);
    check(
        &|x, w, b| conv2d(x, w, Some(b), &opts),
        &|x, w| x.conv2d(w, 1, 2, 1, 1),
        &[2, 3, 7, 7],
        &[4, 3, 3, 3],
        11,
    )?;
    let opts = ConvTranspose2dOptions::default()
        .stride(2)
        .padding(1)
        .dilation(2);
    check(
        &|x, w, b| conv_transpose2d(x, w, Some(b), &opts),
        &|x, w| x.conv_transpose2d(w, 1, 0, 2, 2),
        &[2, 3, 4, 5],
        &[3, 2, 3, 3],
        12,
    )
}
