//! Running one command: argv (never a shell), the event in `CALLHOOK_*` variables and as
//! JSON on stdin, a working folder, a timeout that kills the whole process tree, and a
//! bounded capture of its output for the log.
//!
//! Commands are local actions of the moment (a screen pop, a CRM lookup): a command that
//! fails, or runs out of time, is not run again later; its job is kept as dead with the
//! exit code and the start of its error output.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::Delivery;
use crate::rules::action::CommandSpec;
use crate::rules::secret_ref::{LiteralKeys, Resolved};

/// Keep at most this much of a command's stdout and of its stderr.
const CAPTURE: usize = 4096;

/// Runs `spec` to its end (or its timeout), its secrets read now; what it printed and
/// the reason of a failure have them hidden.
pub async fn run(spec: &CommandSpec) -> Delivery {
    let resolved = match spec.secret_refs.resolve(&LiteralKeys::default()) {
        Ok(resolved) => resolved,
        Err(e) => return Delivery::GiveUp(format!("secret: {e}")),
    };
    let argv: Vec<String> = spec.argv.iter().map(|a| resolved.expand(a)).collect();
    let env: Vec<(String, String)> = spec.env.iter().map(|(k, v)| (k.clone(), resolved.expand(v))).collect();
    if argv.iter().chain(env.iter().map(|(_, v)| v)).any(|a| a.contains('\0')) {
        return Delivery::GiveUp("argv/env: a value holds a NUL byte".into());
    }
    match run_resolved(spec, &argv, &env, &resolved).await {
        Delivery::GiveUp(reason) => Delivery::GiveUp(resolved.redact(&reason)),
        other => other,
    }
}

async fn run_resolved(spec: &CommandSpec, argv: &[String], env: &[(String, String)], resolved: &Resolved) -> Delivery {
    let Some((program, args)) = argv.split_first() else {
        return Delivery::GiveUp("empty argv".into());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    // Its own process group, so a timeout can end the children it started too.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Delivery::GiveUp(format!("cannot start {program}: {e}")),
    };
    let pid = child.id();
    if let (Some(input), Some(mut stdin)) = (&spec.stdin, child.stdin.take()) {
        let input = input.clone();
        // A command that does not read its stdin must not block us: write aside.
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let stdout = tokio::spawn(capture(child.stdout.take()));
    let stderr = tokio::spawn(capture(child.stderr.take()));
    let timeout = Duration::from_millis(spec.timeout_ms.max(1));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Delivery::GiveUp(format!("{program}: {e}")),
        Err(_) => {
            kill_tree(pid);
            let _ = child.kill().await;
            return Delivery::GiveUp(format!(
                "{program}: timed out after {timeout:?}, killed with its children"
            ));
        }
    };
    let out = resolved.redact(&stdout.await.unwrap_or_default());
    let err = resolved.redact(&stderr.await.unwrap_or_default());
    if !out.is_empty() {
        tracing::info!(program = %program, "output: {}", out.trim_end());
    }
    if status.success() {
        if !err.is_empty() {
            tracing::info!(program = %program, "error output: {}", err.trim_end());
        }
        Delivery::Done(format!("exit {}", status.code().unwrap_or(0)))
    } else {
        let code = status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "by signal".into());
        Delivery::GiveUp(format!(
            "{program} exited {code}{}",
            if err.is_empty() {
                String::new()
            } else {
                format!(": {}", err.trim_end())
            }
        ))
    }
}

/// Reads a pipe to its end, keeping the first [`CAPTURE`] bytes.
async fn capture(pipe: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = CAPTURE.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
    // A command's output goes into one log line: it must not forge others.
    crate::event::escape_controls(String::from_utf8_lossy(&kept).trim_end()).into_owned()
}

/// Ends a timed-out command and everything it started.
fn kill_tree(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    #[cfg(unix)]
    // SAFETY: killpg only sends a signal; the group is the child's own (process_group(0)).
    unsafe {
        libc::killpg(pid as libc::pid_t, libc::SIGKILL);
    }
    #[cfg(windows)]
    {
        let _ = std::process::Command::new("taskkill")
            .args(["/T", "/F", "/PID", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
