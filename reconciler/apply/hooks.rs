//! Running the site owner's commands (hooks, command health checks, and
//! every other command sitekeeper runs for a site) with a timeout that
//! holds: each runs in a process group of its own, and nothing of that
//! group outlives the run. Output is kept only as a bounded tail, for the
//! error and for `hooks.log`. This module must never wait on a child
//! without a deadline.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// How much of each of stdout and stderr is kept: the last bytes, which
/// say why a command failed. The rest is counted, not stored, so a command
/// printing gigabytes costs no more memory than one printing this much.
pub const OUTPUT_KEPT: usize = 64 * 1024;

/// How much of the kept output an error message quotes; `hooks.log` has
/// all that was kept.
const EXCERPT: usize = 2 * 1024;

/// How often the leader is checked for having exited while its output
/// stays quiet. Output itself wakes the loop at once.
const TICK: Duration = Duration::from_millis(20);

/// How long a killed leader may take to be reaped. SIGKILL is immediate
/// unless the process is stuck in the kernel (a hung network file system);
/// then it is left a zombie rather than holding the change hostage.
const REAP_GRACE: Duration = Duration::from_secs(2);

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
    /// `SITEKEEPER_DATA_FILE`, for a data `snapshot` or `restore` command
    /// (SPEC §6.6).
    pub data_file: Option<&'a Path>,
}

/// Why a command did not succeed. `output` is stdout then stderr, each cut
/// to its last [`OUTPUT_KEPT`] bytes with a note of how much was cut.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The command line is empty.
    #[error("empty command")]
    Empty,
    /// The program could not be started: not found, not executable, or the
    /// site root is not a directory to run it in.
    #[error("`{program}` cannot run: {source}{hint}", hint = cannot_run_hint(source))]
    CannotRun {
        /// The program as written.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// It exited unsuccessfully or was killed by a signal.
    #[error("`{command}` failed ({status}){}", excerpt(output))]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// What it printed (capped).
        output: String,
    },
    /// It ran past its timeout, and its whole process group was killed.
    #[error(
        "`{command}` did not finish within {}, so it was killed with its process group{}{}",
        seconds(*after),
        if *output_held { " (it had exited, but a process it started still held its output open)" } else { "" },
        excerpt(output)
    )]
    TimedOut {
        /// The command line.
        command: String,
        /// The timeout.
        after: Duration,
        /// Whether the command itself had exited, and what kept the run
        /// going was a process it started that still held its output.
        output_held: bool,
        /// What it printed before (capped).
        output: String,
    },
    /// Waiting for it failed (the operating system lost track of the
    /// child); its process group was killed.
    #[error("`{command}`: waiting for it failed: {source}; it was killed with its process group")]
    Lost {
        /// The command line.
        command: String,
        /// Why.
        source: io::Error,
    },
}

