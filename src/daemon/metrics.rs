//! Prometheus metrics of the daemon, served as text at `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every metric the daemon keeps. Cloning shares the underlying values.
#[derive(Clone)]
pub struct Metrics {
    pub reconcile_duration: Histogram,
    passes: Family<Labels, Counter>,
    containers: Family<Labels, Gauge>,
    /// Registry requests made (manifest HEADs), by outcome.
    registry_requests: Family<Labels, Counter>,
    pub git_checks: Counter,
    pub git_fetches: Counter,
    revision: Family<Labels, Gauge>,
    pub triggers_coalesced: Counter,
    /// Notification attempts by target and result.
    notifications: Family<Labels, Counter>,
    /// Replicas in rotation, and wanted, per routed host (and path).
    route_backends: Family<Labels, Gauge>,
    route_backends_wanted: Family<Labels, Gauge>,
    /// 1 while `pier rollback --hold` keeps the stack at a revision.
    held: Gauge,
    /// 1 per service frozen by `pier freeze` (`*`: every service).
    frozen: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconcile_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            passes: Family::default(),
            containers: Family::default(),
            registry_requests: Family::default(),
            git_checks: Counter::default(),
            git_fetches: Counter::default(),
            revision: Family::default(),
            triggers_coalesced: Counter::default(),
            notifications: Family::default(),
            route_backends: Family::default(),
            route_backends_wanted: Family::default(),
            held: Gauge::default(),
            frozen: Family::default(),
        }
    }
}

impl Metrics {
    pub fn pass(&self, trigger: &str, result: &str, seconds: f64) {
        self.reconcile_duration.observe(seconds);
        self.passes
            .get_or_create(&labels(&[("trigger", trigger), ("result", result)]))
            .inc();
    }

    pub fn registry_request(&self, result: &str) {
        self.registry_requests
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// Replace the container counts with the ones observed in a pass.
    pub fn set_containers<'a>(
        &self,
        counts: impl IntoIterator<Item = (&'a str, &'a str, &'a str, i64)>,
    ) {
        self.containers.clear();
        for (service, node, state, count) in counts {
            self.containers
                .get_or_create(&labels(&[
                    ("service", service),
                    ("node", node),
                    ("state", state),
                ]))
                .set(count);
        }
    }

    /// One notification to `target` was `delivered`, `retried`, `failed`
    /// (given up) or `dropped` (its queue was full).
    pub fn notification(&self, target: &str, result: &str) {
        self.notifications
            .get_or_create(&labels(&[("target", target), ("result", result)]))
            .inc();
    }

    /// Whether the stack is held, and which services are frozen.
    pub fn set_control<'a>(&self, held: bool, frozen: impl IntoIterator<Item = &'a str>) {
        self.held.set(i64::from(held));
        self.frozen.clear();
        for service in frozen {
            self.frozen
                .get_or_create(&labels(&[("service", service)]))
                .set(1);
        }
    }

    /// Replace the routes' backend counts with the ones observed in a pass:
    /// (route, service, in rotation, wanted).
    pub fn set_routes<'a>(&self, routes: impl IntoIterator<Item = (String, &'a str, i64, i64)>) {
        self.route_backends.clear();
        self.route_backends_wanted.clear();
        for (route, service, up, wanted) in routes {
            let key = labels(&[("route", &route), ("service", service)]);
            self.route_backends.get_or_create(&key).set(up);
            self.route_backends_wanted.get_or_create(&key).set(wanted);
        }
    }

    pub fn set_revision(&self, commit: &str) {
        self.revision.clear();
        self.revision
            .get_or_create(&labels(&[("commit", commit)]))
            .set(1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("pier");
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile pass took",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "passes",
            "Reconcile passes by trigger and result",
            self.passes.clone(),
        );
        registry.register(
            "containers",
            "Containers of the stack by service, node and state",
            self.containers.clone(),
        );
        registry.register(
            "registry_requests",
            "Requests to image registries by result",
            self.registry_requests.clone(),
        );
        registry.register(
            "git_checks",
            "Checks of the branch tip",
            self.git_checks.clone(),
        );
        registry.register(
            "git_fetches",
            "Fetches from the remote repository",
            self.git_fetches.clone(),
        );
        registry.register(
            "applied_revision_info",
            "The commit last applied in full",
            self.revision.clone(),
        );
        registry.register(
            "triggers_coalesced",
            "Triggers merged into a pass already queued",
            self.triggers_coalesced.clone(),
        );
        registry.register(
            "notifications",
            "Notifications by target and result (delivered, retried, failed, dropped)",
            self.notifications.clone(),
        );
        registry.register(
            "route_backends",
            "Replicas the router sends a route's requests to",
            self.route_backends.clone(),
        );
        registry.register(
            "route_backends_wanted",
            "Replicas a route's service is declared with",
            self.route_backends_wanted.clone(),
        );
        registry.register(
            "stack_held",
            "1 while `pier rollback --hold` keeps the stack at a revision",
            self.held.clone(),
        );
        registry.register(
            "service_frozen",
            "1 per service frozen by `pier freeze` (`*`: every service)",
            self.frozen.clone(),
        );
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_family_and_its_labels() {
        let metrics = Metrics::default();
        metrics.pass("git", "ok", 0.2);
        metrics.registry_request("ok");
        metrics.set_containers([("web", "n1", "running", 2)]);
        metrics.set_revision("abc");
        metrics.notification("ops", "failed");
        metrics.set_routes([("app.example.com/api".to_string(), "web", 1, 2)]);
        let text = metrics.render();
        for needle in [
            "pier_passes_total{trigger=\"git\",result=\"ok\"} 1",
            "pier_registry_requests_total{result=\"ok\"} 1",
            "pier_containers{service=\"web\",node=\"n1\",state=\"running\"} 2",
            "pier_applied_revision_info{commit=\"abc\"} 1",
            "pier_reconcile_duration_seconds_count 1",
            "pier_notifications_total{target=\"ops\",result=\"failed\"} 1",
            "pier_route_backends{route=\"app.example.com/api\",service=\"web\"} 1",
            "pier_route_backends_wanted{route=\"app.example.com/api\",service=\"web\"} 2",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }
}
