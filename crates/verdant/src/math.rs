//! The two C math functions the executable calls, `pow` (tokio's scheduler
//! statistics) and `log` (SQLite's FTS5 ranking, unused by us), from the
//! pure-Rust `libm`. Defined here, they leave the executable with no need
//! for the C math library, which every process of a core would otherwise
//! map and search at start (measured as part of the whole core's memory,
//! docs/benchmarks.md). Should a dependency call another C math function, the
//! linker takes the C library again: nothing breaks, the saving goes.

#[unsafe(no_mangle)]
extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[unsafe(no_mangle)]
extern "C" fn log(x: f64) -> f64 {
    libm::log(x)
}

#[cfg(test)]
mod tests {
    // Known values: in this crate's test binary `f64::powf` and `f64::ln`
    // would call the functions above.
    #[test]
    fn known_values() {
        let close = |a: f64, b: f64| (a - b).abs() <= 4.0 * f64::EPSILON * b.abs();
        assert!(close(super::pow(2.0, 10.0), 1024.0));
        assert!(close(super::pow(10.0, -2.5), 0.003_162_277_660_168_379_5));
        assert!(close(super::pow(0.9, 37.0), 0.020_275_559_590_445_275));
        assert!(close(super::log(std::f64::consts::E), 1.0));
        assert!(close(super::log(1e300), 690.775_527_898_213_7));
        assert!(super::log(1.0).abs() < f64::EPSILON);
    }
}
