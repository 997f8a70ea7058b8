//! What the planner can know of a value before running: literals, lists and maps of
//! literals, and variables bound once to such values. The rest is [`Value::Dynamic`],
//! holding its source text.

use crate::model::{DynamicValue, Value};
use indexmap::IndexMap;
use std::collections::HashMap;
use valet_dsl::ast::{Expr, ExprKind, GStringPart, MapKey};
use valet_dsl::{SourceFile, Span};

/// Variables whose value is known before running (assigned exactly once, to a static value).
#[derive(Default)]
pub(crate) struct Consts {
    pub(crate) values: HashMap<String, Value>,
}

pub(crate) fn dynamic(text: impl Into<String>) -> Value {
    Value::Dynamic(DynamicValue {
        dynamic: text.into(),
        expr: None,
    })
}

/// A value known only at run time: `e`, shown as `text`.
pub(crate) fn dynamic_expr(text: impl Into<String>, e: &Expr) -> Value {
    Value::Dynamic(DynamicValue {
        dynamic: text.into(),
        expr: Some(std::sync::Arc::new(e.clone())),
    })
}

/// One line of source: whitespace runs collapsed, cut at `max` characters.
pub(crate) fn summary(src: &SourceFile, span: Span, max: usize) -> String {
    let text = src.slice(span);
    let mut out = String::with_capacity(text.len().min(max + 8));
    let mut last_space = false;
    // Characters written so far; past `max` the rest cannot show.
    let mut n = 0;
    for c in text.chars() {
        if n > max {
            break;
        }
        if c.is_whitespace() {
            if !last_space && !out.is_empty() {
                out.push(' ');
                n += 1;
            }
            last_space = true;
        } else {
            out.push(c);
            n += 1;
            last_space = false;
        }
    }
    if n > max {
        out = out.chars().take(max.saturating_sub(1)).collect::<String>() + "…";
    }
    out
}

pub(crate) fn eval(e: &Expr, consts: &Consts, src: &SourceFile) -> Value {
    match &e.kind {
        ExprKind::Null => Value::Null,
        ExprKind::Bool { value } => Value::Bool(*value),
        ExprKind::Int { value } => Value::Int(*value),
        ExprKind::Float { value } => Value::Float(*value),
        ExprKind::Str { value } => Value::Str(value.clone()),
        ExprKind::Regex { pattern } => Value::Str(pattern.clone()),
        ExprKind::GString { parts } => {
            let mut s = String::new();
            for p in parts {
                match p {
                    GStringPart::Lit { value } => s.push_str(value),
                    GStringPart::Expr { expr } => match eval(expr, consts, src) {
                        Value::Str(v) => s.push_str(&v),
                        Value::Int(i) => s.push_str(&i.to_string()),
                        Value::Bool(b) => s.push_str(&b.to_string()),
                        _ => return dynamic_expr(summary(src, e.span, 200), e),
                    },
                }
            }
            Value::Str(s)
        }
        ExprKind::List { items } => {
            Value::List(items.iter().map(|i| eval(i, consts, src)).collect())
        }
        ExprKind::Map { entries } => {
            let mut m = IndexMap::new();
            for entry in entries {
                let key = match &entry.key {
                    MapKey::Name { name, .. } => name.clone(),
                    MapKey::Expr { expr } => match eval(expr, consts, src) {
                        Value::Str(s) => s,
                        _ => summary(src, expr.span, 60),
                    },
                };
                m.insert(key, eval(&entry.value, consts, src));
            }
            Value::Map(m)
        }
        ExprKind::Var { name } => consts
            .values
            .get(name)
            .cloned()
            .unwrap_or_else(|| dynamic_expr(name.clone(), e)),
        ExprKind::Binary {
            op: valet_dsl::ast::BinaryOp::Add,
            lhs,
            rhs,
        } => match (eval(lhs, consts, src), eval(rhs, consts, src)) {
            (Value::Str(a), Value::Str(b)) => Value::Str(a + &b),
            (Value::Int(a), Value::Int(b)) => Value::Int(a.wrapping_add(b)),
            _ => dynamic_expr(summary(src, e.span, 200), e),
        },
        _ => dynamic_expr(summary(src, e.span, 200), e),
    }
}

/// A CPU quantity (`500m`, `2`, `0.5`) in millicores.
pub(crate) fn cpu_millis(q: &str) -> Result<u64, String> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m
            .parse::<u64>()
            .map_err(|_| format!("`{q}` is not a CPU quantity"));
    }
    match q.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((v * 1000.0).round() as u64),
        _ => Err(format!("`{q}` is not a CPU quantity")),
    }
}

/// A memory quantity (`512Mi`, `1Gi`, `1G`, `128974848`, `129e6`) in bytes.
pub(crate) fn memory_bytes(q: &str) -> Result<u64, String> {
    let q = q.trim();
    const UNITS: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (num, mult) = UNITS
        .iter()
        .find_map(|(suffix, mult)| q.strip_suffix(suffix).map(|n| (n, *mult)))
        .unwrap_or((q, 1.0));
    let ok = !num.is_empty()
        && num
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    match num.parse::<f64>() {
        Ok(v) if ok && v >= 0.0 && v.is_finite() => Ok((v * mult).round() as u64),
        _ => Err(format!("`{q}` is not a memory quantity")),
    }
}

/// Reads a user or group id given as a number or a string of digits.
pub(crate) fn id_value(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("500m"), Ok(500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("0.25"), Ok(250));
        assert!(cpu_millis("lots").is_err());
        assert_eq!(memory_bytes("512Mi"), Ok(512 * 1024 * 1024));
        assert_eq!(memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(memory_bytes("64"), Ok(64));
        assert_eq!(memory_bytes("1.5Gi"), Ok(1610612736));
        assert!(memory_bytes("512Mo").is_err());
        assert!(memory_bytes("Mi").is_err());
        assert!(memory_bytes("-1Mi").is_err());
    }
}
