//! Modules: the layers a network is made of. Each declares its parameters and builds its own
//! forward and backward programs from the buffers the network hands it, and has an f64 CPU twin.
//!
//! # Gradient conventions
//!
//! A module's output `y = act(u)` is stored after its activation. The gradient buffer of an
//! output holds ∂L/∂u, the gradient *before* the activation: whoever writes it applies
//! `act'(u)` (computed from the stored `y`) in the same kernel. That writer is the next module's
//! input-gradient pass (the fused "activation gradient" epilogue) or, for the last module of a
//! network, the loss term that consumes the output (whose activation must then be the identity).
//!
//! Every gradient write says whether it stores or accumulates ([`GradWrite`]); no module relies
//! on another having zeroed or pre-filled a buffer.

use std::fmt::Debug;

use crate::cpu;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::ops::Activation;
use crate::ops::conv::{self, ConvProgram};
use crate::ops::gemm::{Epilogue, Trans, gemm};
use crate::ops::reduce::col_sum;

/// Whether a gradient pass overwrites its destination or adds to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradWrite {
    Store,
    Accumulate,
}

/// How a parameter tensor starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(−bound, bound)
    Uniform(f32),
    /// every element the same value
    Constant(f32),
}

/// A parameter a module declares: its name within the module (`weight`, `bias`), its shape in
/// wgvae's buffer layout, and its initialiser.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// The input gradient a backward pass should write, if any: into `dx`, stored or accumulated,
/// with the derivative of the input's producer (its stored output and activation) fused.
pub struct InputGrad<'a> {
    pub dx: &'a Tensor<f32>,
    pub write: GradWrite,
    pub producer: Option<(&'a Tensor<f32>, Activation)>,
}

/// A layer of a network. Inputs and outputs are (rows, features) buffers; an image module reads
/// and writes them as NCHW images of the same size.
pub trait Module: Debug + Send + Sync {
    /// Its name in the network (`fc1`, `conv2`): parameters are named `<network>.<name>.<param>`.
    fn name(&self) -> &str;
    /// Features per row of its input.
    fn in_features(&self) -> usize;
    /// Features per row of its output.
    fn out_features(&self) -> usize;
    /// The activation applied to its output (fused into the forward pass).
    fn activation(&self) -> Activation;
    /// Its parameters, in the order the other methods take them.
    fn params(&self) -> Vec<ParamDecl>;
    /// Multiply-adds per row of a forward pass (for benchmarks and resource estimates).
    fn macs_per_row(&self) -> usize;

    /// `y = act(f(x; p))`.
    fn forward(
        &self,
        ctx: &GpuContext,
        p: &[&Tensor<f32>],
        x: &Tensor<f32>,
        y: &Tensor<f32>,
    ) -> Result<Program>;

    /// From `du` (the gradient before the activation) writes the parameter gradients `dp`
    /// (stored or accumulated per `dp_write`) and, if asked, the input gradient.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        ctx: &GpuContext,
        p: &[&Tensor<f32>],
        dp: &[&Tensor<f32>],
        dp_write: GradWrite,
        x: &Tensor<f32>,
        du: &Tensor<f32>,
        dx: Option<InputGrad<'_>>,
    ) -> Result<Program>;

    /// CPU twin of the forward pass before the activation: `u = f(x; p)` for `rows` rows, f64.
    fn cpu_forward(&self, p: &[&[f64]], x: &[f64], rows: usize) -> Vec<f64>;

    /// CPU twin of the backward pass: from `du` the parameter gradients and the input gradient
    /// (before the producer's activation derivative).
    fn cpu_backward(
        &self,
        p: &[&[f64]],
        x: &[f64],
        du: &[f64],
        rows: usize,
    ) -> (Vec<Vec<f64>>, Vec<f64>);
}

pub(crate) fn check_params(name: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::Shape {
            op: "module",
            detail: format!("{name}: {got} parameter tensors given, it has {want}"),
        });
    }
    Ok(())
}

/// A fully connected layer `y = act(x·W + b)`, W stored (in, out) (checkpoints hold PyTorch's
/// (out, in)). Initialised as PyTorch's `nn.Linear`: U(−1/√in, 1/√in).
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    pub name: String,
    pub inp: usize,
    pub out: usize,
    pub act: Activation,
}

