//! Run-time values: Groovy's dynamic values as far as pipelines use them.
//!
//! Lists and maps are shared references (`Arc<Mutex<…>>`), as in Groovy: a map passed to a
//! function and changed there is changed for the caller too.

use indexmap::IndexMap;
use std::sync::{Arc, Mutex};
use valet_dsl::ast;

use crate::scope::Scope;

pub(crate) type ListRef = Arc<Mutex<Vec<Value>>>;
pub(crate) type MapRef = Arc<Mutex<IndexMap<String, Value>>>;

#[derive(Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(ListRef),
    Map(MapRef),
    Closure(Arc<ClosureValue>),
    Exception(Arc<Exception>),
    Matcher(Arc<Matcher>),
    Entry(Arc<(String, Value)>),
    Object(Obj),
}

/// The built-in objects of a pipeline.
#[derive(Clone)]
pub(crate) enum Obj {
    Env,
    Params,
    CurrentBuild,
    Scm,
    Docker,
    DockerImage(String),
    /// A class name used statically: `Integer.parseInt`, `System.currentTimeMillis`.
    Class(String),
    /// `new groovy.json.JsonSlurper()`
    JsonSlurper,
    /// What `load 'file.groovy'` returns: its functions.
    Script(Arc<crate::interp::Loaded>),
}

pub(crate) struct ClosureValue {
    pub(crate) def: Arc<ast::Closure>,
    pub(crate) scope: Scope,
    /// Functions of a loaded script, when the closure was written in one.
    pub(crate) module: Option<Arc<crate::interp::Loaded>>,
}

/// What a failed step or `throw` raises.
#[derive(Debug, Clone)]
pub(crate) struct Exception {
    /// Java class name, e.g. `hudson.AbortException`.
    pub(crate) class: String,
    pub(crate) message: String,
    pub(crate) kind: ExcKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExcKind {
    /// A failure: the build becomes FAILURE.
    Failure,
    /// An interruption (timeout, abort, failFast): the build becomes ABORTED.
    Abort,
    /// The backend failed (not the pipeline).
    Backend,
}

impl Exception {
    pub(crate) fn new(class: &str, message: impl Into<String>) -> Exception {
        Exception {
            class: class.into(),
            message: message.into(),
            kind: ExcKind::Failure,
        }
    }

    pub(crate) fn abort(message: impl Into<String>) -> Exception {
        Exception {
            class: "org.jenkinsci.plugins.workflow.steps.FlowInterruptedException".into(),
            message: message.into(),
            kind: ExcKind::Abort,
        }
    }

    /// Whether `catch (T e)` catches it; `types` as written (possibly qualified).
    pub(crate) fn is_a(&self, ty: &str) -> bool {
        let short = ty.rsplit('.').next().unwrap_or(ty);
        let own = self.class.rsplit('.').next().unwrap_or(&self.class);
        if short == own || matches!(short, "Throwable" | "Object") {
            return true;
        }
        let ancestors: &[&str] = match own {
            "AbortException" => &["IOException", "Exception"],
            "FlowInterruptedException" => &["InterruptedException", "Exception"],
            "InterruptedException" | "IOException" => &["Exception"],
            "Error" | "AssertionError" | "StackOverflowError" => &["Error"],
            _ => &["RuntimeException", "Exception"],
        };
        ancestors.contains(&short)
    }

    pub(crate) fn to_display(&self) -> String {
        if self.message.is_empty() {
            self.class.clone()
        } else {
            format!("{}: {}", self.class, self.message)
        }
    }
}

pub(crate) struct Matcher {
    /// Each match: group 0 (the whole match), then the groups.
    pub(crate) matches: Vec<Vec<Option<String>>>,
    pub(crate) whole: bool,
}

impl Value {
    pub(crate) fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    pub(crate) fn list(items: Vec<Value>) -> Value {
        Value::List(Arc::new(Mutex::new(items)))
    }

    pub(crate) fn map(m: IndexMap<String, Value>) -> Value {
        Value::Map(Arc::new(Mutex::new(m)))
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "java.lang.Boolean",
            Value::Int(_) => "java.lang.Integer",
            Value::Float(_) => "java.math.BigDecimal",
            Value::Str(_) => "java.lang.String",
            Value::List(_) => "java.util.ArrayList",
            Value::Map(_) => "java.util.LinkedHashMap",
            Value::Closure(_) => "groovy.lang.Closure",
            Value::Exception(_) => "java.lang.Exception",
            Value::Matcher(_) => "java.util.regex.Matcher",
            Value::Entry(_) => "java.util.Map$Entry",
            Value::Object(o) => match o {
                Obj::Env => "org.jenkinsci.plugins.workflow.cps.EnvActionImpl",
                Obj::Params => "java.util.Map",
                Obj::CurrentBuild => {
                    "org.jenkinsci.plugins.workflow.support.steps.build.RunWrapper"
                }
                Obj::Scm => "hudson.plugins.git.GitSCM",
                Obj::Docker | Obj::DockerImage(_) => "org.jenkinsci.plugins.docker.workflow.Docker",
                Obj::Class(_) => "java.lang.Class",
                Obj::JsonSlurper => "groovy.json.JsonSlurper",
                Obj::Script(_) => "Script",
            },
        }
    }

