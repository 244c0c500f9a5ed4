//! The collector kinds the configuration can enable, in one table
//! ([`KINDS`]): each entry names its top-level section, how to check it and
//! which collectors it builds. A new kind is its module in
//! `exporters` plus one entry here; the list of known sections, per-entry
//! validation with key paths, the duplicate-name checks and the daemon's
//! scraper all follow from the table.

use std::fmt::Debug;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use steward_exporters::{mysql, nginx, node, phpfpm, postgres, probe, redis, Collector};

/// Every collector kind, in the order its sections are parsed, validated
/// and scraped.
pub static KINDS: &[&dyn CollectorKind] = &[
    &Table {
        key: "node",
        validate: node::NodeConfig::validate,
        build: node_collectors,
    },
    &Targets {
        key: "nginx",
        validate: nginx::NginxScrapeTarget::validate,
        unique: &[("name", |t| &t.name)],
        build: nginx::collectors,
    },
    &Targets {
        key: "phpfpm",
        validate: phpfpm::PhpFpmPool::validate,
        unique: &[
            ("name", phpfpm::PhpFpmPool::display_name),
            ("scrape_uri", |p| &p.scrape_uri),
        ],
        build: phpfpm::collectors,
    },
    &Targets {
        key: "mysql",
        validate: mysql::MysqlScrapeTarget::validate,
        unique: &[("name", |t| &t.name)],
        build: mysql::collectors,
    },
    &Targets {
        key: "postgres",
        validate: postgres::PostgresScrapeTarget::validate,
        unique: &[("name", |t| &t.name)],
        build: postgres::collectors,
    },
    &Targets {
        key: "probe",
        validate: probe::ProbeScrapeTarget::validate,
        unique: &[("name", |t| &t.name)],
        build: probe::collectors,
    },
    &Targets {
        key: "redis",
        validate: redis::RedisScrapeTarget::validate,
        unique: &[("name", |t| &t.name)],
        build: redis::collectors,
    },
];

/// `[node] enabled = false` turns the whole host collector set off.
fn node_collectors(config: &node::NodeConfig) -> Vec<Arc<dyn Collector>> {
    if config.enabled {
        node::collectors(config)
    } else {
        Vec::new()
    }
}

/// A kind of collector, configured by one top-level section.
pub trait CollectorKind: Sync {
    /// The top-level TOML key (`[node]`, `[[nginx]]`).
    fn key(&self) -> &'static str;
    /// The section when the file has none.
    fn default_section(&'static self) -> Box<dyn CollectorSection>;
    /// Deserializes the section; the error carries the path inside it.
    fn parse(
        &'static self,
        value: toml::Value,
    ) -> Result<Box<dyn CollectorSection>, serde_path_to_error::Error<toml::de::Error>>;
}

/// One kind's parsed section.
pub trait CollectorSection: Debug + Send + Sync {
    /// Semantic problems, each starting with its key path (`nginx[0].url: ...`).
    fn validate(&self) -> Vec<String>;
    /// Values that several entries share but must not (see [`duplicates`]).
    fn duplicates(&self) -> Vec<String>;
    /// The collectors this section asks for (none for an empty list).
    fn collectors(&self) -> Vec<Arc<dyn Collector>>;
    fn key(&self) -> &'static str;
    fn to_toml(&self) -> Result<toml::Value, toml::ser::Error>;
    fn clone_box(&self) -> Box<dyn CollectorSection>;
}

/// A kind configured by one table, `[key]`.
pub struct Table<T: 'static> {
    pub key: &'static str,
    /// Problems in the table, keyed below it (`collectors...: ...`).
    pub validate: fn(&T) -> Vec<String>,
    pub build: fn(&T) -> Vec<Arc<dyn Collector>>,
}

/// A kind configured as a list of scrape targets, `[[key]]`.
pub struct Targets<T: 'static> {
    pub key: &'static str,
    /// Problems in one entry, keyed below it (`url: ...`).
    pub validate: fn(&T) -> Vec<String>,
    /// Fields that must differ between entries, and how to read them.
    pub unique: &'static [(&'static str, Field<T>)],
    pub build: fn(&[T]) -> Vec<Arc<dyn Collector>>,
}

/// Reads one string field of an entry.
pub type Field<T> = for<'a> fn(&'a T) -> &'a str;

/// What [`Table`] and [`Targets`] share, so one generic [`Section`] serves
/// both.
trait Shape: Sync + 'static {
    type Value: Default + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;
    fn key(&self) -> &'static str;
    fn validate(&self, value: &Self::Value) -> Vec<String>;
    fn duplicates(&self, value: &Self::Value) -> Vec<String>;
    fn build(&self, value: &Self::Value) -> Vec<Arc<dyn Collector>>;
}

