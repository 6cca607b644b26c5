//! Command-line interface. Every flag can also come from a `TALOS_MCP_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// An MCP server for Talos Linux: native gRPC/mTLS access to your clusters, read-only by default.
#[derive(Debug, Parser)]
#[command(name = "talos-mcp", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// TOML file of default flags (`allow-write = true`, `toolsets = ["info"]`, …); command-line
    /// flags and TALOS_MCP_* variables take precedence over it.
    #[arg(long, global = true, env = "TALOS_MCP_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// talosconfig to use (default: $TALOSCONFIG, ~/.talos/config, /var/run/secrets/talos.dev/config).
    #[arg(long, global = true, env = "TALOS_MCP_TALOSCONFIG")]
    pub(crate) talosconfig: Option<PathBuf>,
    /// Context used when a call names none (default: the talosconfig's current context).
    #[arg(long, global = true, env = "TALOS_MCP_CONTEXT")]
    pub(crate) context: Option<String>,
    /// Contexts of the talosconfig the server may use, comma-separated (default: all). Others are
    /// refused and not listed.
    #[arg(long, global = true, env = "TALOS_MCP_CONTEXTS", value_delimiter = ',')]
    pub(crate) contexts: Vec<String>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter. Logs go to stderr.
    #[arg(
        long,
        global = true,
        env = "TALOS_MCP_LOG_LEVEL",
        default_value = "info"
    )]
    pub(crate) log_level: String,
    /// Log format.
    #[arg(long, global = true, env = "TALOS_MCP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector (http://host:4317); the standard OTEL_*
    /// variables (service name, resource attributes, headers, sampler) apply. Off when unset.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub(crate) otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve MCP over stdio (default) or streamable HTTP.
    Serve(ServeArgs),
    /// Show the server working against an embedded simulated cluster.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// List the tools with their tiers and toolsets.
    Tools {
        /// Print JSON (the MCP tool definitions with a `tier` field).
        #[arg(long)]
        json: bool,
    },
    /// Run one tool without an MCP client (same safety rules as serve).
    Call(CallArgs),
    /// List the talosconfig's contexts and nodes (no secrets).
    Contexts,
    /// Validate the talosconfig and check every endpoint's connectivity.
    Check,
}

/// What the server exposes and how it protects it.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerOpts {
    /// Enable the write tier (apply config, service actions, etcd defragment, image pull).
    #[arg(long, env = "TALOS_MCP_ALLOW_WRITE")]
    pub(crate) allow_write: bool,
    /// Enable the destructive tier (reboot, shutdown, reset, etcd membership, snapshots).
    #[arg(long, env = "TALOS_MCP_ALLOW_DESTRUCTIVE")]
    pub(crate) allow_destructive: bool,
    /// How write/destructive calls are confirmed: elicit, token or none (automation only).
    #[arg(long, env = "TALOS_MCP_CONFIRM", default_value = "elicit")]
    pub(crate) confirm: String,
    /// Also confirm write-tier calls.
    #[arg(long, env = "TALOS_MCP_CONFIRM_WRITES")]
    pub(crate) confirm_writes: bool,
    /// File with the secret that signs confirmation tokens (share it between replicas).
    #[arg(long, env = "TALOS_MCP_CONFIRM_SECRET_FILE")]
    pub(crate) confirm_secret_file: Option<PathBuf>,
    /// Audit log file, `-` for stderr, `off` to disable (default: $XDG_STATE_HOME/talos-mcp/audit.log).
    #[arg(long, env = "TALOS_MCP_AUDIT_LOG")]
    pub(crate) audit_log: Option<String>,
    /// Largest tool output in bytes.
    #[arg(long, env = "TALOS_MCP_OUTPUT_CAP", default_value_t = 64 * 1024)]
    pub(crate) output_cap: usize,
    /// Extra nodes allowed as targets, as CIDRs (repeat or comma-separate).
    #[arg(
        long = "allow-node-cidr",
        env = "TALOS_MCP_ALLOW_NODE_CIDR",
        value_delimiter = ','
    )]
    pub(crate) allow_node_cidr: Vec<String>,
    /// Most distinct nodes one call may target.
    #[arg(long, env = "TALOS_MCP_MAX_NODES", default_value_t = talos_mcp::clusters::DEFAULT_MAX_NODES,
          value_parser = at_least_one)]
    pub(crate) max_nodes: usize,
    /// Most nodes one call talks to at once (1-1024); the rest wait their turn.
    #[arg(long, env = "TALOS_MCP_FAN_OUT", default_value_t = talos_client::DEFAULT_FAN_OUT_LIMIT,
          value_parser = fan_out_limit)]
    pub(crate) fan_out: usize,
    /// Paths the file tools may read.
    #[arg(long, env = "TALOS_MCP_FILE_ALLOWLIST", value_delimiter = ',', default_values_t = ["/proc".to_owned(), "/sys".to_owned(), "/var/log".to_owned()])]
    pub(crate) file_allowlist: Vec<String>,
    /// Local directories talos_apply_config may read config files from.
    #[arg(long, env = "TALOS_MCP_CONFIG_ALLOWLIST", value_delimiter = ',')]
    pub(crate) config_allowlist: Vec<String>,
    /// Where kubeconfigs, etcd snapshots and configuration backups are written (0600 files in a
    /// 0700 directory).
    #[arg(long, env = "TALOS_MCP_ARTIFACT_DIR")]
    pub(crate) artifact_dir: Option<PathBuf>,
    /// etcd snapshots kept per context (configuration backups per node); older ones are deleted.
    #[arg(long, env = "TALOS_MCP_SNAPSHOT_RETENTION", default_value_t = 5, value_parser = at_least_one)]
    pub(crate) snapshot_retention: usize,
    /// Enabled toolsets (default: all).
    #[arg(long, env = "TALOS_MCP_TOOLSETS", value_delimiter = ',')]
    pub(crate) toolsets: Option<Vec<String>>,
    /// Enabled tools (default: all in the enabled toolsets).
    #[arg(long, env = "TALOS_MCP_TOOLS", value_delimiter = ',')]
    pub(crate) tools: Option<Vec<String>>,
    /// Seconds a finished long-running operation (task) stays readable.
    #[arg(long, env = "TALOS_MCP_OPERATION_TTL", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) operation_ttl: u64,
    /// Most operations kept, running and finished; when all are running, new ones are refused.
    #[arg(long, env = "TALOS_MCP_MAX_OPERATIONS", default_value_t = 256, value_parser = at_least_one)]
    pub(crate) max_operations: usize,
    /// Milliseconds task clients are asked to wait between polls (tasks/get).
    #[arg(long, env = "TALOS_MCP_TASK_POLL_INTERVAL_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub(crate) task_poll_interval_ms: u64,
    #[command(flatten)]
    pub(crate) state: StateOpts,
}

