//! Building a Rust task's `Args` from a Celery call's `(args, kwargs)`, as Python binds
//! `fun(*args, **kwargs)`.
//!
//! - A tuple or sequence takes the positional arguments (keyword arguments are refused).
//! - A struct takes the positional arguments in field order, then the keyword arguments by
//!   field name; an unknown keyword, a field given twice or too many positional arguments is
//!   an error naming it, as Python's `TypeError` would; a missing field is serde's
//!   "missing field `x`".
//! - A map takes the keyword arguments; a single value (`i64`, `String`, ...) takes the one
//!   positional argument.
//!
//! kombu `__type__` wrappers are unwrapped first.

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

use crate::protocol::unwrap_kombu_types;

/// A Celery call's arguments, as a serde [`Deserializer`].
#[derive(Debug, Clone, PartialEq)]
pub struct CallArgs {
    args: Vec<Value>,
    kwargs: Map<String, Value>,
}

impl CallArgs {
    /// The arguments of a call; kombu `__type__` wrappers are unwrapped.
    pub fn new(args: Vec<Value>, kwargs: Map<String, Value>) -> CallArgs {
        CallArgs {
            args: args.into_iter().map(unwrap_kombu_types).collect(),
            kwargs: kwargs
                .into_iter()
                .map(|(k, v)| (k, unwrap_kombu_types(v)))
                .collect(),
        }
    }

    /// Deserializes `T` from the call.
    ///
    /// # Errors
    /// A message naming the argument that does not fit (Python's `TypeError` wording where
    /// there is one).
    pub fn bind<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        T::deserialize(self)
    }

    fn no_kwargs(&self, what: &str) -> Result<(), serde_json::Error> {
        match self.kwargs.keys().next() {
            None => Ok(()),
            Some(k) => Err(de::Error::custom(format!(
                "got an unexpected keyword argument '{k}' (the task takes {what})"
            ))),
        }
    }

    fn positional(self) -> Result<Value, serde_json::Error> {
        self.no_kwargs("positional arguments only")?;
        Ok(Value::Array(self.args))
    }

    fn single(self) -> Result<Value, serde_json::Error> {
        self.no_kwargs("one positional argument")?;
        let n = self.args.len();
        let mut it = self.args.into_iter();
        match (it.next(), n) {
            (Some(v), 1) => Ok(v),
            _ => Err(de::Error::custom(format!(
                "takes 1 positional argument but {n} were given"
            ))),
        }
    }

    fn for_struct(self, fields: &'static [&'static str]) -> Result<Value, serde_json::Error> {
        if self.args.len() > fields.len() {
            return Err(de::Error::custom(format!(
                "takes {} positional arguments but {} were given",
                fields.len(),
                self.args.len()
            )));
        }
        let mut map = Map::new();
        for (field, value) in fields.iter().zip(self.args) {
            map.insert((*field).to_owned(), value);
        }
        for (k, v) in self.kwargs {
            if !fields.contains(&k.as_str()) {
                return Err(de::Error::custom(format!(
                    "got an unexpected keyword argument '{k}'"
                )));
            }
            if map.contains_key(&k) {
                return Err(de::Error::custom(format!(
                    "got multiple values for argument '{k}'"
                )));
            }
            map.insert(k, v);
        }
        Ok(Value::Object(map))
    }
}

