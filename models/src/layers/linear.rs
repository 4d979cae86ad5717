//! Fully connected layer with PyTorch's layout (`weight` [out, in], optional `bias`).

use crate::params::{Init, Kind, ParamStore};
use candle_core::{Result, Tensor, Var};

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Var,
    pub bias: Option<Var>,
}

impl Linear {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        c_in: usize,
        c_out: usize,
        bias: bool,
        init: Init,
    ) -> Result<Self> {
        let weight = ps.get_or_init(
            &format!("{name}.weight"),
            (c_out, c_in),
            init,
            Kind::Param,
            false,
            false,
        )?;
        // Biases start at zero, as fastai's `init_cnn` leaves them.
        let bias = if bias {
            Some(ps.get_or_init(
                &format!("{name}.bias"),
                c_out,
                Init::Const(0.0),
                Kind::Param,
                true,
                false,
            )?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_tensor().to_dtype(x.dtype())?;
        let y = x.matmul(&w.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.as_tensor().to_dtype(x.dtype())?),
            None => Ok(y),
        }
    }
}
