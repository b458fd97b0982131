//! A Graph object's properties as the store keeps them: a sorted, exactly sized list of (name, value), names
//! shared by every object, values without nulls.
//!
//! The store holds every synced object for as long as the process runs (a reload re-projects from it), so its
//! shape is the server's largest memory cost after the entries. `serde_json::Map` spends a `String` key, a
//! 32-byte `Value` and B-tree node slack on every property of every object; here a property costs a shared
//! name (16 bytes) and a 24-byte value, with strings boxed to their length. It serialises as a plain JSON
//! object (the state file's format), and keeps `serde_json`'s accessor names (`get`, `as_str`, …) for the
//! mapping, which walks it as JSON.

use crate::directory::entry::attr_name;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};
use std::sync::Arc;

/// An object's properties, sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Props(Box<[(Arc<str>, Val)]>);

/// One property value: JSON without `null` (kept only as an array element, where its position counts).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Num(Number),
    Str(Box<str>),
    Arr(Box<[Val]>),
    Obj(Props),
}

impl Val {
    /// The value as the store keeps it: `None` for `null`, and for an object with nothing but nulls; nulls are
    /// dropped from nested objects too. A missing member and a null one read the same to the mapping, and Graph
    /// sends objects such as `onPremisesExtensionAttributes` with fifteen nulls for nearly every user. Array
    /// elements keep their positions (a null stays), since a mapping may index them.
    pub fn from_json(v: &Value) -> Option<Val> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.clone()),
            Value::String(s) => Val::Str(s.as_str().into()),
            Value::Array(a) => Val::Arr(a.iter().map(|x| Val::from_json(x).unwrap_or(Val::Null)).collect()),
            Value::Object(m) => {
                let p = Props::from_map(m);
                if p.is_empty() {
                    return None;
                }
                Val::Obj(p)
            }
        })
    }

    pub fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => Value::Number(n.clone()),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Arr(a) => Value::Array(a.iter().map(Val::to_json).collect()),
            Val::Obj(p) => p.to_json(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Val]> {
        match self {
            Val::Arr(a) => Some(a),
            _ => None,
        }
    }

    /// A property of an object value.
    pub fn get(&self, name: &str) -> Option<&Val> {
        match self {
            Val::Obj(p) => p.get(name),
            _ => None,
        }
    }
}

impl Props {
    /// The properties of a JSON object, nulls dropped.
    pub fn from_map(m: &Map<String, Value>) -> Props {
        Props::from_pairs(
            m.iter()
                .filter_map(|(k, v)| Some((attr_name(k), Val::from_json(v)?)))
                .collect(),
        )
    }

    fn from_pairs(mut pairs: Vec<(Arc<str>, Val)>) -> Props {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        // A repeated name (not valid JSON from Graph, but possible in a file) keeps its last value.
        pairs.reverse();
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        pairs.reverse();
        Props(pairs.into_boxed_slice())
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect())
    }

    pub fn get(&self, name: &str) -> Option<&Val> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(name)).ok()?;
        Some(&self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Val)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Apply a delta's properties (`None` removes one, as Graph's `null` does); whether anything changed. One
    /// pass over both lists, so an object's first sync costs a sort, not an insert per property.
    pub fn merge<'a>(&mut self, updates: impl IntoIterator<Item = (&'a str, Option<Val>)>) -> bool {
        let mut updates: Vec<(&str, Option<Val>)> = updates.into_iter().collect();
        updates.sort_by(|a, b| a.0.cmp(b.0));
        // The last of several updates to one name wins.
        updates.reverse();
        updates.dedup_by(|later, earlier| later.0 == earlier.0);
        updates.reverse();
        let mut changed = false;
        let mut out: Vec<(Arc<str>, Val)> = Vec::with_capacity(self.0.len() + updates.len());
        let mut old = std::mem::take(&mut self.0).into_vec().into_iter().peekable();
        for (name, new) in updates {
            while let Some((k, v)) = old.next_if(|(k, _)| &**k < name) {
                out.push((k, v));
            }
            let current = old.next_if(|(k, _)| &**k == name);
            match (current, new) {
                (Some((k, v)), Some(n)) => {
                    changed |= v != n;
                    out.push((k, n));
                }
                (Some(_), None) => changed = true,
                (None, Some(n)) => {
                    changed = true;
                    out.push((attr_name(name), n));
                }
                (None, None) => {}
            }
        }
        out.extend(old);
        self.0 = out.into_boxed_slice();
        changed
    }
}

impl Serialize for Props {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Val {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Null => s.serialize_unit(),
            Val::Bool(b) => s.serialize_bool(*b),
            Val::Num(n) => n.serialize(s),
            Val::Str(v) => s.serialize_str(v),
            Val::Arr(a) => a.serialize(s),
            Val::Obj(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Props {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Props, D::Error> {
        struct PropsVisitor;
        impl<'de> Visitor<'de> for PropsVisitor {
            type Value = Props;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of Graph properties")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Props, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<std::borrow::Cow<'de, str>, Value>()? {
                    if let Some(v) = Val::from_json(&v) {
                        pairs.push((attr_name(&k), v));
                    }
                }
                Ok(Props::from_pairs(pairs))
            }
        }
        d.deserialize_map(PropsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trip_without_nulls() {
        let v = json!({"displayName": "Jane", "accountEnabled": true, "n": 3, "x": null,
            "ext": {"a": null, "b": "B"}, "empty": {"a": null}, "list": ["a", null, {"z": null}]});
        let p = Props::from_map(v.as_object().unwrap());
        assert_eq!(
            p.to_json(),
            json!({"displayName": "Jane", "accountEnabled": true, "n": 3, "ext": {"b": "B"},
                "list": ["a", null, null]})
        );
        let text = serde_json::to_string(&p).unwrap();
        let back: Props = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        let old_file: Props = serde_json::from_value(v).unwrap();
        assert_eq!(old_file, p, "a state file with nulls loads compacted");
        assert_eq!(p.get("ext").and_then(|e| e.get("b")).and_then(Val::as_str), Some("B"));
        assert_eq!(p.get("accountEnabled").and_then(Val::as_bool), Some(true));
        assert!(p.get("x").is_none() && p.get("zzz").is_none());
    }

    #[test]
    fn merge_reports_changes() {
        let mut p = Props::default();
        assert!(p.merge([("b", Some(Val::Str("1".into()))), ("a", Some(Val::Bool(true)))]));
        assert_eq!(p.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b"]);
        assert!(!p.merge([("a", Some(Val::Bool(true)))]), "the same value is no change");
        assert!(!p.merge([("gone", None)]), "removing what is not there is no change");
        assert!(p.merge([("a", None), ("c", Some(Val::Str("3".into())))]));
        assert_eq!(p.to_json(), json!({"b": "1", "c": "3"}));
        assert!(p.merge([("b", Some(Val::Str("x".into()))), ("b", Some(Val::Str("2".into())))]));
        assert_eq!(p.get("b").and_then(Val::as_str), Some("2"), "the last update wins");
    }
}
