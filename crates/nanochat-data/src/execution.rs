//! Running model-written Python (upstream `nanochat/execution.py`), for HumanEval.
//!
//! Each program runs in its own `python3 -I -B` process, never in ours:
//! - a fresh temporary working directory, removed afterwards;
//! - an **empty environment** and no stdin;
//! - a wall-clock timeout (the process is killed) and a CPU-time limit;
//! - an address-space limit (a memory bomb gets `MemoryError`), a file-size limit, no core
//!   dumps, few open files;
//! - on Linux (x86-64, aarch64) a seccomp filter installed before `exec`, so that the program
//!   **cannot create sockets** (no network), **cannot fork, clone or spawn** processes,
//!   cannot signal or trace other processes, cannot open files for writing, and cannot delete
//!   or rename files. Denied calls fail with `EPERM`, which Python raises as `PermissionError`.
//!
//! Upstream says of its own version that it is "not a security sandbox" (its network is open);
//! this one closes the network and process creation, but it is still not a container: the
//! program can read files the user can read. On other systems only the resource limits apply
//! and [`Sandbox::isolation`] says so.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Resource limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wall-clock limit (upstream: 5 s).
    pub timeout: Duration,
    /// Address-space limit in bytes (upstream: 256 MB).
    pub max_memory_bytes: u64,
    /// Largest file the program may write (bytes).
    pub max_file_bytes: u64,
    /// Kept bytes of stdout and of stderr each.
    pub max_output_bytes: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_memory_bytes: 256 * 1024 * 1024,
            max_file_bytes: 1024 * 1024,
            max_output_bytes: 64 * 1024,
        }
    }
}

/// What a run did (upstream `ExecutionResult`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecutionResult {
    /// Exited with status 0 within the limits.
    pub success: bool,
    /// Captured stdout (truncated at the limit).
    pub stdout: String,
    /// Captured stderr (truncated at the limit).
    pub stderr: String,
    /// The last line of the traceback, or why the run failed.
    pub error: Option<String>,
    /// Killed at the wall-clock or CPU limit.
    pub timeout: bool,
    /// Ran out of its memory limit.
    pub memory_exceeded: bool,
}

/// Why no sandbox could be made.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No `python3` on `PATH`.
    #[error("no python3 found on PATH (HumanEval runs generated code with it)")]
    NoPython,
    /// The seccomp filter could not be built for this machine.
    #[error("cannot build the seccomp filter: {0}")]
    Filter(String),
}

/// A configured sandbox; cheap to share across threads.
#[derive(Debug, Clone)]
pub struct Sandbox {
    python: PathBuf,
    limits: SandboxLimits,
    #[cfg(target_os = "linux")]
    filter: Option<std::sync::Arc<seccompiler::BpfProgram>>,
}

/// The real interpreter behind `python3` on `PATH` (`sys.executable`), so that wrappers such
/// as pyenv shims, which are shell scripts that fork, are not what runs under the filter.
fn find_python() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let launcher = std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())?;
    let out = Command::new(&launcher)
        .args(["-I", "-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && exe.is_file()).then_some(exe)
}

#[cfg(target_os = "linux")]
mod filter {
    use std::collections::BTreeMap;

    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };

    /// Syscalls denied outright.
    fn denied() -> Vec<i64> {
        let mut v = vec![
            libc::SYS_socket,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_kill,
            libc::SYS_tkill,
            libc::SYS_ptrace,
            libc::SYS_process_vm_writev,
            libc::SYS_unlinkat,
            libc::SYS_renameat,
            libc::SYS_renameat2,
            libc::SYS_truncate,
            libc::SYS_setsid,
        ];
        #[cfg(target_arch = "x86_64")]
        v.extend([
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_unlink,
            libc::SYS_rmdir,
            libc::SYS_rename,
            libc::SYS_creat,
        ]);
        v
    }

    /// `flags & O_ACCMODE` is write-only or read-write.
    fn writes(flags_arg: u8) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        let acc = libc::O_ACCMODE as u64;
        Ok(vec![
            SeccompRule::new(vec![SeccompCondition::new(
                flags_arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(acc),
                libc::O_WRONLY as u64,
            )?])?,
            SeccompRule::new(vec![SeccompCondition::new(
                flags_arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(acc),
                libc::O_RDWR as u64,
            )?])?,
        ])
    }

    pub fn build() -> Result<BpfProgram, String> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            denied().into_iter().map(|nr| (nr, Vec::new())).collect();
        let e = |e: seccompiler::BackendError| e.to_string();
        rules.insert(libc::SYS_openat, writes(2).map_err(e)?);
        #[cfg(target_arch = "x86_64")]
        rules.insert(libc::SYS_open, writes(1).map_err(e)?);
        let arch = std::env::consts::ARCH.try_into().map_err(e)?;
        let f = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(e)?;
        f.try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())
    }
}

