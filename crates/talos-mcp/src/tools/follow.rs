//! Following a node through a reboot (a plain reboot, an upgrade, a rollback): down, back with a
//! new boot id, on the expected Talos version, its services healthy. Every phase is reported with
//! [`Call::step`]. Coming back, the version and the services are followed with COSI watches
//! ([`crate::watch`]), which fall back to polling on nodes that do not answer watches; going down
//! is polled (a watch only says so by breaking).

use std::time::Duration;

use talos_client::{CallOptions, TalosApi};
use tokio::time::Instant;

use crate::call::Call;
use crate::watch::WaitOutcome;

/// How often the waits ask the node.
const POLL: Duration = Duration::from_millis(250);

/// The deadline of each single question to a node that may be down.
const QUICK: Duration = Duration::from_secs(2);

/// What to follow.
#[derive(Debug, Clone)]
pub(crate) struct Follow {
    /// Put before every step message (e.g. `"10.5.0.2: "`); empty for a single-node tool.
    pub(crate) prefix: String,
    /// The boot id before the action, when it could be read.
    pub(crate) boot_id_before: Option<String>,
    /// Wait until the node reports this Talos version (e.g. `v1.12.0`).
    pub(crate) expect_version: Option<String>,
    /// The version the node ran before the action: with `expect_changed_version`, "back on a
    /// different version" is the goal (a rollback, where the previous version is not known).
    pub(crate) version_before: Option<String>,
    /// Wait until the version differs from `version_before`.
    pub(crate) expect_changed_version: bool,
    /// Wait until every service is running and healthy.
    pub(crate) services_healthy: bool,
    /// The whole follow's budget.
    pub(crate) timeout: Duration,
}

/// What following found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Followed {
    /// The node went down (or was seen back with a new boot id).
    pub(crate) went_down: bool,
    /// The node answered again after going down.
    pub(crate) back: bool,
    /// The boot id after, when it could be read.
    pub(crate) boot_id_after: Option<String>,
    /// The version the node reports after coming back.
    pub(crate) version_after: Option<String>,
    /// The node is on the version asked for (true when none was asked for).
    pub(crate) on_version: bool,
    /// Every service is running and healthy (true when not asked).
    pub(crate) services_healthy: bool,
    /// Seconds spent.
    pub(crate) seconds: u64,
    /// Why the follow did not reach its goal, in words; `None` when it did.
    pub(crate) problem: Option<String>,
}

/// Reads the node's boot id (admin role), if possible.
pub(crate) async fn boot_id(api: &dyn TalosApi, opts: &CallOptions) -> Option<String> {
    api.read_file(opts, "/proc/sys/kernel/random/boot_id", 128)
        .await
        .ok()
        .map(|f| String::from_utf8_lossy(&f.data).trim().to_owned())
        .filter(|b| !b.is_empty())
}

/// How waiting for the node to go down ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Down {
    /// It stopped answering.
    Gone,
    /// It answered with a new boot id: it rebooted faster than it was asked.
    AlreadyBack(String),
    /// It kept answering with the old boot id until the deadline.
    TimedOut,
}

