//! Validation rules of the data model, as one typed error.
//!
//! Every entity in this crate implements [`Validate`]. A failed rule is a [`ValidationError`]
//! that names the entity, the field (with an index path such as `messages[3].content` where it
//! helps), the offending value and the [`Rule`] that was broken, so that a user reading
//! `invalid ModelConfig.n_head = 5: must divide n_embd (= 768)` knows exactly what to change.
//!
//! The `check_*` helpers are public so that the other crates (tokenizer, model, train) report
//! their own input errors with the same type and wording.

use std::fmt;

/// An interval of real numbers with open or closed ends, used by [`Rule::InRange`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Whether `lo` itself is allowed.
    pub lo_closed: bool,
    /// Whether `hi` itself is allowed.
    pub hi_closed: bool,
}

impl Interval {
    /// `[lo, hi]`.
    pub const fn closed(lo: f64, hi: f64) -> Self {
        Self {
            lo,
            hi,
            lo_closed: true,
            hi_closed: true,
        }
    }
    /// `(lo, hi)`.
    pub const fn open(lo: f64, hi: f64) -> Self {
        Self {
            lo,
            hi,
            lo_closed: false,
            hi_closed: false,
        }
    }
    /// `(lo, hi]`.
    pub const fn open_closed(lo: f64, hi: f64) -> Self {
        Self {
            lo,
            hi,
            lo_closed: false,
            hi_closed: true,
        }
    }
    /// Whether `x` lies in the interval (NaN never does).
    pub fn contains(&self, x: f64) -> bool {
        let above = if self.lo_closed {
            x >= self.lo
        } else {
            x > self.lo
        };
        let below = if self.hi_closed {
            x <= self.hi
        } else {
            x < self.hi
        };
        above && below
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = if self.lo_closed { '[' } else { '(' };
        let r = if self.hi_closed { ']' } else { ')' };
        write!(f, "{l}{}, {}{r}", self.lo, self.hi)
    }
}

/// The rule a value broke. Each variant is one kind of rule of the data model; its `Display`
/// is the human-readable statement of the rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// The value must be strictly greater than zero.
    Positive,
    /// The value must be zero or greater.
    NonNegative,
    /// The value must be a finite number (not NaN or infinite).
    Finite,
    /// The value must lie in an interval.
    InRange(Interval),
    /// The value must be divisible by another field's value.
    DivisibleBy {
        /// The other field.
        other: &'static str,
        /// Its value.
        divisor: u64,
    },
    /// The value must not exceed a limit given by another field or quantity.
    AtMost {
        /// What the limit is (a field name or a description).
        limit_name: String,
        /// The limit's value.
        limit: String,
    },
    /// The value must not be below a limit given by another field or quantity.
    AtLeast {
        /// What the limit is.
        limit_name: String,
        /// The limit's value.
        limit: String,
    },
    /// The value (a string or a collection) must not be empty.
    NotEmpty,
    /// Timestamps must not go backwards.
    Chronological {
        /// The timestamp of the previous element.
        previous: String,
    },
    /// The value must be unique within its container.
    Unique {
        /// The container (e.g. "session store").
        within: &'static str,
    },
    /// The value must be one of a fixed set.
    OneOf {
        /// The allowed values.
        allowed: &'static [&'static str],
    },
    /// A path on disk must exist.
    PathExists,
    /// The value must equal a quantity derived from other data.
    Equals {
        /// What the value must equal (e.g. "the sum of shard tokens").
        what: String,
        /// That quantity's value.
        expected: String,
    },
    /// A mapping and its inverse must describe the same pairs.
    InverseConsistent {
        /// The first disagreement found.
        detail: String,
    },
    /// A special token must have an id.
    HasId,
    /// A BPE merge must be well formed.
    ValidMerge {
        /// Why it is not.
        detail: String,
    },
    /// The value must match a pattern.
    Pattern {
        /// The pattern, in words.
        expected: &'static str,
    },
    /// The value is not consistent with the order of the elements around it.
    Order {
        /// The order rule, in words.
        expected: &'static str,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Positive => write!(f, "must be > 0"),
            Rule::NonNegative => write!(f, "must be >= 0"),
            Rule::Finite => write!(f, "must be a finite number"),
            Rule::InRange(iv) => write!(f, "must be in {iv}"),
            Rule::DivisibleBy { other, divisor } => {
                write!(f, "must be divisible by {other} (= {divisor})")
            }
            Rule::AtMost { limit_name, limit } => write!(f, "must be <= {limit_name} (= {limit})"),
            Rule::AtLeast { limit_name, limit } => write!(f, "must be >= {limit_name} (= {limit})"),
            Rule::NotEmpty => write!(f, "must not be empty"),
            Rule::Chronological { previous } => {
                write!(f, "must not be earlier than the previous one ({previous})")
            }
            Rule::Unique { within } => write!(f, "must be unique within the {within}"),
            Rule::OneOf { allowed } => write!(f, "must be one of: {}", allowed.join(", ")),
            Rule::PathExists => write!(f, "path does not exist"),
            Rule::Equals { what, expected } => write!(f, "must equal {what} (= {expected})"),
            Rule::InverseConsistent { detail } => {
                write!(f, "map and inverse map disagree: {detail}")
            }
            Rule::HasId => write!(f, "special token must have an id"),
            Rule::ValidMerge { detail } => write!(f, "invalid merge: {detail}"),
            Rule::Pattern { expected } => write!(f, "must be {expected}"),
            Rule::Order { expected } => write!(f, "out of order: {expected}"),
        }
    }
}

