//! A serde adapter that refuses input nested deeper than a limit, for formats without a
//! limit of their own (postcard) or with one that does not count every container
//! (MessagePack's counts arrays and maps, not enums and options): a recursive value type read
//! from bytes someone else wrote would otherwise recurse once per level and overflow the
//! thread's stack on deep enough input.
//!
//! Every container entered (a sequence, tuple, map, struct, enum, option or newtype) costs one
//! level; the adapter wraps the deserializer, the visitor and every nested access and seed, so
//! each level below is wrapped in turn, and fails with the format's own error past the limit.
//!
//! ```
//! let bytes = rmp_serde::to_vec(&Some(Some(Some(1u8)))).expect("encode");
//! let mut de = rmp_serde::Deserializer::from_read_ref(&bytes);
//! let deep: Result<Option<Option<Option<u8>>>, _> = celeriac_core::nesting::deserialize(&mut de, 2);
//! assert!(deep.is_err());
//! ```

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use std::fmt;

/// The nesting [`Encoding::decode`](crate::job::Encoding::decode) allows (serde_json's own
/// limit).
pub const MAX_DEPTH: usize = 128;

/// Deserializes `T` from `inner`, failing once the input nests deeper than `max_depth`.
///
/// # Errors
/// The format's errors, and a custom one ("nested too deeply") past the limit.
pub fn deserialize<'de, T, D>(inner: D, max_depth: usize) -> Result<T, D::Error>
where
    T: de::Deserialize<'de>,
    D: Deserializer<'de>,
{
    T::deserialize(Limited {
        inner,
        left: max_depth,
    })
}

/// A deserializer, or a visitor, access or seed, with `left` levels still allowed below it.
struct Limited<X> {
    inner: X,
    left: usize,
}

impl<X> Limited<X> {
    /// The same `left` around another value.
    fn with<Y>(&self, inner: Y) -> Limited<Y> {
        Limited {
            inner,
            left: self.left,
        }
    }

    /// One level down: `inner` wrapped with a level fewer, or an error at the limit.
    fn below<Y, E: de::Error>(&self, inner: Y) -> Result<Limited<Y>, E> {
        match self.left.checked_sub(1) {
            Some(left) => Ok(Limited { inner, left }),
            None => Err(E::custom("the value is nested too deeply")),
        }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                let visitor = self.with(visitor);
                self.inner.$method(visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.with(visitor);
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.with(visitor);
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.with(visitor);
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.with(visitor);
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.with(visitor);
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.with(visitor);
        self.inner.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Limited<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let d = self.below(d)?;
        self.inner.visit_some(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let d = self.below(d)?;
        self.inner.visit_newtype_struct(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let seq = self.below(seq)?;
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let map = self.below(map)?;
        self.inner.visit_map(map)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let data = self.below(data)?;
        self.inner.visit_enum(data)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Limited<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let d = self.with(d);
        self.inner.deserialize(d)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Limited<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        let seed = self.with(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Limited<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let seed = self.with(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let seed = self.with(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Limited<A> {
    type Error = A::Error;
    type Variant = Limited<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let left = self.left;
        let seed = self.with(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Limited {
                inner: variant,
                left,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Limited<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        let seed = self.with(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.with(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.with(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::deserialize;
    use serde::{Deserialize, Serialize};

    /// A recursive type, as a cached value could be.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Tree {
        Leaf(u32),
        Node(Box<Tree>, Vec<Tree>),
        Maybe(Option<Box<Tree>>),
    }

    fn nested(levels: usize) -> Tree {
        let mut t = Tree::Leaf(7);
        for i in 0..levels {
            t = if i % 2 == 0 {
                Tree::Node(Box::new(t), vec![Tree::Leaf(1)])
            } else {
                Tree::Maybe(Some(Box::new(t)))
            };
        }
        t
    }

    fn decode(bytes: &[u8], max_depth: usize) -> Result<Tree, postcard::Error> {
        deserialize(&mut postcard::Deserializer::from_bytes(bytes), max_depth)
    }

    #[test]
    fn values_within_the_limit_read_as_they_were_written() {
        for levels in [0, 1, 5, 20] {
            let t = nested(levels);
            let bytes = postcard::to_allocvec(&t).expect("encode");
            assert_eq!(decode(&bytes, 128).expect("decode"), t, "{levels} levels");
        }
        let bytes =
            postcard::to_allocvec(&(1u8, "x".to_string(), vec![Some(2u16)])).expect("encode");
        let plain: (u8, String, Vec<Option<u16>>) =
            deserialize(&mut postcard::Deserializer::from_bytes(&bytes), 8).expect("decode");
        assert_eq!(plain, (1, "x".to_string(), vec![Some(2)]));
    }

    #[test]
    fn deeper_input_is_an_error_not_a_stack_overflow() {
        // Each level is one or two bytes in postcard: 200,000 levels would overflow a
        // thread's stack without the limit.
        let mut bytes = Vec::new();
        for _ in 0..200_000 {
            bytes.push(2); // Maybe
            bytes.push(1); // Some
        }
        bytes.extend([0, 7]); // Leaf(7)
        let err = decode(&bytes, 128).expect_err("too deep");
        // postcard keeps no message of a custom error, only its kind.
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err}");
        // The limit is the number of levels: 40 levels of `Maybe(Some(..))` are 80 containers.
        let t = nested(40);
        let bytes = postcard::to_allocvec(&t).expect("encode");
        assert!(decode(&bytes, 60).is_err());
        assert!(decode(&bytes, 128).is_ok());
    }
}
