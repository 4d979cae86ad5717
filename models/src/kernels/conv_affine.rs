//! Inference only: a convolution with the eval-mode batch norm that follows
//! it folded in, and optionally the residual add and the ReLU of a ResNet
//! block, as one op. Each image's output gets `y * scale + shift (+ r)`,
//! then `max(0, .)`, right after its GEMM while it is still in cache, so the
//! BN, the add and the ReLU cost no pass of their own over memory.
//!
//! It has no backward: the layers use it only inside [`super::inference`],
//! where nothing asks for gradients (Grad-CAM, which does, runs the plain ops).

use super::conv::{conv_forward_affine, conv_of, f32s};
use super::prepared::Prepared;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Arc;

/// The per-channel map after the convolution.
#[derive(Clone)]
struct Affine {
    stride: usize,
    pad: usize,
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
    /// The weights prepared for the Winograd or direct kernel, from a frozen
    /// model's cache.
    prepared: Option<Arc<Prepared>>,
}

/// Whether the fused op can run for `x` and `w` (f32 on the CPU, kernels on).
pub fn applies(x: &Tensor, w: &Tensor) -> bool {
    super::takes(&[x, w])
}

/// `relu?(conv(x, w) * scale + shift + residual?)`, per output channel.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_affine(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: usize,
    scale: Vec<f32>,
    shift: Vec<f32>,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    check_affine(w.dim(0)?, &scale, &shift, "conv+bn")?;
    let prepared = super::frozen::prepared_forward(x, w, stride, pad)?;
    let op = Affine {
        stride,
        pad,
        scale,
        shift,
        relu,
        prepared,
    };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match residual {
        None => x.apply_op2_no_bwd(&w, &op),
        Some(r) => x.apply_op3_no_bwd(&w, &r.contiguous()?, &op),
    }
}

/// That `scale` and `shift` hold one value per output channel (`o`), or
/// `op`'s error.
pub(super) fn check_affine(o: usize, scale: &[f32], shift: &[f32], op: &str) -> Result<()> {
    if scale.len() != o || shift.len() != o {
        candle_core::bail!(
            "{op}: {o} output channels but {} scales and {} shifts",
            scale.len(),
            shift.len()
        )
    }
    Ok(())
}

impl Affine {
    fn run(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, o, g) = conv_of(l1, l2, self.stride, self.pad, "conv2d")?;
        let shape = Shape::from((n, o, g.oh, g.ow));
        let r = match residual {
            Some((s, l)) if l.shape() == &shape => Some(f32s(s, l, "residual")?),
            Some((_, l)) => candle_core::bail!(
                "conv+bn: residual of shape {:?} does not match the output {:?}",
                l.shape(),
                shape
            ),
            None => None,
        };
        let per = o * g.cols();
        let cols = g.cols();
        let epilogue = |i: usize, y: &mut [f32]| {
            let r = r.map(|r| &r[i * per..(i + 1) * per]);
            for (ch, plane) in y.chunks_exact_mut(cols).enumerate() {
                let (a, b) = (self.scale[ch], self.shift[ch]);
                match r {
                    Some(r) => {
                        let rp = &r[ch * cols..(ch + 1) * cols];
                        for (v, rv) in plane.iter_mut().zip(rp) {
                            *v = *v * a + b + *rv;
                        }
                    }
                    None => {
                        for v in plane.iter_mut() {
                            *v = *v * a + b;
                        }
                    }
                }
                if self.relu {
                    for v in plane.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
            }
        };
        let y = conv_forward_affine(
            f32s(s1, l1, "input")?,
            f32s(s2, l2, "weight")?,
            n,
            o,
            &g,
            (&self.scale, &self.shift),
            r,
            self.relu,
            &epilogue,
            self.prepared.as_deref(),
        );
        Ok((CpuStorage::F32(y), shape))
    }
}

impl CustomOp2 for Affine {
    fn name(&self) -> &'static str {
        "cxr-conv2d-bn-eval"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "cxr-conv2d-bn-eval-add"
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
        self.run((s1, l1), (s2, l2), Some((s3, l3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_core::Device;

    /// Against the unfused ops (conv, then the affine map, the add, the ReLU),
    /// on per-image, shifted-tap and batched convolution paths.
    #[test]
    fn equals_conv_then_affine_then_add_then_relu() -> Result<()> {
        let dev = Device::Cpu;
        // (n, c, hw, o, k, stride, pad)
        for &(n, c, hw, o, k, s, p) in &[
            (2, 3, 9, 4, 3, 2, 1),
            (2, 4, 34, 5, 3, 1, 1),
            (3, 4, 4, 6, 3, 1, 1),
            (2, 6, 8, 5, 1, 2, 0),
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, c, hw, hw), &dev)?;
            let w = Tensor::randn(0f32, 0.5, (o, c, k, k), &dev)?;
            let scale: Vec<f32> = (0..o).map(|i| 0.5 + i as f32 * 0.3).collect();
            let shift: Vec<f32> = (0..o).map(|i| i as f32 * 0.2 - 0.4).collect();
            let y = super::super::conv2d(&x, &w, s, p, true)?;
            let a = Tensor::from_slice(&scale, (1, o, 1, 1), &dev)?;
            let b = Tensor::from_slice(&shift, (1, o, 1, 1), &dev)?;
            let affine = y.broadcast_mul(&a)?.broadcast_add(&b)?;
            let r = Tensor::randn(0f32, 1.0, affine.shape(), &dev)?;
            for (residual, relu) in [(None, false), (None, true), (Some(&r), true)] {
                let want = match residual {
                    Some(r) => (&affine + r)?,
                    None => affine.clone(),
                };
                let want = if relu { want.relu()? } else { want };
                let got =
                    conv2d_affine(&x, &w, s, p, scale.clone(), shift.clone(), residual, relu)?;
                // Relative to the largest output (Winograd rounds differently).
                let top = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()? / top;
                assert!(
                    d < 5e-5,
                    "n{n} c{c} {hw}px k{k} s{s}: differs by {d} (relative)"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn mismatched_residual_or_scales_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 6, 6), DType::F32, &dev)?;
        let w = Tensor::zeros((3, 2, 3, 3), DType::F32, &dev)?;
        let bad = Tensor::zeros((1, 3, 5, 5), DType::F32, &dev)?;
        let (a, b) = (vec![1.0; 3], vec![0.0; 3]);
        assert!(conv2d_affine(&x, &w, 1, 1, a.clone(), b.clone(), Some(&bad), true).is_err());
        assert!(conv2d_affine(&x, &w, 1, 1, vec![1.0; 2], b, None, true).is_err());
        Ok(())
    }
}
