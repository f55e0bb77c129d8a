//! Health checks (SPEC §6.2): the site's command, run like a hook, or a
//! GET that must answer 2xx within the timeout. Judging before against
//! after is the caller's (`converge`): this only runs a check once.

use std::time::Duration;

use super::hooks::{self, HookEnv};
use crate::model::fleet::Health;

/// How long a check may take when the site file does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the site's check once: its command, else its URL. `Err` says why
/// the site is unhealthy.
pub fn run(check: &Health, env: &HookEnv<'_>) -> Result<(), String> {
    let timeout = check.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
    match (&check.command, &check.http) {
        (Some(cmd), _) => hooks::run(&cmd.0, env, timeout)
            .map(drop)
            .map_err(|e| e.to_string()),
        (None, Some(url)) => http(url.as_str(), timeout),
        (None, None) => Ok(()),
    }
}

/// Checks `url`; `Err` says why it is unhealthy.
pub fn http(url: &str, timeout: Duration) -> Result<(), String> {
    // ureq adds the timeout to `Instant::now()`, which panics on overflow;
    // the model caps every duration, and this keeps a caller's own one safe.
    let timeout = timeout.min(crate::model::values::Duration::MAX);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("{url} answered {}", resp.status())),
        Err(e) => Err(format!("{url}: {e}")),
    }
}
