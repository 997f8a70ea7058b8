//! `valet-backends`: every backend, built in one place.
//!
//! [`BackendConfig`] is a closed enum with one variant per backend. The CLI reads it from
//! `valet run --backend KIND --backend-opt KEY=VALUE`, the controller from the `backend:`
//! section of its YAML; both call [`BackendConfig::build`] and from then on know only
//! `Arc<dyn Backend>`. Adding a backend is its crate plus one arm here.
//!
//! Not here: anything a backend does once built (that is its own crate's), and no
//! backend-specific code in the CLI or the controller.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use valet_backend::{Backend, BackendError};

/// The most ready pods kept per pod template: each holds containers and memory on the host.
pub const MAX_WARM_POOL: usize = 16;

/// Where pods run, and how. `kind` names the variant (`local`, `docker`, `fake`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// Host processes in a per-build workspace (no engine needed).
    Local {
        /// Where workspaces are made (default: the system temp directory).
        #[serde(default)]
        root: Option<PathBuf>,
        /// Leave workspaces in place after the build.
        #[serde(default)]
        keep: bool,
        /// Run steps as this user: `UID` or `UID:GID` (needs root). `valet serve` running as
        /// root runs them as `nobody` (65534:65534) when this is not set; `0` keeps root.
        #[serde(default)]
        user: Option<UserOption>,
    },
    /// Containers on the local Docker engine.
    Docker {
        /// Pods kept started and ready per pod template (0..=16), never reused.
        #[serde(default)]
        warm_pool: usize,
        /// The static `valet-agent` to mount (default: found or built).
        #[serde(default)]
        agent: Option<PathBuf>,
        /// How the agents are reached: `socket` (default) or `dial-out`.
        #[serde(default)]
        channel: AgentChannel,
    },
    /// Runs nothing and records every call (tests of the layers above the backends).
    Fake {
        /// Append each call to this file as a JSON line.
        #[serde(default)]
        record: Option<PathBuf>,
        /// Commands end only once this file exists (tests that hold builds running).
        #[serde(default)]
        hold_until: Option<PathBuf>,
    },
}

/// A user as written: a number (`--backend-opt user=65534`, YAML `user: 65534`) or text
/// (`65534:65534`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum UserOption {
    Id(u64),
    Text(String),
}

impl UserOption {
    fn parse(&self) -> Result<valet_local::StepUser, ConfigError> {
        let text = match self {
            UserOption::Id(n) => n.to_string(),
            UserOption::Text(t) => t.clone(),
        };
        valet_local::StepUser::parse(&text)
            .map_err(|e| ConfigError::Invalid(format!("backend.{e}")))
    }
}

/// How a container backend reaches the agents in its pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentChannel {
    /// A unix socket in a host directory mounted into the pod: only where the pod runs on
    /// this host.
    #[default]
    Socket,
    /// The agents dial a tunnel listener of this process with one-time tokens: the way
    /// for pods that cannot offer a socket (Kubernetes, other hosts).
    DialOut,
}

/// Why a backend configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown backend `{0}` (known: {known})", known = KINDS.join(", "))]
    UnknownKind(String),
    #[error("backend option `{0}` is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("{0}")]
    Invalid(String),
}

/// The backends' names, as `kind` takes them.
pub const KINDS: &[&str] = &["local", "docker", "fake"];

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::Local {
            root: None,
            keep: false,
            user: None,
        }
    }
}

