//! The tool registry: one table, built once, that says for every tool its name, toolset, tier,
//! annotations, schemas and handler.
//!
//! Listing (`tools/list`), dispatch (`tools/call`), the tier of a call, `tools --json`,
//! docs/tools.md and the snapshot all read this table; nothing else declares a tool. Each domain
//! module (`tools::info`, …) contributes its entries through a `tools()` function, one
//! [`ToolDef`] per tool function.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::{Call, Reply};
use crate::error::ToolError;
use crate::safety::Tier;
use crate::server::TalosMcp;

/// A boxed, sendable future borrowing the server and the call.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A group of tools the operator enables by name (`--toolsets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Toolset {
    /// Node facts.
    Info,
    /// Containers, services, images.
    Workloads,
    /// Logs, kernel messages, events.
    Logs,
    /// etcd.
    Etcd,
    /// Cluster health, COSI resources, files.
    Cluster,
    /// Kubernetes access.
    Kubernetes,
    /// Machine configuration and node lifecycle.
    Lifecycle,
}

impl Toolset {
    /// Every toolset, in listing order.
    pub const ALL: [Self; 7] = [
        Self::Info,
        Self::Workloads,
        Self::Logs,
        Self::Etcd,
        Self::Cluster,
        Self::Kubernetes,
        Self::Lifecycle,
    ];

    /// The toolset's name, as `--toolsets` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Workloads => "workloads",
            Self::Logs => "logs",
            Self::Etcd => "etcd",
            Self::Cluster => "cluster",
            Self::Kubernetes => "kubernetes",
            Self::Lifecycle => "lifecycle",
        }
    }

    /// What the toolset covers, in one line.
    pub fn about(self) -> &'static str {
        match self {
            Self::Info => {
                "Node facts: versions, CPU, memory, processes, disks, mounts, network, time."
            }
            Self::Workloads => "Containers, container stats, Talos services and images.",
            Self::Logs => "Service and container logs, kernel messages, machine events.",
            Self::Etcd => "etcd membership and health.",
            Self::Cluster => "Cluster health check, COSI resources, node files.",
            Self::Kubernetes => {
                "Kubernetes access: the admin kubeconfig (written to a private file)."
            }
            Self::Lifecycle => {
                "Machine configuration and node lifecycle: apply config, reboot, upgrade, rollback, shutdown, reset."
            }
        }
    }

    /// The toolset of this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// What a tool does to the cluster, for its annotations. Independent of the tier, which is
/// about who may call it: an etcd snapshot changes nothing but is in the destructive tier
/// because it reads every secret; applying a config is a write-tier tool that can break a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads only.
    Reads,
    /// Changes state; `idempotent` when repeating it changes nothing more.
    Changes {
        /// Repeating the call with the same arguments has no further effect.
        idempotent: bool,
    },
    /// May take a node or the cluster down, or remove something for good.
    Destroys {
        /// Repeating the call with the same arguments has no further effect.
        idempotent: bool,
    },
}

/// Where a call goes, as its arguments say (recorded by the audit before the call runs).
#[derive(Debug, Default)]
pub(crate) struct CallTarget<'a> {
    /// The talosconfig context named (`None`: the current one).
    pub(crate) context: Option<&'a str>,
    /// The nodes named (empty: the context's nodes).
    pub(crate) nodes: Vec<&'a str>,
}

/// Arguments of a tool: they say which context and nodes the call targets.
pub(crate) trait ToolArgs: DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The context and nodes these arguments name.
    fn target(&self) -> CallTarget<'_>;
}

/// A tool function: `async fn(&TalosMcp, &Call, Args) -> Result<Reply<Out>, ToolError>`.
///
/// (A helper trait so that an `async fn` borrowing the server and the call can be stored.)
pub(crate) trait ToolFn<'a, A, O>: Copy + Send + Sync + 'static {
    /// The call's future.
    type Fut: Future<Output = Result<Reply<O>, ToolError>> + Send + 'a;
    /// Runs the tool.
    fn run(self, server: &'a TalosMcp, call: &'a Call, args: A) -> Self::Fut;
}

