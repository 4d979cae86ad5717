//! The one training loop, [`Learner::fit`], which calls the callbacks' hooks
//! ([`super::callback`]) and holds none of the tricks; [`Learner::fit_one_cycle`]
//! and [`Learner::lr_find`] assemble callbacks ([`super::callbacks`]) and call it.

use super::base::{Learner, OptState};
use super::callback::{BatchState, Callback, FitState, Halt, HookResult, StepHooks};
use super::callbacks::{
    Checkpoint, DivergenceGuard, LrFinder, OneCycleSchedule, OptionCallbacks, ProgressHook,
    Recorder,
};
use super::events::{EpochMetrics, Event, FitError, LrFindResult};
use super::optim::AdamW;
use super::schedule::OneCycle;
use super::LrSpec;
use crate::data::{Batch, DataLoaders};
use std::ops::Range;

impl Learner {
    /// The callbacks this learner's options ask for, the loss scaler starting
    /// at [`Learner::loss_scale`].
    pub fn option_callbacks(&self) -> OptionCallbacks {
        OptionCallbacks::new(&self.opts, self.loss_scale())
    }

    /// The training loop: trains `opt`'s parameters on `dls` for the epochs
    /// `epochs` (a resumed fit starts past 0; `epochs.end` is the total the
    /// schedules see), calling the hooks of `cbs` (sorted by
    /// [`Callback::order`]) as described in [`super::callback`]. A
    /// [`Halt::Stop`] from a hook ends the fit normally.
    pub fn fit(
        &mut self,
        dls: &DataLoaders,
        opt: &mut AdamW,
        epochs: Range<usize>,
        cbs: &mut [&mut dyn Callback],
    ) -> Result<(), FitError> {
        let mut cbs: Vec<&mut dyn Callback> = cbs
            .iter_mut()
            .map(|c| -> &mut dyn Callback { &mut **c })
            .collect();
        cbs.sort_by_key(|c| c.order());
        let mut s = FitState::new(self, opt, dls, epochs.end);
        stopped_is_ok(run_epochs(&mut s, epochs, &mut cbs))?;
        for c in cbs.iter_mut() {
            stopped_is_ok(c.after_fit(&mut s))?;
        }
        Ok(())
    }

    /// fastai's `fit_one_cycle(epochs, lr)`. `start_epoch` > 0 resumes a run
    /// whose first epochs are done (the schedule continues where it was) with
    /// the optimizer state saved then. `checkpoint` is called after each epoch.
    /// The callbacks: the options' tricks ([`OptionCallbacks`]), the
    /// one-cycle schedule, the divergence guard, the recorder, the checkpoint
    /// and the progress hook.
    #[allow(clippy::too_many_arguments)]
    pub fn fit_one_cycle(
        &mut self,
        dls: &DataLoaders,
        epochs: usize,
        lr: LrSpec,
        start_epoch: usize,
        resume: Option<OptState>,
        hook: &mut dyn FnMut(&Event) -> bool,
        checkpoint: &mut dyn FnMut(usize, &Learner, &AdamW) -> Result<(), FitError>,
    ) -> Result<Vec<EpochMetrics>, FitError> {
        let mut opt = self.new_optimizer()?;
        if let Some(s) = resume {
            opt.load_state(&s.tensors, s.step, &self.device())?;
        }
        let mut tricks = self.option_callbacks();
        let mut schedule = OneCycleSchedule::new(lr, OneCycle::default());
        let mut guard = DivergenceGuard;
        let mut recorder = Recorder::default();
        let mut checkpoint = Checkpoint::new(checkpoint);
        let mut progress = ProgressHook::new(hook);
        let mut cbs: Vec<&mut dyn Callback> = tricks.callbacks();
        cbs.push(&mut schedule);
        cbs.push(&mut guard);
        cbs.push(&mut recorder);
        cbs.push(&mut checkpoint);
        cbs.push(&mut progress);
        let r = self.fit(dls, &mut opt, start_epoch..epochs, &mut cbs);
        drop(cbs);
        self.set_loss_scale(tricks.loss_scale().unwrap_or(self.loss_scale()));
        r.map(|()| recorder.metrics)
    }

