//! The tools, one function each, grouped by domain. Each module lists its tools (`tools()`);
//! the registry ([`crate::registry`]) collects them by toolset.

/// `impl ToolArgs` for argument types whose flattened `target` field says where the call goes.
macro_rules! targeted_by_field {
    ($($args:ty),+ $(,)?) => {
        $(impl crate::registry::ToolArgs for $args {
            fn target(&self) -> crate::registry::CallTarget<'_> {
                crate::registry::ToolArgs::target(&self.target)
            }
        })+
    };
}
pub(crate) use targeted_by_field;

pub mod actions;
pub mod backup;
pub mod cluster;
pub mod etcd;
pub mod fleet;
pub(crate) mod follow;
pub mod info;
pub mod kubernetes;
pub mod lifecycle;
pub mod logs;
pub mod operations;
pub mod rolling;
pub mod upgrade;
pub mod workloads;

use std::time::SystemTime;

use crate::error::ToolError;
use crate::registry::{CallTarget, ToolArgs, ToolDef, Toolset};
use crate::server::TargetArgs;

/// The tools of a toolset, in listing order.
pub(crate) fn of(set: Toolset) -> Vec<ToolDef> {
    match set {
        Toolset::Info => info::tools(),
        Toolset::Workloads => workloads::tools(),
        Toolset::Logs => logs::tools(),
        Toolset::Etcd => etcd::tools()
            .into_iter()
            .chain(backup::tools().into_iter().filter(|t| t.toolset == set))
            .collect(),
        Toolset::Cluster => cluster::tools().into_iter().chain(fleet::tools()).collect(),
        Toolset::Kubernetes => kubernetes::tools(),
        Toolset::Lifecycle => lifecycle::tools()
            .into_iter()
            .chain(upgrade::tools())
            .chain(rolling::tools())
            .chain(operations::tools())
            .chain(backup::tools().into_iter().filter(|t| t.toolset == set))
            .collect(),
    }
}

impl ToolArgs for TargetArgs {
    fn target(&self) -> CallTarget<'_> {
        CallTarget {
            context: self.context.as_deref(),
            nodes: self
                .nodes
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(String::as_str)
                .collect(),
        }
    }
}

/// RFC 3339 (UTC, seconds) rendering of a time, without a date library.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Checks `value` is within `min..=max`, naming the argument otherwise.
pub(crate) fn bounded(
    field: &'static str,
    value: u32,
    min: u32,
    max: u32,
) -> Result<u32, ToolError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ToolError::invalid(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

/// Human-readable byte size.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000)),
            "2025-11-24T16:00:00Z"
        );
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(8 << 30), "8.0 GiB");
    }

    #[test]
    fn bounds_name_the_field() {
        assert_eq!(bounded("limit", 5, 1, 10).unwrap(), 5);
        assert!(
            bounded("limit", 0, 1, 10)
                .unwrap_err()
                .to_string()
                .contains("`limit`")
        );
    }
}