impl HookError {
    /// Whether the program does not exist (so a caller may treat an
    /// optional tool's absence differently from its failure). The kernel
    /// says the same of a missing site root, which callers have opened
    /// before running anything in it.
    pub fn is_missing_program(&self) -> bool {
        matches!(self, Self::CannotRun { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// What the command printed before it failed (capped), if it ran.
    pub fn output(&self) -> &str {
        match self {
            Self::Failed { output, .. } | Self::TimedOut { output, .. } => output,
            Self::Empty | Self::CannotRun { .. } | Self::Lost { .. } => "",
        }
    }
}

fn cannot_run_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::NotFound => {
            " (hint: install it, or write its full path; the site root must exist too)"
        }
        io::ErrorKind::PermissionDenied => " (hint: make it executable by sitekeeper's user)",
        _ => "",
    }
}

/// The end of `output` for an error message: a site owner reads the last
/// lines; the log keeps the rest.
fn excerpt(output: &str) -> String {
    let output = output.trim();
    if output.is_empty() {
        return String::new();
    }
    if output.len() <= EXCERPT {
        return format!(": {output}");
    }
    let mut start = output.len() - EXCERPT;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    format!(": …{} (the full output is in hooks.log)", &output[start..])
}

/// `30s`, `1m30s`, or `500ms` below a whole second.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        crate::model::values::Duration(d).to_string()
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Appends one run to the hook log; a log that cannot be written never
/// fails the change.
fn log(env: &HookEnv<'_>, argv: &[String], result: &Result<String, HookError>) {
    let (verdict, output) = match result {
        Ok(output) => ("ok".to_owned(), output.as_str()),
        Err(e) => {
            let why = match e {
                HookError::Failed { status, .. } => status.to_string(),
                HookError::TimedOut {
                    after, output_held, ..
                } => format!(
                    "timed out after {}, its process group killed{}",
                    seconds(*after),
                    if *output_held {
                        " (a process it started held its output open)"
                    } else {
                        ""
                    }
                ),
                other => other.to_string(),
            };
            (format!("FAILED: {why}"), e.output())
        }
    };
    let mut line = format!(
        "{} {} {verdict}\n{output}",
        jiff::Timestamp::now(),
        argv.join(" ")
    );
    if !line.ends_with('\n') {
        line.push('\n');
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.log)
    {
        let _ = std::io::Write::write_all(&mut f, line.as_bytes());
    }
}

/// Runs `argv` like `run_unlogged` and appends it to the hook log.
pub fn run(argv: &[String], env: &HookEnv<'_>, timeout: Duration) -> Result<String, HookError> {
    run_counting(argv, env, timeout, &|_| {})
}

/// [`run`], telling `lines` how many lines of output the command has
/// printed so far each time that grows (a migration's progress, SPEC §6.6).
pub fn run_counting(
    argv: &[String],
    env: &HookEnv<'_>,
    timeout: Duration,
    lines: &dyn Fn(u64),
) -> Result<String, HookError> {
    let result = run_unlogged(argv, env, timeout, lines);
    log(env, argv, &result);
    result
}

/// Runs `argv` in the site root, in a process group of its own, for at
/// most `timeout`; `Ok` carries its output (capped).
///
/// The run is over when the command has exited *and* its stdout and
/// stderr are closed (everything it started that shares them is done).
/// Whatever happens, when this returns the process group has been sent
/// SIGKILL and the command reaped.
fn run_unlogged(
    argv: &[String],
    env: &HookEnv<'_>,
    timeout: Duration,
    lines: &dyn Fn(u64),
) -> Result<String, HookError> {
    let started = Instant::now();
    let Some((program, args)) = argv.split_first() else {
        return Err(HookError::Empty);
    };
    let command = argv.join(" ");
    let mut command_line = Command::new(program);
    command_line
        .args(args)
        .current_dir(env.root)
        .env("SITEKEEPER_SITE", env.site)
        .env("SITEKEEPER_ROOT", env.root)
        .env("SITEKEEPER_VERSION_FROM", env.from)
        .env("SITEKEEPER_VERSION_TO", env.to);
    if let Some(file) = env.data_file {
        command_line.env("SITEKEEPER_DATA_FILE", file);
    }
    let mut child = command_line
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that one signal reaches a shell's children too;
        // it also keeps a terminal's Ctrl-C meant for sitekeeper from
        // reaching the hook directly.
        .process_group(0)
        .spawn()
        .map_err(|source| HookError::CannotRun {
            program: program.clone(),
            source,
        })?;
    let streams = [
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    ];
    let mut running = Running::new(child);
    let mut streams = streams.map(Stream::new);
    let ended = supervise(&mut running, &mut streams, started + timeout, lines);
    // Our ends close here: a process that escaped the group (setsid) and
    // still writes gets EPIPE instead of filling a pipe nobody reads.
    let [out, err] = streams.map(|s| s.tail);
    let output = out.finish() + &err.finish();
    let status = running.finish();
    match ended {
        Ok(Ended::Exited) => match status {
            Some(s) if s.success() => Ok(output),
            Some(status) => Err(HookError::Failed {
                command,
                status,
                output,
            }),
            None => Err(HookError::Lost {
                command,
                source: io::Error::other("it exited but could not be reaped"),
            }),
        },
        Ok(Ended::Deadline { output_held }) => Err(HookError::TimedOut {
            command,
            after: timeout,
            output_held,
            output,
        }),
        Err(source) => Err(HookError::Lost { command, source }),
    }
}

/// How the wait for a command ended.
enum Ended {
    /// It exited and its output closed.
    Exited,
    /// The deadline came first; `output_held` when it had exited but its
    /// output was still open.
    Deadline { output_held: bool },
}

/// Reads the command's output until it has exited and both pipes are
/// closed, or until `deadline`. Single-threaded on purpose: a reader
/// thread blocked on a pipe that a stray grandchild holds open cannot be
/// stopped, whereas `poll` with a timeout can always give up.
fn supervise(
    running: &mut Running,
    streams: &mut [Stream; 2],
    deadline: Instant,
    lines: &dyn Fn(u64),
) -> io::Result<Ended> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut exited = false;
    let mut lines_told = 0;
    loop {
        if !exited {
            exited = running.has_exited()?;
        }
        let open = streams.iter().any(|s| s.pipe.is_some());
        if exited && !open {
            return Ok(Ended::Exited);
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(Ended::Deadline {
                output_held: exited,
            });
        };
        // While the leader runs, wake every tick to notice its exit; once it
        // has exited only its output closing (or the deadline) ends the wait.
        let wait = if exited { left } else { left.min(TICK) };
        if !open {
            std::thread::sleep(wait);
            continue;
        }
        let mut ready = [false; 2];
        {
            let mut fds = Vec::with_capacity(2);
            let mut which = Vec::with_capacity(2);
            for (i, s) in streams.iter().enumerate() {
                if let Some(pipe) = &s.pipe {
                    fds.push(PollFd::new(pipe, PollFlags::IN));
                    which.push(i);
                }
            }
            let timeout = Timespec::try_from(wait).map_err(io::Error::other)?;
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            for (fd, i) in fds.iter().zip(which) {
                ready[i] = !fd.revents().is_empty();
            }
        }
        for (s, ready) in streams.iter_mut().zip(ready) {
            if ready {
                s.read_some(&mut buf);
            }
        }
        let printed = streams.iter().map(|s| s.tail.lines).sum();
        if printed != lines_told {
            lines_told = printed;
            lines(printed);
        }
    }
}

