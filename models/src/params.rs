//! The parameter store: every tensor of a network by its PyTorch-style name.
//!
//! Trainable parameters and batch-norm running statistics are candle `Var`s, so
//! weights can be loaded in place and optimizers hold the same storage. The
//! store also knows, for each name, its parameter group (for freezing and
//! discriminative learning rates) and whether weight decay applies to it.
//! Initialisation draws from a seeded RNG so that a run is reproducible.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What a stored tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Trained by the optimizer.
    Param,
    /// Updated by the forward pass (batch-norm running statistics), never trained.
    Buffer,
}

/// One named tensor.
#[derive(Debug, Clone)]
pub struct Entry {
    pub var: Var,
    pub kind: Kind,
    /// Batch-norm weight or bias, or any bias: no weight decay, and kept
    /// trainable when the body is frozen (fastai's `train_bn`).
    pub no_decay: bool,
    pub is_bn: bool,
}

/// How a new tensor is initialised.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Const(f64),
    /// Kaiming normal, fan-in, ReLU gain (PyTorch's `kaiming_normal_` default).
    KaimingNormal,
    /// PyTorch's default for conv/linear weights: kaiming uniform with a=sqrt(5).
    TorchDefault,
}

/// Named tensors of a network, in creation order.
pub struct ParamStore {
    entries: BTreeMap<String, Entry>,
    order: Vec<String>,
    device: Device,
    rng: Mutex<StdRng>,
}

impl ParamStore {
    pub fn new(device: &Device, seed: u64) -> Self {
        Self {
            entries: BTreeMap::new(),
            order: Vec::new(),
            device: device.clone(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Creates (or returns the existing) tensor `name`.
    pub fn get_or_init(
        &mut self,
        name: &str,
        shape: impl Into<Shape>,
        init: Init,
        kind: Kind,
        no_decay: bool,
        is_bn: bool,
    ) -> Result<Var> {
        let shape: Shape = shape.into();
        if let Some(e) = self.entries.get(name) {
            if e.var.shape() != &shape {
                candle_core::bail!(
                    "parameter {name} exists with shape {:?}, wanted {shape:?}",
                    e.var.shape()
                )
            }
            return Ok(e.var.clone());
        }
        let values = self.draw(&shape, init);
        let t = Tensor::from_vec(values, shape, &self.device)?;
        let var = Var::from_tensor(&t)?;
        self.entries.insert(
            name.to_string(),
            Entry {
                var: var.clone(),
                kind,
                no_decay,
                is_bn,
            },
        );
        self.order.push(name.to_string());
        Ok(var)
    }

    fn draw(&self, shape: &Shape, init: Init) -> Vec<f32> {
        let n = shape.elem_count();
        let dims = shape.dims();
        let fan_in: usize = if dims.len() > 1 {
            dims[1..].iter().product()
        } else {
            dims.first().copied().unwrap_or(1)
        };
        let mut rng = match self.rng.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match init {
            Init::Const(v) => vec![v as f32; n],
            Init::KaimingNormal => {
                let std = (2.0 / fan_in.max(1) as f64).sqrt();
                (0..n).map(|_| (normal(&mut rng) * std) as f32).collect()
            }
            Init::TorchDefault => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                (0..n)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect()
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Names in creation order.
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// `(name, entry)` in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.order
            .iter()
            .filter_map(|n| self.entries.get(n).map(|e| (n.as_str(), e)))
    }

    /// All tensors (parameters and buffers), detached, by name: what a checkpoint holds.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.iter()
            .map(|(n, e)| (n.to_string(), e.var.as_detached_tensor()))
            .collect()
    }

    /// Overwrites `name` with `value` (same shape; converted to the stored dtype and device).
    pub fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no parameter named {name}")))?;
        if e.var.shape() != value.shape() {
            candle_core::bail!(
                "shape mismatch for {name}: the network has {:?}, the file has {:?}",
                e.var.dims(),
                value.dims()
            )
        }
        let v = value.to_dtype(e.var.dtype())?.to_device(&self.device)?;
        e.var.set(&v)
    }

    /// Saves every tensor as safetensors, through a temporary file and a rename.
    pub fn save_safetensors(&self, path: &std::path::Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> =
            self.tensors().into_iter().collect();
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Total number of trainable scalars.
    pub fn n_params(&self) -> usize {
        self.iter()
            .filter(|(_, e)| e.kind == Kind::Param)
            .map(|(_, e)| e.var.elem_count())
            .sum()
    }

    pub fn dtype(&self) -> DType {
        DType::F32
    }
}

/// A standard normal draw (Box-Muller), so that no extra crate is needed.
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
