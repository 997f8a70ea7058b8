//! `valet-kube`: the Kubernetes backend.
//!
//! What exists: the Pod object of a resolved pod spec ([`manifest::pod`]), combined with the
//! template's raw YAML the way the Jenkins Kubernetes plugin combines it ([`merge`]), and
//! the manifests of a whole plan as YAML ([`manifests_yaml`], behind
//! `valet plan --format k8s`). Pure: no client, no I/O.

pub mod manifest;
pub mod merge;

pub use manifest::{ManifestError, ManifestOptions};
use valet_backend::pod::PodSpec;

/// The Pod manifests of `pods` as one YAML stream (`---` between documents).
pub fn manifests_yaml(pods: &[(PodSpec, ManifestOptions)]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for (spec, options) in pods {
        let pod = manifest::pod(spec, options)?;
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(&pod).expect("a JSON value always serialises as YAML"),
        );
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
