//! The kernel plan: which algorithm a convolution takes. [`plan`] is the one
//! place that decides, from the convolution's shape, the pass (forward,
//! fused inference forward, fused stem, input or weight gradient), whether
//! its weights are kept by a frozen model, and the [`KernelSettings`]
//! (`CXR_KERNELS`). The kernels compute; every dispatch site asks [`plan`].
//!
//! The thresholds below were measured with `bench_kernels` and `cxr bench`
//! (min of interleaved runs); their history is in git.

use super::direct::{self, input_grad_geom};
use super::direct_weight_grad::WO;
use super::im2col::ConvGeom;
use super::{lanes, taps, winograd};
use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};

/// An algorithm a part of cxr's kernels can be turned off by name in
/// `CXR_KERNELS` (`-winograd`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    /// Winograd F(4x4, 3x3) ([`super::winograd`]).
    Winograd,
    /// The direct kernel, forward, input and weight gradient ([`super::direct`]).
    Direct,
    /// The channels-on-lanes kernel ([`super::lanes`]); the fused stem runs on it.
    Lanes,
    /// One GEMM per kernel tap ([`super::taps`]).
    Taps,
    /// The fused inference stem ([`super::stem`]).
    Stem,
    /// The hot thread pool ([`super::hot_pool`]).
    HotPool,
}

impl Toggle {
    pub const ALL: [Toggle; 6] = [
        Toggle::Winograd,
        Toggle::Direct,
        Toggle::Lanes,
        Toggle::Taps,
        Toggle::Stem,
        Toggle::HotPool,
    ];

    /// Its name in `CXR_KERNELS`.
    pub fn name(self) -> &'static str {
        match self {
            Toggle::Winograd => "winograd",
            Toggle::Direct => "direct",
            Toggle::Lanes => "lanes",
            Toggle::Taps => "taps",
            Toggle::Stem => "stem",
            Toggle::HotPool => "hot-pool",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Bits of [`KernelSettings::bits`] past the toggles.
const CANDLE: u16 = 1 << 8;
const AVX512: u16 = 1 << 9;
/// Set in the global once it holds settings.
const DECIDED: u16 = 1 << 15;

/// What `CXR_KERNELS` asks for: `auto` (the default: every kernel where it
/// pays), `candle` (candle's CPU ops only, cxr's kernels off; the hot pool,
/// no kernel, stays on), or a comma list turning single algorithms off
/// (`-winograd,-lanes`; see [`Toggle`]). `candle` and the list combine
/// (`candle,-hot-pool`). Whether the CPU has
/// AVX-512 is part of the settings: without it only the GEMM paths run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KernelSettings {
    bits: u16,
}

/// A `CXR_KERNELS` value that names no setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "CXR_KERNELS={value:?}: unknown entry {entry:?} (expected auto, candle, or a comma list \
     of -winograd, -direct, -lanes, -taps, -stem, -hot-pool)"
)]
pub struct SettingsError {
    pub value: String,
    pub entry: String,
}

impl KernelSettings {
    /// Every kernel on, on this CPU.
    pub fn auto() -> Self {
        Self::auto_for(direct::avx512())
    }

    /// Every kernel on, for a CPU with or without AVX-512.
    pub fn auto_for(avx512: bool) -> Self {
        Self {
            bits: if avx512 { AVX512 } else { 0 },
        }
    }

    /// cxr's kernels off: candle's ops only.
    pub fn candle() -> Self {
        Self::auto().with_candle()
    }

    fn with_candle(self) -> Self {
        Self {
            bits: self.bits | CANDLE,
        }
    }

    /// These settings with `t` turned off.
    pub fn without(self, t: Toggle) -> Self {
        Self {
            bits: self.bits | t.bit(),
        }
    }

