//! Classify: one slice in, the model's COVID probability out.
//!
//! Why a module of its own: it is the only place that knows about the model — its card, its
//! integrity, the tract runtime and the input representation. `select` and `decide` stay free
//! of it, and the CLI, the service and the self-test all classify through [`Classifier`], so
//! there is exactly one preprocessing path.
//!
//! Start-up does the expensive work once: read the model file, check its SHA-256 against the
//! card (a mismatch is refused before tract parses a byte), parse, fix the input shape to one
//! slice, optimise. Each slice then reuses the same plan.

pub mod card;
pub mod fastquant;
pub mod kernel_pick;
pub mod madd16;
pub mod phantom;
pub mod preprocess;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

pub use card::{find_card, ModelCard, ModelIdentity};
pub use preprocess::Preprocessing;

/// What the model says about one slice: P(COVID) (calibrated, see [`calibrated`]) and, where
/// the model has a second output, its evidence map.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceScore {
    pub p_covid: f32,
    pub evidence: Option<EvidenceMap>,
}

/// A model's evidence output: `rows x cols` values over the model's input plane, row-major, from
/// the same int8 run as the probabilities; positive pushes towards COVID. The values sum, with a
/// constant of the model, to the logit difference `ln p_covid - ln p_normal` (before
/// temperature): for the paper's FPN network (`training/evidence.py`, 16 x 16 at 256 px) each
/// cell is its share of the five flatten -> dense heads, up to the int8 heads' rounding; for a
/// pooled head (`training/models.py`, `with_evidence`) a class-activation map.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceMap {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

/// Largest evidence grid accepted (a model's feature map: 16 x 16 for the shipped model).
const MAX_EVIDENCE_SIDE: usize = 64;

/// Why a model could not be loaded or a slice not classified.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("model card {path}: {reason}")]
    Card { path: PathBuf, reason: String },
    #[error("model file {path}: cannot read: {source}")]
    ModelIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file {path}: SHA-256 {actual} does not match the card's {expected}; refusing to run a model that is not the one the card describes")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model file {path}: tract cannot load it: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("model output is not a probability pair: {0}")]
    BadOutput(String),
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },
}

/// Runtime choices that do not change results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Threads for tract's matrix products (1 = single-threaded).
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
        }
    }
}

/// A loaded, verified, optimised model and its card.
///
/// Two ways to use several cores, chosen by measurement (`bench/compare_infer.sh`,
/// `examples/tract_probe.rs`): tract's multithreaded matrix products help the fp32 model but
/// barely the int8 one (quantize / im2col steps between the products are single-threaded), so
/// [`Classifier::p_covid_planes`] runs whole slices in parallel, one single-threaded plan run
/// per worker, sharing the one optimised plan. A lone slice uses the multithreaded executor.
/// [`Classifier::plane_from_stored`] detached from the classifier (see [`Classifier::plane_maker`]).
#[derive(Debug, Clone)]
pub struct PlaneMaker {
    pre: Preprocessing,
    size: usize,
    scratch: Vec<f32>,
}

impl PlaneMaker {
    /// The model input plane of a stored slice; the same values as `plane_from_stored`.
    pub fn plane(&mut self, pixels: &[u16], width: usize, height: usize) -> Vec<f32> {
        self.pre.window_stored(pixels, &mut self.scratch);
        preprocess::box_resize(&self.scratch, height, width, self.size, self.size)
    }
}

/// A loaded model. Cloning shares the optimised plan (an `Arc`) and the thread pool: cheap.
#[derive(Clone)]
pub struct Classifier {
    card: ModelCard,
    plan: Arc<TypedSimplePlan>,
    executor: Executor,
    threads: usize,
    plane: Vec<f32>,
}

/// What the running CPU gives tract's kernels, for the self-test report: on aarch64, NEON always,
/// plus SDOT (FEAT_DotProd: Raspberry Pi 5, Orin; not the Pi 4's Cortex-A72, which gets the
/// SMLAL int8 kernel) and FP16, detected at run time by tract-linalg; on x86_64, AVX2/FMA and
/// AVX-512 VNNI.
pub fn cpu_kernels() -> String {
    #[cfg(target_arch = "aarch64")]
    {
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "aarch64 NEON; int8 dot product (SDOT) {}; fp16 {}",
            yes(tract_linalg::arm64::has_dotprod()),
            yes(tract_linalg::has_fp16())
        )
    }
    #[cfg(target_arch = "x86_64")]
    {
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "x86_64; avx2+fma {}; avx512-vnni {}",
            yes(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")),
            yes(std::is_x86_feature_detected!("avx512vnni"))
        )
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
    {
        format!("{} (generic kernels)", std::env::consts::ARCH)
    }
}

