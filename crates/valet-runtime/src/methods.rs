//! Operators, properties and methods of values: the parts of Groovy's and Java's standard
//! library that pipelines use (strings, lists, maps, numbers, regexes, a few static classes).

use std::sync::Arc;

use indexmap::IndexMap;
use valet_dsl::Span;
use valet_dsl::ast::BinaryOp;

use crate::event::BuildResult;
use crate::interp::{Args, BoxFuture, Ctx, Interp, R, err};
use crate::value::{Exception, Matcher, Obj, Value, fmt_float, lock};

fn missing_method(recv: &Value, name: &str) -> crate::interp::Flow {
    if matches!(recv, Value::Null) {
        return err(
            "java.lang.NullPointerException",
            format!("Cannot invoke method {name}() on null object"),
        );
    }
    err(
        "groovy.lang.MissingMethodException",
        format!(
            "No signature of method: {}.{name}() is applicable",
            recv.type_name()
        ),
    )
}

fn int_arg(args: &[Value], i: usize) -> R<i64> {
    match args.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Float(f)) => Ok(*f as i64),
        Some(Value::Str(s)) => s.trim().parse().map_err(|_| number_format(s)),
        other => Err(err(
            "java.lang.IllegalArgumentException",
            format!(
                "expected a number, got {}",
                other
                    .map(Value::display)
                    .unwrap_or_else(|| "nothing".into())
            ),
        )),
    }
}

fn str_arg(args: &[Value], i: usize) -> String {
    args.get(i).map(Value::display).unwrap_or_default()
}

fn number_format(s: &str) -> crate::interp::Flow {
    err(
        "java.lang.NumberFormatException",
        format!("For input string: \"{s}\""),
    )
}

pub(crate) fn parse_int(s: &str) -> R<Value> {
    s.trim()
        .parse::<i64>()
        .map(Value::Int)
        .map_err(|_| number_format(s))
}

pub(crate) fn parse_float(s: &str) -> R<Value> {
    s.trim()
        .parse::<f64>()
        .map(Value::Float)
        .map_err(|_| number_format(s))
}

/// Builds a regex from a Java pattern.
pub(crate) fn regex(p: &str) -> R<regex::Regex> {
    regex::Regex::new(p).map_err(|e| err("java.util.regex.PatternSyntaxException", e.to_string()))
}

pub(crate) fn match_value(groups: &[Option<String>]) -> Value {
    if groups.len() == 1 {
        groups[0].clone().map(Value::Str).unwrap_or(Value::Null)
    } else {
        Value::list(
            groups
                .iter()
                .map(|g| g.clone().map(Value::Str).unwrap_or(Value::Null))
                .collect(),
        )
    }
}

fn find_all(re: &regex::Regex, s: &str) -> Vec<Vec<Option<String>>> {
    re.captures_iter(s)
        .map(|c| {
            (0..c.len())
                .map(|i| c.get(i).map(|m| m.as_str().to_string()))
                .collect()
        })
        .collect()
}

/// Java's `String.split`: a regex; trailing empty strings are dropped.
fn java_split(s: &str, pattern: &str) -> R<Vec<Value>> {
    let mut parts: Vec<String> = if pattern.len() == 1 && !".$|()[{^?*+\\".contains(pattern) {
        s.split(pattern).map(str::to_string).collect()
    } else {
        regex(pattern)?.split(s).map(str::to_string).collect()
    };
    if s.is_empty() {
        return Ok(vec![Value::str("")]);
    }
    while parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    Ok(parts.into_iter().map(Value::Str).collect())
}

/// Java's `replaceAll` replacement: `$1` refers to groups, `\$` is a dollar.
fn java_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if n == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(n);
                    }
                }
            }
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{digits}}}"));
            }
            c => out.push(c),
        }
    }
    out
}

fn norm_index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    if i < 0 || i as usize >= len {
        None
    } else {
        Some(i as usize)
    }
}

/// `a[i]`
pub(crate) fn index(it: &Interp<'_>, ctx: &Ctx, t: &Value, i: &Value) -> R<Value> {
    match (t, i) {
        (Value::List(l), Value::Int(n)) => {
            let l = lock(l);
            Ok(norm_index(*n, l.len())
                .map(|i| l[i].clone())
                .unwrap_or(Value::Null))
        }
        (Value::List(l), Value::List(idx)) => {
            let l = lock(l);
            let idx = lock(idx).clone();
            Ok(Value::list(
                idx.iter()
                    .filter_map(|i| {
                        if let Value::Int(n) = i {
                            norm_index(*n, l.len()).map(|i| l[i].clone())
                        } else {
                            None
                        }
                    })
                    .collect(),
            ))
        }
        (Value::Str(s), Value::Int(n)) => {
            let chars: Vec<char> = s.chars().collect();
            norm_index(*n, chars.len())
                .map(|i| Value::Str(chars[i].to_string()))
                .ok_or_else(|| {
                    err(
                        "java.lang.StringIndexOutOfBoundsException",
                        format!("index {n} out of range"),
                    )
                })
        }
        (Value::Str(s), Value::List(idx)) => {
            let chars: Vec<char> = s.chars().collect();
            let idx = lock(idx).clone();
            let mut out = String::new();
            for i in idx {
                if let Value::Int(n) = i
                    && let Some(i) = norm_index(n, chars.len())
                {
                    out.push(chars[i]);
                }
            }
            Ok(Value::Str(out))
        }
        (Value::Matcher(m), Value::Int(n)) => norm_index(*n, m.matches.len())
            .map(|i| match_value(&m.matches[i]))
            .ok_or_else(|| {
                err(
                    "java.lang.IndexOutOfBoundsException",
                    format!("no match number {n}"),
                )
            }),
        (Value::Null, _) => Err(err(
            "java.lang.NullPointerException",
            format!("Cannot get property '{}' on null object", i.display()),
        )),
        _ => property(it, ctx, t, &i.display()),
    }
}

/// `a.name`
pub(crate) fn property(it: &Interp<'_>, ctx: &Ctx, t: &Value, name: &str) -> R<Value> {
    Ok(match t {
        Value::Map(m) => {
            let m = lock(m);
            match m.get(name) {
                Some(v) => v.clone(),
                None if name == "empty" => Value::Bool(m.is_empty()),
                None => Value::Null,
            }
        }
        Value::Entry(e) => match name {
            "key" => Value::Str(e.0.clone()),
            "value" => e.1.clone(),
            _ => return Err(missing_property(t, name)),
        },
        Value::Exception(e) => match name {
            "message" | "localizedMessage" => Value::Str(e.message.clone()),
            "class" => Value::Object(Obj::Class(e.class.clone())),
            "cause" => Value::Null,
            _ => return Err(missing_property(t, name)),
        },
        Value::List(l) => match name {
            "empty" => Value::Bool(lock(l).is_empty()),
            "size" => Value::Int(lock(l).len() as i64),
            // `list.name` is `list*.name` in Groovy.
            _ => {
                let items = lock(l).clone();
                let mut out = Vec::new();
                for i in items {
                    out.push(property(it, ctx, &i, name)?);
                }
                Value::list(out)
            }
        },
        Value::Str(s) => match name {
            "empty" => Value::Bool(s.is_empty()),
            "length" => Value::Int(s.chars().count() as i64),
            "bytes" => Value::list(s.bytes().map(|b| Value::Int(b as i64)).collect()),
            _ => return Err(missing_property(t, name)),
        },
        Value::Object(o) => match o {
            Obj::Env => it.env_get(ctx, name).map(Value::Str).unwrap_or(Value::Null),
            Obj::Params => lock_map_get(&it.params, name),
            Obj::CurrentBuild => current_build(it, name)?,
            Obj::Scm => match name {
                "branches" => Value::list(vec![Value::map(IndexMap::from([(
                    "name".to_string(),
                    Value::str(it.env_get(ctx, "BRANCH_NAME").unwrap_or_default()),
                )]))]),
                "userRemoteConfigs" => Value::list(vec![]),
                _ => Value::Null,
            },
            Obj::DockerImage(i) => match name {
                "id" | "imageName" => Value::Str(i.clone()),
                _ => return Err(missing_property(t, name)),
            },
            Obj::Class(c) => static_property(c, name)?,
            Obj::Script(m) => m.scope.get(name).unwrap_or(Value::Null),
            _ => return Err(missing_property(t, name)),
        },
        Value::Null => {
            return Err(err(
                "java.lang.NullPointerException",
                format!("Cannot get property '{name}' on null object"),
            ));
        }
        _ => return Err(missing_property(t, name)),
    })
}

