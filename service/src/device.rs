//! Choosing the compute device from `--device cpu|cuda|cuda:N`.

use candle_core::Device;

/// A device that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("bad device {0:?}: expected cuda:N")]
    BadIndex(String),
    #[error("device {0}: this cxr binary was built without CUDA; build it with scripts/build-cuda.sh (cargo --features cuda)")]
    NoCudaSupport(String),
    #[error("device {0}: no usable NVIDIA GPU or driver ({1})")]
    NoGpu(String, String),
    #[error("unknown device {0:?} (expected cpu, cuda or cuda:N)")]
    Unknown(String),
}

pub fn parse_device(s: &str) -> Result<Device, DeviceError> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| DeviceError::BadIndex(s.into()))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(DeviceError::NoCudaSupport(s.into()));
            }
            Device::new_cuda(idx).map_err(|e| DeviceError::NoGpu(s.into(), e.to_string()))
        }
        _ => Err(DeviceError::Unknown(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_or_say_why_not() {
        assert!(parse_device("cpu").is_ok_and(|d| d.is_cpu()));
        assert!(matches!(parse_device("tpu"), Err(DeviceError::Unknown(_))));
        assert!(matches!(
            parse_device("cuda:x"),
            Err(DeviceError::BadIndex(_))
        ));
    }
}
