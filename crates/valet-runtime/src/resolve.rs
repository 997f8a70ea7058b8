//! The planner's pod made concrete: every value the plan could only keep as an expression
//! (`envVar(key: 'VER', value: "v${params.V}")`) is evaluated when the `node` is reached, in
//! its scope, so a backend receives a [`valet_backend::PodSpec`] of plain text and never
//! sees an expression. [`planned_pod`] makes the same pod without running anything, each
//! such value shown as its source text (`valet plan --format k8s`).

use std::task::{Context, Poll, Waker};

use indexmap::IndexMap;
use valet_backend as be;
use valet_plan::model as plan;

use crate::interp::{Ctx, Interp, R, fail};
use crate::value::{Value, lock};

impl Interp<'_> {
    pub(crate) async fn resolve_pod(&self, ctx: &Ctx, spec: &plan::PodSpec) -> R<be::PodSpec> {
        resolve(spec, &Evaluate::Run { interp: self, ctx }).await
    }

    async fn evaluate(&self, ctx: &Ctx, what: &str, d: &plan::DynamicValue) -> R<Value> {
        let Some(e) = &d.expr else {
            return Err(fail(format!(
                "the pod's `{what}` ({}) can only be given by a Kubernetes cluster",
                d.dynamic
            )));
        };
        self.eval(ctx, e).await
    }
}

/// The pod as planned, before the pipeline runs: each value known only when it runs is its
/// source text (`${params.V}`).
pub fn planned_pod(spec: &plan::PodSpec) -> be::PodSpec {
    let fut = resolve(spec, &Evaluate::AsWritten);
    let mut fut = std::pin::pin!(fut);
    // Nothing here waits: the evaluation is the text itself, so one poll finishes it.
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(pod)) => pod,
        Poll::Ready(Err(_)) | Poll::Pending => unreachable!("a planned pod needs no evaluation"),
    }
}

/// How a value known only when the pipeline runs becomes one.
enum Evaluate<'a, 'i> {
    /// Evaluated in the scope of the `node` being reached.
    Run {
        interp: &'a Interp<'i>,
        ctx: &'a Ctx,
    },
    /// Its source text.
    AsWritten,
}

impl Evaluate<'_, '_> {
    async fn value(&self, what: &str, d: &plan::DynamicValue) -> R<Value> {
        match self {
            Evaluate::Run { interp, ctx } => interp.evaluate(ctx, what, d).await,
            Evaluate::AsWritten => Ok(Value::Str(d.dynamic.clone())),
        }
    }
}

async fn resolve(spec: &plan::PodSpec, ev: &Evaluate<'_, '_>) -> R<be::PodSpec> {
    {
        let mut containers = Vec::with_capacity(spec.containers.len());
        for c in &spec.containers {
            containers.push(resolve_container(c, ev).await?);
        }
        Ok(be::PodSpec {
            name: spec.name.clone(),
            containers,
            default_container: spec.default_container.clone(),
            volumes: spec
                .volumes
                .iter()
                .map(|v| be::Volume {
                    kind: v.kind.clone(),
                    mount_path: v.mount_path.clone(),
                    source: v.source.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            env: resolve_env(&spec.env, ev).await?.0,
            run_as_user: spec.run_as_user,
            run_as_group: spec.run_as_group,
            node_selector: spec.node_selector.clone(),
            service_account: spec.service_account.clone(),
            namespace: spec.namespace.clone(),
            annotations: spec.annotations.clone(),
            inherits: spec.inherits.clone(),
            yaml: spec.yaml.clone(),
            active_deadline_seconds: spec.active_deadline_seconds,
            extra: {
                let mut m = IndexMap::new();
                for (k, v) in &spec.extra {
                    if let Some(t) = text(k, v, ev).await? {
                        m.insert(k.clone(), t);
                    }
                }
                m
            },
            open: spec.open,
        })
    }
}

async fn resolve_container(c: &plan::ContainerSpec, ev: &Evaluate<'_, '_>) -> R<be::ContainerSpec> {
    {
        let (env, env_refs) = resolve_env(&c.env, ev).await?;
        let words = async |what: &str, v: &Option<plan::Value>| match v {
            Some(v) => words(what, v, ev).await.map(Some),
            None => Ok(None),
        };
        let r = c.resources;
        Ok(be::ContainerSpec {
            name: c.name.clone(),
            image: c.image.clone(),
            command: words("command", &c.command).await?,
            args: words("args", &c.args).await?,
            tty: c.tty,
            working_dir: c.working_dir.clone(),
            privileged: c.privileged,
            always_pull: c.always_pull,
            run_as_user: c.run_as_user,
            run_as_group: c.run_as_group,
            env,
            env_refs,
            resources: be::Resources {
                request_cpu_millis: r.request_cpu_millis,
                limit_cpu_millis: r.limit_cpu_millis,
                request_memory_bytes: r.request_memory_bytes,
                limit_memory_bytes: r.limit_memory_bytes,
                // Filled in by the operator's container policy.
                limit_pids: None,
            },
            ports: c
                .ports
                .iter()
                .map(|p| be::Port {
                    name: p.name.clone(),
                    container_port: p.container_port,
                    host_port: p.host_port,
                })
                .collect(),
            shell: c.shell.clone(),
            jnlp: c.jnlp,
        })
    }
}

/// Plain variables, and those only a cluster can fill in.
async fn resolve_env(
    env: &IndexMap<String, plan::Value>,
    ev: &Evaluate<'_, '_>,
) -> R<(IndexMap<String, String>, IndexMap<String, be::EnvRef>)> {
    {
        let mut plain = IndexMap::new();
        let mut refs = IndexMap::new();
        for (k, v) in env {
            if let plan::Value::Dynamic(d) = v
                && d.expr.is_none()
            {
                refs.insert(k.clone(), cluster_ref(&d.dynamic));
                continue;
            }
            plain.insert(k.clone(), text(k, v, ev).await?.unwrap_or_default());
        }
        Ok((plain, refs))
    }
}

/// A value as text; `None` for null.
async fn text(what: &str, v: &plan::Value, ev: &Evaluate<'_, '_>) -> R<Option<String>> {
    {
        Ok(match v {
            plan::Value::Null => None,
            plan::Value::Str(s) => Some(s.clone()),
            plan::Value::Dynamic(d) => match ev.value(what, d).await? {
                Value::Null => None,
                v => Some(v.display()),
            },
            other => Some(other.display()),
        })
    }
}

/// A command or its arguments: a list's items, or a string's words.
async fn words(what: &str, v: &plan::Value, ev: &Evaluate<'_, '_>) -> R<Vec<String>> {
    {
        match v {
            plan::Value::Null => Ok(Vec::new()),
            plan::Value::Str(s) => Ok(s.split_whitespace().map(str::to_string).collect()),
            plan::Value::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.extend(text(what, i, ev).await?);
                }
                Ok(out)
            }
            plan::Value::Dynamic(d) => Ok(match ev.value(what, d).await? {
                Value::Null => Vec::new(),
                Value::List(items) => lock(&items).iter().map(Value::display).collect(),
                v => v.display().split_whitespace().map(str::to_string).collect(),
            }),
            other => Ok(vec![other.display()]),
        }
    }
}

/// The plan's text for a value only a cluster knows: `secret NAME/KEY` or `from valueFrom`.
fn cluster_ref(text: &str) -> be::EnvRef {
    match text.strip_prefix("secret ").and_then(|s| s.split_once('/')) {
        Some((name, key)) => be::EnvRef::Secret {
            name: name.to_string(),
            key: key.to_string(),
        },
        None => be::EnvRef::Other(text.to_string()),
    }
}
