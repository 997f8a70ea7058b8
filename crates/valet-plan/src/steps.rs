//! The table of known steps and their parameters, and the checks made against it.
//!
//! A step takes its first parameter by position or by name, the rest by name, as Jenkins
//! does. A literal of the wrong kind is an error; a value known only at run time is
//! checked when it runs.

/// The kind of value a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Bool,
    /// A number; a string of digits is accepted, as Jenkins coerces it.
    Int,
    List,
    Map,
    Closure,
    Any,
}

impl Ty {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Bool => "`true` or `false`",
            Ty::Int => "a number",
            Ty::List => "a list",
            Ty::Map => "a map",
            Ty::Closure => "a closure",
            Ty::Any => "a value",
        }
    }
}

/// What a step is, for the planner and the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Runs in the workspace of a pod: needs an enclosing `node`.
    Workspace,
    /// Runs anywhere (`echo`, `error`, `sleep`, …).
    Anywhere,
    /// Builds a value inside another step's arguments (`containerTemplate`, `envVar`, `string`).
    Value,
    /// Refused on Linux pods.
    Windows,
}

pub(crate) struct StepDef {
    pub(crate) name: &'static str,
    pub(crate) params: &'static [(&'static str, Ty)],
    /// Takes a closure body.
    pub(crate) body: Body,
    pub(crate) kind: Kind,
    /// Accepts several positional arguments (`values 'a', 'b'`).
    pub(crate) variadic: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    No,
    Optional,
    Required,
}

use Body::{No, Optional, Required};
use Kind::{Anywhere, Value, Windows, Workspace};
use Ty::*;

macro_rules! steps {
    ($( $name:literal $kind:ident $body:ident $($var:ident)? => [ $( $p:literal : $t:ident ),* $(,)? ] ;)*) => {
        &[ $( StepDef { name: $name, kind: $kind, body: $body, variadic: steps!(@v $($var)?), params: &[ $( ($p, $t) ),* ] } ),* ]
    };
    (@v) => { false };
    (@v variadic) => { true };
}

