//! Device selection: `auto`, `cpu`, `cuda` or `cuda:N`, validated against what libtorch sees.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Where the model runs, as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first CUDA device when libtorch sees one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device number N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| Error::InvalidDevice(s.to_owned())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Resolves the spec to a libtorch device, failing if a named CUDA device is absent.
    pub fn resolve(self) -> Result<tch::Device> {
        let available = tch::Cuda::device_count().max(0) as usize;
        match self {
            Self::Auto if available > 0 => Ok(tch::Device::Cuda(0)),
            Self::Auto => {
                // A CUDA build of libtorch on a host without a usable GPU, or a CPU build:
                // said once per process (the model and token2wav both resolve the device).
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::info!(
                        cuda_built = tch::utils::has_cuda(),
                        "device auto: no CUDA device is available, running on the CPU"
                    );
                });
                Ok(tch::Device::Cpu)
            }
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Cuda(index) if index < available => Ok(tch::Device::Cuda(index)),
            Self::Cuda(index) => Err(Error::CudaUnavailable { index, available }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!(" CPU ".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1"] {
            assert!(matches!(bad.parse::<DeviceSpec>(), Err(Error::InvalidDevice(_))), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for spec in [DeviceSpec::Auto, DeviceSpec::Cpu, DeviceSpec::Cuda(2)] {
            assert_eq!(spec.to_string().parse::<DeviceSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn cpu_resolves_and_missing_cuda_is_an_error() {
        assert_eq!(DeviceSpec::Cpu.resolve().unwrap(), tch::Device::Cpu);
        let far = DeviceSpec::Cuda(1000);
        assert!(matches!(far.resolve(), Err(Error::CudaUnavailable { index: 1000, .. })));
    }
}
