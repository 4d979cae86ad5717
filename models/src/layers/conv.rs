//! 2D convolution with PyTorch's parameter layout (`weight` [out, in, k, k], optional `bias`).

use crate::params::{Init, Kind, ParamStore};
use candle_core::{Result, Tensor, Var};

#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Var,
    pub bias: Option<Var>,
    pub stride: usize,
    pub padding: usize,
    /// Whether backward computes the gradient of the input. The first
    /// convolution of a network sees the image, which needs none: the
    /// network sets this to false there and saves a whole transposed convolution.
    pub input_grad: bool,
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
            input_grad: true,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_tensor().to_dtype(x.dtype())?;
        let y = crate::kernels::conv2d(x, &w, self.stride, self.padding, self.input_grad)?;
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
