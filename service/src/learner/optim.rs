//! AdamW as fastai configures it, with parameter groups.
//!
//! Betas (0.9, 0.99), eps 1e-5, decoupled weight decay 0.01 applied to every
//! parameter except batch-norm parameters and biases. Each group has its own
//! learning rate (discriminative learning rates); beta1 is set per batch by the
//! one-cycle schedule. The state (moments, step) can be saved and restored so
//! a resumed run continues exactly.

use candle_core::{Device, Result, Tensor, Var};
use cxr_models::kernels;
use cxr_models::network::ParamRef;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub wd: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-5,
            wd: 0.01,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    pub config: AdamWConfig,
    groups: Vec<(f64, Vec<Slot>)>,
    step: u64,
}

impl AdamW {
    /// One group per inner vector; empty groups are kept so indices match the network's.
    pub fn new(groups: Vec<Vec<ParamRef>>, config: AdamWConfig) -> Result<Self> {
        let groups = groups
            .into_iter()
            .map(|g| {
                let slots = g
                    .into_iter()
                    .map(|p| {
                        // Two tensors, not one shared: the fused step updates them in place.
                        let t = p.var.as_tensor();
                        Ok(Slot {
                            name: p.name,
                            decay: !p.no_decay,
                            m: t.zeros_like()?,
                            v: t.zeros_like()?,
                            var: p.var,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((0.0, slots))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            groups,
            step: 0,
        })
    }

    pub fn n_groups(&self) -> usize {
        self.groups.len()
    }

    pub fn set_lrs(&mut self, lrs: &[f64]) {
        for (g, lr) in self.groups.iter_mut().zip(lrs) {
            g.0 = *lr;
        }
    }

    pub fn set_beta1(&mut self, beta1: f64) {
        self.config.beta1 = beta1;
    }

    pub fn lrs(&self) -> Vec<f64> {
        self.groups.iter().map(|g| g.0).collect()
    }

    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let debias1 = 1.0 - c.beta1.powi(t);
        let debias2 = 1.0 - c.beta2.powi(t);
        for (lr, slots) in self.groups.iter_mut() {
            let lr = *lr;
            if lr == 0.0 {
                continue;
            }
            for s in slots.iter_mut() {
                let Some(g) = grads.get(s.var.as_tensor()) else {
                    continue;
                };
                let theta = s.var.as_tensor();
                if kernels::adamw_applies(theta, g, &s.m, &s.v) {
                    let h = kernels::AdamWStep {
                        lr: lr as f32,
                        beta1: c.beta1 as f32,
                        beta2: c.beta2 as f32,
                        eps: c.eps as f32,
                        decay: if s.decay {
                            (1.0 - lr * c.wd) as f32
                        } else {
                            1.0
                        },
                        debias1: debias1 as f32,
                        debias2: debias2 as f32,
                    };
                    kernels::adamw_step(theta, g, &s.m, &s.v, &h)?;
                    continue;
                }
                // Detached: the moments must not keep this step's autograd graph alive.
                let g = g.detach().to_dtype(s.m.dtype())?;
                s.m = ((&s.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?.detach();
                s.v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?.detach();
                let mut theta = s.var.as_tensor().detach();
                if s.decay && c.wd != 0.0 {
                    theta = (theta * (1.0 - lr * c.wd))?;
                }
                let denom = ((&s.v / debias2)?.sqrt()? + c.eps)?;
                let upd = ((&s.m / debias1)? / denom)?;
                s.var.set(&(theta - (upd * lr)?)?)?;
            }
        }
        Ok(())
    }

    /// Moments by `m.<name>` / `v.<name>`, plus the step count.
    pub fn state(&self) -> Result<(HashMap<String, Tensor>, u64)> {
        let mut out = HashMap::new();
        for (_, slots) in &self.groups {
            for s in slots {
                // Copies: the fused step keeps updating the moments in place.
                out.insert(format!("m.{}", s.name), s.m.copy()?);
                out.insert(format!("v.{}", s.name), s.v.copy()?);
            }
        }
        Ok((out, self.step))
    }

    pub fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
        step: u64,
        device: &Device,
    ) -> Result<()> {
        for (_, slots) in self.groups.iter_mut() {
            for s in slots.iter_mut() {
                if let (Some(m), Some(v)) = (
                    state.get(&format!("m.{}", s.name)),
                    state.get(&format!("v.{}", s.name)),
                ) {
                    // Own copies, so in-place steps never write into `state`.
                    s.m = m.to_device(device)?.copy()?;
                    s.v = v.to_device(device)?.copy()?;
                }
            }
        }
        self.step = step;
        Ok(())
    }
}
