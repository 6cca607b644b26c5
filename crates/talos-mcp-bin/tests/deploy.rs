//! The Dockerfile and Kubernetes manifests agree with the binary: ports, probes, mounted paths
//! and arguments the CLI accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn all_manifests() -> Vec<Value> {
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        if f.extension().is_some_and(|e| e == "yaml") {
            for d in documents(&f) {
                assert!(
                    d["kind"].is_string() && d["apiVersion"].is_string(),
                    "{}: every document has kind and apiVersion",
                    f.display()
                );
                docs.push(d);
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn manifests_agree_with_the_binary() {
    let docs = all_manifests();
    let deployment = find(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = strs(&container["args"]);

    // The CLI accepts these arguments: with a missing talosconfig it fails on the config (exit 1),
    // not on the arguments (clap exits 2).
    let out = Command::new(env!("CARGO_BIN_EXE_talos-mcp"))
        .args(&args)
        .args(["--talosconfig", "/nonexistent/talosconfig"])
        .env("TALOS_MCP_AUDIT_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("talosconfig"));

    // The HTTP port in the args is the container port, the Service's target and the probes' port.
    let http = &args[args.iter().position(|a| a == "--http").unwrap() + 1];
    let port: u64 = http.rsplit(':').next().unwrap().parse().unwrap();
    let ports = container["ports"].as_sequence().unwrap();
    let named = ports
        .iter()
        .find(|p| p["containerPort"].as_u64() == Some(port))
        .expect("container port matches --http");
    let port_name = named["name"].as_str().unwrap();
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some(port_name)
        );
    }
    let service = find(&docs, "Service");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some(port_name)
    );

    // Clients in the cluster reach the Service by its DNS names: /mcp must answer to them.
    let hosts = &args[args.iter().position(|a| a == "--allowed-hosts").unwrap() + 1];
    let hosts: Vec<&str> = hosts.split(',').collect();
    let (name, namespace) = (
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap(),
    );
    for dns in [
        name.to_owned(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ] {
        assert!(hosts.contains(&dns.as_str()), "--allowed-hosts lacks {dns}");
    }
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // Mounts: the talosconfig where the binary looks for it, the tokens file the args name.
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let mounted = |path: &str| {
        mounts
            .iter()
            .any(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
    };
    assert!(
        mounted(talos_config::SERVICE_ACCOUNT_CONFIG),
        "talosconfig mount"
    );
    let tokens = &args[args.iter().position(|a| a == "--http-tokens-file").unwrap() + 1];
    assert!(mounted(tokens), "tokens file mount");
    let talos_secret = mounts
        .iter()
        .find(|m| m["mountPath"] == "/var/run/secrets/talos.dev")
        .unwrap()["name"]
        .clone();
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == talos_secret)
        .unwrap();
    let account = find(&docs, "ServiceAccount");
    assert_eq!(account["apiVersion"], "talos.dev/v1alpha1");
    assert_eq!(
        volume["secret"]["secretName"], account["metadata"]["name"],
        "Talos names the secret after its ServiceAccount"
    );
    assert!(strs(&account["spec"]["roles"]).contains(&"os:reader".to_owned()));

    // Hardening.
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(container["resources"]["limits"]["memory"].is_string());
    let policy = find(&docs, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"][0]["port"].as_u64(),
        Some(port)
    );
    assert!(
        policy["spec"]["egress"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|e| e["ports"][0]["port"].as_u64() == Some(50000))
    );

    // The image: same port exposed, non-root user, same serve command, same paths.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    assert!(dockerfile.contains(&format!("\"--http\", \"{http}\"")));
    assert!(dockerfile.contains("USER 10001"));
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(10001));
    assert!(dockerfile.contains(&format!("TALOS_MCP_HTTP_TOKENS_FILE={tokens}")));
    let image = container["image"].as_str().unwrap();
    assert!(image.starts_with("talos-mcp:"), "{image}");
    assert!(
        image.ends_with(env!("CARGO_PKG_VERSION")),
        "image tag follows the crate version"
    );
}

/// Every document of the files in `dir` (not its subdirectories).
fn manifests_in(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| documents(f)).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The HA manifests (deploy/kubernetes/ha): three replicas the CLI accepts, spread over nodes,
/// a disruption budget and an autoscaler aimed at them, readiness on /readyz, the pod name as
/// the replica, the shared Secret's keys where the arguments read them, and the example Redis
/// reachable from the replicas only, on the port the URL names.
#[test]
fn ha_manifests_agree_with_each_other_and_the_binary() {
    let docs = manifests_in(&root().join("deploy/kubernetes/ha"));
    let deployment = named(&docs, "Deployment", "talos-mcp");
    let labels = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(3));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = strs(&container["args"]);
    let arg = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();

    // The CLI accepts them (it fails on the missing talosconfig, exit 1, not on arguments).
    let out = Command::new(env!("CARGO_BIN_EXE_talos-mcp"))
        .args(&args)
        .args(["--talosconfig", "/nonexistent/talosconfig"])
        .env("TALOS_MCP_AUDIT_LOG", "off")
        .env("TALOS_MCP_STATE_URL", "redis://127.0.0.1:1/0")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(args.contains(&"--stateless".to_owned()));
    assert_eq!(
        arg("--audit-log"),
        "-",
        "the audit goes to the log pipeline"
    );
    assert_eq!(arg("--log-format"), "json");

    // Spread over nodes, by the Deployment's own labels.
    let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&term["labelSelector"]["matchLabels"], labels);
    let pdb = named(&docs, "PodDisruptionBudget", "talos-mcp");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(2));
    let hpa = named(&docs, "HorizontalPodAutoscaler", "talos-mcp");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "talos-mcp");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 3);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(
        container["resources"]["requests"]["cpu"].is_string(),
        "the HPA needs a CPU request"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");

    // The replica's name is the pod's; the store's URL and the shared files come from the
    // shared Secret, under the keys it has.
    let env = container["env"].as_sequence().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap().clone();
    assert_eq!(
        var("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let shared = named(&docs, "Secret", "talos-mcp-shared");
    let url_ref = &var("TALOS_MCP_STATE_URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(url_ref["name"], "talos-mcp-shared");
    let url = shared["stringData"][url_ref["key"].as_str().unwrap()]
        .as_str()
        .unwrap()
        .to_owned();
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    for flag in ["--confirm-secret-file", "--state-password-file"] {
        let path = arg(flag);
        let (dir, file) = path.rsplit_once('/').unwrap();
        let mount = mounts.iter().find(|m| m["mountPath"] == dir).unwrap();
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(volume["secret"]["secretName"], "talos-mcp-shared");
        let item = volume["secret"]["items"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|i| i["path"] == file)
            .unwrap_or_else(|| panic!("{flag}: no item {file}"));
        assert!(
            shared["stringData"][item["key"].as_str().unwrap()].is_string(),
            "{flag}: the Secret has the key"
        );
    }

    // The example store: its Service is the URL's host and port; only the replicas reach it,
    // and the replicas may reach it.
    let redis = named(&docs, "StatefulSet", "talos-mcp-redis");
    let service = named(&docs, "Service", "talos-mcp-redis");
    assert_eq!(
        service["spec"]["selector"],
        redis["spec"]["selector"]["matchLabels"]
    );
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert!(
        url.contains(&format!(
            "//{}.{}.svc:{port}/",
            service["metadata"]["name"].as_str().unwrap(),
            service["metadata"]["namespace"].as_str().unwrap()
        )),
        "{url}"
    );
    assert_eq!(
        redis["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "talos-mcp-shared"
    );
    let redis_policy = named(&docs, "NetworkPolicy", "talos-mcp-redis");
    assert_eq!(
        &redis_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
        labels
    );
    assert_eq!(
        redis_policy["spec"]["ingress"][0]["ports"][0]["port"].as_u64(),
        Some(port)
    );
    let policy = named(&docs, "NetworkPolicy", "talos-mcp");
    assert!(
        policy["spec"]["egress"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|e| e["ports"][0]["port"].as_u64() == Some(port)),
        "the replicas may reach the store"
    );
    let service = named(&docs, "Service", "talos-mcp");
    assert_eq!(&service["spec"]["selector"], labels);
}