/// Where replicas share their state (see docs/deployment.md).
#[derive(Debug, Clone, Args)]
pub(crate) struct StateOpts {
    /// Share state with other replicas in Redis or Valkey: `redis://host:6379/0`, or
    /// `rediss://` for TLS (default: this process's memory, one replica). Needs
    /// --confirm-secret-file. A password is better given with --state-password-file.
    #[arg(long, env = "TALOS_MCP_STATE_URL", hide_env_values = true)]
    pub(crate) state_url: Option<Redacted>,
    /// File holding the store's password (the URL's own password, if any, is replaced).
    #[arg(long, env = "TALOS_MCP_STATE_PASSWORD_FILE")]
    pub(crate) state_password_file: Option<PathBuf>,
    /// The store's password (prefer the file; the value is never logged).
    #[arg(long, env = "TALOS_MCP_STATE_PASSWORD", hide_env_values = true)]
    pub(crate) state_password: Option<Redacted>,
    /// CA certificate (PEM) to verify a `rediss://` store with (default: the system roots).
    #[arg(long, env = "TALOS_MCP_STATE_CA_FILE")]
    pub(crate) state_ca_file: Option<PathBuf>,
    /// This replica's name in audit lines and change-lock holders (default: $POD_NAME, else
    /// $HOSTNAME).
    #[arg(long, env = "TALOS_MCP_REPLICA")]
    pub(crate) replica: Option<String>,
    /// Seconds a change waits for the change lock of its cluster (0: refuse at once).
    #[arg(long, env = "TALOS_MCP_CHANGE_LOCK_WAIT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=600))]
    pub(crate) change_lock_wait: u64,
    /// Seconds of lease on a change lock and on a running operation; the holder renews it, and
    /// a dead replica's lock and operations lapse after it.
    #[arg(long, env = "TALOS_MCP_LEASE", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(2..=300))]
    pub(crate) lease: u64,
    /// Serve HTTP without MCP sessions: any replica answers any POST (handshake-era clients then
    /// confirm with tokens; subscriptions need sessions: see docs/deployment.md).
    #[arg(long, env = "TALOS_MCP_STATELESS")]
    pub(crate) stateless: bool,
}

