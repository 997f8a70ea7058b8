//! `/metrics` in the Prometheus text format: builds by result, queue depth, running builds,
//! webhook deliveries by outcome, and histograms of pod-ready time and step duration.
//! Counters live in memory; builds by result start from the store's counts at start.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fixed-bucket histogram of seconds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if s <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// The bucket, sum and count lines, with `labels` (`a="b"`) on each.
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {n}");
    }
}

const POD_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const PHASE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];
const STEP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

pub struct Metrics {
    results: Mutex<BTreeMap<String, u64>>,
    deliveries: Mutex<BTreeMap<&'static str, u64>>,
    pub pod_ready: Histogram,
    pub step_duration: Histogram,
    /// Per backend and phase: the time from the pod's previous phase to this one.
    pod_phases: Mutex<BTreeMap<(String, valet_backend::PodPhase), Histogram>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            results: Mutex::default(),
            deliveries: Mutex::default(),
            pod_ready: Histogram::new(POD_BUCKETS),
            step_duration: Histogram::new(STEP_BUCKETS),
            pod_phases: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn set_results(&self, counts: Vec<(String, u64)>) {
        *self.results.lock().unwrap_or_else(|e| e.into_inner()) = counts.into_iter().collect();
    }

    /// A pod of `backend` reached `phase`, `took` after its previous phase.
    pub fn pod_phase(&self, backend: &str, phase: valet_backend::PodPhase, took: Duration) {
        let mut phases = self.pod_phases.lock().unwrap_or_else(|e| e.into_inner());
        // A backend name comes from valet's own table, so the label set stays small.
        phases
            .entry((backend.to_string(), phase))
            .or_insert_with(|| Histogram::new(PHASE_BUCKETS))
            .observe(took);
    }

    pub fn build_finished(&self, result: &str) {
        *self
            .results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(result.to_string())
            .or_default() += 1;
    }

    /// A webhook delivery answered: `accepted`, `duplicate`, `ignored`, `unauthorized`, `invalid`.
    pub fn delivery(&self, outcome: &'static str) {
        *self
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    /// The text of `/metrics`; `backends` are the backends in use with their own numbers.
    pub fn render(
        &self,
        queued: usize,
        running: usize,
        backends: &[(&str, Vec<valet_backend::Metric>)],
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP valet_builds_total Finished builds by result.");
        let _ = writeln!(out, "# TYPE valet_builds_total counter");
        for (r, n) in self
            .results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "valet_builds_total{{result=\"{r}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP valet_queue_depth Builds waiting to start.");
        let _ = writeln!(out, "# TYPE valet_queue_depth gauge");
        let _ = writeln!(out, "valet_queue_depth {queued}");
        let _ = writeln!(out, "# HELP valet_builds_running Builds running now.");
        let _ = writeln!(out, "# TYPE valet_builds_running gauge");
        let _ = writeln!(out, "valet_builds_running {running}");
        let _ = writeln!(
            out,
            "# HELP valet_webhook_deliveries_total Webhook deliveries by outcome."
        );
        let _ = writeln!(out, "# TYPE valet_webhook_deliveries_total counter");
        for (o, n) in self
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "valet_webhook_deliveries_total{{outcome=\"{o}\"}} {n}");
        }
        self.pod_ready.render(
            &mut out,
            "valet_pod_ready_seconds",
            "Time from asking the backend for a pod to the pod being ready.",
        );
        self.step_duration.render(
            &mut out,
            "valet_step_duration_seconds",
            "Duration of finished steps.",
        );
        self.render_pod_phases(&mut out);
        render_backend_metrics(&mut out, backends);
        out
    }
}

impl Metrics {
    fn render_pod_phases(&self, out: &mut String) {
        let phases = self.pod_phases.lock().unwrap_or_else(|e| e.into_inner());
        let name = "valet_pod_phase_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a pod's previous start phase to this one (placed, created, started, agent_connected, first_step_byte), by backend."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for ((backend, phase), h) in phases.iter() {
            h.render_series(
                out,
                name,
                &format!("backend=\"{backend}\",phase=\"{}\"", phase.as_str()),
            );
        }
    }
}

/// Each backend's own numbers as `valet_backend_NAME{backend="KIND"}`, one family per name.
fn render_backend_metrics(out: &mut String, backends: &[(&str, Vec<valet_backend::Metric>)]) {
    let mut families: BTreeMap<&str, Vec<(&str, &valet_backend::Metric)>> = BTreeMap::new();
    for (kind, metrics) in backends {
        for m in metrics {
            families.entry(m.name).or_default().push((kind, m));
        }
    }
    for (name, series) in families {
        let (_, first) = series[0];
        let kind = match first.kind {
            valet_backend::MetricKind::Gauge => "gauge",
            valet_backend::MetricKind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP valet_backend_{name} {}", first.help);
        let _ = writeln!(out, "# TYPE valet_backend_{name} {kind}");
        for (backend, m) in series {
            let _ = writeln!(
                out,
                "valet_backend_{name}{{backend=\"{backend}\"}} {}",
                m.value
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.step_duration.observe(Duration::from_millis(7));
        m.step_duration.observe(Duration::from_secs(2));
        m.build_finished("SUCCESS");
        m.pod_phase(
            "docker",
            valet_backend::PodPhase::Created,
            Duration::from_millis(30),
        );
        let text = m.render(0, 0, &[]);
        assert!(
            text.contains(
                "valet_pod_phase_seconds_bucket{backend=\"docker\",phase=\"created\",le=\"0.025\"} 0\n"
            ) && text.contains(
                "valet_pod_phase_seconds_bucket{backend=\"docker\",phase=\"created\",le=\"0.05\"} 1\n"
            ) && text.contains("valet_pod_phase_seconds_count{backend=\"docker\",phase=\"created\"} 1\n"),
            "{text}"
        );
        let text = m.render(
            3,
            1,
            &[(
                "docker",
                vec![valet_backend::Metric {
                    name: "warm_pods",
                    help: "Pods ready.",
                    kind: valet_backend::MetricKind::Gauge,
                    value: 2.0,
                }],
            )],
        );
        assert!(
            text.contains("# TYPE valet_backend_warm_pods gauge\nvalet_backend_warm_pods{backend=\"docker\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("valet_step_duration_seconds_bucket{le=\"0.005\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("valet_step_duration_seconds_bucket{le=\"0.01\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("valet_step_duration_seconds_bucket{le=\"5\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("valet_step_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("valet_builds_total{result=\"SUCCESS\"} 1"),
            "{text}"
        );
        assert!(text.contains("valet_queue_depth 3\n"), "{text}");
        assert!(text.contains("valet_builds_running 1\n"), "{text}");
    }
}
