//! Checkpoints: one safetensors file holding the weights (named by layer, PyTorch's
//! `(out, in)` layout, loadable with Python's `safetensors`), the Adam moments in the same named
//! layout (`optimizer.adam_m.<name>`, `optimizer.adam_v.<name>`), and as metadata the run
//! configuration and the position in training. Written atomically.
//!
//! Reading trusts nothing in the file: the header is bounded before it is parsed, every metadata
//! field is bounded and validated, the architecture's sizes are computed with checked arithmetic
//! and compared with the tensor bytes the file actually holds before anything is allocated, and
//! every tensor's dtype, shape and values are checked. Each error names the file and the field or
//! tensor at fault.
//!
//! Version 1 files (`wgvae-checkpoint-1`), which stored each moment as one flat tensor in the
//! padded internal layout, are still read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{ParamLayout, VaeConfig};

/// The format this version writes: moments per parameter tensor.
pub const FORMAT: &str = "wgvae-checkpoint-2";
/// The previous format, still read: moments as flat tensors in the padded internal layout.
pub const FORMAT_V1: &str = "wgvae-checkpoint-1";
pub const FILE_NAME: &str = "checkpoint.safetensors";
/// Name prefix of Adam's first moment: `optimizer.adam_m.encoder.fc1.weight`, … (in version 1
/// files, the name of one flat tensor).
pub const ADAM_M: &str = "optimizer.adam_m";
/// Name prefix of Adam's second moment.
pub const ADAM_V: &str = "optimizer.adam_v";
/// Largest safetensors header (tensor table and metadata) a checkpoint may have. The header of
/// the largest model wgvae builds is well under this.
pub const MAX_HEADER_BYTES: usize = 4 << 20;
/// Largest metadata field (`model`, `run`, `state`, `format`).
pub const MAX_METADATA_FIELD_BYTES: usize = 64 << 10;

/// Where training stands when the checkpoint is written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs finished.
    pub epoch: usize,
    /// Optimizer steps finished (the GPU step counter).
    pub step: u64,
}

impl TrainState {
    /// Largest step count: the GPU's step counter is a `u32`.
    pub const MAX_STEP: u64 = u32::MAX as u64;

    /// Checks a position read from a file: the step count fits the GPU's `u32` step counter, and
    /// no more epochs than steps are finished (every epoch takes at least one step), so the epoch
    /// count fits in a `u32` too.
    pub fn validate(&self) -> Result<()> {
        if self.step > Self::MAX_STEP {
            return Err(Error::Config(format!(
                "step {} does not fit the GPU's 32-bit step counter (at most {})",
                self.step,
                Self::MAX_STEP
            )));
        }
        if self.epoch as u128 > u128::from(self.step) {
            return Err(Error::Config(format!(
                "epoch {} is larger than step {}: every epoch takes at least one step",
                self.epoch, self.step
            )));
        }
        Ok(())
    }

    /// The epoch count after `more` further epochs, or an error if it overflows.
    pub fn epochs_after(&self, more: usize) -> Result<usize> {
        self.epoch.checked_add(more).ok_or_else(|| {
            Error::Config(format!(
                "{} finished epochs plus {more} more overflows the epoch counter",
                self.epoch
            ))
        })
    }
}

/// Everything a checkpoint holds, in host memory.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub model: VaeConfig,
    /// The run configuration as JSON (opaque here).
    pub run: serde_json::Value,
    pub state: TrainState,
    /// Parameters in the flat layout of `model.layout()`.
    pub params: Vec<f32>,
    /// Adam moments (flat layout); absent in weights-only files.
    pub adam_m: Option<Vec<f32>>,
    pub adam_v: Option<Vec<f32>>,
    /// Further parameter groups trained with the model (a discriminator), written under their
    /// own tensor names. [`Checkpoint::from_bytes`] does not know their layouts (they follow
    /// from the run configuration) and leaves this empty; read one with
    /// [`Checkpoint::read_group`].
    pub groups: Vec<GroupState>,
}