    /// fastai's `lr_find`: exponential sweep 1e-7..10 over `num_it` batches,
    /// loss smoothed (beta 0.98, debiased), stop when it exceeds 4x the best;
    /// the weights (and BN statistics) are restored afterwards. The
    /// callbacks: the options' tricks and the [`LrFinder`].
    pub fn lr_find(&mut self, dls: &DataLoaders, num_it: usize) -> Result<LrFindResult, FitError> {
        let mut opt = self.new_optimizer()?;
        let mut tricks = self.option_callbacks();
        let mut finder = LrFinder::new(num_it);
        let mut cbs: Vec<&mut dyn Callback> = tricks.callbacks();
        cbs.push(&mut finder);
        let r = self.fit(dls, &mut opt, LrFinder::epochs(num_it), &mut cbs);
        drop(cbs);
        self.set_loss_scale(tricks.loss_scale().unwrap_or(self.loss_scale()));
        r?;
        Ok(finder.result())
    }
}

/// A fit ended by [`Halt::Stop`] ended normally.
fn stopped_is_ok(r: HookResult) -> Result<(), FitError> {
    match r {
        Ok(()) | Err(Halt::Stop) => Ok(()),
        Err(Halt::Error(e)) => Err(e),
    }
}

/// The epochs of a fit, up to (not including) `after_fit`.
fn run_epochs(
    s: &mut FitState<'_>,
    epochs: Range<usize>,
    cbs: &mut [&mut dyn Callback],
) -> HookResult {
    for c in cbs.iter_mut() {
        c.before_fit(s)?;
    }
    let dls = s.dls;
    for epoch in epochs {
        s.epoch = epoch;
        s.iter = 0;
        s.metrics = None;
        for c in cbs.iter_mut() {
            c.before_epoch(s)?;
        }
        for (i, raw) in dls.train_batches(epoch).enumerate() {
            s.iter = i;
            let b = train_batch(s, &raw, cbs)?;
            for c in cbs.iter_mut() {
                c.after_batch(s, &b)?;
            }
            s.train_iter += 1;
        }
        for c in cbs.iter_mut() {
            c.after_epoch(s)?;
        }
    }
    Ok(())
}

/// One training step with the callbacks' step hooks. On the CPU on a hot
/// thread pool ([`cxr_models::kernels::hot_pool`]): its rayon workers stay on
/// the step's kernels between ops (train b16@128 median step ~350 vs ~379 ms,
/// 5 interleaved pairs of 8 steps).
fn train_batch(
    s: &mut FitState<'_>,
    raw: &Batch,
    cbs: &mut [&mut dyn Callback],
) -> Result<BatchState, Halt> {
    let mut hooks: Vec<&mut dyn StepHooks> =
        cbs.iter_mut().filter_map(|c| c.step_hooks()).collect();
    let dev = s.learn.device();
    cxr_models::kernels::hot_pool(&dev, || step(s, raw, &mut hooks))
}

