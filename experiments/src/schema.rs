//! The column names of a result row, read from its `serde::Deserialize` implementation.
//!
//! Invariant: for a plain struct of scalar fields (the only kind of row we write), [`fields`]
//! returns exactly the names, in order, that `csv` writes as its header; there is no second list
//! of column names to keep in sync.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The field names of struct `T`, or `None` if `T` does not deserialize as a struct.
pub fn fields<'de, T: Deserialize<'de>>() -> Option<&'static [&'static str]> {
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// A deserializer that records the field list a struct asks for, then stops.
struct Probe(Option<&'static [&'static str]>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field probe")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for &mut Probe {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0 = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Row {
        size_bytes: u32,
        latency_us: f64,
    }

    #[test]
    fn struct_fields_in_order() {
        assert_eq!(super::fields::<Row>(), Some(&["size_bytes", "latency_us"][..]));
        assert_eq!(super::fields::<u32>(), None);
    }
}
