//! An in-memory [`Runtime`] for unit tests of the converge loop and for scale
//! benchmarks. Never a substitute for the engine tests against the test bed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    AnonymousVolume, ContainerInfo, ContainerSpec, Credentials, Health, Runtime, RuntimeError,
    Volumes, is_generated_volume_name,
};

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    containers: BTreeMap<String, (ContainerInfo, Option<ContainerSpec>)>,
    images: BTreeMap<String, String>,
    networks: Vec<String>,
    /// Of those, the overlay networks: as on a real engine, a running
    /// container on one cannot be renamed (moby/moby#42351).
    overlays: Vec<String>,
    unreachable: bool,
    /// Containers created from these images report unhealthy.
    unhealthy_images: Vec<String>,
    /// Files written into containers: (id, path) → contents.
    files: BTreeMap<(String, String), String>,
    /// Commands run in containers: (id, command).
    execs: Vec<(String, Vec<String>)>,
}

/// One fake engine; clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// The commands run in containers so far: (container id, command).
    pub fn execs(&self) -> Vec<(String, Vec<String>)> {
        self.state.lock().expect("fake state").execs.clone()
    }

    /// Make every call fail as if the engine were down.
    /// How many containers were ever made here (created, or added as
    /// foreign ones), removed ones included.
    pub fn made(&self) -> u64 {
        self.state.lock().expect("fake state").next_id
    }

    pub fn set_unreachable(&self, unreachable: bool) {
        self.state.lock().expect("fake state").unreachable = unreachable;
    }

    /// Containers of this image never become healthy.
    pub fn mark_unhealthy(&self, image: &str) {
        self.state
            .lock()
            .expect("fake state")
            .unhealthy_images
            .push(image.to_string());
    }

    /// Add a container as if someone else had created it.
    pub fn add_foreign(&self, name: &str, labels: BTreeMap<String, String>) -> String {
        let mut state = self.state.lock().expect("fake state");
        state.next_id += 1;
        let id = format!("fake{:012}", state.next_id);
        let info = ContainerInfo {
            id: id.clone(),
            name: name.into(),
            labels,
            running: true,
            created: state.next_id as i64,
            unhealthy: false,
            exit_code: None,
            in_rotation: false,
        };
        state.containers.insert(id.clone(), (info, None));
        id
    }

    /// A network made outside pier (an `external: true` one), overlay or not.
    pub fn add_network(&self, name: &str, overlay: bool) {
        let mut state = self.state.lock().expect("fake state");
        state.networks.push(name.to_string());
        if overlay {
            state.overlays.push(name.to_string());
        }
    }

    /// The configuration a container was created with.
    pub fn spec_of(&self, id: &str) -> Option<ContainerSpec> {
        let state = self.state.lock().expect("fake state");
        state.containers.get(id).and_then(|(_, spec)| spec.clone())
    }

    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.state
            .lock()
            .expect("fake state")
            .containers
            .values()
            .map(|(c, _)| c.clone())
            .collect()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut state = self.state.lock().expect("fake state");
        if state.unreachable {
            return Err(RuntimeError::Unreachable("fake engine is down".into()));
        }
        f(&mut state)
    }
}

fn find<'a>(
    state: &'a mut State,
    id: &str,
) -> Result<&'a mut (ContainerInfo, Option<ContainerSpec>), RuntimeError> {
    state
        .containers
        .get_mut(id)
        .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
}

