//! Oversampling of a class and the choice of the validation set (fastai recipe).

use super::dataset::{Dataset, Item};

/// Indices into `labels` with every index of `class` repeated so that it appears
/// `factor` times in total, as the fastai script's `train + normal * (factor - 1)`:
/// all indices in order first, then the extra copies of the class, in order.
/// `factor` 0 or 1 leaves the list as is.
pub fn oversample_indices(labels: &[usize], class: usize, factor: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..labels.len()).collect();
    let of_class: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
    for _ in 1..factor.max(1) {
        out.extend_from_slice(&of_class);
    }
    out
}

/// `items` with the items of `class` appearing `factor` times in total
/// (factor 3 = fastai's `train + normal * 2`).
pub fn oversample(items: &[Item], class: usize, factor: usize) -> Vec<Item> {
    let labels: Vec<usize> = items.iter().map(|i| i.label).collect();
    oversample_indices(&labels, class, factor)
        .into_iter()
        .map(|i| items[i].clone())
        .collect()
}

/// The label with the fewest items (the lowest label on a tie; 0 when empty).
/// Only labels present in `items` are considered.
pub fn minority_class(items: &[Item]) -> usize {
    let n = items.iter().map(|i| i.label + 1).max().unwrap_or(0);
    let mut counts = vec![0usize; n];
    for it in items {
        counts[it.label] += 1;
    }
    counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .min_by_key(|(l, &c)| (c, *l))
        .map_or(0, |(l, _)| l)
}

/// The validation items: `val + test` when `merge_val_test`, else `val`; when
/// `val` is empty and not merging, falls back to `test` with a warning.
pub fn validation_items(ds: &Dataset, merge_val_test: bool) -> Vec<Item> {
    if merge_val_test {
        return ds.val.iter().chain(&ds.test).cloned().collect();
    }
    if ds.val.is_empty() && !ds.test.is_empty() {
        tracing::warn!(
            root = %ds.root.display(),
            "no val/ images: validating on test/ instead ({} images)",
            ds.test.len()
        );
        return ds.test.clone();
    }
    ds.val.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn items(n0: usize, n1: usize) -> Vec<Item> {
        (0..n0 + n1)
            .map(|i| Item {
                path: PathBuf::from(format!("f{i}.png")),
                label: usize::from(i >= n0),
            })
            .collect()
    }

    fn count(items: &[Item], label: usize) -> usize {
        items.iter().filter(|i| i.label == label).count()
    }

    #[test]
    fn oversample_factor_three() {
        let train = items(4, 12);
        assert_eq!(minority_class(&train), 0);
        assert_eq!(minority_class(&items(7, 2)), 1);
        let over = oversample(&train, 0, 3);
        assert_eq!(over.len(), 16 + 8);
        assert_eq!(count(&over, 0), 12);
        assert_eq!(count(&over, 1), 12);
        // Original order first, then the copies, as `train + normal*2`.
        assert_eq!(over[..16], train[..]);
        assert_eq!(over[16..20], train[..4]);
        assert_eq!(over[20..], train[..4]);
        assert_eq!(oversample(&train, 0, 1), train);
        assert_eq!(oversample(&train, 0, 0), train);
    }

    #[test]
    fn merge_and_fallback() {
        let mut ds = Dataset {
            root: PathBuf::from("/x"),
            classes: vec!["NORMAL".into(), "PNEUMONIA".into()],
            train: items(2, 2),
            val: items(1, 2),
            test: items(3, 4),
        };
        assert_eq!(validation_items(&ds, true).len(), 3 + 7);
        assert_eq!(validation_items(&ds, false).len(), 3);
        ds.val.clear();
        assert_eq!(validation_items(&ds, false).len(), 7);
        assert_eq!(validation_items(&ds, true).len(), 7);
        ds.test.clear();
        assert!(validation_items(&ds, false).is_empty());
    }
}
