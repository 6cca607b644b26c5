//! The report: rows of figures with their targets, rendered as the Markdown that replaces the
//! generated part of docs/benchmarks.md.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

/// Where the generated part of docs/benchmarks.md starts and ends.
pub(crate) const BEGIN: &str =
    "<!-- bench:begin (written by `cargo xtask bench`; edits here are lost) -->";
pub(crate) const END: &str = "<!-- bench:end -->";

/// One measured figure.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) section: &'static str,
    pub(crate) figure: String,
    pub(crate) measured: String,
    pub(crate) target: String,
    /// `None`: a figure without a target of its own.
    pub(crate) met: Option<bool>,
}

/// Percentiles of a sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

impl Stats {
    /// Sorts the sample and reads its nearest-rank percentiles (zero for an empty sample).
    pub(crate) fn of(sample: &mut [Duration]) -> Self {
        sample.sort_unstable();
        let at = |p: f64| {
            if sample.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((p * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
            sample[rank - 1]
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

/// Milliseconds with a precision that suits the size.
pub(crate) fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `a ÷ b` (infinite when `b` is zero).
pub(crate) fn ratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        f64::INFINITY
    } else {
        a.as_secs_f64() / b.as_secs_f64()
    }
}

/// A whole run.
#[derive(Debug)]
pub(crate) struct Report {
    command: String,
    machine: String,
    build: String,
    quick: bool,
    date: String,
    rows: Vec<Row>,
    /// Sections that failed, with why.
    pub(crate) failures: Vec<(String, String)>,
    /// How long the run took.
    pub(crate) total: Duration,
}

impl Report {
    pub(crate) fn new(command: &str, machine: &str, build: &str, quick: bool) -> Self {
        Self {
            command: command.to_owned(),
            machine: machine.to_owned(),
            build: build.to_owned(),
            quick,
            date: utc_date(SystemTime::now()),
            rows: Vec::new(),
            failures: Vec::new(),
            total: Duration::ZERO,
        }
    }

    pub(crate) fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub(crate) fn failed(&mut self, section: &str, why: &str) {
        self.failures.push((section.to_owned(), why.to_owned()));
    }

    /// The generated Markdown, markers included.
    pub(crate) fn markdown(&self) -> String {
        let mut out = format!("{BEGIN}\n\n");
        out.push_str(&format!(
            "Run of {} on {} ({} UTC), {:.0} s in all; binary measured: {}.{}\n",
            self.command,
            self.machine,
            self.date,
            self.total.as_secs_f64(),
            if self.build.is_empty() {
                "as given"
            } else {
                &self.build
            },
            if self.quick {
                " Quick mode: small sizes and a debug build, for noticing breakage — not figures."
            } else {
                ""
            }
        ));
        let met = self.rows.iter().filter(|r| r.met == Some(true)).count();
        let judged = self.rows.iter().filter(|r| r.met.is_some()).count();
        out.push_str(&format!("\nTargets met: {met} of {judged}.\n"));
        let mut section = "";
        for row in &self.rows {
            if row.section != section {
                section = row.section;
                out.push_str(&format!(
                    "\n### {section}\n\n| figure | measured | target | met |\n|---|---|---|---|\n"
                ));
            }
            let met = match row.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {met} |\n",
                row.figure, row.measured, row.target
            ));
        }
        if !self.failures.is_empty() {
            out.push_str("\n### Sections that failed\n\n");
            for (name, why) in &self.failures {
                out.push_str(&format!("- {name}: {}\n", why.replace('\n', " ")));
            }
        }
        out.push_str(&format!("\n{END}\n"));
        out
    }
}

/// Replaces the generated part of `path` (markers included) with `generated`; a file without
/// the markers is refused rather than overwritten.
pub(crate) fn replace_between_markers(path: &Path, generated: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(start), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no bench:begin/bench:end markers", path.display());
    };
    if end < start {
        bail!("{}: bench:end comes before bench:begin", path.display());
    }
    let new = format!(
        "{}{}{}",
        &text[..start],
        generated.trim_end_matches('\n'),
        &text[end + END.len()..]
    );
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn utc_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), by 400-year eras.
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
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(utc_date(at(0)), "1970-01-01 00:00");
        assert_eq!(utc_date(at(951_782_400)), "2000-02-29 00:00");
        assert_eq!(utc_date(at(1_796_310_000)), "2026-12-03 15:00");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut sample: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = Stats::of(&mut sample);
        assert_eq!(
            (s.p50, s.p99),
            (Duration::from_millis(50), Duration::from_millis(99))
        );
        let one = Stats::of(&mut [Duration::from_millis(7)]);
        assert_eq!(one.p99, Duration::from_millis(7));
        assert_eq!(Stats::of(&mut []).p50, Duration::ZERO);
    }

    #[test]
    fn only_the_generated_part_is_replaced() {
        let dir = std::env::temp_dir().join(format!("talos-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("doc.md");
        let doc = format!("# Head\n\nprose\n\n{BEGIN}\nold\n{END}\n\n## Tail\n");
        std::fs::write(&path, doc).unwrap_or_default();
        let generated = format!("{BEGIN}\nnew\n{END}\n");
        assert!(replace_between_markers(&path, &generated).is_ok());
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            text,
            format!("# Head\n\nprose\n\n{BEGIN}\nnew\n{END}\n\n## Tail\n")
        );
        std::fs::write(&path, "no markers").unwrap_or_default();
        assert!(replace_between_markers(&path, &generated).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            "no markers"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
