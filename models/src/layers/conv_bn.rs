//! A convolution, the batch norm after it, and optionally a ResNet block's
//! residual add and ReLU: the one place that chooses between the fused
//! inference kernel and the separate, differentiable ops.

use super::{max_pool_3x3_s2_p1, BatchNorm, Conv2d};
use crate::kernels;
use candle_core::{Result, Tensor};

/// `relu?(bn(conv(x)) + residual?)`. In eval mode inside
/// [`kernels::inference`], f32 on the CPU, the BN (and the conv's bias) fold
/// into the convolution's output pass; everywhere else the layers run one
/// by one, so training, half precision, CUDA and Grad-CAM are unchanged.
pub fn conv_bn(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: &Tensor,
    train: bool,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let w = conv.weight.as_tensor();
    if !train && kernels::in_inference() && kernels::conv_affine_applies(x, w) {
        let (scale, shift) = folded(conv, bn)?;
        return kernels::conv2d_affine(
            x,
            w,
            conv.stride,
            conv.padding,
            scale,
            shift,
            residual,
            relu,
        );
    }
    let y = conv.forward(x)?;
    match residual {
        None if relu => bn.forward_relu_t(&y, train),
        None => bn.forward_t(&y, train),
        Some(r) if relu => bn.forward_add_relu_t(&y, r, train),
        Some(r) => bn.forward_t(&y, train)? + r,
    }
}

/// `max_pool_3x3_s2_p1(relu(bn(conv(x))))`, ResNet's stem. In eval mode
/// inside [`kernels::inference`], f32 on the CPU, one fused pass when
/// [`kernels::stem_applies`]; else [`conv_bn`] and then the pool.
pub fn conv_bn_relu_max_pool(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: &Tensor,
    train: bool,
) -> Result<Tensor> {
    let w = conv.weight.as_tensor();
    if !train && kernels::in_inference() && kernels::stem_applies(x, w, conv.stride, conv.padding) {
        let (scale, shift) = folded(conv, bn)?;
        return kernels::conv2d_affine_max_pool(
            x,
            w,
            (conv.stride, conv.padding),
            scale,
            shift,
            true,
        );
    }
    max_pool_3x3_s2_p1(&conv_bn(conv, bn, x, train, None, true)?)
}

/// The eval-mode batch norm (and the conv's bias) as a per-channel
/// `scale` and `shift` of the convolution's output.
fn folded(conv: &Conv2d, bn: &BatchNorm) -> Result<(Vec<f32>, Vec<f32>)> {
    let (scale, shift) = bn.folded()?;
    let shift = match &conv.bias {
        Some(b) => (shift + b.as_tensor().mul(&scale)?)?,
        None => shift,
    };
    Ok((scale.to_vec1()?, shift.to_vec1()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Init, ParamStore};
    use candle_core::{DType, Device};

    /// The fused inference path equals the separate ops, with and without a
    /// residual; outside inference mode the ops are the separate ones.
    #[test]
    fn fused_inference_equals_the_separate_layers() -> Result<()> {
        let dev = Device::Cpu;
        let mut ps = ParamStore::new(&dev, 3);
        let conv = Conv2d::new(&mut ps, "c", 4, 6, 3, 1, 1, Init::KaimingNormal)?;
        let bn = BatchNorm::new(&mut ps, "b", 6, false)?;
        bn.running_mean
            .set(&Tensor::new(&[0.1f32, -0.2, 0.3, 0.0, 0.5, -0.1], &dev)?)?;
        bn.running_var
            .set(&Tensor::new(&[1.5f32, 0.5, 2.0, 1.0, 0.7, 1.2], &dev)?)?;
        bn.weight
            .set(&Tensor::new(&[1.1f32, 0.9, -0.5, 1.0, 2.0, 0.3], &dev)?)?;
        bn.bias
            .set(&Tensor::new(&[0.0f32, 0.2, -0.1, 0.4, 0.0, 0.1], &dev)?)?;
        let x = Tensor::randn(0f32, 1.0, (2, 4, 12, 12), &dev)?;
        let r = Tensor::randn(0f32, 1.0, (2, 6, 12, 12), &dev)?;
        for residual in [None, Some(&r)] {
            for relu in [false, true] {
                let plain = conv_bn(&conv, &bn, &x, false, residual, relu)?;
                let fused = kernels::inference(|| conv_bn(&conv, &bn, &x, false, residual, relu))?;
                let d = (plain - fused)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-4, "residual {} relu {relu}: {d}", residual.is_some());
            }
        }
        assert_eq!(x.dtype(), DType::F32);
        Ok(())
    }
}
