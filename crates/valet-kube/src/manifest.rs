//! The Pod object of a resolved pod spec.
//!
//! What valet adds to what the template says:
//! - an init container (the agent image) that copies the static `valet-agent` into an
//!   `emptyDir`, and every container's command wrapped so the agent is its first process
//!   (`valet-agent serve --dial … -- <the container's own command>`): steps reach the agent
//!   over a connection it dials out, never through the exec API;
//! - the agent's one-time token from a Secret named after the pod (never in the Pod object,
//!   which every reader of pods can see);
//! - a workspace `emptyDir` shared by all containers at [`WORKSPACE`];
//! - labels naming the build, the job and the controller (what `gc` and the lease find),
//!   annotations with what labels cannot hold (the repository, the pipeline);
//! - `restartPolicy: Never` and an `activeDeadlineSeconds` ceiling.
//!
//! The template's raw `yaml` is the base the fields are combined onto ([`crate::merge`]), as the
//! Jenkins plugin does: with `yamlMergeStrategy: merge()` the YAML of every inherited template
//! is combined in order, with the default `override()` only the last one counts. Jenkins'
//! own agent container (`jnlp`) is never created.

use indexmap::IndexMap;
use serde_json::{Map, Value, json};
use valet_backend::pod::{ContainerSpec, EnvRef, PodSpec, Resources, Volume};

use crate::merge::combine;

/// Where the workspace is mounted in every container (the Jenkins plugin's default).
pub const WORKSPACE: &str = "/home/jenkins/agent";
/// Where the agent binary is, in every container.
pub const AGENT_DIR: &str = "/valet/bin";
pub const AGENT_PATH: &str = "/valet/bin/valet-agent";
/// Where the agent image keeps the binary the init container copies.
pub const AGENT_IN_IMAGE: &str = "/valet-agent";
/// The default agent image (built locally from `images/agent`).
pub const AGENT_IMAGE: &str = "valet/agent:latest";
/// The image of a container whose template names none.
pub const DEFAULT_IMAGE: &str = "valet/busybox:latest";
/// The ceiling on a pod's life when the template sets none: a pod whose controller is gone
/// and whose lease was never collected still ends.
pub const DEFAULT_DEADLINE_SECONDS: i64 = 4 * 3600;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_BUILD: &str = "valet.dev/build";
pub const LABEL_JOB: &str = "valet.dev/job";
pub const LABEL_OWNER: &str = "valet.dev/owner";
pub const ANNOTATION_REPOSITORY: &str = "valet.dev/repository";
pub const ANNOTATION_PIPELINE: &str = "valet.dev/pipeline";
pub const ANNOTATION_BUILD_NUMBER: &str = "valet.dev/build-number";

/// The environment variable the agent reads its token from (`valet-agent`'s `TOKEN_ENV`).
pub const TOKEN_ENV: &str = "VALET_AGENT_TOKEN";

/// What the manifest needs besides the pod spec.
#[derive(Debug, Clone)]
pub struct ManifestOptions {
    /// The Pod's name (a DNS label; see [`pod_name`]).
    pub name: String,
    /// Used when neither the template nor its YAML names one.
    pub namespace: String,
    pub agent_image: String,
    /// Where the agents dial (`HOST:PORT`).
    pub dial: String,
    /// The controller (or `valet run` process) that owns the pod, as a label value.
    pub owner: String,
    pub build_id: String,
    pub build_number: u64,
    pub job: String,
    pub repository: Option<String>,
    pub pipeline: String,
}

/// Why no manifest could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("the pod YAML #{index} is not valid: {message}")]
    Yaml { index: usize, message: String },
    #[error("the pod YAML #{index} is not a mapping (a Pod object)")]
    NotAPod { index: usize },
    #[error(
        "volume `{mount_path}`: a {kind} volume needs a source (a claim, secret, config map, host path or server:path)"
    )]
    VolumeSource { kind: String, mount_path: String },
    #[error("volume `{mount_path}`: {kind} volumes are not supported on Kubernetes by valet yet")]
    VolumeKind { kind: String, mount_path: String },
}

