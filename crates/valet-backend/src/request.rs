//! What a backend is asked for: a resolved pod and who wants it.

use std::sync::Arc;
use std::time::Instant;

use crate::pod::{Demand, PodSpec};

/// Which build a pod belongs to: for labels on what the backend makes, for fairness
/// between repositories, and for messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildIdentity {
    /// Unique among the builds of this valet process or controller (`b-42`, `run-1a2b`).
    pub id: String,
    pub number: u64,
    /// The repository the pipeline came from (the controller's name for it), if any.
    pub repository: Option<String>,
    /// The pipeline's job name (`JOB_NAME`) and file.
    pub pipeline: String,
    pub file: String,
}

/// A request for one job's pod.
#[derive(Clone)]
pub struct ProvisionRequest {
    pub spec: PodSpec,
    /// The job of the plan (`job-1`).
    pub job: String,
    /// The `node` label expression (`'linux && docker'`), as written.
    pub label: Option<String>,
    pub build: BuildIdentity,
    /// The summed resource requests of the pod's containers.
    pub demand: Demand,
    /// Where the backend reports the pod's progress.
    pub events: PodEvents,
}

impl ProvisionRequest {
    /// A request for `spec` with nothing else known (tests, tools).
    pub fn new(spec: PodSpec, build_id: &str) -> ProvisionRequest {
        ProvisionRequest {
            demand: spec.demand(),
            spec,
            job: "job-1".into(),
            label: None,
            build: BuildIdentity {
                id: build_id.to_string(),
                ..Default::default()
            },
            events: PodEvents::none(),
        }
    }

    pub fn with_events(mut self, events: PodEvents) -> ProvisionRequest {
        self.events = events;
        self
    }
}

impl std::fmt::Debug for ProvisionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionRequest")
            .field("spec", &self.spec)
            .field("job", &self.job)
            .field("label", &self.label)
            .field("build", &self.build)
            .field("demand", &self.demand)
            .finish_non_exhaustive()
    }
}

/// The phases of a pod's start, in order. Each is reported once, when it is reached;
/// a backend that has no such step (the local backend places nothing) reports it with
/// the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PodPhase {
    /// The runtime asked for the pod.
    Queued,
    /// A place was chosen (a host, a node, a warm pod).
    Placed,
    /// Every container exists.
    Created,
    /// Every container runs.
    Started,
    /// Every container's agent answers: steps can run.
    AgentConnected,
    /// The first byte of the first step's output arrived.
    FirstStepByte,
}

impl PodPhase {
    pub const ALL: [PodPhase; 6] = [
        PodPhase::Queued,
        PodPhase::Placed,
        PodPhase::Created,
        PodPhase::Started,
        PodPhase::AgentConnected,
        PodPhase::FirstStepByte,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Queued => "queued",
            PodPhase::Placed => "placed",
            PodPhase::Created => "created",
            PodPhase::Started => "started",
            PodPhase::AgentConnected => "agent_connected",
            PodPhase::FirstStepByte => "first_step_byte",
        }
    }
}

/// Something that happened while a pod started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    /// A phase was reached (at the instant given).
    Phase {
        pod: String,
        phase: PodPhase,
        at: Instant,
        /// Where, for `Placed` (a host, a node, `warm pool`).
        detail: Option<String>,
    },
    /// A container is being created (`sandbox` is a network holder).
    Creating {
        pod: String,
        container: String,
        image: String,
    },
    /// An image is missing and being pulled.
    Pulling { image: String },
    /// A container runs.
    ContainerStarted { pod: String, container: String },
}

/// Where a backend reports [`PodEvent`]s: cheap to clone, never blocks, and does nothing
/// when nobody listens.
#[derive(Clone, Default)]
pub struct PodEvents(Option<Arc<dyn Fn(PodEvent) + Send + Sync>>);

impl PodEvents {
    pub fn none() -> PodEvents {
        PodEvents(None)
    }

    pub fn new(f: impl Fn(PodEvent) + Send + Sync + 'static) -> PodEvents {
        PodEvents(Some(Arc::new(f)))
    }

    pub fn emit(&self, e: PodEvent) {
        if let Some(f) = &self.0 {
            f(e);
        }
    }

    /// Reports that `pod` reached `phase` now.
    pub fn phase(&self, pod: &str, phase: PodPhase) {
        self.phase_at(pod, phase, None);
    }

    pub fn phase_at(&self, pod: &str, phase: PodPhase, detail: Option<String>) {
        if self.0.is_some() {
            self.emit(PodEvent::Phase {
                pod: pod.to_string(),
                phase,
                at: Instant::now(),
                detail,
            });
        }
    }
}

impl std::fmt::Debug for PodEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "PodEvents(listening)"
        } else {
            "PodEvents(none)"
        })
    }
}
