//! Every tool, prompt and resource end to end: rmcp client → TalosMcp → talos-client → talos-sim
//! over mTLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{text, with_sim};
use rmcp::model::{GetPromptRequestParams, ReadResourceRequestParams};
use serde_json::json;
use talos_sim::SimConfig;

#[tokio::test]
async fn info_tools() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let v = h.ok("talos_version", json!({})).await;
    assert_eq!(v["context"], "talos-sim");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(v["nodes"][0]["hostname"], "talos-cp-1");
    assert_eq!(v["nodes"][0]["result"]["tag"], "v1.11.5");
    assert!(v["nodes"][0]["result"]["client_version"].is_string());
    assert_eq!(v["failed_nodes"], json!([]));

    let cp = json!({"nodes": ["127.0.10.11"]});
    let s = h.ok("talos_system_stats", cp.clone()).await;
    let r = &s["nodes"][0]["result"];
    assert_eq!(r["cpus"], 4);
    assert!(
        r["memory_used_percent"].as_f64().unwrap() > 0.0
            && r["uptime_seconds"].as_u64().unwrap() > 86_400
    );
    assert_eq!(
        h.ok("talos_cpu", cp.clone()).await["nodes"][0]["result"]["count"],
        4
    );
    assert_eq!(
        h.ok("talos_memory", cp.clone()).await["nodes"][0]["result"]["total"],
        8u64 << 30
    );
    let ps = h
        .ok(
            "talos_processes",
            json!({"nodes": ["127.0.10.11"], "sort_by": "memory", "limit": 3}),
        )
        .await;
    let list = ps["nodes"][0]["result"]["processes"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list[0]["resident_bytes"].as_u64() >= list[1]["resident_bytes"].as_u64());
    let etcd = h
        .ok(
            "talos_processes",
            json!({"nodes": ["127.0.10.11"], "filter": "etcd"}),
        )
        .await;
    assert_eq!(
        etcd["nodes"][0]["result"]["processes"][0]["command"],
        "etcd"
    );
    assert_eq!(
        h.ok("talos_disks", cp.clone()).await["nodes"][0]["result"][0]["device"],
        "/dev/sda"
    );
    let du = h
        .ok(
            "talos_disk_usage",
            json!({"nodes": ["127.0.10.11"], "paths": ["/var"], "limit": 2}),
        )
        .await;
    assert_eq!(du["nodes"][0]["result"].as_array().unwrap().len(), 2);
    let mounts = h.ok("talos_mounts", cp.clone()).await;
    assert!(
        mounts["nodes"][0]["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mounted_on"] == "/var")
    );
    let net = h
        .ok("talos_network", json!({"nodes": ["127.0.10.11"], "include": ["interfaces", "addresses", "routes", "sockets"], "port": 50000}))
        .await;
    let n = &net["nodes"][0]["result"];
    assert!(
        n["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "eth0")
    );
    assert!(
        n["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["linkName"] == "eth0")
    );
    assert_eq!(n["routes"][0]["gateway"], "10.5.0.1");
    assert!(
        n["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["local"].as_str().unwrap().ends_with(":50000"))
    );
    let t = h.ok("talos_time", cp.clone()).await;
    assert!(t["nodes"][0]["result"]["offset_ms"].as_f64().unwrap().abs() < 1000.0);
    assert_eq!(
        h.ok("talos_hostname", cp).await["nodes"][0]["result"]["hostname"],
        "talos-cp-1"
    );
}

#[tokio::test]
async fn workload_tools() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let c = h
        .ok(
            "talos_list_containers",
            json!({"nodes": ["127.0.10.11"], "namespace": "k8s.io", "filter": "apiserver"}),
        )
        .await;
    assert_eq!(c["nodes"][0]["result"]["matched"], 1);
    assert!(
        c["nodes"][0]["result"]["containers"][0]["pod"]
            .as_str()
            .unwrap()
            .contains("kube-apiserver")
    );
    let sys = h
        .ok("talos_list_containers", json!({"nodes": ["127.0.10.11"]}))
        .await;
    assert!(
        sys["nodes"][0]["result"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "etcd")
    );
    let stats = h
        .ok(
            "talos_container_stats",
            json!({"nodes": ["127.0.10.14"], "limit": 2}),
        )
        .await;
    let s = stats["nodes"][0]["result"].as_array().unwrap();
    assert_eq!(s.len(), 2);
    assert!(s[0]["memory_bytes"].as_u64() >= s[1]["memory_bytes"].as_u64());
    let svc = h
        .ok(
            "talos_services",
            json!({"service": "etcd", "nodes": ["127.0.10.11"]}),
        )
        .await;
    assert_eq!(svc["nodes"][0]["result"][0]["health"], "healthy");
    let missing = h
        .ok(
            "talos_services",
            json!({"service": "etcd", "nodes": ["127.0.10.14"]}),
        )
        .await;
    assert_eq!(
        missing["nodes"][0]["error"]["kind"], "NotFound",
        "workers run no etcd"
    );
    let images = h
        .ok(
            "talos_images",
            json!({"nodes": ["127.0.10.11"], "filter": "pause"}),
        )
        .await;
    assert_eq!(images["nodes"][0]["result"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn log_tools() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let logs = h
        .ok(
            "talos_service_logs",
            json!({"service": "etcd", "nodes": ["127.0.10.11"], "tail": 20}),
        )
        .await;
    let lines = logs["nodes"][0]["result"]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 20);
    assert!(
        lines
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .ends_with("seq=1999")
    );
    let grep = h
        .ok(
            "talos_service_logs",
            json!({"service": "etcd", "nodes": ["127.0.10.11"], "grep": "level=error", "tail": 5}),
        )
        .await;
    let r = &grep["nodes"][0]["result"];
    assert_eq!(r["lines"].as_array().unwrap().len(), 5);
    assert_eq!(r["lines_read"], 2000);
    assert_eq!(r["omitted"], 35);
    let dmesg = h
        .ok(
            "talos_dmesg",
            json!({"nodes": ["127.0.10.12"], "level": "error", "tail": 3}),
        )
        .await;
    let lines = dmesg["nodes"][0]["result"]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.as_str().unwrap().contains(": err:")));
    let events = h
        .ok("talos_events", json!({"nodes": ["127.0.10.11"], "tail": 5}))
        .await;
    let ev = events["nodes"][0]["result"].as_array().unwrap();
    assert_eq!(ev.len(), 5);
    assert_eq!(ev.last().unwrap()["kind"], "machine.MachineStatusEvent");
}