/// The matrix-product kernels tract chose for an optimised model on this CPU, each with the
/// number of products using it (e.g. `avx512vnni_mmm_i32_16x16 16x16: 56`). Unlike
/// [`cpu_kernels`] (what the CPU offers), this is what runs: a kernel tract-linalg did not
/// compile in (its build-time assembler probe failed) or an environment knob turned off shows
/// here. The self-test reports it; `examples/tract_probe` prints it.
pub fn matmul_kernels(model: &TypedModel) -> Vec<String> {
    use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for node in model.nodes() {
        if let Some(op) = node.op_as::<OptMatMul>() {
            let names: Vec<String> = op
                .mmm
                .iter()
                .map(|k| format!("{} {}x{}", k.name(), k.mr(), k.nr()))
                .collect();
            *counts.entry(names.join(" | ")).or_default() += 1;
        }
    }
    counts.into_iter().map(|(k, n)| format!("{k}: {n}")).collect()
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Classifier {
    /// Load the card at `card_path` (or the single card in that folder) and its model.
    pub fn load(card_path: &Path, options: Options) -> Result<Self, ClassifyError> {
        let card = ModelCard::load(&find_card(card_path)?)?;
        let path = card.model_path();
        // Hash exactly the bytes tract will parse: no window between check and use.
        let bytes = std::fs::read(&path).map_err(|source| ClassifyError::ModelIo {
            path: path.clone(),
            source,
        })?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&card.model.sha256) {
            return Err(ClassifyError::HashMismatch {
                path,
                expected: card.model.sha256.clone(),
                actual,
            });
        }
        let plan = optimise(&bytes, card.input.size).map_err(|e| ClassifyError::Model {
            path: path.clone(),
            reason: format!("{e:#}"),
        })?;
        let executor = if options.threads > 1 {
            Executor::multithread(options.threads)
        } else {
            Executor::SingleThread
        };
        log::info!(
            "model {} {} loaded from {} ({} threads)",
            card.model.name,
            card.model.version,
            path.display(),
            options.threads
        );
        Ok(Self {
            card,
            plan,
            executor,
            threads: options.threads.max(1),
            plane: Vec::new(),
        })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    pub fn identity(&self) -> ModelIdentity {
        self.card.identity()
    }

    /// The matrix-product kernels tract chose for this model's plan on this CPU (see
    /// [`matmul_kernels`]).
    pub fn matmul_kernels(&self) -> Vec<String> {
        matmul_kernels(self.plan.model())
    }

    /// Side of the square input plane.
    pub fn input_size(&self) -> usize {
        self.card.input.size
    }

    /// The model input plane of a 16-bit slice (stored values), per the card.
    pub fn plane_from_stored(&mut self, pixels: &[u16], width: usize, height: usize) -> Vec<f32> {
        self.card.preprocessing.window_stored(pixels, &mut self.plane);
        let n = self.input_size();
        preprocess::box_resize(&self.plane, height, width, n, n)
    }

    /// What turns stored slices into this model's input planes, owned, so another thread
    /// can prepare planes while this classifier runs the network.
    pub fn plane_maker(&self) -> PlaneMaker {
        PlaneMaker {
            pre: self.card.preprocessing.clone(),
            size: self.input_size(),
            scratch: Vec::new(),
        }
    }

    /// The model input plane of an 8-bit image already in the card's 8-bit representation.
    pub fn plane_from_8bit(&mut self, gray: &[u8], width: usize, height: usize) -> Vec<f32> {
        preprocess::window_8bit(gray, &mut self.plane);
        let n = self.input_size();
        preprocess::box_resize(&self.plane, height, width, n, n)
    }

    /// P(COVID) of one 16-bit slice.
    pub fn p_covid_stored(&mut self, pixels: &[u16], width: usize, height: usize) -> Result<f32, ClassifyError> {
        let plane = self.plane_from_stored(pixels, width, height);
        self.p_covid_plane(plane)
    }

    /// How many slices [`Classifier::p_covid_planes`] runs at once.
    pub fn parallel_slices(&self) -> usize {
        self.threads
    }

    /// P(COVID) of one model input plane (`input_size²` values, row-major).
    pub fn p_covid_plane(&self, plane: Vec<f32>) -> Result<f32, ClassifyError> {
        Ok(self.run_plane(plane, self.executor.clone())?.p_covid)
    }

    /// P(COVID) of several planes, in order, spread over the classifier's threads.
    pub fn p_covid_planes(&self, planes: Vec<Vec<f32>>) -> Result<Vec<f32>, ClassifyError> {
        Ok(self.score_planes(planes)?.into_iter().map(|s| s.p_covid).collect())
    }

    /// [`SliceScore`]s of several planes, in order, spread over the classifier's threads.
    pub fn score_planes(&self, planes: Vec<Vec<f32>>) -> Result<Vec<SliceScore>, ClassifyError> {
        if self.threads <= 1 || planes.len() <= 1 {
            return planes
                .into_iter()
                .map(|p| self.run_plane(p, self.executor.clone()))
                .collect();
        }
        let workers = self.threads.min(planes.len());
        let mut shares: Vec<Vec<(usize, Vec<f32>)>> = (0..workers).map(|_| Vec::new()).collect();
        for (i, p) in planes.into_iter().enumerate() {
            shares[i % workers].push((i, p));
        }
        let results: Vec<Result<Vec<(usize, SliceScore)>, ClassifyError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    scope.spawn(move || {
                        share
                            .into_iter()
                            .map(|(i, p)| self.run_plane(p, Executor::SingleThread).map(|v| (i, v)))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(ClassifyError::Inference("a worker thread panicked".into())))
                })
                .collect()
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }

    fn run_plane(&self, plane: Vec<f32>, executor: Executor) -> Result<SliceScore, ClassifyError> {
        let n = self.input_size();
        if plane.len() != n * n {
            return Err(ClassifyError::Inference(format!(
                "plane has {} values, the model takes {}",
                plane.len(),
                n * n
            )));
        }
        let x = Tensor::from_shape(&[1, 1, n, n], &plane).map_err(|e| ClassifyError::Inference(format!("{e:#}")))?;
        let out = multithread_tract_scope(executor, || self.plan.run(tvec!(x.into_tvalue())))
            .map_err(|e| ClassifyError::Inference(format!("{e:#}")))?;
        let view = out
            .first()
            .ok_or_else(|| ClassifyError::BadOutput("no output".into()))?
            .to_plain_array_view::<f32>()
            .map_err(|e| ClassifyError::BadOutput(format!("{e:#}")))?;
        let probs: Vec<f32> = view.iter().copied().collect();
        check_probabilities(&probs)?;
        let o = &self.card.output;
        let evidence = match (&o.evidence, out.get(1)) {
            (None, _) => None,
            (Some(_), Some(t)) => Some(evidence_map(t)?),
            (Some(name), None) => {
                return Err(ClassifyError::BadOutput(format!(
                    "the card names an evidence output {name:?}; the model has none"
                )))
            }
        };
        Ok(SliceScore {
            p_covid: calibrated(probs[o.covid_index], probs[1 - o.covid_index], o.temperature),
            evidence,
        })
    }

    /// The card's slice threshold: COVID iff `p >= threshold` (`p` calibrated, see
    /// [`calibrated`]).
    pub fn is_covid(&self, p_covid: f32) -> bool {
        p_covid >= self.card.output.threshold
    }
}

