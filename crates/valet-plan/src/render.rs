//! Renderings of a [`JobGraph`]: a tree for people (`text`) and a Graphviz graph (`dot`).

use crate::model::*;
use std::fmt::Write as _;

/// A tree a person reads at a glance: jobs, their pod (containers, images, limits),
/// stages, and steps with the container they run in.
pub fn text(graph: &JobGraph) -> String {
    let mut out = String::new();
    let form = match graph.form {
        Form::Scripted => "scripted",
        Form::Declarative => "declarative",
    };
    let _ = writeln!(
        out,
        "{} ({form} pipeline, {} job{})",
        graph.file,
        graph.jobs.len(),
        if graph.jobs.len() == 1 { "" } else { "s" }
    );
    for p in &graph.parameters {
        let default = p
            .default
            .as_ref()
            .map(|d| format!(" = {}", d.display()))
            .unwrap_or_default();
        let _ = writeln!(out, "  parameter {} ({}){default}", p.name, p.kind);
    }
    for (k, v) in &graph.options {
        let _ = writeln!(out, "  option {k} {}", v.display());
    }
    if !graph.outside.is_empty() {
        let _ = writeln!(out, "outside any pod:");
        steps(&mut out, &graph.outside, 1);
    }
    for job in &graph.jobs {
        let after: Vec<&str> = graph
            .edges
            .iter()
            .filter(|e| e.to == job.id)
            .map(|e| e.from.as_str())
            .collect();
        let mut head = job.id.to_string();
        if let Some(l) = &job.label {
            let _ = write!(head, " on {l}");
        }
        if !job.path.is_empty() {
            let _ = write!(head, " in {}", job.path.join(" › "));
        }
        if !after.is_empty() {
            let _ = write!(head, " after {}", after.join(", "));
        }
        if job.dynamic {
            head.push_str(" (dynamic: runs when the code reaches it)");
        }
        let _ = writeln!(out, "{head}  [line {}]", job.line);
        let pod = &job.pod;
        let mut pod_line = format!("  pod {}", pod.name);
        if let Some(u) = pod.run_as_user {
            let _ = write!(pod_line, " runAsUser={u}");
        }
        if !pod.inherits.is_empty() {
            let _ = write!(pod_line, " inherits {}", pod.inherits.join(", "));
        }
        if !pod.yaml.is_empty() {
            pod_line.push_str(" (+raw yaml)");
        }
        let _ = writeln!(out, "{pod_line}");
        for c in &pod.containers {
            let image = if c.jnlp && c.image.is_none() {
                "(valet agent image)".to_string()
            } else if c.jnlp {
                format!(
                    "{} (replaced by valet's agent image)",
                    c.image.as_deref().unwrap_or("")
                )
            } else {
                c.image
                    .clone()
                    .unwrap_or_else(|| "(no image: host processes)".into())
            };
            let mut line = format!("    container {}: {image}", c.name);
            let r = &c.resources;
            let mut res = Vec::new();
            if let Some(v) = r.request_cpu_millis {
                res.push(format!("cpu request {}", cpu(v)));
            }
            if let Some(v) = r.limit_cpu_millis {
                res.push(format!("cpu limit {}", cpu(v)));
            }
            if let Some(v) = r.request_memory_bytes {
                res.push(format!("memory request {}", bytes(v)));
            }
            if let Some(v) = r.limit_memory_bytes {
                res.push(format!("memory limit {}", bytes(v)));
            }
            if let Some(u) = c.run_as_user {
                res.push(format!("user {u}"));
            }
            if !res.is_empty() {
                let _ = write!(line, " ({})", res.join(", "));
            }
            if c.name == pod.default_container {
                line.push_str(" [default]");
            }
            let _ = writeln!(out, "{line}");
        }
        for v in &pod.volumes {
            let _ = writeln!(
                out,
                "    volume {} at {}{}",
                v.kind,
                v.mount_path,
                v.source
                    .as_ref()
                    .map(|s| format!(" from {s}"))
                    .unwrap_or_default()
            );
        }
        steps(&mut out, &job.steps, 1);
    }
    for n in &graph.notes {
        let _ = writeln!(out, "note (line {}): {}", n.line, n.message);
    }
    out
}

fn cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

fn bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (u, size) in UNITS {
        if b >= size && b.is_multiple_of(size) {
            return format!("{}{u}", b / size);
        }
    }
    format!("{b}B")
}