    /// Parses a `CXR_KERNELS` value (empty: `auto`).
    pub fn parse(value: &str) -> Result<Self, SettingsError> {
        let mut s = Self::auto();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            s = match entry {
                "auto" => s,
                "candle" => s.with_candle(),
                _ => match entry
                    .strip_prefix('-')
                    .and_then(|n| Toggle::ALL.into_iter().find(|t| t.name() == n))
                {
                    Some(t) => s.without(t),
                    None => {
                        return Err(SettingsError {
                            value: value.to_string(),
                            entry: entry.to_string(),
                        })
                    }
                },
            };
        }
        Ok(s)
    }

    /// The settings `CXR_KERNELS` asks for (`auto` when unset).
    pub fn from_env() -> Result<Self, SettingsError> {
        match std::env::var("CXR_KERNELS") {
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(Self::auto()),
        }
    }

    /// Whether cxr's kernels run at all (not `candle`).
    pub fn kernels(self) -> bool {
        self.bits & CANDLE == 0
    }

    /// Whether `t` is on: not turned off, and cxr's kernels are (not
    /// `candle`), except for the hot pool, which is no kernel.
    pub fn on(self, t: Toggle) -> bool {
        self.bits & t.bit() == 0 && (self.kernels() || t == Toggle::HotPool)
    }

    /// Whether the CPU has AVX-512F (the direct, lanes and Winograd kernels).
    pub fn avx512(self) -> bool {
        self.bits & AVX512 != 0
    }

    /// `t` on, on an AVX-512 CPU.
    fn fast(self, t: Toggle) -> bool {
        self.avx512() && self.on(t)
    }
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self::auto()
    }
}

impl fmt::Display for KernelSettings {
    /// As `CXR_KERNELS` spells it: `auto`, `candle`, `-winograd,-lanes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<&str> = Vec::new();
        if !self.kernels() {
            parts.push("candle");
        }
        let mut parts: Vec<String> = parts.into_iter().map(String::from).collect();
        for t in Toggle::ALL {
            if self.bits & t.bit() != 0 {
                parts.push(format!("-{}", t.name()));
            }
        }
        if parts.is_empty() {
            parts.push("auto".into());
        }
        write!(f, "{}", parts.join(","))
    }
}

impl fmt::Debug for KernelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KernelSettings({self}, avx512: {})", self.avx512())
    }
}

/// The process's settings; 0 until first read or set.
static CURRENT: AtomicU16 = AtomicU16::new(0);

/// The process's kernel settings: as last [`set_settings`], else
/// `CXR_KERNELS` read once. An invalid value there is reported on stderr
/// once and read as `auto`; the `cxr` binary checks it at start-up with
/// [`init_from_env`] and exits instead.
pub fn settings() -> KernelSettings {
    let bits = CURRENT.load(Ordering::Relaxed);
    if bits & DECIDED != 0 {
        return KernelSettings {
            bits: bits & !DECIDED,
        };
    }
    let s = KernelSettings::from_env().unwrap_or_else(|e| {
        eprintln!("warning: {e}; using CXR_KERNELS=auto");
        KernelSettings::auto()
    });
    set_settings(s);
    s
}

/// Sets the kernel settings of the whole process (benchmarks, tests that
/// compare algorithms; not meant to change while ops run).
pub fn set_settings(s: KernelSettings) {
    CURRENT.store(s.bits | DECIDED, Ordering::Relaxed);
}

/// Reads `CXR_KERNELS` and makes it the process's settings, or says why it
/// cannot.
pub fn init_from_env() -> Result<KernelSettings, SettingsError> {
    let s = KernelSettings::from_env()?;
    set_settings(s);
    Ok(s)
}

/// One convolution: `n` images, `o` output channels, shape `g`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub n: usize,
    pub o: usize,
    pub g: ConvGeom,
}

/// What is computed of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// `conv2d`'s forward: training, and any forward outside inference mode.
    Forward,
    /// Inference mode's fused conv+BN(+residual+ReLU) forward; `kept`: the
    /// weights are a frozen model's, prepared once
    /// ([`super::inference_frozen`]).
    FusedForward { kept: bool },
    /// Inference mode's stem: the 7x7/2 convolution, BN, ReLU and max pool.
    Stem { kept: bool },
    /// The gradient of the input.
    InputGrad,
    /// The gradient of the weights.
    WeightGrad,
}