/// P(COVID) after the card's temperature scaling: the logit difference `ln p_c - ln p_n`
/// divided by `temperature`, back through the logistic function (the model's own P without a
/// temperature). Computed in f64 from both probabilities, so a P of 1 - 1e-7 keeps its logit.
pub fn calibrated(p_covid: f32, p_normal: f32, temperature: Option<f32>) -> f32 {
    let Some(t) = temperature else { return p_covid };
    let (pc, pn) = (f64::from(p_covid), f64::from(p_normal));
    if pc <= 0.0 || pn <= 0.0 {
        return p_covid; // saturated: 0 or 1 stays 0 or 1
    }
    let z = (pc.ln() - pn.ln()) / f64::from(t);
    (1.0 / (1.0 + (-z).exp())) as f32
}

/// The second output as an evidence map: `1 x rows x cols`, finite, at most
/// [`MAX_EVIDENCE_SIDE`] a side; anything else is a broken model, not a map.
fn evidence_map(t: &TValue) -> Result<EvidenceMap, ClassifyError> {
    let view = t
        .to_plain_array_view::<f32>()
        .map_err(|e| ClassifyError::BadOutput(format!("evidence: {e:#}")))?;
    let shape = view.shape().to_vec();
    let ok = shape.len() == 3
        && shape[0] == 1
        && (1..=MAX_EVIDENCE_SIDE).contains(&shape[1])
        && (1..=MAX_EVIDENCE_SIDE).contains(&shape[2]);
    if !ok {
        return Err(ClassifyError::BadOutput(format!(
            "evidence has shape {shape:?}, expected 1 x rows x cols (at most {MAX_EVIDENCE_SIDE})"
        )));
    }
    let values: Vec<f32> = view.iter().copied().collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(ClassifyError::BadOutput("evidence holds a non-finite value".into()));
    }
    Ok(EvidenceMap {
        rows: shape[1],
        cols: shape[2],
        values,
    })
}

