//! Watch caches that one object cannot stop.
//!
//! A typed list fails as a whole when one item does not decode (stored before
//! a schema change, or written around validation): a watcher of
//! `Api<NodeHealthPolicy>` would never list, and a binary waiting for its
//! cache would never become ready. [`Lenient<K>`] decodes the metadata always
//! and the typed object or the error, and is a [`kube::Resource`] like `K`,
//! so that `watcher(Api<Lenient<K>>)` lists whatever the objects hold.
//! [`Sieve`] then turns its events back into events of `K` at the edge:
//! objects that decode pass, the others are left out of the cache (as if
//! deleted, also when an earlier version did decode) and named, so that the
//! binary can log, count and report them while everything else goes on.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// An object as listed or watched: its metadata, and the typed object or
/// why it does not decode.
#[derive(Clone, Debug)]
pub struct Lenient<K> {
    meta: ObjectMeta,
    /// The typed object, or why it does not decode.
    pub object: Result<K, Undecodable>,
}

/// An object that does not decode into its Rust type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecodable {
    /// Kind, e.g. `NodeHealthPolicy`.
    pub kind: String,
    /// metadata.name (empty when even the metadata does not decode).
    pub name: String,
    /// metadata.uid, when readable.
    pub uid: Option<String>,
    /// metadata.resourceVersion, when readable.
    pub resource_version: Option<String>,
    /// metadata.generation, when readable.
    pub generation: Option<i64>,
    /// The decoding error, with the fields that break the current schema
    /// when the kind has one.
    pub error: String,
}

/// Kinds that can say which fields break their current schema.
pub trait DescribeUndecodable {
    /// The fields of `object` that break the current schema, in the API
    /// server's words (empty when unknown).
    fn schema_violations(_object: &Value) -> Vec<String> {
        Vec::new()
    }
}

impl DescribeUndecodable for k8s_openapi::api::core::v1::Node {}

fn violations(schema: &'static OnceLock<Value>, crd: fn() -> Value, object: &Value) -> Vec<String> {
    let schema = schema.get_or_init(crd);
    match crate::schema_check::validate(schema, object) {
        Ok(()) => Vec::new(),
        Err(rejection) => rejection.lines(),
    }
}

fn open_api_schema<K: kube::CustomResourceExt>() -> Value {
    K::crd()
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
}

impl DescribeUndecodable for crate::NodeHealthPolicy {
    fn schema_violations(object: &Value) -> Vec<String> {
        static SCHEMA: OnceLock<Value> = OnceLock::new();
        violations(&SCHEMA, open_api_schema::<Self>, object)
    }
}

impl DescribeUndecodable for crate::NodeHealthReport {
    fn schema_violations(object: &Value) -> Vec<String> {
        static SCHEMA: OnceLock<Value> = OnceLock::new();
        violations(&SCHEMA, open_api_schema::<Self>, object)
    }
}

impl DescribeUndecodable for crate::remediation::NodeRemediation {
    fn schema_violations(object: &Value) -> Vec<String> {
        static SCHEMA: OnceLock<Value> = OnceLock::new();
        violations(&SCHEMA, open_api_schema::<Self>, object)
    }
}

impl<K> Lenient<K> {
    /// The object's metadata (always decoded).
    pub fn metadata(&self) -> &ObjectMeta {
        &self.meta
    }
}

impl<'de, K> Deserialize<'de> for Lenient<K>
where
    K: DeserializeOwned + kube::Resource<DynamicType = ()> + DescribeUndecodable,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let meta_result = value
            .get("metadata")
            .map(|m| ObjectMeta::deserialize(m).map_err(|e| e.to_string()))
            .unwrap_or_else(|| Err("no metadata".to_owned()));
        let (meta, meta_error) = match meta_result {
            Ok(meta) => (meta, None),
            Err(e) => (ObjectMeta::default(), Some(e)),
        };
        let object = match (meta_error, K::deserialize(&value)) {
            (None, Ok(k)) => Ok(k),
            (meta_error, result) => {
                let mut error = match (meta_error, result) {
                    (Some(m), _) => format!("metadata: {m}"),
                    (None, Err(e)) => e.to_string(),
                    (None, Ok(_)) => String::new(),
                };
                let fields = K::schema_violations(&value);
                if !fields.is_empty() {
                    error = format!("{error} ({})", fields.join("; "));
                }
                Err(Undecodable {
                    kind: K::kind(&()).into_owned(),
                    name: meta.name.clone().unwrap_or_default(),
                    uid: meta.uid.clone(),
                    resource_version: meta.resource_version.clone(),
                    generation: meta.generation,
                    error,
                })
            }
        };
        Ok(Self { meta, object })
    }
}

