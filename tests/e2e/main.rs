mod layering;
mod run_pipelines;
