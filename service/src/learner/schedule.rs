//! fastai's schedules, as pure functions of the training position `pos` in 0..=1.

use std::f64::consts::PI;

/// fastai's `SchedCos(start, end)(pos)`: half a cosine from `start` to `end`.
pub fn sched_cos(start: f64, end: f64, pos: f64) -> f64 {
    start + (1.0 + (PI * (1.0 - pos)).cos()) * (end - start) / 2.0
}

/// fastai's `SchedExp(start, end)(pos)`.
pub fn sched_exp(start: f64, end: f64, pos: f64) -> f64 {
    start * (end / start).powf(pos)
}

/// `fit_one_cycle`'s hyper-parameters (fastai defaults).
#[derive(Debug, Clone, Copy)]
pub struct OneCycle {
    pub div: f64,
    pub div_final: f64,
    pub pct_start: f64,
    pub moms: (f64, f64, f64),
}

impl Default for OneCycle {
    fn default() -> Self {
        Self {
            div: 25.0,
            div_final: 1e5,
            pct_start: 0.25,
            moms: (0.95, 0.85, 0.95),
        }
    }
}

impl OneCycle {
    /// Learning rate at `pos` for a group whose peak is `lr_max`: cosine from
    /// `lr_max/div` up to `lr_max` over `pct_start`, then down to `lr_max/div_final`.
    pub fn lr(&self, lr_max: f64, pos: f64) -> f64 {
        if pos < self.pct_start {
            sched_cos(lr_max / self.div, lr_max, pos / self.pct_start)
        } else {
            sched_cos(
                lr_max,
                lr_max / self.div_final,
                (pos - self.pct_start) / (1.0 - self.pct_start),
            )
        }
    }

    /// Adam's beta1 at `pos`: 0.95 -> 0.85 -> 0.95 (cosine, mirrored to the lr).
    pub fn mom(&self, pos: f64) -> f64 {
        let (a, b, c) = self.moms;
        if pos < self.pct_start {
            sched_cos(a, b, pos / self.pct_start)
        } else {
            sched_cos(b, c, (pos - self.pct_start) / (1.0 - self.pct_start))
        }
    }
}

/// Spreads `lo..hi` geometrically over `n` groups (fastai's `even_mults`).
pub fn even_mults(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![hi];
    }
    let step = (hi / lo).powf(1.0 / (n - 1) as f64);
    (0..n).map(|i| lo * step.powi(i as i32)).collect()
}

/// The learning rates `lr_find` suggests (fastai 2.8's suggestion functions).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LrSuggestions {
    pub valley: f64,
    pub minimum: f64,
    pub steep: f64,
}

