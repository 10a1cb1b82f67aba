//! `callhook install` / `status` / `uninstall` on Linux: the systemd user unit (the
//! Windows Run key is checked under Wine in `tests/windows.rs`).

use std::process::Command;

#[test]
fn install_writes_a_user_unit_status_sees_it_uninstall_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("callhook.yaml");
    std::fs::write(&config, "version: 1\nstate_dir: state\n").unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(args)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            // no user systemd here: install must still write the unit and say what to run
            .env("PATH", dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let said = run(&["install", "-c", config.to_str().unwrap()]);
    let unit_path = dir.path().join("config/systemd/user/callhook.service");
    assert!(
        said.contains("systemctl --user enable --now callhook.service"),
        "{said}"
    );
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let program = std::fs::canonicalize(env!("CARGO_BIN_EXE_callhook")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" run -c \"{}\"",
            program.display(),
            config.display()
        )),
        "{unit}"
    );
    assert!(unit.contains(&format!(
        "StandardError=append:{}",
        dir.path().join("state/callhook.log").display()
    )));
    assert!(dir.path().join("state").is_dir(), "the log's folder is made");
    assert!(run(&["status"]).contains("installed: "));
    run(&["uninstall"]);
    assert!(!unit_path.exists());
    assert!(run(&["status"]).contains("not installed"));
}

#[test]
fn install_without_a_config_says_how_to_get_one() {
    let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["install", "-c", "/nonexistent/callhook.yaml"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && message.contains("/nonexistent/callhook.yaml") && message.contains("-c FILE"),
        "{message}"
    );
}
