//! JSON values as typed columns: the `value` column becomes a struct whose fields are the
//! JSON objects' fields, typed by [`JsonSchema::infer`] from sample values.
//!
//! Types: `true`/`false` → Boolean; integers within i64 → Int64; other numbers → Float64
//! (an Int64 field that also holds fractions widens to Float64); strings → Utf8; objects and
//! arrays → Utf8 holding their JSON text; a field seen with two types it cannot widen between
//! (a number and a string, say) → Utf8 holding each value's JSON text. `null` says nothing of a
//! type; a field only ever null is Utf8. Fields are in name order, so the same samples give
//! the same schema whatever order their objects list fields in.
//!
//! A value fits the schema when it is a JSON object whose fields are all in the schema with a
//! value of the field's type (or null); a missing field is null. [`OnMismatch`] says what a
//! value that does not fit becomes.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, NullBufferBuilder, StringBuilder,
};
use arrow_array::{ArrayRef, StructArray};
use arrow_schema::{DataType, Field, Fields};
use serde_json::Value;

/// A JSON field's column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Boolean,
    Int64,
    Float64,
    /// Strings as they are; objects, arrays and mixed types as JSON text.
    Utf8,
}

impl JsonType {
    fn of(value: &Value) -> Option<JsonType> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(JsonType::Boolean),
            Value::Number(number) if number.is_i64() => Some(JsonType::Int64),
            Value::Number(_) => Some(JsonType::Float64),
            Value::String(_) | Value::Array(_) | Value::Object(_) => Some(JsonType::Utf8),
        }
    }

    /// The type holding values of both.
    fn widen(self, other: JsonType) -> JsonType {
        match (self, other) {
            (a, b) if a == b => a,
            (JsonType::Int64, JsonType::Float64) | (JsonType::Float64, JsonType::Int64) => {
                JsonType::Float64
            }
            _ => JsonType::Utf8,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            JsonType::Boolean => DataType::Boolean,
            JsonType::Int64 => DataType::Int64,
            JsonType::Float64 => DataType::Float64,
            JsonType::Utf8 => DataType::Utf8,
        }
    }
}

/// The typed fields of JSON values, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonSchema {
    fields: Vec<(String, JsonType)>,
    /// Fields seen with two types neither holds: written as JSON text, never a mismatch.
    mixed: Vec<bool>,
}

/// What a value that does not fit the schema becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMismatch {
    /// An error naming the record and what did not fit.
    #[default]
    Error,
    /// A null `value`.
    Null,
}

/// Why a value does not fit a [`JsonSchema`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

impl JsonSchema {
    /// The schema of the JSON objects among `values`; values that are not JSON objects are
    /// skipped (they will not fit).
    pub fn infer<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> JsonSchema {
        let mut types: BTreeMap<String, (Option<JsonType>, bool)> = BTreeMap::new();
        for value in values {
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(value) else {
                continue;
            };
            for (name, field) in object {
                let entry = types.entry(name).or_insert((None, false));
                if let Some(kind) = JsonType::of(&field) {
                    let widened = entry.0.map_or(kind, |known| known.widen(kind));
                    let known_differs = entry.0.is_some_and(|known| known != kind);
                    // Int64 and Float64 widen to Float64 and still check; anything else mixed
                    // is text of any JSON.
                    entry.1 |= known_differs && widened == JsonType::Utf8;
                    entry.0 = Some(widened);
                }
            }
        }
        let (fields, mixed) = types
            .into_iter()
            // A field only ever null takes any JSON, as text.
            .map(|(name, (kind, mixed))| {
                (
                    (name, kind.unwrap_or(JsonType::Utf8)),
                    mixed || kind.is_none(),
                )
            })
            .unzip();
        JsonSchema { fields, mixed }
    }

    /// The fields and their types, in name order.
    pub fn fields(&self) -> &[(String, JsonType)] {
        &self.fields
    }

    /// The Arrow type of the `value` column: a struct of the fields, each nullable.
    pub fn data_type(&self) -> DataType {
        DataType::Struct(self.arrow_fields())
    }

    fn arrow_fields(&self) -> Fields {
        self.fields
            .iter()
            .map(|(name, kind)| Field::new(name, kind.data_type(), true))
            .collect()
    }

