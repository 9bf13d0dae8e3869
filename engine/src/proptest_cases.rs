//! How many cases a property test runs: `PROPTEST_CASES` when it is set (CI, a mutation run
//! or a person chasing a rare failure raises or lowers it), else the test's own default (a
//! test whose cases are costly picks a smaller one than proptest's 256).

/// `PROPTEST_CASES` if it is set to a number, else `default`.
pub(crate) fn cases_or(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unset_variable_keeps_the_default() {
        // Whatever this process's PROPTEST_CASES, a default is returned only without it.
        let want = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(17);
        assert_eq!(super::cases_or(17), want);
    }
}