/// A Kubernetes name from any text: lower case letters, digits and `-`, at most `max` long,
/// starting and ending with a letter or digit.
pub fn dns_label(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for ch in s.chars() {
        let c = ch.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "x".into()
    } else {
        trimmed.to_string()
    }
}

/// The name of a job's pod: `valet-<build>-<job>`, at most 63 characters.
pub fn pod_name(build_id: &str, job: &str) -> String {
    dns_label(&format!("valet-{build_id}-{job}"), 63)
}

/// The Secret that holds the agents' tokens of pod `pod` (one key per container).
pub fn token_secret_name(pod: &str) -> String {
    format!("{}-agent", dns_label(pod, 57))
}

/// The Pod object for `spec`.
pub fn pod(spec: &PodSpec, o: &ManifestOptions) -> Result<Value, ManifestError> {
    let base = template_yaml(spec)?;
    let generated = generated_pod(spec, o)?;
    let mut pod = combine(&base, &generated);
    drop_jnlp(&mut pod);
    if pod["metadata"]["namespace"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        pod["metadata"]["namespace"] = json!(o.namespace);
    }
    Ok(pod)
}

/// The template's YAML as one object (`{}` when it has none).
fn template_yaml(spec: &PodSpec) -> Result<Value, ManifestError> {
    let merge_all = spec
        .extra
        .get("yamlMergeStrategy")
        .is_some_and(|s| s.contains("merge"));
    let mut docs = Vec::with_capacity(spec.yaml.len());
    for (i, y) in spec.yaml.iter().enumerate() {
        let v: Value = serde_saphyr::from_str(y).map_err(|e| ManifestError::Yaml {
            index: i + 1,
            message: e.to_string().lines().next().unwrap_or("").to_string(),
        })?;
        match v {
            Value::Object(_) => docs.push(v),
            Value::Null => docs.push(json!({})),
            _ => return Err(ManifestError::NotAPod { index: i + 1 }),
        }
    }
    Ok(if merge_all {
        docs.iter().fold(json!({}), |acc, d| combine(&acc, d))
    } else {
        docs.pop().unwrap_or_else(|| json!({}))
    })
}

fn drop_jnlp(pod: &mut Value) {
    if let Some(cs) = pod["spec"]["containers"].as_array_mut() {
        cs.retain(|c| c["name"] != "jnlp");
    }
}

fn generated_pod(spec: &PodSpec, o: &ManifestOptions) -> Result<Value, ManifestError> {
    let mut labels = Map::new();
    labels.insert(LABEL_MANAGED_BY.into(), json!("valet"));
    labels.insert(LABEL_BUILD.into(), json!(dns_label(&o.build_id, 63)));
    labels.insert(LABEL_JOB.into(), json!(dns_label(&o.job, 63)));
    labels.insert(LABEL_OWNER.into(), json!(dns_label(&o.owner, 63)));
    let mut annotations: Map<String, Value> = spec
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if let Some(r) = &o.repository {
        annotations.insert(ANNOTATION_REPOSITORY.into(), json!(r));
    }
    annotations.insert(ANNOTATION_PIPELINE.into(), json!(o.pipeline));
    annotations.insert(
        ANNOTATION_BUILD_NUMBER.into(),
        json!(o.build_number.to_string()),
    );

    let (volumes, mounts) = volumes(&spec.volumes)?;
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .filter(|c| !c.jnlp)
        .map(|c| container(c, spec, o, &mounts))
        .collect();

    let mut pod_spec = Map::new();
    pod_spec.insert("restartPolicy".into(), json!("Never"));
    pod_spec.insert(
        "activeDeadlineSeconds".into(),
        json!(
            spec.active_deadline_seconds
                .unwrap_or(DEFAULT_DEADLINE_SECONDS)
        ),
    );
    if let Some(sa) = &spec.service_account {
        pod_spec.insert("serviceAccountName".into(), json!(sa));
    }
    if !spec.node_selector.is_empty() {
        pod_spec.insert("nodeSelector".into(), string_map(&spec.node_selector));
    }
    let mut security = Map::new();
    if let Some(u) = spec.run_as_user {
        security.insert("runAsUser".into(), json!(u));
    }
    if let Some(g) = spec.run_as_group {
        security.insert("runAsGroup".into(), json!(g));
        // The workspace is writable by the pod's group whatever user a container runs as.
        security.insert("fsGroup".into(), json!(g));
    }
    if !security.is_empty() {
        pod_spec.insert("securityContext".into(), Value::Object(security));
    }
    pod_spec.insert(
        "initContainers".into(),
        json!([{
            "name": "valet-agent-install",
            "image": o.agent_image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/cp", AGENT_IN_IMAGE, AGENT_PATH],
            "volumeMounts": [{"name": "valet-agent", "mountPath": AGENT_DIR}],
            "securityContext": {"allowPrivilegeEscalation": false},
        }]),
    );
    pod_spec.insert("containers".into(), Value::Array(containers));
    pod_spec.insert("volumes".into(), Value::Array(volumes));

    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(o.name));
    if let Some(ns) = &spec.namespace {
        metadata.insert("namespace".into(), json!(ns));
    }
    metadata.insert("labels".into(), Value::Object(labels));
    metadata.insert("annotations".into(), Value::Object(annotations));
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": pod_spec,
    }))
}

