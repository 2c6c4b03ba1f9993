//! Every ingest limit and rule, one by one, through the real servers: the
//! answer a sender gets (HTTP status or gRPC code, a message naming the
//! limit, a retry hint when retrying helps) and the count in `/metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use common::{Ingest, KEY, PROJECT, now_ms};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_client::TraceServiceClient,
    },
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;
use vigil_ingest::remote_write::{Label, PromSample, TimeSeries, WriteRequest};
use vigil_storage::SeriesSelector;

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn post(url: String, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> Answer {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.post(&url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut response = request.send(&body[..]).unwrap();
        Answer {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: response.body_mut().read_to_vec().unwrap(),
        }
    })
    .await
    .unwrap()
}

fn span(id: u8, start_ns: i64) -> Span {
    Span {
        trace_id: vec![9; 16],
        span_id: vec![id; 8],
        name: "GET /".into(),
        start_time_unix_nano: start_ns as u64,
        end_time_unix_nano: start_ns as u64 + 1_000_000,
        ..Span::default()
    }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn protobuf(key: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![("content-type", "application/x-protobuf".to_owned())];
    if let Some(key) = key {
        h.push(("x-api-key", key.to_owned()));
    }
    h
}

fn remote_write_body(series: Vec<TimeSeries>) -> Vec<u8> {
    let raw = WriteRequest { timeseries: series }.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap()
}

fn prom_series(name: &str, extra_labels: usize, samples: &[(i64, f64)]) -> TimeSeries {
    let mut labels = vec![Label {
        name: "__name__".into(),
        value: name.into(),
    }];
    labels.extend((0..extra_labels).map(|i| Label {
        name: format!("l{i}"),
        value: "v".into(),
    }));
    TimeSeries {
        labels,
        samples: samples
            .iter()
            .map(|&(timestamp, value)| PromSample { value, timestamp })
            .collect(),
    }
}

fn remote_write_headers(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/x-protobuf".to_owned()),
        ("content-encoding", "snappy".to_owned()),
        ("authorization", format!("Bearer {key}")),
    ]
}

