//! MQTT topic names and filters: validation and matching, per both
//! MQTT 3.1.1 (section 4.7) and 5.0 (section 4.7), which agree here.

/// Limits on topics beyond the protocol's, from `[broker]`.
#[derive(Debug, Clone, Copy)]
pub struct TopicLimits {
    pub max_bytes: usize,
    pub max_levels: usize,
}

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("empty topic")]
    Empty,
    #[error("topic longer than {0} bytes")]
    TooLong(usize),
    #[error("topic deeper than {0} levels")]
    TooDeep(usize),
    #[error("topic contains a NUL character")]
    Nul,
    #[error("a topic name may not contain `+` or `#`")]
    WildcardInName,
    #[error("`#` must be a whole level and the last one")]
    BadMultiLevel,
    #[error("`+` must be a whole level")]
    BadSingleLevel,
    #[error("empty shared subscription group or filter")]
    BadShare,
}

fn common(topic: &str, limits: TopicLimits) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > limits.max_bytes {
        return Err(TopicError::TooLong(limits.max_bytes));
    }
    if topic.contains('\0') {
        return Err(TopicError::Nul);
    }
    if topic.split('/').count() > limits.max_levels {
        return Err(TopicError::TooDeep(limits.max_levels));
    }
    Ok(())
}

/// Checks a topic name (what a PUBLISH names).
pub fn validate_name(topic: &str, limits: TopicLimits) -> Result<(), TopicError> {
    common(topic, limits)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter (what a SUBSCRIBE names).
pub fn validate_filter(filter: &str, limits: TopicLimits) -> Result<(), TopicError> {
    common(filter, limits)?;
    let filter = match shared(filter) {
        Some((group, inner)) => {
            if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
                return Err(TopicError::BadShare);
            }
            inner
        }
        None if filter.starts_with("$share/") || filter == "$share" => {
            return Err(TopicError::BadShare);
        }
        None => filter,
    };
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(TopicError::BadMultiLevel);
        }
        if level.contains('+') && *level != "+" {
            return Err(TopicError::BadSingleLevel);
        }
    }
    Ok(())
}

/// The share name and the filter of a shared subscription
/// (`$share/<name>/<filter>`, MQTT 4.8.2).
pub fn shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

/// The filter a subscription matches topics with: a shared one's own.
pub fn matching_part(filter: &str) -> &str {
    shared(filter).map_or(filter, |(_, inner)| inner)
}

/// Whether `filter` matches `topic`. A filter starting with a wildcard does
/// not match a topic starting with `$` (MQTT-4.7.2-1).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TopicLimits = TopicLimits {
        max_bytes: 1024,
        max_levels: 32,
    };

    #[test]
    fn spec_examples() {
        // MQTT 3.1.1 section 4.7.1.2 and 4.7.1.3.
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/tennis/#", "sport/tennis"));
        // 4.7.2: $-topics.
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches(
            "$aws/things/+/shadow/#",
            "$aws/things/t1/shadow/update"
        ));
        // Case and spaces are significant.
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(matches("Accounts payable", "Accounts payable"));
    }

    #[test]
    fn validation() {
        for ok in ["a", "/", "a/b/c", "$SYS/x", "a b"] {
            assert_eq!(validate_name(ok, LIMITS), Ok(()), "{ok}");
        }
        assert_eq!(validate_name("", LIMITS), Err(TopicError::Empty));
        assert_eq!(
            validate_name("a/+", LIMITS),
            Err(TopicError::WildcardInName)
        );
        assert_eq!(
            validate_name("a/#", LIMITS),
            Err(TopicError::WildcardInName)
        );
        assert_eq!(validate_name("a\0b", LIMITS), Err(TopicError::Nul));
        for ok in ["#", "+", "a/+/b", "a/#", "+/+", "/#"] {
            assert_eq!(validate_filter(ok, LIMITS), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_filter("a/#/b", LIMITS),
            Err(TopicError::BadMultiLevel)
        );
        assert_eq!(
            validate_filter("a#", LIMITS),
            Err(TopicError::BadMultiLevel)
        );
        assert_eq!(
            validate_filter("a+", LIMITS),
            Err(TopicError::BadSingleLevel)
        );
        let deep = vec!["x"; 33].join("/");
        assert_eq!(validate_filter(&deep, LIMITS), Err(TopicError::TooDeep(32)));
        let long = "x".repeat(1025);
        assert_eq!(validate_name(&long, LIMITS), Err(TopicError::TooLong(1024)));
    }
}