/// A parameter group's values and Adam moments, in the flat layout of `layout`, whose tensor
/// names carry the group's prefix (`discriminator.fc1.weight`).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupState {
    pub layout: ParamLayout,
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
}

fn err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsio::write_atomic(path, bytes)
}

/// Little-endian bytes of `v` (safetensors stores little-endian).
fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The message of a validation error, without the "invalid configuration" prefix.
fn detail_of(e: Error) -> String {
    match e {
        Error::Config(s) => s,
        e => e.to_string(),
    }
}

/// A parameter tensor as stored in the file: `(out, in)` for a weight (`(in, out)` in the flat
/// buffer), the flat shape otherwise.
fn stored_shape(shape: &[usize]) -> Vec<usize> {
    if shape.len() == 2 {
        vec![shape[1], shape[0]]
    } else {
        shape.to_vec()
    }
}

/// The values of `spec` in the flat buffer `flat`, in the stored order (weights transposed).
fn to_stored(flat: &[f32], shape: &[usize], offset: usize) -> Vec<f32> {
    let len: usize = shape.iter().product();
    let vals = &flat[offset..offset + len];
    if shape.len() == 2 {
        // (in, out) on the GPU -> (out, in) as torch.nn.Linear stores it.
        let (i, o) = (shape[0], shape[1]);
        let mut t = vec![0.0f32; len];
        for a in 0..i {
            for b in 0..o {
                t[b * i + a] = vals[a * o + b];
            }
        }
        t
    } else {
        vals.to_vec()
    }
}

/// What a tensor holds, for the checks of its values.
#[derive(Clone, Copy, PartialEq)]
enum Values {
    /// Model parameters: finite.
    Params,
    /// Adam's first moment: finite.
    FirstMoment,
    /// Adam's second moment: finite and non-negative.
    SecondMoment,
}

impl Values {
    fn check(self, v: f32) -> std::result::Result<(), &'static str> {
        if !v.is_finite() {
            return Err("a non-finite value");
        }
        if self == Values::SecondMoment && v < 0.0 {
            return Err("a negative value (a second moment is a mean of squares)");
        }
        Ok(())
    }
}

/// The tensors of a file: its table and the data after the header.
struct Tensors<'a> {
    path: &'a Path,
    meta: &'a Metadata,
    data: &'a [u8],
}

impl<'a> Tensors<'a> {
    fn has(&self, name: &str) -> bool {
        self.meta.info(name).is_some()
    }