/// How a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// candle's own ops (`CXR_KERNELS=candle`).
    Candle,
    /// Winograd F(4x4, 3x3) ([`super::winograd`]).
    Winograd,
    /// Output channels on the vector lanes ([`super::lanes`]).
    Lanes,
    /// Direct convolution, positions on the lanes ([`super::direct`]); for
    /// the weight gradient [`super::direct_weight_grad`].
    Direct,
    /// Convolution, BN, ReLU and max pool in one pass on the lanes kernel
    /// ([`super::stem`]).
    FusedStem,
    /// All images' patch matrices side by side, one GEMM.
    BatchedGemm,
    /// A 1x1 stride-1 unpadded convolution: one GEMM per image on the image itself.
    Pointwise,
    /// One GEMM per kernel tap over shifted views ([`super::taps`]).
    Taps,
    /// im2col (col2im) around one GEMM per image.
    Im2colGemm,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Candle => "candle",
            Algorithm::Winograd => "winograd",
            Algorithm::Lanes => "lanes",
            Algorithm::Direct => "direct",
            Algorithm::FusedStem => "fused-stem",
            Algorithm::BatchedGemm => "batched-gemm",
            Algorithm::Pointwise => "pointwise-gemm",
            Algorithm::Taps => "taps",
            Algorithm::Im2colGemm => "im2col-gemm",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The algorithm that computes `pass` of `conv` under settings `s`.
pub fn plan(conv: &Conv, pass: Pass, s: &KernelSettings) -> Algorithm {
    if !s.kernels() {
        return Algorithm::Candle;
    }
    match pass {
        Pass::Forward => forward(conv, s),
        Pass::FusedForward { kept } => fused_forward(conv, kept, s),
        Pass::Stem { kept } => {
            if fused_stem(&conv.g, s) {
                Algorithm::FusedStem
            } else {
                fused_forward(conv, kept, s)
            }
        }
        Pass::InputGrad => input_grad(conv, s),
        Pass::WeightGrad => weight_grad(conv, s),
    }
}

/// [`plan`] under the process's [`settings`].
pub fn plan_now(conv: &Conv, pass: Pass) -> Algorithm {
    plan(conv, pass, &settings())
}

/// `conv2d`'s forward: the batched GEMM for small maps, then the prepared
/// kernels with weights prepared per call, then the GEMM paths.
fn forward(conv: &Conv, s: &KernelSettings) -> Algorithm {
    let Conv { n, g, .. } = *conv;
    if batched(n, &g) {
        Algorithm::BatchedGemm
    } else if let Some(a) = prepared_forward(&g, n, false, s) {
        a
    } else {
        gemm_path(&g, s)
    }
}

/// The fused inference forward: the prepared kernels first (with kept
/// weights where they are kept), then as [`forward`].
fn fused_forward(conv: &Conv, kept: bool, s: &KernelSettings) -> Algorithm {
    prepared_forward(&conv.g, conv.n, kept, s).unwrap_or_else(|| forward(conv, s))
}

/// The input gradient: the batched GEMM, then Winograd or direct on the
/// gradient as a forward convolution (stride 1), then the GEMM paths.
fn input_grad(conv: &Conv, s: &KernelSettings) -> Algorithm {
    let Conv { n, o, g } = *conv;
    let gt = input_grad_geom(o, &g);
    if batched(n, &g) {
        Algorithm::BatchedGemm
    } else if winograd_takes(&g, n, false, s)
        && gt.is_some_and(|gt| winograd_takes(&gt, n, false, s))
    {
        Algorithm::Winograd
    } else if gt.is_some_and(|gt| direct_takes(&gt, s)) {
        Algorithm::Direct
    } else {
        gemm_path(&g, s)
    }
}

