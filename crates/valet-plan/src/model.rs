//! The job graph: what a pipeline will do, resolved as far as it can be before running.
//!
//! It is serialised as the pipeline's bill of materials (`valet plan --format json`,
//! documented in `docs/plan-json.md`); the field names are a public format, so change
//! them only with [`PLAN_FORMAT_VERSION`].

use indexmap::IndexMap;
use serde::Serialize;
use valet_dsl::Span;

/// Bumped whenever the JSON shape of [`JobGraph`] changes incompatibly.
pub const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobGraph {
    pub version: u32,
    /// The file the plan was made from, as given.
    pub file: String,
    pub form: Form,
    /// Build parameters the pipeline declares (`parameters { … }` or `properties([parameters([…])])`).
    pub parameters: Vec<Parameter>,
    /// Settings the controller honours: `disableConcurrentBuilds`, `buildDiscarder`, triggers.
    pub options: IndexMap<String, Value>,
    /// One job per `node { … }` (or declarative agent): a pod for the job's lifetime.
    pub jobs: Vec<Job>,
    /// `from` must finish before `to` starts. Jobs in parallel branches have no edge between them.
    pub edges: Vec<Edge>,
    /// Steps that run outside any pod (on the controller, as Jenkins' flyweight executor does).
    pub outside: Vec<Step>,
    /// Whether some part of the pipeline can only be known when it runs.
    pub dynamic: bool,
    /// Remarks for the reader that are not errors (e.g. a `jnlp` container that valet does not need).
    pub notes: Vec<Note>,
}

impl JobGraph {
    /// The job whose pod the `node` call, declarative `pipeline` or `stage` at `at` allocates:
    /// the runtime interprets the AST and looks its jobs up here.
    pub fn job_at(&self, at: Span) -> Option<&Job> {
        self.jobs.iter().find(|j| j.anchor.start == at.start)
    }

