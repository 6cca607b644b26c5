//! The clusters a server talks to: talosconfig contexts, their clients, and which nodes a call
//! may target.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use talos_client::{CallOptions, GrpcTalosClient, TalosApi, TalosError};
use talos_config::{Context, TalosConfig};

use crate::error::ToolError;

/// Builds a client for a resolved context (the gRPC client in production, a mock in tests).
pub type ApiFactory = Arc<dyn Fn(&Context) -> Result<Arc<dyn TalosApi>, TalosError> + Send + Sync>;

/// The production factory: a [`GrpcTalosClient`] per context.
pub fn grpc_factory(settings: talos_client::ClientSettings) -> ApiFactory {
    Arc::new(move |ctx| {
        Ok(Arc::new(GrpcTalosClient::with_settings(ctx, settings.clone())?) as Arc<dyn TalosApi>)
    })
}

/// An address block nodes may come from, e.g. `10.5.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has an invalid prefix length"))?
        };
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> u128 {
            match ip {
                IpAddr::V4(v4) => u128::from(u32::from(v4)),
                IpAddr::V6(v6) => u128::from(v6),
            }
        }
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let shift = width - u32::from(self.prefix);
        if shift >= 128 {
            return true;
        }
        (bits(self.addr) >> shift) == (bits(ip) >> shift)
    }
}

/// Default largest number of distinct nodes one call may target (`--max-nodes`).
pub const DEFAULT_MAX_NODES: usize = 256;

/// Longest hostname (RFC 1035) accepted as an alias of a node.
const MAX_HOSTNAME: usize = 253;

/// A node as written in a call or a talosconfig, in one spelling: trimmed, IP addresses in
/// canonical form (`::ffff:10.5.0.2` is `10.5.0.2`, brackets dropped), names lower-cased.
pub(crate) fn normalise(node: &str) -> String {
    let node = node.trim();
    let bare = node
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(node);
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => node.to_ascii_lowercase(),
    }
}

/// One context with its client and what is known about its nodes.
///
/// A call may target: the talosconfig's nodes and endpoint hosts (as the operator wrote them),
/// the addresses of discovered cluster members, addresses inside the operator's CIDRs, and
/// hostnames the nodes reported. A reported hostname is only an alias: it is pinned to the
/// address of the node that reported it, and the call goes to that address, never to whatever
/// the name resolves to.
pub(crate) struct ContextEntry {
    pub(crate) name: String,
    pub(crate) api: Arc<dyn TalosApi>,
    /// Default targets: the context's nodes, else its endpoint hosts.
    pub(crate) default_nodes: Vec<String>,
    /// The talosconfig's nodes and endpoint hosts, normalised.
    static_allowed: BTreeSet<String>,
    /// Addresses of discovered cluster members (IP addresses only).
    discovered: RwLock<BTreeSet<String>>,
    /// The hostname each node reported, by node address.
    hostnames: RwLock<HashMap<String, String>>,
    /// Reported hostnames (normalised) and the node address each is pinned to.
    aliases: RwLock<HashMap<String, String>>,
    discovery: tokio::sync::Mutex<bool>,
    /// The upgrade API each node turned out to have, by node address (detected once).
    upgrade_apis: RwLock<HashMap<String, crate::tools::upgrade::UpgradeApi>>,
}

impl std::fmt::Debug for ContextEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextEntry")
            .field("name", &self.name)
            .field("default_nodes", &self.default_nodes)
            .finish_non_exhaustive()
    }
}

impl ContextEntry {
    fn new(ctx: &Context, api: Arc<dyn TalosApi>) -> Self {
        let hosts: Vec<String> = ctx
            .endpoints()
            .iter()
            .map(|e| e.host().to_owned())
            .collect();
        let default_nodes = if ctx.nodes().is_empty() {
            hosts.clone()
        } else {
            ctx.nodes().to_vec()
        };
        let static_allowed = ctx
            .nodes()
            .iter()
            .chain(&hosts)
            .map(|n| normalise(n))
            .collect();
        Self {
            name: ctx.name().to_owned(),
            api,
            default_nodes,
            static_allowed,
            discovered: RwLock::new(BTreeSet::new()),
            hostnames: RwLock::new(HashMap::new()),
            aliases: RwLock::new(HashMap::new()),
            discovery: tokio::sync::Mutex::new(false),
            upgrade_apis: RwLock::new(HashMap::new()),
        }
    }

