//! Pod templates → [`PodSpec`]: `podTemplate(...)` arguments, `containerTemplate(...)` and
//! the map-literal container form, raw pod YAML, volumes, env vars and resources.

use crate::model::{ContainerSpec, PodSpec, Port, Resources, Value, Volume};
use crate::values::{Consts, cpu_millis, dynamic, eval, id_value, memory_bytes};
use indexmap::IndexMap;
use valet_dsl::ast::{Arg, Call, Expr, ExprKind, MapKey};
use valet_dsl::{Diagnostic, SourceFile, Span};

/// The name of the container that runs steps written outside any `container('…')` block
/// in a Kubernetes-style pod (Jenkins' agent container; valet runs its own image there).
pub const AGENT_CONTAINER: &str = "jnlp";
/// The container of a pod made for a plain `node('label')` or `agent any`.
pub const DEFAULT_CONTAINER: &str = "default";

/// A `podTemplate` in scope: its identity and the pod it describes.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub(crate) name: Option<String>,
    pub(crate) label: Option<Value>,
    pub(crate) inherit_from: Vec<String>,
    pub(crate) pod: PodSpec,
}

pub(crate) struct PodBuilder<'a> {
    pub(crate) src: &'a SourceFile,
    pub(crate) consts: &'a Consts,
    pub(crate) diags: &'a mut Vec<Diagnostic>,
    pub(crate) notes: &'a mut Vec<(Span, String)>,
}

/// A pod with one container and no image: what a plain `node` gets.
pub(crate) fn default_pod(name: &str) -> PodSpec {
    PodSpec {
        name: name.to_string(),
        containers: vec![ContainerSpec {
            name: DEFAULT_CONTAINER.into(),
            ..Default::default()
        }],
        default_container: DEFAULT_CONTAINER.into(),
        ..Default::default()
    }
}

/// Named arguments of a call as (name, expr), plus the first positional argument under `first`.
pub(crate) fn call_args<'c>(call: &'c Call, first: &'c str) -> Vec<(&'c str, &'c Expr)> {
    let mut out = Vec::new();
    let mut positional = 0;
    for a in &call.args {
        match a {
            Arg::Named { name, value } => out.push((name.name.as_str(), value)),
            Arg::Positional(e) => {
                if positional == 0 {
                    out.push((first, e));
                }
                positional += 1;
            }
        }
    }
    out
}

/// `name 'x'` lines of a declarative block as (name, expr).
pub(crate) fn block_settings(body: &[valet_dsl::ast::Stmt]) -> Vec<(&str, &Expr)> {
    body.iter()
        .filter_map(|s| match &s.kind {
            valet_dsl::ast::StmtKind::Expr {
                expr:
                    Expr {
                        kind: ExprKind::Call(c),
                        ..
                    },
            } if c.target.is_none() => c.positional().next().map(|v| (c.name.name.as_str(), v)),
            _ => None,
        })
        .collect()
}