async fn metrics_text(ingest: &Ingest) -> String {
    let url = format!("{}/metrics", ingest.http_url());
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn otlp_http_answers_and_limits() {
    let ingest = Ingest::start(|c| {
        c.limits.max_spans_per_request = 3;
        c.http.max_body_bytes = 64 * 1024;
    })
    .await;
    let url = format!("{}/v1/traces", ingest.http_url());
    let now_ns = now_ms() * 1_000_000;
    let good = traces(vec![span(1, now_ns)]).encode_to_vec();

    // keys: none, wrong, right (x-api-key and Bearer)
    let a = post(url.clone(), protobuf(None), good.clone()).await;
    assert_eq!(a.status, 401);
    assert!(a.text().contains("missing API key"), "{}", a.text());
    let a = post(
        url.clone(),
        protobuf(Some("wrong-key-0123456789")),
        good.clone(),
    )
    .await;
    assert_eq!(a.status, 401);
    let a = post(url.clone(), protobuf(Some(KEY)), good.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let response = ExportTraceServiceResponse::decode(&a.body[..]).unwrap();
    assert!(response.partial_success.is_none());
    let mut bearer = vec![("content-type", "application/x-protobuf".to_owned())];
    bearer.push(("authorization", format!("Bearer {KEY}")));
    assert_eq!(post(url.clone(), bearer, good.clone()).await.status, 200);

    // JSON with hex ids, answered in JSON
    let json = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
        "name": "json span", "kind": 2,
        "startTimeUnixNano": now_ns.to_string(), "endTimeUnixNano": (now_ns + 5).to_string()
    }]}]}]});
    let a = post(
        url.clone(),
        vec![
            ("content-type", "application/json".into()),
            ("x-api-key", KEY.into()),
        ],
        json.to_string().into_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), "{}");
    let trace_id = [
        0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31,
        0x9c,
    ];
    let stored = ingest.store.trace(PROJECT, trace_id).await.unwrap();
    assert_eq!(stored[0].name, "json span");

    // gzip
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&traces(vec![span(2, now_ns)]).encode_to_vec())
        .unwrap();
    let mut headers = protobuf(Some(KEY));
    headers.push(("content-encoding", "gzip".into()));
    assert_eq!(
        post(url.clone(), headers, gz.finish().unwrap())
            .await
            .status,
        200
    );

    // partial success: one bad span among good ones
    let mut bad = span(3, now_ns);
    bad.span_id = vec![1, 2];
    let a = post(
        url.clone(),
        protobuf(Some(KEY)),
        traces(vec![span(4, now_ns), bad.clone()]).encode_to_vec(),
    )
    .await;
    assert_eq!(a.status, 200);
    let partial = ExportTraceServiceResponse::decode(&a.body[..])
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("span id has 2 bytes"),
        "{}",
        partial.error_message
    );

    // nothing good at all: 400 with a google.rpc.Status body
    let a = post(
        url.clone(),
        protobuf(Some(KEY)),
        traces(vec![bad]).encode_to_vec(),
    )
    .await;
    assert_eq!(a.status, 400);
    let status = tonic_types::Status::decode(&a.body[..]).unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(status.message.contains("span id"), "{}", status.message);

    // too old, too far in the future
    let a = post(
        url.clone(),
        protobuf(Some(KEY)),
        traces(vec![span(5, 1_000)]).encode_to_vec(),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(
        tonic_types::Status::decode(&a.body[..])
            .unwrap()
            .message
            .contains("limits.max_age")
    );
    let future = now_ns + 3_600 * 1_000_000_000;
    let a = post(
        url.clone(),
        protobuf(Some(KEY)),
        traces(vec![span(6, future)]).encode_to_vec(),
    )
    .await;
    assert!(
        tonic_types::Status::decode(&a.body[..])
            .unwrap()
            .message
            .contains("limits.max_future")
    );

    // too many spans in one request; too large a body; wrong content type
    let many = traces((10..14).map(|i| span(i, now_ns)).collect()).encode_to_vec();
    let a = post(url.clone(), protobuf(Some(KEY)), many).await;
    assert_eq!(a.status, 413);
    assert!(
        tonic_types::Status::decode(&a.body[..])
            .unwrap()
            .message
            .contains("limits.max_spans_per_request")
    );
    let a = post(url.clone(), protobuf(Some(KEY)), vec![0; 100 * 1024]).await;
    assert_eq!(a.status, 413);
    let a = post(
        url.clone(),
        vec![
            ("content-type", "text/plain".into()),
            ("x-api-key", KEY.into()),
        ],
        good.clone(),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.text().contains("application/x-protobuf"), "{}", a.text());
    let a = post(url.clone(), protobuf(Some(KEY)), b"\xff\xff\xff".to_vec()).await;
    assert_eq!(a.status, 400);

    // every refusal counted by its reason
    let m = metrics_text(&ingest).await;
    for reason in [
        "unauthenticated",
        "invalid_id",
        "too_old",
        "too_far_in_future",
        "request_too_large",
        "unsupported_content_type",
        "invalid_encoding",
    ] {
        assert!(
            m.contains(&format!(
                "vigil_ingest_refused_items_total{{protocol=\"otlp_http\",reason=\"{reason}\"}}"
            )),
            "{reason} not counted in\n{m}"
        );
    }
    assert!(
        m.contains("vigil_ingest_stored_items_total{protocol=\"otlp_http\",signal=\"traces\"} 4"),
        "{m}"
    );
    // the same bytes again (sent with the Bearer key) were stored once
    assert!(
        m.contains("vigil_ingest_duplicate_requests_total{protocol=\"otlp_http\"} 1"),
        "{m}"
    );
    ingest.shutdown.trigger();
}