/// A softmax pair: two finite values in [0, 1] summing to 1 (within rounding). Anything else
/// means a broken model or runtime, and must not become a verdict.
fn check_probabilities(p: &[f32]) -> Result<(), ClassifyError> {
    if p.len() != 2 {
        return Err(ClassifyError::BadOutput(format!("expected 2 values, got {}", p.len())));
    }
    let sum: f32 = p.iter().sum();
    if p.iter().any(|v| !v.is_finite() || *v < 0.0 || *v > 1.0) || (sum - 1.0).abs() > 1e-3 {
        return Err(ClassifyError::BadOutput(format!("{p:?} (sum {sum})")));
    }
    Ok(())
}

fn optimise(bytes: &[u8], size: usize) -> TractResult<Arc<TypedSimplePlan>> {
    kernel_pick::apply();
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
    // The export declares a symbolic batch; fix it to one slice so tract can plan every shape.
    let batch = model.sym("batch");
    model.set_input_fact(
        0,
        f32::fact([batch.to_dim(), 1.to_dim(), size.to_dim(), size.to_dim()]).into(),
    )?;
    let one = std::collections::HashMap::from([(batch, 1.to_dim())]);
    let mut model = model.into_typed()?.set_symbols(&one)?.into_optimized()?;
    fastquant::install(&mut model)?;
    model.into_runnable()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_scales_the_logit_and_never_crosses_one_half() {
        assert_eq!(calibrated(0.8, 0.2, None), 0.8);
        // logit ln 4; T = 2 halves it: P = 1 / (1 + 1/2) = 2/3.
        assert!((calibrated(0.8, 0.2, Some(2.0)) - 2.0 / 3.0).abs() < 1e-6);
        assert!((calibrated(0.8, 0.2, Some(1.0)) - 0.8).abs() < 1e-6);
        // T < 1 sharpens.
        assert!(calibrated(0.8, 0.2, Some(0.5)) > 0.94);
        for p in [0.01f32, 0.3, 0.49, 0.5, 0.51, 0.9, 0.999_99] {
            for t in [0.3f32, 1.7, 5.0] {
                let c = calibrated(p, 1.0 - p, Some(t));
                assert_eq!(c >= 0.5, p >= 0.5, "p {p} T {t} -> {c}");
                assert!(c.is_finite() && (0.0..=1.0).contains(&c));
            }
        }
        assert_eq!(calibrated(1.0, 0.0, Some(2.0)), 1.0, "saturated stays saturated");
        assert_eq!(calibrated(0.0, 1.0, Some(2.0)), 0.0);
    }

    #[test]
    fn probabilities_must_be_a_finite_pair_summing_to_one() {
        assert!(check_probabilities(&[0.25, 0.75]).is_ok());
        assert!(
            check_probabilities(&[1.0, 1.0]).is_err(),
            "quantized-softmax failure mode"
        );
        assert!(check_probabilities(&[f32::NAN, 1.0]).is_err());
        assert!(check_probabilities(&[0.5]).is_err());
        assert!(check_probabilities(&[-0.1, 1.1]).is_err());
    }

    #[test]
    fn sha256_hex_matches_a_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