/// The weight gradient: direct where the output channels fill its tiles,
/// then the batched GEMM, then the GEMM paths.
fn weight_grad(conv: &Conv, s: &KernelSettings) -> Algorithm {
    let Conv { n, o, g } = *conv;
    if direct_lays_out(&g, s) && o.is_multiple_of(WO) && g.cols() >= MIN_WEIGHT_GRAD_POSITIONS {
        Algorithm::Direct
    } else if n > 1 && g.cols() < WEIGHT_GRAD_BATCHED_BELOW_COLS {
        Algorithm::BatchedGemm
    } else {
        gemm_path(&g, s)
    }
}

/// One GEMM per image: on the image itself (1x1), per tap, or on im2col.
fn gemm_path(g: &ConvGeom, s: &KernelSettings) -> Algorithm {
    if g.is_pointwise() {
        Algorithm::Pointwise
    } else if s.on(Toggle::Taps) && taps_takes(g) {
        Algorithm::Taps
    } else {
        Algorithm::Im2colGemm
    }
}

/// The kernel with prepared weights that takes the forward of `g` over `n`
/// images: Winograd, else lanes, else direct; `kept`: the prepared weights
/// are kept across calls.
fn prepared_forward(g: &ConvGeom, n: usize, kept: bool, s: &KernelSettings) -> Option<Algorithm> {
    if winograd_takes(g, n, kept, s) {
        Some(Algorithm::Winograd)
    } else if s.fast(Toggle::Lanes) && lanes::computes(g) && lanes_suits(g, n, kept) {
        Some(Algorithm::Lanes)
    } else if direct_takes(g, s) {
        Some(Algorithm::Direct)
    } else {
        None
    }
}

/// The fused stem: a 7x7 stride-2 convolution the lanes kernel computes.
fn fused_stem(g: &ConvGeom, s: &KernelSettings) -> bool {
    s.on(Toggle::Stem)
        && s.fast(Toggle::Lanes)
        && (g.kh, g.kw, g.stride) == (7, 7, 2)
        && lanes::computes(g)
}

/// Below this many output positions per image, the whole batch's patches go
/// side by side into one matrix and one GEMM instead of one thin GEMM per
/// image (at 256 it made layer3, 64 positions, 3x slower; for layer4, 16
/// positions, within the noise).
const BATCHED_BELOW_COLS: usize = 32;

fn batched(n: usize, g: &ConvGeom) -> bool {
    n > 1 && g.cols() < BATCHED_BELOW_COLS
}

/// The weight gradient sums over images: below this many positions one GEMM
/// over all images (inner dimension `n * positions`) beats per-image GEMMs
/// that each re-read and re-write the whole gradient.
const WEIGHT_GRAD_BATCHED_BELOW_COLS: usize = 256;

/// Below this output width the per-tap GEMMs carry too many wasted columns
/// (`kw - 1` per row): 32 wide was faster with taps, 8 wide slower.
const TAPS_MIN_WIDTH: usize = 32;

/// One GEMM per tap: stride 1, a real kernel, padding smaller than the
/// kernel (the input gradient is then a convolution of the same kind), a
/// wide enough output.
fn taps_takes(g: &ConvGeom) -> bool {
    taps::computes(g) && g.ow >= TAPS_MIN_WIDTH
}

/// Below this output width the direct kernel's dropped grid columns and the
/// rounding to a whole register tile waste too much.
const DIRECT_MIN_WIDTH: usize = 14;

/// The direct kernel's layout covers `g` (stride 1 or 2, larger than 1x1),
/// on an AVX-512 CPU with the kernel on.
fn direct_lays_out(g: &ConvGeom, s: &KernelSettings) -> bool {
    s.fast(Toggle::Direct) && direct::lays_out(g)
}

/// The direct forward: a map at least [`DIRECT_MIN_WIDTH`] wide, and of the
/// stride-2 convolutions only those larger than 3x3 (the 7x7 stem, 1.2 to
/// 1.6x faster; a 3x3/2 was 0.76 to 0.96x of its GEMM). A 1x1 has too few
/// taps to pay for the padded copy (3.6x slower than its GEMM).
fn direct_takes(g: &ConvGeom, s: &KernelSettings) -> bool {
    direct_lays_out(g, s) && g.ow >= DIRECT_MIN_WIDTH && (g.stride == 1 || g.kh * g.kw > 9)
}

