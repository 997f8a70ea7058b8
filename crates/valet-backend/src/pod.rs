//! The pod a backend is asked for, every value already evaluated.
//!
//! The planner's pod (`valet_plan::model::PodSpec`) may hold values only known at run time
//! (`envVar(value: "v${params.V}")`); the runtime evaluates them and hands a backend this
//! form, so no adapter ever sees an unevaluated expression or needs the planner to read one.

use indexmap::IndexMap;
use serde::Serialize;

/// A pod: containers sharing a workspace and a network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct PodSpec {
    /// The template's name or label (`mypod`), or a generated one.
    pub name: String,
    pub containers: Vec<ContainerSpec>,
    /// Where steps run outside any `container('…')` block.
    pub default_container: String,
    pub volumes: Vec<Volume>,
    /// Given to every container (the template's `envVars`).
    pub env: IndexMap<String, String>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub node_selector: IndexMap<String, String>,
    pub service_account: Option<String>,
    pub namespace: Option<String>,
    pub annotations: IndexMap<String, String>,
    /// Templates this one was merged from, outermost first (nesting and `inheritFrom`).
    pub inherits: Vec<String>,
    /// Raw pod YAML from the template, kept for backends that take it (Kubernetes).
    pub yaml: Vec<String>,
    pub active_deadline_seconds: Option<i64>,
    /// Template settings kept for the backends that use them (`idleMinutes`,
    /// `podRetention`, `yamlMergeStrategy`, …), as text.
    pub extra: IndexMap<String, String>,
    /// Its containers are not all known here: the template lives outside the pipeline file.
    pub open: bool,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ContainerSpec {
    pub name: String,
    /// `None` on the local backend's default container, which has no image.
    pub image: Option<String>,
    /// The entrypoint (`command`), split into words.
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub tty: bool,
    pub working_dir: Option<String>,
    pub privileged: bool,
    pub always_pull: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub env: IndexMap<String, String>,
    /// Variables whose value the cluster fills in (`secretEnvVar`, `valueFrom`): only a
    /// backend that has such a cluster can give them; others leave them out.
    pub env_refs: IndexMap<String, EnvRef>,
    pub resources: Resources,
    pub ports: Vec<Port>,
    pub shell: Option<String>,
    /// Jenkins' agent container (`jnlp`): valet does not need it and does not start it.
    pub jnlp: bool,
}

/// A variable whose value lives in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvRef {
    /// A key of a Kubernetes secret.
    Secret { name: String, key: String },
    /// Any other `valueFrom` source, as its YAML/JSON text.
    Other(String),
}

/// Requests and limits, parsed from Kubernetes quantities (`500m`, `512Mi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Resources {
    pub request_cpu_millis: Option<u64>,
    pub limit_cpu_millis: Option<u64>,
    pub request_memory_bytes: Option<u64>,
    pub limit_memory_bytes: Option<u64>,
    /// The most processes and threads at once: from the operator's [`crate::ContainerPolicy`],
    /// not from templates.
    pub limit_pids: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub name: Option<String>,
    pub container_port: i64,
    pub host_port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// `emptyDir`, `hostPath`, `persistentVolumeClaim`, `secret`, `configMap`, `nfs`, `dynamicPVC`.
    pub kind: String,
    pub mount_path: String,
    pub source: Option<String>,
    pub read_only: bool,
}

/// What a pod asks of a host, summed over its containers: what a scheduler places by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Demand {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl PodSpec {
    /// The sum of the containers' requests (a container without a request but with a
    /// limit asks for its limit, as Kubernetes defaults it). Jenkins' `jnlp` container is
    /// not started, so it asks for nothing.
    pub fn demand(&self) -> Demand {
        self.containers
            .iter()
            .filter(|c| !c.jnlp)
            .fold(Demand::default(), |d, c| {
                let r = &c.resources;
                Demand {
                    cpu_millis: d.cpu_millis
                        + r.request_cpu_millis.or(r.limit_cpu_millis).unwrap_or(0),
                    memory_bytes: d.memory_bytes
                        + r.request_memory_bytes.or(r.limit_memory_bytes).unwrap_or(0),
                }
            })
    }

    /// A pod of these containers (no images), the first one the default.
    pub fn of_containers(name: &str, containers: &[&str]) -> PodSpec {
        PodSpec {
            name: name.to_string(),
            containers: containers
                .iter()
                .map(|c| ContainerSpec {
                    name: c.to_string(),
                    ..Default::default()
                })
                .collect(),
            default_container: containers
                .first()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_sums_requests_falls_back_to_limits_and_skips_jnlp() {
        let mut spec = PodSpec::of_containers("p", &["a", "b", "jnlp"]);
        spec.containers[0].resources.request_cpu_millis = Some(500);
        spec.containers[0].resources.limit_memory_bytes = Some(64 << 20);
        spec.containers[1].resources.request_cpu_millis = Some(250);
        spec.containers[1].resources.request_memory_bytes = Some(32 << 20);
        spec.containers[1].resources.limit_memory_bytes = Some(1 << 30);
        spec.containers[2].jnlp = true;
        spec.containers[2].resources.request_cpu_millis = Some(9000);
        assert_eq!(
            spec.demand(),
            Demand {
                cpu_millis: 750,
                memory_bytes: 96 << 20
            }
        );
    }
}