/// A setting that may hold a secret: never shown by `Debug`.
#[derive(Clone)]
pub(crate) struct Redacted(pub(crate) String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Redacted {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// HTTP transport settings.
#[derive(Debug, Clone, Args)]
pub(crate) struct HttpOpts {
    /// Serve MCP streamable HTTP on this address (path /mcp) instead of stdio.
    #[arg(long, env = "TALOS_MCP_HTTP")]
    pub(crate) http: Option<SocketAddr>,
    /// File of bearer tokens, one `name:token` per line; the name is the caller in the audit log.
    #[arg(long, env = "TALOS_MCP_HTTP_TOKENS_FILE")]
    pub(crate) http_tokens_file: Option<PathBuf>,
    /// Bearer tokens as `name:token` pairs, comma-separated (prefer the file).
    #[arg(
        long,
        env = "TALOS_MCP_HTTP_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) http_tokens: Vec<String>,
    /// Allow a non-loopback bind without authentication.
    #[arg(long, env = "TALOS_MCP_INSECURE_NO_AUTH")]
    pub(crate) insecure_no_auth: bool,
    /// Origins browsers may call from (DNS-rebinding protection); requests with another Origin get 403.
    #[arg(long, env = "TALOS_MCP_ALLOWED_ORIGINS", value_delimiter = ',', default_values_t = ["http://localhost".to_owned(), "http://127.0.0.1".to_owned()])]
    pub(crate) allowed_origins: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, env = "TALOS_MCP_MAX_BODY", default_value_t = 1024 * 1024)]
    pub(crate) max_body: usize,
    /// Requests per second allowed per caller (burst: 5 × this).
    #[arg(long, env = "TALOS_MCP_RATE_LIMIT", default_value_t = 20)]
    pub(crate) rate_limit: u32,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "TALOS_MCP_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "TALOS_MCP_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Host names (`name` or `name:port`, `*` for any) that /mcp and /metrics answer to; others
    /// get 403 (DNS-rebinding protection). Default: loopback names, plus the --http address when
    /// it is a specific IP; list a Service's or proxy's names here.
    #[arg(long, env = "TALOS_MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub(crate) allowed_hosts: Vec<String>,
    /// Most open HTTP connections; at the cap a new one replaces the oldest that has sent no
    /// request yet, or is closed at once.
    #[arg(long, env = "TALOS_MCP_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,
    /// Seconds a client has to send a request's headers (and a new connection its first request).
    #[arg(long, env = "TALOS_MCP_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) header_timeout: u64,
    /// The base URL clients reach this server at (`https://talos-mcp.example.com`); the A2A
    /// agent card names `<base>/a2a` as its endpoint. Default: the listen address.
    #[arg(long, env = "TALOS_MCP_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "TALOS_MCP_BODY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) body_timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) server: ServerOpts,
    #[command(flatten)]
    pub(crate) http: HttpOpts,
}

#[cfg(feature = "demo")]
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// Serve the MCP server against the simulated cluster instead of the scripted walk-through.
    #[arg(long)]
    pub(crate) serve: bool,
    /// Simulated control-plane nodes.
    #[arg(long, default_value_t = 3)]
    pub(crate) control_planes: usize,
    /// Simulated worker nodes.
    #[arg(long, default_value_t = 2)]
    pub(crate) workers: usize,
    #[command(flatten)]
    pub(crate) server: ServerOpts,
    #[command(flatten)]
    pub(crate) http: HttpOpts,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct CallArgs {
    /// The tool, e.g. talos_version.
    pub(crate) tool: String,
    /// Arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    pub(crate) args: String,
    #[command(flatten)]
    pub(crate) server: ServerOpts,
}

/// Nodes in flight per call: 1 to 1024.
fn fan_out_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a whole number from 1 to 1024")),
    }
}

/// A count of 1 or more.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

