//! Topic validation and matching on arbitrary strings: no panics, and a
//! topic name (no wildcards) used as a filter matches exactly itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdant_broker::topic::{self, TopicLimits};

const LIMITS: TopicLimits = TopicLimits {
    max_bytes: 65_535,
    max_levels: 1024,
};

fuzz_target!(|data: (&str, &str)| {
    let (filter, name) = data;
    let _ = topic::validate_filter(filter, LIMITS);
    let _ = topic::matches(filter, name);
    if topic::validate_name(filter, LIMITS).is_ok() && topic::validate_name(name, LIMITS).is_ok() {
        assert_eq!(topic::matches(filter, name), filter == name);
    }
});