    /// Parses `value` and checks it against the schema: its fields in schema order.
    ///
    /// # Errors
    /// [`Mismatch`] saying what did not fit.
    fn fields_of(&self, value: &[u8]) -> Result<Vec<Value>, Mismatch> {
        let object = match serde_json::from_slice::<Value>(value) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(Mismatch("the value is JSON but not an object".into())),
            Err(error) => return Err(Mismatch(format!("the value is not JSON: {error}"))),
        };
        let mut out = vec![Value::Null; self.fields.len()];
        for (name, field) in object {
            let Ok(index) = self
                .fields
                .binary_search_by(|(known, _)| known.as_str().cmp(&name))
            else {
                return Err(Mismatch(format!(
                    "field {name:?} is not in the schema inferred from the first records"
                )));
            };
            let expected = self.fields[index].1;
            if let Some(kind) = JsonType::of(&field)
                && kind != expected
                && !(expected == JsonType::Float64 && kind == JsonType::Int64)
                && !(expected == JsonType::Utf8 && (self.mixed[index] || kind == JsonType::Utf8))
            {
                return Err(Mismatch(format!(
                    "field {name:?} is {kind:?} ({field}), the schema says {expected:?}"
                )));
            }
            out[index] = field;
        }
        Ok(out)
    }
}

/// One typed column being built.
enum FieldBuilder {
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
}

/// The `value` column as a struct of typed fields.
pub(crate) struct JsonColumns {
    schema: Arc<JsonSchema>,
    on_mismatch: OnMismatch,
    fields: Vec<FieldBuilder>,
    nulls: NullBufferBuilder,
}

impl JsonColumns {
    pub(crate) fn new(schema: Arc<JsonSchema>, on_mismatch: OnMismatch) -> Self {
        let fields = schema
            .fields
            .iter()
            .map(|(_, kind)| match kind {
                JsonType::Boolean => FieldBuilder::Boolean(BooleanBuilder::new()),
                JsonType::Int64 => FieldBuilder::Int64(Int64Builder::new()),
                JsonType::Float64 => FieldBuilder::Float64(Float64Builder::new()),
                JsonType::Utf8 => FieldBuilder::Utf8(StringBuilder::new()),
            })
            .collect();
        Self {
            schema,
            on_mismatch,
            fields,
            nulls: NullBufferBuilder::new(0),
        }
    }

    /// The fields of `value` checked against the schema, before anything is appended: `None`
    /// for a null value (absent, or not fitting with [`OnMismatch::Null`]).
    ///
    /// # Errors
    /// [`Mismatch`] with [`OnMismatch::Error`].
    pub(crate) fn check(&self, value: Option<&[u8]>) -> Result<Option<Vec<Value>>, Mismatch> {
        let Some(value) = value else {
            return Ok(None);
        };
        match (self.schema.fields_of(value), self.on_mismatch) {
            (Ok(fields), _) => Ok(Some(fields)),
            (Err(_), OnMismatch::Null) => Ok(None),
            (Err(mismatch), OnMismatch::Error) => Err(mismatch),
        }
    }

    /// Appends what [`check`](JsonColumns::check) gave.
    pub(crate) fn append(&mut self, checked: Option<Vec<Value>>) {
        let Some(values) = checked else {
            for field in &mut self.fields {
                match field {
                    FieldBuilder::Boolean(builder) => builder.append_null(),
                    FieldBuilder::Int64(builder) => builder.append_null(),
                    FieldBuilder::Float64(builder) => builder.append_null(),
                    FieldBuilder::Utf8(builder) => builder.append_null(),
                }
            }
            self.nulls.append_null();
            return;
        };
        for (field, value) in self.fields.iter_mut().zip(values) {
            match (field, value) {
                (FieldBuilder::Boolean(builder), Value::Bool(flag)) => builder.append_value(flag),
                (FieldBuilder::Int64(builder), Value::Number(number)) => {
                    builder.append_option(number.as_i64())
                }
                (FieldBuilder::Float64(builder), Value::Number(number)) => {
                    builder.append_option(number.as_f64())
                }
                (FieldBuilder::Utf8(builder), Value::String(text)) => builder.append_value(text),
                (FieldBuilder::Utf8(builder), Value::Null) => builder.append_null(),
                (FieldBuilder::Utf8(builder), other) => builder.append_value(other.to_string()),
                // Null, or a type `check` let through only as null.
                (FieldBuilder::Boolean(builder), _) => builder.append_null(),
                (FieldBuilder::Int64(builder), _) => builder.append_null(),
                (FieldBuilder::Float64(builder), _) => builder.append_null(),
            }
        }
        self.nulls.append_non_null();
    }

