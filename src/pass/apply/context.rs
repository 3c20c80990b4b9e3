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
    pub(super) fn engine(&self, node: &str) -> Result<&R, RolloutError> {
        self.engines
            .get(node)
            .ok_or_else(|| RolloutError::NoEngine {
                node: node.to_string(),
            })
    }

    pub(super) fn record(
        &self,
        service: &str,
        node: &str,
        action: Action,
        target: &str,
        started: SystemTime,
        failure: Option<String>,
    ) {
        let record = StepRecord {
            service: service.into(),
            node: node.into(),
            action,
            target: target.into(),
            ok: failure.is_none(),
            message: failure.unwrap_or_default(),
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
    ) -> Result<T, RolloutError>
    where
        F: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        let _global = self.total.acquire().await.expect("semaphore open");
        let _local = match self.per_node.get(node) {
            Some(s) => Some(s.acquire().await.expect("semaphore open")),
            None => None,
        };
        let started = SystemTime::now();
        let result = call.await;
        if let Err(
            RuntimeError::Unreachable(_) | RuntimeError::NotFound(_) | RuntimeError::Conflict(_),
        ) = &result
        {
            self.transient
                .lock()
                .expect("transient lock")
                .insert(service.to_string());
        }
        let failure = result.as_ref().err().map(ToString::to_string);
        self.record(service, node, action, target, started, failure);
        result.map_err(|cause| RolloutError::Step {
            service: service.to_string(),
            action,
            target: target.to_string(),
            node: node.to_string(),
            cause,
        })
    }
}