fn string_map(m: &IndexMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// The pod's volumes and the mounts every container gets.
fn volumes(specs: &[Volume]) -> Result<(Vec<Value>, Vec<Value>), ManifestError> {
    let mut volumes = vec![
        json!({"name": "workspace", "emptyDir": {}}),
        json!({"name": "valet-agent", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        json!({"name": "workspace", "mountPath": WORKSPACE}),
        json!({"name": "valet-agent", "mountPath": AGENT_DIR, "readOnly": true}),
    ];
    for (i, v) in specs.iter().enumerate() {
        let name = format!("volume-{i}");
        let need = |what: &str| -> Result<String, ManifestError> {
            v.source
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ManifestError::VolumeSource {
                    kind: what.into(),
                    mount_path: v.mount_path.clone(),
                })
        };
        let source = match v.kind.as_str() {
            "emptyDir" => json!({"emptyDir": {}}),
            "hostPath" => json!({"hostPath": {"path": need("hostPath")?}}),
            "persistentVolumeClaim" => json!({"persistentVolumeClaim": {
                "claimName": need("persistentVolumeClaim")?, "readOnly": v.read_only}}),
            "secret" => json!({"secret": {"secretName": need("secret")?}}),
            "configMap" => json!({"configMap": {"name": need("configMap")?}}),
            "nfs" => {
                let s = need("nfs")?;
                let (server, path) = s.split_once(':').unwrap_or((s.as_str(), "/"));
                json!({"nfs": {"server": server, "path": path, "readOnly": v.read_only}})
            }
            other => {
                return Err(ManifestError::VolumeKind {
                    kind: other.into(),
                    mount_path: v.mount_path.clone(),
                });
            }
        };
        let mut vol = json!({"name": name});
        if let (Value::Object(m), Value::Object(s)) = (&mut vol, source) {
            m.extend(s);
        }
        volumes.push(vol);
        let mut mount = json!({"name": name, "mountPath": v.mount_path});
        if v.read_only {
            mount["readOnly"] = json!(true);
        }
        mounts.push(mount);
    }
    Ok((volumes, mounts))
}

/// One container, its own command behind the agent.
fn container(c: &ContainerSpec, spec: &PodSpec, o: &ManifestOptions, mounts: &[Value]) -> Value {
    let own: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect();
    let mut command = vec![
        AGENT_PATH.to_string(),
        "serve".into(),
        "--dial".into(),
        o.dial.clone(),
        "--pod".into(),
        o.name.clone(),
        "--container".into(),
        c.name.clone(),
    ];
    if !own.is_empty() {
        command.push("--".into());
        command.extend(own);
    }
    let mut env: Vec<Value> = spec
        .env
        .iter()
        .chain(c.env.iter())
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    for (k, r) in &c.env_refs {
        let from = match r {
            EnvRef::Secret { name, key } => json!({"secretKeyRef": {"name": name, "key": key}}),
            EnvRef::Other(text) => {
                serde_saphyr::from_str::<Value>(text).unwrap_or_else(|_| json!({}))
            }
        };
        env.push(json!({"name": k, "valueFrom": from}));
    }
    env.push(json!({"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {
        "name": token_secret_name(&o.name), "key": c.name}}}));

    let mut out = Map::new();
    out.insert("name".into(), json!(c.name));
    out.insert(
        "image".into(),
        json!(c.image.as_deref().unwrap_or(DEFAULT_IMAGE)),
    );
    out.insert(
        "imagePullPolicy".into(),
        json!(if c.always_pull {
            "Always"
        } else {
            "IfNotPresent"
        }),
    );
    out.insert("command".into(), json!(command));
    // An empty `args` so the image's CMD does not follow the agent's arguments.
    out.insert("args".into(), json!([]));
    out.insert(
        "workingDir".into(),
        json!(c.working_dir.as_deref().unwrap_or(WORKSPACE)),
    );
    out.insert("env".into(), Value::Array(env));
    if c.tty {
        out.insert("tty".into(), json!(true));
    }
    if let Some(r) = resources(&c.resources) {
        out.insert("resources".into(), r);
    }
    let mut security = Map::new();
    if let Some(u) = c.run_as_user {
        security.insert("runAsUser".into(), json!(u));
    }
    if let Some(g) = c.run_as_group {
        security.insert("runAsGroup".into(), json!(g));
    }
    if c.privileged {
        security.insert("privileged".into(), json!(true));
    } else {
        security.insert("allowPrivilegeEscalation".into(), json!(false));
    }
    out.insert("securityContext".into(), Value::Object(security));
    if !c.ports.is_empty() {
        let ports: Vec<Value> = c
            .ports
            .iter()
            .map(|p| {
                let mut v = json!({"containerPort": p.container_port});
                if let Some(n) = &p.name {
                    v["name"] = json!(n);
                }
                if let Some(h) = p.host_port {
                    v["hostPort"] = json!(h);
                }
                v
            })
            .collect();
        out.insert("ports".into(), Value::Array(ports));
    }
    out.insert("volumeMounts".into(), Value::Array(mounts.to_vec()));
    Value::Object(out)
}

