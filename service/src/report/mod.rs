//! Reports after training: plots (lr_find, losses, confusion matrix), Grad-CAM
//! heatmaps and the interpretation of a model on a dataset.

pub mod gradcam;
pub mod interpret;
pub mod plots;
