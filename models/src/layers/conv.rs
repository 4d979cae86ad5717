//! 2D convolution with PyTorch's parameter layout (`weight` [out, in, k, k], optional `bias`).

use crate::params::{Init, Kind, ParamStore};
use candle_core::{Result, Tensor, Var};

#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Var,
    pub bias: Option<Var>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    /// The arguments mirror PyTorch's `Conv2d(c_in, c_out, k, stride, padding, bias=False)`.
    #[allow(clippy::too_many_arguments)]
    /// A bias-free convolution `c_in -> c_out` with a square `k` kernel, as in ResNets.
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        init: Init,
    ) -> Result<Self> {
        let weight = ps.get_or_init(
            &format!("{name}.weight"),
            (c_out, c_in, k, k),
            init,
            Kind::Param,
            false,
            false,
        )?;
        Ok(Self {
            weight,
            bias: None,
            stride,
            padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_tensor().to_dtype(x.dtype())?;
        let y = x.conv2d(&w, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => {
                let b = b.as_tensor().to_dtype(x.dtype())?.reshape((1, (), 1, 1))?;
                y.broadcast_add(&b)
            }
            None => Ok(y),
        }
    }

    pub fn kernel_size(&self) -> usize {
        self.weight.dims()[2]
    }
}