impl Sandbox {
    /// Finds `python3` and prepares the filter.
    pub fn new(limits: SandboxLimits) -> Result<Self, SandboxError> {
        let python = find_python().ok_or(SandboxError::NoPython)?;
        #[cfg(target_os = "linux")]
        let filter = if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            Some(std::sync::Arc::new(
                filter::build().map_err(SandboxError::Filter)?,
            ))
        } else {
            None
        };
        Ok(Self {
            python,
            limits,
            #[cfg(target_os = "linux")]
            filter,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    /// What isolation this platform gets.
    pub fn isolation(&self) -> &'static str {
        #[cfg(target_os = "linux")]
        if self.filter.is_some() {
            return "resource limits + seccomp (no network, no processes, no writes)";
        }
        "resource limits only (no seccomp on this platform)"
    }

    /// Runs `code` and reports what happened. Never panics and never runs code in this process.
    pub fn run(&self, code: &str) -> ExecutionResult {
        let fail = |msg: String| ExecutionResult {
            error: Some(msg),
            ..Default::default()
        };
        let dir = match tempfile::Builder::new().prefix("nanochat-exec").tempdir() {
            Ok(d) => d,
            Err(e) => return fail(format!("cannot create a temp dir: {e}")),
        };
        let script = dir.path().join("program.py");
        if let Err(e) = std::fs::write(&script, code) {
            return fail(format!("cannot write {}: {e}", script.display()));
        }
        let mut cmd = Command::new(&self.python);
        cmd.arg("-I")
            .arg("-B")
            .arg(&script)
            .current_dir(dir.path())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.restrict(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return fail(format!("cannot start {}: {e}", self.python.display())),
        };
        let cap = self.limits.max_output_bytes as u64;
        let reader = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(p) = pipe {
                    let _ = p.take(cap).read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = reader(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = reader(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let start = Instant::now();
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if start.elapsed() >= self.limits.timeout => {
                    let _ = child.kill();
                    timed_out = true;
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => break None,
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        #[cfg(unix)]
        let cpu_limit = {
            use std::os::unix::process::ExitStatusExt;
            // SIGXCPU: the CPU-time limit.
            status.and_then(|s| s.signal()) == Some(libc::SIGXCPU)
        };
        #[cfg(not(unix))]
        let cpu_limit = false;
        let timeout = timed_out || cpu_limit;
        let memory_exceeded = stderr.contains("MemoryError");
        let success = status.is_some_and(|s| s.success()) && !timeout;
        let error = if success {
            None
        } else if timeout {
            Some(format!("timed out after {:?}", self.limits.timeout))
        } else {
            stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
                .or_else(|| Some(format!("exited with {status:?}")))
        };
        ExecutionResult {
            success,
            stdout,
            stderr,
            error,
            timeout,
            memory_exceeded,
        }
    }

    #[cfg(unix)]
    #[allow(unsafe_code)]
    fn restrict(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let l = self.limits;
        let cpu = l.timeout.as_secs() + 1;
        #[cfg(target_os = "linux")]
        let filter = self.filter.clone();
        // SAFETY: the closure runs in the forked child before exec. It only calls
        // async-signal-safe functions (setrlimit, prctl and seccomp through
        // `seccompiler::apply_filter`, which takes the prebuilt program by reference and does
        // not allocate) and touches no locks.
        unsafe {
            cmd.pre_exec(move || {
                let set = |res, v: u64| {
                    let lim = libc::rlimit {
                        rlim_cur: v as libc::rlim_t,
                        rlim_max: v as libc::rlim_t,
                    };
                    if libc::setrlimit(res, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                };
                set(libc::RLIMIT_AS, l.max_memory_bytes)?;
                set(libc::RLIMIT_CPU, cpu)?;
                set(libc::RLIMIT_FSIZE, l.max_file_bytes)?;
                set(libc::RLIMIT_CORE, 0)?;
                set(libc::RLIMIT_NOFILE, 64)?;
                #[cfg(target_os = "linux")]
                if let Some(f) = &filter {
                    seccompiler::apply_filter(f)
                        .map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))?;
                }
                Ok(())
            });
        }
    }

    #[cfg(not(unix))]
    fn restrict(&self, _cmd: &mut Command) {}
}