impl BackendConfig {
    /// The backend's name (`local`, `docker`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Local { .. } => "local",
            BackendConfig::Docker { .. } => "docker",
            BackendConfig::Fake { .. } => "fake",
        }
    }

    /// A backend of `kind` with its defaults.
    pub fn of_kind(kind: &str) -> Result<BackendConfig, ConfigError> {
        BackendConfig::from_options(kind, &[])
    }

    /// `kind` with `KEY=VALUE` options, as `valet run --backend KIND --backend-opt K=V`
    /// gives them. A value that reads as a number or `true`/`false` is taken as one.
    pub fn from_options(kind: &str, options: &[String]) -> Result<BackendConfig, ConfigError> {
        if !KINDS.contains(&kind) {
            return Err(ConfigError::UnknownKind(kind.to_string()));
        }
        let mut obj = serde_json::Map::new();
        obj.insert("kind".into(), kind.into());
        for o in options {
            let (k, v) = o
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ConfigError::NotKeyValue(o.clone()))?;
            let value = match v {
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                _ => match v.parse::<u64>() {
                    Ok(n) => n.into(),
                    Err(_) => v.into(),
                },
            };
            obj.insert(k.replace('-', "_"), value);
        }
        let config: BackendConfig = serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| ConfigError::Invalid(format!("backend {kind}: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Where the backend keeps its files when its settings do not say: the controller's
    /// data directory (local workspaces under `DIR/pods`). Backends that keep no files
    /// ignore it. Local steps that run as another user cannot enter the data directory
    /// (it is the controller's alone): their workspaces stay in the system temp directory.
    pub fn with_data_dir(mut self, dir: &std::path::Path) -> BackendConfig {
        let other_user = self.step_user().is_some();
        if let BackendConfig::Local { root, .. } = &mut self
            && root.is_none()
            && !other_user
        {
            *root = Some(dir.join("pods"));
        }
        self
    }

    /// The controller's default for local steps: when this process runs as root and no
    /// `user` is set, steps run as [`valet_local::StepUser::NOBODY`], so a pipeline cannot
    /// read the controller's files, memory or other repositories' credentials through root.
    pub fn with_unprivileged_steps(mut self) -> BackendConfig {
        if let BackendConfig::Local { user, .. } = &mut self
            && user.is_none()
            && valet_local::StepUser::running_as_root()
        {
            let nobody = valet_local::StepUser::NOBODY;
            *user = Some(UserOption::Text(nobody.to_string()));
        }
        self
    }

    /// The user local steps run as, when it is not this process's.
    pub fn step_user(&self) -> Option<valet_local::StepUser> {
        match self {
            BackendConfig::Local {
                user: Some(user), ..
            } => user
                .parse()
                .ok()
                .filter(|u| *u != valet_local::StepUser::current()),
            _ => None,
        }
    }

    /// Checks what the types cannot say.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let BackendConfig::Local {
            user: Some(user), ..
        } = self
        {
            user.parse()?;
        }
        if let BackendConfig::Docker { warm_pool, .. } = self
            && *warm_pool > MAX_WARM_POOL
        {
            return Err(ConfigError::Invalid(format!(
                "backend.warm_pool must be at most {MAX_WARM_POOL} pods per template, not {warm_pool}"
            )));
        }
        Ok(())
    }

    /// Makes the backend, ready to provision: connected, its prerequisites checked.
    pub async fn build(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(match self {
            BackendConfig::Local { root, keep, user } => {
                let mut local = valet_local::LocalBackend::new(
                    root.clone().unwrap_or_else(std::env::temp_dir),
                    *keep,
                );
                if let Some(user) = user {
                    local = local.with_user(
                        user.parse()
                            .map_err(|e| BackendError::Rejected(e.to_string()))?,
                    );
                }
                Arc::new(local)
            }
            BackendConfig::Docker {
                warm_pool,
                agent,
                channel,
            } => {
                let mut d = valet_docker::DockerBackend::connect_ready()
                    .await?
                    .with_channel(match channel {
                        AgentChannel::Socket => valet_docker::AgentChannel::Socket,
                        AgentChannel::DialOut => valet_docker::AgentChannel::DialOut,
                    })
                    .with_warm_pool(*warm_pool);
                if let Some(a) = agent {
                    d = d.with_agent(a.clone());
                }
                Arc::new(d)
            }
            BackendConfig::Fake { record, hold_until } => {
                let fake = match record {
                    Some(f) => valet_backend::fake::FakeBackend::recording_to(f.clone()),
                    None => valet_backend::fake::FakeBackend::new(),
                };
                if let Some(f) = hold_until {
                    fake.hold_until(f.clone());
                }
                Arc::new(fake)
            }
        })
    }

    /// Makes the backend for clean-up only (`valet gc`): connected, nothing checked.
    pub async fn connect(&self) -> Result<Arc<dyn Backend>, BackendError> {
        match self {
            BackendConfig::Docker { .. } => {
                Ok(Arc::new(valet_docker::DockerBackend::connect().await?))
            }
            other => other.build().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_a_config_and_bad_ones_are_refused_in_words() {
        assert_eq!(
            BackendConfig::from_options("docker", &["warm_pool=3".into()]).unwrap(),
            BackendConfig::Docker {
                warm_pool: 3,
                agent: None,
                channel: AgentChannel::Socket,
            }
        );
        assert_eq!(
            BackendConfig::from_options("docker", &["channel=dial-out".into()]).unwrap(),
            BackendConfig::Docker {
                warm_pool: 0,
                agent: None,
                channel: AgentChannel::DialOut,
            }
        );
        let e =
            BackendConfig::from_options("docker", &["channel=carrier-pigeon".into()]).unwrap_err();
        assert!(
            e.to_string().contains("unknown variant `carrier-pigeon`"),
            "{e}"
        );
        assert_eq!(
            BackendConfig::from_options("local", &["keep=true".into()]).unwrap(),
            BackendConfig::Local {
                root: None,
                keep: true,
                user: None,
            }
        );
        assert_eq!(
            BackendConfig::from_options("local", &["user=65534".into()])
                .unwrap()
                .step_user()
                .map(|u| u.to_string()),
            (valet_local::StepUser::current().uid != 65534).then(|| "65534:65534".to_string())
        );
        let e = BackendConfig::from_options("local", &["user=nobody".into()]).unwrap_err();
        assert!(e.to_string().contains("UID or UID:GID"), "{e}");
        assert_eq!(
            BackendConfig::of_kind("podman").unwrap_err().to_string(),
            "unknown backend `podman` (known: local, docker, fake)"
        );
        let e = BackendConfig::from_options("docker", &["warm_pool=500".into()]).unwrap_err();
        assert!(e.to_string().contains("at most 16"), "{e}");
        let e = BackendConfig::from_options("docker", &["colour=blue".into()]).unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = BackendConfig::from_options("docker", &["=3".into()]).unwrap_err();
        assert_eq!(e, ConfigError::NotKeyValue("=3".into()));
    }

    #[tokio::test]
    async fn the_fake_is_built_like_any_other_backend() {
        let b = BackendConfig::of_kind("fake")
            .unwrap()
            .build()
            .await
            .unwrap();
        assert_eq!(b.name(), "fake");
        let b = BackendConfig::of_kind("local")
            .unwrap()
            .build()
            .await
            .unwrap();
        assert_eq!(b.name(), "local");
    }
}

/// A job's pod as a plan describes it, for [`kubernetes_manifests`].
#[derive(Debug, Clone)]
pub struct PlannedPod {
    /// The plan's job id (`job-1`).
    pub job: String,
    pub spec: valet_backend::PodSpec,
}

/// The Pod objects the Kubernetes backend would create for `pods` (one YAML document each),
/// without a cluster: `valet plan --format k8s`. `pipeline` names the file in the
/// annotations; the agents' address and the build are placeholders a real build fills in.
pub fn kubernetes_manifests(
    pods: &[PlannedPod],
    pipeline: &str,
) -> Result<String, valet_kube::ManifestError> {
    let with_options: Vec<_> = pods
        .iter()
        .map(|p| {
            let name = valet_kube::manifest::pod_name("plan", &p.job);
            let options = valet_kube::ManifestOptions {
                name,
                namespace: "default".into(),
                agent_image: valet_kube::manifest::AGENT_IMAGE.into(),
                dial: "VALET_CONTROLLER:PORT".into(),
                owner: "valet-plan".into(),
                build_id: "plan".into(),
                build_number: 0,
                job: p.job.clone(),
                repository: None,
                pipeline: pipeline.into(),
            };
            (p.spec.clone(), options)
        })
        .collect();
    valet_kube::manifests_yaml(&with_options)
}
