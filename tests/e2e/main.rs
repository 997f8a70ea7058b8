
mod run_pipelines;
