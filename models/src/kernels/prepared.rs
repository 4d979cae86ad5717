//! A convolution's weights in the form its fastest forward kernel takes:
//! Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions ([`super::winograd`]),
//! the channels-on-lanes packing for strided and small-map ones
//! ([`super::lanes`]), else the direct kernel's packing ([`super::direct`]).
//! Built per call, or once per frozen model ([`super::frozen`]).

use super::conv::{per_image, with_scratch};
use super::direct::{self, Post};
use super::im2col::ConvGeom;
use super::{lanes, winograd};

pub enum Prepared {
    Winograd(winograd::Weights),
    Lanes(lanes::Packed),
    Direct(direct::Packed),
}

/// Which kernel takes the forward of `g` over `n` images.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kernel {
    Winograd,
    Lanes,
    Direct,
}

impl Kernel {
    /// The kernel for the forward of `g` over `n` images, if one of these
    /// takes it; `kept`: the prepared weights are kept across calls
    /// ([`winograd::applies`]).
    pub fn of(g: &ConvGeom, n: usize, kept: bool) -> Option<Self> {
        if winograd::applies(g, n, kept) {
            Some(Self::Winograd)
        } else if lanes::applies(g) && lanes_suits(g, n, kept) {
            Some(Self::Lanes)
        } else if direct::applies(g) {
            Some(Self::Direct)
        } else {
            None
        }
    }
}

/// Where the channels-on-lanes kernel beat the others (min of 80 or 6
/// interleaved runs of the fused conv+BN+ReLU with kept weights, ResNet18 at
/// 224 px; x = time of the other path / lanes): 3x3 stride 2, batch 1 1.29 to
/// 1.40x, batch 16 1.17 to 1.27x (against GEMM); 3x3 stride 1 at batch 1,
/// 14x14 1.18x (against direct), 7x7 1.33x (against GEMM); 1x1 stride 2 at
/// batch 1, 128 and 256 channels 1.12 and 1.28x, but 64 channels 0.88x and
/// batch 16 0.60 to 0.94x (the batched GEMM). (Kept Winograd, checked
/// first, now takes the 14x14 one at batch 1: 16 tiles.) Stride 1 only with kept
/// weights: transformed per call, Winograd and the batched GEMM were not
/// measured against it. Not for 512 input channels (layer4's 3x3 stride-1
/// convolutions, 1.33x at batch 1): their GEMM needs no copy of the weights,
/// and a kept lanes copy of the three is 28 MB of the server's 300 MB budget
/// (peak RSS at concurrency 32 was 277 MiB without it, `scripts/bench-serve.sh`;
/// with it and the kept Winograd weights of layer3 at batch 1, 307 MiB at
/// concurrency 1, for 1 ms of a 16 ms batch-1 inference).
fn lanes_suits(g: &ConvGeom, n: usize, kept: bool) -> bool {
    match (g.kh, g.stride) {
        (3, 2) => true,
        (3, 1) => kept && g.ow <= 14 && g.c < 512,
        (1, 2) => n == 1 && g.c >= 128,
        _ => false,
    }
}

impl Prepared {
    /// `w` (`o x c x kh x kw`) prepared for the forward of `g` over `n`
    /// images by the kernel [`Kernel::of`] picks, when it picks one.
    pub fn for_forward(w: &[f32], o: usize, g: &ConvGeom, n: usize, kept: bool) -> Option<Self> {
        Some(Self::new(Kernel::of(g, n, kept)?, w, o, g))
    }

    /// `w` (`o x c x kh x kw`) prepared for `kernel`, which takes `g`.
    pub fn new(kernel: Kernel, w: &[f32], o: usize, g: &ConvGeom) -> Self {
        match kernel {
            Kernel::Winograd => Self::Winograd(winograd::Weights::new(w, o, g.c)),
            Kernel::Lanes => Self::Lanes(lanes::Packed::new(w, o, g)),
            Kernel::Direct => Self::Direct(direct::Packed::new(w, o, g)),
        }
    }

    /// Whether these kept weights are those of an `o`-channel convolution
    /// `g`, for the kernel that takes `g` over `n` images now.
    pub fn fits(&self, o: usize, g: &ConvGeom, n: usize) -> bool {
        match (self, Kernel::of(g, n, true)) {
            (Self::Winograd(wg), Some(Kernel::Winograd)) => wg.fits(o, g.c),
            (Self::Lanes(p), Some(Kernel::Lanes)) => p.fits(o, g),
            (Self::Direct(p), Some(Kernel::Direct)) => p.fits(o, g),
            _ => false,
        }
    }

    /// `out (n x o x oh x ow) = post(conv(x))`; `post.residual`, when given,
    /// covers the whole batch like `out`.
    pub fn forward(&self, x: &[f32], n: usize, g: &ConvGeom, out: &mut [f32], post: &Post) {
        match self {
            Self::Winograd(wg) => wg.forward(x, n, g, out, post),
            Self::Lanes(p) => {
                each_image(x, n, g, out, post, p.scratch_len(), |xi, y, s, t, post| {
                    p.forward(xi, y, s, t, post)
                })
            }
            Self::Direct(p) => {
                each_image(x, n, g, out, post, p.scratch_len(), |xi, y, s, t, post| {
                    p.forward(xi, y, s, t, post)
                })
            }
        }
    }
}

/// A per-image kernel `f(x, y, scratch, threads, post)` over the batch, the
/// images spread over the threads ([`per_image`]), each with its slice of the
/// residual and a scratch buffer of `scratch` values.
fn each_image(
    x: &[f32],
    n: usize,
    g: &ConvGeom,
    out: &mut [f32],
    post: &Post,
    scratch: usize,
    f: impl Fn(&[f32], &mut [f32], &mut [f32], usize, &Post) + Sync,
) {
    let (per_in, per_out) = (g.c * g.h * g.w, out.len() / n.max(1));
    per_image(out, n, |i, y, t| {
        let post = Post {
            residual: post.residual.map(|r| &r[i * per_out..(i + 1) * per_out]),
            ..*post
        };
        let xi = &x[i * per_in..(i + 1) * per_in];
        with_scratch(scratch, |s| f(xi, y, s, t, &post));
    });
}
