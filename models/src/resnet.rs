//! ResNet18 with torchvision's exact parameter names, trainable end to end.
//!
//! `conv1`, `bn1`, `layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}`,
//! `layer{2,3,4}.0.downsample.{0,1}`, then the head (`fc` or the fastai head).
//! Channel widths are configurable so small fixtures exercise the whole path.

use crate::kernels::plan::{Conv, ConvSite};
use crate::kernels::ConvGeom;
use crate::layers::{conv_bn, conv_bn_relu_max_pool, BatchNorm, Conv2d};
use crate::params::{Init, ParamStore};
use candle_core::{Result, Tensor};

/// torchvision's widths.
pub const RESNET18_WIDTHS: [usize; 4] = [64, 128, 256, 512];

#[derive(Debug, Clone)]
pub struct BasicBlock {
    pub(crate) conv1: Conv2d,
    pub(crate) bn1: BatchNorm,
    pub(crate) conv2: Conv2d,
    pub(crate) bn2: BatchNorm,
    pub(crate) downsample: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(
        ps: &mut ParamStore,
        name: &str,
        c_in: usize,
        c_out: usize,
        stride: usize,
    ) -> Result<Self> {
        let init = Init::KaimingNormal;
        let downsample = if stride != 1 || c_in != c_out {
            Some((
                Conv2d::new(
                    ps,
                    &format!("{name}.downsample.0"),
                    c_in,
                    c_out,
                    1,
                    stride,
                    0,
                    init,
                )?,
                BatchNorm::new(ps, &format!("{name}.downsample.1"), c_out, false)?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: Conv2d::new(
                ps,
                &format!("{name}.conv1"),
                c_in,
                c_out,
                3,
                stride,
                1,
                init,
            )?,
            bn1: BatchNorm::new(ps, &format!("{name}.bn1"), c_out, false)?,
            conv2: Conv2d::new(ps, &format!("{name}.conv2"), c_out, c_out, 3, 1, 1, init)?,
            bn2: BatchNorm::new(ps, &format!("{name}.bn2"), c_out, false)?,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = conv_bn(&self.conv1, &self.bn1, x, train, None, true)?;
        let id = match &self.downsample {
            Some((c, b)) => conv_bn(c, b, x, train, None, false)?,
            None => x.clone(),
        };
        conv_bn(&self.conv2, &self.bn2, &y, train, Some(&id), true)
    }

    /// The convolutions with the BN that follows each, in execution order
    /// (conv1, conv2, downsample), for BN folding and ONNX.
    pub fn conv_bn_pairs(&self) -> Vec<(&Conv2d, &BatchNorm)> {
        let mut v = vec![(&self.conv1, &self.bn1), (&self.conv2, &self.bn2)];
        if let Some((c, b)) = &self.downsample {
            v.push((c, b));
        }
        v
    }

    pub fn has_downsample(&self) -> bool {
        self.downsample.is_some()
    }
}

/// The ResNet18 body: everything up to (not including) the global pool.
#[derive(Debug, Clone)]
pub struct ResNet18Body {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub layers: Vec<Vec<BasicBlock>>,
    pub widths: [usize; 4],
}

impl ResNet18Body {
    pub fn new(ps: &mut ParamStore, widths: [usize; 4]) -> Result<Self> {
        let mut conv1 = Conv2d::new(ps, "conv1", 3, widths[0], 7, 2, 3, Init::KaimingNormal)?;
        conv1.input_grad = false; // it sees the image
        let bn1 = BatchNorm::new(ps, "bn1", widths[0], false)?;
        let mut layers = Vec::new();
        let mut c_in = widths[0];
        for (i, &w) in widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let name = format!("layer{}", i + 1);
            let b0 = BasicBlock::new(ps, &format!("{name}.0"), c_in, w, stride)?;
            let b1 = BasicBlock::new(ps, &format!("{name}.1"), w, w, 1)?;
            layers.push(vec![b0, b1]);
            c_in = w;
        }
        Ok(Self {
            conv1,
            bn1,
            layers,
            widths,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = conv_bn_relu_max_pool(&self.conv1, &self.bn1, x, train)?;
        for layer in &self.layers {
            for block in layer {
                x = block.forward_t(&x, train)?;
            }
        }
        Ok(x)
    }

    pub fn out_channels(&self) -> usize {
        self.widths[3]
    }

    /// Every convolution of the body on `n` images of `size x size` pixels,
    /// in execution order, as the kernel plan sees it.
    pub fn conv_sites(&self, n: usize, size: usize) -> Vec<ConvSite> {
        let mut sites = Vec::new();
        let Some(side) = push_site(&mut sites, "conv1", &self.conv1, n, size, true) else {
            return sites;
        };
        // The 3x3 stride-2 max pool, padded by 1.
        let mut side = (side + 2 - 3) / 2 + 1;
        for (i, layer) in self.layers.iter().enumerate() {
            for (j, block) in layer.iter().enumerate() {
                let name = format!("layer{}.{j}", i + 1);
                let c1 = &block.conv1;
                let Some(mid) = push_site(&mut sites, &format!("{name}.conv1"), c1, n, side, false)
                else {
                    return sites;
                };
                if let Some((ds, _)) = &block.downsample {
                    push_site(
                        &mut sites,
                        &format!("{name}.downsample.0"),
                        ds,
                        n,
                        side,
                        false,
                    );
                }
                let c2 = &block.conv2;
                match push_site(&mut sites, &format!("{name}.conv2"), c2, n, mid, false) {
                    Some(out) => side = out,
                    None => return sites,
                }
            }
        }
        sites
    }
}

/// Adds `conv` on `n` images of `side x side` to `sites`; returns its output
/// side, `None` when the input is too small for it.
fn push_site(
    sites: &mut Vec<ConvSite>,
    name: &str,
    conv: &Conv2d,
    n: usize,
    side: usize,
    stem: bool,
) -> Option<usize> {
    let (o, c, kh, kw) = conv.weight.as_tensor().dims4().ok()?;
    let g = ConvGeom::new(c, side, side, kh, kw, conv.stride, conv.padding)?;
    sites.push(ConvSite {
        name: name.to_string(),
        conv: Conv { n, o, g },
        input_grad: conv.input_grad,
        stem,
    });
    Some(g.oh)
}

/// fastai's split of a ResNet into parameter groups: stem+layer1+layer2 / layer3+layer4 / head.
pub fn resnet_group(name: &str) -> usize {
    if name.starts_with("layer3") || name.starts_with("layer4") {
        1
    } else if name.starts_with("fc") || name.starts_with("head") {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::plan::{Algorithm, KernelSettings, Pass};
    use crate::{Arch, NetConfig, Network};
    use candle_core::{Device, Result};

    /// Every convolution of ResNet18 at 224 px with its shape, and the
    /// table `cxr bench --explain` prints.
    #[test]
    fn lists_every_convolution_with_its_plan() -> Result<()> {
        let net = Network::new(NetConfig::standard(Arch::Resnet18, 2), &Device::Cpu, 0)?;
        let body = net.resnet_body().expect("a ResNet18 body");
        let sites = body.conv_sites(16, 224);
        assert_eq!(
            sites.len(),
            20,
            "conv1, 16 block convolutions, 3 downsamples"
        );
        let first = &sites[0];
        assert_eq!(
            (first.name.as_str(), first.stem, first.input_grad),
            ("conv1", true, false)
        );
        assert_eq!(
            (first.conv.g.h, first.conv.g.oh, first.conv.o),
            (224, 112, 64)
        );
        let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            &names[1..4],
            ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
        );
        assert_eq!(
            &names[5..8],
            ["layer2.0.conv1", "layer2.0.downsample.0", "layer2.0.conv2"]
        );
        let last = &sites[19];
        assert_eq!(
            (last.name.as_str(), last.conv.g.h, last.conv.g.c),
            ("layer4.1.conv2", 7, 512)
        );
        let s = KernelSettings::auto_for(true);
        let kept = Pass::Stem { kept: true };
        assert_eq!(
            crate::kernels::plan(&first.conv, kept, &s),
            Algorithm::FusedStem
        );
        let table = net.explain_kernels(16, 224, &s).expect("a table");
        eprintln!("{table}");
        assert_eq!(table.lines().count(), 2 + 20, "{table}");
        assert!(
            table.contains("fused-stem") && table.contains("winograd"),
            "{table}"
        );
        Ok(())
    }
}