impl Module for Linear {
    fn name(&self) -> &str {
        &self.name
    }
    fn in_features(&self) -> usize {
        self.inp
    }
    fn out_features(&self) -> usize {
        self.out
    }
    fn activation(&self) -> Activation {
        self.act
    }
    fn params(&self) -> Vec<ParamDecl> {
        let bound = 1.0 / (self.inp as f32).sqrt();
        vec![
            ParamDecl {
                name: "weight",
                shape: vec![self.inp, self.out],
                init: Init::Uniform(bound),
            },
            ParamDecl {
                name: "bias",
                shape: vec![self.out],
                init: Init::Uniform(bound),
            },
        ]
    }
    fn macs_per_row(&self) -> usize {
        self.inp.saturating_mul(self.out)
    }

    fn forward(
        &self,
        ctx: &GpuContext,
        p: &[&Tensor<f32>],
        x: &Tensor<f32>,
        y: &Tensor<f32>,
    ) -> Result<Program> {
        check_params(&self.name, p.len(), 2)?;
        let mut prog = Program::new();
        prog.push(gemm(
            ctx,
            &self.name,
            x,
            p[0],
            y,
            Trans::NN,
            Epilogue::BiasAct {
                bias: p[1],
                act: self.act,
            },
        )?);
        Ok(prog)
    }

    fn backward(
        &self,
        ctx: &GpuContext,
        p: &[&Tensor<f32>],
        dp: &[&Tensor<f32>],
        dp_write: GradWrite,
        x: &Tensor<f32>,
        du: &Tensor<f32>,
        dx: Option<InputGrad<'_>>,
    ) -> Result<Program> {
        check_params(&self.name, p.len(), 2)?;
        check_params(&self.name, dp.len(), 2)?;
        let acc = dp_write == GradWrite::Accumulate;
        let mut prog = Program::new();
        prog.push(gemm(
            ctx,
            &format!("d {}.weight", self.name),
            x,
            du,
            dp[0],
            Trans::TN,
            if acc {
                Epilogue::Accumulate
            } else {
                Epilogue::Store
            },
        )?);
        prog.push(col_sum(
            ctx,
            &format!("d {}.bias", self.name),
            du,
            dp[1],
            1.0,
            acc,
        )?);
        if let Some(g) = dx {
            let epi = match (g.write, g.producer) {
                (GradWrite::Store, None) => Epilogue::Store,
                (GradWrite::Accumulate, None) => Epilogue::Accumulate,
                (GradWrite::Store, Some((output, act))) => Epilogue::ActGrad { output, act },
                (GradWrite::Accumulate, Some(_)) => {
                    return Err(unsupported(
                        &self.name,
                        "an accumulated, activated input gradient",
                    ));
                }
            };
            prog.push(gemm(
                ctx,
                &format!("d {} input", self.name),
                du,
                p[0],
                g.dx,
                Trans::NT,
                epi,
            )?);
        }
        Ok(prog)
    }

    fn cpu_forward(&self, p: &[&[f64]], x: &[f64], rows: usize) -> Vec<f64> {
        let (w, b) = (p[0], p[1]);
        let mut u = vec![0.0; rows * self.out];
        for r in 0..rows {
            for j in 0..self.out {
                let mut s = b[j];
                for i in 0..self.inp {
                    s += x[r * self.inp + i] * w[i * self.out + j];
                }
                u[r * self.out + j] = s;
            }
        }
        u
    }

    fn cpu_backward(
        &self,
        p: &[&[f64]],
        x: &[f64],
        du: &[f64],
        rows: usize,
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let w = p[0];
        let (inp, out) = (self.inp, self.out);
        let mut dw = vec![0.0; inp * out];
        let mut db = vec![0.0; out];
        let mut dx = vec![0.0; rows * inp];
        for r in 0..rows {
            for j in 0..out {
                let g = du[r * out + j];
                db[j] += g;
                for i in 0..inp {
                    dw[i * out + j] += x[r * inp + i] * g;
                    dx[r * inp + i] += g * w[i * out + j];
                }
            }
        }
        (vec![dw, db], dx)
    }
}

