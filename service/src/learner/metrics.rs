//! Classification metrics: accuracy, precision, recall, F1 (positive class =
//! the last class, PNEUMONIA), ROC AUC, the confusion matrix and a
//! scikit-learn-style classification report.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfusionMatrix {
    pub labels: Vec<String>,
    /// `matrix[actual][predicted]`; for two classes `[[tn, fp], [fn, tp]]`.
    pub matrix: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassReport {
    pub precision: f64,
    pub recall: f64,
    #[serde(rename = "f1-score")]
    pub f1: f64,
    pub support: u64,
}

/// The report the API and `cxr evaluate` print.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub confusion_matrix: ConfusionMatrix,
    /// Per class, then `macro avg` and `weighted avg` (as scikit-learn).
    pub classification_report: std::collections::BTreeMap<String, ClassReport>,
    pub accuracy: f64,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub auc: f64,
    pub n: usize,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Index of the largest probability.
pub fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

/// ROC AUC of `scores` for `positive` (Mann-Whitney U, ties count half).
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = r;
        }
        i = j + 1;
    }
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let sum_pos: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(r, _)| r)
        .sum();
    (sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Builds the full report from per-image probabilities and true labels.
pub fn report(probs: &[Vec<f32>], labels: &[u32], classes: &[String]) -> Report {
    let k = classes.len();
    let mut m = vec![vec![0u64; k]; k];
    for (p, &y) in probs.iter().zip(labels) {
        let pred = argmax(p);
        if (y as usize) < k && pred < k {
            m[y as usize][pred] += 1;
        }
    }
    let n: u64 = m.iter().flatten().sum();
    let correct: u64 = (0..k).map(|i| m[i][i]).sum();
    let mut per = std::collections::BTreeMap::new();
    let (mut macro_p, mut macro_r, mut macro_f) = (0.0, 0.0, 0.0);
    let (mut w_p, mut w_r, mut w_f) = (0.0, 0.0, 0.0);
    for c in 0..k {
        let tp = m[c][c];
        let pred_c: u64 = (0..k).map(|r| m[r][c]).sum();
        let support: u64 = m[c].iter().sum();
        let p = ratio(tp, pred_c);
        let r = ratio(tp, support);
        let f = f1(p, r);
        macro_p += p / k as f64;
        macro_r += r / k as f64;
        macro_f += f / k as f64;
        let w = ratio(support, n);
        w_p += p * w;
        w_r += r * w;
        w_f += f * w;
        per.insert(
            classes[c].clone(),
            ClassReport {
                precision: p,
                recall: r,
                f1: f,
                support,
            },
        );
    }
    per.insert(
        "macro avg".into(),
        ClassReport {
            precision: macro_p,
            recall: macro_r,
            f1: macro_f,
            support: n,
        },
    );
    per.insert(
        "weighted avg".into(),
        ClassReport {
            precision: w_p,
            recall: w_r,
            f1: w_f,
            support: n,
        },
    );
    let pos = k - 1;
    let positive = &per[&classes[pos]];
    let scores: Vec<f32> = probs
        .iter()
        .map(|p| p.get(pos).copied().unwrap_or(0.0))
        .collect();
    let is_pos: Vec<bool> = labels.iter().map(|&y| y as usize == pos).collect();
    Report {
        accuracy: ratio(correct, n),
        f1: positive.f1,
        precision: positive.precision,
        recall: positive.recall,
        auc: roc_auc(&scores, &is_pos),
        confusion_matrix: ConfusionMatrix {
            labels: classes.to_vec(),
            matrix: m,
        },
        classification_report: per,
        n: n as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_report_by_hand() {
        let classes = vec!["NORMAL".to_string(), "PNEUMONIA".to_string()];
        // truth:  0    0    1    1    1
        // pred:   0    1    1    1    0
        let probs = vec![
            vec![0.9, 0.1],
            vec![0.4, 0.6],
            vec![0.2, 0.8],
            vec![0.3, 0.7],
            vec![0.55, 0.45],
        ];
        let labels = vec![0, 0, 1, 1, 1];
        let r = report(&probs, &labels, &classes);
        assert_eq!(r.confusion_matrix.matrix, vec![vec![1, 1], vec![1, 2]]);
        assert!((r.accuracy - 0.6).abs() < 1e-12);
        assert!((r.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.f1 - 2.0 / 3.0).abs() < 1e-12);
        // Scores of positives: .8 .7 .45; negatives: .1 .6 -> pairs won: (.8>.1,.8>.6,.7>.1,.7>.6,.45>.1) = 5/6
        assert!((r.auc - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(r.classification_report["NORMAL"].support, 2);
        assert!((r.classification_report["NORMAL"].precision - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auc_ties_count_half() {
        assert!((roc_auc(&[0.5, 0.5], &[true, false]) - 0.5).abs() < 1e-12);
        assert!(roc_auc(&[0.5], &[true]).is_nan());
    }
}
