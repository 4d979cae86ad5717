//! Terminal progress: a bar per epoch and a fastai-style metrics table.

use cxr_service::learner::Event;
use cxr_service::train::RunEvent;
use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

pub const HEADER: &str = "stage epoch  train_loss  valid_loss  accuracy  f1      precision  recall  auc     time    img/s";

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self { bar: None, quiet }
    }

    pub fn on(&mut self, e: &RunEvent) -> bool {
        match e {
            RunEvent::Message(m) => self.println(m),
            RunEvent::StageStart {
                stage,
                name,
                epochs,
                ..
            } => {
                self.println(&format!(
                    "\n== stage {} ({name}): {epochs} epoch(s)\n{HEADER}",
                    stage + 1
                ));
            }
            RunEvent::Learner { stage, event } => {
                match event {
                    Event::EpochStart {
                        iters,
                        epoch,
                        epochs,
                    } => {
                        if !self.quiet {
                            let bar = ProgressBar::new(*iters as u64);
                            bar.set_style(
                            ProgressStyle::with_template("  epoch {msg} [{bar:30}] {pos}/{len} batches, {elapsed} < {eta}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                        );
                            bar.set_message(format!("{}/{}", epoch + 1, epochs));
                            self.bar = Some(bar);
                        }
                    }
                    Event::Batch { iter, loss, .. } => {
                        if let Some(b) = &self.bar {
                            b.set_position(*iter as u64);
                            b.set_message(format!("loss {loss:.4}"));
                        }
                    }
                    Event::Epoch(m) => {
                        if let Some(b) = self.bar.take() {
                            b.finish_and_clear();
                        }
                        self.println(&format!(
                        "{:<5} {:<6} {:<11.6} {:<11.6} {:<9.4} {:<7.4} {:<10.4} {:<7.4} {:<7.4} {:<7.1} {:.1}",
                        stage + 1,
                        m.epoch,
                        m.train_loss,
                        m.valid_loss,
                        m.accuracy,
                        m.f1,
                        m.precision,
                        m.recall,
                        m.auc,
                        m.seconds,
                        m.images_per_s
                    ));
                    }
                }
            }
        }
        true
    }

    fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }
}
