//! Classification: model card, integrity check, tract plan and preprocessing.
//!
//! Filled in by the model-chain and patient-verdict issues; empty until then so that the
//! module layout already mirrors the pipeline.
