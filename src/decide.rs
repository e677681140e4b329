//! The patient rule (COVID iff at least 10% of the selected slices are classified COVID).
//!
//! Pure functions only; filled in by the patient-verdict issue.
