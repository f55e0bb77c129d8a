//! HTTP health checks: a GET that must answer 2xx within the timeout.

use std::time::Duration;

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
