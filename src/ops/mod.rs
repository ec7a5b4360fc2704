//! Host wrappers of the kernels. Each builds a prepared [`crate::gpu::Dispatch`] after checking
//! the shapes of its operands; recording it into a pass is all a training step does.

pub mod adam;
pub mod condition;
pub mod conv;
pub mod data;
pub mod elementwise;
pub mod factor;
pub mod gemm;
pub mod iwae_train;
pub mod kl;
pub mod likelihood;
pub mod posterior_full;
pub mod posterior_iaf;
pub mod posterior_planar;
pub mod reduce;
pub mod reparam;
pub mod tc;

pub use gemm::{Epilogue, Trans, gemm};

/// Activation functions fused into GEMM epilogues. Codes mirror `shaders/common.wgsl`.
///
/// The backward pass computes the derivative from the activation's *output* y (the GEMM
/// epilogue keeps only y). That is exact for ReLU, tanh and sigmoid, and for LeakyReLU only
/// when y > 0 ⇔ x > 0, i.e. a positive slope. So a LeakyReLU slope must be finite and in
/// (0, 1]: [`Activation::leaky_relu`] and [`Activation::parse`] refuse anything else,
/// [`Activation::validate`] checks a value built directly (configuration validation and the
/// GEMM wrapper call it), and deserialization (configuration files, checkpoints) refuses it too.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", try_from = "ActivationRepr")]
pub enum Activation {
    Identity,
    Relu,
    LeakyRelu(f32),
    Tanh,
    Sigmoid,
}

/// The serialized form of [`Activation`], checked by `TryFrom` on the way in.
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActivationRepr {
    Identity,
    Relu,
    LeakyRelu(f32),
    Tanh,
    Sigmoid,
}

impl TryFrom<ActivationRepr> for Activation {
    type Error = String;
    fn try_from(r: ActivationRepr) -> std::result::Result<Self, String> {
        let a = match r {
            ActivationRepr::Identity => Activation::Identity,
            ActivationRepr::Relu => Activation::Relu,
            ActivationRepr::LeakyRelu(s) => Activation::LeakyRelu(s),
            ActivationRepr::Tanh => Activation::Tanh,
            ActivationRepr::Sigmoid => Activation::Sigmoid,
        };
        a.check().map(|()| a)
    }
}

impl Activation {
    /// The LeakyReLU slope of `leaky_relu` without one.
    pub const DEFAULT_LEAKY_SLOPE: f32 = 0.01;

    /// LeakyReLU with `slope`, which must be finite and in (0, 1].
    pub fn leaky_relu(slope: f32) -> crate::Result<Activation> {
        let a = Activation::LeakyRelu(slope);
        a.validate()?;
        Ok(a)
    }

    /// Checks the parameters: a LeakyReLU slope must be finite and in (0, 1] (see the type's
    /// docs for why).
    pub fn validate(self) -> crate::Result<()> {
        self.check().map_err(crate::Error::Config)
    }

    fn check(self) -> std::result::Result<(), String> {
        match self {
            Activation::LeakyRelu(s) if !(s.is_finite() && s > 0.0 && s <= 1.0) => Err(format!(
                "leaky_relu slope {s} must be a finite number in (0, 1] (the backward pass \
                 derives the gradient from the activation's output, which needs a positive slope)"
            )),
            _ => Ok(()),
        }
    }

    /// Parses `relu`, `leaky_relu` (slope 0.01) or `leaky_relu:SLOPE`, `tanh`, `sigmoid`
    /// (`-` may stand for `_`). The error names the value and what is accepted.
    pub fn parse(text: &str) -> std::result::Result<Activation, String> {
        let t = text.trim();
        let (name, arg) = match t.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (t, None),
        };
        let name = name.trim().replace('-', "_");
        let usage = "use relu, leaky_relu, leaky_relu:SLOPE (0 < SLOPE <= 1), tanh or sigmoid";
        let a = match (name.as_str(), arg) {
            ("relu", None) => Activation::Relu,
            ("tanh", None) => Activation::Tanh,
            ("sigmoid", None) => Activation::Sigmoid,
            ("leaky_relu", None) => Activation::LeakyRelu(Self::DEFAULT_LEAKY_SLOPE),
            ("leaky_relu", Some(a)) => {
                let slope: f32 = a.trim().parse().map_err(|_| {
                    format!("activation `{text}`: slope `{a}` is not a number; {usage}")
                })?;
                Activation::LeakyRelu(slope)
            }
            ("relu" | "tanh" | "sigmoid", Some(_)) => {
                return Err(format!(
                    "activation `{text}`: only leaky_relu takes a parameter; {usage}"
                ));
            }
            _ => return Err(format!("activation `{text}`: {usage}")),
        };
        a.check().map_err(|e| format!("activation `{text}`: {e}"))?;
        Ok(a)
    }

    pub fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::LeakyRelu(_) => 2,
            Activation::Tanh => 3,
            Activation::Sigmoid => 4,
        }
    }
    pub fn slope(self) -> f32 {
        match self {
            Activation::LeakyRelu(s) => s,
            _ => 0.0,
        }
    }
}

impl std::str::FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Activation::parse(s)
    }
}

pub(crate) fn shape_err(op: &'static str, detail: String) -> crate::Error {
    crate::Error::Shape { op, detail }
}

#[cfg(test)]
mod tests {
    use super::Activation;

    #[test]
    fn parse_accepts_the_flag_spellings() {
        assert_eq!(Activation::parse("relu"), Ok(Activation::Relu));
        assert_eq!(Activation::parse("tanh"), Ok(Activation::Tanh));
        assert_eq!(Activation::parse("sigmoid"), Ok(Activation::Sigmoid));
        assert_eq!(
            Activation::parse("leaky_relu"),
            Ok(Activation::LeakyRelu(0.01))
        );
        assert_eq!(
            Activation::parse("leaky-relu:0.2"),
            Ok(Activation::LeakyRelu(0.2))
        );
        assert_eq!(
            "leaky_relu:1".parse::<Activation>(),
            Ok(Activation::LeakyRelu(1.0))
        );
    }

    #[test]
    fn parse_names_the_bad_value() {
        for (text, want) in [
            ("gelu", "activation `gelu`"),
            ("leaky_relu:abc", "slope `abc` is not a number"),
            ("leaky_relu:", "slope `` is not a number"),
            ("relu:0.2", "only leaky_relu takes a parameter"),
            (
                "leaky_relu:-0.2",
                "slope -0.2 must be a finite number in (0, 1]",
            ),
            ("leaky_relu:0", "slope 0 must be"),
            ("leaky_relu:2", "slope 2 must be"),
            ("leaky_relu:nan", "slope NaN must be"),
        ] {
            let e = Activation::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: `{e}` lacks `{want}`");
        }
    }

    #[test]
    fn serde_keeps_its_format_and_refuses_bad_slopes() {
        for a in [
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu(0.2),
            Activation::Tanh,
            Activation::Sigmoid,
        ] {
            let s = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Activation>(&s).unwrap(), a, "{s}");
        }
        assert_eq!(
            serde_json::to_string(&Activation::LeakyRelu(0.5)).unwrap(),
            r#"{"leaky_relu":0.5}"#
        );
        let e = serde_json::from_str::<Activation>(r#"{"leaky_relu":-0.5}"#).unwrap_err();
        assert!(e.to_string().contains("slope -0.5"), "{e}");
    }
}