/// Forward, loss, backward and the optimizer step, between the hooks.
fn step(
    s: &mut FitState<'_>,
    raw: &Batch,
    hooks: &mut [&mut dyn StepHooks],
) -> Result<BatchState, Halt> {
    let (x, y) = s.learn.to_input(raw)?;
    let mut b = BatchState::new(x, y, raw.n);
    for h in hooks.iter_mut() {
        h.before_batch(s, &mut b)?;
    }
    let pred = s.learn.net.forward_t(&b.x, true)?;
    let mut loss = None;
    for h in hooks.iter_mut() {
        h.loss(s, &b, &pred, &mut loss)?;
    }
    let mut loss = match loss {
        Some(l) => l,
        None => s.loss_func.mean(&pred, &b.y)?,
    };
    b.loss = f64::from(loss.to_scalar::<f32>()?);
    for h in hooks.iter_mut() {
        h.after_loss(s, &b)?;
    }
    for h in hooks.iter_mut() {
        h.before_backward(s, &b, &mut loss)?;
    }
    let mut grads = loss.backward()?;
    for h in hooks.iter_mut() {
        h.after_backward(s, &mut b, &mut grads)?;
    }
    if !b.skip_step {
        s.opt.step(&grads)?;
        for h in hooks.iter_mut() {
            h.after_step(s, &b)?;
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::testutil::{tiny_dls, tiny_learner};
    use crate::learner::LearnerOptions;
    use candle_core::Tensor;
    use std::sync::{Arc, Mutex};

    /// Logs every hook it sees as `name:hook`; may halt at one.
    struct Trace {
        name: &'static str,
        order: i32,
        log: Arc<Mutex<Vec<String>>>,
        halt_at: Option<(&'static str, usize)>,
        stop: bool,
    }

    impl Trace {
        fn new(name: &'static str, order: i32, log: &Arc<Mutex<Vec<String>>>) -> Self {
            Self {
                name,
                order,
                log: Arc::clone(log),
                halt_at: None,
                stop: true,
            }
        }

        fn hit(&mut self, hook: &str, s: &FitState<'_>) -> HookResult {
            self.log
                .lock()
                .unwrap()
                .push(format!("{}:{hook}", self.name));
            if self.halt_at == Some((hook, s.train_iter)) {
                return Err(if self.stop {
                    Halt::Stop
                } else {
                    Halt::Error(FitError::Cancelled)
                });
            }
            Ok(())
        }
    }

    impl Callback for Trace {
        fn order(&self) -> i32 {
            self.order
        }
        fn before_fit(&mut self, s: &mut FitState<'_>) -> HookResult {
            self.hit("before_fit", s)
        }
        fn before_epoch(&mut self, s: &mut FitState<'_>) -> HookResult {
            self.hit("before_epoch", s)
        }
        fn after_batch(&mut self, s: &mut FitState<'_>, _b: &BatchState) -> HookResult {
            self.hit("after_batch", s)
        }
        fn after_epoch(&mut self, s: &mut FitState<'_>) -> HookResult {
            self.hit("after_epoch", s)
        }
        fn after_fit(&mut self, s: &mut FitState<'_>) -> HookResult {
            self.hit("after_fit", s)
        }
        fn step_hooks(&mut self) -> Option<&mut dyn StepHooks> {
            Some(self)
        }
    }

    impl StepHooks for Trace {
        fn before_batch(&mut self, s: &mut FitState<'_>, _b: &mut BatchState) -> HookResult {
            self.hit("before_batch", s)
        }
        fn loss(
            &mut self,
            s: &mut FitState<'_>,
            _b: &BatchState,
            _pred: &Tensor,
            _loss: &mut Option<Tensor>,
        ) -> HookResult {
            self.hit("loss", s)
        }
        fn after_loss(&mut self, s: &mut FitState<'_>, _b: &BatchState) -> HookResult {
            self.hit("after_loss", s)
        }
        fn before_backward(
            &mut self,
            s: &mut FitState<'_>,
            _b: &BatchState,
            _loss: &mut Tensor,
        ) -> HookResult {
            self.hit("before_backward", s)
        }
        fn after_backward(
            &mut self,
            s: &mut FitState<'_>,
            _b: &mut BatchState,
            _grads: &mut candle_core::backprop::GradStore,
        ) -> HookResult {
            self.hit("after_backward", s)
        }
        fn after_step(&mut self, s: &mut FitState<'_>, _b: &BatchState) -> HookResult {
            self.hit("after_step", s)
        }
    }

    fn hooks_of(log: &Arc<Mutex<Vec<String>>>, name: &str) -> Vec<String> {
        let log = log.lock().unwrap();
        let pre = format!("{name}:");
        log.iter()
            .filter_map(|l| l.strip_prefix(&pre).map(str::to_string))
            .collect()
    }

    #[test]
    fn the_loop_calls_every_hook_in_order_and_callbacks_by_their_order() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let mut opt = l.new_optimizer().unwrap();
        opt.set_lrs(&[1e-4; 3]);
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut late = Trace::new("late", 5, &log);
        let mut early = Trace::new("early", -5, &log);
        l.fit(&dls, &mut opt, 1..2, &mut [&mut late, &mut early])
            .unwrap();
        let step = [
            "before_batch",
            "loss",
            "after_loss",
            "before_backward",
            "after_backward",
            "after_step",
            "after_batch",
        ];
        let mut want = vec!["before_fit", "before_epoch"];
        for _ in 0..dls.n_train_batches() {
            want.extend(step);
        }
        want.extend(["after_epoch", "after_fit"]);
        assert_eq!(hooks_of(&log, "early"), want);
        assert_eq!(hooks_of(&log, "late"), want);
        let log = log.lock().unwrap();
        assert_eq!(log[0], "early:before_fit");
        assert_eq!(log[1], "late:before_fit");
    }

    #[test]
    fn stop_ends_the_fit_normally_and_an_error_at_once() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let mut opt = l.new_optimizer().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut t = Trace::new("t", 0, &log);
        t.halt_at = Some(("after_loss", 1));
        l.fit(&dls, &mut opt, 0..3, &mut [&mut t]).unwrap();
        let hooks = hooks_of(&log, "t");
        // The second batch stops after its loss: no backward, then after_fit.
        assert_eq!(hooks.iter().filter(|h| *h == "after_step").count(), 1);
        assert_eq!(&hooks[hooks.len() - 2..], ["after_loss", "after_fit"]);
        log.lock().unwrap().clear();
        let mut t = Trace::new("t", 0, &log);
        t.halt_at = Some(("after_batch", 0));
        t.stop = false;
        let r = l.fit(&dls, &mut opt, 0..3, &mut [&mut t]);
        assert!(matches!(r, Err(FitError::Cancelled)), "{r:?}");
        assert_eq!(hooks_of(&log, "t").last().unwrap(), "after_batch");
    }

    #[test]
    fn fit_one_cycle_records_checkpoints_reports_and_cancels() {
        let (_tmp, dls) = tiny_dls();
        let iters = dls.n_train_batches();
        let opts = LearnerOptions {
            mixup: Some(0.4),
            label_smoothing: 0.1,
            ..Default::default()
        };
        let mut l = tiny_learner(opts);
        let (mut events, mut saved) = (Vec::new(), Vec::new());
        let m = l
            .fit_one_cycle(
                &dls,
                2,
                LrSpec::Single(1e-3),
                0,
                None,
                &mut |e: &Event| {
                    events.push(e.clone());
                    true
                },
                &mut |done, _l: &Learner, o: &AdamW| {
                    saved.push((done, o.state()?.1));
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(m.iter().map(|m| m.epoch).collect::<Vec<_>>(), [0, 1]);
        assert!(m
            .iter()
            .all(|m| m.train_loss.is_finite() && m.valid_loss.is_finite()));
        assert_eq!(l.batch_losses.len(), 2 * iters);
        let step = iters as u64;
        assert_eq!(saved, [(1, step), (2, 2 * step)]);
        assert_eq!(events.len(), 2 * (iters + 2));
        assert!(matches!(
            events[0],
            Event::EpochStart {
                epoch: 0,
                epochs: 2,
                ..
            }
        ));
        assert!(matches!(&events[iters + 1], Event::Epoch(e) if *e == m[0]));
        // Cancelled on the first epoch's row: its checkpoint is written.
        let mut saved = Vec::new();
        let r = l.fit_one_cycle(
            &dls,
            2,
            LrSpec::Single(1e-3),
            0,
            None,
            &mut |e: &Event| !matches!(e, Event::Epoch(_)),
            &mut |done, _l: &Learner, _o: &AdamW| {
                saved.push(done);
                Ok(())
            },
        );
        assert!(matches!(r, Err(FitError::Cancelled)));
        assert_eq!(saved, [1]);
    }

    #[test]
    fn lr_find_sweeps_and_restores_the_weights() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let before = l.net.params().tensors();
        let before: Vec<(String, Vec<f32>)> = before
            .into_iter()
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        let r = l.lr_find(&dls, 12).unwrap();
        assert!(!r.lrs.is_empty() && r.lrs.len() <= 12);
        assert_eq!(r.lrs.len(), r.losses.len());
        assert_eq!(r.lrs[0], 1e-7);
        for (n, t) in before {
            let now = l.net.params().tensors();
            let (_, after) = now.iter().find(|(m, _)| *m == n).unwrap();
            assert_eq!(
                after.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                t,
                "{n}"
            );
        }
    }
}