/// A broken validation rule: which entity and field, what value, which rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {entity}.{field} = {value}: {rule}")]
pub struct ValidationError {
    /// The entity type, e.g. `ModelConfig`.
    pub entity: &'static str,
    /// The field, possibly with an index path, e.g. `messages[2].content`.
    pub field: String,
    /// The offending value, rendered for humans (long values are shortened).
    pub value: String,
    /// The rule it broke.
    pub rule: Rule,
}

impl ValidationError {
    /// Builds an error; `value` is rendered with `Display` and shortened to 80 characters.
    pub fn new(
        entity: &'static str,
        field: impl Into<String>,
        value: impl fmt::Display,
        rule: Rule,
    ) -> Self {
        Self {
            entity,
            field: field.into(),
            value: shorten(&value.to_string()),
            rule,
        }
    }

    /// Prefixes the field with a container path, e.g. `sources[2].` + `weight`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let head: String = s.chars().take(MAX - 1).collect();
    format!("{head}…")
}

/// An entity whose rules can be checked.
pub trait Validate {
    /// Checks every rule of the entity; returns the first rule broken.
    fn validate(&self) -> Result<(), ValidationError>;
}

/// Shorthand for results of validation.
pub type VResult = Result<(), ValidationError>;

/// `value > 0` for integers.
pub fn check_positive(entity: &'static str, field: &str, value: u64) -> VResult {
    if value == 0 {
        return Err(ValidationError::new(entity, field, value, Rule::Positive));
    }
    Ok(())
}

/// `value > 0` for reals (NaN fails).
pub fn check_positive_f(entity: &'static str, field: &str, value: f64) -> VResult {
    check_finite(entity, field, value)?;
    if value <= 0.0 {
        return Err(ValidationError::new(entity, field, value, Rule::Positive));
    }
    Ok(())
}

/// `value >= 0` for reals (NaN fails).
pub fn check_non_negative(entity: &'static str, field: &str, value: f64) -> VResult {
    check_finite(entity, field, value)?;
    if value < 0.0 {
        return Err(ValidationError::new(
            entity,
            field,
            value,
            Rule::NonNegative,
        ));
    }
    Ok(())
}

/// The value is finite.
pub fn check_finite(entity: &'static str, field: &str, value: f64) -> VResult {
    if !value.is_finite() {
        return Err(ValidationError::new(entity, field, value, Rule::Finite));
    }
    Ok(())
}

/// The value lies in `interval`.
pub fn check_range(entity: &'static str, field: &str, value: f64, interval: Interval) -> VResult {
    if !interval.contains(value) {
        return Err(ValidationError::new(
            entity,
            field,
            value,
            Rule::InRange(interval),
        ));
    }
    Ok(())
}

/// `value <= limit`, where the limit is named (another field or a quantity).
pub fn check_at_most(
    entity: &'static str,
    field: &str,
    value: u64,
    limit_name: &str,
    limit: u64,
) -> VResult {
    if value > limit {
        return Err(ValidationError::new(
            entity,
            field,
            value,
            Rule::AtMost {
                limit_name: limit_name.to_string(),
                limit: limit.to_string(),
            },
        ));
    }
    Ok(())
}

/// A string is not empty (whitespace-only counts as empty).
pub fn check_not_blank(entity: &'static str, field: &str, value: &str) -> VResult {
    if value.trim().is_empty() {
        return Err(ValidationError::new(
            entity,
            field,
            format!("{value:?}"),
            Rule::NotEmpty,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_ends() {
        assert!(Interval::closed(0.0, 1.0).contains(0.0));
        assert!(Interval::closed(0.0, 1.0).contains(1.0));
        assert!(!Interval::open(0.0, 1.0).contains(0.0));
        assert!(!Interval::open(0.0, 1.0).contains(1.0));
        assert!(Interval::open_closed(0.0, 1.0).contains(1.0));
        assert!(!Interval::open_closed(0.0, 1.0).contains(0.0));
        assert!(!Interval::closed(0.0, 1.0).contains(f64::NAN));
        assert_eq!(Interval::open_closed(0.0, 1.0).to_string(), "(0, 1]");
    }

    #[test]
    fn message_names_entity_field_value_rule() {
        let e = ValidationError::new(
            "ModelConfig",
            "n_embd",
            770,
            Rule::DivisibleBy {
                other: "n_head",
                divisor: 6,
            },
        );
        assert_eq!(
            e.to_string(),
            "invalid ModelConfig.n_embd = 770: must be divisible by n_head (= 6)"
        );
    }

    #[test]
    fn long_values_are_shortened() {
        let long = "x".repeat(500);
        let e = ValidationError::new("Message", "content", &long, Rule::NotEmpty);
        assert!(e.value.chars().count() <= 80);
    }

    #[test]
    fn nan_is_not_positive_or_non_negative() {
        assert!(check_positive_f("E", "f", f64::NAN).is_err());
        assert!(check_non_negative("E", "f", f64::NAN).is_err());
        assert!(check_positive_f("E", "f", 1e-12).is_ok());
        assert!(check_non_negative("E", "f", 0.0).is_ok());
        assert!(check_non_negative("E", "f", -0.0).is_ok());
    }
}
