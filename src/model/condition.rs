//! Conditioning on a class label: the parameter-free [`Concat`] module, `x (rows, F) →
//! [x | y] (rows, F + C)` with y the one-hot label of the row.
//!
//! The output has F + C columns rounded up to a multiple of 4 (zero columns after the label:
//! the GEMM kernels' fast paths need rows of a multiple of 4 values; the weights that meet the
//! zero columns get zero gradients and never matter). The module copies x into the first F
//! columns of its output and carries the gradient of those columns back to x; the label
//! columns are not its to write: the VAE writes the one-hot
//! label there ([`crate::ops::condition::onehot`] from the (B,) label tensor of
//! [`crate::model::Activations::labels`]) at the start of the encoder's and the decoder's
//! forward programs, before the module runs. The label columns have no gradient.
//!
//! The CPU twin takes the labels from [`Concat::cpu_labels`] (the twin has no label tensor to
//! read); a module built with [`Concat::new`] has none, so its label columns are zero there
//! until they are set.

use std::sync::Arc;

use crate::cpu;
use crate::error::Result;
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::module::{GradWrite, InputGrad, Module, ParamDecl, check_params};
use crate::ops::Activation;
use crate::ops::condition::{concat_backward, concat_forward};

/// The name of the conditioning module in the encoder and the decoder.
pub const NAME: &str = "cond";

/// The output columns of a [`Concat`] of F features and C classes, F + C rounded up to a
/// multiple of 4, or `None` if that overflows.
pub fn width(features: usize, classes: usize) -> Option<usize> {
    features.checked_add(classes)?.checked_next_multiple_of(4)
}

/// `x → [x | onehot(label) | 0…]`: F input features, C classes, no parameters, identity activation.
#[derive(Clone, Debug, PartialEq)]
pub struct Concat {
    pub name: String,
    /// F
    pub features: usize,
    /// C
    pub classes: usize,
    /// Labels of the rows for the CPU twin (row r takes `labels[r % len]`); `None`: the label
    /// columns stay zero in the twin.
    pub cpu_labels: Option<Arc<Vec<u32>>>,
}

impl Concat {
    pub fn new(features: usize, classes: usize) -> Self {
        Concat {
            name: NAME.to_string(),
            features,
            classes,
            cpu_labels: None,
        }
    }

    /// The same module whose CPU twin writes these labels.
    pub fn with_cpu_labels(mut self, labels: Vec<u32>) -> Self {
        self.cpu_labels = Some(Arc::new(labels));
        self
    }

    /// Columns of the output: F + C rounded up to a multiple of 4 (saturating; see
    /// [`width`]).
    pub fn width(&self) -> usize {
        width(self.features, self.classes).unwrap_or(usize::MAX)
    }
}

impl Module for Concat {
    fn name(&self) -> &str {
        &self.name
    }
    fn in_features(&self) -> usize {
        self.features
    }
    fn out_features(&self) -> usize {
        self.width()
    }
    fn activation(&self) -> Activation {
        Activation::Identity
    }
    fn params(&self) -> Vec<ParamDecl> {
        Vec::new()
    }
    fn macs_per_row(&self) -> usize {
        0
    }

    fn forward(
        &self,
        ctx: &GpuContext,
        p: &[&Tensor<f32>],
        x: &Tensor<f32>,
        y: &Tensor<f32>,
    ) -> Result<Program> {
        check_params(&self.name, p.len(), 0)?;
        let mut prog = Program::new();
        prog.push(concat_forward(ctx, &self.name, x, y)?);
        Ok(prog)
    }

    fn backward(
        &self,
        ctx: &GpuContext,
        p: &[&Tensor<f32>],
        dp: &[&Tensor<f32>],
        _dp_write: GradWrite,
        _x: &Tensor<f32>,
        du: &Tensor<f32>,
        dx: Option<InputGrad<'_>>,
    ) -> Result<Program> {
        check_params(&self.name, p.len(), 0)?;
        check_params(&self.name, dp.len(), 0)?;
        let mut prog = Program::new();
        if let Some(g) = dx {
            prog.push(concat_backward(
                ctx,
                &format!("d {} input", self.name),
                du,
                g.dx,
                g.write == GradWrite::Accumulate,
                g.producer,
            )?);
        }
        Ok(prog)
    }

    fn cpu_forward(&self, _p: &[&[f64]], x: &[f64], rows: usize) -> Vec<f64> {
        let width = self.width();
        let mut y = vec![0.0; rows * width];
        cpu::condition::concat_forward(x, &mut y, rows, self.features, width);
        if let Some(labels) = &self.cpu_labels {
            cpu::condition::onehot(labels, &mut y, rows, width, self.features, self.classes);
        }
        y
    }

    fn cpu_backward(
        &self,
        _p: &[&[f64]],
        _x: &[f64],
        du: &[f64],
        rows: usize,
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut dx = vec![0.0; rows * self.features];
        cpu::condition::concat_backward(
            du,
            &mut dx,
            rows,
            self.features,
            self.width(),
            false,
            None,
        );
        (Vec::new(), dx)
    }
}
