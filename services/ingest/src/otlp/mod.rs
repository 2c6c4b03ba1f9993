//! OTLP (OpenTelemetry protocol) into the store: traces, logs and metrics,
//! over gRPC ([`grpc`]) and HTTP with protobuf or JSON bodies (`crate::http`).
//!
//! Items that break a rule are refused one by one and reported in the
//! response's `partial_success`; the rest are stored. A request's batch id
//! is derived from its bytes, so an exporter retrying after a lost answer
//! stores nothing twice.

pub mod grpc;
mod logs;
mod metrics;
mod service;
mod traces;

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value},
    resource::v1::Resource,
};
use vigil_proto::names;
use vigil_storage::Labels;

use crate::gate::Refusal;

pub use logs::convert_logs;
pub use metrics::convert_metrics;
pub use service::{OtlpIngest, OtlpSignal};
pub use traces::convert_traces;

/// What a request converts to: the items to store, and those refused.
#[derive(Debug)]
pub struct Converted<T> {
    pub items: Vec<T>,
    pub rejected: u64,
    /// The first refusal, for the partial-success message.
    pub first_refusal: Option<Refusal>,
    /// How many were refused for each reason, for `/metrics`.
    pub by_reason: std::collections::BTreeMap<&'static str, u64>,
}

impl<T> Default for Converted<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            rejected: 0,
            first_refusal: None,
            by_reason: Default::default(),
        }
    }
}

impl<T> Converted<T> {
    pub fn reject(&mut self, refusal: Refusal) {
        self.rejected += 1;
        *self.by_reason.entry(refusal.reason).or_default() += 1;
        if self.first_refusal.is_none() {
            self.first_refusal = Some(refusal);
        }
    }

    /// The partial-success message: how many were refused and the first reason.
    pub fn message(&self) -> String {
        match &self.first_refusal {
            Some(r) if self.rejected > 1 => {
                format!("{} items refused; first: {}", self.rejected, r.message)
            }
            Some(r) => r.message.clone(),
            None => String::new(),
        }
    }
}

/// An attribute value as text: strings as they are, numbers and booleans
/// printed, bytes in hex, arrays and maps as JSON.
pub fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => value_json(other).to_string(),
        None => String::new(),
    }
}