fn steps(out: &mut String, list: &[Step], depth: usize) {
    for s in list {
        let pad = "  ".repeat(depth);
        let at = s
            .container
            .as_ref()
            .map(|c| format!("  @{c}"))
            .unwrap_or_default();
        match &s.kind {
            StepKind::Stage {
                name,
                when,
                post,
                steps: inner,
            } => {
                let _ = writeln!(out, "{pad}stage {}", name.display());
                for w in when {
                    let _ = writeln!(out, "{pad}  when {w}");
                }
                steps(out, inner, depth + 1);
                for (cond, body) in post {
                    let _ = writeln!(out, "{pad}  post {cond}");
                    steps(out, body, depth + 2);
                }
            }
            StepKind::Sh {
                script,
                return_stdout,
                return_status,
                label,
            } => {
                let mut flags = String::new();
                if *return_stdout {
                    flags.push_str(" (returnStdout)");
                }
                if *return_status {
                    flags.push_str(" (returnStatus)");
                }
                if let Some(l) = label {
                    let _ = write!(flags, " label {l:?}");
                }
                let text = match script {
                    Value::Str(s) => first_line(s),
                    other => other.display(),
                };
                let _ = writeln!(out, "{pad}sh {text}{flags}{at}");
            }
            StepKind::Parallel {
                branches,
                fail_fast,
            } => {
                let _ = writeln!(
                    out,
                    "{pad}parallel{}",
                    if *fail_fast { " (failFast)" } else { "" }
                );
                for b in branches {
                    let _ = writeln!(out, "{pad}  branch {}", b.name.display());
                    steps(out, &b.steps, depth + 2);
                }
            }
            StepKind::Wrapper {
                name,
                args,
                steps: inner,
            } => {
                let _ = writeln!(out, "{pad}{name}{}", args_text(args));
                steps(out, inner, depth + 1);
            }
            StepKind::Call { name, args } if name == "node" => {
                let _ = writeln!(
                    out,
                    "{pad}node → {}",
                    args.get("job").map(display_name_of).unwrap_or_default()
                );
            }
            StepKind::Call { name, args } => {
                let _ = writeln!(out, "{pad}{name}{}{at}", args_text(args));
            }
            StepKind::Dynamic {
                what,
                code,
                steps: inner,
            } => {
                let _ = writeln!(out, "{pad}dynamic {what}: {code}");
                steps(out, inner, depth + 1);
            }
        }
    }
}

fn display_name_of(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        other => other.display(),
    }
}

fn first_line(s: &str) -> String {
    let t = s.trim();
    let mut lines = t.lines();
    let first = lines.next().unwrap_or("");
    let more = lines.count();
    if more > 0 {
        format!("{first:?} (+{more} lines)")
    } else {
        format!("{first:?}")
    }
}

fn args_text(args: &indexmap::IndexMap<String, Value>) -> String {
    if args.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = args
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.display()))
        .collect();
    let s = format!("({})", parts.join(", "));
    if s.chars().count() > 100 {
        s.chars().take(99).collect::<String>() + "…)"
    } else {
        s
    }
}

/// A Graphviz digraph: one cluster per job with its stages in order, edges between jobs.
pub fn dot(graph: &JobGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph pipeline {{");
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box, fontname=\"sans-serif\"];");
    for job in &graph.jobs {
        let id = dot_id(&job.id);
        let _ = writeln!(out, "  subgraph cluster_{id} {{");
        let title = match &job.label {
            Some(l) => format!("{} on {l}", job.id),
            None => job.id.clone(),
        };
        let _ = writeln!(out, "    label={};", quote(&title));
        let _ = writeln!(
            out,
            "    {id} [label={}, shape=component];",
            quote(&format!("pod {}", job.pod.name))
        );
        let mut prev = id.clone();
        let mut n = 0;
        stage_nodes(&mut out, &job.steps, &id, &mut prev, &mut n);
        let _ = writeln!(out, "  }}");
    }
    for e in &graph.edges {
        let _ = writeln!(
            out,
            "  {} -> {} [style=bold];",
            dot_id(&e.from),
            dot_id(&e.to)
        );
    }
    let _ = writeln!(out, "}}");
    out
}

fn stage_nodes(out: &mut String, steps: &[Step], job: &str, prev: &mut String, n: &mut usize) {
    for s in steps {
        match &s.kind {
            StepKind::Stage {
                name, steps: inner, ..
            } => {
                *n += 1;
                let id = format!("{job}_s{n}");
                let _ = writeln!(
                    out,
                    "    {id} [label={}];",
                    quote(name.display().trim_matches('"'))
                );
                let _ = writeln!(out, "    {prev} -> {id};");
                *prev = id;
                stage_nodes(out, inner, job, prev, n);
            }
            StepKind::Parallel { branches, .. } => {
                let fork = prev.clone();
                let mut ends = Vec::new();
                for b in branches {
                    let mut p = fork.clone();
                    *n += 1;
                    let id = format!("{job}_s{n}");
                    let _ = writeln!(
                        out,
                        "    {id} [label={}, shape=ellipse];",
                        quote(b.name.display().trim_matches('"'))
                    );
                    let _ = writeln!(out, "    {p} -> {id};");
                    p = id;
                    stage_nodes(out, &b.steps, job, &mut p, n);
                    ends.push(p);
                }
                *n += 1;
                let join = format!("{job}_s{n}");
                let _ = writeln!(out, "    {join} [label=\"\", shape=point];");
                for e in ends {
                    let _ = writeln!(out, "    {e} -> {join};");
                }
                *prev = join;
            }
            StepKind::Wrapper { steps: inner, .. } | StepKind::Dynamic { steps: inner, .. } => {
                stage_nodes(out, inner, job, prev, n)
            }
            _ => {}
        }
    }
}

fn dot_id(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
