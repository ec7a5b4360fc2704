//! Checkpoints: one safetensors file holding the weights (named by layer, PyTorch's
//! `(out, in)` layout, loadable with Python's `safetensors`), the optimizer moments, and as
//! metadata the run configuration and the position in training. Written atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{ParamLayout, VaeConfig};

pub const FORMAT: &str = "wgvae-checkpoint-1";
pub const FILE_NAME: &str = "checkpoint.safetensors";

/// Where training stands when the checkpoint is written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs finished.
    pub epoch: usize,
    /// Optimizer steps finished (the GPU step counter).
    pub step: u64,
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
    use std::io::Write;
    let tmp = tmp_path(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

impl Checkpoint {
    /// Serializes to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let layout = self.model.layout();
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for spec in &layout.tensors {
            let vals = &self.params[spec.offset..spec.offset + spec.len()];
            let (shape, data) = if spec.shape.len() == 2 {
                // (in, out) on the GPU -> (out, in) as torch.nn.Linear stores it.
                let (i, o) = (spec.shape[0], spec.shape[1]);
                let mut t = vec![0.0f32; i * o];
                for a in 0..i {
                    for b in 0..o {
                        t[b * i + a] = vals[a * o + b];
                    }
                }
                (vec![o, i], t)
            } else {
                (spec.shape.clone(), vals.to_vec())
            };
            owned.push((spec.name.clone(), shape, f32_bytes(&data)));
        }
        if let (Some(m), Some(v)) = (&self.adam_m, &self.adam_v) {
            owned.push(("optimizer.adam_m".into(), vec![m.len()], f32_bytes(m)));
            owned.push(("optimizer.adam_v".into(), vec![v.len()], f32_bytes(v)));
        }
        let views = owned
            .iter()
            .map(|(n, s, d)| TensorView::new(Dtype::F32, s.clone(), d).map(|v| (n.clone(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("building checkpoint tensors: {e}")))?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert(
            "model".to_string(),
            serde_json::to_string(&self.model).expect("config serializes"),
        );
        meta.insert("run".to_string(), self.run.to_string());
        meta.insert(
            "state".to_string(),
            serde_json::to_string(&self.state).expect("state serializes"),
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

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| err(path, "no metadata: not written by wgvae"))?;
        let field = |k: &str| {
            meta.get(k)
                .ok_or_else(|| err(path, format!("metadata field `{k}` is missing")))
        };
        let format = field("format")?;
        if format != FORMAT {
            return Err(err(
                path,
                format!("metadata field `format` is `{format}`, expected `{FORMAT}`"),
            ));
        }
        let model: VaeConfig = serde_json::from_str(field("model")?)
            .map_err(|e| err(path, format!("metadata field `model`: {e}")))?;
        model
            .validate()
            .map_err(|e| err(path, format!("metadata field `model`: {e}")))?;
        let run: serde_json::Value = serde_json::from_str(field("run")?)
            .map_err(|e| err(path, format!("metadata field `run`: {e}")))?;
        let state: TrainState = serde_json::from_str(field("state")?)
            .map_err(|e| err(path, format!("metadata field `state`: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| err(path, format!("corrupt tensor data: {e}")))?;
        let layout = model.layout();
        let params = read_params(path, &st, &layout)?;
        let flat = |name: &str| -> Result<Option<Vec<f32>>> {
            match st.tensor(name) {
                Ok(t) => {
                    if t.dtype() != Dtype::F32 || t.shape() != [layout.total] {
                        return Err(err(
                            path,
                            format!(
                                "tensor `{name}` is {:?} {:?}, expected F32 [{}]",
                                t.dtype(),
                                t.shape(),
                                layout.total
                            ),
                        ));
                    }
                    Ok(Some(bytemuck::pod_collect_to_vec(t.data())))
                }
                Err(_) => Ok(None),
            }
        };
        Ok(Checkpoint {
            model,
            run,
            state,
            params,
            adam_m: flat("optimizer.adam_m")?,
            adam_v: flat("optimizer.adam_v")?,
        })
    }
}

fn read_params(path: &Path, st: &SafeTensors<'_>, layout: &ParamLayout) -> Result<Vec<f32>> {
    let mut flat = vec![0.0f32; layout.total];
    for spec in &layout.tensors {
        let t = st
            .tensor(&spec.name)
            .map_err(|_| err(path, format!("tensor `{}` is missing", spec.name)))?;
        let want: Vec<usize> = if spec.shape.len() == 2 {
            vec![spec.shape[1], spec.shape[0]]
        } else {
            spec.shape.clone()
        };
        if t.dtype() != Dtype::F32 || t.shape() != want.as_slice() {
            return Err(err(
                path,
                format!(
                    "tensor `{}` is {:?} {:?}, the architecture needs F32 {:?}",
                    spec.name,
                    t.dtype(),
                    t.shape(),
                    want
                ),
            ));
        }
        let vals: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
        if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
            return Err(err(
                path,
                format!("tensor `{}` holds a non-finite value at {i}", spec.name),
            ));
        }
        let dst = &mut flat[spec.offset..spec.offset + spec.len()];
        if spec.shape.len() == 2 {
            let (i, o) = (spec.shape[0], spec.shape[1]);
            for a in 0..i {
                for b in 0..o {
                    dst[a * o + b] = vals[b * i + a];
                }
            }
        } else {
            dst.copy_from_slice(&vals);
        }
    }
    Ok(flat)
}
