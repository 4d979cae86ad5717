//! A convolution's weights in the form the kernel [`super::plan`] picks for
//! its forward takes: Winograd F(4x4, 3x3) ([`super::winograd`]), the
//! channels-on-lanes packing ([`super::lanes`]) or the direct kernel's
//! packing ([`super::direct`]). Built per call, or once per frozen model
//! ([`super::frozen`]).

use super::direct::{self, Post};
use super::im2col::ConvGeom;
use super::par::{per_image, with_scratch};
use super::plan::Algorithm;
use super::{lanes, winograd};

pub enum Prepared {
    Winograd(winograd::Weights),
    Lanes(lanes::Packed),
    Direct(direct::Packed),
}

/// A kernel that runs on prepared weights.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kernel {
    Winograd,
    Lanes,
    Direct,
}

impl Kernel {
    /// The kernel of `alg`, if it runs on prepared weights.
    pub fn of(alg: Algorithm) -> Option<Self> {
        match alg {
            Algorithm::Winograd => Some(Self::Winograd),
            Algorithm::Lanes => Some(Self::Lanes),
            Algorithm::Direct => Some(Self::Direct),
            _ => None,
        }
    }
}

impl Prepared {
    /// `w` (`o x c x kh x kw`) prepared for `kernel`, which takes `g`.
    pub fn new(kernel: Kernel, w: &[f32], o: usize, g: &ConvGeom) -> Self {
        match kernel {
            Kernel::Winograd => Self::Winograd(winograd::Weights::new(w, o, g.c)),
            Kernel::Lanes => Self::Lanes(lanes::Packed::new(w, o, g)),
            Kernel::Direct => Self::Direct(direct::Packed::new(w, o, g)),
        }
    }

    /// Whether these are weights prepared for `kernel` of an `o`-channel
    /// convolution `g`.
    pub fn fits(&self, kernel: Kernel, o: usize, g: &ConvGeom) -> bool {
        match (self, kernel) {
            (Self::Winograd(wg), Kernel::Winograd) => wg.fits(o, g.c),
            (Self::Lanes(p), Kernel::Lanes) => p.fits(o, g),
            (Self::Direct(p), Kernel::Direct) => p.fits(o, g),
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