/// The direct weight gradient needs this many positions per image: fewer
/// make each pass short, and the batched GEMM wins (8x8 direct 1.45x faster,
/// 4x4 2x slower).
const MIN_WEIGHT_GRAD_POSITIONS: usize = 64;

/// Winograd with weights transformed per call needs maps at least this
/// wide: 56 wide 1.43x, 14 wide 1.09x the direct kernel, 8 wide 0.69x.
const WINOGRAD_MIN_SIDE: usize = 14;

/// With kept weights this many tiles already pay (256 channels at 14x14,
/// batch 1: the whole batch-1 network 16.1 -> 15.2 ms).
const WINOGRAD_MIN_KEPT_TILES: usize = 16;

/// Winograd takes `g` over `n` images: a 3x3 stride-1 pad-1 convolution and
/// at least one band of tiles in the batch (fewer lost to the direct
/// kernel). Kept weights cost nothing to transform per call, so any map
/// size qualifies and [`WINOGRAD_MIN_KEPT_TILES`] tiles suffice, except for
/// 512 input channels (38 MB of transformed weights per convolution).
fn winograd_takes(g: &ConvGeom, n: usize, kept: bool, s: &KernelSettings) -> bool {
    let tiles = n * g.h.div_ceil(winograd::M) * g.w.div_ceil(winograd::M);
    s.fast(Toggle::Winograd)
        && winograd::computes(g)
        && (kept || g.h.min(g.w) >= WINOGRAD_MIN_SIDE)
        && (tiles >= winograd::BAND || (kept && tiles >= WINOGRAD_MIN_KEPT_TILES && g.c < 512))
}

/// Where the lanes kernel beat the others (fused conv+BN+ReLU with kept
/// weights, ResNet18 at 224 px): every 3x3 stride 2 (1.17 to 1.40x); 3x3
/// stride 1 only with kept weights on maps up to 14 wide, not for 512 input
/// channels (their kept copy would cost 28 MB of the server's memory); 1x1
/// stride 2 at batch 1 with 128 channels or more (64 channels and batch 16
/// lost to the GEMM).
fn lanes_suits(g: &ConvGeom, n: usize, kept: bool) -> bool {
    match (g.kh, g.stride) {
        (3, 2) => true,
        (3, 1) => kept && g.ow <= 14 && g.c < 512,
        (1, 2) => n == 1 && g.c >= 128,
        _ => false,
    }
}

/// One convolution of a network as the plan sees it.
#[derive(Clone, Debug)]
pub struct ConvSite {
    /// Its parameter name (`layer2.0.conv1`).
    pub name: String,
    pub conv: Conv,
    /// Whether backward computes its input gradient (not for the image).
    pub input_grad: bool,
    /// ResNet's stem, fused with its max pool in inference.
    pub stem: bool,
}