    /// Groovy truth.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !lock(l).is_empty(),
            Value::Map(m) => !lock(m).is_empty(),
            Value::Matcher(m) => !m.matches.is_empty(),
            _ => true,
        }
    }

    /// `toString()` as Groovy prints it.
    pub(crate) fn display(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => fmt_float(*f),
            Value::Str(s) => s.clone(),
            Value::List(l) => {
                let items: Vec<String> = lock(l).iter().map(Value::display_nested).collect();
                format!("[{}]", items.join(", "))
            }
            Value::Map(m) => {
                let m = lock(m);
                if m.is_empty() {
                    return "[:]".into();
                }
                let items: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.display_nested()))
                    .collect();
                format!("[{}]", items.join(", "))
            }
            Value::Closure(_) => "groovy.lang.Closure".into(),
            Value::Exception(e) => e.to_display(),
            Value::Matcher(_) => "java.util.regex.Matcher".into(),
            Value::Entry(e) => format!("{}={}", e.0, e.1.display()),
            Value::Object(o) => match o {
                Obj::Env => "env".into(),
                Obj::Params => "params".into(),
                Obj::CurrentBuild => "currentBuild".into(),
                Obj::Scm => "scm".into(),
                Obj::Docker => "docker".into(),
                Obj::DockerImage(i) => i.clone(),
                Obj::Class(c) => format!("class {c}"),
                Obj::JsonSlurper => "groovy.json.JsonSlurper".into(),
                Obj::Script(_) => "Script".into(),
            },
        }
    }

    fn display_nested(&self) -> String {
        self.display()
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub(crate) fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Float(_))
    }

    /// Groovy `==`.
    pub(crate) fn equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Null, _) | (_, Value::Null) => false,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (a, b) if a.is_number() && b.is_number() => match (a, b) {
                (Value::Int(x), Value::Int(y)) => x == y,
                _ => a.as_f64() == b.as_f64(),
            },
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::List(a), Value::List(b)) => {
                if Arc::ptr_eq(a, b) {
                    return true;
                }
                let (a, b) = (lock(a).clone(), lock(b).clone());
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.equals(y))
            }
            (Value::Map(a), Value::Map(b)) => {
                if Arc::ptr_eq(a, b) {
                    return true;
                }
                let (a, b) = (lock(a).clone(), lock(b).clone());
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.equals(w)))
            }
            (Value::Entry(a), Value::Entry(b)) => a.0 == b.0 && a.1.equals(&b.1),
            (Value::Exception(a), Value::Exception(b)) => Arc::ptr_eq(a, b),
            (Value::Closure(a), Value::Closure(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Groovy `<=>`; `None` when the two cannot be compared.
    pub(crate) fn compare(&self, other: &Value) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (a, b) if a.is_number() && b.is_number() => a.as_f64()?.partial_cmp(&b.as_f64()?),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Null, Value::Null) => Some(std::cmp::Ordering::Equal),
            (Value::Null, _) => Some(std::cmp::Ordering::Less),
            (_, Value::Null) => Some(std::cmp::Ordering::Greater),
            _ => None,
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::List(l) => {
                serde_json::Value::Array(lock(l).iter().map(Value::to_json).collect())
            }
            Value::Map(m) => serde_json::Value::Object(
                lock(m)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
            other => serde_json::Value::String(other.display()),
        }
    }

    pub(crate) fn from_json(j: &serde_json::Value) -> Value {
        match j {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::list(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

pub(crate) fn fmt_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Locks a value's mutex; a poisoned lock (a panic elsewhere) still gives the data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl From<&valet_plan::model::Value> for Value {
    fn from(v: &valet_plan::model::Value) -> Value {
        use valet_plan::model::Value as P;
        match v {
            P::Null => Value::Null,
            P::Bool(b) => Value::Bool(*b),
            P::Int(i) => Value::Int(*i),
            P::Float(f) => Value::Float(*f),
            P::Str(s) => Value::Str(s.clone()),
            P::List(items) => Value::list(items.iter().map(Value::from).collect()),
            P::Map(m) => Value::map(m.iter().map(|(k, v)| (k.clone(), Value::from(v))).collect()),
            P::Dynamic(d) => Value::Str(d.dynamic.clone()),
        }
    }
}
