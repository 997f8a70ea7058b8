//! Variable scopes: a chain from the innermost block to the script's top level.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::value::{Value, lock};

#[derive(Clone)]
pub(crate) struct Scope(Arc<Inner>);

struct Inner {
    vars: Mutex<HashMap<String, Value>>,
    parent: Option<Scope>,
}

impl Scope {
    pub(crate) fn root() -> Scope {
        Scope(Arc::new(Inner {
            vars: Mutex::new(HashMap::new()),
            parent: None,
        }))
    }

    pub(crate) fn child(&self) -> Scope {
        Scope(Arc::new(Inner {
            vars: Mutex::new(HashMap::new()),
            parent: Some(self.clone()),
        }))
    }

    pub(crate) fn get(&self, name: &str) -> Option<Value> {
        let mut s = self;
        loop {
            if let Some(v) = lock(&s.0.vars).get(name) {
                return Some(v.clone());
            }
            match &s.0.parent {
                Some(p) => s = p,
                None => return None,
            }
        }
    }

    /// `def x = v`: a new variable in this scope.
    pub(crate) fn declare(&self, name: &str, v: Value) {
        lock(&self.0.vars).insert(name.to_string(), v);
    }

    /// `x = v`: the nearest variable of that name, or a new one at the top level (Groovy's binding).
    pub(crate) fn assign(&self, name: &str, v: Value) {
        let mut s = self;
        loop {
            {
                let mut vars = lock(&s.0.vars);
                if let Some(slot) = vars.get_mut(name) {
                    *slot = v;
                    return;
                }
                if s.0.parent.is_none() {
                    vars.insert(name.to_string(), v);
                    return;
                }
            }
            s = s.0.parent.as_ref().expect("a parent scope");
        }
    }
}