fn unsupported(name: &str, what: &str) -> Error {
    Error::Config(format!("module {name}: {what} is not supported"))
}

/// Folds a convolution pass's scratch buffers into its program.
fn owned(cp: ConvProgram) -> Program {
    let (mut p, workspace) = cp.into_parts();
    for t in workspace {
        p.keep(t.buffer().clone());
    }
    p
}

/// A (rows, C·H·W) buffer seen as the NCHW images it holds.
fn as_image(t: &Tensor<f32>, c: usize, (h, w): (usize, usize)) -> Result<Tensor<f32>> {
    let rows = t.len() / (c * h * w).max(1);
    Tensor::view(t, t.label(), 0, &[rows, c, h, w])
}

/// Which convolution a [`Conv`] module is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// [`conv::Conv2d`]: weights (out, in, KH, KW)
    Forward(conv::Conv2d),
    /// [`conv::ConvTranspose2d`]: weights (in, out, KH, KW)
    Transposed(conv::ConvTranspose2d),
}

/// A convolution or transposed convolution with bias and fused activation, on images of a
/// fixed input size. Weights in PyTorch's layout; initialised as PyTorch's default, U(−1/√fan,
/// 1/√fan) with fan = in·KH·KW for `Conv2d` and out·KH·KW for `ConvTranspose2d`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub name: String,
    pub kind: ConvKind,
    /// Input (H, W).
    pub input: (usize, usize),
    /// Output (H, W).
    pub output: (usize, usize),
    pub act: Activation,
}

impl Conv {
    /// A convolution layer on `input`-sized images; errors when the geometry is impossible.
    pub fn new(name: &str, kind: ConvKind, input: (usize, usize), act: Activation) -> Result<Self> {
        let output = match &kind {
            ConvKind::Forward(c) => {
                c.validate()?;
                c.output_size(input)?
            }
            ConvKind::Transposed(c) => {
                c.validate()?;
                c.output_size(input)?
            }
        };
        Ok(Conv {
            name: name.to_string(),
            kind,
            input,
            output,
            act,
        })
    }
    fn channels(&self) -> (usize, usize) {
        match &self.kind {
            ConvKind::Forward(c) => (c.in_channels, c.out_channels),
            ConvKind::Transposed(c) => (c.in_channels, c.out_channels),
        }
    }
    fn weight_shape(&self) -> [usize; 4] {
        match &self.kind {
            ConvKind::Forward(c) => c.weight_shape(),
            ConvKind::Transposed(c) => c.weight_shape(),
        }
    }
    fn taps(&self) -> usize {
        let [_, _, kh, kw] = self.weight_shape();
        kh * kw
    }
}

impl Module for Conv {
    fn name(&self) -> &str {
        &self.name
    }
    fn in_features(&self) -> usize {
        self.channels().0 * self.input.0 * self.input.1
    }
    fn out_features(&self) -> usize {
        self.channels().1 * self.output.0 * self.output.1
    }
    fn activation(&self) -> Activation {
        self.act
    }
    fn params(&self) -> Vec<ParamDecl> {
        let (cin, cout) = self.channels();
        let fan = match self.kind {
            ConvKind::Forward(_) => cin,
            ConvKind::Transposed(_) => cout,
        } * self.taps();
        let bound = 1.0 / (fan as f32).sqrt();
        vec![
            ParamDecl {
                name: "weight",
                shape: self.weight_shape().to_vec(),
                init: Init::Uniform(bound),
            },
            ParamDecl {
                name: "bias",
                shape: vec![cout],
                init: Init::Uniform(bound),
            },
        ]
    }
    fn macs_per_row(&self) -> usize {
        let (cin, cout) = self.channels();
        let pixels = match self.kind {
            ConvKind::Forward(_) => self.output.0 * self.output.1,
            ConvKind::Transposed(_) => self.input.0 * self.input.1,
        };
        pixels
            .saturating_mul(cin)
            .saturating_mul(cout)
            .saturating_mul(self.taps())
    }

