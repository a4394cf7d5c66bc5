//! A message's kind by name: the enum variant a value is, and the variants a type has, read
//! through serde (which every message type already implements), so that a schedule can name
//! "the second `Vote` node 1 sent node 2 for request 7" without asking the model anything.
//! Variant names survive unrelated changes to a model (a new variant, reordered variants),
//! which discriminant numbers would not.

use serde::de::{self, Deserialize, Visitor};
use serde::ser::{self, Impossible, Serialize};
use std::fmt;

/// The name of the enum variant `value` is; `""` when its type is not an enum.
pub fn variant_name<T: Serialize + ?Sized>(value: &T) -> &'static str {
    match value.serialize(VariantName) {
        Err(Stop(name)) => name,
        Ok(()) => "",
    }
}

/// The names of the variants of enum `T`; empty when `T` is not an enum.
pub fn variant_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(Variants) {
        Err(Found(names)) => names,
        Ok(_) => &[],
    }
}

/// Serialization stops at the first thing it learns, carried in the "error".
#[derive(Debug)]
struct Stop(&'static str);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop("")
    }
}

struct VariantName;

macro_rules! not_an_enum {
    ($($name:ident: $t:ty),* $(,)?) => {
        $(fn $name(self, _: $t) -> Result<(), Stop> {
            Err(Stop(""))
        })*
    };
}

impl ser::Serializer for VariantName {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Impossible<(), Stop>;
    type SerializeTuple = Impossible<(), Stop>;
    type SerializeTupleStruct = Impossible<(), Stop>;
    type SerializeTupleVariant = Impossible<(), Stop>;
    type SerializeMap = Impossible<(), Stop>;
    type SerializeStruct = Impossible<(), Stop>;
    type SerializeStructVariant = Impossible<(), Stop>;

    not_an_enum!(
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_f32: f32,
        serialize_f64: f64,
        serialize_char: char,
        serialize_str: &str,
        serialize_bytes: &[u8],
        serialize_unit_struct: &'static str,
    );

    fn serialize_none(self) -> Result<(), Stop> {
        Err(Stop(""))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Stop> {
        Err(Stop(""))
    }

    fn serialize_unit(self) -> Result<(), Stop> {
        Err(Stop(""))
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<(), Stop> {
        Err(Stop(v))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        // A newtype around an enum is its enum.
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        Err(Stop(v))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
        Err(Stop(""))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
        Err(Stop(""))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Stop> {
        Err(Stop(""))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stop> {
        Err(Stop(v))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
        Err(Stop(""))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Stop> {
        Err(Stop(""))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stop> {
        Err(Stop(v))
    }
}

/// Deserialization stops when the type names its variants.
#[derive(Debug)]
struct Found(&'static [&'static str]);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} variants", self.0.len())
    }
}

impl std::error::Error for Found {}

impl de::Error for Found {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Found(&[])
    }
}

struct Variants;

impl<'de> de::Deserializer<'de> for Variants {
    type Error = Found;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found(&[]))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Found> {
        Err(Found(variants))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Found> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    enum Msg {
        Ping,
        Vote(u64),
        Append { term: u64 },
        Pair(u8, u8),
    }

    #[test]
    fn names_every_shape_of_variant() {
        assert_eq!(variant_name(&Msg::Ping), "Ping");
        assert_eq!(variant_name(&Msg::Vote(3)), "Vote");
        assert_eq!(variant_name(&Msg::Append { term: 1 }), "Append");
        assert_eq!(variant_name(&Msg::Pair(1, 2)), "Pair");
        assert_eq!(variant_name(&7u64), "");
        assert_eq!(
            variant_names::<Msg>(),
            &["Ping", "Vote", "Append", "Pair"][..]
        );
        assert!(variant_names::<u64>().is_empty());
    }
}
