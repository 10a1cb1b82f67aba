//! `callhook install` / `uninstall` / `status`: start `callhook run -c CONFIG` at login
//! without a console window, logging to `state_dir/callhook.log`.
//!
//! Takes the configuration file and this program's path; hands on one line per thing
//! done. Windows: a value `callhook` under the per-user Run key
//! (`HKCU\Software\Microsoft\Windows\CurrentVersion\Run`, written with `reg.exe`, no
//! administrator rights) that starts `callhookw.exe`, a GUI-subsystem launcher beside
//! `callhook.exe` that starts it with no window and its stderr appended to the log.
//! Elsewhere: a systemd user unit `~/.config/systemd/user/callhook.service`, enabled and
//! started with `systemctl --user` when that works (else the commands are printed).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Run key's value name and the systemd unit's name.
pub const NAME: &str = "callhook";
const RUN_KEY: &str = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("no configuration {}: write one (the Windows zip has a starter callhook.yaml) or pass -c FILE", .0.display())]
    NoConfig(PathBuf),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("no home folder for the systemd user unit: set HOME or XDG_CONFIG_HOME")]
    NoHome,
}

/// What to start at login.
#[derive(Debug, Clone)]
pub struct Install {
    /// The configuration `callhook run -c` is given (absolute).
    pub config: PathBuf,
    /// `callhook.exe` (or `callhook`) itself.
    pub program: PathBuf,
}

impl Install {
    /// The log file: `callhook.log` in the configuration's state directory.
    pub fn log_file(&self) -> Result<PathBuf, InstallError> {
        if !self.config.is_file() {
            return Err(InstallError::NoConfig(self.config.clone()));
        }
        Ok(crate::config::state_dir_of(&self.config)?.join("callhook.log"))
    }

    /// The Run key's value: the hidden launcher, the log, then `run -c CONFIG`.
    pub fn run_key_value(&self) -> Result<String, InstallError> {
        let launcher = self
            .program
            .with_file_name(format!("callhookw{}", std::env::consts::EXE_SUFFIX));
        Ok(format!(
            "\"{}\" --log \"{}\" run -c \"{}\"",
            launcher.display(),
            self.log_file()?.display(),
            self.config.display()
        ))
    }

    /// The systemd user unit's text.
    pub fn unit(&self) -> Result<String, InstallError> {
        let log = self.log_file()?;
        Ok(format!(
            "# Written by `callhook install`; removed by `callhook uninstall`.\n\
             [Unit]\n\
             Description=callhook: call events from MicroSIP's files\n\n\
             [Service]\n\
             ExecStart=\"{}\" run -c \"{}\"\n\
             Restart=on-failure\n\
             RestartSec=5\n\
             StandardOutput=null\n\
             StandardError=append:{}\n\n\
             [Install]\n\
             WantedBy=default.target\n",
            self.program.display(),
            self.config.display(),
            log.display()
        ))
    }
}

/// Where the systemd user unit goes (`$XDG_CONFIG_HOME` or `~/.config`).
pub fn unit_path() -> Result<PathBuf, InstallError> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("XDG_CONFIG_HOME")
        .or_else(|| var("HOME").map(|home| home.join(".config")))
        .ok_or(InstallError::NoHome)?;
    Ok(base.join("systemd/user").join(format!("{NAME}.service")))
}

/// Registers the start at login; returns what was done.
pub fn install(install: &Install) -> Result<Vec<String>, InstallError> {
    if let Some(dir) = install.log_file()?.parent() {
        std::fs::create_dir_all(dir).map_err(|source| InstallError::Write {
            path: dir.to_owned(),
            source,
        })?;
    }
    if cfg!(windows) {
        let value = install.run_key_value()?;
        command("reg", &["add", RUN_KEY, "/v", NAME, "/t", "REG_SZ", "/d", &value, "/f"])?;
        return Ok(vec![
            format!("{RUN_KEY}\\{NAME} = {value}"),
            "callhook starts at the next login (log in again, or run that line now)".to_owned(),
        ]);
    }
    let path = unit_path()?;
    let write = |result: std::io::Result<()>| {
        result.map_err(|source| InstallError::Write {
            path: path.clone(),
            source,
        })
    };
    write(std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))))?;
    write(std::fs::write(&path, install.unit()?))?;
    let mut done = vec![format!("wrote {}", path.display())];
    let started = command("systemctl", &["--user", "daemon-reload"])
        .and_then(|_| command("systemctl", &["--user", "enable", "--now", &format!("{NAME}.service")]));
    done.push(match started {
        Ok(_) => "enabled and started (systemctl --user)".to_owned(),
        Err(error) => format!(
            "could not enable it ({error}); run: systemctl --user daemon-reload && systemctl --user enable --now {NAME}.service"
        ),
    });
    Ok(done)
}

