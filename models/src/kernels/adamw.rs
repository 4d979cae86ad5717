//! One AdamW step as three in-place passes over memory (moments, then the
//! parameter), instead of about fifteen tensor ops that each allocate and
//! write a full-size temporary.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

/// The step's numbers: `decay` is `1 - lr * wd` (1 for no weight decay),
/// `debias1`/`debias2` are `1 - beta^t`.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub decay: f32,
    pub debias1: f32,
    pub debias2: f32,
}

/// Whether [`adamw_step`] takes these tensors: kernels on, all f32 on the
/// CPU, contiguous, the same size, and the moments not sharing storage.
pub fn applies(param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor) -> bool {
    let n = param.elem_count();
    super::takes(&[param, grad, m, v])
        && [param, grad, m, v]
            .iter()
            .all(|t| t.is_contiguous() && t.elem_count() == n)
        && !shares_storage(m, v)
}

/// Whether two tensors are views of one storage (each lock is released
/// before the next is taken).
fn shares_storage(a: &Tensor, b: &Tensor) -> bool {
    let at = |t: &Tensor| &*t.storage_and_layout().0 as *const candle_core::Storage as usize;
    at(a) == at(b)
}

/// `m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
/// param = decay * param - lr * (m / debias1) / (sqrt(v / debias2) + eps)`,
/// all in place. Check [`applies`] first.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &AdamWStep,
) -> Result<()> {
    m.inplace_op2(
        grad,
        &Moment {
            beta: h.beta1,
            square: false,
        },
    )?;
    v.inplace_op2(
        grad,
        &Moment {
            beta: h.beta2,
            square: true,
        },
    )?;
    param.inplace_op3(m, v, &Update(*h))
}

/// Values per parallel chunk.
const CHUNK: usize = 1 << 15;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "adamw", what)
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_mut_slice(),
        other => candle_core::bail!("cxr adamw: {what} must be f32, got {:?}", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut data[a..b]),
        None => candle_core::bail!("cxr adamw: {what} must be contiguous"),
    }
}

struct Moment {
    beta: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "cxr-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let m = slice_mut(s1, l1, "moment")?;
        let g = slice(s2, l2, "gradient")?;
        if m.len() != g.len() {
            candle_core::bail!("cxr adamw: moment and gradient sizes differ")
        }
        let (b, a) = (self.beta, 1.0 - self.beta);
        m.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(m, g)| {
                if self.square {
                    for (m, g) in m.iter_mut().zip(g) {
                        *m = b * *m + a * g * g;
                    }
                } else {
                    for (m, g) in m.iter_mut().zip(g) {
                        *m = b * *m + a * g;
                    }
                }
            });
        Ok(())
    }
}

struct Update(AdamWStep);

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "cxr-adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let p = slice_mut(s1, l1, "parameter")?;
        let m = slice(s2, l2, "first moment")?;
        let v = slice(s3, l3, "second moment")?;
        if p.len() != m.len() || p.len() != v.len() {
            candle_core::bail!("cxr adamw: parameter and moment sizes differ")
        }
        let h = self.0;
        let (step, inv_d2) = (h.lr / h.debias1, 1.0 / h.debias2);
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(p, (m, v))| {
                for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
                    *p = h.decay * *p - step * m / ((v * inv_d2).sqrt() + h.eps);
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_the_formula_over_steps() -> Result<()> {
        let dev = Device::Cpu;
        let n = 70_001; // more than one chunk, not a multiple of it
        let p0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = Var::from_vec(p0.clone(), n, &dev)?;
        let m = Tensor::zeros(n, candle_core::DType::F32, &dev)?;
        let v = Tensor::zeros(n, candle_core::DType::F32, &dev)?;
        let (mut pe, mut me, mut ve) = (p0.clone(), vec![0.0f32; n], vec![0.0f32; n]);
        let (b1, b2, eps, lr, wd) = (0.9f32, 0.99f32, 1e-5f32, 0.01f32, 0.1f32);
        for t in 1..=3 {
            let g: Vec<f32> = (0..n).map(|i| ((i * t) as f32 * 0.11).cos()).collect();
            let gt = Tensor::from_vec(g.clone(), n, &dev)?;
            assert!(applies(p.as_tensor(), &gt, &m, &v));
            let h = AdamWStep {
                lr,
                beta1: b1,
                beta2: b2,
                eps,
                decay: 1.0 - lr * wd,
                debias1: 1.0 - b1.powi(t as i32),
                debias2: 1.0 - b2.powi(t as i32),
            };
            adamw_step(p.as_tensor(), &gt, &m, &v, &h)?;
            for i in 0..n {
                me[i] = b1 * me[i] + (1.0 - b1) * g[i];
                ve[i] = b2 * ve[i] + (1.0 - b2) * g[i] * g[i];
                let upd = (me[i] / h.debias1) / ((ve[i] / h.debias2).sqrt() + eps);
                pe[i] = pe[i] * h.decay - lr * upd;
            }
        }
        for (got, want) in [
            (p.as_tensor().to_vec1::<f32>()?, pe),
            (m.to_vec1()?, me),
            (v.to_vec1()?, ve),
        ] {
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
        // Moments that share storage are refused (the in-place update would mix them).
        let z = Tensor::zeros(n, candle_core::DType::F32, &dev)?;
        assert!(!applies(p.as_tensor(), &z, &z, &z.clone()));
        Ok(())
    }
}
