pub mod model;
pub mod os;

/// Proptest case count: `PROPTEST_CASES` if set, else `default`.
#[allow(dead_code)]
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
