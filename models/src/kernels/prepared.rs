//! A convolution's weights in the form its fastest forward kernel takes:
//! Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions ([`super::winograd`]),
//! else the direct kernel's packing ([`super::direct`]). Built per call, or
//! once per frozen model ([`super::frozen`]).

use super::conv::{per_image, with_scratch};
use super::direct::{self, Post};
use super::im2col::ConvGeom;
use super::winograd;

pub enum Prepared {
    Winograd(winograd::Weights),
    Direct(direct::Packed),
}

impl Prepared {
    /// Whether one of these kernels takes the forward of `g` over `n`
    /// images, and whether that is Winograd's; `kept`: the prepared weights
    /// are kept across calls ([`winograd::applies`]).
    pub fn applies(g: &ConvGeom, n: usize, kept: bool) -> Option<bool> {
        if winograd::applies(g, n, kept) {
            Some(true)
        } else {
            direct::applies(g).then_some(false)
        }
    }

    /// `w` (`o x c x kh x kw`) prepared for the forward of `g`, when
    /// [`Prepared::applies`].
    pub fn for_forward(w: &[f32], o: usize, g: &ConvGeom, n: usize, kept: bool) -> Option<Self> {
        if winograd::applies(g, n, kept) {
            return Some(Self::Winograd(winograd::Weights::new(w, o, g.c)));
        }
        direct::Packed::for_forward(w, o, g).map(Self::Direct)
    }

    /// Whether these kept weights are those of an `o`-channel convolution
    /// `g`, for the kernel that takes `g` over `n` images now.
    pub fn fits(&self, o: usize, g: &ConvGeom, n: usize) -> bool {
        match self {
            Self::Winograd(wg) => winograd::applies(g, n, true) && wg.fits(o, g.c),
            Self::Direct(p) => !winograd::applies(g, n, true) && p.fits(o, g),
        }
    }

    /// `out (n x o x oh x ow) = post(conv(x))`; `post.residual`, when given,
    /// covers the whole batch like `out`.
    pub fn forward(&self, x: &[f32], n: usize, g: &ConvGeom, out: &mut [f32], post: &Post) {
        match self {
            Self::Winograd(wg) => wg.forward(x, n, g, out, post),
            Self::Direct(p) => {
                let (per_in, per_out) = (g.c * g.h * g.w, out.len() / n.max(1));
                per_image(out, n, |i, y, t| {
                    let post = Post {
                        residual: post.residual.map(|r| &r[i * per_out..(i + 1) * per_out]),
                        ..*post
                    };
                    let xi = &x[i * per_in..(i + 1) * per_in];
                    with_scratch(p.scratch_len(), |s| p.forward(xi, y, s, t, &post));
                });
            }
        }
    }
}
