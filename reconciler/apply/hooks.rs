//! Running the site owner's commands (hooks, command health checks) with a
//! timeout, site and version in the environment, and output to the log.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a command run needs to know.
pub struct HookEnv<'a> {
    /// The site.
    pub site: &'a str,
    /// Its root.
    pub root: &'a Path,
    /// Version before.
    pub from: &'a str,
    /// Version after.
    pub to: &'a str,
    /// Where every run's command, result and output are appended.
    pub log: &'a Path,
}

/// Appends one run to the hook log; a log that cannot be written never
/// fails the change.
fn log(env: &HookEnv<'_>, argv: &[String], result: &Result<String, String>) {
    let line = match result {
        Ok(output) => format!(
            "{} {} ok\n{}",
            jiff::Timestamp::now(),
            argv.join(" "),
            output
        ),
        Err(e) => format!(
            "{} {} FAILED\n{e}\n",
            jiff::Timestamp::now(),
            argv.join(" ")
        ),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.log)
    {
        let _ = std::io::Write::write_all(&mut f, line.as_bytes());
    }
}

/// Runs `argv` like `run_unlogged` and appends it to the hook log.
pub fn run(argv: &[String], env: &HookEnv<'_>, timeout: Duration) -> Result<String, String> {
    let result = run_unlogged(argv, env, timeout);
    log(env, argv, &result);
    result
}

/// Runs `argv` in the site root with a timeout; `Err` carries the reason
/// and the command's output.
fn run_unlogged(argv: &[String], env: &HookEnv<'_>, timeout: Duration) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .current_dir(env.root)
        .env("SITEKEEPER_SITE", env.site)
        .env("SITEKEEPER_ROOT", env.root)
        .env("SITEKEEPER_VERSION_FROM", env.from)
        .env("SITEKEEPER_VERSION_TO", env.to)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{}` cannot run: {e}", argv.join(" ")))?;
    // Read output on threads so a chatty command never blocks on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("`{}`: {e}", argv.join(" "))),
        }
    };
    let output = format!(
        "{}{}",
        out_t.join().unwrap_or_default(),
        err_t.join().unwrap_or_default()
    );
    match status {
        Some(s) if s.success() => Ok(output),
        Some(s) => Err(format!(
            "`{}` failed ({s}): {}",
            argv.join(" "),
            output.trim()
        )),
        None => Err(format!(
            "`{}` did not finish within {}s",
            argv.join(" "),
            timeout.as_secs()
        )),
    }
}
