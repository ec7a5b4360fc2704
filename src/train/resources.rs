//! What a run will allocate, checked before anything is allocated: every GPU buffer against the
//! adapter's limits, and the host memory against a budget. Sizes are computed with checked
//! arithmetic, and a refusal names the flags that set the size.

use crate::error::{Error, Result};
use crate::model::VaeConfig;

/// Environment variable that sets the host-memory budget in bytes (`K`, `M`, `G` suffixes).
pub const HOST_BUDGET_VAR: &str = "WGVAE_HOST_MEMORY";

/// Budget when the available memory cannot be read (not Linux) and the variable is unset.
const FALLBACK_HOST_BUDGET: u64 = 16 << 30;

/// Bytes of host memory a run may use: `WGVAE_HOST_MEMORY` when set, else 90% of the memory
/// the system reports available (Linux `MemAvailable`), else 16 GiB.
pub fn host_budget() -> Result<u64> {
    if let Ok(v) = std::env::var(HOST_BUDGET_VAR) {
        return parse_bytes(&v).ok_or_else(|| {
            Error::Config(format!(
                "{HOST_BUDGET_VAR}=`{v}`: use a number of bytes, optionally with K, M or G"
            ))
        });
    }
    Ok(mem_available().map_or(FALLBACK_HOST_BUDGET, |b| b / 10 * 9))
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// `123`, `64K`, `512M`, `8G` (binary multiples).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        _ => (s, 0),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// One allocation a run will make.
#[derive(Clone, Debug)]
pub struct Need {
    /// What it holds, e.g. "the model's parameters".
    pub what: String,
    pub bytes: u64,
    /// The flags that set its size, e.g. "--hidden or --latent".
    pub flags: &'static str,
}

/// Sizes of a training run: the model, the batch and the data.
#[derive(Clone, Debug)]
pub struct RunShape<'a> {
    pub model: &'a VaeConfig,
    pub batch: usize,
    pub eval_batch: usize,
    pub n_train: usize,
    pub n_test: usize,
}

fn overflow(what: &str, flags: &str) -> Error {
    Error::Config(format!("{what} overflows 64-bit arithmetic; lower {flags}"))
}

fn mul(a: u64, b: u64, what: &str, flags: &str) -> Result<u64> {
    a.checked_mul(b).ok_or_else(|| overflow(what, flags))
}

/// Elements of the flat parameter buffer (padding included), computed without allocating.
pub fn param_elements(model: &VaeConfig) -> Result<u64> {
    model
        .layout_total_explained()
        .map(|t| t as u64)
        .map_err(|why| {
            let fix = if why.contains("overflows") {
                "lower --hidden, --latent or --conv-channels"
            } else {
                "use fewer convolutions (--conv-channels) for this image size"
            };
            Error::Config(format!("{why}; {fix}"))
        })
}

/// Every GPU buffer of a training run that can grow large.
pub fn gpu_needs(shape: &RunShape<'_>) -> Result<Vec<Need>> {
    let m = shape.model;
    let pixels = mul(
        mul(
            m.height as u64,
            m.width as u64,
            "the image size",
            "the image size",
        )?,
        m.channels as u64,
        "the image size",
        "the image size",
    )?;
    let params = mul(
        param_elements(m)?,
        4,
        "the parameters",
        "--hidden or --latent",
    )?;
    let mut needs = vec![
        Need {
            what: format!(
                "the model's parameters ({} floats; also their gradients and both Adam moments)",
                params / 4
            ),
            bytes: params,
            flags: "--hidden or --latent",
        },
        Need {
            what: format!("the {} training images", shape.n_train),
            bytes: mul(
                shape.n_train as u64,
                pixels,
                "the training set",
                "--n-train",
            )?,
            flags: "the training set size (--n-train, or the IDX files)",
        },
        Need {
            what: format!("the {} test images", shape.n_test),
            bytes: mul(shape.n_test as u64, pixels, "the test set", "--n-test")?,
            flags: "the test set size (--n-test, or the IDX files)",
        },
    ];
    let mut widths = vec![(pixels, "--batch")];
    // Every module's output (a convolution's: channels × height × width per row).
    let (enc, dec) = m.networks().map_err(Error::Config)?;
    let n_enc = enc.modules.len();
    for (i, module) in enc.modules.iter().chain(&dec.modules).enumerate() {
        let flags = if i + 1 == n_enc {
            "--batch or --latent"
        } else if module.params().first().is_some_and(|d| d.shape.len() == 4) {
            "--batch or --conv-channels"
        } else {
            "--batch or --hidden"
        };
        widths.push((module.out_features() as u64, flags));
    }
    for rows in [shape.batch as u64, shape.eval_batch as u64] {
        for &(w, flags) in &widths {
            let bytes = mul(
                mul(rows, w, "an activation", flags)?,
                4,
                "an activation",
                flags,
            )?;
            needs.push(Need {
                what: format!("an activation of {rows} rows × {w} floats"),
                bytes,
                flags,
            });
        }
    }
    Ok(needs)
}

