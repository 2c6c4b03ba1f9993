//! One conformance suite, run against both backends, so that they answer
//! every question the same way: the embedded redb store and a real
//! ClickHouse server (started by scripts/test.sh, which sets
//! CLICKHOUSE_TEST_URL; without it the ClickHouse half is skipped with a
//! message, and under CI=true that is an error).

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test: a panic is the failure report

use std::{sync::Arc, time::Duration};

use vigil_runtime::time::now_ms;
use vigil_storage::{
    Event, EventBatch, EventQuery, Labels, LogBatch, LogPage, LogQuery, LogRecord, Matcher,
    MatcherOp, MetricBatch, Profile, ProfileBatch, ProfileQuery, Sample, SeriesData,
    SeriesSelector, SeriesWrite, Span, SpanBatch, SpanSummary, StackSample, StorageError,
    TelemetryStore, TraceQuery, WriteOutcome,
    clickhouse::ClickHouseStore,
    config::{ClickHouseConfig, RetentionConfig},
    redb::{RedbOptions, RedbStore},
    trace::{SpanEvent, SpanKind, SpanLink, StatusCode},
};

const HOUR: i64 = 3600 * 1000;
const DAY: i64 = 24 * HOUR;
const RETENTION_DAYS: i64 = 2;

/// A backend under test and what to clean up after it.
struct Backend {
    name: &'static str,
    store: Arc<dyn TelemetryStore>,
    _dir: Option<tempfile::TempDir>,
    /// (url, database, cluster) to drop afterwards.
    clickhouse: Option<(String, String, Option<String>)>,
}

impl Backend {
    async fn cleanup(self) {
        if let Some((url, database, cluster)) = self.clickhouse {
            let client = clickhouse::Client::default().with_url(url);
            let on_cluster = cluster
                .map(|c| format!(" ON CLUSTER {c}"))
                .unwrap_or_default();
            client
                .query(&format!("DROP DATABASE IF EXISTS {database}{on_cluster}"))
                .execute()
                .await
                .unwrap();
        }
    }
}

fn clickhouse_url() -> Option<String> {
    match std::env::var("CLICKHOUSE_TEST_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must test ClickHouse: run scripts/test.sh, which starts a server and sets CLICKHOUSE_TEST_URL"
            );
            eprintln!(
                "SKIPPING the ClickHouse half of the conformance suite: CLICKHOUSE_TEST_URL is not set \
                 (scripts/test.sh starts a server and sets it)"
            );
            None
        }
    }
}

/// A two-shard cluster (scripts/clickhouse-cluster.sh) named `vigil`.
fn cluster_url() -> Option<String> {
    match std::env::var("CLICKHOUSE_CLUSTER_TEST_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must test ClickHouse cluster mode: run scripts/test.sh, which starts a cluster and sets CLICKHOUSE_CLUSTER_TEST_URL"
            );
            eprintln!(
                "SKIPPING the ClickHouse cluster backend of the conformance suite: CLICKHOUSE_CLUSTER_TEST_URL is not set \
                 (scripts/test.sh starts a cluster and sets it)"
            );
            None
        }
    }
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open_with(
        &dir.path().join("conformance.redb"),
        RedbOptions {
            block_window_ms: HOUR,
            head_grace_ms: 0,
            metrics_retention_ms: RETENTION_DAYS * DAY,
            traces_retention_ms: RETENTION_DAYS * DAY,
            logs_retention_ms: RETENTION_DAYS * DAY,
            profiles_retention_ms: RETENTION_DAYS * DAY,
        },
    )
    .unwrap();
    let mut out = vec![Backend {
        name: "redb",
        store: Arc::new(redb),
        _dir: Some(dir),
        clickhouse: None,
    }];
    let retention = Duration::from_millis((RETENTION_DAYS * DAY) as u64);
    let retention = RetentionConfig {
        metrics: retention,
        traces: retention,
        logs: retention,
        profiles: retention,
    };
    let mut clickhouse = Vec::new();
    if let Some(url) = clickhouse_url() {
        clickhouse.push(("clickhouse", url, None));
    }
    if let Some(url) = cluster_url() {
        clickhouse.push(("clickhouse-cluster", url, Some("vigil".to_owned())));
    }
    for (name, url, cluster) in clickhouse {
        let database = format!("vigil_conformance_{:016x}", rand::random::<u64>());
        let config = ClickHouseConfig {
            url: url.clone(),
            database: database.clone(),
            cluster: cluster.clone().unwrap_or_default(),
            ..ClickHouseConfig::default()
        };
        let store = ClickHouseStore::connect(&config, &retention).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), 5);
        out.push(Backend {
            name,
            store: Arc::new(store),
            _dir: None,
            clickhouse: Some((url, database, cluster)),
        });
    }
    out
}

fn series(metric: &str, labels: &[(&str, &str)], points: &[(i64, f64)]) -> SeriesWrite {
    SeriesWrite {
        metric: metric.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        samples: points
            .iter()
            .map(|&(timestamp_ms, value)| Sample {
                timestamp_ms,
                value,
            })
            .collect(),
    }
}

fn batch(project: &str, id: &str, series: Vec<SeriesWrite>) -> MetricBatch {
    MetricBatch {
        project: project.into(),
        batch_id: id.into(),
        series,
    }
}

fn nodes(found: &[SeriesData]) -> Vec<String> {
    let mut nodes: Vec<String> = found.iter().map(|s| s.labels["node"].clone()).collect();
    nodes.sort();
    nodes
}

/// Runs `case` on every backend, naming the backend in any failure.
macro_rules! conformance {
    ($name:ident, |$store:ident, $backend:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for backend in backends().await {
                let $store: &dyn TelemetryStore = &*backend.store;
                let $backend = backend.name;
                let _ = $backend;
                $body
                backend.cleanup().await;
            }
        }
    };
}