    /// The rows appended so far as a struct array; the builders start empty again.
    pub(crate) fn finish(&mut self) -> ArrayRef {
        let arrays: Vec<ArrayRef> = self
            .fields
            .iter_mut()
            .map(|field| -> ArrayRef {
                match field {
                    FieldBuilder::Boolean(builder) => Arc::new(builder.finish()),
                    FieldBuilder::Int64(builder) => Arc::new(builder.finish()),
                    FieldBuilder::Float64(builder) => Arc::new(builder.finish()),
                    FieldBuilder::Utf8(builder) => Arc::new(builder.finish()),
                }
            })
            .collect();
        let length = self.nulls.len();
        let nulls = self.nulls.finish();
        Arc::new(
            StructArray::try_new_with_length(self.schema.arrow_fields(), arrays, nulls, length)
                .expect("each field gets one value per row"),
        )
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};

    use super::*;

    /// Each JSON type maps to its column; integers widen to floats, anything else mixed is
    /// text; fields are in name order; non-objects are skipped.
    #[test]
    fn inference_types_and_widens() {
        let values: [&[u8]; 5] = [
            br#"{"n":1,"f":1,"s":"a","b":true,"o":{"x":1},"mixed":1,"nul":null}"#,
            br#"{"f":2.5,"mixed":"one"}"#,
            br#"[1,2]"#,
            b"not json",
            br#"{"n":-7,"b":false}"#,
        ];
        let schema = JsonSchema::infer(values);
        let expected = [
            ("b", JsonType::Boolean),
            ("f", JsonType::Float64),
            ("mixed", JsonType::Utf8),
            ("n", JsonType::Int64),
            ("nul", JsonType::Utf8),
            ("o", JsonType::Utf8),
            ("s", JsonType::Utf8),
        ];
        let fields: Vec<(&str, JsonType)> = schema
            .fields()
            .iter()
            .map(|(name, kind)| (name.as_str(), *kind))
            .collect();
        assert_eq!(fields, expected);
    }

    /// Values that fit fill typed columns (a missing field is null, an integer fits a float
    /// field, a mixed field takes any JSON); those that do not are errors saying why, or null.
    #[test]
    fn values_fit_or_are_refused() {
        let schema = Arc::new(JsonSchema::infer([
            br#"{"n":1,"f":0.5,"s":"x","mixed":1}"#.as_slice(),
            br#"{"mixed":"y"}"#.as_slice(),
        ]));
        let mut columns = JsonColumns::new(schema.clone(), OnMismatch::Error);
        for value in [
            Some(br#"{"n":5,"f":2,"s":"t","mixed":[1]}"#.as_slice()),
            Some(br#"{"n":6}"#.as_slice()),
            None,
        ] {
            let checked = columns.check(value).expect("fits");
            columns.append(checked);
        }
        let array = columns.finish();
        let array = array.as_struct();
        assert_eq!(array.len(), 3);
        assert!(array.is_null(2));
        let n = array
            .column_by_name("n")
            .expect("n")
            .as_primitive::<Int64Type>();
        assert_eq!((n.value(0), n.value(1)), (5, 6));
        let f = array
            .column_by_name("f")
            .expect("f")
            .as_primitive::<Float64Type>();
        assert_eq!(f.value(0), 2.0);
        assert!(f.is_null(1));
        let mixed = array
            .column_by_name("mixed")
            .expect("mixed")
            .as_string::<i32>();
        assert_eq!(mixed.value(0), "[1]");

        for (value, why) in [
            (br#"{"n":"five"}"#.as_slice(), "field \"n\" is Utf8"),
            (br#"{"n":1.5}"#.as_slice(), "field \"n\" is Float64"),
            (br#"{"s":1}"#.as_slice(), "field \"s\" is Int64"),
            (
                br#"{"new":1}"#.as_slice(),
                "field \"new\" is not in the schema",
            ),
            (br#"[1]"#.as_slice(), "not an object"),
            (b"{".as_slice(), "not JSON"),
        ] {
            let Mismatch(text) = columns.check(Some(value)).expect_err("does not fit");
            assert!(text.contains(why), "{text}");
        }
        let mut nulls = JsonColumns::new(schema, OnMismatch::Null);
        let checked = nulls.check(Some(br#"{"n":"five"}"#)).expect("null");
        assert_eq!(checked, None);
        nulls.append(checked);
        assert!(nulls.finish().is_null(0));
    }
}
