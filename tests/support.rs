//! Helpers shared by the integration tests: running the binary, writing
//! fleets into temporary directories, and making git repositories.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary under test: `SITEKEEPER_TEST_BIN` when set (a long run,
/// `scripts/reliability`, tests a copy so that rebuilding cannot change it
/// halfway), else the one cargo built.
pub fn bin() -> std::path::PathBuf {
    std::env::var_os("SITEKEEPER_TEST_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_sitekeeper").into(), Into::into)
}

/// The `sitekeeper` binary built for these tests, with colour off and a
/// private state dir so that tests never touch the user's.
pub fn sitekeeper(state: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.env("NO_COLOR", "1")
        .env("SITEKEEPER_STATE_DIR", state)
        .env_remove("CI");
    cmd
}

/// Runs `sitekeeper ARGS` in `dir` and returns its output.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    let state = tempfile::tempdir().expect("temp dir");
    sitekeeper(state.path())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run sitekeeper")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `files` (relative path, content) under `root`.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
}

/// A minimal valid catalog: product `acme`, channel `stable`, one release.
pub const CATALOG: &[(&str, &str)] = &[
    ("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n"),
    (
        "releases/1.0.0.yaml",
        "version: 1.0.0\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload:\n  tree: releases/1.0.0/\n",
    ),
    ("releases/1.0.0/index.php", "<?php echo 'hi';\n"),
];

/// A fleet dir `fleet/` with `catalog/` beside it, where the fleet has
/// `fleet.yaml` naming the catalog plus the given extra files.
pub fn fleet_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tree(&dir.path().join("catalog"), CATALOG);
    write_tree(
        &dir.path().join("fleet"),
        &[("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n")],
    );
    write_tree(&dir.path().join("fleet"), files);
    dir
}

/// Runs `git ARGS` in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A deterministic pseudo-random generator (SplitMix64), so generated trees
/// are the same on every run and machine.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A realistic site tree: `files` paths in nested directories, mostly PHP
/// and CSS text, some binary images, sizes from 100 B to 8 KiB.
pub fn generate_tree(seed: u64, files: usize) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut rng = Rng(seed);
    let mut out = std::collections::BTreeMap::new();
    let dirs = [
        "app",
        "lib",
        "themes/default",
        "themes/default/img",
        "vendor/acme/util",
        "admin",
        "app/search",
        "lib/db/drivers",
    ];
    while out.len() < files {
        let dir = dirs[rng.below(dirs.len() as u64) as usize];
        let sub = rng.below(40);
        let n = out.len();
        let binary = rng.below(10) == 0;
        let ext = if binary {
            "png"
        } else if rng.below(4) == 0 {
            "css"
        } else {
            "php"
        };
        let path = format!("{dir}/d{sub}/f{n}.{ext}");
        out.insert(path, content(&mut rng, binary));
    }
    out
}

/// File content: text lines, or bytes with NULs for binary files.
pub fn content(rng: &mut Rng, binary: bool) -> Vec<u8> {
    let size = 100 + rng.below(8 * 1024 - 100) as usize;
    if binary {
        let mut v: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        v[0..4].copy_from_slice(b"\x89PNG");
        v[4] = 0;
        v
    } else {
        let mut s = String::from("<?php\n");
        while s.len() < size {
            s.push_str(&format!(
                "$v{} = compute({}, 'acme');\n",
                rng.below(1000),
                rng.below(100_000)
            ));
        }
        s.into_bytes()
    }
}

/// Writes a generated tree under `root`.
pub fn write_files(root: &Path, files: &std::collections::BTreeMap<String, Vec<u8>>) {
    for (rel, bytes) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
}

/// The SHA-256 of `bytes` as plans write it.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A temporary directory on a RAM file system (`/dev/shm`) where there is
/// one: crash tests copy and scan trees hundreds of times, and this
/// machine's disk makes file creation slow. Process-kill semantics (what
/// those tests check) are the same on any file system.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix("sk-").tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("temp dir")
}

/// Every file under `root` (not following links), with its content, sorted.
pub fn read_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&p).expect("lstat");
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p
                    .strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// Makes a FIFO at `path` (a hostile entry in a site tree).
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

/// A free TCP port on 127.0.0.1 (bound and released; the tiny race with
/// another process is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, within: std::time::Duration) {
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < within, "nothing listens on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A real `git daemon` serving every repository under `base` on
/// 127.0.0.1, stopped when dropped. [`GitDaemon::stop`] and
/// [`GitDaemon::restart`] take it away and bring it back on the same port,
/// as a git server that goes down for a while does.
pub struct GitDaemon {
    child: Option<std::process::Child>,
    /// Its port.
    pub port: u16,
    base: PathBuf,
    extra: Vec<String>,
}

impl GitDaemon {
    /// Starts it, read-only.
    pub fn start(base: &Path) -> Self {
        Self::start_with(base, &[])
    }

    /// Starts it, accepting pushes too.
    pub fn start_writable(base: &Path) -> Self {
        Self::start_with(base, &["--enable=receive-pack"])
    }

    fn start_with(base: &Path, extra: &[&str]) -> Self {
        let mut daemon = Self {
            child: None,
            port: free_port(),
            base: base.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        // Its own process group: `git daemon` runs `git-daemon` as a child,
        // which killing `git` alone would leave running after the test.
        let child = Command::new("git")
            .process_group(0)
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .args(&self.extra)
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg(format!("--base-path={}", self.base.display()))
            .arg(&self.base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon starts");
        self.child = Some(child);
        wait_for_port(self.port, std::time::Duration::from_secs(10));
    }

    /// Stops it (the whole process group); the port then refuses
    /// connections until [`GitDaemon::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (stopping it first if it runs).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The `git://` URL of repository `name` under the base.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The instant tests plan "as of" (`SITEKEEPER_NOW`).
pub const NOW: &str = "2026-11-20T10:00:00Z";

/// Runs the binary on the fleet in `dir/fleet` with state in `dir/state`,
/// at [`NOW`].
pub fn run_fleet(dir: &Path, args: &[&str]) -> Output {
    sitekeeper(&dir.join("state"))
        .current_dir(dir.join("fleet"))
        .env("SITEKEEPER_NOW", NOW)
        .args(args)
        .output()
        .expect("the binary runs")
}

/// A test CA (`ca.pem`) and a server certificate signed by it for
/// 127.0.0.1 (`server.pem`, `server.key`), made in `dir` with the
/// `openssl` command (P-256 keys, valid two days). Clients trust `ca.pem`
/// through an option (`--git-ca-file`) or OpenSSL's `SSL_CERT_FILE`.
pub fn tls_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sitekeeper test CA",
    ];
    openssl(&[&["req", "-x509"][..], &ec, &ca].concat());
    let csr = [
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ];
    openssl(&[&["req"][..], &ec, &csr].concat());
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}
