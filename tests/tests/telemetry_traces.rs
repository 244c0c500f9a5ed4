//! A real OpenTelemetry SDK (Python `opentelemetry-sdk` with its OTLP gRPC
//! and HTTP exporters) sends traces and logs to Steward's loopback
//! receiver while the upstream is down; Steward queues them durably and
//! forwards every span once the upstream is back. Steward's own spans
//! travel the same way.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use steward_tests::free_port;
use steward_tests::otlp_sink::{OtlpSink, PersistentAgent};

const SCRIPT: &str = r#"
import logging, sys
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

grpc, http, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
resource = Resource.create({"service.name": "py-shop", "deployment.environment.name": "test"})

for proto, exporter in (("grpc", GrpcSpans(endpoint=grpc, insecure=True)),
                        ("http", HttpSpans(endpoint=http + "/v1/traces"))):
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("checkout")
    for i in range(n):
        with tracer.start_as_current_span(f"{proto}-request-{i}"):
            with tracer.start_as_current_span(f"{proto}-db-{i}"):
                pass
    provider.shutdown()

logs = LoggerProvider(resource=resource)
logs.add_log_record_processor(BatchLogRecordProcessor(GrpcLogs(endpoint=grpc, insecure=True)))
logger = logging.getLogger("shop")
logger.addHandler(LoggingHandler(logger_provider=logs))
logger.setLevel(logging.INFO)
for i in range(n):
    logger.warning("py-log-%d", i)
logs.shutdown()
print("sent")
"#;

#[test]
fn python_sdk_traces_and_logs_pass_through_the_receiver_and_the_queue() {
    let mut sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (grpc_port, http_port) = (free_port(), free_port());
    let config = format!(
        r#"
[telemetry]
service_name = "steward-test"
[telemetry.exporter]
endpoint = "{}"
protocol = "http"
batch_timeout_ms = 100
retry_initial_backoff_ms = 100
retry_max_backoff_secs = 1
[telemetry.receiver]
grpc_listen = "127.0.0.1:{grpc_port}"
http_listen = "127.0.0.1:{http_port}"
"#,
        sink.http_endpoint()
    );
    // Upstream down: what the application sends must wait in the queue.
    sink.down();
    let agent = PersistentAgent::start(dir.path(), &config).unwrap();
    let n = 40;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(format!("http://127.0.0.1:{grpc_port}"))
        .arg(format!("http://127.0.0.1:{http_port}"))
        .arg(n.to_string())
        .output()
        .expect("python3 is needed (with scripts/python-requirements.txt installed)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sent"),
        "the Python OpenTelemetry SDK failed (pip install -r scripts/python-requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        agent.metric("steward_telemetry_items_received_total{signal=\"traces\"}"),
        Some((4 * n) as f64)
    );
    assert_eq!(
        agent.metric("steward_telemetry_items_received_total{signal=\"logs\"}"),
        Some(n as f64)
    );
    sink.up().unwrap();
    let ok = sink.wait_until(Duration::from_secs(30), |s| {
        s.spans()
            .iter()
            .filter(|sp| sp.resource.get("service.name").map(String::as_str) == Some("py-shop"))
            .count()
            >= 4 * n
            && s.log_count() >= n
    });
    assert!(
        ok,
        "spans {} logs {}\n{}",
        sink.spans().len(),
        sink.log_count(),
        agent.log()
    );
    let spans = sink.spans();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for s in spans
        .iter()
        .filter(|s| s.resource.get("service.name").map(String::as_str) == Some("py-shop"))
    {
        *by_name.entry(s.name.as_str()).or_insert(0) += 1;
        assert_eq!(s.trace_id.len(), 16);
        assert!(
            s.resource.contains_key("host.name"),
            "the receiver adds host.name"
        );
    }
    for proto in ["grpc", "http"] {
        for kind in ["request", "db"] {
            for i in 0..n {
                assert_eq!(
                    by_name.get(format!("{proto}-{kind}-{i}").as_str()),
                    Some(&1)
                );
            }
        }
    }
    let bodies = sink.bodies();
    for i in 0..n {
        assert_eq!(bodies.get(&format!("py-log-{i}")), Some(&1));
    }
    let log = sink
        .logs()
        .into_iter()
        .find(|r| r.body == "py-log-0")
        .unwrap();
    assert_eq!(log.severity, 13, "WARNING");

    // Steward's own work arrives as spans of its own service.
    let own = sink.wait_until(Duration::from_secs(15), |s| {
        s.spans().iter().any(|sp| {
            sp.name == "telemetry_start"
                && sp.resource.get("service.name").map(String::as_str) == Some("steward-test")
        })
    });
    assert!(
        own,
        "{:?}",
        sink.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}