macro_rules! single_value {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.single()?.$method(visitor)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for CallArgs {
    type Error = serde_json::Error;

    /// Self-describing targets (`serde_json::Value`): the positional arguments as a list, or
    /// the keyword arguments as an object when there are only those.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.args.is_empty() && !self.kwargs.is_empty() {
            return Value::Object(self.kwargs).deserialize_any(visitor);
        }
        self.positional()?.deserialize_any(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.positional()?.deserialize_seq(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let given = self.args.len();
        if given != len {
            self.no_kwargs("positional arguments only")?;
            return Err(de::Error::custom(format!(
                "takes {len} positional arguments but {given} were given"
            )));
        }
        self.positional()?.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.positional()?
            .deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.for_struct(fields)?
            .deserialize_struct(name, fields, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if let Some(first) = self.args.first() {
            return Err(de::Error::custom(format!(
                "takes keyword arguments only, got a positional argument {first}"
            )));
        }
        Value::Object(self.kwargs).deserialize_map(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let n = self.args.len();
        if n > 0 {
            return Err(de::Error::custom(format!(
                "takes 0 positional arguments but {n} were given"
            )));
        }
        self.no_kwargs("no arguments")?;
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.args.is_empty() && self.kwargs.is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.single()?.deserialize_enum(name, variants, visitor)
    }

    single_value!(
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
        deserialize_identifier,
        deserialize_ignored_any,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    fn call(args: Value, kwargs: Value) -> CallArgs {
        let args = match args {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        let kwargs = match kwargs {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        CallArgs::new(args, kwargs)
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Add {
        x: i64,
        y: i64,
        #[serde(default)]
        z: Option<i64>,
    }

    #[test]
    fn tuples_take_positional_arguments() {
        let (a, b): (i64, i64) = call(json!([2, 3]), json!({})).bind().expect("binds");
        assert_eq!((a, b), (2, 3));
        let err = call(json!([2]), json!({}))
            .bind::<(i64, i64)>()
            .expect_err("too few");
        assert!(err
            .to_string()
            .contains("takes 2 positional arguments but 1"));
        let err = call(json!([2, 3]), json!({"q": 1}))
            .bind::<(i64, i64)>()
            .expect_err("kwargs refused");
        assert!(err.to_string().contains("'q'"), "{err}");
        let xs: (Vec<i64>,) = call(json!([[6, 8]]), json!({})).bind().expect("binds");
        assert_eq!(xs.0, vec![6, 8]);
        let v: Vec<i64> = call(json!([1, 2, 3]), json!({})).bind().expect("binds");
        assert_eq!(v, vec![1, 2, 3]);
    }

    #[test]
    fn structs_take_positional_then_keyword_arguments() {
        let a: Add = call(json!([1]), json!({"y": 2})).bind().expect("binds");
        assert_eq!(
            a,
            Add {
                x: 1,
                y: 2,
                z: None
            }
        );
        let a: Add = call(json!([]), json!({"y": 2, "x": 1, "z": 3}))
            .bind()
            .expect("binds");
        assert_eq!(a.z, Some(3));
        let err = call(json!([1]), json!({"x": 2}))
            .bind::<Add>()
            .expect_err("twice");
        assert!(err.to_string().contains("multiple values for argument 'x'"));
        let err = call(json!([1, 2]), json!({"w": 2}))
            .bind::<Add>()
            .expect_err("unknown");
        assert!(err.to_string().contains("unexpected keyword argument 'w'"));
        let err = call(json!([1]), json!({}))
            .bind::<Add>()
            .expect_err("missing");
        assert!(err.to_string().contains("missing field `y`"), "{err}");
        let err = call(json!([1, 2, 3, 4]), json!({}))
            .bind::<Add>()
            .expect_err("too many");
        assert!(err
            .to_string()
            .contains("takes 3 positional arguments but 4"));
    }

    #[test]
    fn single_values_unit_and_kombu_wrappers() {
        let s: String = call(json!(["boom"]), json!({})).bind().expect("binds");
        assert_eq!(s, "boom");
        let o: Option<String> = call(json!([]), json!({})).bind().expect("binds");
        assert_eq!(o, None);
        let (): () = call(json!([]), json!({})).bind().expect("binds");
        assert!(call(json!([1]), json!({})).bind::<()>().is_err());
        let wrapped = json!([{"__type__": "decimal", "__value__": "1.5"}]);
        let (d,): (String,) = call(wrapped, json!({})).bind().expect("binds");
        assert_eq!(d, "1.5");
        let any: Value = call(json!([]), json!({"a": 1})).bind().expect("binds");
        assert_eq!(any, json!({"a": 1}));
    }
}