#[tokio::test]
async fn remote_write_answers_and_limits() {
    let ingest = Ingest::start(|c| {
        c.limits.max_labels_per_series = 5;
        c.limits.max_samples_per_request = 10;
    })
    .await;
    let url = format!("{}/api/v1/write", ingest.http_url());
    let now = now_ms();
    let ok = remote_write_body(vec![prom_series("up", 1, &[(now - 1000, 1.0), (now, 0.0)])]);
    assert_eq!(
        post(
            url.clone(),
            remote_write_headers("wrong-key-0123456789"),
            ok.clone()
        )
        .await
        .status,
        401
    );
    let a = post(url.clone(), remote_write_headers(KEY), ok.clone()).await;
    assert_eq!(a.status, 204, "{}", a.text());
    // a resent request is stored once (content batch id)
    assert_eq!(
        post(url.clone(), remote_write_headers(KEY), ok)
            .await
            .status,
        204
    );
    let up = ingest
        .store
        .select(PROJECT, &SeriesSelector::metric("up"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(up[0].samples.len(), 2);

    // not snappy; snappy but not protobuf
    let mut headers = remote_write_headers(KEY);
    headers.retain(|(n, _)| *n != "content-encoding");
    let a = post(url.clone(), headers, b"x".to_vec()).await;
    assert_eq!(a.status, 400);
    assert!(a.text().contains("snappy"));
    let junk = snap::raw::Encoder::new()
        .compress_vec(b"\xff\xff\xff\xff")
        .unwrap();
    assert_eq!(
        post(url.clone(), remote_write_headers(KEY), junk)
            .await
            .status,
        400
    );

    // some samples break rules: the rest is stored, the answer names the first
    let mixed = remote_write_body(vec![
        prom_series("good", 1, &[(now, 5.0)]),
        prom_series("too_many_labels", 5, &[(now, 1.0)]),
        prom_series("old", 0, &[(1_000, 1.0)]),
        prom_series(
            "stale",
            0,
            &[(now, f64::from_bits(vigil_ingest::remote_write::STALE_NAN))],
        ),
    ]);
    let a = post(url.clone(), remote_write_headers(KEY), mixed).await;
    assert_eq!(a.status, 400);
    assert!(
        a.text().contains("2 samples refused, the rest stored"),
        "{}",
        a.text()
    );
    assert!(
        a.text().contains("limits.max_labels_per_series"),
        "{}",
        a.text()
    );
    let good = ingest
        .store
        .select(PROJECT, &SeriesSelector::metric("good"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(good[0].samples[0].value, 5.0);
    let stale = ingest
        .store
        .select(PROJECT, &SeriesSelector::metric("stale"), 0, i64::MAX)
        .await
        .unwrap();
    assert!(stale.is_empty());

    // too many samples in one request
    let samples: Vec<(i64, f64)> = (0..11).map(|i| (now - i, 1.0)).collect();
    let a = post(
        url.clone(),
        remote_write_headers(KEY),
        remote_write_body(vec![prom_series("big", 0, &samples)]),
    )
    .await;
    assert_eq!(a.status, 413);
    assert!(a.text().contains("limits.max_samples_per_request"));

    let m = metrics_text(&ingest).await;
    assert!(m.contains("vigil_ingest_skipped_samples_total{protocol=\"remote_write\",reason=\"stale_or_non_finite\"} 1"), "{m}");
    assert!(m.contains("vigil_ingest_refused_items_total{protocol=\"remote_write\",reason=\"too_many_labels\"} 1"), "{m}");
    assert!(
        m.contains(
            "vigil_ingest_refused_items_total{protocol=\"remote_write\",reason=\"too_old\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("vigil_ingest_duplicate_requests_total{protocol=\"remote_write\"} 1"),
        "{m}"
    );
    ingest.shutdown.trigger();
}

#[tokio::test]
async fn project_rate_limit_over_http_and_grpc() {
    let ingest = Ingest::start(|c| {
        c.limits.project_rate = 5;
        c.limits.project_burst = 5;
    })
    .await;
    let now = now_ms();
    let url = format!("{}/api/v1/write", ingest.http_url());
    let five: Vec<(i64, f64)> = (0..5).map(|i| (now - i, 1.0)).collect();
    let body = |name| remote_write_body(vec![prom_series(name, 0, &five)]);
    assert_eq!(
        post(url.clone(), remote_write_headers(KEY), body("a"))
            .await
            .status,
        204
    );
    let a = post(url.clone(), remote_write_headers(KEY), body("b")).await;
    assert_eq!(a.status, 429);
    assert!(a.text().contains("limits.project_rate"), "{}", a.text());
    assert!(a.retry_after.is_some());

    // OTLP/gRPC: RESOURCE_EXHAUSTED with a RetryInfo, so exporters retry
    let mut client = TraceServiceClient::connect(ingest.grpc_url())
        .await
        .unwrap();
    let mut request = tonic::Request::new(traces(vec![span(1, now * 1_000_000)]));
    request
        .metadata_mut()
        .insert("x-api-key", KEY.parse().unwrap());
    let status = client.export(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    use tonic_types::StatusExt;
    assert!(status.get_details_retry_info().is_some());
    let unauthenticated = client
        .export(traces(vec![span(1, now * 1_000_000)]))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    ingest.shutdown.trigger();
}