#[tokio::test]
async fn etcd_and_cluster_tools() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let m = h.ok("talos_etcd_members", json!({})).await;
    assert_eq!(m["members"].as_array().unwrap().len(), 3);
    let s = h.ok("talos_etcd_status", json!({})).await;
    assert_eq!(s["verdict"], "healthy", "{s}");
    assert_eq!(s["quorum"], 2);
    assert_eq!(s["statuses"]["nodes"].as_array().unwrap().len(), 3);

    let health = h.ok("talos_health", json!({"wait_seconds": 5})).await;
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["control_plane_nodes"].as_array().unwrap().len(), 3);
    assert_eq!(health["worker_nodes"].as_array().unwrap().len(), 2);

    // One control plane down: etcd quorum is at risk, health fails.
    let sim = h.sim.as_ref().unwrap();
    sim.set_fault("127.0.10.13", talos_sim::Fault::Unavailable);
    let s = h.ok("talos_etcd_status", json!({})).await;
    assert_eq!(s["verdict"], "quorum_at_risk", "{s}");
    assert!(s["reasons"][0].as_str().unwrap().contains("talos-cp-3"));
    sim.set_fault("127.0.10.12", talos_sim::Fault::Unavailable);
    assert_eq!(
        h.ok("talos_etcd_status", json!({})).await["verdict"],
        "quorum_lost"
    );

    let get = h
        .ok(
            "talos_get",
            json!({"resource_type": "members", "nodes": ["127.0.10.11"]}),
        )
        .await;
    assert_eq!(get["nodes"][0]["result"].as_array().unwrap().len(), 5);
    assert_eq!(
        get["nodes"][0]["result"][0]["spec"]["machineType"],
        "controlplane"
    );
    let one = h.ok("talos_get", json!({"resource_type": "Nodenames.kubernetes.talos.dev", "namespace": "k8s", "id": "nodename", "nodes": ["127.0.10.14"]})).await;
    assert_eq!(
        one["nodes"][0]["result"][0]["spec"]["nodename"],
        "talos-worker-1"
    );
    // An alias resolved on the node to a secret type: the whole call is this server's refusal
    // (not the node denying a role).
    let secret = h
        .err(
            "talos_get",
            json!({"resource_type": "machineconfig", "nodes": ["127.0.10.11"]}),
        )
        .await;
    assert!(
        secret.starts_with("Refused: `MachineConfigs.config.talos.dev` holds secrets"),
        "{secret}"
    );
    assert!(!secret.contains("SIM-SECRET") && !secret.contains("role"));
    let refused = h
        .err(
            "talos_get",
            json!({"resource_type": "OSRootSecrets.secrets.talos.dev", "namespace": "secrets"}),
        )
        .await;
    assert!(refused.starts_with("Refused"), "{refused}");

    let files = h
        .ok(
            "talos_list_files",
            json!({"path": "/proc", "nodes": ["127.0.10.11"]}),
        )
        .await;
    assert!(
        files["nodes"][0]["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "/proc/loadavg")
    );
    let read = h
        .ok(
            "talos_read_file",
            json!({"path": "/proc/loadavg", "nodes": ["127.0.10.11"]}),
        )
        .await;
    assert!(
        read["nodes"][0]["result"]["content"]
            .as_str()
            .unwrap()
            .starts_with("0.42")
    );
    let denied = h
        .err(
            "talos_read_file",
            json!({"path": "/system/state/config.yaml"}),
        )
        .await;
    assert!(denied.starts_with("PathNotAllowed"), "{denied}");
}

