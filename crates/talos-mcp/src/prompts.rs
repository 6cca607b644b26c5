//! Prompts: guided workflows that name the tools to use and the order.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{PromptMessage, Role};
use rmcp::{prompt, prompt_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::server::TalosMcp;

/// Arguments of the node diagnosis prompt.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub(crate) struct NodeArgs {
    /// The node (address or hostname).
    pub(crate) node: String,
    /// A service to focus on (e.g. etcd, kubelet), if one is suspected.
    #[serde(default)]
    pub(crate) service: Option<String>,
    /// talosconfig context (default: the current one).
    #[serde(default)]
    pub(crate) context: Option<String>,
}

/// Arguments naming a cluster.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub(crate) struct ClusterArgs {
    /// talosconfig context (default: the current one).
    #[serde(default)]
    pub(crate) context: Option<String>,
}

/// Arguments of the upgrade planning prompt.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub(crate) struct UpgradeArgs {
    /// Target Talos version, e.g. v1.12.0.
    pub(crate) talos_version: String,
    /// Target Kubernetes version, if it changes too.
    #[serde(default)]
    pub(crate) kubernetes_version: Option<String>,
    /// talosconfig context (default: the current one).
    #[serde(default)]
    pub(crate) context: Option<String>,
}

/// Arguments of the config change prompt.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub(crate) struct ConfigChangeArgs {
    /// The node to change.
    pub(crate) node: String,
    /// What should change, in words.
    pub(crate) change: String,
    /// talosconfig context (default: the current one).
    #[serde(default)]
    pub(crate) context: Option<String>,
}

/// Arguments of the fleet review prompt.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub(crate) struct FleetArgs {
    /// Contexts to review, comma-separated (default: every served context).
    #[serde(default)]
    pub(crate) contexts: Option<String>,
    /// The node whose configuration is the standard, as context/node (default: the first that answers).
    #[serde(default)]
    pub(crate) reference: Option<String>,
}

fn ctx(context: &Option<String>) -> String {
    match context {
        Some(c) => format!(" Use context `{c}` in every call."),
        None => String::new(),
    }
}

fn user(text: String) -> Vec<PromptMessage> {
    vec![PromptMessage::new_text(Role::User, text)]
}