    fn forward(
        &self,
        ctx: &GpuContext,
        p: &[&Tensor<f32>],
        x: &Tensor<f32>,
        y: &Tensor<f32>,
    ) -> Result<Program> {
        check_params(&self.name, p.len(), 2)?;
        let (cin, cout) = self.channels();
        let xi = as_image(x, cin, self.input)?;
        let yi = as_image(y, cout, self.output)?;
        Ok(owned(match &self.kind {
            ConvKind::Forward(c) => {
                conv::conv2d_forward(ctx, &self.name, c, &xi, p[0], p[1], &yi, self.act)?
            }
            ConvKind::Transposed(c) => {
                conv::conv_transpose2d_forward(ctx, &self.name, c, &xi, p[0], p[1], &yi, self.act)?
            }
        }))
    }

    fn backward(
        &self,
        ctx: &GpuContext,
        p: &[&Tensor<f32>],
        dp: &[&Tensor<f32>],
        dp_write: GradWrite,
        x: &Tensor<f32>,
        du: &Tensor<f32>,
        dx: Option<InputGrad<'_>>,
    ) -> Result<Program> {
        check_params(&self.name, p.len(), 2)?;
        check_params(&self.name, dp.len(), 2)?;
        let (cin, cout) = self.channels();
        let acc = dp_write == GradWrite::Accumulate;
        let xi = as_image(x, cin, self.input)?;
        let dui = as_image(du, cout, self.output)?;
        let mut prog = Program::new();
        let lw = format!("d {}.weight", self.name);
        prog.extend(owned(match &self.kind {
            ConvKind::Forward(c) => conv::conv2d_weight_grad(ctx, &lw, c, &xi, &dui, dp[0], acc)?,
            ConvKind::Transposed(c) => {
                conv::conv_transpose2d_weight_grad(ctx, &lw, c, &xi, &dui, dp[0], acc)?
            }
        }));
        prog.extend(owned(conv::conv_bias_grad(
            ctx,
            &format!("d {}.bias", self.name),
            &dui,
            dp[1],
            acc,
        )?));
        if let Some(g) = dx {
            if g.write == GradWrite::Accumulate {
                return Err(unsupported(&self.name, "an accumulated input gradient"));
            }
            let dxi = as_image(g.dx, cin, self.input)?;
            let prod_img;
            let producer = match g.producer {
                Some((t, act)) => {
                    prod_img = as_image(t, cin, self.input)?;
                    Some((&prod_img, act))
                }
                None => None,
            };
            let label = format!("d {} input", self.name);
            prog.extend(owned(match &self.kind {
                ConvKind::Forward(c) => {
                    conv::conv2d_input_grad(ctx, &label, c, &dui, p[0], &dxi, producer)?
                }
                ConvKind::Transposed(c) => {
                    conv::conv_transpose2d_input_grad(ctx, &label, c, &dui, p[0], &dxi, producer)?
                }
            }));
        }
        Ok(prog)
    }

    fn cpu_forward(&self, p: &[&[f64]], x: &[f64], rows: usize) -> Vec<f64> {
        let id = Activation::Identity;
        match &self.kind {
            ConvKind::Forward(c) => {
                cpu::conv::conv2d_forward(c, rows, self.input, x, p[0], p[1], id)
            }
            ConvKind::Transposed(c) => {
                cpu::conv::conv_transpose2d_forward(c, rows, self.input, x, p[0], p[1], id)
            }
        }
    }

    fn cpu_backward(
        &self,
        p: &[&[f64]],
        x: &[f64],
        du: &[f64],
        rows: usize,
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let cout = self.channels().1;
        let plane = self.output.0 * self.output.1;
        let db = cpu::conv::conv_bias_grad(du, rows, cout, plane, None);
        let (dw, dx) = match &self.kind {
            ConvKind::Forward(c) => (
                cpu::conv::conv2d_weight_grad(c, rows, self.input, x, du, None),
                cpu::conv::conv2d_input_grad(c, rows, self.input, du, p[0], None),
            ),
            ConvKind::Transposed(c) => (
                cpu::conv::conv_transpose2d_weight_grad(c, rows, self.input, x, du, None),
                cpu::conv::conv_transpose2d_input_grad(c, rows, self.input, du, p[0], None),
            ),
        };
        (vec![dw, db], dx)
    }
}
