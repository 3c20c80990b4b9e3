//! The top-level `volumes` and `networks`: declarations services refer to,
//! each placed for the container policy.

#[allow(unused_imports)]
use super::*;

impl Loader<'_> {
    pub(super) fn volumes(&mut self, file: &str, body: &Node) {
        let here = Here {
            file,
            node: body,
            prefix: "volumes".into(),
        };
        let spec = match type_json::<BTreeMap<String, Option<VolumeDeclSpec>>>(
            &here,
            &body.value.to_json(),
        ) {
            Ok(spec) => spec,
            Err(failure) => return self.push(failure.0),
        };
        for (name, decl) in spec {
            let decl = decl.unwrap_or_default();
            let external = decl.external.unwrap_or(false);
            let engine_name = match (&decl.name, external) {
                (Some(given), _) => Some(given.clone()),
                (None, true) => Some(name.clone()),
                (None, false) => None,
            };
            let text = |map: Option<BTreeMap<String, crate::manifest::spec::Scalar>>| {
                map.unwrap_or_default()
                    .into_iter()
                    .map(|(key, value)| (key, value.to_string()))
                    .collect::<BTreeMap<_, _>>()
            };
            let (labels, driver_opts) = (text(decl.labels), text(decl.driver_opts));
            if external && !(labels.is_empty() && driver_opts.is_empty()) {
                self.push(
                    here.error(
                        &[k(&name)],
                        "an external volume takes no `labels` or `driver_opts`",
                    )
                    .help("pier never creates an external volume; set them where it is created"),
                );
            }
            if let Some(driver) = decl.driver.filter(|d| d != "local") {
                self.push(
                    here.error(
                        &[k(&name), k("driver")],
                        format!("volume driver `{driver}` is not supported"),
                    )
                    .help("only the engine's `local` driver is supported"),
                );
            }
            self.loaded
                .declared_at
                .insert(format!("volumes.{name}"), here.key_loc(&name));
            let decl = crate::manifest::model::VolumeDecl {
                engine_name,
                external,
                labels,
                driver_opts,
            };
            self.loaded.manifest.volumes.insert(name, decl);
        }
    }

    /// Top-level `configs` or `secrets`: where each one's contents come
    /// from (read once everything is loaded).
    pub(super) fn provided(
        &mut self,
        file: &str,
        body: &Node,
        kind: crate::manifest::model::ProvidedKind,
    ) {
        use crate::manifest::model::{Origin, ProvidedSource};
        let here = Here {
            file,
            node: body,
            prefix: kind.key().into(),
        };
        let spec = match type_json::<BTreeMap<String, crate::manifest::spec::ProvidedSpec>>(
            &here,
            &body.value.to_json(),
        ) {
            Ok(spec) => spec,
            Err(failure) => return self.push(failure.0),
        };
        for (name, decl) in spec {
            if decl.external == Some(true) {
                self.push(
                    here.error(
                        &[k(&name), k("external")],
                        format!("external {} are Swarm's", kind.key()),
                    )
                    .help("give its contents with `file`, `content` or `environment`"),
                );
                continue;
            }
            let mut p = Vec::new();
            let origin = match (&decl.file, &decl.content, &decl.environment) {
                (Some(path), None, None) => crate::manifest::normalize::repo_path(
                    path,
                    &here,
                    &[k(&name), k("file")],
                    &mut p,
                )
                .map(Origin::File),
                (None, Some(content), None) => Some(Origin::Content(content.clone())),
                (None, None, Some(variable)) => Some(Origin::Environment(variable.clone())),
                _ => {
                    p.push(here.error(
                        &[k(&name)],
                        "give exactly one of `file`, `content` and `environment`",
                    ));
                    None
                }
            };
            for problem in p {
                self.push(problem);
            }
            let Some(origin) = origin else { continue };
            self.loaded
                .declared_at
                .insert(format!("{}.{name}", kind.key()), here.key_loc(&name));
            self.loaded.manifest.provided.insert(
                (kind, name.clone()),
                ProvidedSource {
                    origin,
                    location: here.key_loc(&name),
                },
            );
        }
    }

    /// Top-level `networks`: `default`, the stack's own network, and
    /// networks of their own names that services list in `networks`.
    pub(super) fn networks(&mut self, file: &str, body: &Node) {
        let here = Here {
            file,
            node: body,
            prefix: "networks".into(),
        };
        let spec = match type_json::<BTreeMap<String, Option<crate::manifest::spec::NetworkDeclSpec>>>(
            &here,
            &body.value.to_json(),
        ) {
            Ok(spec) => spec,
            Err(failure) => return self.push(failure.0),
        };
        for (name, decl) in spec {
            let decl = decl.unwrap_or_default();
            if name == "default" {
                self.default_network(&here, &name, decl);
                continue;
            }
            if !is_network_key(&name) {
                self.push(
                    Diagnostic::error(
                        here.key_loc(&name),
                        format!("`{name}` cannot name a network"),
                    )
                    .key(format!("networks.{name}"))
                    .help("use letters, digits, `-` and `_`, starting with a letter or digit"),
                );
                continue;
            }
            let external = decl.external.unwrap_or(false);
            let (overlay, encrypted) = self.network_kind(&here, &name, &decl, external);
            if external
                && (decl.driver.is_some() || decl.internal.is_some() || decl.driver_opts.is_some())
            {
                self.push(
                    here.error(
                        &[k(&name)],
                        "an external network takes no `driver`, `internal` or `driver_opts`",
                    )
                    .help("pier never creates an external network; set them where it is created"),
                );
            }
            self.loaded
                .declared_at
                .insert(format!("networks.{name}"), here.key_loc(&name));
            let decl = crate::manifest::model::NetworkDecl {
                overlay,
                encrypted,
                internal: decl.internal.unwrap_or(false),
                external,
                engine_name: decl.name.or_else(|| external.then(|| name.clone())),
            };
            self.loaded.manifest.networks.insert(name, decl);
        }
    }

    /// `networks.default`: the stack's own network.
    pub(super) fn default_network(
        &mut self,
        here: &Here,
        name: &str,
        decl: crate::manifest::spec::NetworkDeclSpec,
    ) {
        let (overlay, encrypted) = self.network_kind(here, name, &decl, false);
        for (key, set) in [
            ("internal", decl.internal == Some(true)),
            ("external", decl.external.is_some()),
            ("name", decl.name.is_some()),
        ] {
            if set {
                self.push(
                    here.error(&[k(name), k(key)], format!("the stack's network `default` takes no `{key}`"))
                        .help("declare a network of its own name with it, and list that network in the services' `networks`"),
                );
            }
        }
        self.loaded.manifest.network = crate::manifest::model::StackNetwork { overlay, encrypted };
        self.loaded.network_at = Some(here.key_loc(name));
    }

    /// A network's driver and its IPsec option: (overlay, encrypted).
    pub(super) fn network_kind(
        &mut self,
        here: &Here,
        name: &str,
        decl: &crate::manifest::spec::NetworkDeclSpec,
        external: bool,
    ) -> (bool, bool) {
        let overlay = match decl.driver.as_deref() {
            None | Some("bridge") => false,
            Some("overlay") => true,
            Some(other) => {
                self.push(
                    here.error(&[k(name), k("driver")], format!("network driver `{other}` is not supported"))
                        .help("use `bridge` (a network on each node) or `overlay` (one network across the nodes)"),
                );
                false
            }
        };
        if decl.attachable == Some(false) {
            self.push(
                here.error(
                    &[k(name), k("attachable")],
                    "pier's networks are always attachable",
                )
                .help("remove `attachable: false`: pier runs plain containers, which need it"),
            );
        }
        let mut encrypted = false;
        for option in decl.driver_opts.iter().flat_map(|o| o.keys()) {
            if option == "encrypted" && overlay {
                encrypted = true;
            } else if !external {
                self.push(
                    here.error(
                        &[k(name), k("driver_opts"), k(option)],
                        format!("driver option `{option}` is not supported"),
                    )
                    .help("an overlay network takes `encrypted` (IPsec between hosts)"),
                );
            }
        }
        (overlay, encrypted)
    }
}
