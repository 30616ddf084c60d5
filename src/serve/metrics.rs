//! Prometheus metrics: requests by route, method and status, latency
//! histograms by route, guest runs by outcome, and the gauges (running and
//! waiting sandboxes, snapshot memory) read when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 14] = [
    0.000_25, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → latencies.
    latency: BTreeMap<String, Histogram>,
    /// outcome → runs.
    runs: BTreeMap<&'static str, u64>,
    /// Runs stopped at the end of the inline slice and started over on a
    /// blocking thread.
    restarted: u64,
}

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Gauges sampled at scrape time.
pub struct Gauges {
    /// Sandboxes (and other heavy work) running.
    pub active: usize,
    /// Requests waiting for a turn.
    pub waiting: usize,
    /// Bytes charged to held snapshots.
    pub snapshot_bytes: u64,
    /// Their budget.
    pub snapshot_budget: u64,
    /// Snapshots held.
    pub snapshots: usize,
    /// Snapshots evicted since start.
    pub evicted: u64,
    /// Distinct compiled modules.
    pub modules: usize,
    /// Bytes of request bodies being received or held.
    pub body_bytes: u64,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let mut inner = self.lock();
        *inner
            .requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let h = inner.latency.entry(route.to_string()).or_default();
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Counts one guest run ending in `outcome` (`ok`, `exit_nonzero`,
    /// `deadline_exceeded`, `trapped`, `limit_exceeded`).
    pub fn run(&self, outcome: &'static str) {
        *self.lock().runs.entry(outcome).or_default() += 1;
    }

    /// Counts one run started over past the inline slice.
    pub fn restarted(&self) {
        self.lock().restarted += 1;
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self, g: &Gauges) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP cowvfs_http_requests_total HTTP requests answered, by route, method and status.\n\
             # TYPE cowvfs_http_requests_total counter"
        );
        for ((route, method, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "cowvfs_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cowvfs_http_request_duration_seconds Time from request to response, by route.\n\
             # TYPE cowvfs_http_request_duration_seconds histogram"
        );
        for (route, h) in &inner.latency {
            let r = escape(route);
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cowvfs_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "cowvfs_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}\n\
                 cowvfs_http_request_duration_seconds_sum{{route=\"{r}\"}} {}\n\
                 cowvfs_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP cowvfs_runs_total Guest runs, by how they ended.\n\
             # TYPE cowvfs_runs_total counter"
        );
        for (outcome, n) in &inner.runs {
            let _ = writeln!(out, "cowvfs_runs_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP cowvfs_runs_restarted_total Runs stopped at the end of their slice on the \
             request's thread and started over on a blocking thread.\n\
             # TYPE cowvfs_runs_restarted_total counter\n\
             cowvfs_runs_restarted_total {}",
            inner.restarted
        );
        let gauges: [(&str, &str, f64); 8] = [
            (
                "cowvfs_active_sandboxes",
                "Sandboxes (and compilations, loads) running now.",
                g.active as f64,
            ),
            (
                "cowvfs_waiting_requests",
                "Requests waiting for a turn to run.",
                g.waiting as f64,
            ),
            (
                "cowvfs_snapshot_memory_bytes",
                "Bytes charged to the snapshots held.",
                g.snapshot_bytes as f64,
            ),
            (
                "cowvfs_snapshot_memory_budget_bytes",
                "The snapshot memory budget.",
                g.snapshot_budget as f64,
            ),
            (
                "cowvfs_snapshots",
                "Snapshots held in memory.",
                g.snapshots as f64,
            ),
            (
                "cowvfs_snapshots_evicted",
                "Snapshots evicted since the server started.",
                g.evicted as f64,
            ),
            (
                "cowvfs_modules",
                "Distinct compiled modules held.",
                g.modules as f64,
            ),
            (
                "cowvfs_request_body_bytes",
                "Bytes of request bodies being received or held (charged to --max-body-memory).",
                g.body_bytes as f64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_counts_buckets_and_gauges() {
        let m = Metrics::default();
        m.request("/v1/run", "POST", 200, Duration::from_micros(700));
        m.request("/v1/run", "POST", 200, Duration::from_millis(20));
        m.run("ok");
        let text = m.render(&Gauges {
            active: 2,
            waiting: 0,
            snapshot_bytes: 10,
            snapshot_budget: 100,
            snapshots: 1,
            evicted: 0,
            modules: 1,
            body_bytes: 4096,
        });
        assert!(text.contains(
            "cowvfs_http_requests_total{route=\"/v1/run\",method=\"POST\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "cowvfs_http_request_duration_seconds_bucket{route=\"/v1/run\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "cowvfs_http_request_duration_seconds_bucket{route=\"/v1/run\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("cowvfs_active_sandboxes 2\n"));
        assert!(text.contains("cowvfs_request_body_bytes 4096\n"));
        assert!(text.contains("cowvfs_runs_total{outcome=\"ok\"} 1"));
        m.restarted();
        let text = m.render(&Gauges {
            active: 0,
            waiting: 0,
            snapshot_bytes: 0,
            snapshot_budget: 0,
            snapshots: 0,
            evicted: 0,
            modules: 0,
            body_bytes: 0,
        });
        assert!(text.contains("\ncowvfs_runs_restarted_total 1\n"), "{text}");
    }
}