impl<'a, A, O, F, Fut> ToolFn<'a, A, O> for F
where
    F: Fn(&'a TalosMcp, &'a Call, A) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply<O>, ToolError>> + Send + 'a,
{
    type Fut = Fut;
    fn run(self, server: &'a TalosMcp, call: &'a Call, args: A) -> Fut {
        self(server, call, args)
    }
}

/// The erased tool body of an [`Invocation`].
pub(crate) type Run = Box<
    dyn for<'a> FnOnce(&'a TalosMcp, &'a Call) -> BoxFuture<'a, Result<Reply, ToolError>> + Send,
>;

/// A call whose arguments have been read: where it goes, its tier, and the work to run.
pub(crate) struct Invocation {
    /// The context named by the arguments (bounded for the audit).
    pub(crate) context: Option<String>,
    /// The nodes named by the arguments (bounded for the audit).
    pub(crate) nodes: Vec<String>,
    /// The tier this call runs at (the tool's tier, or what its arguments make it).
    pub(crate) tier: Tier,
    /// The tool body.
    pub(crate) run: Run,
}

type Parse = Box<dyn Fn(JsonObject) -> Result<Invocation, ToolError> + Send + Sync>;

/// One tool: everything the server says and does about it.
pub struct ToolDef {
    /// The tool's name.
    pub name: &'static str,
    /// Its toolset.
    pub toolset: Toolset,
    /// Its tier: which operator flag lists and enables it.
    pub tier: Tier,
    /// What it does to the cluster (its annotations).
    pub effect: Effect,
    /// The tool as listed to clients.
    pub listing: Tool,
    /// Whether its tier can change with its arguments (see [`ToolDef::tier_by`]).
    pub tier_depends_on_arguments: bool,
    /// Whether it is a long operation: run as an operation (an MCP task for clients that
    /// declare the Tasks extension) rather than only as a call (see [`Builder::long_running`]).
    pub long_running: bool,
    parse: Parse,
}

impl std::fmt::Debug for ToolDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolDef")
            .field("name", &self.name)
            .field("toolset", &self.toolset)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

/// A tool definition being written: `tool(..).tier(..).run(f).build()`.
pub(crate) struct Builder<F = (), A = ()> {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    toolset: Toolset,
    tier: Tier,
    effect: Effect,
    f: F,
    tier_by: Option<fn(&A) -> Tier>,
    long_running: bool,
}

/// Starts a tool definition.
pub(crate) fn tool(
    toolset: Toolset,
    name: &'static str,
    title: &'static str,
    description: &'static str,
) -> Builder {
    Builder {
        name,
        title,
        description,
        toolset,
        tier: Tier::Read,
        effect: Effect::Reads,
        f: (),
        tier_by: None,
        long_running: false,
    }
}

impl Builder {
    /// Sets the tier and, from it, the default effect (read: reads; write: changes, not
    /// idempotent; destructive: destroys).
    pub(crate) fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self.effect = match tier {
            Tier::Read => Effect::Reads,
            Tier::Write => Effect::Changes { idempotent: false },
            Tier::Destructive => Effect::Destroys { idempotent: false },
        };
        self
    }

    /// Overrides the effect the tier implies.
    pub(crate) fn effect(mut self, effect: Effect) -> Self {
        self.effect = effect;
        self
    }

    /// The tool function; its argument and output types give the schemas.
    pub(crate) fn run<F, A>(self, f: F) -> Builder<F, A> {
        Builder {
            name: self.name,
            title: self.title,
            description: self.description,
            toolset: self.toolset,
            tier: self.tier,
            effect: self.effect,
            f,
            tier_by: None,
            long_running: self.long_running,
        }
    }
}

impl<F, A> Builder<F, A> {
    /// The tool is a long operation (an upgrade, a reboot followed to its end): it outlives
    /// the call that started it and runs as a task for clients that declare the Tasks extension.
    pub(crate) fn long_running(mut self) -> Self {
        self.long_running = true;
        self
    }
    /// The tier a call runs at depends on its arguments (a dry run reads; stopping etcd is
    /// destructive): `tier_by` says which. The tool's own tier still decides whether it is
    /// listed and enabled.
    pub(crate) fn tier_by(mut self, tier_by: fn(&A) -> Tier) -> Self {
        self.tier_by = Some(tier_by);
        self
    }

