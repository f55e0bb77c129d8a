//! The stock policies, embedded in the binary from the top-level `policies/`.
//!
//! A fleet may shadow a stock policy with a file of the same name; see
//! `policy` for resolution.

/// Name and YAML text of every stock policy.
pub const STOCK_POLICIES: &[(&str, &str)] = &[
    ("base", include_str!("../../policies/base.yaml")),
    (
        "conservative",
        include_str!("../../policies/conservative.yaml"),
    ),
    ("fast-track", include_str!("../../policies/fast-track.yaml")),
    (
        "privacy-strict",
        include_str!("../../policies/privacy-strict.yaml"),
    ),
    (
        "security-only",
        include_str!("../../policies/security-only.yaml"),
    ),
];

/// The file name shown in messages for a stock policy.
pub fn stock_file(name: &str) -> String {
    format!("policies/{name}.yaml")
}