fn value_json(value: &any_value::Value) -> serde_json::Value {
    use any_value::Value;
    match value {
        Value::StringValue(s) => serde_json::Value::String(s.clone()),
        Value::BoolValue(b) => serde_json::Value::Bool(*b),
        Value::IntValue(i) => serde_json::Value::from(*i),
        Value::DoubleValue(d) => serde_json::Value::from(*d),
        Value::BytesValue(b) => serde_json::Value::String(hex(b)),
        Value::ArrayValue(a) => serde_json::Value::Array(
            a.values
                .iter()
                .map(|v| v.value.as_ref().map_or(serde_json::Value::Null, value_json))
                .collect(),
        ),
        Value::KvlistValue(kv) => serde_json::Value::Object(
            kv.values
                .iter()
                .map(|p| {
                    (
                        p.key.clone(),
                        p.value
                            .as_ref()
                            .and_then(|v| v.value.as_ref())
                            .map_or(serde_json::Value::Null, value_json),
                    )
                })
                .collect(),
        ),
        Value::StringValueStrindex(i) => serde_json::Value::from(*i),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Attributes as labels, values as text.
pub fn attributes(attrs: &[KeyValue]) -> Labels {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
        .collect()
}

/// The resource attribute Vigil's own resource labels come from, in order
/// of preference.
const RESOURCE_KEYS: &[(&str, &[&str])] = &[
    (names::LABEL_CLUSTER, &["k8s.cluster.name"]),
    (names::LABEL_NODE, &["k8s.node.name", "host.name"]),
    (names::LABEL_NAMESPACE, &["k8s.namespace.name"]),
    (names::LABEL_APPLICATION, &["service.name"]),
    (
        names::LABEL_CONTAINER,
        &["k8s.container.name", "container.name"],
    ),
];

/// A resource, as stored with spans and logs: its service name, and its
/// attributes plus Vigil's resource labels (`cluster`, `node`, `namespace`,
/// `application`, `container`) derived from the semantic conventions.
#[derive(Debug, Clone, Default)]
pub struct ResourceInfo {
    pub service: String,
    pub labels: Labels,
    /// Only Vigil's resource labels, plus `job` and `instance` as Prometheus
    /// derives them: what metrics carry.
    pub metric_labels: Labels,
}

pub fn resource_info(resource: Option<&Resource>) -> ResourceInfo {
    let attrs = resource
        .map(|r| attributes(&r.attributes))
        .unwrap_or_default();
    let service = attrs
        .get("service.name")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| "unknown_service".to_owned());
    let mut vigil = Labels::new();
    for (label, keys) in RESOURCE_KEYS {
        if let Some(value) = keys
            .iter()
            .find_map(|k| attrs.get(*k).filter(|v| !v.is_empty()))
        {
            vigil.insert((*label).to_owned(), value.clone());
        }
    }
    let mut metric_labels = vigil.clone();
    let job = match attrs.get("service.namespace").filter(|n| !n.is_empty()) {
        Some(namespace) => format!("{namespace}/{service}"),
        None => service.clone(),
    };
    metric_labels.insert("job".to_owned(), job);
    if let Some(instance) = attrs.get("service.instance.id").filter(|i| !i.is_empty()) {
        metric_labels.insert("instance".to_owned(), instance.clone());
    }
    let mut labels = attrs;
    labels.extend(vigil);
    ResourceInfo {
        service,
        labels,
        metric_labels,
    }
}

/// Nanoseconds since the epoch as an i64, refusing what does not fit.
pub fn nanos(value: u64, what: &str) -> Result<i64, Refusal> {
    i64::try_from(value).map_err(|_| {
        Refusal::invalid(
            "invalid_timestamp",
            format!("{what} {value} ns is beyond the year 2262"),
        )
    })
}

/// A fixed-size id from bytes: empty means absent (all zero).
pub fn id<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], Refusal> {
    if bytes.is_empty() {
        return Ok([0; N]);
    }
    bytes.try_into().map_err(|_| {
        Refusal::invalid(
            "invalid_id",
            format!("{what} has {} bytes; it must have {N}", bytes.len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{self as common, KeyValueList};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    #[test]
    fn values_become_text() {
        use any_value::Value::*;
        let attrs = attributes(&[
            kv("s", StringValue("x".into())),
            kv("b", BoolValue(true)),
            kv("i", IntValue(-3)),
            kv("d", DoubleValue(0.5)),
            kv("bytes", BytesValue(vec![0xab, 0x01])),
            kv(
                "a",
                ArrayValue(common::ArrayValue {
                    values: vec![AnyValue {
                        value: Some(IntValue(1)),
                    }],
                }),
            ),
            kv(
                "m",
                KvlistValue(KeyValueList {
                    values: vec![kv("k", StringValue("v".into()))],
                }),
            ),
        ]);
        let get = |k: &str| attrs.get(k).unwrap().as_str();
        assert_eq!(get("s"), "x");
        assert_eq!(get("b"), "true");
        assert_eq!(get("i"), "-3");
        assert_eq!(get("d"), "0.5");
        assert_eq!(get("bytes"), "\"ab01\"");
        assert_eq!(get("a"), "[1]");
        assert_eq!(get("m"), r#"{"k":"v"}"#);
    }

    #[test]
    fn resource_labels_follow_semantic_conventions() {
        use any_value::Value::StringValue;
        let resource = Resource {
            attributes: vec![
                kv("service.name", StringValue("checkout".into())),
                kv("service.namespace", StringValue("shop".into())),
                kv("service.instance.id", StringValue("pod-1".into())),
                kv("k8s.namespace.name", StringValue("prod".into())),
                kv("host.name", StringValue("node-7".into())),
            ],
            ..Resource::default()
        };
        let info = resource_info(Some(&resource));
        assert_eq!(info.service, "checkout");
        assert_eq!(info.labels["namespace"], "prod");
        assert_eq!(info.labels["node"], "node-7");
        assert_eq!(info.labels["service.name"], "checkout");
        assert_eq!(info.metric_labels["job"], "shop/checkout");
        assert_eq!(info.metric_labels["instance"], "pod-1");
        assert_eq!(info.metric_labels["application"], "checkout");
        assert!(!info.metric_labels.contains_key("service.name"));
        assert_eq!(resource_info(None).service, "unknown_service");
    }

    #[test]
    fn ids_must_have_their_size() {
        assert_eq!(id::<8>(&[], "span id").unwrap(), [0; 8]);
        assert_eq!(id::<8>(&[1; 8], "span id").unwrap(), [1; 8]);
        let refusal = id::<16>(&[1; 8], "trace id").unwrap_err();
        assert!(refusal.message.contains("trace id has 8 bytes"));
    }
}
