//! Serde helpers: upstream's `-1 = disabled` convention for optional numbers, which also lets
//! TOML (which has no null) round-trip a disabled value.

/// `Option<u64>` as a number, with `None` written and read as `-1`.
pub mod minus_one_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes `None` as -1.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => s.serialize_u64(*x),
            None => s.serialize_i64(-1),
        }
    }

    /// Reads -1 as `None`; other negative numbers are an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let v = i64::deserialize(d)?;
        match v {
            -1 => Ok(None),
            v if v < 0 => Err(D::Error::custom(format!(
                "{v} is negative; use -1 to disable"
            ))),
            v => u64::try_from(v).map(Some).map_err(D::Error::custom),
        }
    }
}

/// `Option<f64>` as a number, with `None` written and read as `-1`.
pub mod minus_one_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes `None` as -1.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(v.unwrap_or(-1.0))
    }

    /// Reads -1 as `None`; other negative numbers are an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let v = f64::deserialize(d)?;
        if v == -1.0 {
            Ok(None)
        } else if v < 0.0 {
            Err(D::Error::custom(format!(
                "{v} is negative; use -1 to disable"
            )))
        } else {
            Ok(Some(v))
        }
    }
}

/// `Option<usize>` with `None` written and read as 0 (top-k: 0 = off).
pub mod zero_is_none {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `None` as 0.
    pub fn serialize<S: Serializer>(v: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.unwrap_or(0) as u64)
    }

    /// Reads 0 (or null) as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        Ok(Option::<usize>::deserialize(d)?.filter(|&k| k != 0))
    }
}

/// A map from token id to a number, written with the ids as strings (OpenAI's `logit_bias`
/// `{"1234": -100}`; TOML keys are strings too).
pub mod token_keys {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes the ids as strings.
    pub fn serialize<S: Serializer>(m: &BTreeMap<u32, f64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k.to_string(), v)))
    }

    /// Reads string keys as token ids; a key that is not one is an error naming it.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, f64>, D::Error> {
        BTreeMap::<String, f64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                k.trim()
                    .parse::<u32>()
                    .map(|id| (id, v))
                    .map_err(|_| D::Error::custom(format!("{k:?} is not a token id")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "super::minus_one_u64")]
        a: Option<u64>,
        #[serde(with = "super::minus_one_f64")]
        b: Option<f64>,
    }

    #[test]
    fn minus_one_round_trips_in_toml_and_json() {
        for t in [
            T { a: None, b: None },
            T {
                a: Some(7),
                b: Some(0.5),
            },
        ] {
            let s = toml::to_string(&t).unwrap();
            assert_eq!(toml::from_str::<T>(&s).unwrap(), t);
            let j = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<T>(&j).unwrap(), t);
        }
        assert!(serde_json::from_str::<T>(r#"{"a": -2, "b": 1}"#).is_err());
    }
}
