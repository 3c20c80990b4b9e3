//! Following an engine's container events, so the daemon hears of a
//! replica that died without polling.

#[allow(unused_imports)]
use super::*;

/// A container of the stack stopped or disappeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// `die`, `destroy` or `oom`.
    pub action: String,
    pub container: String,
    pub service: Option<String>,
}

impl Engine {
    /// Events that may leave a replica of `stack` missing: a container of
    /// the stack died, was removed or ran out of memory. The stream ends when
    /// the connection breaks; the caller reconnects.
    pub fn container_events(
        &self,
        stack: &str,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent, RuntimeError>> + use<> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{}={stack}", crate::docker::LABEL_STACK)],
            ),
            (
                "event".to_string(),
                // A replica whose health changes moves in or out of rotation.
                vec![
                    "die".into(),
                    "destroy".into(),
                    "oom".into(),
                    "health_status".into(),
                ],
            ),
        ]);
        let options = bollard::query_parameters::EventsOptionsBuilder::new()
            .filters(&filters)
            .build();
        self.docker
            .events(Some(options))
            .map_ok(|message| {
                let actor = message.actor.unwrap_or_default();
                let attributes = actor.attributes.unwrap_or_default();
                ContainerEvent {
                    action: message.action.unwrap_or_default(),
                    container: attributes
                        .get("name")
                        .cloned()
                        .or(actor.id)
                        .unwrap_or_default(),
                    service: attributes.get(crate::docker::LABEL_SERVICE).cloned(),
                }
            })
            .map_err(classify)
    }
}
