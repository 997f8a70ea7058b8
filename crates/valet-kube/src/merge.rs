//! Combining pod objects the way the Jenkins Kubernetes plugin does (`PodTemplateUtils.combine`):
//! the child's values win; maps merge key by key; lists of named things (containers,
//! init containers, volumes, environment variables, mounts, ports, image pull secrets)
//! merge by name, in the parent's order with the child's new entries after; tolerations
//! are added unless already there; any other list is the child's when it has one.

use serde_json::{Map, Value};

/// Lists whose entries are identified by a key, per field name.
fn list_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "ports" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        _ => None,
    }
}

/// `child` combined onto `parent`.
pub fn combine(parent: &Value, child: &Value) -> Value {
    combine_field("", parent, child)
}

fn combine_field(field: &str, parent: &Value, child: &Value) -> Value {
    match (parent, child) {
        (Value::Object(p), Value::Object(c)) => Value::Object(combine_maps(p, c)),
        (Value::Array(p), Value::Array(c)) => match list_key(field) {
            Some(key) => Value::Array(combine_named(key, p, c)),
            None if field == "tolerations" => {
                let mut out = p.clone();
                for t in c {
                    if !out.contains(t) {
                        out.push(t.clone());
                    }
                }
                Value::Array(out)
            }
            None => child.clone(),
        },
        (_, Value::Null) => parent.clone(),
        _ => child.clone(),
    }
}

fn combine_maps(p: &Map<String, Value>, c: &Map<String, Value>) -> Map<String, Value> {
    let mut out = p.clone();
    for (k, v) in c {
        let merged = match p.get(k) {
            Some(pv) => combine_field(k, pv, v),
            None => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    out
}

fn combine_named(key: &str, p: &[Value], c: &[Value]) -> Vec<Value> {
    let name = |v: &Value| v.get(key).and_then(Value::as_str).map(str::to_string);
    let mut out: Vec<Value> = p.to_vec();
    for item in c {
        match name(item).and_then(|n| out.iter().position(|o| name(o).as_deref() == Some(&n))) {
            Some(i) => out[i] = combine_field("", &out[i], item),
            None => out.push(item.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_the_child_wins() {
        let parent = json!({"spec": {"containers": [
            {"name": "maven", "image": "maven:3", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "golang", "image": "golang:1"}
        ], "nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "a"}]}});
        let child = json!({"spec": {"containers": [
            {"name": "maven", "image": "maven:4", "env": [{"name": "B", "value": "3"}]},
            {"name": "node", "image": "node:20"}
        ], "nodeSelector": {"zone": "x"}, "tolerations": [{"key": "a"}, {"key": "b"}]}});
        assert_eq!(
            combine(&parent, &child),
            json!({"spec": {"containers": [
                {"name": "maven", "image": "maven:4", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]},
                {"name": "golang", "image": "golang:1"},
                {"name": "node", "image": "node:20"}
            ], "nodeSelector": {"disk": "ssd", "zone": "x"}, "tolerations": [{"key": "a"}, {"key": "b"}]}})
        );
    }

    #[test]
    fn other_lists_and_scalars_are_the_childs() {
        let parent = json!({"spec": {"containers": [{"name": "c", "command": ["a", "b"]}], "hostNetwork": true}});
        let child =
            json!({"spec": {"containers": [{"name": "c", "command": ["z"]}], "hostNetwork": null}});
        assert_eq!(
            combine(&parent, &child),
            json!({"spec": {"containers": [{"name": "c", "command": ["z"]}], "hostNetwork": true}})
        );
    }
}
