//! Human and Graphviz renderings of a [`JobGraph`].

use crate::model::JobGraph;

pub fn text(graph: &JobGraph) -> String {
    format!("{graph:?}\n")
}

pub fn dot(graph: &JobGraph) -> String {
    format!("digraph {{ /* {} */ }}\n", graph.file)
}
