//! The daemon's Prometheus metrics (prometheus-client) and its HTTP endpoints: `/metrics`,
//! `/healthz` (the process answers) and `/readyz` (caches synced, conf written, not shutting
//! down). docs/daemon.md lists every metric.

use super::Health;
use super::cache::{Caches, Kind};
use crate::report::Report;
use bytes::Bytes;
use cni::Command;
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DelegateLabels {
    delegate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    command: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByLabels {
    by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 1 ms to ~65 s: a built-in attachment takes milliseconds, a delegate timeout a minute.
    // Doubled by hand: prometheus-client's `exponential_buckets` calls `powf`, which links
    // libm into the binary, and every one-shot CNI call would pay for loading it.
    let buckets = std::iter::successors(Some(0.001_f64), |b| Some(b * 2.0)).take(17);
    Histogram::new(buckets)
}

pub struct Metrics {
    registry: Registry,
    commands: Histograms<CommandLabels>,
    delegates: Histograms<DelegateLabels>,
    errors: Family<ErrorLabels, Counter>,
    network_errors: Family<NetworkLabels, Counter>,
    api_requests: Family<VerbLabels, Counter>,
    cache_objects: Family<KindLabels, Gauge>,
    cache_synced: Family<KindLabels, Gauge>,
    cache_hits: Family<KindLabels, Counter>,
    cache_misses: Family<KindLabels, Counter>,
    watch_errors: Family<KindLabels, Counter>,
    journal_entries: Gauge,
    gc_reclaimed: Family<ByLabels, Counter>,
    hotplug: Family<OutcomeLabels, Counter>,
    event_queue_depth: Gauge,
    events_dropped: Counter,
    events_failed: Counter,
    calls_running: Gauge,
    calls_waiting: Gauge,
    calls_busy: Counter,
    refused: Family<ReasonLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            commands: Family::new_with_constructor(latency),
            delegates: Family::new_with_constructor(latency),
            errors: Family::default(),
            network_errors: Family::default(),
            api_requests: Family::default(),
            cache_objects: Family::default(),
            cache_synced: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            watch_errors: Family::default(),
            journal_entries: Gauge::default(),
            gc_reclaimed: Family::default(),
            hotplug: Family::default(),
            event_queue_depth: Gauge::default(),
            events_dropped: Counter::default(),
            events_failed: Counter::default(),
            calls_running: Gauge::default(),
            calls_waiting: Gauge::default(),
            calls_busy: Counter::default(),
            refused: Family::default(),
        };
        let mut r = Registry::with_prefix("plexus");
        m.register_calls(&mut r);
        m.register_node(&mut r);
        m.registry = r;
        m
    }

    /// What the CNI calls through the daemon measure.
    fn register_calls(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "command_duration_seconds",
            "CNI calls through the daemon by command",
            m.commands.clone(),
        );
        r.register(
            "delegate_duration_seconds",
            "Attachments ADDed, by delegate plugin type(s) of the attachment",
            m.delegates.clone(),
        );
        r.register(
            "command_errors",
            "Failed CNI calls by command and CNI error code",
            m.errors.clone(),
        );
        r.register(
            "network_errors",
            "Failed CNI calls by the network (NAD) that failed",
            m.network_errors.clone(),
        );
    }

    /// What the daemon's API traffic, caches, journal, event queue and call slots measure.
    fn register_node(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "api_requests",
            "Requests to the Kubernetes API by verb",
            m.api_requests.clone(),
        );
        r.register(
            "cache_objects",
            "Objects held in the daemon's caches",
            m.cache_objects.clone(),
        );
        r.register(
            "cache_synced",
            "1 once a cache has listed everything",
            m.cache_synced.clone(),
        );
        r.register(
            "cache_hits",
            "Lookups answered from a cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Lookups a cache could not answer, sent to the API as a GET",
            m.cache_misses.clone(),
        );
        r.register(
            "watch_errors",
            "Failed list or watch requests of a cache",
            m.watch_errors.clone(),
        );
        r.register(
            "journal_entries",
            "Attachment sets in the journal",
            m.journal_entries.clone(),
        );
        r.register(
            "gc_reclaimed",
            "Journaled attachment sets removed, by CNI GC calls (by=gc) or by the GC reconciler (by=reconciler)",
            m.gc_reclaimed.clone(),
        );
        r.register(
            "hotplug_attachments",
            "Attachments hot-plugged into running pods (outcome=added), removed from them (outcome=removed), or refused or failed (outcome=failed)",
            m.hotplug.clone(),
        );
        r.register(
            "event_queue_depth",
            "Events waiting to be posted",
            m.event_queue_depth.clone(),
        );
        r.register(
            "events_dropped",
            "Events dropped because the queue was full",
            m.events_dropped.clone(),
        );
        r.register(
            "events_failed",
            "Events the API did not take",
            m.events_failed.clone(),
        );
        r.register(
            "calls_running",
            "CNI calls running now",
            m.calls_running.clone(),
        );
        r.register(
            "calls_waiting",
            "CNI calls waiting for a slot",
            m.calls_waiting.clone(),
        );
        r.register(
            "calls_busy",
            "CNI calls answered code 11 because every slot stayed taken",
            m.calls_busy.clone(),
        );
        r.register(
            "calls_refused",
            "Connections refused by reason (peer, version, malformed, too_large, timeout)",
            m.refused.clone(),
        );
    }

    pub fn observe_call(
        &self,
        command: Command,
        outcome: &Result<Report, crate::Error>,
        took: Duration,
    ) {
        let command = command.as_str().to_string();
        self.commands
            .get_or_create(&CommandLabels {
                command: command.clone(),
            })
            .observe(took.as_secs_f64());
        match outcome {
            Ok(report) => {
                for a in &report.attachments {
                    self.delegates
                        .get_or_create(&DelegateLabels {
                            delegate: a.delegates.join("+"),
                        })
                        .observe(a.millis as f64 / 1000.0);
                }
            }
            Err(e) => {
                self.errors
                    .get_or_create(&ErrorLabels {
                        command,
                        code: e.code().as_u32().to_string(),
                    })
                    .inc();
                if let Some(network) = e.network() {
                    self.network_errors
                        .get_or_create(&NetworkLabels {
                            network: network.to_string(),
                        })
                        .inc();
                }
            }
        }
    }

    pub fn api_request(&self, verb: &str) {
        self.api_requests
            .get_or_create(&VerbLabels {
                verb: verb.to_string(),
            })
            .inc();
    }

    fn kind(kind: Kind) -> KindLabels {
        KindLabels {
            kind: kind.label().to_string(),
        }
    }

    pub fn cache_hit(&self, kind: Kind) {
        self.cache_hits.get_or_create(&Self::kind(kind)).inc();
    }

    pub fn cache_miss(&self, kind: Kind) {
        self.cache_misses.get_or_create(&Self::kind(kind)).inc();
    }

    pub fn watch_error(&self, kind: Kind) {
        self.watch_errors.get_or_create(&Self::kind(kind)).inc();
    }

    pub fn gc_reclaimed(&self, n: usize) {
        self.gc_reclaimed
            .get_or_create(&ByLabels { by: "gc".into() })
            .inc_by(n as u64);
    }

    pub fn reconciled(&self, n: usize) {
        self.gc_reclaimed
            .get_or_create(&ByLabels {
                by: "reconciler".into(),
            })
            .inc_by(n as u64);
    }

    pub fn hotplugged(&self, added: usize, removed: usize, failed: usize) {
        for (outcome, n) in [("added", added), ("removed", removed), ("failed", failed)] {
            if n > 0 {
                self.hotplug
                    .get_or_create(&OutcomeLabels {
                        outcome: outcome.into(),
                    })
                    .inc_by(n as u64);
            }
        }
    }

    pub fn event_queued(&self) {
        self.event_queue_depth.inc();
    }

    pub fn event_dequeued(&self) {
        self.event_queue_depth.dec();
    }

    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    pub fn event_failed(&self) {
        self.events_failed.inc();
    }

    pub fn call_started(&self) {
        self.calls_running.inc();
    }

    pub fn call_finished(&self) {
        self.calls_running.dec();
    }

    pub fn call_waiting(&self, delta: i64) {
        self.calls_waiting.inc_by(delta);
    }

    pub fn busy(&self) {
        self.calls_busy.inc();
    }

    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The text exposition, with the gauges that are read rather than counted brought up to
    /// date first.
    fn encode(&self, caches: &Caches, cni_dir: &std::path::Path) -> String {
        for kind in [Kind::Pod, Kind::Nad] {
            self.cache_objects
                .get_or_create(&Self::kind(kind))
                .set(caches.len(kind) as i64);
            self.cache_synced
                .get_or_create(&Self::kind(kind))
                .set(i64::from(caches.synced(kind)));
        }
        let entries = crate::journal::Journal::open(cni_dir)
            .and_then(|j| j.entries(Duration::MAX))
            .map(|e| e.len())
            .unwrap_or(0);
        self.journal_entries.set(entries as i64);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encode metrics");
        }
        out
    }
}