/// One of the command's output pipes and what was kept of it.
struct Stream {
    pipe: Option<File>,
    tail: Tail,
}

impl Stream {
    fn new(fd: Option<OwnedFd>) -> Self {
        Self {
            pipe: fd.map(File::from),
            tail: Tail::default(),
        }
    }

    /// One read, after `poll` said the pipe is readable (so it does not
    /// block); end of file or an error closes it.
    fn read_some(&mut self, buf: &mut [u8]) {
        let Some(pipe) = &mut self.pipe else {
            return;
        };
        match pipe.read(buf) {
            Ok(0) => self.pipe = None,
            Ok(n) => self.tail.push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.pipe = None,
        }
    }
}

/// The last [`OUTPUT_KEPT`] bytes of a stream, and how many came before.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    cut: u64,
    /// Lines seen in all, kept and cut.
    lines: u64,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        self.buf.extend_from_slice(bytes);
        // Trimmed only once it is twice the limit, so the copying costs
        // O(1) per byte however much arrives.
        if self.buf.len() > 2 * OUTPUT_KEPT {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() <= OUTPUT_KEPT {
            return;
        }
        let mut excess = self.buf.len() - OUTPUT_KEPT;
        // Start on a character, not inside one: skip UTF-8 continuation
        // bytes (a character has at most three).
        let limit = (excess + 3).min(self.buf.len());
        while excess < limit && self.buf[excess] & 0xC0 == 0x80 {
            excess += 1;
        }
        self.buf.drain(..excess);
        self.cut += excess as u64;
    }

    fn finish(mut self) -> String {
        self.trim();
        let text = String::from_utf8_lossy(&self.buf);
        if self.cut == 0 {
            text.into_owned()
        } else {
            format!("[… {} bytes cut]\n{text}", self.cut)
        }
    }
}