conformance!(metric_names_and_series_listing, |store, backend| {
    let day_ago = now_ms() - DAY - 3_600_000;
    let t = now_ms() - 60_000;
    store
        .write_metrics(batch(
            "p1",
            "names",
            vec![
                series("up", &[("job", "api"), ("node", "a")], &[(t, 1.0)]),
                series("up", &[("job", "db"), ("node", "b")], &[(t, 0.0)]),
                series("http_requests_total", &[("job", "api")], &[(t, 5.0)]),
                series("old_metric", &[("job", "api")], &[(day_ago - 3 * DAY, 1.0)]),
            ],
        ))
        .await
        .unwrap();
    store
        .write_metrics(batch(
            "p2",
            "names",
            vec![series("p2_only", &[], &[(t, 1.0)])],
        ))
        .await
        .unwrap();
    assert_eq!(
        store.metric_names("p1", day_ago).await.unwrap(),
        ["http_requests_total", "up"],
        "{backend}: names of recent series, sorted, this project only"
    );
    let all = store.metric_names("p1", 0).await.unwrap();
    assert!(all.contains(&"old_metric".to_owned()), "{backend}: {all:?}");
    let selector = SeriesSelector::metric("up")
        .with(Matcher::new("job", MatcherOp::RegexMatch, "a.*").unwrap());
    let found = store.series("p1", &selector, day_ago).await.unwrap();
    assert_eq!(found.len(), 1, "{backend}: {found:?}");
    assert_eq!(found[0]["node"], "a", "{backend}");
    assert!(
        store
            .series("p2", &SeriesSelector::metric("up"), 0)
            .await
            .unwrap()
            .is_empty(),
        "{backend}: another project's series"
    );
});

conformance!(
    write_select_latest_and_project_isolation,
    |store, backend| {
        let t = now_ms() - 10 * 60 * 1000;
        let outcome = store
            .write_metrics(batch(
                "p1",
                "b1",
                vec![
                    series("cpu", &[("node", "a")], &[(t, 0.5), (t + 1000, 0.7)]),
                    series("cpu", &[("node", "b")], &[(t + 500, 0.1)]),
                    series("mem", &[("node", "a")], &[(t, 42.0)]),
                ],
            ))
            .await
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Stored { records: 4 }, "{backend}");
        store
            .write_metrics(batch(
                "p2",
                "b1",
                vec![series("cpu", &[("node", "a")], &[(t, 9.0)])],
            ))
            .await
            .unwrap();

        let all = store
            .select("p1", &SeriesSelector::metric("cpu"), t - 1000, t + 10_000)
            .await
            .unwrap();
        assert_eq!(nodes(&all), vec!["a", "b"], "{backend}");
        let a = all.iter().find(|s| s.labels["node"] == "a").unwrap();
        assert_eq!(
            a.samples,
            vec![
                Sample {
                    timestamp_ms: t,
                    value: 0.5
                },
                Sample {
                    timestamp_ms: t + 1000,
                    value: 0.7
                }
            ],
            "{backend}"
        );
        assert_eq!(a.metric, "cpu", "{backend}");

        let window = store
            .select("p1", &SeriesSelector::metric("cpu"), t + 400, t + 600)
            .await
            .unwrap();
        assert_eq!(
            nodes(&window),
            vec!["b"],
            "{backend}: range bounds are inclusive and exact"
        );

        let latest = store
            .latest("p1", &SeriesSelector::metric("cpu"), t + 600)
            .await
            .unwrap();
        assert_eq!(latest.len(), 1, "{backend}: b has nothing since t+600");
        assert_eq!(
            latest[0].samples,
            vec![Sample {
                timestamp_ms: t + 1000,
                value: 0.7
            }],
            "{backend}"
        );

        let other = store
            .select("p2", &SeriesSelector::metric("cpu"), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(other.len(), 1, "{backend}");
        assert_eq!(other[0].samples[0].value, 9.0, "{backend}");
        assert!(
            store
                .select("p3", &SeriesSelector::metric("cpu"), 0, i64::MAX)
                .await
                .unwrap()
                .is_empty()
        );
    }
);