/// Command-line arguments with the config file's settings added where neither the command line
/// nor the environment sets them (precedence: flags, then `TALOS_MCP_*`, then the file).
pub(crate) fn args_with_config_file(
    args: Vec<std::ffi::OsString>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Vec<std::ffi::OsString>, String> {
    use clap::CommandFactory as _;
    let strings: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let path = strings
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| strings.get(i + 1).cloned())
        .or_else(|| {
            strings
                .iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_owned))
        })
        .or_else(|| env("TALOS_MCP_CONFIG").map(|p| p.to_string_lossy().into_owned()));
    let Some(path) = path else { return Ok(args) };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read config file {path}: {e}"))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("config file {path} is not valid TOML: {e}"))?;

    // Flags the chosen subcommand accepts (its own and the global ones).
    let command = Cli::command();
    let sub = strings
        .iter()
        .skip(1)
        .find_map(|a| command.find_subcommand(a));
    let accepted: Vec<String> = command
        .get_arguments()
        .chain(sub.into_iter().flat_map(|s| s.get_arguments()))
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let mut out = args;
    for (key, value) in table {
        if !accepted.contains(&key) {
            if command.get_subcommands().any(|s| {
                s.get_arguments()
                    .any(|a| a.get_long() == Some(key.as_str()))
            }) {
                continue; // an option of another command
            }
            return Err(format!("config file {path}: unknown setting `{key}`"));
        }
        let env_name = format!("TALOS_MCP_{}", key.to_uppercase().replace('-', "_"));
        let on_command_line = strings
            .iter()
            .any(|a| *a == format!("--{key}") || a.starts_with(&format!("--{key}=")));
        if on_command_line || env(&env_name).is_some() {
            continue;
        }
        let flag = format!("--{key}");
        match value {
            toml::Value::Boolean(true) => out.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => out.extend([flag.into(), s.into()]),
            toml::Value::Integer(i) => out.extend([flag.into(), i.to_string().into()]),
            toml::Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => Ok(s.clone()),
                        toml::Value::Integer(n) => Ok(n.to_string()),
                        _ => Err(format!(
                            "config file {path}: `{key}` must be a list of strings"
                        )),
                    })
                    .collect::<Result<_, _>>()?;
                out.extend([flag.into(), parts.join(",").into()]);
            }
            _ => {
                return Err(format!(
                    "config file {path}: `{key}` has an unsupported value"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_fills_in_below_env_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("talos-mcp.toml");
        std::fs::write(
            &file,
            "allow-write = true\ntoolsets = [\"info\", \"etcd\"]\noutput-cap = 1000\nconfirm = \"token\"\nlog-level = \"debug\"\nhttp = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let no_env = |_: &str| None;
        let merged = args_with_config_file(
            args(&[
                "talos-mcp",
                "serve",
                "--config",
                file.to_str().unwrap(),
                "--confirm",
                "elicit",
            ]),
            no_env,
        )
        .unwrap();
        let cli = Cli::try_parse_from(merged).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert!(s.server.allow_write);
        assert_eq!(s.server.toolsets.unwrap(), vec!["info", "etcd"]);
        assert_eq!(s.server.output_cap, 1000);
        assert_eq!(s.server.confirm, "elicit", "the command line wins");
        assert_eq!(cli.global.log_level, "debug");
        assert_eq!(s.http.http.unwrap().port(), 9000);

        // The environment wins over the file.
        let env = |k: &str| (k == "TALOS_MCP_OUTPUT_CAP").then(|| std::ffi::OsString::from("5"));
        let merged = args_with_config_file(
            args(&["talos-mcp", "serve", "--config", file.to_str().unwrap()]),
            env,
        )
        .unwrap();
        assert!(!merged.iter().any(|a| a == "1000"));

        // Settings of other commands are skipped; unknown ones are errors.
        let merged = args_with_config_file(
            args(&["talos-mcp", "tools", "--config", file.to_str().unwrap()]),
            no_env,
        )
        .unwrap();
        assert!(Cli::try_parse_from(merged).is_ok());
        std::fs::write(&file, "no-such-flag = 1\n").unwrap();
        let err = args_with_config_file(
            args(&["talos-mcp", "serve", "--config", file.to_str().unwrap()]),
            no_env,
        )
        .unwrap_err();
        assert!(err.contains("unknown setting `no-such-flag`"), "{err}");
        std::fs::write(&file, "not toml [").unwrap();
        assert!(
            args_with_config_file(
                args(&["talos-mcp", "serve", "--config", file.to_str().unwrap()]),
                no_env
            )
            .is_err()
        );
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from([
            "talos-mcp",
            "serve",
            "--allow-write",
            "--toolsets",
            "info,etcd",
            "--http",
            "127.0.0.1:8080",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert!(s.server.allow_write && !s.server.allow_destructive);
        assert_eq!(s.server.toolsets.unwrap(), vec!["info", "etcd"]);
        assert_eq!(s.http.http.unwrap().port(), 8080);
        assert_eq!(s.server.output_cap, 65536);
        assert_eq!(s.server.file_allowlist, vec!["/proc", "/sys", "/var/log"]);
        assert_eq!(cli.global.log_level, "info");
        assert_eq!(s.server.max_nodes, 256);
        assert!(cli.global.contexts.is_empty(), "every context by default");
        let cli = Cli::try_parse_from([
            "talos-mcp",
            "serve",
            "--contexts",
            "staging,dev",
            "--max-nodes",
            "8",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert_eq!(cli.global.contexts, vec!["staging", "dev"]);
        assert_eq!(s.server.max_nodes, 8);
        assert!(Cli::try_parse_from(["talos-mcp", "serve", "--max-nodes", "0"]).is_err());
        assert_eq!(s.server.fan_out, 16);
        for refused in ["0", "1025"] {
            assert!(Cli::try_parse_from(["talos-mcp", "serve", "--fan-out", refused]).is_err());
        }
        let cli = Cli::try_parse_from(["talos-mcp", "serve", "--fan-out", "200"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert_eq!(s.server.fan_out, 200);
        let cli = Cli::try_parse_from([
            "talos-mcp",
            "call",
            "talos_version",
            "--args",
            "{\"nodes\":[\"a\"]}",
            "--context",
            "prod",
        ])
        .unwrap();
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
        assert!(Cli::try_parse_from(["talos-mcp", "serve", "--http", "not-an-addr"]).is_err());
    }
}