/// Entries of a map literal as (key, expr).
fn map_entries(e: &Expr) -> Option<Vec<(&str, &Expr)>> {
    match &e.kind {
        ExprKind::Map { entries } => Some(
            entries
                .iter()
                .filter_map(|en| match &en.key {
                    MapKey::Name { name, .. } => Some((name.as_str(), &en.value)),
                    MapKey::Expr { .. } => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

impl PodBuilder<'_> {
    fn value(&self, e: &Expr) -> Value {
        eval(e, self.consts, self.src)
    }

    fn string(&self, e: &Expr) -> Option<String> {
        match self.value(e) {
            Value::Str(s) => Some(s),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// Builds the template of a `podTemplate(...)` call (not yet merged with outer ones).
    pub(crate) fn template(&mut self, call: &Call) -> Template {
        let mut t = Template {
            name: None,
            label: None,
            inherit_from: Vec::new(),
            pod: PodSpec::default(),
        };
        for (name, e) in call_args(call, "label") {
            match name {
                "label" => t.label = Some(self.value(e)),
                "name" => t.name = self.string(e),
                "containers" => {
                    if let ExprKind::List { items } = &e.kind {
                        for item in items {
                            if let Some(c) = self.container(item) {
                                upsert(&mut t.pod.containers, c);
                            }
                        }
                    }
                }
                "yaml" => match self.value(e) {
                    Value::Str(y) => {
                        self.merge_yaml(&mut t.pod, &y, e.span);
                        t.pod.yaml.push(y);
                    }
                    _ => {
                        t.pod.open = true;
                        self.notes.push((e.span, "the pod YAML is built when the pipeline runs; its containers are not known before".into()));
                        t.pod
                            .yaml
                            .push(crate::values::summary(self.src, e.span, 200));
                    }
                },
                "inheritFrom" => {
                    if let Some(s) = self.string(e) {
                        t.inherit_from = s.split_whitespace().map(str::to_string).collect();
                    }
                }
                "volumes" => {
                    if let ExprKind::List { items } = &e.kind {
                        t.pod
                            .volumes
                            .extend(items.iter().filter_map(|i| self.volume(i)));
                    }
                }
                "envVars" => t.pod.env.extend(self.env_vars(e)),
                "runAsUser" => t.pod.run_as_user = id_value(&self.value(e)),
                "runAsGroup" => t.pod.run_as_group = id_value(&self.value(e)),
                "namespace" => t.pod.namespace = self.string(e),
                "serviceAccount" | "serviceAccountName" => t.pod.service_account = self.string(e),
                "nodeSelector" => {
                    if let Some(s) = self.string(e) {
                        for pair in s.split(',') {
                            if let Some((k, v)) = pair.split_once('=') {
                                t.pod.node_selector.insert(k.trim().into(), v.trim().into());
                            }
                        }
                    }
                }
                "activeDeadlineSeconds" => {
                    if let Value::Int(i) = self.value(e) {
                        t.pod.active_deadline_seconds = Some(i);
                    }
                }
                "annotations" => {
                    if let ExprKind::List { items } = &e.kind {
                        for i in items {
                            if let ExprKind::Call(c) = &i.kind {
                                let args = call_args(c, "key");
                                let get = |n: &str| {
                                    args.iter()
                                        .find(|(k, _)| *k == n)
                                        .and_then(|(_, v)| self.string(v))
                                };
                                if let (Some(k), Some(v)) = (get("key"), get("value")) {
                                    t.pod.annotations.insert(k, v);
                                }
                            }
                        }
                    }
                }
                other => {
                    t.pod.extra.insert(other.to_string(), self.value(e));
                }
            }
        }
        let label = t
            .label
            .as_ref()
            .and_then(|l| l.as_str().map(str::to_string));
        t.pod.name = t.name.clone().or(label).unwrap_or_else(|| "pod".into());
        t
    }

    /// One container from `containerTemplate(...)` or a map literal.
    pub(crate) fn container(&mut self, e: &Expr) -> Option<ContainerSpec> {
        let args: Vec<(&str, &Expr)> = match &e.kind {
            // The declarative block form: `containerTemplate { name 'maven'; image '…' }`.
            ExprKind::Call(c)
                if c.target.is_none()
                    && c.name.name == "containerTemplate"
                    && c.closure.is_some() =>
            {
                block_settings(c.closure.as_ref().map_or(&[][..], |b| &b.body))
            }
            ExprKind::Call(c) if c.target.is_none() && c.name.name == "containerTemplate" => {
                call_args(c, "name")
            }
            ExprKind::Map { .. } => map_entries(e)?,
            _ => {
                self.notes.push((
                    e.span,
                    "this container is built when the pipeline runs".into(),
                ));
                return None;
            }
        };
        let mut c = ContainerSpec::default();
        for (name, v) in args {
            match name {
                "name" => c.name = self.string(v).unwrap_or_default(),
                "image" => {
                    c.image = self
                        .string(v)
                        .or_else(|| Some(crate::values::summary(self.src, v.span, 80)))
                }
                "command" => c.command = Some(self.value(v)),
                "args" => c.args = Some(self.value(v)),
                "ttyEnabled" => c.tty = self.value(v) == Value::Bool(true),
                "workingDir" => c.working_dir = self.string(v),
                "alwaysPullImage" => c.always_pull = self.value(v) == Value::Bool(true),
                "privileged" => c.privileged = self.value(v) == Value::Bool(true),
                "runAsUser" => c.run_as_user = id_value(&self.value(v)),
                "runAsGroup" => c.run_as_group = id_value(&self.value(v)),
                "shell" => c.shell = self.string(v),
                "envVars" => c.env.extend(self.env_vars(v)),
                "ports" => {
                    if let ExprKind::List { items } = &v.kind {
                        for p in items {
                            if let ExprKind::Call(pc) = &p.kind {
                                let pargs = call_args(pc, "name");
                                let get = |n: &str| {
                                    pargs
                                        .iter()
                                        .find(|(k, _)| *k == n)
                                        .map(|(_, x)| self.value(x))
                                };
                                c.ports.push(Port {
                                    name: get("name").and_then(|v| v.as_str().map(str::to_string)),
                                    container_port: get("containerPort")
                                        .as_ref()
                                        .and_then(id_value)
                                        .unwrap_or(0),
                                    host_port: get("hostPort").as_ref().and_then(id_value),
                                });
                            }
                        }
                    }
                }
                "resourceRequestCpu" => {
                    c.resources.request_cpu_millis = self.quantity(v, cpu_millis, "CPU")
                }
                "resourceLimitCpu" => {
                    c.resources.limit_cpu_millis = self.quantity(v, cpu_millis, "CPU")
                }
                "resourceRequestMemory" => {
                    c.resources.request_memory_bytes = self.quantity(v, memory_bytes, "memory")
                }
                "resourceLimitMemory" => {
                    c.resources.limit_memory_bytes = self.quantity(v, memory_bytes, "memory")
                }
                _ => {}
            }
        }
        if c.name.is_empty() {
            self.diags.push(
                Diagnostic::error("container", e.span, "a container needs a `name`")
                    .with_help("add `name: 'build'`"),
            );
            return None;
        }
        if c.name == AGENT_CONTAINER {
            c.jnlp = true;
            self.notes.push((
                e.span,
                "container `jnlp` is Jenkins' agent; valet does not need it and runs its own image in its place".into(),
            ));
        } else if c.image.is_none() {
            self.diags.push(
                Diagnostic::error(
                    "container",
                    e.span,
                    format!("container `{}` has no `image`", c.name),
                )
                .with_help("add `image: 'maven:3-jdk-8'`"),
            );
        }
        Some(c)
    }

    fn quantity(
        &mut self,
        v: &Expr,
        parse: fn(&str) -> Result<u64, String>,
        what: &str,
    ) -> Option<u64> {
        match self.value(v) {
            Value::Str(s) => match parse(&s) {
                Ok(n) => Some(n),
                Err(msg) => {
                    let help = if what == "CPU" {
                        "write CPU as cores (`2`, `0.5`) or millicores (`500m`)"
                    } else {
                        "write memory as bytes with a unit: `512Mi`, `2Gi`, `1G`, `128974848`"
                    };
                    self.diags.push(
                        Diagnostic::error("quantity", v.span, msg)
                            .with_label(format!("not a {what} quantity"))
                            .with_help(help),
                    );
                    None
                }
            },
            Value::Int(i) if i >= 0 => Some(if what == "CPU" {
                i as u64 * 1000
            } else {
                i as u64
            }),
            _ => None,
        }
    }

    fn env_vars(&self, e: &Expr) -> IndexMap<String, Value> {
        let mut env = IndexMap::new();
        if let ExprKind::List { items } = &e.kind {
            for i in items {
                if let ExprKind::Call(c) = &i.kind {
                    let args = call_args(c, "key");
                    let get = |n: &str| {
                        args.iter()
                            .find(|(k, _)| *k == n)
                            .map(|(_, v)| self.value(v))
                    };
                    let Some(Value::Str(key)) = get("key") else {
                        continue;
                    };
                    let value = match c.name.name.as_str() {
                        "secretEnvVar" => {
                            let name = get("secretName")
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default();
                            let k = get("secretKey")
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default();
                            dynamic(format!("secret {name}/{k}"))
                        }
                        _ => get("value").unwrap_or(Value::Null),
                    };
                    env.insert(key, value);
                }
            }
        }
        env
    }

    fn volume(&self, e: &Expr) -> Option<Volume> {
        let ExprKind::Call(c) = &e.kind else {
            return None;
        };
        let args = call_args(c, "mountPath");
        let get = |n: &str| {
            args.iter()
                .find(|(k, _)| *k == n)
                .and_then(|(_, v)| self.string(v))
        };
        let source = match c.name.name.as_str() {
            "hostPathVolume" => get("hostPath"),
            "persistentVolumeClaim" => get("claimName"),
            "secretVolume" => get("secretName"),
            "configMapVolume" => get("configMapName"),
            "nfsVolume" => get("serverAddress")
                .map(|a| format!("{a}:{}", get("serverPath").unwrap_or_default())),
            "dynamicPVC" => get("requestsSize"),
            _ => None,
        };
        let kind = c.name.name.trim_end_matches("Volume").to_string();
        Some(Volume {
            kind: if kind.is_empty() {
                c.name.name.clone()
            } else {
                kind
            },
            mount_path: get("mountPath").unwrap_or_default(),
            source,
            read_only: args
                .iter()
                .any(|(k, v)| *k == "readOnly" && matches!(v.kind, ExprKind::Bool { value: true })),
        })
    }

    /// Adds the containers, volumes and security settings of a raw pod YAML.
    pub(crate) fn merge_yaml(&mut self, pod: &mut PodSpec, yaml: &str, span: Span) {
        let doc: serde_json::Value = match serde_saphyr::from_str(yaml) {
            Ok(v) => v,
            Err(e) => {
                let first = e
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid YAML")
                    .to_string();
                self.diags.push(Diagnostic::error(
                    "yaml",
                    span,
                    format!("the pod YAML is not valid: {first}"),
                ));
                return;
            }
        };
        let spec = &doc["spec"];
        if let Some(u) = spec["securityContext"]["runAsUser"].as_i64() {
            pod.run_as_user = Some(u);
        }
        if let Some(g) = spec["securityContext"]["runAsGroup"].as_i64() {
            pod.run_as_group = Some(g);
        }
        if let Some(sa) = spec["serviceAccountName"].as_str() {
            pod.service_account = Some(sa.to_string());
        }
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            pod.namespace = Some(ns.to_string());
        }
        if let Some(sel) = spec["nodeSelector"].as_object() {
            for (k, v) in sel {
                pod.node_selector.insert(
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                );
            }
        }
        for c in spec["containers"].as_array().into_iter().flatten() {
            let Some(name) = c["name"].as_str() else {
                continue;
            };
            let mut spec = ContainerSpec {
                name: name.to_string(),
                jnlp: name == AGENT_CONTAINER,
                ..Default::default()
            };
            spec.image = c["image"].as_str().map(str::to_string);
            spec.command = c.get("command").map(json_value);
            spec.args = c.get("args").map(json_value);
            spec.tty = c["tty"].as_bool().unwrap_or(false);
            spec.working_dir = c["workingDir"].as_str().map(str::to_string);
            spec.privileged = c["securityContext"]["privileged"]
                .as_bool()
                .unwrap_or(false);
            spec.run_as_user = c["securityContext"]["runAsUser"].as_i64();
            spec.run_as_group = c["securityContext"]["runAsGroup"].as_i64();
            for env in c["env"].as_array().into_iter().flatten() {
                if let Some(n) = env["name"].as_str() {
                    let v = match env.get("value") {
                        Some(v) => json_value(v),
                        None => dynamic("from valueFrom"),
                    };
                    spec.env.insert(n.to_string(), v);
                }
            }
            let res = &c["resources"];
            let mut q =
                |path: &serde_json::Value, parse: fn(&str) -> Result<u64, String>| -> Option<u64> {
                    let s = match path {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Number(n) => n.to_string(),
                        _ => return None,
                    };
                    match parse(&s) {
                        Ok(v) => Some(v),
                        Err(msg) => {
                            self.diags.push(Diagnostic::error(
                                "quantity",
                                span,
                                format!("in the pod YAML, container `{name}`: {msg}"),
                            ));
                            None
                        }
                    }
                };
            spec.resources = Resources {
                request_cpu_millis: q(&res["requests"]["cpu"], cpu_millis),
                limit_cpu_millis: q(&res["limits"]["cpu"], cpu_millis),
                request_memory_bytes: q(&res["requests"]["memory"], memory_bytes),
                limit_memory_bytes: q(&res["limits"]["memory"], memory_bytes),
            };
            for p in c["ports"].as_array().into_iter().flatten() {
                spec.ports.push(Port {
                    name: p["name"].as_str().map(str::to_string),
                    container_port: p["containerPort"].as_i64().unwrap_or(0),
                    host_port: p["hostPort"].as_i64(),
                });
            }
            upsert(&mut pod.containers, spec);
        }
        for v in spec["volumes"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or("");
            let kind = v
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                .unwrap_or_default();
            // Mount paths live on the containers; report the first one that mounts this volume.
            let mount_path = spec["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["volumeMounts"].as_array().into_iter().flatten())
                .find(|m| m["name"].as_str() == Some(name))
                .and_then(|m| m["mountPath"].as_str())
                .unwrap_or("")
                .to_string();
            pod.volumes.push(Volume {
                kind,
                mount_path,
                source: Some(name.to_string()),
                read_only: false,
            });
        }
    }
}

fn json_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(a) => Value::List(a.iter().map(json_value).collect()),
        serde_json::Value::Object(o) => {
            Value::Map(o.iter().map(|(k, v)| (k.clone(), json_value(v))).collect())
        }
    }
}

/// Adds `c`, or merges it into the container of the same name (the later one wins field by field).
pub(crate) fn upsert(containers: &mut Vec<ContainerSpec>, c: ContainerSpec) {
    match containers.iter_mut().find(|x| x.name == c.name) {
        Some(existing) => {
            let old = std::mem::take(existing);
            *existing = merge_container(old, c);
        }
        None => containers.push(c),
    }
}

fn merge_container(base: ContainerSpec, over: ContainerSpec) -> ContainerSpec {
    let mut env = base.env;
    env.extend(over.env);
    ContainerSpec {
        name: over.name,
        image: over.image.or(base.image),
        command: over.command.or(base.command),
        args: over.args.or(base.args),
        tty: over.tty || base.tty,
        working_dir: over.working_dir.or(base.working_dir),
        privileged: over.privileged || base.privileged,
        always_pull: over.always_pull || base.always_pull,
        run_as_user: over.run_as_user.or(base.run_as_user),
        run_as_group: over.run_as_group.or(base.run_as_group),
        env,
        resources: Resources {
            request_cpu_millis: over
                .resources
                .request_cpu_millis
                .or(base.resources.request_cpu_millis),
            limit_cpu_millis: over
                .resources
                .limit_cpu_millis
                .or(base.resources.limit_cpu_millis),
            request_memory_bytes: over
                .resources
                .request_memory_bytes
                .or(base.resources.request_memory_bytes),
            limit_memory_bytes: over
                .resources
                .limit_memory_bytes
                .or(base.resources.limit_memory_bytes),
        },
        ports: if over.ports.is_empty() {
            base.ports
        } else {
            over.ports
        },
        shell: over.shell.or(base.shell),
        jnlp: over.jnlp || base.jnlp,
    }
}

/// `child` on top of `parent`: containers merged by name, the child's settings winning.
pub(crate) fn merge_pods(parent: &PodSpec, child: &PodSpec) -> PodSpec {
    let mut out = parent.clone();
    for c in &child.containers {
        upsert(&mut out.containers, c.clone());
    }
    out.name = child.name.clone();
    out.volumes.extend(child.volumes.iter().cloned());
    out.env.extend(child.env.clone());
    out.run_as_user = child.run_as_user.or(parent.run_as_user);
    out.run_as_group = child.run_as_group.or(parent.run_as_group);
    out.node_selector.extend(child.node_selector.clone());
    out.service_account = child.service_account.clone().or(out.service_account);
    out.namespace = child.namespace.clone().or(out.namespace);
    out.annotations.extend(child.annotations.clone());
    out.yaml.extend(child.yaml.iter().cloned());
    out.active_deadline_seconds = child
        .active_deadline_seconds
        .or(parent.active_deadline_seconds);
    out.extra.extend(child.extra.clone());
    out.open = parent.open || child.open;
    out.inherits.push(parent.name.clone());
    out.inherits.extend(child.inherits.iter().cloned());
    out.inherits.dedup();
    out
}

/// Makes the pod ready to run: an agent container to hold the steps written outside
/// `container()`, placed first.
pub(crate) fn finish_k8s_pod(mut pod: PodSpec, default_container: Option<&str>) -> PodSpec {
    if !pod.containers.iter().any(|c| c.name == AGENT_CONTAINER) {
        pod.containers.insert(
            0,
            ContainerSpec {
                name: AGENT_CONTAINER.into(),
                jnlp: true,
                ..Default::default()
            },
        );
    }
    pod.default_container = default_container.unwrap_or(AGENT_CONTAINER).to_string();
    pod
}
