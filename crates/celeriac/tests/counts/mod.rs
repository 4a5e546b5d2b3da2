//! A `metrics` recorder that keeps every counter by name and one label, for tests to read
//! what the code under test counted.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters by `<name>:<value of the label>`.
pub struct Counts {
    label: &'static str,
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Counts {
    /// Keeps counters apart by the value of `label` (`queue`, `outcome`...).
    pub fn by(label: &'static str) -> Self {
        Self {
            label,
            counters: Mutex::default(),
        }
    }

    /// The counter `<name>:<label value>`, 0 if never counted.
    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .expect("lock")
            .get(name)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl metrics::Recorder for Counts {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let value = key
            .labels()
            .find(|l| l.key() == self.label)
            .map_or("", |l| l.value());
        let name = format!("{}:{value}", key.name());
        let c = self
            .counters
            .lock()
            .expect("lock")
            .entry(name)
            .or_default()
            .clone();
        Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