/// The command's leader and the process group it leads. Dropping it kills
/// the group and reaps the leader, so no way out of a run (an error, a
/// panic) leaves anything of it running.
struct Running {
    child: Child,
    group: Option<Pid>,
    status: Option<ExitStatus>,
}

impl Running {
    fn new(child: Child) -> Self {
        let group = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
        Self {
            child,
            group,
            status: None,
        }
    }

    /// Whether the leader has exited, without reaping it: while it is an
    /// unreaped zombie its pid, the group's id, cannot be reused, so
    /// signalling the group afterwards can only reach the hook's own
    /// processes.
    fn has_exited(&self) -> io::Result<bool> {
        let Some(pid) = self.group else {
            return Ok(true);
        };
        let status = rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        )?;
        Ok(status.is_some())
    }

    /// SIGKILL to the whole group, then reaps the leader (within
    /// [`REAP_GRACE`]); its exit status, if it was reaped.
    ///
    /// The group is killed even when the leader exited on its own and its
    /// output closed: what is left then is something the hook started in
    /// the background with its output redirected. Leaving it would let a
    /// hook outlive its run and its timeout, unbounded, on every apply; a
    /// process meant to outlive a hook must leave its group, as daemons do
    /// (`setsid`) or as a service manager starts them.
    fn finish(&mut self) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        if let Some(group) = self.group {
            // ESRCH (nothing left) is the common case for a tidy command.
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
        let until = Instant::now() + REAP_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    return self.status;
                }
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_bytes_and_counts_the_rest() {
        let mut t = Tail::default();
        for _ in 0..100 {
            t.push(&[b'a'; 10_000]);
        }
        t.push(b"the end");
        assert!(
            t.buf.len() <= 2 * OUTPUT_KEPT + 10_000,
            "bounded while pushing"
        );
        let text = t.finish();
        let cut = 1_000_007 - OUTPUT_KEPT;
        assert!(
            text.starts_with(&format!("[… {cut} bytes cut]\n")),
            "{}",
            &text[..40]
        );
        assert!(text.ends_with("aaathe end"));
        assert_eq!(
            text.len(),
            format!("[… {cut} bytes cut]\n").len() + OUTPUT_KEPT
        );
    }

    #[test]
    fn a_tail_never_starts_inside_a_character() {
        let mut t = Tail::default();
        // "é" is two bytes: an odd total puts the cut inside one.
        t.push(b"x");
        for _ in 0..OUTPUT_KEPT {
            t.push("é".as_bytes());
        }
        let text = t.finish();
        assert!(!text.contains('\u{FFFD}'), "no replacement character");
        let body = text.split_once('\n').map(|(_, b)| b).unwrap_or_default();
        assert!(body.chars().all(|c| c == 'é'));
        assert!(body.len() <= OUTPUT_KEPT);
    }

    #[test]
    fn a_short_output_is_kept_whole() {
        let mut t = Tail::default();
        t.push(b"ok\n");
        assert_eq!(t.finish(), "ok\n");
    }

    #[test]
    fn an_error_quotes_only_the_end_of_a_long_output() {
        let long = format!("{}\nthe last line", "x".repeat(10_000));
        let e = excerpt(&long);
        assert!(e.len() < EXCERPT + 100);
        assert!(e.contains("the last line"));
        assert!(e.contains("hooks.log"));
        assert_eq!(excerpt("  \n"), "");
        assert_eq!(excerpt("boom\n"), ": boom");
    }

    #[test]
    fn timeouts_read_as_durations() {
        assert_eq!(seconds(Duration::from_secs(90)), "1m30s");
        assert_eq!(seconds(Duration::from_millis(500)), "500ms");
    }
}