/// The plan for each of `sites` as a table: inference with a frozen
/// model's kept weights (the server, `cxr bench --mode infer`), and the
/// training forward, input and weight gradient.
pub fn explain(sites: &[ConvSite], s: &KernelSettings) -> String {
    let mut out = format!(
        "CXR_KERNELS={s}, AVX-512: {}\n{:<22} {:<28} {:<15} {:<15} {:<15} {}\n",
        if s.avx512() { "yes" } else { "no" },
        "convolution",
        "shape (n, c->o, k/s, in)",
        "infer (kept)",
        "train forward",
        "input grad",
        "weight grad"
    );
    for site in sites {
        let Conv { n, o, g } = site.conv;
        let kept = if site.stem {
            Pass::Stem { kept: true }
        } else {
            Pass::FusedForward { kept: true }
        };
        let input_grad = if site.input_grad {
            plan(&site.conv, Pass::InputGrad, s).name()
        } else {
            "-"
        };
        let shape = format!(
            "{n}, {}->{o}, {}x{}/{}, {}x{}",
            g.c, g.kh, g.kw, g.stride, g.h, g.w
        );
        out += &format!(
            "{:<22} {:<28} {:<15} {:<15} {:<15} {}\n",
            site.name,
            shape,
            plan(&site.conv, kept, s).name(),
            plan(&site.conv, Pass::Forward, s).name(),
            input_grad,
            plan(&site.conv, Pass::WeightGrad, s).name()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Algorithm::*;

    /// A square `c x side x side` input, `k x k` kernel.
    fn conv(
        n: usize,
        c: usize,
        o: usize,
        side: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Conv {
        let g = ConvGeom::new(c, side, side, k, k, stride, pad).expect("geometry");
        Conv { n, o, g }
    }

    const FWD: Pass = Pass::Forward;
    const INFER: Pass = Pass::FusedForward { kept: false };
    const KEPT: Pass = Pass::FusedForward { kept: true };
    const STEM: Pass = Pass::Stem { kept: true };
    const IG: Pass = Pass::InputGrad;
    const WG: Pass = Pass::WeightGrad;

    /// Every branch of the plan on an AVX-512 CPU with everything on.
    #[test]
    fn the_plan_table() {
        let s = KernelSettings::auto_for(true);
        #[rustfmt::skip]
        let cases = [
            // Forward: small maps batch, then Winograd / lanes / direct, then GEMMs.
            (conv(16, 512, 512, 4, 3, 1, 1), FWD, BatchedGemm),
            (conv(16, 64, 64, 56, 3, 1, 1), FWD, Winograd),
            (conv(1, 64, 64, 14, 3, 1, 1), FWD, Direct),
            (conv(16, 64, 128, 56, 3, 2, 1), FWD, Lanes),
            (conv(16, 3, 64, 224, 7, 2, 3), FWD, Direct),
            (conv(16, 64, 64, 56, 1, 1, 0), FWD, Pointwise),
            (conv(16, 64, 128, 56, 1, 2, 0), FWD, Im2colGemm),
            (conv(1, 64, 64, 8, 3, 1, 1), FWD, Im2colGemm),
            // Inference: the prepared kernels before the batched GEMM.
            (conv(16, 256, 512, 8, 3, 2, 1), FWD, BatchedGemm),
            (conv(16, 256, 512, 8, 3, 2, 1), INFER, Lanes),
            (conv(1, 64, 64, 14, 3, 1, 1), INFER, Direct),
            // Kept weights: Winograd and lanes on smaller maps.
            (conv(1, 256, 256, 14, 3, 1, 1), KEPT, Winograd),
            (conv(12, 512, 512, 7, 3, 1, 1), KEPT, Winograd),
            (conv(1, 512, 512, 7, 3, 1, 1), KEPT, Im2colGemm),
            (conv(1, 256, 256, 7, 3, 1, 1), KEPT, Lanes),
            (conv(1, 128, 256, 28, 1, 2, 0), KEPT, Lanes),
            (conv(1, 64, 128, 56, 1, 2, 0), KEPT, Im2colGemm),
            (conv(16, 128, 256, 28, 1, 2, 0), KEPT, Im2colGemm),
            // The stem.
            (conv(1, 3, 64, 224, 7, 2, 3), STEM, FusedStem),
            (conv(1, 64, 64, 56, 3, 1, 1), STEM, Winograd),
            // Input gradient.
            (conv(16, 512, 512, 4, 3, 1, 1), IG, BatchedGemm),
            (conv(16, 64, 64, 56, 3, 1, 1), IG, Winograd),
            (conv(1, 64, 64, 14, 3, 1, 1), IG, Direct),
            (conv(16, 64, 128, 56, 3, 2, 1), IG, Im2colGemm),
            (conv(16, 64, 64, 56, 1, 1, 0), IG, Pointwise),
            (conv(16, 64, 64, 40, 5, 1, 2), IG, Direct),
            // Weight gradient.
            (conv(16, 64, 64, 56, 3, 1, 1), WG, Direct),
            (conv(16, 3, 64, 224, 7, 2, 3), WG, Direct),
            (conv(16, 256, 256, 7, 3, 1, 1), WG, BatchedGemm),
            (conv(16, 64, 96, 56, 3, 1, 1), WG, Taps),
            (conv(16, 64, 64, 56, 1, 1, 0), WG, Pointwise),
            (conv(16, 64, 128, 56, 1, 2, 0), WG, Im2colGemm),
            (conv(1, 64, 96, 7, 3, 1, 1), WG, Im2colGemm),
        ];
        for (c, pass, want) in cases {
            assert_eq!(plan(&c, pass, &s), want, "{c:?} {pass:?}");
        }
    }

    /// Turning an algorithm off, or a CPU without AVX-512, hands its
    /// convolutions to the next in line.
    #[test]
    fn turned_off_algorithms_fall_through() {
        let on = KernelSettings::auto_for(true);
        #[rustfmt::skip]
        let cases = [
            (on.without(Toggle::Winograd), conv(16, 64, 64, 56, 3, 1, 1), FWD, Direct),
            (on.without(Toggle::Winograd), conv(16, 64, 64, 56, 3, 1, 1), IG, Direct),
            (on.without(Toggle::Direct), conv(1, 64, 64, 14, 3, 1, 1), FWD, Im2colGemm),
            (on.without(Toggle::Direct), conv(16, 64, 64, 56, 3, 1, 1), WG, Taps),
            (on.without(Toggle::Direct), conv(16, 3, 64, 224, 7, 2, 3), FWD, Im2colGemm),
            (on.without(Toggle::Lanes), conv(16, 64, 128, 56, 3, 2, 1), FWD, Im2colGemm),
            (on.without(Toggle::Lanes), conv(1, 3, 64, 224, 7, 2, 3), STEM, Direct),
            (on.without(Toggle::Stem), conv(1, 3, 64, 224, 7, 2, 3), STEM, Direct),
            (on.without(Toggle::Taps), conv(16, 64, 96, 56, 3, 1, 1), WG, Im2colGemm),
            (KernelSettings::auto_for(false), conv(16, 64, 64, 56, 3, 1, 1), FWD, Taps),
            (KernelSettings::auto_for(false), conv(16, 64, 64, 56, 3, 1, 1), IG, Taps),
            (KernelSettings::auto_for(false), conv(1, 3, 64, 224, 7, 2, 3), STEM, Im2colGemm),
            (on.with_candle(), conv(16, 64, 64, 56, 3, 1, 1), WG, Candle),
            (on.with_candle(), conv(1, 3, 64, 224, 7, 2, 3), STEM, Candle),
        ];
        for (s, c, pass, want) in cases {
            assert_eq!(plan(&c, pass, &s), want, "{s:?} {c:?} {pass:?}");
        }
    }

    #[test]
    fn parses_cxr_kernels() -> Result<(), SettingsError> {
        let auto = KernelSettings::auto();
        assert_eq!(KernelSettings::parse("")?, auto);
        assert_eq!(KernelSettings::parse("auto")?, auto);
        assert_eq!(KernelSettings::parse("candle")?, auto.with_candle());
        let both = auto.without(Toggle::Winograd).without(Toggle::Lanes);
        assert_eq!(KernelSettings::parse("-winograd,-lanes")?, both);
        assert_eq!(KernelSettings::parse(" -lanes , -winograd ")?, both);
        for t in Toggle::ALL {
            let s = KernelSettings::parse(&format!("-{}", t.name()))?;
            assert!(!s.on(t) && s.kernels());
            assert_eq!(KernelSettings::parse(&s.to_string())?, s, "{s}");
        }
        let candle = KernelSettings::parse("candle,-hot-pool")?;
        assert_eq!(candle.to_string(), "candle,-hot-pool");
        assert!(
            KernelSettings::candle().on(Toggle::HotPool),
            "the pool is no kernel"
        );
        assert!(!KernelSettings::candle().on(Toggle::Winograd));
        for bad in ["cxr", "winograd", "-wino", "auto,-direct,+lanes", "0"] {
            let e = KernelSettings::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("-hot-pool"), "{e}");
        }
        Ok(())
    }
}