    /// The finished definition, with its schemas derived from `A` and `O`.
    pub(crate) fn build<O>(self) -> ToolDef
    where
        A: ToolArgs,
        O: JsonSchema + 'static,
        F: for<'a> ToolFn<'a, A, O>,
    {
        let Self {
            name,
            title,
            description,
            toolset,
            tier,
            effect,
            f,
            tier_by,
            long_running,
        } = self;
        let annotations = annotations(title, effect);
        let listing = Tool::new(name, description, crate::schema::input_schema::<A>())
            .with_raw_output_schema(crate::schema::output_schema::<O>())
            .with_annotations(annotations);
        ToolDef {
            name,
            toolset,
            tier,
            effect,
            listing,
            tier_depends_on_arguments: tier_by.is_some(),
            long_running,
            parse: Box::new(move |args| parse::<A, O, F>(f, args, tier_by, tier)),
        }
    }
}

/// The MCP annotations of a tool with this effect, stating only what differs from the
/// protocol's defaults (`readOnlyHint` false, `destructiveHint` true, `idempotentHint` false,
/// `openWorldHint` true: every tool talks to a cluster). `destructiveHint` and `idempotentHint`
/// mean nothing for a read-only tool and are left out there too.
fn annotations(title: &str, effect: Effect) -> ToolAnnotations {
    let mut a = ToolAnnotations::with_title(title);
    match effect {
        Effect::Reads => a.read_only_hint = Some(true),
        Effect::Changes { idempotent } => {
            a.destructive_hint = Some(false);
            a.idempotent_hint = idempotent.then_some(true);
        }
        Effect::Destroys { idempotent } => a.idempotent_hint = idempotent.then_some(true),
    }
    a
}

/// Reads a call's arguments into `A` and wraps the tool function.
fn parse<A, O, F>(
    f: F,
    args: JsonObject,
    tier_by: Option<fn(&A) -> Tier>,
    listed: Tier,
) -> Result<Invocation, ToolError>
where
    A: ToolArgs,
    O: 'static,
    F: for<'a> ToolFn<'a, A, O>,
{
    let args: A = crate::call::arguments(args)?;
    let target = args.target();
    let context = target.context.map(crate::audit::bounded_str);
    let nodes = crate::audit::bounded_list(target.nodes.into_iter().map(str::to_owned));
    let tier = tier_by.map_or(listed, |t| t(&args));
    Ok(Invocation {
        context,
        nodes,
        tier,
        run: Box::new(move |server, call| {
            Box::pin(async move { f.run(server, call, args).await.map(Reply::erase) })
        }),
    })
}

impl ToolDef {
    /// Reads the arguments of a call to this tool. A name the tool does not take is refused
    /// with the names it does: a model that misspells `tail` or sends a removed argument learns
    /// it, rather than getting a result that silently ignored it.
    pub(crate) fn invocation(&self, args: JsonObject) -> Result<Invocation, ToolError> {
        if let Some(serde_json::Value::Object(known)) = self.listing.input_schema.get("properties")
            && let Some(unknown) = args.keys().find(|k| !known.contains_key(*k))
        {
            return Err(ToolError::InvalidArgument {
                field: crate::error::echo(unknown).into(),
                message: format!(
                    "is not an argument of {}; its arguments: {}",
                    self.name,
                    known
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        (self.parse)(args)
    }
}

/// Every tool, built once.
pub struct Registry {
    tools: Vec<ToolDef>,
    by_name: HashMap<&'static str, usize>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|t| t.name))
            .finish()
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut tools = Vec::new();
    for set in Toolset::ALL {
        let defs = crate::tools::of(set);
        debug_assert!(defs.iter().all(|t| t.toolset == set));
        tools.extend(defs);
    }
    let by_name = tools.iter().enumerate().map(|(i, t)| (t.name, i)).collect();
    Registry { tools, by_name }
});

impl Registry {
    /// The registry.
    pub fn get() -> &'static Self {
        &REGISTRY
    }

    /// Every tool, by toolset in listing order.
    pub fn all(&self) -> &[ToolDef] {
        &self.tools
    }

    /// The tool of this name.
    pub fn find(&self, name: &str) -> Option<&ToolDef> {
        self.by_name.get(name).map(|&i| &self.tools[i])
    }
}