fn resources(r: &Resources) -> Option<Value> {
    let cpu = |m: u64| {
        if m.is_multiple_of(1000) {
            json!((m / 1000).to_string())
        } else {
            json!(format!("{m}m"))
        }
    };
    let memory = |b: u64| {
        const MI: u64 = 1024 * 1024;
        if b.is_multiple_of(1024 * MI) {
            json!(format!("{}Gi", b / (1024 * MI)))
        } else if b.is_multiple_of(MI) {
            json!(format!("{}Mi", b / MI))
        } else {
            json!(b.to_string())
        }
    };
    let mut requests = Map::new();
    let mut limits = Map::new();
    if let Some(v) = r.request_cpu_millis {
        requests.insert("cpu".into(), cpu(v));
    }
    if let Some(v) = r.request_memory_bytes {
        requests.insert("memory".into(), memory(v));
    }
    if let Some(v) = r.limit_cpu_millis {
        limits.insert("cpu".into(), cpu(v));
    }
    if let Some(v) = r.limit_memory_bytes {
        limits.insert("memory".into(), memory(v));
    }
    if requests.is_empty() && limits.is_empty() {
        return None;
    }
    let mut out = Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(pod_name("b-42", "job-1"), "valet-b-42-job-1");
        assert_eq!(dns_label("Run_1A2B/..x", 63), "run-1a2b-x");
        assert_eq!(dns_label("---", 63), "x");
        let long = pod_name(&"a".repeat(100), "job-1");
        assert!(long.len() <= 63, "{long}");
        assert!(token_secret_name(&long).len() <= 63);
    }

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        let r = Resources {
            request_cpu_millis: Some(250),
            limit_cpu_millis: Some(2000),
            request_memory_bytes: Some(512 * 1024 * 1024),
            limit_memory_bytes: Some(2 * 1024 * 1024 * 1024),
            ..Default::default()
        };
        assert_eq!(
            resources(&r).unwrap(),
            json!({"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}})
        );
        assert_eq!(resources(&Resources::default()), None);
    }
}
