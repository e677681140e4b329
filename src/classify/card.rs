//! The model card (`models/<name>.toml`): the contract between the model chain (`training/`,
//! which writes it) and the appliance (which refuses to run without it).
//!
//! Only what the appliance acts on is typed here; the card's descriptive sections (training,
//! evaluation, licences) are kept as they are and shown by `selftest`. Every typed section
//! refuses keys it does not know: a misspelt `temprature` must be an error, not a card that
//! silently runs without its calibration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::preprocess::Preprocessing;
use super::ClassifyError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub notice: String,
    pub model: ModelSection,
    pub input: InputSection,
    pub preprocessing: Preprocessing,
    pub output: OutputSection,
    pub decision: DecisionSection,
    #[serde(default)]
    pub evaluation: toml::Table,
    #[serde(default)]
    pub training: toml::Table,
    #[serde(default)]
    pub licences: toml::Table,
    /// Folder the card was read from; model files are relative to it.
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: String,
    pub version: String,
    /// The network (`resnet50v2_fpn`, `efficientnet_lite0`, ...): descriptive.
    #[serde(default)]
    pub arch: Option<String>,
    /// How the int8 file was made: descriptive.
    #[serde(default)]
    pub quantization: Option<String>,
    pub format: String,
    pub precision: String,
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub reference_fp32_file: Option<String>,
    #[serde(default)]
    pub reference_fp32_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    pub name: String,
    pub layout: String,
    pub size: usize,
    pub channels: usize,
    pub resize: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub name: String,
    pub classes: Vec<String>,
    pub covid_index: usize,
    /// A slice is COVID iff `p_covid >= threshold`.
    pub threshold: f32,
    /// Temperature scaling of the model's logit difference, fitted by training on held-out
    /// slices (`training/evaluate.py`): the P(COVID) every result shows is
    /// `1 / (1 + exp(-(ln p_covid - ln p_normal) / temperature))`. Absent: the model's own P.
    /// A positive temperature never moves a P across 0.5, so with the 0.5 threshold it
    /// changes what P says, never which slices are COVID.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Name of the model's second output, its evidence map (see `classify::EvidenceMap`), when
    /// it has one: the appliance then reads it from every run and places it on the slice.
    #[serde(default)]
    pub evidence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSection {
    /// The paper's patient rule: COVID iff at least this fraction of selected slices is COVID.
    pub patient_covid_fraction: f64,
    /// The rule in words: descriptive.
    #[serde(default)]
    pub rule: Option<String>,
}

/// The identity every result carries (`"model": {...}` in the JSON contracts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

impl ModelCard {
    /// Read and validate a card. Every inconsistency is a [`ClassifyError::Card`] naming the file.
    pub fn load(path: &Path) -> Result<Self, ClassifyError> {
        let bad = |reason: String| ClassifyError::Card {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        Self::parse(&text, path)
    }

    /// Parse and validate a card's text; `path` is where it was read from (the model file is
    /// looked for beside it, and errors name it). The fuzz targets' entry point.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ClassifyError> {
        let bad = |reason: String| ClassifyError::Card {
            path: path.to_path_buf(),
            reason,
        };
        let mut card: ModelCard = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        card.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        card.validate().map_err(bad)?;
        Ok(card)
    }

    fn validate(&self) -> Result<(), String> {
        if self.notice != crate::NOTICE {
            return Err(format!("notice must be {:?}, found {:?}", crate::NOTICE, self.notice));
        }
        if self.model.format != "onnx" {
            return Err(format!(
                "model.format {:?} is not supported (onnx only)",
                self.model.format
            ));
        }
        if self.model.sha256.len() != 64 || !self.model.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("model.sha256 must be 64 hexadecimal digits".into());
        }
        if self.model.file.contains('/') || self.model.file.contains('\\') || self.model.file.starts_with('.') {
            return Err(format!(
                "model.file {:?} must be a plain file name beside the card",
                self.model.file
            ));
        }
        if !(16..=1024).contains(&self.input.size) || self.input.channels != 1 || self.input.layout != "NCHW" {
            return Err(format!(
                "input must be NCHW, 1 channel, 16..=1024 pixels; found {} {}ch {}px",
                self.input.layout, self.input.channels, self.input.size
            ));
        }
        if self.input.resize != "box" {
            return Err(format!(
                "input.resize {:?} is not supported (box only)",
                self.input.resize
            ));
        }
        self.preprocessing.validate()?;
        let o = &self.output;
        if o.classes.get(o.covid_index).map(String::as_str) != Some("covid") || o.classes.len() != 2 {
            return Err(format!(
                "output.classes {:?} must be two classes with \"covid\" at covid_index {}",
                o.classes, o.covid_index
            ));
        }
        if !(o.threshold > 0.0 && o.threshold < 1.0) {
            return Err(format!("output.threshold {} must lie in (0, 1)", o.threshold));
        }
        if let Some(t) = o.temperature {
            if !(t.is_finite() && (0.05..=20.0).contains(&t)) {
                return Err(format!("output.temperature {t} must lie in [0.05, 20]"));
            }
        }
        let f = self.decision.patient_covid_fraction;
        if !(f > 0.0 && f <= 1.0) {
            return Err(format!("decision.patient_covid_fraction {f} must lie in (0, 1]"));
        }
        Ok(())
    }

    /// Path of the model file the card describes.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.model.file)
    }

    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            name: self.model.name.clone(),
            version: self.model.version.clone(),
            sha256: self.model.sha256.clone(),
        }
    }

    /// Index of the non-COVID class.
    pub fn normal_index(&self) -> usize {
        1 - self.output.covid_index
    }
}

/// Find the card in a models folder: the single `*.toml` there (a folder with several cards
/// must be given the card path itself).
pub fn find_card(models: &Path) -> Result<PathBuf, ClassifyError> {
    if models.is_file() {
        return Ok(models.to_path_buf());
    }
    let bad = |reason: String| ClassifyError::Card {
        path: models.to_path_buf(),
        reason,
    };
    let mut cards: Vec<PathBuf> = std::fs::read_dir(models)
        .map_err(|e| bad(format!("cannot read models folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    cards.sort();
    match cards.len() {
        1 => Ok(cards.pop().unwrap_or_default()),
        0 => Err(bad("no model card (*.toml) in this folder".into())),
        n => Err(bad(format!("{n} model cards in this folder; name one with --model"))),
    }
}