/// fastai's `valley`, `minimum` and `steep` on the recorded (lr, smoothed loss)
/// pairs, after dropping the first 10% of `num_it` and the last 5 points as fastai does.
pub fn suggest(lrs: &[f64], losses: &[f64], num_it: usize) -> Option<LrSuggestions> {
    let start = num_it / 10;
    let end = lrs.len().min(losses.len()).saturating_sub(5);
    if end <= start + 2 {
        return None;
    }
    let (lrs, losses) = (&lrs[start..end], &losses[start..end]);
    let argmin = |v: &[f64]| -> usize {
        v.iter()
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |(bi, bv), (i, &x)| if x < bv { (i, x) } else { (bi, bv) },
            )
            .0
    };
    let minimum = lrs[argmin(losses)] / 10.0;
    let grads: Vec<f64> = (1..losses.len())
        .map(|i| (losses[i] - losses[i - 1]) / (lrs[i].ln() - lrs[i - 1].ln()))
        .collect();
    let steep = lrs[argmin(&grads)];
    // valley: the longest decreasing run of losses, then 2/3 down it.
    let n = losses.len();
    let mut lds = vec![1usize; n];
    // fastai's index arithmetic, where `max_start` is -1 when the run starts at
    // the first point (Python would then wrap to the last point; clamp to 0).
    let (mut max_start, mut max_end) = (0isize, 0usize);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && lds[i] < lds[j] + 1 {
                lds[i] = lds[j] + 1;
            }
            if lds[max_end] < lds[i] {
                max_end = i;
                max_start = max_end as isize - lds[max_end] as isize;
            }
        }
    }
    let sections = (max_end as isize - max_start) as f64 / 3.0;
    let idx = (max_start + sections as isize + (sections / 2.0) as isize).clamp(0, n as isize - 1)
        as usize;
    Some(LrSuggestions {
        valley: lrs[idx],
        minimum,
        steep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_that_falls_from_the_first_point_has_a_valley() {
        // Strictly decreasing: the longest decreasing run starts at index 0.
        let lrs: Vec<f64> = (0..40).map(|i| 1e-7 * 1.5f64.powi(i)).collect();
        let losses: Vec<f64> = (0..40).map(|i| 2.0 - i as f64 * 0.01).collect();
        let s = suggest(&lrs, &losses, 20).expect("suggestions");
        assert!(s.valley > lrs[0] && s.valley < lrs[39]);
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
    }

    #[test]
    fn one_cycle_matches_fastai_formulas() {
        let oc = OneCycle::default();
        let lr = 3e-3;
        // fastai: combine_scheds([0.25, 0.75], [SchedCos(lr/25, lr), SchedCos(lr, lr/1e5)])
        assert!(close(oc.lr(lr, 0.0), lr / 25.0));
        assert!(close(oc.lr(lr, 0.25), lr));
        assert!(close(oc.lr(lr, 1.0), lr / 1e5));
        // Midpoint of the warm-up: the mean of both ends.
        assert!(close(oc.lr(lr, 0.125), (lr / 25.0 + lr) / 2.0));
        // pos 0.625 is the middle of the annealing phase.
        assert!(close(oc.lr(lr, 0.625), (lr + lr / 1e5) / 2.0));
        // A sampled point, computed by hand: lr/25 + (1+cos(pi*(1-0.4)))*(lr - lr/25)/2 at pos 0.1.
        let want = lr / 25.0 + (1.0 + (PI * 0.6).cos()) * (lr - lr / 25.0) / 2.0;
        assert!(close(oc.lr(lr, 0.1), want));
        assert!(close(oc.mom(0.0), 0.95));
        assert!(close(oc.mom(0.25), 0.85));
        assert!(close(oc.mom(1.0), 0.95));
        assert!(close(oc.mom(0.625), 0.90));
    }

    #[test]
    fn lr_find_schedule_is_exponential() {
        assert!(close(sched_exp(1e-7, 10.0, 0.0), 1e-7));
        assert!(close(sched_exp(1e-7, 10.0, 1.0), 10.0));
        assert!(close(sched_exp(1e-7, 10.0, 0.5), (1e-7f64 * 10.0).sqrt()));
        let lrs: Vec<f64> = (0..100)
            .map(|i| sched_exp(1e-7, 10.0, i as f64 / 100.0))
            .collect();
        assert!(close(lrs[50] / lrs[49], lrs[10] / lrs[9]));
    }

    #[test]
    fn discriminative_lrs_are_geometric() {
        let v = even_mults(1e-6, 1e-4, 3);
        assert!(close(v[0], 1e-6) && close(v[1], 1e-5) && close(v[2], 1e-4));
    }

    #[test]
    fn suggestions_find_the_valley() {
        // A synthetic curve: flat, a descent between lr 1e-4 and 1e-2, then a blow-up.
        let lrs: Vec<f64> = (0..100)
            .map(|i| sched_exp(1e-7, 10.0, i as f64 / 100.0))
            .collect();
        let losses: Vec<f64> = lrs
            .iter()
            .map(|&lr| {
                let x = lr.log10();
                if x < -4.0 {
                    1.0
                } else if x < -2.0 {
                    1.0 - 0.4 * (x + 4.0)
                } else {
                    0.2 + 5.0 * (x + 2.0).powi(2)
                }
            })
            .collect();
        let s = suggest(&lrs, &losses, 100).unwrap();
        assert!(s.valley > 1e-4 && s.valley < 1e-2, "{s:?}");
        assert!(s.steep > 1e-4 && s.steep < 1e-2, "{s:?}");
        assert!(s.minimum > 1e-4 && s.minimum < 1e-2, "{s:?}");
    }
}
