//! A sequential network of [`Module`]s: its activation buffers, and its forward and backward
//! programs with the fusions of the GEMM and convolution kernels (bias + activation in the
//! forward epilogue, the activation derivative of each module's input in the input-gradient
//! epilogue of the module after it).

use crate::cpu;
use crate::error::Result;
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::module::{GradWrite, InputGrad, Module};
use crate::model::{GpuParams, ParamLayout};
use crate::ops::Activation;

/// Modules applied one after the other; parameters are named `<name>.<module>.<param>`.
#[derive(Debug)]
pub struct Sequential {
    pub name: String,
    pub modules: Vec<Box<dyn Module>>,
}

/// Parameter values of one module, by the layout's names (CPU twin).
pub type CpuParams<'a> = dyn Fn(&str) -> &'a [f64] + 'a;

impl Sequential {
    pub fn new(name: &str, modules: Vec<Box<dyn Module>>) -> Self {
        Sequential {
            name: name.to_string(),
            modules,
        }
    }

    pub fn in_features(&self) -> usize {
        self.modules.first().map_or(0, |m| m.in_features())
    }
    pub fn out_features(&self) -> usize {
        self.modules.last().map_or(0, |m| m.out_features())
    }

    /// The full name of a module's parameter.
    pub fn param_name(&self, module: &dyn Module, param: &str) -> String {
        format!("{}.{}.{}", self.name, module.name(), param)
    }

    fn views<'a>(
        &self,
        module: &dyn Module,
        set: &'a GpuParams,
        layout: &ParamLayout,
    ) -> Vec<&'a Tensor<f32>> {
        module
            .params()
            .iter()
            .map(|d| set.get(layout, &self.param_name(module, d.name)))
            .collect()
    }

    /// One (rows, out_features) buffer per module: its output.
    pub fn buffers(&self, ctx: &GpuContext, rows: usize, what: &str) -> Result<Vec<Tensor<f32>>> {
        self.modules
            .iter()
            .map(|m| {
                Tensor::zeros(
                    ctx,
                    &format!("{}.{} {what}", self.name, m.name()),
                    &[rows, m.out_features()],
                )
            })
            .collect()
    }

    /// `outs[i] = module_i(outs[i-1])` with `outs[-1] = x`.
    pub fn forward(
        &self,
        ctx: &GpuContext,
        params: &GpuParams,
        layout: &ParamLayout,
        x: &Tensor<f32>,
        outs: &[Tensor<f32>],
    ) -> Result<Program> {
        let mut p = Program::new();
        for (i, m) in self.modules.iter().enumerate() {
            let input = if i == 0 { x } else { &outs[i - 1] };
            p.extend(m.forward(
                ctx,
                &self.views(m.as_ref(), params, layout),
                input,
                &outs[i],
            )?);
        }
        Ok(p)
    }

    /// From `gouts.last()` (the gradient at the network's output, before its last activation,
    /// written by the loss term that consumes it) back through every module: parameter gradients
    /// into `grads` (stored or accumulated per `dp_write`), each module's pre-activation output
    /// gradient into `gouts[i]`, and, with `dx`, the input gradient. Without `dx`, the modules
    /// before the first one with parameters are skipped (their `gouts` are left as they are).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        ctx: &GpuContext,
        params: &GpuParams,
        grads: &GpuParams,
        layout: &ParamLayout,
        dp_write: GradWrite,
        x: &Tensor<f32>,
        outs: &[Tensor<f32>],
        gouts: &[Tensor<f32>],
        dx: Option<(&Tensor<f32>, GradWrite)>,
    ) -> Result<Program> {
        let mut p = Program::new();
        // Without an input gradient, the leading parameter-free modules (a conditional MLP
        // encoder's label concatenation) need no gradient, and the first module with
        // parameters no input gradient.
        let first = match dx {
            Some(_) => 0,
            None => self
                .modules
                .iter()
                .position(|m| !m.params().is_empty())
                .unwrap_or(self.modules.len()),
        };
        for (i, m) in self.modules.iter().enumerate().rev() {
            if i < first {
                break;
            }
            let input = if i == 0 { x } else { &outs[i - 1] };
            let input_grad = if i > first {
                Some(InputGrad {
                    dx: &gouts[i - 1],
                    write: GradWrite::Store,
                    producer: Some((&outs[i - 1], self.modules[i - 1].activation())),
                })
            } else {
                dx.map(|(t, write)| InputGrad {
                    dx: t,
                    write,
                    producer: None,
                })
            };
            p.extend(m.backward(
                ctx,
                &self.views(m.as_ref(), params, layout),
                &self.views(m.as_ref(), grads, layout),
                dp_write,
                input,
                &gouts[i],
                input_grad,
            )?);
        }
        Ok(p)
    }

    /// CPU twin of [`Sequential::forward`]: every module's output (after its activation).
    pub fn cpu_forward(&self, params: &CpuParams<'_>, x: &[f64], rows: usize) -> Vec<Vec<f64>> {
        let mut outs: Vec<Vec<f64>> = Vec::with_capacity(self.modules.len());
        for m in &self.modules {
            let p: Vec<&[f64]> = m
                .params()
                .iter()
                .map(|d| params(&self.param_name(m.as_ref(), d.name)))
                .collect();
            let input = outs.last().map_or(x, |v| v.as_slice());
            let mut u = m.cpu_forward(&p, input, rows);
            let act = m.activation();
            for v in &mut u {
                *v = cpu::activate(act, *v);
            }
            outs.push(u);
        }
        outs
    }

    /// CPU twin of [`Sequential::backward`] from the gradient at the output (before the last
    /// activation): the gradient of every parameter by name, and the input gradient.
    pub fn cpu_backward(
        &self,
        params: &CpuParams<'_>,
        x: &[f64],
        outs: &[Vec<f64>],
        dout: &[f64],
        rows: usize,
    ) -> (Vec<(String, Vec<f64>)>, Vec<f64>) {
        let mut named = Vec::new();
        let mut du = dout.to_vec();
        for (i, m) in self.modules.iter().enumerate().rev() {
            let p: Vec<&[f64]> = m
                .params()
                .iter()
                .map(|d| params(&self.param_name(m.as_ref(), d.name)))
                .collect();
            let input = if i == 0 { x } else { &outs[i - 1] };
            let (dp, mut dx) = m.cpu_backward(&p, input, &du, rows);
            for (d, g) in m.params().iter().zip(dp) {
                named.push((self.param_name(m.as_ref(), d.name), g));
            }
            if i > 0 {
                let act: Activation = self.modules[i - 1].activation();
                for (g, &y) in dx.iter_mut().zip(&outs[i - 1]) {
                    *g *= cpu::activate_grad_from_output(act, y);
                }
            }
            du = dx;
        }
        (named, du)
    }
}
