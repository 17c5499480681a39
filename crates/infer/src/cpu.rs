//! What the CPU offers for arithmetic below FP32: the instructions ONNX Runtime's INT8 kernels
//! and a BF16 backend depend on, read from the flags of `/proc/cpuinfo` (for `arbiter check`).

use std::fmt;

/// The reduced-precision instructions of the machine's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuOffers {
    /// `avx512_vnni` or `avx_vnni`: U8S8 dot products summed in 32 bits. Without it, ONNX
    /// Runtime's x86 INT8 kernels sum pairs in 16 bits, which can saturate: quantize with
    /// `--reduce-range` (docs/int8.md).
    pub vnni: bool,
    /// `avx512_bf16`: BF16 dot products (what OpenVINO's BF16 path uses where AMX is absent).
    pub avx512_bf16: bool,
    /// `amx_bf16`: the matrix tiles' BF16.
    pub amx_bf16: bool,
    /// `amx_int8`: the matrix tiles' INT8.
    pub amx_int8: bool,
}

impl CpuOffers {
    /// The offers of this machine's CPU (none where `/proc/cpuinfo` cannot be read).
    pub fn detect() -> CpuOffers {
        CpuOffers::from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    }

    /// The offers named by the first `flags` line of a `/proc/cpuinfo` text.
    pub fn from_cpuinfo(cpuinfo: &str) -> CpuOffers {
        let line = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap_or("");
        let flags = line.split_once(':').map_or("", |(_, f)| f);
        let has = |name: &str| flags.split_whitespace().any(|f| f == name);
        CpuOffers {
            vnni: has("avx512_vnni") || has("avx_vnni"),
            avx512_bf16: has("avx512_bf16"),
            amx_bf16: has("amx_bf16"),
            amx_int8: has("amx_int8"),
        }
    }

    /// Whether the CPU computes BF16 natively (AVX512-BF16 or AMX).
    pub fn bf16(&self) -> bool {
        self.avx512_bf16 || self.amx_bf16
    }
}

impl fmt::Display for CpuOffers {
    /// One line for `arbiter check`: what INT8 and BF16 get on this CPU.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int8 = match (self.amx_int8, self.vnni) {
            (true, _) => "INT8: AMX and VNNI (U8S8 models at full speed)",
            (false, true) => "INT8: VNNI (U8S8 models at full speed)",
            (false, false) => {
                "INT8: no VNNI (quantize with --reduce-range, or U8S8 products may saturate)"
            }
        };
        let bf16 = match (self.amx_bf16, self.avx512_bf16) {
            (true, _) => "BF16: AMX",
            (false, true) => "BF16: AVX512-BF16 (no AMX)",
            (false, false) => "BF16: none",
        };
        write!(f, "{int8}; {bf16}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_flags_line() {
        let epyc = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n";
        let offers = CpuOffers::from_cpuinfo(epyc);
        assert!(offers.vnni && offers.avx512_bf16 && offers.bf16());
        assert!(!offers.amx_bf16 && !offers.amx_int8);
        assert_eq!(
            offers.to_string(),
            "INT8: VNNI (U8S8 models at full speed); BF16: AVX512-BF16 (no AMX)"
        );
        let spr = "flags : avx512f amx_bf16 amx_int8 amx_tile avx512_vnni avx512_bf16\n";
        assert!(
            CpuOffers::from_cpuinfo(spr)
                .to_string()
                .starts_with("INT8: AMX")
        );
    }

    #[test]
    fn an_old_cpu_offers_neither() {
        let offers = CpuOffers::from_cpuinfo("flags\t: fpu sse avx avx2 fma\n");
        assert_eq!(offers, CpuOffers::default());
        assert!(offers.to_string().contains("--reduce-range"), "{offers}");
        assert!(
            CpuOffers::from_cpuinfo("")
                .to_string()
                .contains("BF16: none")
        );
    }
}
