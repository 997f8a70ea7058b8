//! The warm pool: ready pods per pod template, so a build gets its pod without waiting for
//! the engine.
//!
//! A template (the spec's normalised form: the fields that shape the containers) is warmed
//! when it is first asked for; from then on, one filler task per template keeps `size` pods
//! ready, one at a time (the machine is small and builds run beside it). A pod handed out is
//! never given back: its user tears it down, which destroys it, so no state crosses builds.
//! [`Pool::drain`] stops the fillers and removes the ready pods. Pool pods carry the owner
//! label like every other pod (and `valet.pool`), so a crash leaves nothing `valet gc`
//! cannot find.
//!
//! Beside ready pods, the pool keeps started **sandboxes**: pods without containers (the
//! network holder, the workspace volume, the host directory), which do not depend on the
//! template. A template seen for the first time gets one and only makes its own containers:
//! the sandbox's start (a network namespace on the bridge) is the longest call of a cold pod.
//! They are kept as the template of [`sandbox_spec`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use valet_backend::{BackendError, Pod as _, PodSpec};

use crate::{DockerBackend, DockerPod};

/// The build label of pods made ahead of any build.
pub(crate) const POOL_BUILD: &str = "warm-pool";

pub(crate) struct Pool {
    /// Ready pods per template.
    size: usize,
    /// Ready sandboxes.
    sandboxes: usize,
    id: String,
    state: Mutex<State>,
    fillers: Mutex<tokio::task::JoinSet<()>>,
    /// Pods handed out ready.
    hits: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct State {
    closed: bool,
    templates: HashMap<String, Template>,
}

struct Template {
    ready: VecDeque<DockerPod>,
    filling: bool,
}

/// The part of a spec that decides what the pod is: everything but how the plan names its
/// default container and where the template came from.
fn key(spec: &PodSpec) -> String {
    let mut s = spec.clone();
    s.default_container.clear();
    s.inherits.clear();
    serde_json::to_string(&s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The template of a sandbox: a pod without containers.
pub(crate) fn sandbox_spec() -> PodSpec {
    PodSpec {
        name: "pod".into(),
        ..PodSpec::default()
    }
}

impl Pool {
    pub(crate) fn new(size: usize, sandboxes: usize) -> Self {
        Pool {
            size,
            sandboxes,
            id: format!(
                "{}-{:x}",
                std::process::id(),
                fastrand::u64(..) & 0xffff_ffff
            ),
            state: Mutex::default(),
            fillers: Mutex::default(),
            hits: Default::default(),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many pods are ready for `spec`.
    pub(crate) fn ready(&self, spec: &PodSpec) -> usize {
        self.state()
            .templates
            .get(&key(spec))
            .map_or(0, |t| t.ready.len())
    }

    /// How many pods and sandboxes are ready, over all templates.
    pub(crate) fn total_ready(&self) -> usize {
        self.state().templates.values().map(|t| t.ready.len()).sum()
    }

    /// How many ready pods were handed out.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A ready pod for `spec`, if there is one; either way the template is (re)filled.
    pub(crate) fn take(
        self: &Arc<Self>,
        backend: &DockerBackend,
        spec: &PodSpec,
    ) -> Option<DockerPod> {
        let pod = self
            .state()
            .templates
            .get_mut(&key(spec))
            .and_then(|t| t.ready.pop_front());
        if pod.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.refill(backend, spec);
        pod
    }

    /// A started sandbox, if one is ready; either way more are made.
    pub(crate) fn take_sandbox(self: &Arc<Self>, backend: &DockerBackend) -> Option<DockerPod> {
        self.take(backend, &sandbox_spec())
    }

    fn size_of(&self, spec: &PodSpec) -> usize {
        if spec.containers.is_empty() {
            self.sandboxes
        } else {
            self.size
        }
    }

    /// Starts the template's filler unless it runs, the pool is full or closed.
    pub(crate) fn refill(self: &Arc<Self>, backend: &DockerBackend, spec: &PodSpec) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let k = key(spec);
        let size = self.size_of(spec);
        if size == 0 {
            return;
        }
        // Held until the filler is in the set: `drain` closes the pool under this lock, so a
        // filler is either refused or joined by it, never started behind its back.
        let mut fillers = self.fillers.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut state = self.state();
            if state.closed {
                return;
            }
            let t = state.templates.entry(k.clone()).or_insert(Template {
                ready: VecDeque::new(),
                filling: false,
            });
            if t.filling || t.ready.len() >= size {
                return;
            }
            t.filling = true;
        }
        // The filler's pods report no progress (nobody waits for them) and never come
        // from a pool.
        let maker = DockerBackend {
            pool: None,
            ..backend.clone()
        };
        let pool = self.clone();
        let spec = spec.clone();
        let fill = async move {
            loop {
                let made = maker
                    .provision_cold(&spec, POOL_BUILD, Some(&pool.id))
                    .await;
                #[allow(clippy::large_enum_variant)] // a local decision value, never stored
                enum Next {
                    More,
                    Done,
                    Discard(DockerPod),
                }
                let next = {
                    let mut state = pool.state();
                    let closed = state.closed;
                    match (state.templates.get_mut(&k), made) {
                        (None, Ok(pod)) => Next::Discard(pod),
                        (None, Err(_)) => Next::Done,
                        (Some(t), Ok(pod)) if !closed => {
                            t.ready.push_back(pod);
                            if t.ready.len() >= size {
                                t.filling = false;
                                Next::Done
                            } else {
                                Next::More
                            }
                        }
                        (Some(t), Ok(pod)) => {
                            t.filling = false;
                            Next::Discard(pod)
                        }
                        (Some(t), Err(e)) => {
                            // The next take tries again; no loop against a broken template.
                            t.filling = false;
                            tracing::warn!(error = %e, "the warm pool could not make a pod");
                            Next::Done
                        }
                    }
                };
                match next {
                    Next::More => continue,
                    Next::Done => return,
                    Next::Discard(pod) => {
                        let _ = pod.teardown().await;
                        return;
                    }
                }
            }
        };
        fillers.spawn_on(fill, &rt);
    }

    /// Stops filling, waits for the fillers and removes every ready pod.
    pub(crate) async fn drain(&self) -> Result<(), BackendError> {
        let mut fillers = {
            let mut set = self.fillers.lock().unwrap_or_else(|e| e.into_inner());
            self.state().closed = true;
            std::mem::take(&mut *set)
        };
        while fillers.join_next().await.is_some() {}
        let pods: Vec<DockerPod> = self
            .state()
            .templates
            .values_mut()
            .flat_map(|t| t.ready.drain(..))
            .collect();
        let mut first_error = None;
        for r in futures::future::join_all(pods.iter().map(|p| p.teardown())).await {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