pub(crate) static STEPS: &[StepDef] = steps! {
    // Pods and agents.
    "podTemplate" Anywhere Optional => ["label": Str, "name": Str, "containers": List, "volumes": List, "yaml": Str,
        "yamlMergeStrategy": Any, "inheritFrom": Str, "namespace": Str, "serviceAccount": Str, "nodeSelector": Str,
        "runAsUser": Any, "runAsGroup": Any, "envVars": List, "activeDeadlineSeconds": Int, "idleMinutes": Int,
        "podRetention": Any, "workspaceVolume": Any, "imagePullSecrets": List, "annotations": List, "instanceCap": Int,
        "cloud": Str, "cloudName": Str, "podAffinities": List, "affinity": Any, "tolerations": List, "showRawYaml": Bool, "slaveConnectTimeout": Int, "supplementalGroups": Str, "nodeUsageMode": Str,
        "hostNetwork": Bool, "agentContainer": Str, "agentInjection": Bool, "serviceAccountName": Str, "containerCap": Int];
    "containerTemplate" Value No => ["name": Str, "image": Str, "command": Any, "args": Any, "ttyEnabled": Bool,
        "workingDir": Str, "alwaysPullImage": Bool, "privileged": Bool, "runAsUser": Any, "runAsGroup": Any,
        "resourceRequestCpu": Str, "resourceLimitCpu": Str, "resourceRequestMemory": Str, "resourceLimitMemory": Str,
        "resourceRequestEphemeralStorage": Str, "resourceLimitEphemeralStorage": Str, "envVars": List, "ports": List,
        "livenessProbe": Any, "shell": Str];
    "envVar" Value No => ["key": Str, "value": Any];
    "containerEnvVar" Value No => ["key": Str, "value": Any];
    "podEnvVar" Value No => ["key": Str, "value": Any];
    "secretEnvVar" Value No => ["key": Str, "secretName": Str, "secretKey": Str, "optional": Bool];
    "portMapping" Value No => ["name": Str, "containerPort": Int, "hostPort": Int];
    "emptyDirVolume" Value No => ["mountPath": Str, "memory": Bool];
    "hostPathVolume" Value No => ["hostPath": Str, "mountPath": Str, "readOnly": Bool];
    "persistentVolumeClaim" Value No => ["claimName": Str, "mountPath": Str, "readOnly": Bool];
    "secretVolume" Value No => ["secretName": Str, "mountPath": Str, "defaultMode": Str, "optional": Bool];
    "configMapVolume" Value No => ["configMapName": Str, "mountPath": Str, "subPath": Str, "optional": Bool];
    "nfsVolume" Value No => ["serverAddress": Str, "serverPath": Str, "mountPath": Str, "readOnly": Bool];
    "dynamicPVC" Value No => ["requestsSize": Str, "storageClassName": Str, "accessModes": Str, "mountPath": Str];
    "emptyDirWorkspaceVolume" Value No => ["memory": Bool];
    "dynamicPVCWorkspaceVolume" Value No => ["requestsSize": Str, "storageClassName": Str, "accessModes": Str];
    "hostPathWorkspaceVolume" Value No => ["hostPath": Str];
    "persistentVolumeClaimWorkspaceVolume" Value No => ["claimName": Str, "readOnly": Bool];
    "containerLivenessProbe" Value No => ["execArgs": Str, "initialDelaySeconds": Int, "timeoutSeconds": Int, "failureThreshold": Int, "periodSeconds": Int, "successThreshold": Int];
    "nonresumable" Value No => [];
    "kubernetesAgent" Value No => ["handleNonKubernetes": Bool];
    "podAffinity" Value No => ["key": Str, "value": Str, "topologyKey": Str, "podAffinityTerms": Any, "weightedPodAffinityTerms": Any,
        "isRequiredDuringSchedulingIgnoredDuringExecution": Bool, "isPreferredDuringSchedulingIgnoredDuringExecution": Bool];
    "podAntiAffinity" Value No => ["key": Str, "value": Str, "topologyKey": Str, "podAffinityTerms": Any, "weightedPodAffinityTerms": Any,
        "isRequiredDuringSchedulingIgnoredDuringExecution": Bool, "isPreferredDuringSchedulingIgnoredDuringExecution": Bool];
    "nodeAffinity" Value No => ["key": Str, "value": Str, "operator": Str, "nodeSelectorTerms": Any, "preferredTerms": Any,
        "isRequiredDuringSchedulingIgnoredDuringExecution": Bool, "isPreferredDuringSchedulingIgnoredDuringExecution": Bool];
    "podAffinityTerm" Value No => ["labelSelector": Any, "topologyKey": Str, "namespaces": List];
    "weightedPodAffinityTerm" Value No => ["weight": Int, "podAffinityTerm": Any];
    "nodeSelectorTerm" Value No => ["matchExpressions": List];
    "nodeSelectorRequirement" Value No => ["key": Str, "operator": Str, "values": List];
    "labelSelector" Value No => ["matchLabels": Any, "matchExpressions": List];
    "labelSelectorRequirement" Value No => ["key": Str, "operator": Str, "values": List];
    "withDockerRegistry" Anywhere Required => ["url": Str, "credentialsId": Str, "toolName": Str, "registry": Map];
    "withDockerServer" Anywhere Required => ["uri": Str, "credentialsId": Str];
    "withKubeConfig" Workspace Required => ["credentialsId": Str, "serverUrl": Str, "caCertificate": Str, "clusterName": Str, "contextName": Str, "namespace": Str];
    // The Kubernetes plugin's older name for a kubeconfig around a body.
    "kubeconfig" Workspace Required => ["credentialsId": Str, "serverUrl": Str, "caCertificate": Str];
    "withKubeCredentials" Workspace Required => ["kubectlCredentials": List];
    "splitTests" Anywhere No => ["parallelism": Any, "generateInclusions": Bool, "estimateTestsFromFiles": Bool];
    "count" Value No => ["size": Int];
    "podAnnotation" Value No => ["key": Str, "value": Str];
    "podLabel" Value No => ["key": Str, "value": Str];
    "never" Value No => [];
    "always" Value No => [];
    "onFailure" Value No => [];
    "merge" Value No => [];
    "override" Value No => [];
    "node" Anywhere Optional => ["label": Str];
    "container" Workspace Required => ["name": Str, "shell": Str];
    "stage" Anywhere Optional => ["name": Str, "concurrency": Int];
    "parallel" Anywhere No => ["failFast": Bool];
    // Shell steps.
    "sh" Workspace No => ["script": Str, "returnStdout": Bool, "returnStatus": Bool, "label": Str, "encoding": Str];
    "bat" Windows No => ["script": Str, "returnStdout": Bool, "returnStatus": Bool, "label": Str, "encoding": Str];
    "powershell" Windows No => ["script": Str, "returnStdout": Bool, "returnStatus": Bool, "label": Str, "encoding": Str];
    "pwsh" Windows No => ["script": Str, "returnStdout": Bool, "returnStatus": Bool, "label": Str, "encoding": Str];
    // Source control.
    "checkout" Workspace No => ["scm": Any, "poll": Bool, "changelog": Bool];
    "git" Workspace No => ["url": Str, "branch": Str, "credentialsId": Str, "changelog": Bool, "poll": Bool];
    "scmGit" Value No => ["branches": List, "userRemoteConfigs": List, "extensions": List, "browser": Any, "gitTool": Str];
    "GitSCM" Value No => ["branches": List, "userRemoteConfigs": List, "extensions": List];
    // Basic steps.
    "echo" Anywhere No => ["message": Any];
    "error" Anywhere No => ["message": Str];
    "sleep" Anywhere No => ["time": Int, "unit": Str];
    "pwd" Workspace No => ["tmp": Bool];
    "dir" Workspace Required => ["path": Str];
    "deleteDir" Workspace No => [];
    "withEnv" Anywhere Required => ["overrides": List];
    "timeout" Anywhere Required => ["time": Int, "unit": Str, "activity": Bool];
    "retry" Anywhere Required => ["count": Int, "conditions": List, "errorConditions": List];
    "waitUntil" Anywhere Required => ["initialRecurrencePeriod": Int, "quiet": Bool];
    "catchError" Anywhere Required => ["buildResult": Str, "stageResult": Str, "message": Str, "catchInterruptions": Bool];
    "warnError" Anywhere Required => ["message": Str, "catchInterruptions": Bool];
    "unstable" Anywhere No => ["message": Str];
    "isUnix" Anywhere No => [];
    "script" Anywhere Required => [];
    // Files and artifacts.
    "writeFile" Workspace No => ["file": Str, "text": Any, "encoding": Str];
    "readFile" Workspace No => ["file": Str, "encoding": Str];
    "fileExists" Workspace No => ["file": Str];
    "findFiles" Workspace No => ["glob": Str, "excludes": Str];
    "archiveArtifacts" Workspace No => ["artifacts": Str, "allowEmptyArchive": Bool, "fingerprint": Bool, "excludes": Str,
        "onlyIfSuccessful": Bool, "caseSensitive": Bool, "defaultExcludes": Bool, "followSymlinks": Bool];
    "archive" Workspace No => ["includes": Str, "excludes": Str];
    "stash" Workspace No => ["name": Str, "includes": Str, "excludes": Str, "allowEmpty": Bool, "useDefaultExcludes": Bool];
    "unstash" Workspace No => ["name": Str];
    "junit" Workspace No => ["testResults": Str, "allowEmptyResults": Bool, "keepLongStdio": Bool, "skipPublishingChecks": Bool,
        "healthScaleFactor": Any, "skipMarkingBuildUnstable": Bool];
    "readYaml" Workspace No => ["file": Str, "text": Str];
    "readJSON" Workspace No => ["file": Str, "text": Str, "returnPojo": Bool];
    "writeJSON" Workspace No => ["file": Str, "json": Any, "pretty": Int, "returnText": Bool];
    "writeYaml" Workspace No => ["file": Str, "data": Any, "overwrite": Bool, "datas": List, "returnText": Bool];
    "readProperties" Workspace No => ["file": Str, "text": Str, "defaults": Map];
    "cleanWs" Workspace No => ["deleteDirs": Bool, "disableDeferredWipeout": Bool, "notFailBuild": Bool, "patterns": List,
        "cleanWhenSuccess": Bool, "cleanWhenFailure": Bool, "cleanWhenAborted": Bool, "cleanWhenUnstable": Bool, "cleanWhenNotBuilt": Bool];
    "load" Workspace No => ["path": Str];
    // Credentials.
    "withCredentials" Anywhere Required => ["bindings": List];
    "usernamePassword" Value No => ["credentialsId": Str, "usernameVariable": Str, "passwordVariable": Str];
    "usernameColonPassword" Value No => ["credentialsId": Str, "variable": Str];
    "string" Value No => ["credentialsId": Str, "variable": Str, "name": Str, "defaultValue": Any, "description": Str, "trim": Bool, "value": Any];
    "file" Value No => ["credentialsId": Str, "variable": Str, "name": Str, "description": Str];
    "sshUserPrivateKey" Value No => ["credentialsId": Str, "keyFileVariable": Str, "passphraseVariable": Str, "usernameVariable": Str];
    "certificate" Value No => ["credentialsId": Str, "keystoreVariable": Str, "passwordVariable": Str, "aliasVariable": Str];
    "credentials" Value No => ["id": Str];
    "sshagent" Anywhere Required => ["credentials": List, "ignoreMissing": Bool];
    // Wrappers and utilities.
    "ansiColor" Anywhere Required => ["colorMapName": Str];
    "timestamps" Anywhere Optional => [];
    "containerLog" Workspace No => ["name": Str, "returnLog": Bool, "tailingLines": Int, "sinceSeconds": Int, "limitBytes": Int];
    "input" Anywhere Optional => ["message": Str, "id": Str, "ok": Str, "parameters": List, "submitter": Str, "submitterParameter": Str];
    "build" Anywhere No => ["job": Str, "parameters": List, "wait": Bool, "propagate": Bool, "quietPeriod": Int];
    "lock" Anywhere Required => ["resource": Str, "label": Str, "quantity": Int, "variable": Str, "inversePrecedence": Bool, "skipIfLocked": Bool];
    "milestone" Anywhere No => ["ordinal": Int, "label": Str];
    "mail" Anywhere No => ["to": Str, "subject": Str, "body": Str, "cc": Str, "bcc": Str, "from": Str, "replyTo": Str, "mimeType": Str, "charset": Str];
    "emailext" Anywhere No => ["to": Str, "subject": Str, "body": Str, "recipientProviders": List, "attachLog": Bool, "mimeType": Str, "attachmentsPattern": Str];
    "slackSend" Anywhere No => ["channel": Str, "message": Str, "color": Str, "teamDomain": Str, "tokenCredentialId": Str, "failOnError": Bool];
    "fingerprint" Workspace No => ["targets": Str];
    "publishHTML" Workspace No => ["target": Map];
    "step" Anywhere No => ["delegate": Any];
    "tool" Anywhere No => ["name": Str, "type": Str];
    "semaphore" Anywhere No => ["id": Str];
    "getContext" Anywhere No => ["type": Any];
    // Job properties.
    "properties" Anywhere No => ["properties": List];
    "parameters" Value Optional => ["parameterDefinitions": List];
    "buildDiscarder" Value No => ["strategy": Any];
    "logRotator" Value No => ["numToKeepStr": Any, "daysToKeepStr": Any, "artifactNumToKeepStr": Any, "artifactDaysToKeepStr": Any];
    "disableConcurrentBuilds" Value No => ["abortPrevious": Bool];
    "pipelineTriggers" Value No => ["triggers": List];
    "cron" Value No => ["spec": Str];
    "pollSCM" Value No => ["scmpoll_spec": Str, "ignorePostCommitHooks": Bool];
    "upstream" Value No => ["upstreamProjects": Str, "threshold": Any];
    "githubPush" Value No => [];
    "booleanParam" Value No => ["name": Str, "defaultValue": Bool, "description": Str, "value": Bool];
    "choice" Value No => ["name": Str, "choices": Any, "description": Str];
    "text" Value No => ["name": Str, "defaultValue": Str, "description": Str];
    "password" Value No => ["name": Str, "defaultValue": Str, "description": Str];
    "durabilityHint" Value No => ["hint": Str];
    "skipDefaultCheckout" Value No => ["value": Bool];
    "skipStagesAfterUnstable" Value No => [];
    "preserveStashes" Value No => ["buildCount": Int];
    "quietPeriod" Value No => ["quietPeriod": Int];
    "checkoutToSubdirectory" Value No => ["path": Str];
    "newContainerPerStage" Value No => [];
    "parallelsAlwaysFailFast" Value No => [];
    "overrideIndexTriggers" Value No => ["value": Bool];
    "disableResume" Value No => [];
    "rateLimitBuilds" Value No => ["throttle": Map];
    "copyArtifactPermission" Value No => ["projectNames": Str];
    "office365ConnectorWebhooks" Value No => ["webhooks": List];
};

