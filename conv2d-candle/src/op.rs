//! The candle custom op: one struct for the forward pass and each gradient of either plan.
//!
//! The forward pass `y = F(x, w)` is bilinear, and its gradients are its adjoints:
//! `<F(x, w), g> = <x, Bx(g, w)> = <w, Bw(x, g)>`. So the gradient of every role is again a
//! role of the same plan (see [`ConvOp`]'s `bwd`), and gradients of gradients run our kernels
//! too when candle keeps the backward graph (`CANDLE_GRAD_DO_NOT_DETACH=1`).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use conv2d::{Conv2dPlan, ConvTranspose2dPlan};

use crate::storage::{self, Kernel};

/// The validated convolution an op runs.
#[derive(Debug)]
pub(crate) enum Plan {
    Conv(Conv2dPlan),
    Transpose(ConvTranspose2dPlan),
}

/// Runs `$body` with `$p` bound to whichever plan `$plan` holds: both plans have the same
/// method names and signatures.
macro_rules! with_plan {
    ($plan:expr, $p:ident => $body:expr) => {
        match $plan {
            Plan::Conv($p) => $body,
            Plan::Transpose($p) => $body,
        }
    };
}

impl Plan {
    fn input_shape(&self) -> [usize; 4] {
        with_plan!(self, p => p.input_shape())
    }

    fn weight_shape(&self) -> [usize; 4] {
        with_plan!(self, p => p.weight_shape())
    }

    fn output_shape(&self) -> [usize; 4] {
        with_plan!(self, p => p.output_shape())
    }
}

/// Which map of the plan an op computes, named by what it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `(input, weight[, bias]) -> output`.
    Forward,
    /// `(grad_output, weight) -> grad_input`.
    GradInput,
    /// `(input, grad_output) -> grad_weight`.
    GradWeight,
    /// `(grad_output) -> grad_bias`.
    GradBias,
}

/// A candle custom op running one [`Role`] of a shared [`Plan`].
#[derive(Debug, Clone)]
pub(crate) struct ConvOp {
    plan: Arc<Plan>,
    role: Role,
}

impl ConvOp {
    pub(crate) fn new(plan: Arc<Plan>, role: Role) -> Self {
        Self { plan, role }
    }

    fn with_role(&self, role: Role) -> Self {
        Self::new(self.plan.clone(), role)
    }

    /// Applies the op to two tensors, with autograd.
    pub(crate) fn apply2(&self, lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
        lhs.apply_op2(rhs, self.clone())
    }

    /// Applies `role` to `(lhs, rhs)` when `wanted` needs a gradient (as PyTorch's output mask:
    /// no work for tensors that do not track gradients).
    fn grad_if(
        &self,
        wanted: &Tensor,
        role: Role,
        lhs: &Tensor,
        rhs: &Tensor,
    ) -> Result<Option<Tensor>> {
        match wanted.track_op() {
            true => self.with_role(role).apply2(lhs, rhs).map(Some),
            false => Ok(None),
        }
    }