    /// The bytes of tensor `name` after checking that it is F32 of shape `want`.
    fn f32_data(&self, name: &str, want: &[usize], what: &str) -> Result<&'a [u8]> {
        let info = self
            .meta
            .info(name)
            .ok_or_else(|| err(self.path, format!("tensor `{name}` is missing")))?;
        if info.dtype != Dtype::F32 || info.shape != want {
            return Err(err(
                self.path,
                format!(
                    "tensor `{name}` is {:?} {:?}, {what} needs F32 {want:?}",
                    info.dtype, info.shape
                ),
            ));
        }
        let (s, e) = info.data_offsets;
        // safetensors checked that the offsets tile the data and match the shape; this only
        // guards against a mismatch turning into a panic.
        match self.data.get(s..e) {
            Some(d) if want.iter().try_fold(4usize, |a, &b| a.checked_mul(b)) == Some(d.len()) => {
                Ok(d)
            }
            _ => Err(err(
                self.path,
                format!("tensor `{name}`: data offsets {s}..{e} do not match its shape"),
            )),
        }
    }

    /// Reads the tensors of `layout`, each named `prefix` + its name, into a new flat buffer
    /// (weights transposed back to `(in, out)`, padding zero). `None` if none of them is present
    /// and `required` is false; an error naming the tensor if some are missing.
    fn read_named(
        &self,
        layout: &ParamLayout,
        prefix: &str,
        values: Values,
        required: bool,
    ) -> Result<Option<Vec<f32>>> {
        let names: Vec<String> = layout
            .tensors
            .iter()
            .map(|s| format!("{prefix}{}", s.name))
            .collect();
        if !required && !names.iter().any(|n| self.has(n)) {
            return Ok(None);
        }
        // Every tensor is checked before the flat buffer is allocated, so its size is backed by
        // bytes the file holds.
        let mut datas = Vec::with_capacity(names.len());
        for (spec, name) in layout.tensors.iter().zip(&names) {
            datas.push(self.f32_data(name, &stored_shape(&spec.shape), "the architecture")?);
        }
        let mut flat = vec![0.0f32; layout.total];
        for ((spec, name), data) in layout.tensors.iter().zip(&names).zip(datas) {
            let dst = &mut flat[spec.offset..spec.offset + spec.len()];
            // For a weight, stored element k = b·in + a is flat element a·out + b.
            let (i, o) = match spec.shape.as_slice() {
                [i, o] => (*i, *o),
                _ => (1, 1),
            };
            for (k, bytes) in data.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                if let Err(what) = values.check(v) {
                    return Err(err(
                        self.path,
                        format!("tensor `{name}` holds {what} at element {k}: {v}"),
                    ));
                }
                let at = if spec.shape.len() == 2 {
                    (k % i) * o + k / i
                } else {
                    k
                };
                dst[at] = v;
            }
        }
        Ok(Some(flat))
    }

    /// A version-1 moment: one flat F32 tensor `name` of shape `[layout.total]`.
    fn read_flat(
        &self,
        layout: &ParamLayout,
        name: &str,
        values: Values,
    ) -> Result<Option<Vec<f32>>> {
        if !self.has(name) {
            return Ok(None);
        }
        let data = self.f32_data(name, &[layout.total], "the architecture's flat layout")?;
        let mut flat = Vec::with_capacity(layout.total);
        for (k, bytes) in data.chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if let Err(what) = values.check(v) {
                return Err(err(
                    self.path,
                    format!("tensor `{name}` holds {what} at element {k}: {v}"),
                ));
            }
            flat.push(v);
        }
        Ok(Some(flat))
    }
}

impl Checkpoint {
    /// Serializes to safetensors bytes (format [`FORMAT`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.model.validate()?;
        self.state.validate()?;
        let layout = self.model.layout();
        let moments = match (&self.adam_m, &self.adam_v) {
            (Some(m), Some(v)) => vec![(ADAM_M, m), (ADAM_V, v)],
            (None, None) => Vec::new(),
            _ => {
                return Err(Error::Config(
                    "checkpoint: one Adam moment given without the other".into(),
                ));
            }
        };
        let mut sources = vec![("", &layout, &self.params)];
        sources.extend(moments.into_iter().map(|(p, f)| (p, &layout, f)));
        for g in &self.groups {
            sources.push(("", &g.layout, &g.params));
            sources.push((ADAM_M, &g.layout, &g.adam_m));
            sources.push((ADAM_V, &g.layout, &g.adam_v));
        }
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (prefix, layout, flat) in sources {
            if flat.len() != layout.total {
                let what = if prefix.is_empty() {
                    "parameters"
                } else {
                    prefix
                };
                return Err(Error::Config(format!(
                    "checkpoint: {} values of {what} given, the architecture's layout has {}",
                    flat.len(),
                    layout.total
                )));
            }
            let dot = if prefix.is_empty() { "" } else { "." };
            for spec in &layout.tensors {
                let vals = to_stored(flat, &spec.shape, spec.offset);
                owned.push((
                    format!("{prefix}{dot}{}", spec.name),
                    stored_shape(&spec.shape),
                    f32_bytes(&vals),
                ));
            }
        }
        let views = owned
            .iter()
            .map(|(n, s, d)| TensorView::new(Dtype::F32, s.clone(), d).map(|v| (n.clone(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("building checkpoint tensors: {e}")))?;
        let json = |what: &str, v: std::result::Result<String, serde_json::Error>| {
            v.map_err(|e| Error::Config(format!("serializing checkpoint {what}: {e}")))
        };
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert(
            "model".to_string(),
            json("model", serde_json::to_string(&self.model))?,
        );
        meta.insert("run".to_string(), self.run.to_string());
        meta.insert(
            "state".to_string(),
            json("state", serde_json::to_string(&self.state))?,
        );
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Config(format!("serializing checkpoint: {e}")))
    }

