//! Disentanglement scores of a model trained on the built-in sprites, whose generative factors
//! are known: the sampled metrics (BetaVAE, FactorVAE) and the ones computed from
//! (representation, factor) pairs (MIG, DCI, SAP), with the representation the posterior means
//! μ of sprites rendered for the drawn factors; and a minibatch estimate of the total
//! correlation of q(z) on a data set.

use serde::Serialize;

use crate::data::{Dataset, sprites};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::metrics::{
    BetaVaeConfig, FactorVaeConfig, GroundTruthConfig, UniformFactors, beta_vae_score,
    evaluate_ground_truth, factor_vae_score,
};
use crate::model::Vae;
use crate::ops::tc::Estimator;
use crate::viz::Inference;

/// Sample sizes of the metrics.
#[derive(Clone, Debug)]
pub struct ScoreConfig {
    pub beta_vae: BetaVaeConfig,
    pub factor_vae: FactorVaeConfig,
    pub arrays: GroundTruthConfig,
}

impl ScoreConfig {
    /// The reference sample sizes (10,000 training and 5,000 evaluation points for every
    /// metric, batches of 64, 10,000 points for FactorVAE's variances).
    pub fn reference(seed: u64) -> Self {
        ScoreConfig {
            beta_vae: BetaVaeConfig {
                seed,
                ..Default::default()
            },
            factor_vae: FactorVaeConfig {
                seed,
                ..Default::default()
            },
            arrays: GroundTruthConfig {
                seed,
                ..Default::default()
            },
        }
    }

    /// Small samples for minutes on a CPU adapter (noisier figures): BetaVAE from 300 + 150
    /// points of 32 pairs, FactorVAE from 300 + 150 votes of 64 (variances from 2,000),
    /// MIG/DCI/SAP from 3,000 + 1,500 points.
    pub fn quick(seed: u64) -> Self {
        let r = Self::reference(seed);
        ScoreConfig {
            beta_vae: BetaVaeConfig {
                batch_size: 32,
                num_train: 300,
                num_eval: 150,
                ..r.beta_vae
            },
            factor_vae: FactorVaeConfig {
                num_train: 300,
                num_eval: 150,
                num_variance_estimate: 2000,
                ..r.factor_vae
            },
            arrays: GroundTruthConfig {
                num_train: 3000,
                num_test: 1500,
                ..r.arrays
            },
        }
    }
}

/// The scores of one model.
#[derive(Clone, Debug, Serialize)]
pub struct Scores {
    pub beta_vae: f64,
    pub factor_vae: f64,
    pub mig: f64,
    pub dci_disentanglement: f64,
    pub dci_completeness: f64,
    pub dci_informativeness: f64,
    pub sap: f64,
}

/// Every metric of `vae` (trained on 64×64 sprites) on freshly drawn and rendered sprites.
pub fn score_sprites_model(ctx: &GpuContext, vae: &Vae, cfg: &ScoreConfig) -> Result<Scores> {
    let side = sprites::SIZE;
    if (vae.cfg.channels, vae.cfg.height, vae.cfg.width) != (1, side, side) {
        return Err(Error::Config(format!(
            "the metrics render sprites of 1x{side}x{side}; the model takes {}x{}x{}",
            vae.cfg.channels, vae.cfg.height, vae.cfg.width
        )));
    }
    let truth = UniformFactors::new(sprites::FACTOR_SIZES.to_vec())?;
    let inf = Inference::new(ctx, vae, 256, 0)?;
    let d = vae.cfg.latent;
    let mut encode = |tuples: &[Vec<usize>]| -> Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(tuples.len());
        for chunk in tuples.chunks(inf.batch()) {
            let mut images = Vec::with_capacity(chunk.len() * side * side);
            for t in chunk {
                let &[s, sc, o, x, y] = t.as_slice() else {
                    return Err(Error::Config(format!(
                        "a sprites factor tuple has {} values, not 5",
                        t.len()
                    )));
                };
                images.extend(
                    sprites::render(s, sc, o, x, y)
                        .iter()
                        .map(|&v| v as f32 / 255.0),
                );
            }
            let (mu, _) = inf.encode(ctx, vae, &images)?;
            out.extend(mu.chunks(d).map(|r| r.iter().map(|&v| v as f64).collect()));
        }
        Ok(out)
    };
    let bv = beta_vae_score(&truth, &mut encode, &cfg.beta_vae)?;
    let fv = factor_vae_score(&truth, &mut encode, &cfg.factor_vae)?;
    let arr = evaluate_ground_truth(&truth, &mut encode, &cfg.arrays)?;
    Ok(Scores {
        beta_vae: bv.eval_accuracy,
        factor_vae: fv.eval_accuracy,
        mig: arr.mig.score,
        dci_disentanglement: arr.dci.disentanglement,
        dci_completeness: arr.dci.completeness,
        dci_informativeness: arr.dci.informativeness_test,
        sap: arr.sap.score,
    })
}

/// The total correlation of q(z) estimated on `set` as β-TCVAE's objective does (one draw z
/// per image, the minibatch estimator over batches of `batch` images, N = `dataset_size`):
/// the mean of the per-image estimates (f64, on the host).
pub fn total_correlation(
    ctx: &GpuContext,
    vae: &Vae,
    set: &Dataset,
    batch: usize,
    dataset_size: usize,
    estimator: Estimator,
    seed: u64,
) -> Result<f64> {
    if vae.cfg.posterior != crate::model::PosteriorKind::Diagonal {
        return Err(Error::Config(format!(
            "the total correlation estimate needs a diagonal posterior; this model's is {}",
            vae.cfg.posterior.name()
        )));
    }
    if batch < 2 || set.n < 2 {
        return Err(Error::Config(format!(
            "the total correlation needs batches of at least 2 of at least 2 images (batch \
             {batch}, {} images)",
            set.n
        )));
    }
    let d = vae.cfg.latent;
    let inf = Inference::new(ctx, vae, batch, seed)?;
    let (mut sum, mut count) = (0.0, 0usize);
    for (step, start) in (0..set.n).step_by(batch).enumerate() {
        let end = (start + batch).min(set.n);
        if end - start < 2 {
            break;
        }
        let images: Vec<f32> = (start..end).flat_map(|i| set.to_f32(i)).collect();
        let (mu, sigma, z) = inf.encode_draw(ctx, vae, &images, step as u32)?;
        let rows = end - start;
        let mut params = Vec::with_capacity(rows * 2 * d);
        for r in 0..rows {
            params.extend(mu[r * d..(r + 1) * d].iter().map(|&v| v as f64));
            params.extend(
                sigma[r * d..(r + 1) * d]
                    .iter()
                    .map(|&s| 2.0 * (s as f64).max(1e-30).ln()),
            );
        }
        let zs: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let w = vec![1.0 / rows as f64; rows];
        let t = crate::cpu::tc::tc_forward(&params, &zs, &w, d, dataset_size, estimator);
        sum += t.tc.iter().sum::<f64>();
        count += rows;
    }
    Ok(sum / count.max(1) as f64)
}