impl<T> Shape for Table<T>
where
    T: Default + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Value = T;
    fn key(&self) -> &'static str {
        self.key
    }
    fn validate(&self, value: &T) -> Vec<String> {
        let key = self.key;
        (self.validate)(value)
            .into_iter()
            .map(|e| format!("{key}.{e}"))
            .collect()
    }
    fn duplicates(&self, _: &T) -> Vec<String> {
        Vec::new()
    }
    fn build(&self, value: &T) -> Vec<Arc<dyn Collector>> {
        (self.build)(value)
    }
}

impl<T> Shape for Targets<T>
where
    T: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Value = Vec<T>;
    fn key(&self) -> &'static str {
        self.key
    }
    fn validate(&self, entries: &Vec<T>) -> Vec<String> {
        let key = self.key;
        let mut errors = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            errors.extend(
                (self.validate)(entry)
                    .into_iter()
                    .map(|e| format!("{key}[{i}].{e}")),
            );
        }
        errors
    }
    fn duplicates(&self, entries: &Vec<T>) -> Vec<String> {
        self.unique
            .iter()
            .flat_map(|(field, get)| duplicates(self.key, field, entries.iter().map(get)))
            .collect()
    }
    fn build(&self, entries: &Vec<T>) -> Vec<Arc<dyn Collector>> {
        (self.build)(entries)
    }
}

impl<S: Shape> CollectorKind for S {
    fn key(&self) -> &'static str {
        Shape::key(self)
    }
    fn default_section(&'static self) -> Box<dyn CollectorSection> {
        Box::new(Section {
            shape: self,
            value: S::Value::default(),
        })
    }
    fn parse(
        &'static self,
        value: toml::Value,
    ) -> Result<Box<dyn CollectorSection>, serde_path_to_error::Error<toml::de::Error>> {
        let value = serde_path_to_error::deserialize(value)?;
        Ok(Box::new(Section { shape: self, value }))
    }
}

/// A parsed section and the table entry it came from.
struct Section<S: Shape> {
    shape: &'static S,
    value: S::Value,
}

impl<S: Shape> Debug for Section<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

impl<S: Shape> CollectorSection for Section<S> {
    fn validate(&self) -> Vec<String> {
        self.shape.validate(&self.value)
    }
    fn duplicates(&self) -> Vec<String> {
        self.shape.duplicates(&self.value)
    }
    fn collectors(&self) -> Vec<Arc<dyn Collector>> {
        self.shape.build(&self.value)
    }
    fn key(&self) -> &'static str {
        self.shape.key()
    }
    fn to_toml(&self) -> Result<toml::Value, toml::ser::Error> {
        toml::Value::try_from(&self.value)
    }
    fn clone_box(&self) -> Box<dyn CollectorSection> {
        Box::new(Section {
            shape: self.shape,
            value: self.value.clone(),
        })
    }
}

/// The sections of every kind in [`KINDS`], in its order: defaults where the
/// file has none. Serialized as top-level keys, as the file spells them.
#[derive(Debug)]
pub struct CollectorSections(Vec<Box<dyn CollectorSection>>);

impl CollectorSections {
    pub fn iter(&self) -> impl Iterator<Item = &dyn CollectorSection> {
        self.0.iter().map(|s| s.as_ref())
    }

    /// Replaces the section of the same kind.
    pub fn set(&mut self, section: Box<dyn CollectorSection>) {
        match self.0.iter_mut().find(|s| s.key() == section.key()) {
            Some(slot) => *slot = section,
            None => self.0.push(section),
        }
    }
}

impl Default for CollectorSections {
    fn default() -> Self {
        CollectorSections(KINDS.iter().map(|k| k.default_section()).collect())
    }
}

impl Clone for CollectorSections {
    fn clone(&self) -> Self {
        CollectorSections(self.0.iter().map(|s| s.clone_box()).collect())
    }
}

impl Serialize for CollectorSections {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for section in &self.0 {
            let value = section.to_toml().map_err(serde::ser::Error::custom)?;
            map.serialize_entry(section.key(), &value)?;
        }
        map.end()
    }
}

/// Entries of one kind must differ in `key`: the name is the `target` (or
/// `probe`, `pool`) label and the `/health` entry, so two entries sharing it
/// would export the same series twice and Prometheus would reject the
/// scrape. One message per repeat, naming every entry that has the value.
fn duplicates<'a>(kind: &str, key: &str, values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, value) in values.enumerate() {
        // An empty name is reported by the entry's own validation.
        if value.trim().is_empty() {
            continue;
        }
        match seen.iter_mut().find(|(v, _)| *v == value) {
            Some((_, at)) => at.push(i),
            None => seen.push((value, vec![i])),
        }
    }
    seen.into_iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(value, at)| {
            let places: Vec<String> = at.iter().map(|i| format!("{kind}[{i}]")).collect();
            format!(
                "{kind}[{last}].{key}: {value:?} is used by {places}; each [[{kind}]] needs its own {key}, \
                 or their series and /health entries would collide",
                last = at[at.len() - 1],
                places = places.join(" and "),
            )
        })
        .collect()
}