    /// The upgrade API `node` turned out to have, when an upgrade found out.
    pub(crate) fn upgrade_api(&self, node: &str) -> Option<crate::tools::upgrade::UpgradeApi> {
        read(&self.upgrade_apis).get(node).copied()
    }

    /// Records the upgrade API `node` turned out to have (bounded like the hostnames: one entry
    /// per node this entry resolved).
    pub(crate) fn remember_upgrade_api(&self, node: &str, api: crate::tools::upgrade::UpgradeApi) {
        write(&self.upgrade_apis).insert(node.to_owned(), api);
    }

    /// The hostname a node reported, when known.
    pub(crate) fn hostname(&self, node: &str) -> Option<String> {
        read(&self.hostnames).get(node).cloned()
    }

    /// Records the hostname `node` (an address this entry resolved) reported, and allows the
    /// hostname as an alias of that node only.
    pub(crate) fn remember_hostname(&self, node: &str, hostname: &str) {
        let hostname = hostname.trim();
        if hostname.is_empty() || hostname.len() > MAX_HOSTNAME {
            return;
        }
        write(&self.hostnames).insert(node.to_owned(), hostname.to_owned());
        self.alias(hostname, node);
    }

    /// Pins `name` to `address`. A name that looks like an IP address is never an alias: an
    /// address always means itself.
    fn alias(&self, name: &str, address: &str) {
        let name = normalise(name);
        if name.is_empty() || name.len() > MAX_HOSTNAME || name.parse::<IpAddr>().is_ok() {
            return;
        }
        if name != address {
            write(&self.aliases).insert(name, address.to_owned());
        }
    }

    /// The node a call naming `node` goes to, if it is allowed: the node itself (normalised), or
    /// for a reported hostname the address it is pinned to.
    fn resolve(&self, node: &str, cidrs: &[Cidr]) -> Option<String> {
        let node = normalise(node);
        if self.static_allowed.contains(&node) || read(&self.discovered).contains(&node) {
            return Some(node);
        }
        if let Ok(ip) = node.parse::<IpAddr>() {
            return cidrs.iter().any(|c| c.contains(ip)).then_some(node);
        }
        read(&self.aliases).get(&node).cloned()
    }

    /// The node addresses (and talosconfig names) calls may target: the talosconfig's and the
    /// discovered members', sorted; hostnames are not included.
    pub(crate) fn node_addresses(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.static_allowed.clone();
        all.extend(read(&self.discovered).iter().cloned());
        all.into_iter().collect()
    }

    fn allowed_list(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.static_allowed.clone();
        all.extend(read(&self.discovered).iter().cloned());
        all.extend(read(&self.aliases).keys().cloned());
        all.into_iter().collect()
    }

    /// Learns cluster members (etcd members and COSI cluster members) once, through the default
    /// endpoint, so nodes that joined after the talosconfig was written can be targeted. Only
    /// their IP addresses are allowed; the names they report become aliases of those addresses.
    async fn discover(&self) {
        let mut done = self.discovery.lock().await;
        if *done {
            return;
        }
        *done = true;
        let mut found = BTreeSet::new();
        let mut names: Vec<(String, String)> = Vec::new();
        let opts = CallOptions::endpoint();
        if let Ok(members) = self.api.etcd_members(&opts).await {
            for m in members {
                let addrs: Vec<String> = m
                    .peer_urls
                    .iter()
                    .chain(&m.client_urls)
                    .filter_map(|u| url_host(u))
                    .filter_map(|h| ip_only(&h))
                    .collect();
                if let Some(first) = addrs.first() {
                    names.push((m.hostname.clone(), first.clone()));
                }
                found.extend(addrs);
            }
        }
        if let Ok(members) = self
            .api
            .resource_list(&opts, "cluster", "Members.cluster.talos.dev", 1000)
            .await
        {
            for m in members {
                let Ok(spec) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&m.spec_yaml) else {
                    continue;
                };
                let addrs: Vec<String> = spec
                    .get("addresses")
                    .and_then(|a| a.as_sequence())
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str())
                    .filter_map(ip_only)
                    .collect();
                if let Some(first) = addrs.first() {
                    names.push((m.id.clone(), first.clone()));
                    if let Some(h) = spec.get("hostname").and_then(|h| h.as_str()) {
                        names.push((h.to_owned(), first.clone()));
                    }
                }
                found.extend(addrs);
            }
        }
        tracing::debug!(context = %self.name, discovered = found.len(), "discovered cluster members");
        write(&self.discovered).extend(found);
        for (name, address) in names {
            self.alias(&name, &address);
        }
    }
}

