//! Callbacks, as fastai has them: [`Learner::fit`] runs the training loop and
//! calls hooks at fixed points; every trick (mixup, label smoothing, loss
//! scaling, the one-cycle schedule, recording, checkpointing, cancellation,
//! lr_find) is a callback that reads and writes the shared [`FitState`].
//!
//! The order of one fit:
//!
//! ```text
//! before_fit
//! for each epoch:
//!     before_epoch
//!     for each batch:                       ┐ one training step, on the CPU hot
//!         before_batch   (may change x, y)  │ pool (StepHooks: Send)
//!         forward
//!         loss           (may set the loss; else FitState::loss_func)
//!         after_loss     (the loss value is known)
//!         before_backward (may scale the loss)
//!         backward
//!         after_backward (may change the gradients, or skip the step)
//!         optimizer step, after_step         ┘
//!         after_batch
//!     after_epoch        (FitState::metrics holds the epoch's row once the Recorder ran)
//! after_fit
//! ```
//!
//! A hook ends the fit early by returning [`Halt::Stop`] (a normal end:
//! `after_fit` still runs and `fit` returns `Ok`, as lr_find's "the loss
//! exploded") or [`Halt::Error`] (`fit` returns the error at once, without
//! `after_fit`; [`FitError::Cancelled`] when the progress hook says so).
//!
//! Callbacks run in the order of [`Callback::order`] (lowest first), ties in
//! the order given.
//!
//! The hooks inside the training step are a separate trait, [`StepHooks`],
//! reached through [`Callback::step_hooks`]: the step runs on the CPU hot pool
//! ([`cxr_models::kernels::hot_pool`]), on one of rayon's threads, so what it
//! touches must be `Send`. Epoch-level callbacks need not be (the progress and
//! checkpoint closures of [`Learner::fit_one_cycle`] are not).
//!
//! [`Learner::fit`]: super::Learner::fit
//! [`Learner::fit_one_cycle`]: super::Learner::fit_one_cycle

use super::base::Learner;
use super::events::{EpochMetrics, FitError};
use super::loss::CrossEntropy;
use super::optim::AdamW;
use crate::data::DataLoaders;
use candle_core::backprop::GradStore;
use candle_core::Tensor;

/// How a hook ends the fit early.
#[derive(Debug)]
pub enum Halt {
    /// Stop training now and end the fit normally: `after_fit` runs, `fit`
    /// returns `Ok`.
    Stop,
    /// Stop training now and fail the fit with this error.
    Error(FitError),
}

impl From<FitError> for Halt {
    fn from(e: FitError) -> Self {
        Halt::Error(e)
    }
}

impl From<candle_core::Error> for Halt {
    fn from(e: candle_core::Error) -> Self {
        Halt::Error(FitError::Candle(e))
    }
}

/// What every hook returns.
pub type HookResult = Result<(), Halt>;

/// The state of a fit, shared by the loop and its callbacks.
pub struct FitState<'a> {
    pub learn: &'a mut Learner,
    pub opt: &'a mut AdamW,
    pub dls: &'a DataLoaders,
    /// Epochs of the whole schedule: the fit runs `epoch` up to this (a resumed
    /// fit starts past 0 but keeps the total, so its schedule continues).
    pub epochs: usize,
    /// The current epoch.
    pub epoch: usize,
    /// Training batches per epoch.
    pub iters: usize,
    /// Index of the current batch in its epoch.
    pub iter: usize,
    /// Batches trained in this fit so far (all epochs).
    pub train_iter: usize,
    /// The loss when no callback computes one, and the validation loss
    /// (label smoothing sets it).
    pub loss_func: CrossEntropy,
    /// The epoch's metrics, set in `after_epoch` by the
    /// [`Recorder`](super::callbacks::Recorder) for the callbacks after it.
    pub metrics: Option<EpochMetrics>,
}

impl<'a> FitState<'a> {
    pub fn new(
        learn: &'a mut Learner,
        opt: &'a mut AdamW,
        dls: &'a DataLoaders,
        epochs: usize,
    ) -> Self {
        Self {
            learn,
            opt,
            dls,
            epochs,
            epoch: 0,
            iters: dls.n_train_batches(),
            iter: 0,
            train_iter: 0,
            loss_func: CrossEntropy::default(),
            metrics: None,
        }
    }
}

/// The batch of the current training step.
#[derive(Debug, Clone)]
pub struct BatchState {
    /// Inputs `[n, 3, size, size]` in the learner's precision (mixup replaces them).
    pub x: Tensor,
    /// Class indices `[n]`.
    pub y: Tensor,
    pub n: usize,
    /// The loss value (unscaled), known from `after_loss` on; NaN before.
    pub loss: f64,
    /// Set by `after_backward` to skip the optimizer step (loss scaling's overflow).
    pub skip_step: bool,
}

impl BatchState {
    pub fn new(x: Tensor, y: Tensor, n: usize) -> Self {
        Self {
            x,
            y,
            n,
            loss: f64::NAN,
            skip_step: false,
        }
    }
}

/// A training callback: every hook defaults to doing nothing.
pub trait Callback {
    /// Where this callback runs among the others: lowest first.
    fn order(&self) -> i32 {
        0
    }
    fn before_fit(&mut self, _s: &mut FitState<'_>) -> HookResult {
        Ok(())
    }
    fn before_epoch(&mut self, _s: &mut FitState<'_>) -> HookResult {
        Ok(())
    }
    /// After the training step of a batch (outside the hot pool).
    fn after_batch(&mut self, _s: &mut FitState<'_>, _b: &BatchState) -> HookResult {
        Ok(())
    }
    /// After the epoch's training batches.
    fn after_epoch(&mut self, _s: &mut FitState<'_>) -> HookResult {
        Ok(())
    }
    /// At the end of a fit that finished or was stopped with [`Halt::Stop`].
    fn after_fit(&mut self, _s: &mut FitState<'_>) -> HookResult {
        Ok(())
    }
    /// This callback's hooks inside the training step, if it has any.
    fn step_hooks(&mut self) -> Option<&mut dyn StepHooks> {
        None
    }
}

/// The hooks inside one training step (see the module docs for their order).
pub trait StepHooks: Send {
    /// May replace the inputs and targets (mixup) or set the learning rates.
    fn before_batch(&mut self, _s: &mut FitState<'_>, _b: &mut BatchState) -> HookResult {
        Ok(())
    }
    /// May compute (set) or transform the loss of `pred`; when no hook sets
    /// it, the loop uses [`FitState::loss_func`].
    fn loss(
        &mut self,
        _s: &mut FitState<'_>,
        _b: &BatchState,
        _pred: &Tensor,
        _loss: &mut Option<Tensor>,
    ) -> HookResult {
        Ok(())
    }
    /// The loss value is in `b.loss`.
    fn after_loss(&mut self, _s: &mut FitState<'_>, _b: &BatchState) -> HookResult {
        Ok(())
    }
    /// May transform the loss that is differentiated (loss scaling).
    fn before_backward(
        &mut self,
        _s: &mut FitState<'_>,
        _b: &BatchState,
        _loss: &mut Tensor,
    ) -> HookResult {
        Ok(())
    }
    /// May change the gradients or set `b.skip_step`.
    fn after_backward(
        &mut self,
        _s: &mut FitState<'_>,
        _b: &mut BatchState,
        _grads: &mut GradStore,
    ) -> HookResult {
        Ok(())
    }
    /// After the optimizer step (not called when it was skipped).
    fn after_step(&mut self, _s: &mut FitState<'_>, _b: &BatchState) -> HookResult {
        Ok(())
    }
}
