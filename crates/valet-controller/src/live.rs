//! The events of builds that are not finished, in memory, for server-sent events: a
//! subscriber gets everything from its position on (what already happened first, then
//! what happens), and never misses one, however slow it reads. Finished builds are read
//! back from their events file instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use valet_store::BuildId;

/// The events of one build so far.
pub struct Live {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    events: Vec<Arc<str>>,
    done: bool,
}

impl Live {
    fn new() -> Live {
        Live {
            state: Mutex::default(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, json: Arc<str>) {
        let n = {
            let mut s = self.lock();
            s.events.push(json);
            s.events.len()
        };
        self.changed.send_replace(n);
    }

    /// No more events will come.
    pub fn finish(&self) {
        let n = {
            let mut s = self.lock();
            s.done = true;
            s.events.len()
        };
        self.changed.send_replace(n);
    }

    /// Events from index `from` on, and whether the build is done.
    pub fn since(&self, from: usize) -> (Vec<Arc<str>>, bool) {
        let s = self.lock();
        (s.events.get(from..).unwrap_or_default().to_vec(), s.done)
    }

    /// A receiver that wakes when events are added (subscribe before reading).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<usize> {
        self.changed.subscribe()
    }
}

/// The builds with live events, by id.
#[derive(Default)]
pub struct Registry {
    builds: Mutex<HashMap<BuildId, Arc<Live>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BuildId, Arc<Live>>> {
        self.builds.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get_or_create(&self, id: BuildId) -> Arc<Live> {
        self.lock()
            .entry(id)
            .or_insert_with(|| Arc::new(Live::new()))
            .clone()
    }

    pub fn get(&self, id: BuildId) -> Option<Arc<Live>> {
        self.lock().get(&id).cloned()
    }

    /// The build is finished and its events are on disk: subscribers from now on read them there.
    pub fn remove(&self, id: BuildId) {
        if let Some(l) = self.lock().remove(&id) {
            l.finish();
        }
    }
}