#[tokio::test]
async fn kubeconfig_is_written_privately_and_never_returned() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let r = h.call("talos_kubeconfig", json!({})).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let out = r.structured_content.clone().unwrap();
    let everything = format!("{}{}", text(&r), out);
    assert!(
        !everything.contains("client-key-data") && !everything.contains("U0lNLVNFQ1JFV"),
        "{everything}"
    );
    assert_eq!(out["server"], "https://talos-sim.local:6443");
    assert_eq!(out["cluster_name"], "talos-sim");
    let path = std::path::PathBuf::from(out["path"].as_str().unwrap());
    assert!(path.starts_with(h.dir.path()));
    let content = std::fs::read(&path).unwrap();
    assert_eq!(out["size_bytes"], content.len());
    assert!(String::from_utf8_lossy(&content).contains("client-key-data"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[tokio::test]
async fn partial_failure_is_a_normal_result_naming_the_failed_node() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    h.sim
        .as_ref()
        .unwrap()
        .set_fault("127.0.10.15", talos_sim::Fault::Unavailable);
    let r = h.call("talos_hostname", json!({})).await;
    assert_ne!(r.is_error, Some(true));
    let v = r.structured_content.clone().unwrap();
    assert_eq!(v["failed_nodes"], json!(["127.0.10.15"]));
    assert_eq!(v["nodes"][4]["ok"], false);
    assert_eq!(v["nodes"][4]["error"]["kind"], "Connection");
    assert!(text(&r).contains("failed: 127.0.10.15"));
}

#[tokio::test]
async fn nodes_outside_the_context_are_refused() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let err = h
        .err("talos_version", json!({"nodes": ["10.99.0.1"]}))
        .await;
    assert!(
        err.starts_with("NodeNotAllowed") && err.contains("127.0.10.11"),
        "{err}"
    );
    assert_eq!(h.sim.as_ref().unwrap().calls("10.99.0.1", "Version"), 0);
    // Hostnames learned from the cluster are accepted.
    h.ok("talos_version", json!({"nodes": ["talos-cp-2"]}))
        .await;
    let err = h.err("talos_version", json!({"context": "nope"})).await;
    assert!(
        err.starts_with("InvalidConfig") && err.contains("talos-sim"),
        "{err}"
    );
}

