//! What every step of an apply shares: the engines, the settings, the
//! records of what was done, and where each replica runs.

#[allow(unused_imports)]
use super::*;

/// Where each service's replicas are once the plan is carried out, by
/// container name (or id, for the kept ones the plan lists).
pub(super) fn replicas_on(desired: &Desired, plan: &Plan) -> BTreeMap<(String, String), String> {
    let mut found = BTreeMap::new();
    for service_plan in &plan.services {
        let service = &service_plan.service;
        for (node, id) in &service_plan.current {
            found
                .entry((service.clone(), node.clone()))
                .or_insert_with(|| id.clone());
        }
        let keeps_successor_name = desired
            .services
            .get(service)
            .is_some_and(|s| s.keeps_successor_name);
        for change in &service_plan.changes {
            let (node, container) = match change {
                Change::Create { node, name, .. } => (node, name.clone()),
                Change::Replace {
                    node,
                    name,
                    old,
                    start_first: true,
                    ..
                } if keeps_successor_name => (node, crate::plan::successor_name(name, &old.name)),
                Change::Replace { node, name, .. } => (node, name.clone()),
                _ => continue,
            };
            found
                .entry((service.clone(), node.clone()))
                .or_insert(container);
        }
    }
    found
}

impl<R: Runtime> Context<'_, R> {
    pub(super) fn engine(&self, node: &str) -> Result<&R, String> {
        self.engines
            .get(node)
            .ok_or_else(|| format!("no engine for node {node}"))
    }

    pub(super) fn record(
        &self,
        service: &str,
        node: &str,
        action: Action,
        target: &str,
        started: SystemTime,
        result: &Result<(), String>,
    ) {
        let record = StepRecord {
            service: service.into(),
            node: node.into(),
            action,
            target: target.into(),
            ok: result.is_ok(),
            message: result.as_ref().err().cloned().unwrap_or_default(),
            started,
            ended: SystemTime::now(),
        };
        (self.on_step)(&record);
        self.records.lock().expect("records lock").push(record);
    }

    /// Run one engine call under the node's and the global limits, and record it.
    pub(super) async fn step<T, F>(
        &self,
        service: &str,
        node: &str,
        action: Action,
        target: &str,
        call: F,
    ) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        let _global = self.total.acquire().await.expect("semaphore open");
        let _local = match self.per_node.get(node) {
            Some(s) => Some(s.acquire().await.expect("semaphore open")),
            None => None,
        };
        let started = SystemTime::now();
        let result = call.await.map_err(|e| {
            if matches!(
                e,
                RuntimeError::Unreachable(_)
                    | RuntimeError::NotFound(_)
                    | RuntimeError::Conflict(_)
            ) {
                self.transient
                    .lock()
                    .expect("transient lock")
                    .insert(service.to_string());
            }
            e.to_string()
        });
        self.record(
            service,
            node,
            action,
            target,
            started,
            &result.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        result.map_err(|e| format!("{service}: {action} {target} on {node} failed: {e}"))
    }
}