conformance!(retried_batch_id_is_stored_once, |store, backend| {
    let t = now_ms() - 60_000;
    let first = batch(
        "p",
        "same",
        vec![series("cpu", &[("node", "a")], &[(t, 1.0)])],
    );
    assert!(matches!(
        store.write_metrics(first.clone()).await.unwrap(),
        WriteOutcome::Stored { .. }
    ));
    let mut changed = first;
    changed.series[0].samples[0].value = 99.0;
    assert_eq!(
        store.write_metrics(changed).await.unwrap(),
        WriteOutcome::Duplicate,
        "{backend}"
    );
    let got = store
        .select("p", &SeriesSelector::metric("cpu"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(
        got[0].samples,
        vec![Sample {
            timestamp_ms: t,
            value: 1.0
        }],
        "{backend}"
    );
    // The same id in another project is another batch.
    assert!(matches!(
        store
            .write_metrics(batch(
                "q",
                "same",
                vec![series("cpu", &[("node", "a")], &[(t, 1.0)])]
            ))
            .await
            .unwrap(),
        WriteOutcome::Stored { .. }
    ));
});

conformance!(a_later_write_of_the_same_sample_wins, |store, backend| {
    let t = now_ms() - 60_000;
    for (id, value) in [("b1", 1.0), ("b2", 2.0), ("b3", 3.0)] {
        store
            .write_metrics(batch(
                "p",
                id,
                vec![series("cpu", &[("node", "a")], &[(t, value)])],
            ))
            .await
            .unwrap();
    }
    let got = store
        .select("p", &SeriesSelector::metric("cpu"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(
        got[0].samples,
        vec![Sample {
            timestamp_ms: t,
            value: 3.0
        }],
        "{backend}"
    );
    let latest = store
        .latest("p", &SeriesSelector::metric("cpu"), 0)
        .await
        .unwrap();
    assert_eq!(
        latest[0].samples,
        vec![Sample {
            timestamp_ms: t,
            value: 3.0
        }],
        "{backend}"
    );
});

conformance!(label_matchers, |store, backend| {
    let t = now_ms() - 60_000;
    store
        .write_metrics(batch(
            "p",
            "b",
            vec![
                series("cpu", &[("node", "web-1"), ("zone", "eu")], &[(t, 1.0)]),
                series("cpu", &[("node", "web-2"), ("zone", "us")], &[(t, 1.0)]),
                series("cpu", &[("node", "db-1")], &[(t, 1.0)]),
                series("mem", &[("node", "web-1")], &[(t, 1.0)]),
            ],
        ))
        .await
        .unwrap();
    let select = |m: Vec<Matcher>| {
        let mut selector = SeriesSelector::metric("cpu");
        selector.matchers = m;
        async move { nodes(&store.select("p", &selector, 0, i64::MAX).await.unwrap()) }
    };
    let m = |name: &str, op, value: &str| Matcher::new(name, op, value).unwrap();
    assert_eq!(
        select(vec![m("node", MatcherOp::Equal, "web-1")]).await,
        vec!["web-1"],
        "{backend}"
    );
    assert_eq!(
        select(vec![m("node", MatcherOp::NotEqual, "web-1")]).await,
        vec!["db-1", "web-2"],
        "{backend}"
    );
    assert_eq!(
        select(vec![m("node", MatcherOp::RegexMatch, "web-.*")]).await,
        vec!["web-1", "web-2"],
        "{backend}"
    );
    assert_eq!(
        select(vec![m("node", MatcherOp::RegexNoMatch, "web-.*")]).await,
        vec!["db-1"],
        "{backend}"
    );
    assert_eq!(
        select(vec![m("node", MatcherOp::RegexMatch, "web")]).await,
        Vec::<String>::new(),
        "{backend}: anchored"
    );
    assert_eq!(
        select(vec![m("zone", MatcherOp::Equal, "")]).await,
        vec!["db-1"],
        "{backend}: absent = empty"
    );
    assert_eq!(
        select(vec![m("zone", MatcherOp::NotEqual, "")]).await,
        vec!["web-1", "web-2"],
        "{backend}"
    );
    assert_eq!(
        select(vec![
            m("node", MatcherOp::RegexMatch, "web-.*"),
            m("zone", MatcherOp::Equal, "us")
        ])
        .await,
        vec!["web-2"],
        "{backend}: all matchers apply"
    );
    assert_eq!(
        select(vec![m("node", MatcherOp::Equal, "nope")]).await,
        Vec::<String>::new(),
        "{backend}"
    );
});

conformance!(bad_input_is_refused_whole, |store, backend| {
    let t = now_ms() - 60_000;
    let good = series("ok_metric", &[("node", "a")], &[(t, 1.0)]);
    let cases = [
        (series("bad-name", &[], &[(t, 1.0)]), "bad-name"),
        (series("m", &[("bad label", "x")], &[(t, 1.0)]), "bad label"),
        (series("m", &[("__name__", "x")], &[(t, 1.0)]), "reserved"),
        (series("m", &[], &[(t, f64::NAN)]), "finite"),
        (series("m", &[], &[(t, f64::INFINITY)]), "finite"),
        (series("m", &[], &[(-1, 1.0)]), "outside"),
        (
            series("m", &[("node", &"x".repeat(5000))], &[(t, 1.0)]),
            "bytes",
        ),
    ];
    for (i, (bad, needle)) in cases.into_iter().enumerate() {
        let err = store
            .write_metrics(batch("p", &format!("bad-{i}"), vec![good.clone(), bad]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidData(_)),
            "{backend}: {err}"
        );
        assert!(err.to_string().contains(needle), "{backend}: {err}");
    }
    let stored = store
        .select("p", &SeriesSelector::metric("ok_metric"), 0, i64::MAX)
        .await
        .unwrap();
    assert!(
        stored.is_empty(),
        "{backend}: nothing of a refused batch is stored"
    );
    // A refused batch id is not remembered: the corrected batch is stored.
    assert!(matches!(
        store
            .write_metrics(batch("p", "bad-0", vec![good]))
            .await
            .unwrap(),
        WriteOutcome::Stored { records: 1 }
    ));
});

conformance!(retention_drops_old_data_and_keeps_new, |store, backend| {
    let now = now_ms();
    let old = now - (RETENTION_DAYS + 3) * DAY;
    let recent = now - HOUR;
    store
        .write_metrics(batch(
            "p",
            "b1",
            vec![
                series("cpu", &[("node", "gone")], &[(old, 1.0), (old + 1000, 2.0)]),
                series("cpu", &[("node", "mixed")], &[(old, 3.0), (recent, 4.0)]),
            ],
        ))
        .await
        .unwrap();
    let before = store
        .select("p", &SeriesSelector::metric("cpu"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(nodes(&before), vec!["gone", "mixed"], "{backend}");
    store.maintain(now).await.unwrap();
    let after = store
        .select("p", &SeriesSelector::metric("cpu"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(nodes(&after), vec!["mixed"], "{backend}: old series gone");
    assert_eq!(
        after[0].samples,
        vec![Sample {
            timestamp_ms: recent,
            value: 4.0
        }],
        "{backend}"
    );
    let latest = store
        .latest("p", &SeriesSelector::metric("cpu"), 0)
        .await
        .unwrap();
    assert_eq!(latest.len(), 1, "{backend}");
    // A second round finds nothing more to drop and changes no answer.
    store.maintain(now).await.unwrap();
    assert_eq!(
        store
            .select("p", &SeriesSelector::metric("cpu"), 0, i64::MAX)
            .await
            .unwrap(),
        after
    );
});

// ---- spans ----

fn span(
    trace: u8,
    id: u8,
    parent: u8,
    service: &str,
    name: &str,
    start_ns: i64,
    duration_ns: i64,
) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: [parent; 8],
        name: name.into(),
        kind: SpanKind::Server,
        start_ns,
        end_ns: start_ns + duration_ns,
        status: StatusCode::Unset,
        status_message: String::new(),
        service: service.into(),
        resource: [
            ("service.name".to_owned(), service.to_owned()),
            ("node".to_owned(), "n1".to_owned()),
        ]
        .into(),
        attributes: [("http.route".to_owned(), "/api".to_owned())].into(),
        events: vec![],
        links: vec![],
    }
}

fn span_batch(project: &str, id: &str, spans: Vec<Span>) -> SpanBatch {
    SpanBatch {
        project: project.into(),
        batch_id: id.into(),
        spans,
    }
}

conformance!(spans_round_trip_by_trace_id, |store, backend| {
    let t = (now_ms() - 60_000) * 1_000_000;
    let mut root = span(1, 1, 0, "web", "GET /api", t, 5_000_000);
    root.status = StatusCode::Error;
    root.status_message = "upstream failed: 'quoted' \\ text".into();
    root.kind = SpanKind::Server;
    root.events = vec![SpanEvent {
        time_ns: t + 10,
        name: "exception".into(),
        attributes: [("exception.message".to_owned(), "boom ünïcode".to_owned())].into(),
    }];
    root.links = vec![SpanLink {
        trace_id: [9; 16],
        span_id: [9; 8],
        attributes: [("kind".to_owned(), "follows".to_owned())].into(),
    }];
    let mut child = span(1, 2, 1, "db", "SELECT", t + 1_000, 2_000_000);
    child.kind = SpanKind::Client;
    let late_child = span(1, 3, 1, "db", "SELECT", t + 2_000, 1_000_000);
    let other = span(2, 1, 0, "web", "GET /health", t, 1_000);
    let outcome = store
        .write_spans(span_batch(
            "p",
            "s1",
            vec![late_child.clone(), root.clone(), other, child.clone()],
        ))
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Stored { records: 4 }, "{backend}");
    let trace = store.trace("p", [1; 16]).await.unwrap();
    assert_eq!(
        trace,
        vec![root, child, late_child],
        "{backend}: every field, start order"
    );
    assert!(
        store.trace("p", [7; 16]).await.unwrap().is_empty(),
        "{backend}"
    );
    assert!(
        store.trace("other", [1; 16]).await.unwrap().is_empty(),
        "{backend}: projects are apart"
    );
});

conformance!(span_search_newest_first_across_batches, |store, backend| {
    let t = (now_ms() - 600_000) * 1_000_000;
    // Batches whose time ranges overlap: the first holds the oldest and the
    // newest span, later ones the middle.
    let s = |trace: u8, service: &str, at: i64| span(trace, 1, 0, service, "op", t + at, 1_000);
    let writes = [
        vec![s(1, "web", 0), s(9, "web", 9_000)],
        vec![s(2, "db", 2_000), s(3, "web", 3_000)],
        vec![s(4, "web", 4_000), s(5, "db", 5_000)],
        vec![s(6, "web", 6_000), s(7, "web", 7_000), s(8, "db", 8_000)],
    ];
    for (i, spans) in writes.into_iter().enumerate() {
        store
            .write_spans(span_batch("p", &format!("b{i}"), spans))
            .await
            .unwrap();
    }
    let search = |service: Option<&str>, limit: usize, start: i64, end: i64| TraceQuery {
        service: service.map(str::to_owned),
        start_ns: t + start,
        end_ns: t + end,
        limit,
        ..TraceQuery::default()
    };
    let traces = |found: Vec<SpanSummary>| found.iter().map(|s| s.trace_id[0]).collect::<Vec<_>>();
    let all = store
        .search_spans("p", &search(None, 3, 0, 10_000))
        .await
        .unwrap();
    assert_eq!(traces(all), [9, 8, 7], "{backend}: newest three");
    let web = store
        .search_spans("p", &search(Some("web"), 4, 0, 10_000))
        .await
        .unwrap();
    assert_eq!(traces(web), [9, 7, 6, 4], "{backend}: newest four of web");
    let window = store
        .search_spans("p", &search(None, 10, 2_000, 5_000))
        .await
        .unwrap();
    assert_eq!(
        traces(window),
        [5, 4, 3, 2],
        "{backend}: inside the window only"
    );
});

conformance!(
    a_span_written_again_reads_in_its_later_form,
    |store, backend| {
        let t = (now_ms() - 60_000) * 1_000_000;
        let first = span(1, 1, 0, "web", "GET /", t, 1_000);
        store
            .write_spans(span_batch(
                "p",
                "first",
                vec![first.clone(), span(1, 2, 1, "db", "SELECT", t, 10)],
            ))
            .await
            .unwrap();
        let mut again = first;
        again.status = StatusCode::Error;
        again.status_message = "retried export, later state".into();
        store
            .write_spans(span_batch("p", "second", vec![again.clone()]))
            .await
            .unwrap();
        let trace = store.trace("p", [1; 16]).await.unwrap();
        assert_eq!(trace.len(), 2, "{backend}: the span once");
        assert!(trace.contains(&again), "{backend}: in its later form");
    }
);

conformance!(span_search_filters_and_orders, |store, backend| {
    let t = (now_ms() - 60_000) * 1_000_000;
    let mut failed = span(3, 3, 0, "web", "POST /pay", t + 3_000, 900_000_000);
    failed.status = StatusCode::Error;
    store
        .write_spans(span_batch(
            "p",
            "s",
            vec![
                span(1, 1, 0, "web", "GET /", t + 1_000, 10_000_000),
                span(2, 2, 0, "web", "GET /", t + 2_000, 200_000_000),
                failed,
                span(4, 4, 0, "db", "SELECT", t + 4_000, 1_000_000),
            ],
        ))
        .await
        .unwrap();
    let search = |q: TraceQuery| async move { store.search_spans("p", &q).await.unwrap() };
    let all = TraceQuery {
        start_ns: t,
        end_ns: t + 10_000,
        ..TraceQuery::default()
    };
    let ids = |found: Vec<SpanSummary>| found.iter().map(|s| s.trace_id[0]).collect::<Vec<_>>();
    assert_eq!(
        ids(search(all.clone()).await),
        vec![4, 3, 2, 1],
        "{backend}: newest first"
    );
    assert_eq!(
        ids(search(TraceQuery {
            service: Some("web".into()),
            ..all.clone()
        })
        .await),
        vec![3, 2, 1],
        "{backend}"
    );
    assert_eq!(
        ids(search(TraceQuery {
            operation: Some("GET /".into()),
            ..all.clone()
        })
        .await),
        vec![2, 1],
        "{backend}"
    );
    assert_eq!(
        ids(search(TraceQuery {
            min_duration_ns: Some(100_000_000),
            ..all.clone()
        })
        .await),
        vec![3, 2],
        "{backend}"
    );
    assert_eq!(
        ids(search(TraceQuery {
            max_duration_ns: Some(10_000_000),
            ..all.clone()
        })
        .await),
        vec![4, 1],
        "{backend}"
    );
    assert_eq!(
        ids(search(TraceQuery {
            status: Some(StatusCode::Error),
            ..all.clone()
        })
        .await),
        vec![3],
        "{backend}"
    );
    assert_eq!(
        ids(search(TraceQuery {
            start_ns: t + 1_500,
            end_ns: t + 3_000,
            ..all.clone()
        })
        .await),
        vec![3, 2],
        "{backend}: inclusive time bounds"
    );
    assert_eq!(
        ids(search(TraceQuery {
            limit: 2,
            ..all.clone()
        })
        .await),
        vec![4, 3],
        "{backend}"
    );
    assert_eq!(
        ids(search(TraceQuery {
            service: Some("web".into()),
            limit: 1,
            ..all.clone()
        })
        .await),
        vec![3],
        "{backend}"
    );
    let summary = &search(TraceQuery {
        operation: Some("SELECT".into()),
        ..all.clone()
    })
    .await[0];
    assert_eq!(
        (
            summary.service.as_str(),
            summary.duration_ns,
            summary.span_id
        ),
        ("db", 1_000_000, [4; 8]),
        "{backend}"
    );
    assert!(
        search(TraceQuery {
            service: Some("it's".into()),
            ..all
        })
        .await
        .is_empty(),
        "{backend}"
    );
});

conformance!(
    span_batches_are_idempotent_and_apart_from_metrics,
    |store, backend| {
        let t = (now_ms() - 60_000) * 1_000_000;
        let batch = span_batch("p", "same", vec![span(1, 1, 0, "web", "GET /", t, 1_000)]);
        assert!(matches!(
            store.write_spans(batch.clone()).await.unwrap(),
            WriteOutcome::Stored { records: 1 }
        ));
        assert_eq!(
            store.write_spans(batch).await.unwrap(),
            WriteOutcome::Duplicate,
            "{backend}"
        );
        let metrics = batch_of_one("p", "same", now_ms() - 60_000);
        assert!(
            matches!(
                store.write_metrics(metrics).await.unwrap(),
                WriteOutcome::Stored { .. }
            ),
            "{backend}: metric and span batch ids do not collide"
        );
        assert_eq!(
            store.trace("p", [1; 16]).await.unwrap().len(),
            1,
            "{backend}"
        );
    }
);

fn batch_of_one(project: &str, id: &str, t: i64) -> MetricBatch {
    batch(
        project,
        id,
        vec![series("cpu", &[("node", "a")], &[(t, 1.0)])],
    )
}

conformance!(bad_spans_are_refused_whole, |store, backend| {
    let t = (now_ms() - 60_000) * 1_000_000;
    let good = span(1, 1, 0, "web", "GET /", t, 1_000);
    let mut zero_trace = span(2, 2, 0, "web", "x", t, 1);
    zero_trace.trace_id = [0; 16];
    let mut zero_span = span(2, 2, 0, "web", "x", t, 1);
    zero_span.span_id = [0; 8];
    let mut backwards = span(2, 2, 0, "web", "x", t, 1);
    backwards.end_ns = t - 1;
    let nameless = span(2, 2, 0, "web", "", t, 1);
    let mut crowded = span(2, 2, 0, "web", "x", t, 1);
    crowded.attributes = (0..200)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let ancient = span(2, 2, 0, "web", "x", -5, 1);
    for (i, (bad, needle)) in [
        (zero_trace, "trace id"),
        (zero_span, "span id"),
        (backwards, "ends before"),
        (nameless, "name"),
        (crowded, "attributes"),
        (ancient, "outside"),
    ]
    .into_iter()
    .enumerate()
    {
        let err = store
            .write_spans(span_batch(
                "p",
                &format!("bad-{i}"),
                vec![good.clone(), bad],
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidData(_)),
            "{backend}: {err}"
        );
        assert!(err.to_string().contains(needle), "{backend}: {err}");
    }
    assert!(
        store.trace("p", [1; 16]).await.unwrap().is_empty(),
        "{backend}: nothing stored"
    );
});

conformance!(span_retention, |store, backend| {
    let now = now_ms();
    let old = (now - (RETENTION_DAYS + 3) * DAY) * 1_000_000;
    let recent = (now - HOUR) * 1_000_000;
    store
        .write_spans(span_batch(
            "p",
            "s",
            vec![
                span(1, 1, 0, "web", "old", old, 1_000),
                span(2, 2, 0, "web", "new", recent, 1_000),
            ],
        ))
        .await
        .unwrap();
    store.maintain(now).await.unwrap();
    assert!(
        store.trace("p", [1; 16]).await.unwrap().is_empty(),
        "{backend}: old trace gone"
    );
    assert_eq!(
        store.trace("p", [2; 16]).await.unwrap().len(),
        1,
        "{backend}: new trace kept"
    );
    let found = store
        .search_spans(
            "p",
            &TraceQuery {
                start_ns: 0,
                end_ns: i64::MAX,
                ..TraceQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec!["new"],
        "{backend}"
    );
});

// ---- logs ----

fn log(time_ns: i64, severity: u8, service: &str, body: &str) -> LogRecord {
    LogRecord {
        time_ns,
        severity,
        severity_text: String::new(),
        body: body.into(),
        service: service.into(),
        resource: [("namespace".to_owned(), "shop".to_owned())].into(),
        attributes: [("logger".to_owned(), "main".to_owned())].into(),
        trace_id: [0; 16],
        span_id: [0; 8],
        pattern_id: 0,
    }
}

fn log_batch(project: &str, id: &str, records: Vec<LogRecord>) -> LogBatch {
    LogBatch {
        project: project.into(),
        batch_id: id.into(),
        records,
    }
}

conformance!(log_pages_across_interleaved_batches, |store, backend| {
    let t = (now_ms() - 600_000) * 1_000_000;
    // Five batches whose records interleave in time: record k of batch b is
    // at t + (5k + b) µs. Every third is an error of "api" in one trace.
    for b in 0..5i64 {
        let records = (0..10i64)
            .map(|k| {
                let n = 5 * k + b;
                let mut r = log(t + n * 1_000, 9, "web", &format!("line {n} ok"));
                if n % 3 == 0 {
                    r = log(
                        t + n * 1_000,
                        17,
                        "api",
                        &format!("line {n} failed upstream"),
                    );
                    r.trace_id = [7; 16];
                }
                r
            })
            .collect();
        store
            .write_logs(log_batch("p", &format!("b{b}"), records))
            .await
            .unwrap();
    }
    let pages = |query: LogQuery| async move {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .search_logs(
                    "p",
                    &LogQuery {
                        after,
                        limit: 7,
                        ..query.clone()
                    },
                )
                .await
                .unwrap();
            seen.extend(page.entries.iter().map(|e| (e.record.time_ns - t) / 1_000));
            match page.next {
                Some(next) => after = Some(next),
                None => break seen,
            }
        }
    };
    let everything = LogQuery {
        start_ns: t,
        end_ns: t + 100_000,
        ..LogQuery::default()
    };
    let all = pages(everything.clone()).await;
    assert_eq!(
        all,
        (0..50).rev().collect::<Vec<i64>>(),
        "{backend}: every record once, newest first"
    );
    let failed = pages(LogQuery {
        text: Some("failed upstream".into()),
        service: Some("api".into()),
        trace_id: Some([7; 16]),
        ..everything
    })
    .await;
    let expected: Vec<i64> = (0..50).rev().filter(|n| n % 3 == 0).collect();
    assert_eq!(
        failed, expected,
        "{backend}: text, service and trace together"
    );
});

conformance!(log_search_filters_text_and_pages, |store, backend| {
    let t = (now_ms() - 60_000) * 1_000_000;
    let mut traced = log(t + 5, 17, "api", "Payment FAILED for order 42: timeout");
    traced.trace_id = [3; 16];
    traced.span_id = [4; 8];
    traced.pattern_id = 77;
    traced
        .resource
        .insert("namespace".into(), "payments".into());
    let records = vec![
        log(t + 1, 9, "api", "GET /orders 200 in 12ms"),
        log(t + 2, 9, "api", "GET /orders/42 200 in 3ms"),
        log(t + 3, 13, "worker", "retrying order 42 after timeout"),
        log(t + 4, 9, "api", "GET /health 200"),
        traced,
        log(t + 6, 21, "worker", "panic: index out of range"),
    ];
    let outcome = store
        .write_logs(log_batch("p", "l1", records))
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Stored { records: 6 }, "{backend}");
    store
        .write_logs(log_batch(
            "q",
            "l1",
            vec![log(t + 1, 9, "api", "other project order 42")],
        ))
        .await
        .unwrap();
    let all = LogQuery {
        start_ns: t,
        end_ns: t + 100,
        ..LogQuery::default()
    };
    let search = |q: LogQuery| async move { store.search_logs("p", &q).await.unwrap() };
    let times = |page: LogPage| {
        page.entries
            .iter()
            .map(|e| e.record.time_ns - t)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        times(search(all.clone()).await),
        vec![6, 5, 4, 3, 2, 1],
        "{backend}: newest first"
    );
    let text = |s: &str| LogQuery {
        text: Some(s.into()),
        ..all.clone()
    };
    assert_eq!(
        times(search(text("ORDER 42")).await),
        vec![5, 3],
        "{backend}: tokens, any case, all of them"
    );
    assert_eq!(
        times(search(text("timeout")).await),
        vec![5, 3],
        "{backend}"
    );
    assert_eq!(
        times(search(text("orders")).await),
        vec![2, 1],
        "{backend}: whole tokens only"
    );
    assert_eq!(
        times(search(text("time")).await),
        Vec::<i64>::new(),
        "{backend}"
    );
    assert_eq!(
        times(
            search(LogQuery {
                service: Some("worker".into()),
                ..all.clone()
            })
            .await
        ),
        vec![6, 3],
        "{backend}"
    );
    assert_eq!(
        times(
            search(LogQuery {
                min_severity: Some(17),
                ..all.clone()
            })
            .await
        ),
        vec![6, 5],
        "{backend}"
    );
    assert_eq!(
        times(
            search(LogQuery {
                pattern_id: Some(77),
                ..all.clone()
            })
            .await
        ),
        vec![5],
        "{backend}"
    );
    assert_eq!(
        times(
            search(LogQuery {
                trace_id: Some([3; 16]),
                ..all.clone()
            })
            .await
        ),
        vec![5],
        "{backend}"
    );
    assert_eq!(
        times(
            search(LogQuery {
                resource: vec![("namespace".into(), "payments".into())],
                ..all.clone()
            })
            .await
        ),
        vec![5],
        "{backend}"
    );
    assert_eq!(
        times(
            search(LogQuery {
                resource: vec![("zone".into(), "".into())],
                ..all.clone()
            })
            .await
        ),
        Vec::<i64>::new(),
        "{backend}: a missing attribute matches nothing"
    );
    assert_eq!(
        times(
            search(LogQuery {
                start_ns: t + 2,
                end_ns: t + 4,
                ..all.clone()
            })
            .await
        ),
        vec![4, 3, 2],
        "{backend}: inclusive bounds"
    );
    // Pagination: pages of 4 then 2, no overlap, no gap.
    let first = search(LogQuery {
        limit: 4,
        ..all.clone()
    })
    .await;
    let next = first.next.expect("more than one page");
    assert_eq!(times(first), vec![6, 5, 4, 3], "{backend}");
    let second = search(LogQuery {
        limit: 4,
        after: Some(next),
        ..all.clone()
    })
    .await;
    assert!(second.next.is_none(), "{backend}: last page");
    assert_eq!(times(second), vec![2, 1], "{backend}");
    // Every field comes back.
    let page = search(LogQuery {
        pattern_id: Some(77),
        ..all
    })
    .await;
    let entry = &page.entries[0];
    assert_eq!(entry.record.span_id, [4; 8], "{backend}");
    assert_eq!(
        entry.record.body, "Payment FAILED for order 42: timeout",
        "{backend}"
    );
    assert_eq!(entry.record.attributes["logger"], "main", "{backend}");
});

conformance!(
    log_batches_idempotent_and_bad_logs_refused,
    |store, backend| {
        let t = (now_ms() - 60_000) * 1_000_000;
        let batch = log_batch("p", "same", vec![log(t, 9, "api", "hello")]);
        assert!(matches!(
            store.write_logs(batch.clone()).await.unwrap(),
            WriteOutcome::Stored { records: 1 }
        ));
        assert_eq!(
            store.write_logs(batch).await.unwrap(),
            WriteOutcome::Duplicate,
            "{backend}"
        );
        let query = LogQuery {
            start_ns: 0,
            end_ns: i64::MAX,
            ..LogQuery::default()
        };
        assert_eq!(
            store.search_logs("p", &query).await.unwrap().entries.len(),
            1,
            "{backend}"
        );
        let good = log(t + 1, 9, "api", "fine");
        for (i, (bad, needle)) in [
            (log(t, 30, "api", "x"), "severity"),
            (log(-1, 9, "api", "x"), "outside"),
            (log(t, 9, "api", &"x".repeat(70_000)), "bytes"),
        ]
        .into_iter()
        .enumerate()
        {
            let err = store
                .write_logs(log_batch("p", &format!("bad-{i}"), vec![good.clone(), bad]))
                .await
                .unwrap_err();
            assert!(err.to_string().contains(needle), "{backend}: {err}");
        }
        assert_eq!(
            store.search_logs("p", &query).await.unwrap().entries.len(),
            1,
            "{backend}: nothing added"
        );
    }
);

conformance!(log_retention, |store, backend| {
    let now = now_ms();
    let old = (now - (RETENTION_DAYS + 3) * DAY) * 1_000_000;
    let recent = (now - HOUR) * 1_000_000;
    store
        .write_logs(log_batch(
            "p",
            "l",
            vec![
                log(old, 9, "api", "old line"),
                log(recent, 9, "api", "new line"),
            ],
        ))
        .await
        .unwrap();
    store.maintain(now).await.unwrap();
    let query = LogQuery {
        start_ns: 0,
        end_ns: i64::MAX,
        ..LogQuery::default()
    };
    let page = store.search_logs("p", &query).await.unwrap();
    let bodies: Vec<&str> = page
        .entries
        .iter()
        .map(|e| e.record.body.as_str())
        .collect();
    assert_eq!(bodies, vec!["new line"], "{backend}");
    let by_text = store
        .search_logs(
            "p",
            &LogQuery {
                text: Some("old".into()),
                ..query
            },
        )
        .await
        .unwrap();
    assert!(
        by_text.entries.is_empty(),
        "{backend}: the text index forgot it too"
    );
});

// ---- profiles and events ----

fn stack(frames: &[&str], value: u64) -> StackSample {
    StackSample {
        frames: frames.iter().map(|f| (*f).to_owned()).collect(),
        value,
    }
}

fn profile(time_ns: i64, service: &str, stacks: Vec<StackSample>) -> Profile {
    Profile {
        time_ns,
        duration_ns: 10_000_000_000,
        profile_type: "cpu".into(),
        service: service.into(),
        resource: [("node".to_owned(), "n1".to_owned())].into(),
        stacks,
    }
}

conformance!(profiles_merge_over_a_window, |store, backend| {
    let t = (now_ms() - 60_000) * 1_000_000;
    let batch = ProfileBatch {
        project: "p".into(),
        batch_id: "pr1".into(),
        profiles: vec![
            profile(
                t,
                "web",
                vec![
                    stack(&["main", "serve", "parse"], 5),
                    stack(&["main", "gc"], 2),
                ],
            ),
            profile(
                t + 10_000_000_000,
                "web",
                vec![
                    stack(&["main", "serve", "parse"], 3),
                    stack(&["main", "idle"], 9),
                ],
            ),
            profile(
                t + 20_000_000_000,
                "db",
                vec![stack(&["main", "query"], 100)],
            ),
        ],
    };
    assert!(matches!(
        store.write_profiles(batch.clone()).await.unwrap(),
        WriteOutcome::Stored { records: 3 }
    ));
    assert_eq!(
        store.write_profiles(batch).await.unwrap(),
        WriteOutcome::Duplicate,
        "{backend}"
    );
    let query = ProfileQuery {
        start_ns: t,
        end_ns: t + 30_000_000_000,
        profile_type: "cpu".into(),
        service: Some("web".into()),
        resource: vec![("node".into(), "n1".into())],
    };
    assert_eq!(
        store.merge_profiles("p", &query).await.unwrap(),
        vec![
            stack(&["main", "idle"], 9),
            stack(&["main", "serve", "parse"], 8),
            stack(&["main", "gc"], 2)
        ],
        "{backend}: equal stacks summed, largest first"
    );
    let first_window = ProfileQuery {
        end_ns: t,
        ..query.clone()
    };
    assert_eq!(
        store
            .merge_profiles("p", &first_window)
            .await
            .unwrap()
            .len(),
        2,
        "{backend}"
    );
    let everything = ProfileQuery {
        service: None,
        resource: vec![],
        ..query.clone()
    };
    assert_eq!(
        store.merge_profiles("p", &everything).await.unwrap()[0],
        stack(&["main", "query"], 100)
    );
    let other_type = ProfileQuery {
        profile_type: "alloc".into(),
        ..query
    };
    assert!(
        store
            .merge_profiles("p", &other_type)
            .await
            .unwrap()
            .is_empty(),
        "{backend}"
    );
    let bad = ProfileBatch {
        project: "p".into(),
        batch_id: "bad".into(),
        profiles: vec![profile(t, "web", vec![stack(&[], 1)])],
    };
    assert!(
        store
            .write_profiles(bad)
            .await
            .unwrap_err()
            .to_string()
            .contains("frames"),
        "{backend}"
    );
});

conformance!(events_listed_newest_first, |store, backend| {
    let t = (now_ms() - 60_000) * 1_000_000;
    let event = |dt: i64, kind: &str, reason: &str, object: &str| Event {
        time_ns: t + dt,
        kind: kind.into(),
        reason: reason.into(),
        object: object.into(),
        message: format!("{reason} on {object}"),
        resource: [("namespace".to_owned(), "shop".to_owned())].into(),
    };
    let batch = EventBatch {
        project: "p".into(),
        batch_id: "e1".into(),
        events: vec![
            event(1, "Normal", "Scheduled", "Pod/shop/web-1"),
            event(2, "Warning", "BackOff", "Pod/shop/web-1"),
            event(3, "Warning", "OOMKilling", "Node/n1"),
            event(4, "Inventory", "Created", "Deployment/shop/web"),
        ],
    };
    assert!(matches!(
        store.write_events(batch.clone()).await.unwrap(),
        WriteOutcome::Stored { records: 4 }
    ));
    assert_eq!(
        store.write_events(batch).await.unwrap(),
        WriteOutcome::Duplicate,
        "{backend}"
    );
    let all = EventQuery {
        start_ns: t,
        end_ns: t + 10,
        ..EventQuery::default()
    };
    let reasons = |events: Vec<Event>| events.into_iter().map(|e| e.reason).collect::<Vec<_>>();
    assert_eq!(
        reasons(store.list_events("p", &all).await.unwrap()),
        vec!["Created", "OOMKilling", "BackOff", "Scheduled"],
        "{backend}"
    );
    let warnings = EventQuery {
        kind: Some("Warning".into()),
        ..all.clone()
    };
    assert_eq!(
        reasons(store.list_events("p", &warnings).await.unwrap()),
        vec!["OOMKilling", "BackOff"]
    );
    let oom = EventQuery {
        reason: Some("OOMKilling".into()),
        ..all.clone()
    };
    let found = store.list_events("p", &oom).await.unwrap();
    assert_eq!(found[0].object, "Node/n1", "{backend}");
    assert_eq!(found[0].message, "OOMKilling on Node/n1", "{backend}");
    let limited = EventQuery {
        limit: 1,
        ..all.clone()
    };
    assert_eq!(
        reasons(store.list_events("p", &limited).await.unwrap()),
        vec!["Created"],
        "{backend}"
    );
    let elsewhere = EventQuery {
        resource: vec![("namespace".into(), "other".into())],
        ..all
    };
    assert!(
        store.list_events("p", &elsewhere).await.unwrap().is_empty(),
        "{backend}"
    );
});

conformance!(profile_and_event_retention, |store, backend| {
    let now = now_ms();
    let old = (now - (RETENTION_DAYS + 3) * DAY) * 1_000_000;
    let recent = (now - HOUR) * 1_000_000;
    store
        .write_profiles(ProfileBatch {
            project: "p".into(),
            batch_id: "pr".into(),
            profiles: vec![
                profile(old, "web", vec![stack(&["old"], 1)]),
                profile(recent, "web", vec![stack(&["new"], 1)]),
            ],
        })
        .await
        .unwrap();
    let event = |time_ns: i64, reason: &str| Event {
        time_ns,
        kind: "Warning".into(),
        reason: reason.into(),
        object: "Pod/x".into(),
        message: String::new(),
        resource: Labels::new(),
    };
    store
        .write_events(EventBatch {
            project: "p".into(),
            batch_id: "ev".into(),
            events: vec![event(old, "Old"), event(recent, "New")],
        })
        .await
        .unwrap();
    store.maintain(now).await.unwrap();
    let profiles = store
        .merge_profiles(
            "p",
            &ProfileQuery {
                start_ns: 0,
                end_ns: i64::MAX,
                profile_type: "cpu".into(),
                ..ProfileQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(profiles, vec![stack(&["new"], 1)], "{backend}");
    let events = store
        .list_events(
            "p",
            &EventQuery {
                start_ns: 0,
                end_ns: i64::MAX,
                ..EventQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
        vec!["New"],
        "{backend}"
    );
});
