//! Choosing the compute device from `--device cpu|cuda|cuda:N`.

use candle_core::Device;

pub fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map_err(|_| format!("bad device {s:?}: expected cuda:N"))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(format!(
                    "device {s}: this cxr binary was built without CUDA; build it with scripts/build-cuda.sh (cargo --features cuda)"
                ));
            }
            Device::new_cuda(idx)
                .map_err(|e| format!("device {s}: no usable NVIDIA GPU or driver ({e})"))
        }
        _ => Err(format!(
            "unknown device {s:?} (expected cpu, cuda or cuda:N)"
        )),
    }
}