/// Host memory of the run beyond its data set: the parameters are built on the host, and each
/// checkpoint reads back parameters and moments and serializes them (about 8 copies at once).
pub fn host_need(model: &VaeConfig) -> Result<u64> {
    mul(
        param_elements(model)?,
        4 * 8,
        "the parameters",
        "--hidden or --latent",
    )
}

/// Checks every buffer of `needs` against one buffer's limit of the adapter.
pub fn check_gpu(needs: &[Need], max_buffer: u64, adapter: &str) -> Result<()> {
    for n in needs {
        let padded = n.bytes.div_ceil(256).saturating_mul(256);
        if padded > max_buffer {
            return Err(Error::Config(format!(
                "{} would need {} bytes, more than the {} bytes one buffer may hold on {adapter}; lower {}",
                n.what, n.bytes, max_buffer, n.flags
            )));
        }
    }
    Ok(())
}

/// Checks `bytes` of host memory against the budget.
pub fn check_host(bytes: u64, what: &str, flags: &str) -> Result<()> {
    let budget = host_budget()?;
    if bytes > budget {
        return Err(Error::Config(format!(
            "{what} would need {bytes} bytes of host memory, more than the budget of {budget} bytes \
             (90% of the available memory; set {HOST_BUDGET_VAR} to change it); lower {flags}"
        )));
    }
    Ok(())
}

/// The adapter's limit on one storage buffer binding (the smaller of the binding and the buffer
/// limits).
pub fn max_storage_buffer(limits: &wgpu::Limits) -> u64 {
    limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
}

/// The whole check of a run before it allocates: GPU buffers, then host memory.
pub fn check_run(shape: &RunShape<'_>, limits: &wgpu::Limits, adapter: &str) -> Result<()> {
    check_gpu(&gpu_needs(shape)?, max_storage_buffer(limits), adapter)?;
    check_host(
        host_need(shape.model)?,
        "the model's parameters and checkpoints",
        "--hidden or --latent",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_byte_sizes() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("64K"), Some(64 << 10));
        assert_eq!(parse_bytes(" 8g "), Some(8 << 30));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes("99999999999999G"), None);
    }

    #[test]
    fn huge_models_are_refused_by_size_not_allocation() {
        let mut m = VaeConfig::classic(28, 28);
        assert_eq!(param_elements(&m).unwrap() as usize, m.layout().total);
        m.enc_hidden = vec![10_000_000];
        let shape = RunShape {
            model: &m,
            batch: 128,
            eval_batch: 500,
            n_train: 10,
            n_test: 10,
        };
        let e = check_gpu(&gpu_needs(&shape).unwrap(), 128 << 20, "test adapter").unwrap_err();
        assert!(e.to_string().contains("lower --hidden or --latent"), "{e}");
        m.height = 1 << 33;
        m.width = 1 << 33;
        let e = param_elements(&m).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }
}
