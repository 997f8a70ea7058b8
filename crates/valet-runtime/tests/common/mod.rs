//! Runs pipelines for the tests: on the local backend, events collected.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use valet_runtime::{BuildOutcome, CancellationToken, Event, RunOptions, Stream};

pub struct Run {
    pub outcome: BuildOutcome,
    pub events: Vec<Event>,
}

impl Run {
    /// Everything printed (command output and pipeline messages), in order.
    pub fn output(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Output { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Output of one stream only.
    pub fn stream(&self, s: Stream) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Output { text, stream, .. } if *stream == s => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn stage_result(&self, name: &str) -> Option<valet_runtime::BuildResult> {
        self.outcome
            .stages
            .iter()
            .find(|s| s.path.last().map(String::as_str) == Some(name))
            .map(|s| s.result)
    }
}

pub async fn run_with(text: &str, opts: RunOptions) -> Run {
    let parsed = valet_dsl::parse(text);
    assert!(
        !parsed.has_errors(),
        "the test pipeline does not parse: {:?}",
        parsed.diagnostics
    );
    let script = parsed.script.expect("a script");
    let source = valet_dsl::SourceFile::new("test.groovy", text);
    let plan = valet_plan::plan(&script, &source);
    let backend = valet_local::LocalBackend::temporary();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let outcome = valet_runtime::run(
        &script,
        &source,
        &plan.graph,
        &backend,
        &opts,
        tx,
        CancellationToken::new(),
    )
    .await;
    let events = collector.await.expect("collector");
    Run { outcome, events }
}

pub async fn run(text: &str) -> Run {
    run_with(
        text,
        RunOptions {
            kill_grace: Duration::from_millis(500),
            ..RunOptions::default()
        },
    )
    .await
}