#[prompt_router(vis = "pub(crate)")]
impl TalosMcp {
    /// Diagnose one node.
    #[prompt(
        name = "diagnose_node",
        description = "Step-by-step diagnosis of one Talos node: reachability, services, resources, logs and kernel messages."
    )]
    async fn diagnose_node(&self, Parameters(a): Parameters<NodeArgs>) -> Vec<PromptMessage> {
        let node = &a.node;
        let focus = a
            .service
            .as_ref()
            .map(|s| format!(" The service `{s}` is suspected: start step 4 with it."))
            .unwrap_or_default();
        user(format!(
            "Diagnose Talos node {node}.{focus}{c}\n\
             1. talos_version with nodes=[\"{node}\"] — is it reachable, which release? Stop and report if it fails (the error kind says why).\n\
             2. talos_services for the node — list services that are not Running or not healthy.\n\
             3. talos_system_stats, then talos_memory and talos_mounts — look for high load, memory pressure, full filesystems.\n\
             4. For each unhealthy service: talos_service_logs with service=<id>, tail=200, then grep=\"error\" to find causes.\n\
             5. talos_dmesg with level=\"warning\" — hardware, disk or network errors.\n\
             6. talos_events with tail=50 — recent reboots, failed sequences.\n\
             Summarise: the symptom, the most likely cause with evidence (quote log lines), and the next step. Do not change anything.",
            c = ctx(&a.context)
        ))
    }

    /// Review cluster health.
    #[prompt(
        name = "cluster_health_review",
        description = "Review the health of a whole Talos cluster: health check, etcd, versions, services and resources on every node."
    )]
    async fn cluster_health_review(
        &self,
        Parameters(a): Parameters<ClusterArgs>,
    ) -> Vec<PromptMessage> {
        user(format!(
            "Review the health of the Talos cluster.{c}\n\
             1. talos_health — which checks fail?\n\
             2. talos_etcd_status — verdict, leader, quorum, alarms, DB sizes.\n\
             3. talos_version — do all nodes run the same Talos release?\n\
             4. talos_services — any service not Running/healthy on any node?\n\
             5. talos_system_stats and talos_mounts — nodes with high load, memory or disk use.\n\
             6. talos_time — clock offsets above 100 ms.\n\
             Report a table of nodes with status, then the problems ordered by severity with the evidence and a suggested action for each.",
            c = ctx(&a.context)
        ))
    }

    /// Troubleshoot etcd.
    #[prompt(
        name = "etcd_troubleshooting",
        description = "Troubleshoot etcd on the control plane: membership, leader, quorum, alarms, database size and logs."
    )]
    async fn etcd_troubleshooting(
        &self,
        Parameters(a): Parameters<ClusterArgs>,
    ) -> Vec<PromptMessage> {
        user(format!(
            "Troubleshoot etcd in this Talos cluster.{c}\n\
             1. talos_etcd_members — the membership list; note learners and unexpected members.\n\
             2. talos_etcd_status — verdict and reasons; compare raft index/term across members; note alarms (NOSPACE) and DB size vs in-use.\n\
             3. For members that failed or lag: talos_services with service=\"etcd\" on that node, then talos_service_logs with service=\"etcd\", grep=\"error\" or \"slow\".\n\
             4. talos_time on the control planes — clock skew breaks etcd.\n\
             5. talos_mounts on the control planes — /var must not be full.\n\
             Explain the state in plain words. If a fix needs a write action (defragment, alarm disarm, member removal), describe it and its risk; do not perform it.",
            c = ctx(&a.context)
        ))
    }

    /// Plan an upgrade.
    #[prompt(
        name = "plan_upgrade",
        description = "Plan a Talos (and optionally Kubernetes) upgrade: current versions, health gates, order of nodes, rollback."
    )]
    async fn plan_upgrade(&self, Parameters(a): Parameters<UpgradeArgs>) -> Vec<PromptMessage> {
        let k8s = a
            .kubernetes_version
            .as_ref()
            .map(|k| format!(" and Kubernetes {k}"))
            .unwrap_or_default();
        user(format!(
            "Plan an upgrade to Talos {}{k8s}.{c}\n\
             1. talos_version — current release on every node; note mixed versions.\n\
             2. talos_health and talos_etcd_status — the cluster must be healthy and etcd must have quorum with margin before starting.\n\
             3. talos_images with filter=\"installer\" — is the installer image already cached?\n\
             4. talos_etcd_members — the control-plane nodes; plan them one at a time, the etcd leader last.\n\
             5. talos_mounts — enough free space on /var on every node.\n\
             Write the plan: preconditions, the node order (control planes one by one, then workers in small batches), the health gate after each node (talos_health, talos_etcd_status), how to roll back, and what could go wrong. Upgrading Talos one minor release at a time is the supported path; flag larger jumps. Do not perform the upgrade.",
            a.talos_version,
            c = ctx(&a.context)
        ))
    }

    /// Review a fleet of clusters.
    #[prompt(
        name = "fleet_review",
        description = "Review several Talos clusters side by side: version skew, machine-config drift from a reference node, etcd health, unreachable nodes."
    )]
    async fn fleet_review(&self, Parameters(a): Parameters<FleetArgs>) -> Vec<PromptMessage> {
        let contexts: Vec<String> = a
            .contexts
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| format!("{c:?}"))
            .collect();
        let mut args = Vec::new();
        if !contexts.is_empty() {
            args.push(format!("contexts=[{}]", contexts.join(", ")));
        }
        if let Some((context, node)) = a.reference.as_deref().and_then(|r| r.split_once('/')) {
            args.push(format!(
                "context={:?}, node={:?}",
                context.trim(),
                node.trim()
            ));
        }
        let call = if args.is_empty() {
            "talos_compare".to_owned()
        } else {
            format!("talos_compare with {}", args.join(", "))
        };
        user(format!(
            "Review this fleet of Talos clusters.\n\
             1. {call} — one table of every node: Talos and Kubernetes versions, config drift from the reference, etcd verdict per context, unreachable nodes.\n\
             2. Version skew: which clusters or nodes run an older Talos or Kubernetes release than the rest? More than one minor release behind needs a stepwise upgrade plan (see the plan_upgrade prompt).\n\
             3. Drift: group the differing keys by section; tell intended per-cluster differences (cluster name, endpoints, certificates, `differs (secret)` values, which every cluster has of its own) from accidental ones (CNI, kubelet, sysctls, features). Never ask for secret values.\n\
             4. For a context whose etcd verdict is not healthy: talos_etcd_status with that context — reasons, quorum, alarms.\n\
             5. For unreachable nodes: talos_version with that context and node — still down? Say what to check next.\n\
             Report a table (context, node, Talos, Kubernetes, drift sections, etcd), then the findings by severity with a suggested action for each. Do not change anything."
        ))
    }

    /// Change a machine config safely.
    #[prompt(
        name = "apply_config_safely",
        description = "Prepare a machine configuration change for one node safely: inspect, dry-run, confirm, verify."
    )]
    async fn apply_config_safely(
        &self,
        Parameters(a): Parameters<ConfigChangeArgs>,
    ) -> Vec<PromptMessage> {
        let node = &a.node;
        user(format!(
            "Prepare this machine configuration change on node {node}: {change}.{c}\n\
             1. Read the current config from the resource talos://{{context}}/nodes/{node}/machineconfig (secrets are redacted; never ask for them).\n\
             2. talos_services and talos_health — the node and cluster must be healthy first.\n\
             3. If it is a control plane (see talos_etcd_members), check talos_etcd_status: a change that reboots it must not cost etcd quorum.\n\
             4. Draft the smallest patch that achieves the change, and explain every line.\n\
             5. Applying needs the write tier and a dry run first (talos_apply_config with dry_run=true, if the operator enabled it); review the diff it reports, prefer mode no-reboot or try, and only then ask the human to confirm a real apply.\n\
             6. Afterwards verify with talos_services, talos_events and talos_health.",
            change = a.change,
            c = ctx(&a.context)
        ))
    }
}