impl Runtime for FakeRuntime {
    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.with(|s| Ok(s.containers.values().map(|(c, _)| c.clone()).collect()))
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        self.with(|s| Ok(s.images.get(reference).cloned()))
    }

    async fn platform(&self) -> Result<String, RuntimeError> {
        Ok("linux/amd64".into())
    }

    async fn pull(
        &self,
        reference: &str,
        _credentials: Option<&Credentials>,
        _platform: Option<&str>,
    ) -> Result<(), RuntimeError> {
        self.with(|s| {
            let id = format!("sha256:{:064x}", s.images.len() + 1);
            s.images.entry(reference.to_string()).or_insert(id);
            Ok(())
        })
    }

    async fn provide_files(
        &self,
        id: &str,
        files: &[crate::manifest::model::ProvidedFile],
    ) -> Result<(), RuntimeError> {
        let files: BTreeMap<String, String> = files
            .iter()
            .map(|f| {
                (
                    f.target.clone(),
                    String::from_utf8_lossy(&f.contents).into_owned(),
                )
            })
            .collect();
        self.write_files(id, &files).await
    }

    /// The fake's containers run nothing: one waited for has exited with 0.
    async fn wait(&self, _id: &str) -> Result<i64, RuntimeError> {
        Ok(0)
    }

    async fn log_tail(&self, _id: &str, _lines: usize) -> Result<String, RuntimeError> {
        Ok(String::new())
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        self.with(|s| {
            let id = s
                .images
                .get(reference)
                .cloned()
                .ok_or_else(|| RuntimeError::NotFound(reference.to_string()))?;
            let used = s.containers.values().any(|(_, spec)| {
                spec.as_ref()
                    .is_some_and(|spec| spec.image == *reference || spec.image == id)
            });
            if used {
                return Err(RuntimeError::Conflict(format!(
                    "{reference} is used by a container"
                )));
            }
            s.images.remove(reference);
            Ok(())
        })
    }

    /// The fake holds every volume asked about.
    async fn swarm(&self) -> Result<crate::plan::swarm::SwarmMembership, RuntimeError> {
        self.with(|_| {
            Ok(crate::plan::swarm::SwarmMembership {
                state: "inactive".into(),
                ..Default::default()
            })
        })
    }

    async fn swarm_init(&self, _advertise: Option<&str>) -> Result<(), RuntimeError> {
        Err(RuntimeError::Failed("the fake engine has no swarm".into()))
    }

    async fn swarm_tokens(&self) -> Result<(String, String), RuntimeError> {
        Err(RuntimeError::Failed("the fake engine has no swarm".into()))
    }

    async fn swarm_join(
        &self,
        _advertise: Option<&str>,
        _manager: &str,
        _token: &str,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Failed("the fake engine has no swarm".into()))
    }

    async fn connect(
        &self,
        container: &str,
        network: &str,
        _aliases: &[String],
    ) -> Result<(), RuntimeError> {
        self.with(|s| {
            if network.ends_with(crate::manifest::model::ROUTES_SUFFIX) {
                find(s, container)?.0.in_rotation = true;
            }
            Ok(())
        })
    }

    async fn disconnect(&self, container: &str, network: &str) -> Result<(), RuntimeError> {
        self.with(|s| {
            if network.ends_with(crate::manifest::model::ROUTES_SUFFIX) {
                find(s, container)?.0.in_rotation = false;
            }
            Ok(())
        })
    }

    async fn swarm_set_role(&self, _node_id: &str, _manager: bool) -> Result<(), RuntimeError> {
        Err(RuntimeError::Failed("the fake engine has no swarm".into()))
    }

    async fn swarm_leave(&self) -> Result<(), RuntimeError> {
        Err(RuntimeError::Failed("the fake engine has no swarm".into()))
    }

    async fn swarm_forget(&self, _node_id: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Failed("the fake engine has no swarm".into()))
    }

    async fn overlay_containers(&self) -> Result<Vec<String>, RuntimeError> {
        self.with(|_| Ok(Vec::new()))
    }

    async fn swarm_manager_ids(&self) -> Result<std::collections::BTreeSet<String>, RuntimeError> {
        Err(RuntimeError::Failed("the fake engine has no swarm".into()))
    }

    async fn network_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        self.with(|s| Ok(s.networks.iter().any(|n| n == name)))
    }

    async fn create_overlay(
        &self,
        _name: &str,
        _labels: &BTreeMap<String, String>,
        _encrypted: bool,
        _internal: bool,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Failed("the fake engine has no swarm".into()))
    }

    async fn volume_exists(&self, _name: &str) -> Result<bool, RuntimeError> {
        Ok(true)
    }

    async fn ensure_network(
        &self,
        name: &str,
        _labels: &BTreeMap<String, String>,
        _internal: bool,
    ) -> Result<(), RuntimeError> {
        self.with(|s| {
            if !s.networks.iter().any(|n| n == name) {
                s.networks.push(name.to_string());
            }
            Ok(())
        })
    }

    async fn create(&self, name: &str, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.with(|s| {
            if s.containers.values().any(|(c, _)| c.name == name) {
                return Err(RuntimeError::Conflict(format!(
                    "Conflict. The container name \"/{name}\" is already in use"
                )));
            }
            s.next_id += 1;
            let id = format!("fake{:012}", s.next_id);
            let info = ContainerInfo {
                id: id.clone(),
                name: name.into(),
                labels: spec.labels.clone(),
                running: false,
                created: s.next_id as i64,
                unhealthy: false,
                exit_code: None,
                in_rotation: false,
            };
            // As an engine does, an anonymous volume gets a generated name.
            let mut spec = spec.clone();
            for (n, mount) in spec.mounts.iter_mut().enumerate() {
                if mount.kind == "volume" && mount.source.is_empty() {
                    mount.source = format!("{:060x}{n:04x}", s.next_id);
                }
            }
            s.containers.insert(id.clone(), (info, Some(spec)));
            Ok(id)
        })
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.with(|s| {
            let container = &mut find(s, id)?.0;
            (container.running, container.exit_code) = (true, None);
            Ok(())
        })
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<(), RuntimeError> {
        self.with(|s| {
            let container = &mut find(s, id)?.0;
            (container.running, container.exit_code) = (false, Some(0));
            Ok(())
        })
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        self.with(|s| {
            let overlays = s.overlays.clone();
            let (container, spec) = find(s, id)?;
            let on_overlay = spec.as_ref().is_some_and(|spec| {
                std::iter::once(&spec.network)
                    .chain(spec.more_networks.iter().map(|(n, _)| n))
                    .any(|n| overlays.contains(n))
            });
            if container.running && on_overlay {
                return Err(RuntimeError::Failed(format!(
                    "Could not add service state for endpoint {name} to cluster on rename"
                )));
            }
            container.name = name.to_string();
            Ok(())
        })
    }

    async fn remove(&self, id: &str, _volumes: Volumes) -> Result<(), RuntimeError> {
        self.with(|s| {
            s.containers.remove(id);
            Ok(())
        })
    }

    async fn anonymous_volumes(&self, id: &str) -> Result<Vec<AnonymousVolume>, RuntimeError> {
        self.with(|s| {
            let (_, spec) = find(s, id)?;
            Ok(spec
                .iter()
                .flat_map(|spec| &spec.mounts)
                .filter(|m| m.kind == "volume" && is_generated_volume_name(&m.source))
                .map(|m| AnonymousVolume {
                    name: m.source.clone(),
                    target: m.target.clone(),
                })
                .collect())
        })
    }

    async fn write_files(
        &self,
        id: &str,
        files: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.with(|s| {
            find(s, id)?;
            for (path, contents) in files {
                s.files
                    .insert((id.to_string(), path.clone()), contents.clone());
            }
            Ok(())
        })
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<Option<String>, RuntimeError> {
        self.with(|s| {
            find(s, id)?;
            Ok(s.files.get(&(id.to_string(), path.to_string())).cloned())
        })
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<(i64, String), RuntimeError> {
        self.with(|s| {
            find(s, id)?;
            s.execs.push((id.to_string(), command.to_vec()));
            Ok((0, String::new()))
        })
    }

    async fn exec_with(
        &self,
        id: &str,
        request: &super::ExecRequest,
    ) -> Result<(i64, String), RuntimeError> {
        self.exec(id, &request.command).await
    }

    async fn health(&self, id: &str) -> Result<Health, RuntimeError> {
        self.with(|s| {
            let unhealthy = s.unhealthy_images.clone();
            let (info, spec) = find(s, id)?;
            if !info.running {
                return Ok(Health::Exited(Some(0)));
            }
            let image = spec
                .as_ref()
                .map(|sp| sp.image.as_str())
                .unwrap_or_default();
            Ok(if unhealthy.iter().any(|u| image.starts_with(u.as_str())) {
                Health::Unhealthy
            } else {
                Health::Healthy
            })
        })
    }
}