fn lock_map_get(m: &Value, name: &str) -> Value {
    match m {
        Value::Map(m) => lock(m).get(name).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn missing_property(t: &Value, name: &str) -> crate::interp::Flow {
    err(
        "groovy.lang.MissingPropertyException",
        format!("No such property: {name} for class: {}", t.type_name()),
    )
}

fn current_build(it: &Interp<'_>, name: &str) -> R<Value> {
    let b = lock(&it.build);
    Ok(match name {
        "result" => {
            if b.result_set {
                Value::str(b.result.as_str())
            } else {
                Value::Null
            }
        }
        "currentResult" => Value::str(b.result.as_str()),
        "number" => Value::Int(it.opts.build_number as i64),
        "id" => Value::Str(it.opts.build_number.to_string()),
        "displayName" => Value::Str(b.display_name.clone()),
        "fullDisplayName" => Value::Str(format!(
            "{} {}",
            it.opts.job_name_or_default(it.source),
            b.display_name
        )),
        "projectName" | "fullProjectName" => Value::Str(it.opts.job_name_or_default(it.source)),
        "description" => b.description.clone().map(Value::Str).unwrap_or(Value::Null),
        "duration" => Value::Int(it.started.elapsed().as_millis() as i64),
        "durationString" => Value::Str(format!(
            "{} sec and counting",
            it.started.elapsed().as_secs()
        )),
        "startTimeInMillis" | "timeInMillis" => Value::Int(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
                - it.started.elapsed().as_millis() as i64,
        ),
        "previousBuild" | "previousSuccessfulBuild" | "previousCompletedBuild" | "rawBuild" => {
            Value::Null
        }
        "changeSets" | "buildCauses" => Value::list(vec![]),
        "absoluteUrl" => Value::Str(String::new()),
        "keepLog" => Value::Bool(false),
        other => {
            return Err(err(
                "groovy.lang.MissingPropertyException",
                format!("No such property: {other} for class: RunWrapper"),
            ));
        }
    })
}

fn static_property(class: &str, name: &str) -> R<Value> {
    Ok(match (class, name) {
        ("Integer", "MAX_VALUE") => Value::Int(i32::MAX as i64),
        ("Integer", "MIN_VALUE") => Value::Int(i32::MIN as i64),
        ("Long", "MAX_VALUE") => Value::Int(i64::MAX),
        ("Result", r) => Value::str(
            BuildResult::parse(r)
                .map(|r| r.as_str())
                .unwrap_or("SUCCESS"),
        ),
        (_, "name" | "simpleName") => Value::Str(class.to_string()),
        _ => {
            return Err(err(
                "groovy.lang.MissingPropertyException",
                format!("No such property: {name} for class: {class}"),
            ));
        }
    })
}

/// Numeric coercion for `as Integer` and friends.
pub(crate) fn cast(v: Value, ty: &str) -> R<Value> {
    let short = ty.trim_end_matches("[]").rsplit('.').next().unwrap_or(ty);
    Ok(match short {
        "Integer" | "int" | "Long" | "long" | "short" | "Short" | "BigInteger" => match v {
            Value::Int(_) => v,
            Value::Float(f) => Value::Int(f as i64),
            Value::Str(s) => parse_int(&s)?,
            Value::Bool(b) => Value::Int(b as i64),
            Value::Null => Value::Null,
            other => return Err(cast_error(&other, ty)),
        },
        "Double" | "double" | "Float" | "float" | "BigDecimal" | "Number" => match v {
            Value::Int(i) => Value::Float(i as f64),
            Value::Float(_) => v,
            Value::Str(s) => parse_float(&s)?,
            Value::Null => Value::Null,
            other => return Err(cast_error(&other, ty)),
        },
        "String" | "GString" | "CharSequence" => match v {
            Value::Null => Value::Null,
            other => Value::Str(other.display()),
        },
        "Boolean" | "boolean" => Value::Bool(v.truthy()),
        "List" | "ArrayList" | "Collection" | "Set" | "HashSet" | "LinkedHashSet" => match v {
            Value::List(_) => v,
            Value::Null => Value::Null,
            Value::Str(s) => Value::list(s.chars().map(|c| Value::Str(c.to_string())).collect()),
            other => Value::list(vec![other]),
        },
        "Map" | "LinkedHashMap" | "HashMap" | "Object" | "def" => v,
        _ => {
            return Err(err(
                "valet.UnsupportedException",
                format!("`as {ty}` is not supported (only `as Integer`, `as String` and the like)"),
            ));
        }
    })
}

fn cast_error(v: &Value, ty: &str) -> crate::interp::Flow {
    err(
        "org.codehaus.groovy.runtime.typehandling.GroovyCastException",
        format!(
            "Cannot cast object '{}' with class '{}' to class '{ty}'",
            v.display(),
            v.type_name()
        ),
    )
}

pub(crate) fn new_object(class: &str, args: Vec<Value>) -> R<Value> {
    let short = class.rsplit('.').next().unwrap_or(class);
    let short = short.split('<').next().unwrap_or(short);
    Ok(match short {
        "ArrayList" | "LinkedList" | "HashSet" | "LinkedHashSet" | "TreeSet" => {
            match args.into_iter().next() {
                Some(Value::List(l)) => Value::list(lock(&l).clone()),
                _ => Value::list(vec![]),
            }
        }
        "HashMap" | "LinkedHashMap" | "TreeMap" | "ConcurrentHashMap" => {
            match args.into_iter().next() {
                Some(Value::Map(m)) => Value::map(lock(&m).clone()),
                _ => Value::map(IndexMap::new()),
            }
        }
        "String" => Value::Str(args.first().map(Value::display).unwrap_or_default()),
        "StringBuilder" | "StringBuffer" => {
            Value::Str(args.first().map(Value::display).unwrap_or_default())
        }
        "JsonSlurper" | "JsonSlurperClassic" => Value::Object(Obj::JsonSlurper),
        "Integer" | "Long" => match args.into_iter().next() {
            Some(Value::Str(s)) => parse_int(&s)?,
            Some(v @ Value::Int(_)) => v,
            _ => Value::Int(0),
        },
        s if s.ends_with("Exception") || s.ends_with("Error") || s == "Throwable" => {
            let message = args.first().map(Value::display).unwrap_or_default();
            let full = if class.contains('.') {
                class.to_string()
            } else {
                match s {
                    "AbortException" => "hudson.AbortException".to_string(),
                    "IOException" => "java.io.IOException".to_string(),
                    _ => format!("java.lang.{s}"),
                }
            };
            Value::Exception(Arc::new(Exception::new(&full, message)))
        }
        _ => {
            return Err(err(
                "valet.UnsupportedException",
                format!("`new {class}(…)` is not supported"),
            ));
        }
    })
}

pub(crate) fn range(f: &Value, t: &Value, inclusive: bool) -> R<Value> {
    match (f, t) {
        (Value::Int(a), Value::Int(b)) => {
            let (a, b) = (*a, *b);
            let items: Vec<Value> = if a <= b {
                let end = if inclusive { b } else { b - 1 };
                if end - a > 10_000_000 {
                    return Err(err(
                        "valet.LimitException",
                        "a range of more than 10 million numbers",
                    ));
                }
                (a..=end).map(Value::Int).collect()
            } else {
                let end = if inclusive { b } else { b + 1 };
                (end..=a).rev().map(Value::Int).collect()
            };
            Ok(Value::list(items))
        }
        (Value::Str(a), Value::Str(b)) if a.chars().count() == 1 && b.chars().count() == 1 => {
            let (a, b) = (
                a.chars().next().unwrap_or('a') as u32,
                b.chars().next().unwrap_or('a') as u32,
            );
            let end = if inclusive { b } else { b.saturating_sub(1) };
            Ok(Value::list(
                (a..=end)
                    .filter_map(char::from_u32)
                    .map(|c| Value::Str(c.to_string()))
                    .collect(),
            ))
        }
        _ => Err(err(
            "valet.UnsupportedException",
            format!("a range from {} to {}", f.display(), t.display()),
        )),
    }
}

fn arith_int(op: BinaryOp, a: i64, b: i64) -> R<Value> {
    Ok(match op {
        BinaryOp::Add => a
            .checked_add(b)
            .map(Value::Int)
            .unwrap_or(Value::Float(a as f64 + b as f64)),
        BinaryOp::Sub => a
            .checked_sub(b)
            .map(Value::Int)
            .unwrap_or(Value::Float(a as f64 - b as f64)),
        BinaryOp::Mul => a
            .checked_mul(b)
            .map(Value::Int)
            .unwrap_or(Value::Float(a as f64 * b as f64)),
        BinaryOp::Div => {
            if b == 0 {
                return Err(err("java.lang.ArithmeticException", "Division by zero"));
            }
            if a % b == 0 {
                Value::Int(a / b)
            } else {
                Value::Float(a as f64 / b as f64)
            }
        }
        BinaryOp::Rem => {
            if b == 0 {
                return Err(err("java.lang.ArithmeticException", "Division by zero"));
            }
            Value::Int(a % b)
        }
        BinaryOp::Pow => {
            if b >= 0 {
                a.checked_pow(b.min(u32::MAX as i64) as u32)
                    .map(Value::Int)
                    .unwrap_or(Value::Float((a as f64).powf(b as f64)))
            } else {
                Value::Float((a as f64).powf(b as f64))
            }
        }
        BinaryOp::BitAnd => Value::Int(a & b),
        BinaryOp::BitOr => Value::Int(a | b),
        BinaryOp::BitXor => Value::Int(a ^ b),
        BinaryOp::Shl => Value::Int(a.wrapping_shl(b as u32)),
        BinaryOp::Shr => Value::Int(a.wrapping_shr(b as u32)),
        _ => unreachable!("arithmetic operator"),
    })
}

fn contains(container: &Value, item: &Value) -> bool {
    match container {
        Value::List(l) => lock(l).iter().any(|x| x.equals(item)),
        Value::Map(m) => lock(m).contains_key(&item.display()),
        Value::Str(s) => s.contains(&item.display()),
        Value::Object(Obj::Params) => false,
        _ => false,
    }
}

pub(crate) fn binary(op: BinaryOp, l: Value, r: Value) -> R<Value> {
    use BinaryOp::*;
    Ok(match op {
        Eq => Value::Bool(l.equals(&r)),
        Ne => Value::Bool(!l.equals(&r)),
        Lt | Le | Gt | Ge | Cmp => {
            let ord = l.compare(&r).ok_or_else(|| {
                err(
                    "java.lang.IllegalArgumentException",
                    format!("cannot compare {} with {}", l.type_name(), r.type_name()),
                )
            })?;
            match op {
                Lt => Value::Bool(ord.is_lt()),
                Le => Value::Bool(ord.is_le()),
                Gt => Value::Bool(ord.is_gt()),
                Ge => Value::Bool(ord.is_ge()),
                _ => Value::Int(ord as i64),
            }
        }
        In => Value::Bool(contains(&r, &l)),
        NotIn => Value::Bool(!contains(&r, &l)),
        Find => {
            let s = l.display();
            let re = regex(&r.display())?;
            Value::Matcher(Arc::new(Matcher {
                matches: find_all(&re, &s),
                whole: false,
            }))
        }
        Match => {
            let s = l.display();
            let re = regex(&format!("^(?:{})$", r.display()))?;
            Value::Bool(re.is_match(&s))
        }
        And | Or | InstanceOf => unreachable!("handled by the interpreter"),
        Add => match (&l, &r) {
            (Value::Int(a), Value::Int(b)) => arith_int(op, *a, *b)?,
            (a, b) if a.is_number() && b.is_number() => {
                Value::Float(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
            }
            (Value::Str(a), b) => Value::Str(format!("{a}{}", b.display())),
            (Value::List(a), Value::List(b)) => {
                let mut v = lock(a).clone();
                v.extend(lock(b).iter().cloned());
                Value::list(v)
            }
            (Value::List(a), b) => {
                let mut v = lock(a).clone();
                v.push(b.clone());
                Value::list(v)
            }
            (Value::Map(a), Value::Map(b)) => {
                let mut m = lock(a).clone();
                for (k, v) in lock(b).iter() {
                    m.insert(k.clone(), v.clone());
                }
                Value::map(m)
            }
            (a, Value::Str(b)) if !matches!(a, Value::Null) => {
                Value::Str(format!("{}{b}", a.display()))
            }
            _ => return Err(bad_operands("+", &l, &r)),
        },
        Sub => match (&l, &r) {
            (Value::Int(a), Value::Int(b)) => arith_int(op, *a, *b)?,
            (a, b) if a.is_number() && b.is_number() => {
                Value::Float(a.as_f64().unwrap_or(0.0) - b.as_f64().unwrap_or(0.0))
            }
            (Value::Str(a), b) => Value::Str(a.replacen(&b.display(), "", 1)),
            (Value::List(a), Value::List(b)) => {
                let b = lock(b).clone();
                Value::list(
                    lock(a)
                        .iter()
                        .filter(|x| !b.iter().any(|y| y.equals(x)))
                        .cloned()
                        .collect(),
                )
            }
            (Value::List(a), b) => {
                Value::list(lock(a).iter().filter(|x| !x.equals(b)).cloned().collect())
            }
            _ => return Err(bad_operands("-", &l, &r)),
        },
        Mul => match (&l, &r) {
            (Value::Int(a), Value::Int(b)) => arith_int(op, *a, *b)?,
            (a, b) if a.is_number() && b.is_number() => {
                Value::Float(a.as_f64().unwrap_or(0.0) * b.as_f64().unwrap_or(0.0))
            }
            (Value::Str(a), Value::Int(n)) => Value::Str(a.repeat((*n).max(0) as usize)),
            (Value::List(a), Value::Int(n)) => {
                let a = lock(a).clone();
                let mut v = Vec::new();
                for _ in 0..(*n).max(0) {
                    v.extend(a.iter().cloned());
                }
                Value::list(v)
            }
            _ => return Err(bad_operands("*", &l, &r)),
        },
        Div | Rem | Pow => match (&l, &r) {
            (Value::Int(a), Value::Int(b)) => arith_int(op, *a, *b)?,
            (a, b) if a.is_number() && b.is_number() => {
                let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                Value::Float(match op {
                    Div => x / y,
                    Rem => x % y,
                    _ => x.powf(y),
                })
            }
            _ => return Err(bad_operands(op.symbol(), &l, &r)),
        },
        Shl => match (&l, &r) {
            (Value::List(a), b) => {
                lock(a).push(b.clone());
                l.clone()
            }
            (Value::Int(a), Value::Int(b)) => arith_int(op, *a, *b)?,
            (Value::Str(a), b) => Value::Str(format!("{a}{}", b.display())),
            _ => return Err(bad_operands("<<", &l, &r)),
        },
        Shr | BitAnd | BitOr | BitXor => match (&l, &r) {
            (Value::Int(a), Value::Int(b)) => arith_int(op, *a, *b)?,
            (Value::Bool(a), Value::Bool(b)) => Value::Bool(match op {
                BitAnd => a & b,
                BitOr => a | b,
                _ => a ^ b,
            }),
            _ => return Err(bad_operands(op.symbol(), &l, &r)),
        },
    })
}

fn bad_operands(op: &str, l: &Value, r: &Value) -> crate::interp::Flow {
    err(
        "groovy.lang.MissingMethodException",
        format!(
            "cannot apply `{op}` to {} ({}) and {} ({})",
            l.display(),
            l.type_name(),
            r.display(),
            r.type_name()
        ),
    )
}

/// Calls a closure argument of a method.
async fn call(it: &Interp<'_>, ctx: &Ctx, c: &Value, args: Vec<Value>) -> R<Value> {
    match c {
        Value::Closure(c) => it.call_closure(ctx, c, args).await,
        other => Err(err(
            "groovy.lang.MissingMethodException",
            format!("expected a closure, got {}", other.display()),
        )),
    }
}

/// Calls `c` with a map entry: `(k, v)` to a two-parameter closure, the entry otherwise.
async fn call_entry(it: &Interp<'_>, ctx: &Ctx, c: &Value, k: &str, v: &Value) -> R<Value> {
    let two = matches!(c, Value::Closure(cl) if cl.def.params.len() >= 2);
    if two {
        call(it, ctx, c, vec![Value::Str(k.to_string()), v.clone()]).await
    } else {
        call(
            it,
            ctx,
            c,
            vec![Value::Entry(Arc::new((k.to_string(), v.clone())))],
        )
        .await
    }
}

fn closure_or_identity(args: &[Value]) -> Option<Value> {
    args.iter()
        .find(|a| matches!(a, Value::Closure(_)))
        .cloned()
}

/// `recv.name(args)`
pub(crate) fn method<'s>(
    it: &'s Interp<'_>,
    ctx: &'s Ctx,
    recv: Value,
    name: &'s str,
    args: Args,
    span: Span,
) -> BoxFuture<'s, R<Value>> {
    Box::pin(async move {
        let mut a = args.pos;
        if !args.named.is_empty() {
            a.insert(0, Value::map(args.named));
        }
        if let Some(b) = args.body {
            a.push(Value::Closure(b));
        }
        // Methods every value has.
        match name {
            "toString" if a.is_empty() => return Ok(Value::Str(recv.display())),
            "equals" if a.len() == 1 => return Ok(Value::Bool(recv.equals(&a[0]))),
            "hashCode" => {
                return Ok(Value::Int(
                    recv.display()
                        .bytes()
                        .fold(0i64, |h, b| h.wrapping_mul(31).wrapping_add(b as i64)),
                ));
            }
            "getClass" => return Ok(Value::Object(Obj::Class(recv.type_name().to_string()))),
            "compareTo" if a.len() == 1 => {
                return Ok(Value::Int(
                    recv.compare(&a[0]).map(|o| o as i64).unwrap_or(0),
                ));
            }
            "is" if a.len() == 1 => return Ok(Value::Bool(recv.equals(&a[0]))),
            "with" if matches!(a.first(), Some(Value::Closure(_))) => {
                return call(it, ctx, &a[0], vec![recv]).await;
            }
            _ => {}
        }
        match &recv {
            Value::Str(s) => string_method(it, ctx, s, name, a).await,
            Value::List(_) => list_method(it, ctx, &recv, name, a).await,
            Value::Map(_) => map_method(it, ctx, &recv, name, a).await,
            Value::Int(_) | Value::Float(_) => number_method(it, ctx, &recv, name, a).await,
            Value::Bool(b) => match name {
                "booleanValue" => Ok(Value::Bool(*b)),
                _ => Err(missing_method(&recv, name)),
            },
            Value::Closure(c) => match name {
                "call" | "doCall" => it.call_closure(ctx, c, a).await,
                _ => Err(missing_method(&recv, name)),
            },
            Value::Entry(e) => match name {
                "getKey" => Ok(Value::Str(e.0.clone())),
                "getValue" => Ok(e.1.clone()),
                _ => Err(missing_method(&recv, name)),
            },
            Value::Exception(e) => match name {
                "getMessage" | "getLocalizedMessage" => Ok(Value::Str(e.message.clone())),
                "getCause" => Ok(Value::Null),
                "printStackTrace" => {
                    it.log(ctx, e.to_display()).await;
                    Ok(Value::Null)
                }
                "getStackTrace" => Ok(Value::list(vec![])),
                _ => Err(missing_method(&recv, name)),
            },
            Value::Matcher(m) => match name {
                "find" => Ok(Value::Bool(!m.matches.is_empty())),
                "matches" => Ok(Value::Bool(m.whole || m.matches.len() == 1)),
                "getCount" | "size" => Ok(Value::Int(m.matches.len() as i64)),
                "group" => {
                    let g = if a.is_empty() {
                        0
                    } else {
                        int_arg(&a, 0)? as usize
                    };
                    Ok(m.matches
                        .first()
                        .and_then(|x| x.get(g).cloned().flatten())
                        .map(Value::Str)
                        .unwrap_or(Value::Null))
                }
                "getAt" => index(it, ctx, &recv, &a.first().cloned().unwrap_or(Value::Int(0))),
                _ => Err(missing_method(&recv, name)),
            },
            Value::Object(o) => object_method(it, ctx, o, &recv, name, a, span).await,
            Value::Null => Err(missing_method(&recv, name)),
        }
    })
}

async fn string_method(it: &Interp<'_>, ctx: &Ctx, s: &str, name: &str, a: Vec<Value>) -> R<Value> {
    let v = |x: &str| Value::Str(x.to_string());
    Ok(match name {
        "trim" | "strip" => v(s.trim()),
        "stripIndent" => {
            let lines: Vec<&str> = s.lines().collect();
            let indent = lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            Value::Str(
                lines
                    .iter()
                    .map(|l| {
                        if l.len() >= indent {
                            &l[indent..]
                        } else {
                            l.trim_start()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
        "stripLeading" => v(s.trim_start()),
        "stripTrailing" => v(s.trim_end()),
        "length" | "size" => Value::Int(s.chars().count() as i64),
        "isEmpty" => Value::Bool(s.is_empty()),
        "isBlank" => Value::Bool(s.trim().is_empty()),
        "contains" => Value::Bool(s.contains(&str_arg(&a, 0))),
        "startsWith" => Value::Bool(s.starts_with(&str_arg(&a, 0))),
        "endsWith" => Value::Bool(s.ends_with(&str_arg(&a, 0))),
        "equalsIgnoreCase" => Value::Bool(s.eq_ignore_ascii_case(&str_arg(&a, 0))),
        "split" => {
            if a.is_empty() {
                Value::list(s.split_whitespace().map(v).collect())
            } else {
                Value::list(java_split(s, &str_arg(&a, 0))?)
            }
        }
        "tokenize" => {
            let delims = if a.is_empty() {
                " \t\n\r\x0c".to_string()
            } else {
                str_arg(&a, 0)
            };
            Value::list(
                s.split(|c| delims.contains(c))
                    .filter(|p| !p.is_empty())
                    .map(v)
                    .collect(),
            )
        }
        "readLines" | "lines" => Value::list(s.lines().map(v).collect()),
        "toInteger" | "toLong" | "toBigInteger" => parse_int(s)?,
        "toDouble" | "toFloat" | "toBigDecimal" => parse_float(s)?,
        "toBoolean" => Value::Bool(matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "y" | "1"
        )),
        "isInteger" | "isLong" | "isBigInteger" => Value::Bool(s.trim().parse::<i64>().is_ok()),
        "isNumber" | "isDouble" | "isFloat" | "isBigDecimal" => {
            Value::Bool(s.trim().parse::<f64>().is_ok())
        }
        "replace" => v(&s.replace(&str_arg(&a, 0), &str_arg(&a, 1))),
        "replaceAll" => {
            v(&regex(&str_arg(&a, 0))?.replace_all(s, java_replacement(&str_arg(&a, 1)).as_str()))
        }
        "replaceFirst" => {
            v(&regex(&str_arg(&a, 0))?.replacen(s, 1, java_replacement(&str_arg(&a, 1)).as_str()))
        }
        "matches" => Value::Bool(regex(&format!("^(?:{})$", str_arg(&a, 0)))?.is_match(s)),
        "find" => match a.first() {
            Some(p) => regex(&p.display())?
                .find(s)
                .map(|m| v(m.as_str()))
                .unwrap_or(Value::Null),
            None => Value::Null,
        },
        "findAll" => Value::list(
            regex(&str_arg(&a, 0))?
                .find_iter(s)
                .map(|m| v(m.as_str()))
                .collect(),
        ),
        "toUpperCase" => v(&s.to_uppercase()),
        "toLowerCase" => v(&s.to_lowercase()),
        "capitalize" => {
            let mut c = s.chars();
            match c.next() {
                Some(f) => Value::Str(f.to_uppercase().collect::<String>() + c.as_str()),
                None => v(""),
            }
        }
        "uncapitalize" => {
            let mut c = s.chars();
            match c.next() {
                Some(f) => Value::Str(f.to_lowercase().collect::<String>() + c.as_str()),
                None => v(""),
            }
        }
        "substring" | "take" | "drop" => {
            let chars: Vec<char> = s.chars().collect();
            let n = chars.len() as i64;
            let (from, to) = match name {
                "take" => (0, int_arg(&a, 0)?.clamp(0, n)),
                "drop" => (int_arg(&a, 0)?.clamp(0, n), n),
                _ => (
                    int_arg(&a, 0)?,
                    if a.len() > 1 { int_arg(&a, 1)? } else { n },
                ),
            };
            if from < 0 || to > n || from > to {
                return Err(err(
                    "java.lang.StringIndexOutOfBoundsException",
                    format!("begin {from}, end {to}, length {n}"),
                ));
            }
            Value::Str(chars[from as usize..to as usize].iter().collect())
        }
        "indexOf" => Value::Int(
            s.find(&str_arg(&a, 0))
                .map(|i| s[..i].chars().count() as i64)
                .unwrap_or(-1),
        ),
        "lastIndexOf" => Value::Int(
            s.rfind(&str_arg(&a, 0))
                .map(|i| s[..i].chars().count() as i64)
                .unwrap_or(-1),
        ),
        "charAt" => index(it, ctx, &v(s), &Value::Int(int_arg(&a, 0)?))?,
        "getAt" => index(it, ctx, &v(s), a.first().unwrap_or(&Value::Int(0)))?,
        "reverse" => Value::Str(s.chars().rev().collect()),
        "count" => Value::Int(s.matches(&str_arg(&a, 0)).count() as i64),
        "padLeft" | "padRight" => {
            let width = int_arg(&a, 0)? as usize;
            let pad = if a.len() > 1 {
                str_arg(&a, 1)
            } else {
                " ".into()
            };
            let len = s.chars().count();
            if len >= width || pad.is_empty() {
                v(s)
            } else {
                let fill: String = pad.chars().cycle().take(width - len).collect();
                if name == "padLeft" {
                    Value::Str(fill + s)
                } else {
                    Value::Str(s.to_string() + &fill)
                }
            }
        }
        "center" => v(s),
        "plus" | "concat" => Value::Str(format!("{s}{}", str_arg(&a, 0))),
        "minus" => v(&s.replacen(&str_arg(&a, 0), "", 1)),
        "multiply" => Value::Str(s.repeat(int_arg(&a, 0)?.max(0) as usize)),
        "toList" | "chars" | "toCharArray" => {
            Value::list(s.chars().map(|c| Value::Str(c.to_string())).collect())
        }
        "getBytes" => Value::list(s.bytes().map(|b| Value::Int(b as i64)).collect()),
        "intern" | "toString" => v(s),
        "each" | "eachWithIndex" | "collect" | "any" | "every" | "eachLine" => {
            let items = if name == "eachLine" {
                Value::list(s.lines().map(v).collect())
            } else {
                Value::list(s.chars().map(|c| Value::Str(c.to_string())).collect())
            };
            let n = if name == "eachLine" { "each" } else { name };
            list_method(it, ctx, &items, n, a).await?
        }
        "format" => Value::Str(java_format(s, &a)),
        "encodeBase64" => {
            use base64::Engine as _;
            Value::Str(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
        }
        "decodeBase64" => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| err("java.lang.IllegalArgumentException", e.to_string()))?;
            Value::list(bytes.into_iter().map(|b| Value::Int(b as i64)).collect())
        }
        _ => return Err(missing_method(&v(s), name)),
    })
}

/// `String.format` for `%s`, `%d`, `%f`, `%%`, `%n` with widths.
pub(crate) fn java_format(fmt: &str, args: &[Value]) -> String {
    let re = regex::Regex::new(r"%(-?)(0?)(\d*)(?:\.(\d+))?([sdfxXbn%])").expect("a valid regex");
    let mut i = 0;
    re.replace_all(fmt, |c: &regex::Captures<'_>| {
        let conv = &c[5];
        if conv == "%" {
            return "%".to_string();
        }
        if conv == "n" {
            return "\n".to_string();
        }
        let arg = args.get(i).cloned().unwrap_or(Value::Null);
        i += 1;
        let prec = c.get(4).and_then(|p| p.as_str().parse::<usize>().ok());
        let s = match conv {
            "d" => arg
                .as_f64()
                .map(|f| (f as i64).to_string())
                .unwrap_or_else(|| arg.display()),
            "f" => format!("{:.*}", prec.unwrap_or(6), arg.as_f64().unwrap_or(0.0)),
            "x" => format!("{:x}", arg.as_f64().unwrap_or(0.0) as i64),
            "X" => format!("{:X}", arg.as_f64().unwrap_or(0.0) as i64),
            "b" => arg.truthy().to_string(),
            _ => match prec {
                Some(p) => arg.display().chars().take(p).collect(),
                None => arg.display(),
            },
        };
        let width: usize = c[3].parse().unwrap_or(0);
        let len = s.chars().count();
        if len >= width {
            s
        } else if &c[1] == "-" {
            s + &" ".repeat(width - len)
        } else if &c[2] == "0" {
            "0".repeat(width - len) + &s
        } else {
            " ".repeat(width - len) + &s
        }
    })
    .into_owned()
}

fn sort_values(items: &mut [Value]) {
    items.sort_by(|x, y| {
        x.compare(y)
            .unwrap_or_else(|| x.display().cmp(&y.display()))
    });
}

async fn list_method(
    it: &Interp<'_>,
    ctx: &Ctx,
    recv: &Value,
    name: &str,
    a: Vec<Value>,
) -> R<Value> {
    let Value::List(lref) = recv else {
        unreachable!("a list")
    };
    let items = lock(lref).clone();
    let f = closure_or_identity(&a);
    Ok(match name {
        "size" => Value::Int(items.len() as i64),
        "isEmpty" => Value::Bool(items.is_empty()),
        "each" => {
            for i in items {
                call(it, ctx, f.as_ref().unwrap_or(&Value::Null), vec![i]).await?;
            }
            recv.clone()
        }
        "eachWithIndex" => {
            for (n, i) in items.into_iter().enumerate() {
                call(
                    it,
                    ctx,
                    f.as_ref().unwrap_or(&Value::Null),
                    vec![i, Value::Int(n as i64)],
                )
                .await?;
            }
            recv.clone()
        }
        "collect" | "collectMany" => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                let r = match &f {
                    Some(f) => call(it, ctx, f, vec![i]).await?,
                    None => i,
                };
                if name == "collectMany"
                    && let Value::List(l) = &r
                {
                    out.extend(lock(l).iter().cloned());
                    continue;
                }
                out.push(r);
            }
            Value::list(out)
        }
        "collectEntries" => {
            let mut m = IndexMap::new();
            for i in items {
                let r = match &f {
                    Some(f) => call(it, ctx, f, vec![i]).await?,
                    None => i,
                };
                match r {
                    Value::List(l) => {
                        let l = lock(&l);
                        if l.len() == 2 {
                            m.insert(l[0].display(), l[1].clone());
                        }
                    }
                    Value::Map(pm) => {
                        for (k, v) in lock(&pm).iter() {
                            m.insert(k.clone(), v.clone());
                        }
                    }
                    Value::Entry(e) => {
                        m.insert(e.0.clone(), e.1.clone());
                    }
                    _ => {}
                }
            }
            Value::map(m)
        }
        "findAll" | "grep" | "findResults" => {
            let mut out = Vec::new();
            for i in items {
                let keep = match &f {
                    Some(f) => call(it, ctx, f, vec![i.clone()]).await?,
                    None if name == "grep" && !a.is_empty() => Value::Bool(
                        i.equals(&a[0])
                            || regex(&a[0].display())
                                .map(|r| r.is_match(&i.display()))
                                .unwrap_or(false),
                    ),
                    None => i.clone(),
                };
                if name == "findResults" {
                    if !matches!(keep, Value::Null) {
                        out.push(keep);
                    }
                } else if keep.truthy() {
                    out.push(i);
                }
            }
            Value::list(out)
        }
        "find" => {
            for i in items {
                let hit = match &f {
                    Some(f) => call(it, ctx, f, vec![i.clone()]).await?.truthy(),
                    None => i.truthy(),
                };
                if hit {
                    return Ok(i);
                }
            }
            Value::Null
        }
        "findIndexOf" => {
            for (n, i) in items.into_iter().enumerate() {
                if call(it, ctx, f.as_ref().unwrap_or(&Value::Null), vec![i])
                    .await?
                    .truthy()
                {
                    return Ok(Value::Int(n as i64));
                }
            }
            Value::Int(-1)
        }
        "any" | "every" => {
            let every = name == "every";
            for i in items {
                let hit = match &f {
                    Some(f) => call(it, ctx, f, vec![i]).await?.truthy(),
                    None => i.truthy(),
                };
                if hit != every {
                    return Ok(Value::Bool(!every));
                }
            }
            Value::Bool(every)
        }
        "count" => {
            let mut n = 0;
            for i in items {
                let hit = match &f {
                    Some(f) => call(it, ctx, f, vec![i]).await?.truthy(),
                    None => a.first().is_some_and(|x| x.equals(&i)),
                };
                if hit {
                    n += 1;
                }
            }
            Value::Int(n)
        }
        "join" => Value::Str(
            items
                .iter()
                .map(Value::display)
                .collect::<Vec<_>>()
                .join(&str_arg(&a, 0)),
        ),
        "contains" => Value::Bool(
            items
                .iter()
                .any(|x| x.equals(a.first().unwrap_or(&Value::Null))),
        ),
        "containsAll" => match a.first() {
            Some(Value::List(o)) => {
                Value::Bool(lock(o).iter().all(|y| items.iter().any(|x| x.equals(y))))
            }
            _ => Value::Bool(false),
        },
        "indexOf" => Value::Int(
            items
                .iter()
                .position(|x| x.equals(a.first().unwrap_or(&Value::Null)))
                .map(|p| p as i64)
                .unwrap_or(-1),
        ),
        "add" | "push" | "leftShift" | "addAll" | "plus" | "minus" | "remove" | "removeAt"
        | "clear" | "pop" | "putAt" | "set" | "removeAll" => {
            let mut l = lock(lref);
            match name {
                "add" | "push" | "leftShift" => {
                    if a.len() == 2 {
                        let i = int_arg(&a, 0)? as usize;
                        let len = l.len();
                        l.insert(i.min(len), a[1].clone());
                    } else {
                        l.push(a.first().cloned().unwrap_or(Value::Null));
                    }
                    Value::Bool(true)
                }
                "addAll" => {
                    if let Some(Value::List(o)) = a.first() {
                        let o = lock(o).clone();
                        l.extend(o);
                    }
                    Value::Bool(true)
                }
                "plus" | "minus" => {
                    drop(l);
                    return binary(
                        if name == "plus" {
                            BinaryOp::Add
                        } else {
                            BinaryOp::Sub
                        },
                        recv.clone(),
                        a.first().cloned().unwrap_or(Value::Null),
                    );
                }
                "remove" | "removeAt" => match a.first() {
                    Some(Value::Int(i)) => {
                        let i = norm_index(*i, l.len()).ok_or_else(|| {
                            err("java.lang.IndexOutOfBoundsException", format!("index {i}"))
                        })?;
                        l.remove(i)
                    }
                    Some(x) => {
                        let pos = l.iter().position(|y| y.equals(x));
                        Value::Bool(pos.map(|p| l.remove(p)).is_some())
                    }
                    None => Value::Null,
                },
                "removeAll" => {
                    if let Some(Value::List(o)) = a.first() {
                        let o = lock(o).clone();
                        l.retain(|x| !o.iter().any(|y| y.equals(x)));
                    }
                    Value::Bool(true)
                }
                "clear" => {
                    l.clear();
                    Value::Null
                }
                "pop" => {
                    if l.is_empty() {
                        return Err(err(
                            "java.util.NoSuchElementException",
                            "Cannot pop() an empty List",
                        ));
                    }
                    l.remove(0)
                }
                _ => {
                    let i = int_arg(&a, 0)?;
                    let i = if i < 0 { l.len() as i64 + i } else { i } as usize;
                    if i >= l.len() {
                        l.resize(i + 1, Value::Null);
                    }
                    std::mem::replace(&mut l[i], a.get(1).cloned().unwrap_or(Value::Null))
                }
            }
        }
        "get" | "getAt" => index(it, ctx, recv, a.first().unwrap_or(&Value::Int(0)))?,
        "first" | "head" => items.first().cloned().ok_or_else(|| {
            err(
                "java.util.NoSuchElementException",
                format!("Cannot access {name}() element from an empty List"),
            )
        })?,
        "last" => items.last().cloned().ok_or_else(|| {
            err(
                "java.util.NoSuchElementException",
                "Cannot access last() element from an empty List",
            )
        })?,
        "tail" => Value::list(items.into_iter().skip(1).collect()),
        "init" => Value::list(items[..items.len().saturating_sub(1)].to_vec()),
        "take" => Value::list(
            items
                .into_iter()
                .take(int_arg(&a, 0)?.max(0) as usize)
                .collect(),
        ),
        "drop" => Value::list(
            items
                .into_iter()
                .skip(int_arg(&a, 0)?.max(0) as usize)
                .collect(),
        ),
        "subList" => {
            let (from, to) = (
                int_arg(&a, 0)?.max(0) as usize,
                int_arg(&a, 1)?.max(0) as usize,
            );
            Value::list(items.get(from..to.min(items.len())).unwrap_or(&[]).to_vec())
        }
        "sort" | "toSorted" => {
            let mut sorted = items;
            match &f {
                Some(c @ Value::Closure(cl)) if cl.def.params.len() == 2 => {
                    // Insertion sort with the comparator: lists in pipelines are short.
                    let mut out: Vec<Value> = Vec::with_capacity(sorted.len());
                    for x in sorted {
                        let mut pos = out.len();
                        for (i, y) in out.iter().enumerate() {
                            let r = call(it, ctx, c, vec![x.clone(), y.clone()]).await?;
                            if matches!(r, Value::Int(n) if n < 0) {
                                pos = i;
                                break;
                            }
                        }
                        out.insert(pos, x);
                    }
                    sorted = out;
                }
                Some(c) => {
                    let mut keyed = Vec::with_capacity(sorted.len());
                    for x in sorted {
                        keyed.push((call(it, ctx, c, vec![x.clone()]).await?, x));
                    }
                    keyed.sort_by(|p, q| p.0.compare(&q.0).unwrap_or(std::cmp::Ordering::Equal));
                    sorted = keyed.into_iter().map(|p| p.1).collect();
                }
                None => sort_values(&mut sorted),
            }
            if name == "sort" {
                *lock(lref) = sorted.clone();
            }
            Value::list(sorted)
        }
        "reverse" | "reversed" => Value::list(items.into_iter().rev().collect()),
        "unique" | "toUnique" | "toSet" => {
            let mut out: Vec<Value> = Vec::new();
            for i in items {
                if !out.iter().any(|x| x.equals(&i)) {
                    out.push(i);
                }
            }
            if name == "unique" {
                *lock(lref) = out.clone();
            }
            Value::list(out)
        }
        "flatten" => {
            fn flat(v: &[Value], out: &mut Vec<Value>) {
                for i in v {
                    match i {
                        Value::List(l) => flat(&lock(l).clone(), out),
                        other => out.push(other.clone()),
                    }
                }
            }
            let mut out = Vec::new();
            flat(&items, &mut out);
            Value::list(out)
        }
        "sum" => {
            let mut acc = a.iter().find(|x| !matches!(x, Value::Closure(_))).cloned();
            for i in items {
                let i = match &f {
                    Some(f) => call(it, ctx, f, vec![i]).await?,
                    None => i,
                };
                acc = Some(match acc {
                    None => i,
                    Some(x) => binary(BinaryOp::Add, x, i)?,
                });
            }
            acc.unwrap_or(Value::Null)
        }
        "max" | "min" => {
            let mut best: Option<(Value, Value)> = None;
            for i in items {
                let key = match &f {
                    Some(f) => call(it, ctx, f, vec![i.clone()]).await?,
                    None => i.clone(),
                };
                let better = match &best {
                    None => true,
                    Some((k, _)) => {
                        let o = key.compare(k).unwrap_or(std::cmp::Ordering::Equal);
                        if name == "max" { o.is_gt() } else { o.is_lt() }
                    }
                };
                if better {
                    best = Some((key, i));
                }
            }
            best.map(|b| b.1).unwrap_or(Value::Null)
        }
        "inject" => {
            let (mut acc, c) = match a.len() {
                1 => (items.first().cloned().unwrap_or(Value::Null), a[0].clone()),
                _ => (a[0].clone(), a[1].clone()),
            };
            let skip = if a.len() == 1 { 1 } else { 0 };
            for i in items.into_iter().skip(skip) {
                acc = call(it, ctx, &c, vec![acc, i]).await?;
            }
            acc
        }
        "groupBy" => {
            let mut m: IndexMap<String, Value> = IndexMap::new();
            for i in items {
                let k = call(it, ctx, f.as_ref().unwrap_or(&Value::Null), vec![i.clone()])
                    .await?
                    .display();
                match m.entry(k).or_insert_with(|| Value::list(vec![])) {
                    Value::List(l) => lock(l).push(i),
                    _ => unreachable!("a list"),
                }
            }
            Value::map(m)
        }
        "withIndex" | "indexed" => Value::list(
            items
                .into_iter()
                .enumerate()
                .map(|(n, i)| Value::list(vec![i, Value::Int(n as i64)]))
                .collect(),
        ),
        "toList" | "asList" | "asImmutable" | "toArray" | "clone" => Value::list(items),
        "intersect" => match a.first() {
            Some(Value::List(o)) => {
                let o = lock(o).clone();
                Value::list(
                    items
                        .into_iter()
                        .filter(|x| o.iter().any(|y| y.equals(x)))
                        .collect(),
                )
            }
            _ => Value::list(vec![]),
        },
        "shuffled" => Value::list(items),
        _ => return Err(missing_method(recv, name)),
    })
}

async fn map_method(
    it: &Interp<'_>,
    ctx: &Ctx,
    recv: &Value,
    name: &str,
    a: Vec<Value>,
) -> R<Value> {
    let Value::Map(mref) = recv else {
        unreachable!("a map")
    };
    let entries: Vec<(String, Value)> = lock(mref)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let f = closure_or_identity(&a);
    let fc = f.clone().unwrap_or(Value::Null);
    Ok(match name {
        "size" => Value::Int(entries.len() as i64),
        "isEmpty" => Value::Bool(entries.is_empty()),
        "each" | "eachWithIndex" => {
            for (k, v) in entries {
                call_entry(it, ctx, &fc, &k, &v).await?;
            }
            recv.clone()
        }
        "collect" => {
            let mut out = Vec::new();
            for (k, v) in entries {
                out.push(call_entry(it, ctx, &fc, &k, &v).await?);
            }
            Value::list(out)
        }
        "collectEntries" => {
            let mut m = IndexMap::new();
            for (k, v) in entries {
                match call_entry(it, ctx, &fc, &k, &v).await? {
                    Value::List(l) => {
                        let l = lock(&l);
                        if l.len() == 2 {
                            m.insert(l[0].display(), l[1].clone());
                        }
                    }
                    Value::Map(pm) => {
                        m.extend(lock(&pm).iter().map(|(k, v)| (k.clone(), v.clone())))
                    }
                    _ => {}
                }
            }
            Value::map(m)
        }
        "findAll" | "subMap" if name == "findAll" => {
            let mut m = IndexMap::new();
            for (k, v) in entries {
                if call_entry(it, ctx, &fc, &k, &v).await?.truthy() {
                    m.insert(k, v);
                }
            }
            Value::map(m)
        }
        "find" => {
            for (k, v) in entries {
                if call_entry(it, ctx, &fc, &k, &v).await?.truthy() {
                    return Ok(Value::Entry(Arc::new((k, v))));
                }
            }
            Value::Null
        }
        "any" | "every" => {
            let every = name == "every";
            for (k, v) in entries {
                if call_entry(it, ctx, &fc, &k, &v).await?.truthy() != every {
                    return Ok(Value::Bool(!every));
                }
            }
            Value::Bool(every)
        }
        "count" => {
            let mut n = 0;
            for (k, v) in entries {
                if call_entry(it, ctx, &fc, &k, &v).await?.truthy() {
                    n += 1;
                }
            }
            Value::Int(n)
        }
        "keySet" | "keys" => Value::list(entries.into_iter().map(|(k, _)| Value::Str(k)).collect()),
        "values" => Value::list(entries.into_iter().map(|(_, v)| v).collect()),
        "entrySet" => Value::list(
            entries
                .into_iter()
                .map(|e| Value::Entry(Arc::new(e)))
                .collect(),
        ),
        "containsKey" => Value::Bool(lock(mref).contains_key(&str_arg(&a, 0))),
        "containsValue" => Value::Bool(
            entries
                .iter()
                .any(|(_, v)| v.equals(a.first().unwrap_or(&Value::Null))),
        ),
        "get" | "getAt" | "getOrDefault" => {
            let k = str_arg(&a, 0);
            match lock(mref).get(&k) {
                Some(v) => v.clone(),
                None => a.get(1).cloned().unwrap_or(Value::Null),
            }
        }
        "put" | "putAt" => lock(mref)
            .insert(str_arg(&a, 0), a.get(1).cloned().unwrap_or(Value::Null))
            .unwrap_or(Value::Null),
        "putAll" => {
            if let Some(Value::Map(o)) = a.first() {
                let o = lock(o).clone();
                lock(mref).extend(o);
            }
            Value::Null
        }
        "remove" => lock(mref)
            .shift_remove(&str_arg(&a, 0))
            .unwrap_or(Value::Null),
        "clear" => {
            lock(mref).clear();
            Value::Null
        }
        "plus" => binary(
            BinaryOp::Add,
            recv.clone(),
            a.first().cloned().unwrap_or(Value::Null),
        )?,
        "subMap" => {
            let keys: Vec<String> = match a.first() {
                Some(Value::List(l)) => lock(l).iter().map(Value::display).collect(),
                _ => vec![],
            };
            Value::map(
                entries
                    .into_iter()
                    .filter(|(k, _)| keys.contains(k))
                    .collect(),
            )
        }
        "sort" => {
            let mut e = entries;
            e.sort_by(|x, y| x.0.cmp(&y.0));
            Value::map(e.into_iter().collect())
        }
        "toString" => Value::Str(recv.display()),
        _ => return Err(missing_method(recv, name)),
    })
}

async fn number_method(
    it: &Interp<'_>,
    ctx: &Ctx,
    recv: &Value,
    name: &str,
    a: Vec<Value>,
) -> R<Value> {
    let f = recv.as_f64().unwrap_or(0.0);
    Ok(match name {
        "toInteger" | "intValue" | "toLong" | "longValue" => Value::Int(f as i64),
        "toDouble" | "doubleValue" | "toFloat" | "floatValue" | "toBigDecimal" => Value::Float(f),
        "abs" => match recv {
            Value::Int(i) => Value::Int(i.abs()),
            _ => Value::Float(f.abs()),
        },
        "round" => match a.first() {
            Some(p) => {
                let p = p.as_f64().unwrap_or(0.0) as i32;
                let m = 10f64.powi(p);
                Value::Float((f * m).round() / m)
            }
            None => Value::Int(f.round() as i64),
        },
        "floor" => Value::Int(f.floor() as i64),
        "ceil" => Value::Int(f.ceil() as i64),
        "intdiv" => match (recv, a.first()) {
            (Value::Int(x), Some(Value::Int(y))) if *y != 0 => Value::Int(x / y),
            _ => return Err(err("java.lang.ArithmeticException", "Division by zero")),
        },
        // Groovy's operator methods: `a.plus(b)` is `a + b`.
        "plus" | "minus" | "multiply" | "div" | "mod" | "power" => {
            let op = match name {
                "plus" => BinaryOp::Add,
                "minus" => BinaryOp::Sub,
                "multiply" => BinaryOp::Mul,
                "div" => BinaryOp::Div,
                "mod" => BinaryOp::Rem,
                _ => BinaryOp::Pow,
            };
            binary(op, recv.clone(), a.first().cloned().unwrap_or(Value::Null))?
        }
        "times" => {
            let c = a.first().cloned().unwrap_or(Value::Null);
            for i in 0..(f as i64).max(0) {
                call(it, ctx, &c, vec![Value::Int(i)]).await?;
            }
            Value::Null
        }
        "upto" | "downto" => {
            let to = int_arg(&a, 0)?;
            let c = a.get(1).cloned().unwrap_or(Value::Null);
            let from = f as i64;
            let seq: Vec<i64> = if name == "upto" {
                (from..=to).collect()
            } else {
                (to..=from).rev().collect()
            };
            for i in seq {
                call(it, ctx, &c, vec![Value::Int(i)]).await?;
            }
            Value::Null
        }
        "format" => Value::Str(fmt_float(f)),
        _ => return Err(missing_method(recv, name)),
    })
}

async fn object_method(
    it: &Interp<'_>,
    ctx: &Ctx,
    o: &Obj,
    recv: &Value,
    name: &str,
    a: Vec<Value>,
    span: Span,
) -> R<Value> {
    match o {
        Obj::Env => match name {
            "getProperty" | "get" | "getAt" => Ok(it
                .env_get(ctx, &str_arg(&a, 0))
                .map(Value::Str)
                .unwrap_or(Value::Null)),
            "setProperty" | "put" | "putAt" => {
                it.set_property(
                    ctx,
                    recv,
                    &str_arg(&a, 0),
                    a.get(1).cloned().unwrap_or(Value::Null),
                )?;
                Ok(Value::Null)
            }
            "getEnvironment" | "getOverriddenEnvironment" => Ok(Value::map(
                it.step_env(ctx)
                    .into_iter()
                    .map(|(k, v)| (k, Value::Str(v)))
                    .collect(),
            )),
            _ => Err(missing_method(recv, name)),
        },
        Obj::Params => {
            method(
                it,
                ctx,
                it.params.clone(),
                name,
                Args {
                    pos: a,
                    named: IndexMap::new(),
                    body: None,
                },
                span,
            )
            .await
        }
        Obj::CurrentBuild => match name {
            "getResult" => current_build(it, "result"),
            "getCurrentResult" => current_build(it, "currentResult"),
            "getNumber" => current_build(it, "number"),
            "getDisplayName" => current_build(it, "displayName"),
            "getDescription" => current_build(it, "description"),
            "getDurationString" => current_build(it, "durationString"),
            "getBuildCauses" | "getChangeSets" => Ok(Value::list(vec![])),
            "getPreviousBuild" | "getRawBuild" => Ok(Value::Null),
            "setResult" => {
                it.set_property(
                    ctx,
                    recv,
                    "result",
                    a.first().cloned().unwrap_or(Value::Null),
                )?;
                Ok(Value::Null)
            }
            "setDisplayName" | "setDescription" => {
                let prop = if name == "setDisplayName" {
                    "displayName"
                } else {
                    "description"
                };
                it.set_property(ctx, recv, prop, a.first().cloned().unwrap_or(Value::Null))?;
                Ok(Value::Null)
            }
            "resultIsBetterOrEqualTo" | "resultIsWorseOrEqualTo" => {
                let other = BuildResult::parse(&str_arg(&a, 0)).unwrap_or(BuildResult::Success);
                let cur = it.build_result();
                Ok(Value::Bool(if name == "resultIsBetterOrEqualTo" {
                    cur <= other
                } else {
                    cur >= other
                }))
            }
            _ => Err(missing_method(recv, name)),
        },
        Obj::Docker => match name {
            "image" => Ok(Value::Object(Obj::DockerImage(str_arg(&a, 0)))),
            "build" => {
                it.notice(
                    crate::event::NoticeLevel::Warning,
                    format!(
                        "docker.build('{}') is not run by valet: the image is assumed to exist",
                        str_arg(&a, 0)
                    ),
                )
                .await;
                Ok(Value::Object(Obj::DockerImage(str_arg(&a, 0))))
            }
            "withRegistry" | "withServer" | "withTool" => {
                let body = a
                    .iter()
                    .rev()
                    .find(|v| matches!(v, Value::Closure(_)))
                    .cloned()
                    .unwrap_or(Value::Null);
                call(it, ctx, &body, vec![]).await
            }
            _ => Err(missing_method(recv, name)),
        },
        Obj::DockerImage(image) => match name {
            "inside" | "withRun" => {
                it.notice(
                    crate::event::NoticeLevel::Warning,
                    format!("docker.image('{image}').{name}: the {} backend runs the body in the current container; the image is not used", it.backend.name()),
                )
                .await;
                let body = a
                    .iter()
                    .rev()
                    .find(|v| matches!(v, Value::Closure(_)))
                    .cloned()
                    .unwrap_or(Value::Null);
                let args = if name == "withRun" {
                    vec![Value::map(IndexMap::from([(
                        "id".to_string(),
                        Value::Str(image.clone()),
                    )]))]
                } else {
                    vec![]
                };
                call(it, ctx, &body, args).await
            }
            "pull" | "push" | "tag" | "run" => Ok(Value::Null),
            "imageName" | "getId" => Ok(Value::Str(image.clone())),
            _ => Err(missing_method(recv, name)),
        },
        Obj::JsonSlurper => match name {
            "parseText" => {
                let j: serde_json::Value = serde_json::from_str(&str_arg(&a, 0))
                    .map_err(|e| err("groovy.json.JsonException", format!("invalid JSON: {e}")))?;
                Ok(Value::from_json(&j))
            }
            _ => Err(missing_method(recv, name)),
        },
        Obj::Script(m) => match m.functions.get(name) {
            Some(f) => {
                let f = f.clone();
                it.call_function(
                    ctx,
                    &f,
                    Args {
                        pos: a,
                        named: IndexMap::new(),
                        body: None,
                    },
                    Some(m.clone()),
                )
                .await
            }
            None => match m.scope.get(name) {
                Some(Value::Closure(c)) => it.call_closure(ctx, &c, a).await,
                _ => Err(missing_method(recv, name)),
            },
        },
        Obj::Class(c) => static_method(it, ctx, c, name, a).await,
        Obj::Scm => Err(missing_method(recv, name)),
    }
}

async fn static_method(
    it: &Interp<'_>,
    ctx: &Ctx,
    class: &str,
    name: &str,
    a: Vec<Value>,
) -> R<Value> {
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    Ok(match (class, name) {
        ("Integer" | "Long", "parseInt" | "parseLong" | "valueOf") => match a.first() {
            Some(Value::Int(i)) => Value::Int(*i),
            _ => {
                let s = str_arg(&a, 0);
                if a.len() > 1 {
                    let radix = int_arg(&a, 1)? as u32;
                    Value::Int(i64::from_str_radix(s.trim(), radix).map_err(|_| number_format(&s))?)
                } else {
                    parse_int(&s)?
                }
            }
        },
        ("Integer" | "Long", "toString") => Value::Str(str_arg(&a, 0)),
        ("Integer" | "Long", "max") => Value::Int(int_arg(&a, 0)?.max(int_arg(&a, 1)?)),
        ("Integer" | "Long", "min") => Value::Int(int_arg(&a, 0)?.min(int_arg(&a, 1)?)),
        ("Double" | "Float", "parseDouble" | "parseFloat" | "valueOf") => {
            parse_float(&str_arg(&a, 0))?
        }
        ("Boolean", "parseBoolean" | "valueOf") => {
            Value::Bool(str_arg(&a, 0).trim().eq_ignore_ascii_case("true"))
        }
        ("String", "valueOf") => Value::Str(str_arg(&a, 0)),
        ("String", "format") => Value::Str(java_format(&str_arg(&a, 0), &a[1.min(a.len())..])),
        ("String", "join") => {
            let sep = str_arg(&a, 0);
            let items: Vec<String> = match a.get(1) {
                Some(Value::List(l)) => lock(l).iter().map(Value::display).collect(),
                _ => a.iter().skip(1).map(Value::display).collect(),
            };
            Value::Str(items.join(&sep))
        }
        ("System", "currentTimeMillis") => Value::Int(now_ms()),
        ("System", "nanoTime") => Value::Int(it.started.elapsed().as_nanos() as i64),
        ("System", "getenv") => match a.first() {
            Some(k) => it
                .env_get(ctx, &k.display())
                .map(Value::Str)
                .unwrap_or(Value::Null),
            None => Value::map(
                it.step_env(ctx)
                    .into_iter()
                    .map(|(k, v)| (k, Value::Str(v)))
                    .collect(),
            ),
        },
        ("System", "getProperty") => match str_arg(&a, 0).as_str() {
            "line.separator" => Value::str("\n"),
            "file.separator" => Value::str("/"),
            "os.name" => Value::str("Linux"),
            "user.name" => it
                .env_get(ctx, "USER")
                .map(Value::Str)
                .unwrap_or(Value::Null),
            _ => a.get(1).cloned().unwrap_or(Value::Null),
        },
        ("Math", "max" | "min") => {
            let (x, y) = (
                a.first().cloned().unwrap_or(Value::Int(0)),
                a.get(1).cloned().unwrap_or(Value::Int(0)),
            );
            let o = x.compare(&y).unwrap_or(std::cmp::Ordering::Equal);
            if (name == "max") == o.is_ge() { x } else { y }
        }
        ("Math", "abs") => {
            number_method(it, ctx, a.first().unwrap_or(&Value::Int(0)), "abs", vec![]).await?
        }
        ("Math", "round") => {
            Value::Int(a.first().and_then(Value::as_f64).unwrap_or(0.0).round() as i64)
        }
        ("Math", "floor") => Value::Float(a.first().and_then(Value::as_f64).unwrap_or(0.0).floor()),
        ("Math", "ceil") => Value::Float(a.first().and_then(Value::as_f64).unwrap_or(0.0).ceil()),
        ("Math", "pow") => Value::Float(
            a.first()
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
                .powf(a.get(1).and_then(Value::as_f64).unwrap_or(0.0)),
        ),
        ("Math", "sqrt") => Value::Float(a.first().and_then(Value::as_f64).unwrap_or(0.0).sqrt()),
        ("Math", "random") => Value::Float((now_ms() % 1000) as f64 / 1000.0),
        ("JsonOutput", "toJson") => Value::Str(
            a.first()
                .map(Value::to_json)
                .unwrap_or(serde_json::Value::Null)
                .to_string(),
        ),
        ("JsonOutput", "prettyPrint") => {
            let s = str_arg(&a, 0);
            match serde_json::from_str::<serde_json::Value>(&s) {
                Ok(j) => Value::Str(serde_json::to_string_pretty(&j).unwrap_or(s)),
                Err(_) => Value::Str(s),
            }
        }
        ("Collections" | "Arrays", "asList") => Value::list(a),
        ("Collections", "sort") => {
            if let Some(Value::List(l)) = a.first() {
                sort_values(&mut lock(l));
            }
            Value::Null
        }
        ("Thread", "sleep") => {
            let ms = int_arg(&a, 0)?.max(0) as u64;
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(ms)) => {}
                _ = ctx.cancel.cancelled() => return Err(crate::interp::abort("the build was interrupted")),
            }
            Value::Null
        }
        _ => {
            return Err(err(
                "groovy.lang.MissingMethodException",
                format!("No signature of method: static {class}.{name}() is applicable"),
            ));
        }
    })
}
