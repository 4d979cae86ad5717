//! Batch normalisation that trains, in any activation dtype.
//!
//! Train mode normalises with the batch statistics (biased variance) and
//! updates the running statistics with momentum 0.1 and the unbiased variance,
//! exactly as PyTorch. Statistics are always computed in f32, so f16/bf16
//! activations work (candle-nn's BatchNorm fails there). Works on `[N, C, H, W]`
//! (BatchNorm2d) and `[N, C]` (BatchNorm1d).

use crate::kernels;
use crate::params::{Init, Kind, ParamStore};
use candle_core::{DType, Result, Tensor, Var};

pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub weight: Var,
    pub bias: Var,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm {
    /// `zero_init` sets the weight to 0 (fastai's BatchZero, last BN of a residual branch).
    pub fn new(ps: &mut ParamStore, name: &str, c: usize, zero_init: bool) -> Result<Self> {
        let w0 = if zero_init { 0.0 } else { 1.0 };
        Ok(Self {
            weight: ps.get_or_init(
                &format!("{name}.weight"),
                c,
                Init::Const(w0),
                Kind::Param,
                true,
                true,
            )?,
            bias: ps.get_or_init(
                &format!("{name}.bias"),
                c,
                Init::Const(0.0),
                Kind::Param,
                true,
                true,
            )?,
            running_mean: ps.get_or_init(
                &format!("{name}.running_mean"),
                c,
                Init::Const(0.0),
                Kind::Buffer,
                true,
                true,
            )?,
            running_var: ps.get_or_init(
                &format!("{name}.running_var"),
                c,
                Init::Const(1.0),
                Kind::Buffer,
                true,
                true,
            )?,
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
        })
    }

    fn bshape(x: &Tensor) -> Result<Vec<usize>> {
        let c = x.dim(1)?;
        Ok(match x.rank() {
            4 => vec![1, c, 1, 1],
            2 => vec![1, c],
            r => candle_core::bail!("batch norm expects a rank 2 or 4 input, got rank {r}"),
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, false)
    }

    /// `relu(bn(x))`, fused into one pass on the CPU kernels.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, true)
    }

    /// `relu(bn(x) + r)`, a residual block's end: in train mode on the CPU
    /// kernels one fused op, else the layers one by one.
    pub fn forward_add_relu_t(&self, x: &Tensor, r: &Tensor, train: bool) -> Result<Tensor> {
        if !(train && kernels::batch_norm_applies(x) && kernels::batch_norm_applies(r)) {
            return (self.forward_t(x, train)? + r)?.relu();
        }
        let (mean, var) = self.train_stats(x)?;
        kernels::batch_norm_train_add_relu(
            x,
            self.weight.as_tensor(),
            self.bias.as_tensor(),
            mean,
            &var,
            self.eps,
            r,
        )
    }

    /// The batch statistics of `x` (f32, CPU), the running ones updated.
    fn train_stats(&self, x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = x.dim(1)?;
        let (n, per) = (x.dim(0)?, x.elem_count() / (x.dim(0)? * c).max(1));
        if n * per < 2 {
            candle_core::bail!(
                "batch norm in train mode needs more than one value per channel (batch of {n})"
            )
        }
        let (mean, var) = kernels::batch_stats(x)?;
        let dev = x.device();
        self.update_running(
            &Tensor::from_slice(&mean, c, dev)?,
            &Tensor::from_slice(&var, c, dev)?,
            n * per,
        )?;
        Ok((mean, var))
    }

    fn forward_impl(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if kernels::batch_norm_applies(x) {
            return self.forward_kernels(x, train, relu);
        }
        let y = self.forward_ops(x, train)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    /// f32 on the CPU: cxr's fused kernels.
    fn forward_kernels(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if train {
            let (mean, var) = self.train_stats(x)?;
            kernels::batch_norm_train(
                x,
                self.weight.as_tensor(),
                self.bias.as_tensor(),
                mean,
                &var,
                self.eps,
                relu,
            )
        } else {
            let (scale, shift) = self.folded()?;
            kernels::batch_norm_eval(x, scale.to_vec1()?, shift.to_vec1()?, relu)
        }
    }

    /// Any device and dtype: candle's tensor ops, statistics in f32.
    fn forward_ops(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let shape = Self::bshape(x)?;
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let w = self.weight.as_tensor().reshape(shape.as_slice())?;
        let b = self.bias.as_tensor().reshape(shape.as_slice())?;
        let y = if train {
            let (mean, var, n) = if x.rank() == 4 {
                let (n, _, h, wd) = x.dims4()?;
                let mean = xf.mean_keepdim((0, 2, 3))?;
                let centered = xf.broadcast_sub(&mean)?;
                let var = centered.sqr()?.mean_keepdim((0, 2, 3))?;
                (mean, var, n * h * wd)
            } else {
                let n = x.dim(0)?;
                let mean = xf.mean_keepdim(0)?;
                let var = xf.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
                (mean, var, n)
            };
            if n < 2 {
                candle_core::bail!(
                    "batch norm in train mode needs more than one value per channel (batch of {n})"
                )
            }
            self.update_running(&mean, &var, n)?;
            let inv = (var + self.eps)?.sqrt()?.recip()?;
            xf.broadcast_sub(&mean)?
                .broadcast_mul(&inv)?
                .broadcast_mul(&w)?
                .broadcast_add(&b)?
        } else {
            let (scale, shift) = self.folded()?;
            xf.broadcast_mul(&scale.reshape(shape.as_slice())?)?
                .broadcast_add(&shift.reshape(shape.as_slice())?)?
        };
        y.to_dtype(dtype)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let m = self.momentum;
        let mean = mean.detach().flatten_all()?;
        let unbiased = (var.detach().flatten_all()? * (n as f64 / (n as f64 - 1.0)))?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }

    /// Eval-mode BN as `x * scale + shift` (per channel), for folding into a conv.
    pub fn folded(&self) -> Result<(Tensor, Tensor)> {
        let scale = self
            .weight
            .as_tensor()
            .div(&(self.running_var.as_tensor() + self.eps)?.sqrt()?)?;
        let shift = (self.bias.as_tensor() - self.running_mean.as_tensor().mul(&scale)?)?;
        Ok((scale, shift))
    }
}