/// `timeout([time: 10, unit: 'MINUTES'])`: Groovy passes a lone map as the named arguments.
/// Returns the call with the map's entries as named arguments, when that reading applies.
pub(crate) fn named_from_map(call: &valet_dsl::ast::Call) -> Option<valet_dsl::ast::Call> {
    use valet_dsl::ast::{Arg, ExprKind, Ident, MapKey};
    let def = find(&call.name.name)?;
    if call.target.is_some()
        || !matches!(def.params.first(), Some((_, Ty::Int | Ty::Str | Ty::Bool)))
    {
        return None;
    }
    let [Arg::Positional(e)] = call.args.as_slice() else {
        return None;
    };
    let ExprKind::Map { entries } = &e.kind else {
        return None;
    };
    let mut args = Vec::new();
    for en in entries {
        let MapKey::Name { name, span } = &en.key else {
            return None;
        };
        args.push(Arg::Named {
            name: Ident {
                name: name.clone(),
                span: *span,
            },
            value: en.value.clone(),
        });
    }
    Some(valet_dsl::ast::Call {
        args,
        ..call.clone()
    })
}

/// The parameters a step cannot run without.
pub(crate) fn required(name: &str) -> &'static [&'static str] {
    match name {
        "sh" | "bat" | "powershell" | "pwsh" => &["script"],
        "echo" | "error" => &["message"],
        "readFile" | "fileExists" => &["file"],
        "writeFile" => &["file", "text"],
        "dir" => &["path"],
        "sleep" | "timeout" => &["time"],
        "stash" | "unstash" => &["name"],
        "archiveArtifacts" => &["artifacts"],
        "junit" => &["testResults"],
        "build" => &["job"],
        "load" => &["path"],
        _ => &[],
    }
}

