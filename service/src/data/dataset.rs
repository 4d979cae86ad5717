//! Scans a Kaggle-layout folder (`train|val|test/<CLASS>/*.jpeg`) into labelled items.

use super::DataError;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpeg", "jpg", "png"];

/// One labelled image file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Item {
    pub path: PathBuf,
    /// Index into [`Dataset::classes`].
    pub label: usize,
}

/// The images of a data folder, split as on disk.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    /// Sorted class folder names of `train/` (NORMAL = 0, PNEUMONIA = 1).
    pub classes: Vec<String>,
    pub train: Vec<Item>,
    /// Empty when `val/` is absent.
    pub val: Vec<Item>,
    /// Empty when `test/` is absent.
    pub test: Vec<Item>,
}

impl Dataset {
    /// Reads `root/train/<CLASS>/*` (required) and `root/val`, `root/test` (optional).
    ///
    /// Classes are the sorted sub-folder names of `train/` (hidden folders are
    /// ignored); every split present must have exactly the same class folders,
    /// each holding at least one `.jpeg`/`.jpg`/`.png` file (case-insensitive;
    /// other files are ignored, sub-folders are not searched). Items are sorted
    /// by path, so the order does not depend on the file system.
    pub fn scan(root: &Path) -> Result<Dataset, DataError> {
        if !root.is_dir() {
            return Err(DataError::RootNotFound(root.to_path_buf()));
        }
        let train_dir = root.join("train");
        if !train_dir.is_dir() {
            return Err(DataError::MissingTrain(train_dir));
        }
        let classes: Vec<String> = subfolders(&train_dir)?.into_iter().collect();
        if classes.len() < 2 {
            return Err(DataError::TooFewClasses {
                path: train_dir,
                found: classes.len(),
                classes,
            });
        }
        let train = scan_split(&train_dir, &classes)?;
        let mut val = Vec::new();
        let mut test = Vec::new();
        for (name, out) in [("val", &mut val), ("test", &mut test)] {
            let dir = root.join(name);
            if dir.is_dir() {
                *out = scan_split(&dir, &classes)?;
            }
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            classes,
            train,
            val,
            test,
        })
    }

    /// Number of items of each class in `items` (indexed by label).
    pub fn class_counts(&self, items: &[Item]) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for it in items {
            if let Some(c) = counts.get_mut(it.label) {
                *c += 1;
            }
        }
        counts
    }

    /// A table of class counts per split, for printing.
    pub fn counts(&self) -> String {
        let width = self
            .classes
            .iter()
            .map(|c| c.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let mut s = format!("{:<6}", "split");
        for c in &self.classes {
            let _ = write!(s, " {c:>width$}");
        }
        let _ = writeln!(s, " {:>width$}", "total");
        for (name, items) in [
            ("train", &self.train),
            ("val", &self.val),
            ("test", &self.test),
        ] {
            let _ = write!(s, "{name:<6}");
            for n in self.class_counts(items) {
                let _ = write!(s, " {n:>width$}");
            }
            let _ = writeln!(s, " {:>width$}", items.len());
        }
        s
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    Ok(out)
}

/// Names of the non-hidden sub-folders of `dir`, sorted.
fn subfolders(dir: &Path) -> Result<BTreeSet<String>, DataError> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with('.'))
        .collect())
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn scan_split(dir: &Path, classes: &[String]) -> Result<Vec<Item>, DataError> {
    let expected = classes.join(", ");
    let found = subfolders(dir)?;
    for c in classes {
        if !found.contains(c) {
            return Err(DataError::MissingClass {
                path: dir.join(c),
                expected,
            });
        }
    }
    if let Some(extra) = found.iter().find(|f| !classes.contains(f)) {
        return Err(DataError::UnexpectedClass {
            path: dir.join(extra),
            expected,
        });
    }
    let mut items = Vec::new();
    for (label, c) in classes.iter().enumerate() {
        let class_dir = dir.join(c);
        let before = items.len();
        items.extend(
            read_dir(&class_dir)?
                .into_iter()
                .filter(|p| is_image(p))
                .map(|path| Item { path, label }),
        );
        if items.len() == before {
            return Err(DataError::EmptyClass(class_dir));
        }
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::make_tree;

    #[test]
    fn scan_counts_and_labels() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        make_tree(
            root,
            &[
                ("train", &[("NORMAL", 3), ("PNEUMONIA", 5)]),
                ("val", &[("NORMAL", 1), ("PNEUMONIA", 2)]),
            ],
        );
        // Upper-case extension counts, other files are ignored.
        std::fs::copy(
            root.join("train/NORMAL/img000.png"),
            root.join("train/NORMAL/extra.JPG"),
        )
        .expect("copy");
        std::fs::write(root.join("train/NORMAL/notes.txt"), "x").expect("write");
        std::fs::create_dir_all(root.join("train/.cache")).expect("mkdir");

        let ds = Dataset::scan(root).expect("scan");
        assert_eq!(ds.classes, vec!["NORMAL", "PNEUMONIA"]);
        assert_eq!(ds.class_counts(&ds.train), vec![4, 5]);
        assert_eq!(ds.class_counts(&ds.val), vec![1, 2]);
        assert!(ds.test.is_empty());
        assert!(ds.train.windows(2).all(|w| w[0].path < w[1].path));
        assert!(ds.train[..4].iter().all(|i| i.label == 0));
        let table = ds.counts();
        assert!(table.contains("PNEUMONIA"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("train")
            && l.split_whitespace().collect::<Vec<_>>() == ["train", "4", "5", "9"]));
        assert!(table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["test", "0", "0", "0"]));
    }

    #[test]
    fn missing_train_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = Dataset::scan(tmp.path()).unwrap_err();
        assert!(matches!(err, DataError::MissingTrain(_)), "{err}");
        assert!(err.to_string().contains("train"));
    }

    #[test]
    fn missing_class_folder_names_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        make_tree(
            root,
            &[
                ("train", &[("NORMAL", 2), ("PNEUMONIA", 2)]),
                ("test", &[("NORMAL", 1)]),
            ],
        );
        let err = Dataset::scan(root).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::MissingClass { .. }), "{msg}");
        assert!(
            msg.contains(&root.join("test").join("PNEUMONIA").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn empty_class_folder_names_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        make_tree(root, &[("train", &[("NORMAL", 2), ("PNEUMONIA", 2)])]);
        let empty = root.join("val").join("NORMAL");
        std::fs::create_dir_all(&empty).expect("mkdir");
        std::fs::write(empty.join("readme.txt"), "not an image").expect("write");
        make_tree(root, &[("val", &[("PNEUMONIA", 1)])]);
        let err = Dataset::scan(root).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::EmptyClass(_)), "{msg}");
        assert!(msg.contains(&empty.display().to_string()), "{msg}");
    }

    #[test]
    fn extra_class_and_single_class_are_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        make_tree(root, &[("train", &[("NORMAL", 2)])]);
        let err = Dataset::scan(root).unwrap_err();
        assert!(
            matches!(err, DataError::TooFewClasses { found: 1, .. }),
            "{err}"
        );
        make_tree(
            root,
            &[
                ("train", &[("PNEUMONIA", 2)]),
                ("val", &[("NORMAL", 1), ("PNEUMONIA", 1), ("COVID", 1)]),
            ],
        );
        let err = Dataset::scan(root).unwrap_err();
        assert!(matches!(err, DataError::UnexpectedClass { .. }), "{err}");
        assert!(err.to_string().contains("COVID"));
    }
}