#[tokio::test]
async fn prompts_and_resources() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let prompts = h.client.list_all_prompts().await.unwrap();
    let names: Vec<_> = prompts.iter().map(|p| p.name.as_str()).collect();
    for expected in [
        "diagnose_node",
        "cluster_health_review",
        "etcd_troubleshooting",
        "plan_upgrade",
        "apply_config_safely",
        "fleet_review",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let p = h
        .client
        .get_prompt(
            GetPromptRequestParams::new("diagnose_node")
                .with_arguments(json!({"node": "127.0.10.12"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let body = serde_json::to_string(&p.messages).unwrap();
    assert!(body.contains("127.0.10.12") && body.contains("talos_services"));

    let templates = h.client.list_all_resource_templates().await.unwrap();
    assert_eq!(templates.len(), 4);
    let resources = h.client.list_all_resources().await.unwrap();
    assert!(resources.iter().any(|r| r.uri == "talos://contexts"));
    let contexts = h
        .client
        .read_resource(ReadResourceRequestParams::new("talos://contexts"))
        .await
        .unwrap();
    let text = serde_json::to_string(&contexts.contents).unwrap();
    assert!(text.contains("talos-sim") && !text.contains("PRIVATE KEY"));
    let version = h
        .client
        .read_resource(ReadResourceRequestParams::new(
            "talos://talos-sim/nodes/127.0.10.11/version",
        ))
        .await
        .unwrap();
    assert!(
        serde_json::to_string(&version.contents)
            .unwrap()
            .contains("v1.11.5")
    );
    let services = h
        .client
        .read_resource(ReadResourceRequestParams::new(
            "talos://talos-sim/nodes/127.0.10.11/services",
        ))
        .await
        .unwrap();
    assert!(
        serde_json::to_string(&services.contents)
            .unwrap()
            .contains("etcd")
    );
    let mc = h
        .client
        .read_resource(ReadResourceRequestParams::new(
            "talos://talos-sim/nodes/127.0.10.11/machineconfig",
        ))
        .await
        .unwrap();
    let mc = serde_json::to_string(&mc.contents).unwrap();
    assert!(
        mc.contains("hostname: talos-cp-1") && mc.contains("[redacted]"),
        "{mc}"
    );
    for secret in talos_sim::PLANTED_SECRETS {
        assert!(!mc.contains(secret), "{secret} leaked");
    }
    assert!(
        h.client
            .read_resource(ReadResourceRequestParams::new(
                "talos://talos-sim/nodes/10.1.1.1/version"
            ))
            .await
            .is_err()
    );

    // COSI resources of a type, by alias or full name, read like talos_get (node allowlist,
    // refusal of secret types, redaction).
    let read = |uri: String| {
        let client = &h.client;
        async move {
            client
                .read_resource(ReadResourceRequestParams::new(uri))
                .await
        }
    };
    for t in ["members", "Members.cluster.talos.dev"] {
        let members = read(format!("talos://talos-sim/nodes/127.0.10.11/resources/{t}"))
            .await
            .unwrap();
        let rmcp::model::ResourceContents::TextResourceContents { text, .. } = &members.contents[0]
        else {
            panic!("text contents");
        };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["node"], "127.0.10.11");
        assert_eq!(v["truncated"], false);
        let list = v["resources"].as_array().unwrap();
        assert!(!list.is_empty(), "{v}");
        assert!(
            list.iter()
                .all(|r| r["resource_type"] == "Members.cluster.talos.dev"),
            "{v}"
        );
    }
    for uri in [
        // A node outside the context, an unknown context.
        "talos://talos-sim/nodes/10.1.1.1/resources/members",
        "talos://nope/nodes/127.0.10.11/resources/members",
        // Empty or over-long parts, extra segments, characters no type has.
        "talos://talos-sim/nodes/127.0.10.11/resources/",
        "talos://talos-sim/nodes//resources/members",
        "talos://talos-sim/nodes/127.0.10.11/resources/members/extra",
        "talos://talos-sim/nodes/127.0.10.11/resources/mem%2Fbers",
        "talos://talos-sim/nodes/127.0.10.11/resources/members?id=x",
    ] {
        assert!(read(uri.to_owned()).await.is_err(), "{uri}");
    }
    let long = format!(
        "talos://talos-sim/nodes/127.0.10.11/resources/{}",
        "m".repeat(10_000)
    );
    assert!(read(long).await.is_err());
    // A type the node does not know is "not found" (the client's to fix), not a server error.
    let unknown = read("talos://talos-sim/nodes/127.0.10.11/resources/NoSuchThings".into()).await;
    match unknown {
        Err(rmcp::ServiceError::McpError(e)) => {
            assert_eq!(e.code, rmcp::model::ErrorCode::RESOURCE_NOT_FOUND, "{e:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        h.client
            .read_resource(ReadResourceRequestParams::new("talos://nope"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn resources_template_refuses_secret_types_like_talos_get() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    for t in [
        "machineconfig",
        "mc",
        "MachineConfigs.config.talos.dev",
        "osrootsecret",
        "OSRootSecrets.secrets.talos.dev",
    ] {
        let uri = format!("talos://talos-sim/nodes/127.0.10.11/resources/{t}");
        let err = h
            .client
            .read_resource(ReadResourceRequestParams::new(uri.clone()))
            .await
            .unwrap_err();
        let rmcp::ServiceError::McpError(e) = err else {
            panic!("{uri}: {err:?}");
        };
        assert!(e.message.starts_with("Refused: `"), "{uri}: {}", e.message);
        assert!(e.message.contains("holds secrets"), "{uri}: {}", e.message);
        for secret in talos_sim::PLANTED_SECRETS {
            assert!(!e.message.contains(secret), "{secret} leaked via {uri}");
        }
    }
}

#[tokio::test]
async fn file_tools_refuse_process_links_and_redact_contents() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let cp = "127.0.10.11";
    // The sim, like a real node, serves the machine config through machined's root link; the
    // default allowlist contains /proc, so only the refusal stands in the way.
    for path in [
        "/proc/1/root/system/state/config.yaml",
        "/proc/self/cwd/system/state/config.yaml",
        "/proc/1/task/1/root/system/state/config.yaml",
        "/proc/1/fd/3",
        "/proc/1/environ",
    ] {
        let e = h
            .err("talos_read_file", json!({"path": path, "nodes": [cp]}))
            .await;
        assert!(e.starts_with("Refused"), "{path}: {e}");
    }
    let e = h
        .err(
            "talos_list_files",
            json!({"path": "/proc/1/root/system", "nodes": [cp]}),
        )
        .await;
    assert!(e.starts_with("Refused"), "{e}");
    let e = h
        .err(
            "talos_disk_usage",
            json!({"paths": ["/var", "/proc/1/root/system/secrets"], "nodes": [cp]}),
        )
        .await;
    assert!(e.starts_with("Refused"), "{e}");
    for (path, why) in [
        ("/proc//loadavg", "empty component"),
        ("/proc/./loadavg", "`.` component"),
        ("/procfoo", "PathNotAllowed"),
    ] {
        let e = h
            .err("talos_read_file", json!({"path": path, "nodes": [cp]}))
            .await;
        assert!(e.contains(why), "{path}: {e}");
    }

    // Listing /proc deep enough to reach /proc/1 leaves out its environ.
    let files = h
        .ok(
            "talos_list_files",
            json!({"path": "/proc", "depth": 3, "nodes": [cp]}),
        )
        .await;
    let paths: Vec<&str> = files["nodes"][0]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/proc/1/cmdline"), "{paths:?}");
    assert!(!paths.contains(&"/proc/1/environ"), "{paths:?}");

    // An allowed log file that quotes secrets comes back redacted, the rest intact.
    let read = h
        .ok(
            "talos_read_file",
            json!({"path": "/var/log/app.log", "nodes": [cp]}),
        )
        .await;
    let content = read["nodes"][0]["result"]["content"].as_str().unwrap();
    assert!(
        content.contains("msg=\"ready\"") && content.contains("[redacted]"),
        "{content}"
    );
    for secret in talos_sim::PLANTED_SECRETS {
        assert!(!content.contains(secret), "{secret} leaked: {content}");
    }
}
