//! The typed event stream a build emits: what the CLI renders and the controller stores.
//!
//! Every output chunk and message is masked for secrets before it becomes an event.

use serde::Serialize;

/// A build's (or stage's, or step's) result, as Jenkins has them, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildResult {
    Success,
    Unstable,
    Failure,
    NotBuilt,
    Aborted,
}

impl BuildResult {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildResult::Success => "SUCCESS",
            BuildResult::Unstable => "UNSTABLE",
            BuildResult::Failure => "FAILURE",
            BuildResult::NotBuilt => "NOT_BUILT",
            BuildResult::Aborted => "ABORTED",
        }
    }

    pub fn parse(s: &str) -> Option<BuildResult> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "SUCCESS" => BuildResult::Success,
            "UNSTABLE" => BuildResult::Unstable,
            "FAILURE" => BuildResult::Failure,
            "NOT_BUILT" => BuildResult::NotBuilt,
            "ABORTED" => BuildResult::Aborted,
            _ => return None,
        })
    }

    /// The worse of two results (a result only gets worse, as in Jenkins).
    pub fn combine(self, other: BuildResult) -> BuildResult {
        self.max(other)
    }
}

impl std::fmt::Display for BuildResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where something happens: the job (pod), parallel branch, stage and container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Place {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Parallel branch names from the outermost, joined by `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// A message of the pipeline itself (`echo`, `error`, retry notes).
    Log,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeLevel {
    Info,
    Warning,
}

/// One event of a build. Durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    BuildStarted {
        build: String,
        number: u64,
        job_name: String,
        file: String,
        backend: String,
    },
    BuildFinished {
        result: BuildResult,
        duration_ms: u64,
    },
    JobStarted {
        job: String,
        pod: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        containers: Vec<String>,
        workspace: String,
        #[serde(flatten)]
        place: Place,
    },
    JobFinished {
        job: String,
        result: BuildResult,
        duration_ms: u64,
    },
    /// A stage, or a branch of `parallel` (`branch: true`).
    StageStarted {
        name: String,
        /// Enclosing stages and branches, outermost first, this one last.
        path: Vec<String>,
        parallel_branch: bool,
        #[serde(flatten)]
        place: Place,
    },
    StageFinished {
        name: String,
        path: Vec<String>,
        parallel_branch: bool,
        result: BuildResult,
        /// The stage did not run (a `when` that was false, an earlier failure).
        skipped: bool,
        duration_ms: u64,
        #[serde(flatten)]
        place: Place,
    },
    StepStarted {
        id: u64,
        step: String,
        /// A one-line description: the script of `sh`, the message of `echo`, …
        summary: String,
        #[serde(flatten)]
        place: Place,
    },
    StepFinished {
        id: u64,
        step: String,
        result: BuildResult,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        duration_ms: u64,
        #[serde(flatten)]
        place: Place,
    },
    Output {
        #[serde(skip_serializing_if = "Option::is_none")]
        step: Option<u64>,
        stream: Stream,
        text: String,
        #[serde(flatten)]
        place: Place,
    },
    Notice {
        level: NoticeLevel,
        message: String,
    },
    /// A job's pod reached a phase of its start (queued → placed → created → started →
    /// agent connected → first step byte), `at_ms` after the runtime asked for it.
    PodPhase {
        job: String,
        pod: String,
        backend: String,
        phase: valet_backend::PodPhase,
        at_ms: u64,
        /// Since the previous phase.
        took_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Something a person watching a pod start wants to see (a container being created,
    /// an image pulled).
    PodProgress {
        job: String,
        pod: String,
        message: String,
    },
}

impl Place {
    fn mask(&mut self, mask: &impl Fn(&str) -> String) {
        for s in [&mut self.branch, &mut self.stage].into_iter().flatten() {
            *s = mask(s);
        }
    }
}

impl Event {
    /// Applies `mask` to every text of the event a pipeline can put a secret in: stage and
    /// branch names (which name the stage rows, the branch prefixes and the summary), labels,
    /// step summaries and errors, messages. Output text is masked where it is read.
    pub fn mask_texts(&mut self, mask: impl Fn(&str) -> String) {
        let mask = &mask;
        let all = |v: &mut Vec<String>| v.iter_mut().for_each(|s| *s = mask(s));
        match self {
            Event::BuildStarted { .. }
            | Event::BuildFinished { .. }
            | Event::JobFinished { .. }
            | Event::PodPhase { .. } => {}
            Event::JobStarted { label, place, .. } => {
                if let Some(l) = label {
                    *l = mask(l);
                }
                place.mask(mask);
            }
            Event::StageStarted {
                name, path, place, ..
            }
            | Event::StageFinished {
                name, path, place, ..
            } => {
                *name = mask(name);
                all(path);
                place.mask(mask);
            }
            Event::StepStarted { summary, place, .. } => {
                *summary = mask(summary);
                place.mask(mask);
            }
            Event::StepFinished { error, place, .. } => {
                if let Some(e) = error {
                    *e = mask(e);
                }
                place.mask(mask);
            }
            Event::Output { place, .. } => place.mask(mask),
            Event::Notice { message, .. } | Event::PodProgress { message, .. } => {
                *message = mask(message)
            }
        }
    }
}