/// The named arguments of a call to `step` that it has no parameter for (Jenkins warns and
/// ignores them).
pub fn unknown_parameters<'a>(
    step: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let Some(def) = find(step) else {
        return Vec::new();
    };
    if step == "parallel" {
        return Vec::new();
    }
    names
        .into_iter()
        .filter(|n| !n.starts_with('$') && !def.params.iter().any(|(p, _)| p == n))
        .collect()
}

pub(crate) fn find(name: &str) -> Option<&'static StepDef> {
    STEPS.iter().find(|s| s.name == name)
}

/// The known name closest to `name`, when it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = name.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = levenshtein(&lower, &c.to_lowercase());
        let limit = (name.chars().count().max(c.chars().count()) / 3).clamp(1, 3);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_names_only() {
        let names = STEPS.iter().map(|s| s.name);
        assert_eq!(did_you_mean("shh", names.clone()), Some("sh"));
        assert_eq!(
            did_you_mean("archiveArtifact", names.clone()),
            Some("archiveArtifacts")
        );
        assert_eq!(
            did_you_mean("withCredential", names.clone()),
            Some("withCredentials")
        );
        assert_eq!(did_you_mean("kubernetesDeploy", names), None);
    }

    #[test]
    fn step_names_are_unique() {
        for (i, s) in STEPS.iter().enumerate() {
            assert!(
                STEPS[i + 1..].iter().all(|t| t.name != s.name),
                "{} twice",
                s.name
            );
        }
    }
}