/// `host` normalised, if it is an IP address.
fn ip_only(host: &str) -> Option<String> {
    let n = normalise(host);
    n.parse::<IpAddr>().is_ok().then_some(n)
}

/// The host part of a URL such as `https://10.5.0.2:2380` or `https://[fd00::2]:2379`.
pub(crate) fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next()?;
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A call's resolved targets.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    pub(crate) entry: Arc<ContextEntry>,
    pub(crate) nodes: Vec<String>,
}

/// Every context the server can use, resolved lazily and cached.
pub struct Clusters {
    config: Option<TalosConfig>,
    fixed: HashMap<String, Context>,
    default_context: Option<String>,
    factory: ApiFactory,
    cidrs: Vec<Cidr>,
    /// Contexts the operator serves (`--contexts`; `None`: all).
    served: Option<BTreeSet<String>>,
    max_nodes: usize,
    entries: Mutex<HashMap<String, Arc<ContextEntry>>>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters")
            .field("contexts", &self.context_names())
            .field("default_context", &self.default_context)
            .field("cidrs", &self.cidrs)
            .finish_non_exhaustive()
    }
}

impl Clusters {
    /// Serves every context of a talosconfig; `default_context` overrides its current context.
    pub fn from_talosconfig(
        config: TalosConfig,
        default_context: Option<String>,
        factory: ApiFactory,
    ) -> Self {
        Self {
            default_context: default_context
                .or_else(|| config.current_context().map(str::to_owned)),
            config: Some(config),
            fixed: HashMap::new(),
            factory,
            cidrs: Vec::new(),
            served: None,
            max_nodes: DEFAULT_MAX_NODES,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Serves one already resolved context (embedders, tests).
    pub fn from_context(context: Context, factory: ApiFactory) -> Self {
        Self {
            default_context: Some(context.name().to_owned()),
            fixed: HashMap::from([(context.name().to_owned(), context)]),
            config: None,
            factory,
            cidrs: Vec::new(),
            served: None,
            max_nodes: DEFAULT_MAX_NODES,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Also allows nodes inside these address blocks.
    #[must_use]
    pub fn with_allowed_cidrs(mut self, cidrs: Vec<Cidr>) -> Self {
        self.cidrs = cidrs;
        self
    }

    /// At most `max` distinct nodes per call (default [`DEFAULT_MAX_NODES`]).
    #[must_use]
    pub fn with_max_nodes(mut self, max: usize) -> Self {
        self.max_nodes = max.max(1);
        self
    }

    /// Serves only these contexts (empty: all). Other contexts are refused as if they did not
    /// exist and are not listed. Fails on a name the talosconfig does not have. When the default
    /// context is not served, the only served context becomes the default, else calls must name
    /// one.
    pub fn with_served_contexts(mut self, names: &[String]) -> Result<Self, String> {
        if names.is_empty() {
            return Ok(self);
        }
        let all = self.all_context_names();
        if let Some(bad) = names.iter().find(|n| !all.contains(n)) {
            return Err(format!(
                "context `{}` is not in the talosconfig; its contexts: {}",
                crate::error::echo(bad),
                all.join(", ")
            ));
        }
        let served: BTreeSet<String> = names.iter().cloned().collect();
        if self
            .default_context
            .as_ref()
            .is_some_and(|d| !served.contains(d))
        {
            self.default_context = None;
        }
        if self.default_context.is_none() && served.len() == 1 {
            self.default_context = served.first().cloned();
        }
        self.served = Some(served);
        Ok(self)
    }

    fn is_served(&self, name: &str) -> bool {
        self.served.as_ref().is_none_or(|s| s.contains(name))
    }

    fn all_context_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.fixed.keys().cloned().collect();
        if let Some(c) = &self.config {
            names.extend(c.context_names());
        }
        names.sort();
        names.dedup();
        names
    }

    /// The names of the contexts served.
    pub fn context_names(&self) -> Vec<String> {
        let mut names = self.all_context_names();
        names.retain(|n| self.is_served(n));
        names
    }

    /// The context used when a call names none.
    pub fn default_context(&self) -> Option<&str> {
        self.default_context.as_deref()
    }

    /// Context summaries without secrets: (name, endpoints, nodes).
    pub fn summaries(&self) -> Vec<(String, Vec<String>, Vec<String>)> {
        let mut out: Vec<_> = self
            .fixed
            .values()
            .map(|c| {
                (
                    c.name().to_owned(),
                    c.endpoints().iter().map(ToString::to_string).collect(),
                    c.nodes().to_vec(),
                )
            })
            .collect();
        if let Some(cfg) = &self.config {
            out.extend(
                cfg.summaries()
                    .into_iter()
                    .map(|s| (s.name, s.endpoints, s.nodes)),
            );
        }
        out.retain(|(name, _, _)| self.is_served(name));
        out
    }

    pub(crate) fn entry(&self, context: Option<&str>) -> Result<Arc<ContextEntry>, ToolError> {
        let name = match context.or(self.default_context.as_deref()) {
            Some(n) => n.to_owned(),
            None => {
                return Err(ToolError::invalid(
                    "context",
                    format!(
                        "is required: no default context is set (or it is not served); available: {}",
                        self.context_names().join(", ")
                    ),
                ));
            }
        };
        if !self.is_served(&name) {
            return Err(ToolError::UnknownContext {
                name,
                available: self.context_names(),
            });
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = entries.get(&name) {
            return Ok(e.clone());
        }
        let ctx = match (self.fixed.get(&name), &self.config) {
            (Some(c), _) => c.clone(),
            (None, Some(cfg)) if cfg.context_names().contains(&name) => cfg.context(Some(&name))?,
            _ => {
                return Err(ToolError::UnknownContext {
                    name,
                    available: self.context_names(),
                });
            }
        };
        let api = (self.factory)(&ctx)?;
        let entry = Arc::new(ContextEntry::new(&ctx, api));
        entries.insert(name, entry.clone());
        Ok(entry)
    }

    /// Resolves a call's `context` and `nodes`: nodes default to the context's; every node must
    /// be allowed (checked before any call reaches it). Nodes come back normalised, hostnames
    /// replaced by the address they are pinned to, each node once, at most `max_nodes` of them.
    pub(crate) async fn targets(
        &self,
        context: Option<&str>,
        nodes: Option<&[String]>,
    ) -> Result<Targets, ToolError> {
        let entry = self.entry(context)?;
        let asked: &[String] = match nodes {
            Some(list) if !list.is_empty() => list,
            _ => &entry.default_nodes,
        };
        if asked.is_empty() {
            return Err(ToolError::invalid(
                "nodes",
                "is empty and the context defines no nodes or endpoints",
            ));
        }
        let mut seen_asked = HashSet::new();
        let mut seen = HashSet::new();
        let mut resolved = Vec::new();
        for node in asked {
            let node = node.trim();
            if node.is_empty() {
                return Err(ToolError::invalid("nodes", "contains an empty entry"));
            }
            if !seen_asked.insert(node) {
                continue;
            }
            let address = match entry.resolve(node, &self.cidrs) {
                Some(a) => a,
                None => {
                    entry.discover().await;
                    entry
                        .resolve(node, &self.cidrs)
                        .ok_or_else(|| ToolError::NodeNotAllowed {
                            node: node.to_owned(),
                            context: entry.name.clone(),
                            allowed: entry.allowed_list(),
                        })?
                }
            };
            if seen.insert(address.clone()) {
                if resolved.len() == self.max_nodes {
                    return Err(ToolError::invalid(
                        "nodes",
                        format!(
                            "names more than {} distinct nodes, the most one call may target \
                             (the operator sets this with --max-nodes); split the call",
                            self.max_nodes
                        ),
                    ));
                }
                resolved.push(address);
            }
        }
        Ok(Targets {
            entry,
            nodes: resolved,
        })
    }

    /// Resolves a call that must target exactly one node.
    pub(crate) async fn single(
        &self,
        context: Option<&str>,
        node: Option<&str>,
    ) -> Result<(Arc<ContextEntry>, String), ToolError> {
        let nodes = node.map(|n| vec![n.to_owned()]);
        let t = self.targets(context, nodes.as_deref()).await?;
        let node = t
            .nodes
            .into_iter()
            .next()
            .ok_or_else(|| ToolError::invalid("node", "is required"))?;
        Ok((t.entry, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership() {
        let c: Cidr = "10.5.0.0/24".parse().unwrap();
        assert!(c.contains("10.5.0.9".parse().unwrap()));
        assert!(!c.contains("10.5.1.9".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let one: Cidr = "fd00::1".parse().unwrap();
        assert!(
            one.contains("fd00::1".parse().unwrap()) && !one.contains("fd00::2".parse().unwrap())
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://10.5.0.2:2380").as_deref(),
            Some("10.5.0.2")
        );
        assert_eq!(
            url_host("https://[fd00::2]:2379").as_deref(),
            Some("fd00::2")
        );
        assert_eq!(url_host("cp-1").as_deref(), Some("cp-1"));
    }
}