/// What the HTTP endpoints read.
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub caches: Arc<Caches>,
    pub health: Arc<Health>,
    pub cni_dir: PathBuf,
    /// Whether readiness waits for the conf.
    pub needs_conf: bool,
}

impl Endpoints {
    /// `None` when ready, else why not.
    fn not_ready(&self) -> Option<String> {
        if self.health.shutting_down.load(Ordering::Relaxed) {
            return Some("shutting down".into());
        }
        let unsynced: Vec<&str> = [Kind::Pod, Kind::Nad]
            .into_iter()
            .filter(|k| !self.caches.synced(*k))
            .map(Kind::label)
            .collect();
        if !unsynced.is_empty() {
            return Some(format!("caches not synced: {}", unsynced.join(", ")));
        }
        if self.needs_conf && !self.health.conf_written.load(Ordering::Relaxed) {
            return Some("conf not written".into());
        }
        None
    }

    fn respond(&self, path: &str) -> (u16, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        match path {
            "/metrics" => (
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(&self.caches, &self.cni_dir),
            ),
            "/healthz" => (200, TEXT, "ok\n".into()),
            "/readyz" => match self.not_ready() {
                None => (200, TEXT, "ok\n".into()),
                Some(why) => (503, TEXT, format!("{why}\n")),
            },
            _ => (404, TEXT, "not found\n".into()),
        }
    }
}

pub async fn serve(listener: tokio::net::TcpListener, endpoints: Arc<Endpoints>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let (code, kind, body) = endpoints.respond(req.uri().path());
                let response = hyper::Response::builder()
                    .status(code)
                    .header(hyper::header::CONTENT_TYPE, kind)
                    .body(Full::new(Bytes::from(body)));
                async move { response }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            // A scraper that never finishes its request is not kept forever.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}