/// Removes the start at login (stopping the service on Linux); returns what was done.
pub fn uninstall() -> Result<Vec<String>, InstallError> {
    if cfg!(windows) {
        return Ok(match command("reg", &["delete", RUN_KEY, "/v", NAME, "/f"]) {
            Ok(_) => vec![format!(
                "removed {RUN_KEY}\\{NAME} (a callhook running now goes on until logout)"
            )],
            Err(_) => vec!["not installed".to_owned()],
        });
    }
    let path = unit_path()?;
    if !path.exists() {
        return Ok(vec!["not installed".to_owned()]);
    }
    let _ = command("systemctl", &["--user", "disable", "--now", &format!("{NAME}.service")]);
    std::fs::remove_file(&path).map_err(|source| InstallError::Write {
        path: path.clone(),
        source,
    })?;
    let _ = command("systemctl", &["--user", "daemon-reload"]);
    Ok(vec![format!("stopped, disabled and removed {}", path.display())])
}

/// Whether it is installed (and how) and whether it runs.
pub fn status() -> Result<Vec<String>, InstallError> {
    if cfg!(windows) {
        let installed = command("reg", &["query", RUN_KEY, "/v", NAME])
            .ok()
            .and_then(|out| out.lines().find(|l| l.contains("REG_SZ")).map(str::to_owned));
        let others = crate::setup::processes_named("callhook.exe").saturating_sub(1);
        return Ok(vec![
            match installed {
                Some(line) => format!("installed: {RUN_KEY} {}", line.trim()),
                None => "not installed (callhook install)".to_owned(),
            },
            format!("running: {}", if others > 0 { "yes" } else { "no" }),
        ]);
    }
    let path = unit_path()?;
    let active = command("systemctl", &["--user", "is-active", &format!("{NAME}.service")]);
    Ok(vec![
        if path.exists() {
            format!("installed: {}", path.display())
        } else {
            "not installed (callhook install)".to_owned()
        },
        format!("running: {}", if active.is_ok() { "yes" } else { "no" }),
    ])
}

/// Runs a program (never a shell) and returns its stdout, or why it failed.
fn command(program: &str, args: &[&str]) -> Result<String, InstallError> {
    let what = format!("{program} {}", args.first().copied().unwrap_or_default());
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| InstallError::Command {
            what: what.clone(),
            detail: error.to_string(),
        })?;
    if !output.status.success() {
        return Err(InstallError::Command {
            what,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_the_config_and_logs_to_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("callhook.yaml");
        std::fs::write(&config, "version: 1\nstate_dir: st\n").unwrap();
        let install = Install {
            config: config.clone(),
            program: PathBuf::from("/opt/callhook/callhook"),
        };
        let unit = install.unit().unwrap();
        assert!(unit.contains(&format!(
            "ExecStart=\"/opt/callhook/callhook\" run -c \"{}\"\n",
            config.display()
        )));
        assert!(unit.contains(&format!(
            "StandardError=append:{}\n",
            dir.path().join("st/callhook.log").display()
        )));
        assert!(unit.contains("WantedBy=default.target"));
        let value = install.run_key_value().unwrap();
        assert!(value.starts_with("\"/opt/callhook/callhookw"), "{value}");
        assert!(value.ends_with(&format!(" run -c \"{}\"", config.display())), "{value}");
        let missing = Install {
            config: dir.path().join("nope.yaml"),
            ..install
        };
        assert!(missing.unit().unwrap_err().to_string().contains("nope.yaml"));
    }
}
