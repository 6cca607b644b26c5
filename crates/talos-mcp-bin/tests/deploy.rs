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
