
mod run_pipelines;
mod layering;