    /// The job of a declarative `pipeline`'s own agent: anchored at `at`, or the top-level job
    /// (no enclosing stage) whose anchor encloses it.
    pub fn pipeline_job(&self, at: Span) -> Option<&Job> {
        self.job_at(at).or_else(|| {
            self.jobs.iter().find(|j| {
                j.path.is_empty() && j.anchor.start <= at.start && at.start < j.anchor.end
            })
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    Scripted,
    Declarative,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameter {
    pub name: String,
    /// `string`, `booleanParam`, `choice`, `text`, `password`.
    pub kind: String,
    pub default: Option<Value>,
    pub choices: Vec<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Stable within one plan: `job-1`, `job-2`, … in source order.
    pub id: String,
    /// The enclosing stages and parallel branches outside the node, e.g. `["Build", "linux"]`.
    pub path: Vec<String>,
    /// The label expression given to `node` (`'linux && docker'`), after `POD_LABEL` is resolved.
    pub label: Option<String>,
    pub pod: PodSpec,
    pub steps: Vec<Step>,
    /// Where the pod is allocated: the `node(…)` call, the declarative `pipeline`, or the
    /// `stage` with its own agent. The runtime finds the job of a `node` call by this span.
    #[serde(skip)]
    pub anchor: Span,
    pub line: u32,
    /// Inside a loop or a condition: the job may run several times, or not at all.
    pub dynamic: bool,
}

/// A pod: containers sharing a workspace and a network namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct PodSpec {
    /// The template's name or label (`mypod`), or a generated one.
    pub name: String,
    pub containers: Vec<ContainerSpec>,
    /// Where steps run outside any `container('…')` block.
    pub default_container: String,
    pub volumes: Vec<Volume>,
    pub env: IndexMap<String, Value>,
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
    /// Extra settings the plan keeps but does not interpret (`idleMinutes`, `podRetention`, …).
    pub extra: IndexMap<String, Value>,
    /// Its containers are not all known here: the template lives outside this file (a
    /// label configured on the controller) or its YAML is built at run time.
    pub open: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ContainerSpec {
    pub name: String,
    /// `None` on the local backend's default container, which has no image.
    pub image: Option<String>,
    pub command: Option<Value>,
    pub args: Option<Value>,
    pub tty: bool,
    pub working_dir: Option<String>,
    pub privileged: bool,
    pub always_pull: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub env: IndexMap<String, Value>,
    pub resources: Resources,
    pub ports: Vec<Port>,
    pub shell: Option<String>,
    /// Jenkins' agent container (`jnlp`): valet does not need it and does not start it.
    pub jnlp: bool,
}

/// Requests and limits, parsed from Kubernetes quantities (`500m`, `512Mi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Resources {
    pub request_cpu_millis: Option<u64>,
    pub limit_cpu_millis: Option<u64>,
    pub request_memory_bytes: Option<u64>,
    pub limit_memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Port {
    pub name: Option<String>,
    pub container_port: i64,
    pub host_port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Volume {
    /// `emptyDir`, `hostPath`, `persistentVolumeClaim`, `secret`, `configMap`, `nfs`, `dynamicPVC`.
    pub kind: String,
    pub mount_path: String,
    pub source: Option<String>,
    pub read_only: bool,
}

/// A node in a job's step tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub kind: StepKind,
    /// The container the step runs in (for steps that run commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub line: u32,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum StepKind {
    Stage {
        name: Value,
        /// Declarative `when` conditions, as written.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        when: Vec<String>,
        /// Declarative `post` blocks by condition (`always`, `failure`, …).
        #[serde(skip_serializing_if = "IndexMap::is_empty")]
        post: IndexMap<String, Vec<Step>>,
        steps: Vec<Step>,
    },
    /// `sh`: the script is literal or a template with `${…}` parts filled in when it runs.
    Sh {
        script: Value,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        return_stdout: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        return_status: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    Parallel {
        branches: Vec<Branch>,
        fail_fast: bool,
    },
    /// A step that wraps a body: `dir`, `withEnv`, `timeout`, `retry`, `catchError`, `container`, …
    Wrapper {
        name: String,
        args: IndexMap<String, Value>,
        steps: Vec<Step>,
    },
    /// Any other known step with its arguments.
    Call {
        name: String,
        args: IndexMap<String, Value>,
    },
    /// Code whose effect depends on values known only when it runs: kept for the runtime.
    Dynamic {
        /// What kind of code: `if`, `for`, `while`, `switch`, `try`, `assignment`, `call`, …
        what: String,
        /// A one-line summary of the source, e.g. `if (params.DEPLOY) …`.
        code: String,
        /// The steps the code may run, as far as they are known.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        steps: Vec<Step>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Branch {
    pub name: Value,
    pub steps: Vec<Step>,
}

/// A value as far as the planner knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(IndexMap<String, Value>),
    /// Known only at run time; holds the source text, e.g. `"${env.BRANCH_NAME}"`.
    Dynamic(DynamicValue),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynamicValue {
    pub dynamic: String,
    /// The expression to evaluate when the pipeline runs; `None` for values that only a
    /// cluster knows (a secret's key, `valueFrom`).
    #[serde(skip)]
    pub expr: Option<std::sync::Arc<valet_dsl::ast::Expr>>,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_dynamic(&self) -> bool {
        match self {
            Value::Dynamic(_) => true,
            Value::List(items) => items.iter().any(Value::is_dynamic),
            Value::Map(m) => m.values().any(Value::is_dynamic),
            _ => false,
        }
    }

    /// How the value reads in the text plan: strings quoted, dynamic parts as written.
    pub fn display(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(Value::display)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Map(m) => {
                if m.is_empty() {
                    return "[:]".into();
                }
                format!(
                    "[{}]",
                    m.iter()
                        .map(|(k, v)| format!("{k}: {}", v.display()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Value::Dynamic(d) => d.dynamic.clone(),
        }
    }
}
