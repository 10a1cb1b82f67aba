//! `callhookw --log FILE ARGS...`: starts `callhook ARGS...` (the program beside this
//! one) without a console window, its stderr appended to FILE, and exits. What
//! `callhook install` registers to run at login on Windows: this is a GUI-subsystem
//! program, so Windows opens no console for it, and the child gets none either
//! (`CREATE_NO_WINDOW`).
#![cfg_attr(windows, windows_subsystem = "windows")]

use std::process::{Command, ExitCode, Stdio};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(flag), Some(log)) = (args.next(), args.next()) else {
        return ExitCode::from(2);
    };
    if flag != "--log" {
        return ExitCode::from(2);
    }
    let Ok(me) = std::env::current_exe() else {
        return ExitCode::FAILURE;
    };
    let program = me.with_file_name(format!("callhook{}", std::env::consts::EXE_SUFFIX));
    if let Some(dir) = std::path::Path::new(&log).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // A GUI program has no console to report to: the log is the only place.
    let Ok(log_file) = std::fs::OpenOptions::new().create(true).append(true).open(&log) else {
        return ExitCode::FAILURE;
    };
    let mut command = Command::new(&program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        const CREATE_NO_WINDOW: u32 = 0x0800_0000;
        command.creation_flags(CREATE_NO_WINDOW);
    }
    match command.spawn() {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&log) {
                let _ = writeln!(file, "callhookw: cannot start {}: {error}", program.display());
            }
            ExitCode::FAILURE
        }
    }
}