/// Waits until the node stops answering (or is already back with a different boot id).
pub(crate) async fn until_down(
    api: &dyn TalosApi,
    opts: &CallOptions,
    before: Option<&str>,
    deadline: Instant,
) -> Down {
    let quick = opts.clone().with_timeout(QUICK);
    loop {
        if api.version(&quick).await.is_err() {
            return Down::Gone;
        }
        if let Some(before) = before
            && let Some(now) = boot_id(api, &quick).await
            && now != before
        {
            return Down::AlreadyBack(now);
        }
        if Instant::now() >= deadline {
            return Down::TimedOut;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until a node that went down answers again with a boot id other than `before` (any
/// boot id when the old one is unknown or the new one unreadable). `Some(boot id)` when back.
/// With a known boot id it watches the node's `BootIDs` resource.
pub(crate) async fn until_back(
    api: &dyn TalosApi,
    opts: &CallOptions,
    before: Option<&str>,
    deadline: Instant,
) -> Option<Option<String>> {
    if let Some(before) = before {
        let waited = crate::watch::until_new_boot(api, opts, before, left(deadline)).await;
        return match waited.outcome {
            WaitOutcome::Reached(id) => Some(Some(id)),
            WaitOutcome::TimedOut | WaitOutcome::Lost(_) => None,
        };
    }
    let quick = opts.clone().with_timeout(QUICK);
    loop {
        if api.version(&quick).await.is_ok() {
            return Some(boot_id(api, &quick).await);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Time left until `deadline`.
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Waits until the node runs `expected`, watching its `Versions` resource. `Ok(version)` when
/// it does; `Err(last version seen)` at the deadline.
async fn until_expected_version(
    api: &dyn TalosApi,
    opts: &CallOptions,
    expected: &str,
    deadline: Instant,
) -> Result<String, Option<String>> {
    match crate::watch::until_version(api, opts, expected, left(deadline))
        .await
        .outcome
    {
        WaitOutcome::Reached(v) => Ok(v),
        WaitOutcome::TimedOut | WaitOutcome::Lost(_) => Err(api
            .version(&opts.clone().with_timeout(QUICK))
            .await
            .ok()
            .map(|v| v.tag)),
    }
}

/// Waits until the node's version satisfies `wanted`. `Ok(version)` when it does; `Err(last
/// version seen)` at the deadline.
pub(crate) async fn until_version(
    api: &dyn TalosApi,
    opts: &CallOptions,
    wanted: impl Fn(&str) -> bool,
    deadline: Instant,
) -> Result<String, Option<String>> {
    let quick = opts.clone().with_timeout(QUICK);
    let mut last = None;
    loop {
        if let Ok(v) = api.version(&quick).await {
            if wanted(&v.tag) {
                return Ok(v.tag);
            }
            last = Some(v.tag);
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until every service of the node is running and healthy (or has no health check),
/// watching the node's `Services` resources. `Err(the services that are not)` at the deadline.
pub(crate) async fn until_services_healthy(
    api: &dyn TalosApi,
    opts: &CallOptions,
    deadline: Instant,
) -> Result<(), Vec<String>> {
    let waited = crate::watch::until_services_healthy(api, opts, left(deadline)).await;
    if let WaitOutcome::Reached(_) = waited.outcome {
        return Ok(());
    }
    // Say which services are not healthy, from one last read.
    let quick = opts.clone().with_timeout(QUICK);
    Err(match api.services(&quick).await {
        Ok(services) => services
            .iter()
            .filter(|s| s.state != "Running" || !(s.health.healthy || s.health.unknown))
            .map(|s| format!("{} ({})", s.id, s.state))
            .collect::<Vec<_>>(),
        Err(e) => vec![format!("services could not be read: {}", e.kind())],
    })
}

/// Follows a node through a reboot it was just asked to do: down, back with a new boot id, then
/// (when asked) on the expected version and with healthy services. Every phase is a step.
pub(crate) async fn follow_node(
    api: &dyn TalosApi,
    opts: &CallOptions,
    call: &Call,
    what: &Follow,
) -> Followed {
    let started = Instant::now();
    let deadline = started + what.timeout;
    let p = &what.prefix;
    let mut out = Followed::default();
    let seconds = |s: Instant| s.elapsed().as_secs();
    call.step(format!(
        "{p}reboot requested; waiting for the node to go down"
    ))
    .await;
    let before = what.boot_id_before.as_deref();
    let back = match until_down(api, opts, before, deadline).await {
        Down::Gone => {
            out.went_down = true;
            call.step(format!("{p}node is down; waiting for it to come back"))
                .await;
            until_back(api, opts, before, deadline).await
        }
        Down::AlreadyBack(id) => {
            out.went_down = true;
            Some(Some(id))
        }
        Down::TimedOut => None,
    };
    let Some(boot_id_after) = back else {
        call.step(format!("{p}gave up waiting")).await;
        out.seconds = seconds(started);
        out.problem = Some(if out.went_down {
            format!(
                "the node went down but was not back within {} s",
                what.timeout.as_secs()
            )
        } else {
            format!(
                "the node did not go down within {} s",
                what.timeout.as_secs()
            )
        });
        return out;
    };
    out.back = true;
    out.boot_id_after = boot_id_after;
    call.step(format!("{p}node is back with a new boot id"))
        .await;

    out.on_version = true;
    if let Some(expected) = &what.expect_version {
        match until_expected_version(api, opts, expected, deadline).await {
            Ok(v) => {
                call.step(format!("{p}node runs {v}")).await;
                out.version_after = Some(v);
            }
            Err(last) => {
                out.on_version = false;
                out.version_after.clone_from(&last);
                let seen = last.unwrap_or_else(|| "an unknown version".into());
                call.step(format!("{p}node came back on {seen}, not {expected}"))
                    .await;
                out.problem = Some(format!(
                    "the node came back on {seen}, not the expected {expected}"
                ));
            }
        }
    } else if what.expect_changed_version {
        let old = what.version_before.clone().unwrap_or_default();
        match until_version(api, opts, |v| v != old, deadline).await {
            Ok(v) => {
                call.step(format!("{p}node runs {v} (was {old})")).await;
                out.version_after = Some(v);
            }
            Err(last) => {
                out.on_version = false;
                out.version_after = last;
                call.step(format!("{p}node came back still on {old}")).await;
                out.problem = Some(format!(
                    "the node came back still on {old}: nothing changed"
                ));
            }
        }
    } else if let Ok(v) = api.version(&opts.clone().with_timeout(QUICK)).await {
        out.version_after = Some(v.tag);
    }

    out.services_healthy = true;
    if what.services_healthy && out.problem.is_none() {
        call.step(format!("{p}waiting for services to be healthy"))
            .await;
        match until_services_healthy(api, opts, deadline).await {
            Ok(()) => call.step(format!("{p}services are healthy")).await,
            Err(sick) => {
                out.services_healthy = false;
                let list = sick.join(", ");
                call.step(format!("{p}services not healthy: {list}")).await;
                out.problem = Some(format!(
                    "services were not healthy within {} s: {list}",
                    what.timeout.as_secs()
                ));
            }
        }
    }
    out.seconds = seconds(started);
    out
}