    /// The op's name in candle's messages and in our errors.
    fn op_name(&self) -> &'static str {
        match (&*self.plan, self.role) {
            (Plan::Conv(_), Role::Forward) => "conv2d",
            (Plan::Conv(_), Role::GradInput) => "conv2d backward (input)",
            (Plan::Conv(_), Role::GradWeight) => "conv2d backward (weight)",
            (Plan::Conv(_), Role::GradBias) => "conv2d backward (bias)",
            (Plan::Transpose(_), Role::Forward) => "conv_transpose2d",
            (Plan::Transpose(_), Role::GradInput) => "conv_transpose2d backward (input)",
            (Plan::Transpose(_), Role::GradWeight) => "conv_transpose2d backward (weight)",
            (Plan::Transpose(_), Role::GradBias) => "conv_transpose2d backward (bias)",
        }
    }

    /// The names and shapes of the operands, in order; the forward pass takes an optional
    /// bias as its third.
    fn operands(&self) -> Vec<(&'static str, Vec<usize>)> {
        let p = &*self.plan;
        let cout = p.output_shape()[1];
        match self.role {
            Role::Forward => vec![
                ("input", p.input_shape().to_vec()),
                ("weight", p.weight_shape().to_vec()),
                ("bias", vec![cout]),
            ],
            Role::GradInput => vec![
                ("grad_output", p.output_shape().to_vec()),
                ("weight", p.weight_shape().to_vec()),
            ],
            Role::GradWeight => vec![
                ("input", p.input_shape().to_vec()),
                ("grad_output", p.output_shape().to_vec()),
            ],
            Role::GradBias => vec![("grad_output", p.output_shape().to_vec())],
        }
    }

    /// The shape of the op's result.
    fn result_shape(&self) -> Shape {
        let p = &*self.plan;
        Shape::from(match self.role {
            Role::Forward => p.output_shape().to_vec(),
            Role::GradInput => p.input_shape().to_vec(),
            Role::GradWeight => p.weight_shape().to_vec(),
            Role::GradBias => vec![p.output_shape()[1]],
        })
    }

    /// The CPU forward of every arity: checks operand shapes, then runs on the common dtype.
    fn cpu_run(&self, args: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        let name = self.op_name();
        let operands = self.operands();
        let bias_free_forward = self.role == Role::Forward && args.len() == 2;
        if args.len() != operands.len() && !bias_free_forward {
            candle_core::bail!(
                "{name}: takes {} operands, got {}",
                operands.len(),
                args.len()
            );
        }
        for ((_, layout), (what, shape)) in args.iter().zip(operands) {
            if layout.dims() != shape.as_slice() {
                candle_core::bail!(
                    "{name}: expected {what} of shape {shape:?}, but got {:?}",
                    layout.dims()
                );
            }
        }
        let out = storage::run_on_cpu(name, args, self)?;
        Ok((out, self.result_shape()))
    }
}

impl Kernel for ConvOp {
    /// Runs the plan on contiguous operands, in the order of [`operands`](ConvOp::operands).
    fn run<T: conv2d::Element>(&self, args: &[&[T]]) -> conv2d::Result<Vec<T>> {
        with_plan!(&*self.plan, p => match self.role {
            Role::Forward => p.forward(args[0], args[1], args.get(2).copied()),
            Role::GradInput => p.backward_input(args[0], args[1]),
            Role::GradWeight => p.backward_weight(args[0], args[1]),
            Role::GradBias => p.backward_bias(args[0]),
        })
    }
}

impl CustomOp1 for ConvOp {
    fn name(&self) -> &'static str {
        self.op_name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu_run(&[(s, l)])
    }

    /// Only the bias gradient has one operand; its gradient spreads the incoming one back over
    /// batch and pixels.
    fn bwd(&self, grad_output: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let cout = grad.elem_count();
        grad.reshape((1, cout, 1, 1))?
            .broadcast_as(grad_output.shape())
            .map(Some)
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        self.op_name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu_run(&[(s1, l1), (s2, l2)])
    }

    /// The adjoint identities of the module docs, role by role.
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        use Role::*;
        match self.role {
            // (x, w) -> y: dx = Bx(g, w), dw = Bw(x, g)
            Forward => Ok((
                self.grad_if(a, GradInput, g, b)?,
                self.grad_if(b, GradWeight, a, g)?,
            )),
            // (gy, w) -> Bx(gy, w): d gy = F(g, w), dw = Bw(g, gy)
            GradInput => Ok((
                self.grad_if(a, Forward, g, b)?,
                self.grad_if(b, GradWeight, g, a)?,
            )),
            // (x, gy) -> Bw(x, gy): dx = Bx(gy, g), d gy = F(x, g)
            GradWeight => Ok((
                self.grad_if(a, GradInput, b, g)?,
                self.grad_if(b, Forward, a, g)?,
            )),
            GradBias => candle_core::bail!("{}: not a binary op", self.op_name()),
        }
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        self.op_name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu_run(&[(s1, l1), (s2, l2), (s3, l3)])
    }

    /// The forward pass with a bias: the two gradients of the binary op, plus the bias
    /// gradient (summed in `f32` for half types, rounded once).
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = CustomOp2::bwd(self, x, w, res, g)?;
        let db = match b.track_op() {
            true => Some(g.apply_op1(self.with_role(Role::GradBias))?),
            false => None,
        };
        Ok((dx, dw, db))
    }
}