    /// Writes the checkpoint atomically to `dir/checkpoint.safetensors`.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(FILE_NAME);
        write_atomic(&path, &self.to_bytes()?)?;
        Ok(path)
    }

    /// Reads a checkpoint file; every inconsistency is an error naming the file and what is
    /// wrong.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses checkpoint bytes (format [`FORMAT`] or [`FORMAT_V1`]); `path` names the file in
    /// errors. Allocates at most a small multiple of `bytes.len()`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        // The header length is the first 8 bytes, little-endian; bound it before safetensors
        // parses (and allocates for) the header.
        let declared = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
        if let Some(n) = declared
            && n > MAX_HEADER_BYTES as u64
        {
            return Err(err(
                path,
                format!(
                    "not a wgvae checkpoint: the safetensors header is {n} bytes, more than the \
                     limit of {MAX_HEADER_BYTES}"
                ),
            ));
        }
        let (header_len, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
        let data = header_len
            .checked_add(8)
            .and_then(|start| bytes.get(start..))
            .ok_or_else(|| err(path, "the header runs past the end of the file"))?;
        let meta = header
            .metadata()
            .as_ref()
            .ok_or_else(|| err(path, "no metadata: not written by wgvae"))?;
        let field = |k: &str| -> Result<&str> {
            let v = meta
                .get(k)
                .ok_or_else(|| err(path, format!("metadata field `{k}` is missing")))?;
            if v.len() > MAX_METADATA_FIELD_BYTES {
                return Err(err(
                    path,
                    format!(
                        "metadata field `{k}` is {} bytes, more than the limit of \
                         {MAX_METADATA_FIELD_BYTES}",
                        v.len()
                    ),
                ));
            }
            Ok(v)
        };
        let format = field("format")?;
        if format != FORMAT && format != FORMAT_V1 {
            return Err(err(
                path,
                format!(
                    "metadata field `format` is `{}`, expected `{FORMAT}` (or `{FORMAT_V1}`)",
                    format.escape_debug()
                ),
            ));
        }
        let model: VaeConfig = serde_json::from_str(field("model")?)
            .map_err(|e| err(path, format!("metadata field `model`: {e}")))?;
        model
            .validate()
            .map_err(|e| err(path, format!("metadata field `model`: {}", detail_of(e))))?;
        let run: serde_json::Value = serde_json::from_str(field("run")?)
            .map_err(|e| err(path, format!("metadata field `run`: {e}")))?;
        let state: TrainState = serde_json::from_str(field("state")?)
            .map_err(|e| err(path, format!("metadata field `state`: {e}")))?;
        state
            .validate()
            .map_err(|e| err(path, format!("metadata field `state`: {}", detail_of(e))))?;

        // The parameters alone need 4 bytes each: refuse an architecture the file cannot hold
        // before its layout is built or anything is allocated for it.
        let count = model.param_count_checked().unwrap_or(usize::MAX);
        let need = count.saturating_mul(4);
        if need > data.len() {
            return Err(err(
                path,
                format!(
                    "metadata field `model` describes {count} parameters ({need} bytes), but the \
                     file holds only {} bytes of tensor data",
                    data.len()
                ),
            ));
        }
        let layout = model.layout();
        let tensors = Tensors {
            path,
            meta: &header,
            data,
        };
        let params = tensors
            .read_named(&layout, "", Values::Params, true)?
            .ok_or_else(|| err(path, "no parameter tensors"))?;
        let (adam_m, adam_v) = if format == FORMAT_V1 {
            (
                tensors.read_flat(&layout, ADAM_M, Values::FirstMoment)?,
                tensors.read_flat(&layout, ADAM_V, Values::SecondMoment)?,
            )
        } else {
            (
                tensors.read_named(&layout, &format!("{ADAM_M}."), Values::FirstMoment, false)?,
                tensors.read_named(&layout, &format!("{ADAM_V}."), Values::SecondMoment, false)?,
            )
        };
        match (&adam_m, &adam_v) {
            (Some(_), None) | (None, Some(_)) => {
                let (have, lack) = if adam_m.is_some() {
                    (ADAM_M, ADAM_V)
                } else {
                    (ADAM_V, ADAM_M)
                };
                return Err(err(
                    path,
                    format!("tensors `{have}.*` are present but `{lack}.*` are missing"),
                ));
            }
            _ => {}
        }
        Ok(Checkpoint {
            model,
            run,
            state,
            params,
            adam_m,
            adam_v,
            groups: Vec::new(),
        })
    }

    /// Reads the parameter group of `layout` (its values and both Adam moments, all required)
    /// from the checkpoint file `path`; errors name the file and the missing or bad tensor.
    pub fn read_group(path: &Path, layout: &ParamLayout) -> Result<GroupState> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (header_len, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
        let data = header_len
            .checked_add(8)
            .and_then(|start| bytes.get(start..))
            .ok_or_else(|| err(path, "the header runs past the end of the file"))?;
        let need = layout.count().saturating_mul(4);
        if need > data.len() {
            return Err(err(
                path,
                format!(
                    "the run's configuration describes a parameter group of {} values ({need} \
                     bytes), but the file holds only {} bytes of tensor data",
                    layout.count(),
                    data.len()
                ),
            ));
        }
        let tensors = Tensors {
            path,
            meta: &header,
            data,
        };
        let read = |prefix: &str, values: Values| -> Result<Vec<f32>> {
            tensors
                .read_named(layout, prefix, values, true)?
                .ok_or_else(|| err(path, "a parameter group's tensors are missing"))
        };
        Ok(GroupState {
            layout: layout.clone(),
            params: read("", Values::Params)?,
            adam_m: read(&format!("{ADAM_M}."), Values::FirstMoment)?,
            adam_v: read(&format!("{ADAM_V}."), Values::SecondMoment)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GaussianSigma, Likelihood};
    use crate::rng::HostRng;

    fn p() -> &'static Path {
        Path::new("runs/x/checkpoint.safetensors")
    }

    /// A small model whose tensors are not multiples of the 64-element padding.
    fn model() -> VaeConfig {
        VaeConfig {
            height: 3,
            width: 5,
            channels: 1,
            arch: crate::model::Arch::Mlp,
            enc_hidden: vec![7, 6],
            dec_hidden: vec![9],
            latent: 2,
            activation: crate::ops::Activation::Tanh,
            likelihood: Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedPerPixel,
            },
            classes: None,
            posterior: crate::model::PosteriorKind::Diagonal,
        }
    }

    /// Random values in every tensor, zero padding (as on the GPU).
    fn filled(layout: &ParamLayout, seed: u64, non_negative: bool) -> Vec<f32> {
        let mut rng = HostRng::derive(seed, 7);
        let mut flat = vec![0.0f32; layout.total];
        for spec in &layout.tensors {
            for v in &mut flat[spec.offset..spec.offset + spec.len()] {
                let u = rng.uniform() as f32;
                *v = if non_negative {
                    u * 1e-3
                } else {
                    2.0 * u - 1.0
                };
            }
        }
        flat
    }

    fn sample() -> Checkpoint {
        let model = model();
        let layout = model.layout();
        Checkpoint {
            run: serde_json::json!({"epochs": 3, "note": "any JSON"}),
            state: TrainState { epoch: 3, step: 96 },
            params: filled(&layout, 1, false),
            adam_m: Some(filled(&layout, 2, false)),
            adam_v: Some(filled(&layout, 3, true)),
            groups: Vec::new(),
            model,
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Re-serializes `bytes` with the tensors renamed/replaced by `edit` and metadata `meta`.
    fn rewrite(
        bytes: &[u8],
        meta: impl FnOnce(&mut HashMap<String, String>),
        edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
    ) -> Vec<u8> {
        let st = SafeTensors::deserialize(bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
        let mut m = header.metadata().clone().unwrap();
        meta(&mut m);
        let mut ts: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
            .collect();
        edit(&mut ts);
        let views: Vec<_> = ts
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, Some(m)).unwrap()
    }

    fn load_err(bytes: &[u8]) -> String {
        let e = Checkpoint::from_bytes(p(), bytes).unwrap_err().to_string();
        assert!(e.contains("runs/x/checkpoint.safetensors"), "{e}");
        e
    }

    #[test]
    fn parameter_groups_roundtrip_under_their_own_names() {
        let mut layout = ParamLayout::default();
        layout.push_tensor("discriminator.fc1.weight", &[3, 5]);
        layout.push_tensor("discriminator.fc1.bias", &[5]);
        let group = GroupState {
            params: filled(&layout, 4, false),
            adam_m: filled(&layout, 5, false),
            adam_v: filled(&layout, 6, true),
            layout: layout.clone(),
        };
        let ck = Checkpoint {
            groups: vec![group.clone()],
            ..sample()
        };
        let dir = std::env::temp_dir().join(format!("wgvae-ck-groups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = ck.save(&dir).unwrap();
        let st_bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&st_bytes).unwrap();
        // PyTorch's (out, in) layout, and the moments under the optimizer's prefix.
        assert_eq!(
            st.tensor("discriminator.fc1.weight").unwrap().shape(),
            [5, 3]
        );
        assert!(
            st.tensor(&format!("{ADAM_V}.discriminator.fc1.bias"))
                .is_ok()
        );
        let back = Checkpoint::load(&path).unwrap();
        assert!(back.groups.is_empty());
        assert_eq!(bits(&back.params), bits(&ck.params));
        let g = Checkpoint::read_group(&path, &layout).unwrap();
        assert_eq!(bits(&g.params), bits(&group.params));
        assert_eq!(bits(&g.adam_m), bits(&group.adam_m));
        assert_eq!(bits(&g.adam_v), bits(&group.adam_v));
        // A group the file does not hold is an error naming the file and the tensor.
        let mut other = ParamLayout::default();
        other.push_tensor("critic.fc1.weight", &[2, 2]);
        let e = Checkpoint::read_group(&path, &other)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("checkpoint.safetensors") && e.contains("critic.fc1.weight"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn roundtrip_is_bit_exact_and_moments_are_named_like_the_weights() {
        let ck = sample();
        let bytes = ck.to_bytes().unwrap();
        let back = Checkpoint::from_bytes(p(), &bytes).unwrap();
        assert_eq!(back.model, ck.model);
        assert_eq!(back.run, ck.run);
        assert_eq!(back.state, ck.state);
        assert_eq!(bits(&back.params), bits(&ck.params));
        assert_eq!(
            bits(back.adam_m.as_ref().unwrap()),
            bits(ck.adam_m.as_ref().unwrap())
        );
        assert_eq!(
            bits(back.adam_v.as_ref().unwrap()),
            bits(ck.adam_v.as_ref().unwrap())
        );

        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["format"], FORMAT);
        assert!(st.tensor(ADAM_M).is_err(), "no flat moment in version 2");
        let layout = ck.model.layout();
        let w = layout.get("encoder.fc1.weight").unwrap();
        let (i, o) = (w.shape[0], w.shape[1]);
        assert_eq!((i, o), (15, 7));
        for (name, flat) in [
            ("encoder.fc1.weight".to_string(), &ck.params),
            (
                format!("{ADAM_M}.encoder.fc1.weight"),
                ck.adam_m.as_ref().unwrap(),
            ),
            (
                format!("{ADAM_V}.encoder.fc1.weight"),
                ck.adam_v.as_ref().unwrap(),
            ),
        ] {
            let t = st.tensor(&name).unwrap();
            assert_eq!(t.shape(), [o, i], "{name}");
            let stored: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            for a in 0..i {
                for b in 0..o {
                    assert_eq!(
                        stored[b * i + a].to_bits(),
                        flat[w.offset + a * o + b].to_bits(),
                        "{name} ({b}, {a})"
                    );
                }
            }
        }
        let sigma = st.tensor(&format!("{ADAM_V}.decoder.log_sigma")).unwrap();
        assert_eq!(sigma.shape(), [15]);

        // Weights only: no moments come back.
        let weights = Checkpoint {
            adam_m: None,
            adam_v: None,
            ..ck.clone()
        };
        let back = Checkpoint::from_bytes(p(), &weights.to_bytes().unwrap()).unwrap();
        assert!(back.adam_m.is_none() && back.adam_v.is_none());
        assert_eq!(bits(&back.params), bits(&ck.params));
    }

    #[test]
    fn version_1_files_with_flat_moments_still_load() {
        let ck = sample();
        let layout = ck.model.layout();
        let m = ck.adam_m.clone().unwrap();
        let v = ck.adam_v.clone().unwrap();
        let v1 = rewrite(
            &ck.to_bytes().unwrap(),
            |meta| {
                meta.insert("format".into(), FORMAT_V1.into());
            },
            |ts| {
                ts.retain(|(n, ..)| !n.starts_with("optimizer."));
                ts.push((ADAM_M.into(), Dtype::F32, vec![layout.total], f32_bytes(&m)));
                ts.push((ADAM_V.into(), Dtype::F32, vec![layout.total], f32_bytes(&v)));
            },
        );
        let back = Checkpoint::from_bytes(p(), &v1).unwrap();
        assert_eq!(bits(&back.params), bits(&ck.params));
        assert_eq!(bits(back.adam_m.as_ref().unwrap()), bits(&m));
        assert_eq!(bits(back.adam_v.as_ref().unwrap()), bits(&v));
        // A version 1 flat moment of the wrong length names the tensor.
        let short = rewrite(
            &v1,
            |_| {},
            |ts| {
                for t in ts.iter_mut().filter(|t| t.0 == ADAM_V) {
                    t.2 = vec![layout.total - 1];
                    t.3.truncate(4 * (layout.total - 1));
                }
            },
        );
        let e = load_err(&short);
        assert!(e.contains("tensor `optimizer.adam_v`"), "{e}");
    }

    #[test]
    fn bad_metadata_is_refused_naming_the_field() {
        let good = sample().to_bytes().unwrap();
        let with = |key: &str, value: String| {
            rewrite(
                &good,
                |m| {
                    m.insert(key.to_string(), value);
                },
                |_| {},
            )
        };
        let state = |epoch: &str, step: &str| {
            with("state", format!("{{\"epoch\":{epoch},\"step\":{step}}}"))
        };
        let mut model = model();
        for (bytes, needles) in [
            (
                state("18446744073709551615", "18446744073709551615"),
                vec!["metadata field `state`", "32-bit step counter"],
            ),
            (
                state("18446744073709551615", "100"),
                vec!["metadata field `state`", "epoch 18446744073709551615"],
            ),
            (
                state("1", "4294967296"),
                vec!["metadata field `state`", "step 4294967296"],
            ),
            (state("-1", "0"), vec!["metadata field `state`"]),
            (state("1e308", "0"), vec!["metadata field `state`"]),
            (
                with("format", "wgvae-checkpoint-9".into()),
                vec!["metadata field `format`", "wgvae-checkpoint-9"],
            ),
            (
                with("run", "{not json".into()),
                vec!["metadata field `run`"],
            ),
            (
                with("run", " ".repeat(MAX_METADATA_FIELD_BYTES + 1)),
                vec!["metadata field `run` is 65537 bytes"],
            ),
            (
                with("model", {
                    model.enc_hidden = vec![4_000_000_000];
                    serde_json::to_string(&model).unwrap()
                }),
                vec!["metadata field `model`", "limit of 4294967295"],
            ),
            (
                with("model", {
                    model.enc_hidden = vec![1000, 1000];
                    serde_json::to_string(&model).unwrap()
                }),
                vec!["metadata field `model` describes", "file holds only"],
            ),
            (
                with("model", {
                    model.height = (1 << 32) + 1;
                    model.width = (1 << 32) + 1;
                    serde_json::to_string(&model).unwrap()
                }),
                vec!["metadata field `model`", "4294967297x4294967297 overflows"],
            ),
            (
                with("model", {
                    let mut m = self::model();
                    m.likelihood = Likelihood::Gaussian {
                        log_sigma: GaussianSigma::Fixed(1.0),
                    };
                    serde_json::to_string(&m).unwrap().replace("1.0", "1e39")
                }),
                vec!["metadata field `model`", "log sigma inf"],
            ),
        ] {
            let e = load_err(&bytes);
            for n in needles {
                assert!(e.contains(n), "`{e}` lacks `{n}`");
            }
        }
        let e = load_err(&rewrite(
            &good,
            |m| {
                m.remove("state");
            },
            |_| {},
        ));
        assert!(e.contains("metadata field `state` is missing"), "{e}");
    }

    #[test]
    fn bad_tensors_are_refused_naming_the_tensor() {
        let good = sample().to_bytes().unwrap();
        let set = |name: &str, k: usize, v: f32| {
            let name = name.to_string();
            rewrite(
                &good,
                |_| {},
                move |ts| {
                    let t = ts.iter_mut().find(|t| t.0 == name).unwrap();
                    t.3[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
                },
            )
        };
        for (bytes, needles) in [
            (
                set("decoder.fc2.bias", 4, f32::NAN),
                vec!["tensor `decoder.fc2.bias`", "non-finite value at element 4"],
            ),
            (
                set("optimizer.adam_m.encoder.fc2.weight", 0, f32::INFINITY),
                vec!["tensor `optimizer.adam_m.encoder.fc2.weight`", "non-finite"],
            ),
            (
                set("optimizer.adam_v.decoder.fc1.weight", 3, -1e-9),
                vec![
                    "tensor `optimizer.adam_v.decoder.fc1.weight`",
                    "negative value",
                ],
            ),
            (
                rewrite(
                    &good,
                    |_| {},
                    |ts| ts.retain(|t| t.0 != "optimizer.adam_v.decoder.log_sigma"),
                ),
                vec!["tensor `optimizer.adam_v.decoder.log_sigma` is missing"],
            ),
            (
                rewrite(&good, |_| {}, |ts| ts.retain(|t| !t.0.starts_with(ADAM_V))),
                vec!["`optimizer.adam_m.*` are present but `optimizer.adam_v.*` are missing"],
            ),
            (
                rewrite(
                    &good,
                    |_| {},
                    |ts| {
                        let t = ts.iter_mut().find(|t| t.0 == "encoder.fc1.weight").unwrap();
                        t.2 = vec![15, 7];
                    },
                ),
                vec![
                    "tensor `encoder.fc1.weight` is F32 [15, 7]",
                    "needs F32 [7, 15]",
                ],
            ),
            (
                rewrite(
                    &good,
                    |_| {},
                    |ts| {
                        let t = ts.iter_mut().find(|t| t.0 == "encoder.fc1.bias").unwrap();
                        t.1 = Dtype::I32;
                    },
                ),
                vec!["tensor `encoder.fc1.bias` is I32"],
            ),
        ] {
            let e = load_err(&bytes);
            for n in needles {
                assert!(e.contains(n), "`{e}` lacks `{n}`");
            }
        }
        // A header length far beyond the limit is refused before safetensors parses it.
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(load_err(&huge).contains("more than the limit"));
        for len in [0, 7, 8, good.len() / 2, good.len() - 1] {
            load_err(&good[..len]);
        }
    }

    #[test]
    fn writing_refuses_inconsistent_checkpoints() {
        let mut ck = sample();
        ck.params.pop();
        assert!(
            ck.to_bytes()
                .unwrap_err()
                .to_string()
                .contains("parameters")
        );
        let mut ck = sample();
        ck.adam_v = None;
        assert!(ck.to_bytes().is_err());
        let mut ck = sample();
        ck.state.step = 1 << 40;
        assert!(ck.to_bytes().is_err());
        assert!(sample().state.epochs_after(usize::MAX).is_err());
        assert_eq!(sample().state.epochs_after(2).unwrap(), 5);
    }
}