impl<K: kube::Resource> kube::Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// What [`Sieve::sift`] learnt about the objects that do not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// This object (or this version of it) does not decode; it is not in
    /// the cache.
    Undecodable(Undecodable),
    /// An object that did not decode does now, or is gone.
    Resolved { name: String },
}

/// Turns watcher events of `Lenient<K>` into events of `K`, leaving out
/// objects that do not decode and keeping the set of those. Objects are
/// keyed by name: for cluster-scoped kinds (both nodemedic kinds, Node).
#[derive(Debug, Default)]
pub struct Sieve {
    undecodable: BTreeMap<String, Undecodable>,
    /// During a re-list: the undecodable objects seen so far.
    relisting: Option<BTreeMap<String, Undecodable>>,
}

impl Sieve {
    /// Objects that do not decode now, by name.
    pub fn undecodable(&self) -> &BTreeMap<String, Undecodable> {
        &self.undecodable
    }

    /// The event for the cache of `K`, if any, and what changed.
    /// `cached(name)` is the cache's current version of an object: an
    /// object whose new version does not decode is removed from the cache.
    pub fn sift<K: Clone>(
        &mut self,
        event: Event<Lenient<K>>,
        cached: impl Fn(&str) -> Option<K>,
    ) -> (Option<Event<K>>, Vec<Notice>) {
        let mut notices = Vec::new();
        let out = match event {
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                Some(Event::Init)
            }
            Event::InitApply(obj) => match obj.object {
                Ok(k) => Some(Event::InitApply(k)),
                Err(u) => {
                    if self.undecodable.get(&u.name) != Some(&u) {
                        notices.push(Notice::Undecodable(u.clone()));
                    }
                    self.relisting
                        .get_or_insert_with(BTreeMap::new)
                        .insert(u.name.clone(), u.clone());
                    self.undecodable.insert(u.name.clone(), u);
                    None
                }
            },
            Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                for name in self.undecodable.keys() {
                    if !listed.contains_key(name) {
                        notices.push(Notice::Resolved { name: name.clone() });
                    }
                }
                self.undecodable = listed;
                Some(Event::InitDone)
            }
            Event::Apply(obj) => {
                let name = obj.meta.name.clone().unwrap_or_default();
                match obj.object {
                    Ok(k) => {
                        if self.undecodable.remove(&name).is_some() {
                            notices.push(Notice::Resolved { name });
                        }
                        Some(Event::Apply(k))
                    }
                    Err(u) => {
                        if self.undecodable.get(&name) != Some(&u) {
                            notices.push(Notice::Undecodable(u.clone()));
                        }
                        self.undecodable.insert(name.clone(), u);
                        cached(&name).map(Event::Delete)
                    }
                }
            }
            Event::Delete(obj) => {
                let name = obj.meta.name.clone().unwrap_or_default();
                if self.undecodable.remove(&name).is_some() {
                    notices.push(Notice::Resolved { name: name.clone() });
                }
                match obj.object {
                    Ok(k) => Some(Event::Delete(k)),
                    Err(_) => cached(&name).map(Event::Delete),
                }
            }
        };
        (out, notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeHealthPolicy;
    use serde_json::json;

    fn policy(name: &str, threshold: u64) -> Value {
        json!({
            "apiVersion": "nodemedic.io/v1alpha1",
            "kind": "NodeHealthPolicy",
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "7"},
            "spec": {"detectors": {"zombies": {"threshold": threshold}}},
        })
    }

    /// The reason this module exists: a typed list fails on one bad item,
    /// a lenient one does not.
    #[test]
    fn one_undecodable_item_does_not_fail_the_list() {
        let list = json!([policy("good", 5), policy("bad", 4_294_967_296)]);
        assert!(serde_json::from_value::<Vec<NodeHealthPolicy>>(list.clone()).is_err());
        let items: Vec<Lenient<NodeHealthPolicy>> =
            serde_json::from_value(list).expect("lenient list decodes");
        assert!(items[0].object.is_ok());
        let bad = items[1].object.as_ref().expect_err("bad item");
        assert_eq!(bad.kind, "NodeHealthPolicy");
        assert_eq!(bad.name, "bad");
        assert_eq!(bad.uid.as_deref(), Some("uid-bad"));
        assert!(bad.error.contains("4294967296"), "{}", bad.error);
        assert!(
            bad.error.contains(
                "spec.detectors.zombies.threshold in body should be less than or equal to 4194304"
            ),
            "the error names the field: {}",
            bad.error
        );
        assert_eq!(kube::Resource::meta(&items[1]).name.as_deref(), Some("bad"));
    }

    fn lenient(v: Value) -> Lenient<NodeHealthPolicy> {
        serde_json::from_value(v).expect("lenient")
    }

    #[test]
    fn the_sieve_leaves_undecodable_objects_out_and_names_them() {
        let mut sieve = Sieve::default();
        let none = |_: &str| None::<NodeHealthPolicy>;
        assert!(matches!(sieve.sift(Event::Init, none).0, Some(Event::Init)));
        let (ev, notices) = sieve.sift(Event::InitApply(lenient(policy("good", 5))), none);
        assert!(matches!(ev, Some(Event::InitApply(_))) && notices.is_empty());
        let (ev, notices) = sieve.sift(
            Event::InitApply(lenient(policy("bad", 4_294_967_296))),
            none,
        );
        assert!(ev.is_none());
        assert!(matches!(&notices[..], [Notice::Undecodable(u)] if u.name == "bad"));
        // Known as soon as it is listed, not only once the list is done.
        assert_eq!(sieve.undecodable().keys().collect::<Vec<_>>(), ["bad"]);
        assert!(matches!(
            sieve.sift(Event::InitDone, none).0,
            Some(Event::InitDone)
        ));
        assert_eq!(sieve.undecodable().keys().collect::<Vec<_>>(), ["bad"]);

        // The same undecodable version again is not a new notice.
        let (_, notices) = sieve.sift(Event::Apply(lenient(policy("bad", 4_294_967_296))), none);
        assert!(notices.is_empty());

        // A good object turning undecodable leaves the cache.
        let good: NodeHealthPolicy = serde_json::from_value(policy("good", 5)).expect("good");
        let cached = |name: &str| (name == "good").then(|| good.clone());
        let (ev, notices) = sieve.sift(Event::Apply(lenient(policy("good", 1u64 << 40))), cached);
        assert!(matches!(ev, Some(Event::Delete(p)) if p.metadata.name.as_deref() == Some("good")));
        assert_eq!(notices.len(), 1);
        assert_eq!(sieve.undecodable().len(), 2);

        // Fixed: it comes back and is resolved.
        let (ev, notices) = sieve.sift(Event::Apply(lenient(policy("good", 6))), none);
        assert!(matches!(ev, Some(Event::Apply(_))));
        assert_eq!(
            notices,
            [Notice::Resolved {
                name: "good".into()
            }]
        );

        // Deleted while undecodable: resolved, nothing for the cache.
        let (ev, notices) = sieve.sift(Event::Delete(lenient(policy("bad", 4_294_967_296))), none);
        assert!(ev.is_none());
        assert_eq!(notices, [Notice::Resolved { name: "bad".into() }]);
        assert!(sieve.undecodable().is_empty());

        // A re-list that no longer holds an undecodable object resolves it.
        let _ = sieve.sift(Event::Apply(lenient(policy("x", 1u64 << 40))), none);
        let _ = sieve.sift(Event::Init, none);
        let (_, notices) = sieve.sift(Event::InitDone, none);
        assert_eq!(notices, [Notice::Resolved { name: "x".into() }]);
    }
}
