//! `callhook setup microsip` on a real-format `microsip.ini` (UTF-16LE with BOM, CRLF,
//! comments, accounts, call history): setup, again (nothing changes), `--undo` (the
//! original byte for byte); the edited file read back as a UTF-16 INI keeps every
//! other key.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// A microsip.ini as MicroSIP 3.21 writes it (trimmed), with a non-ASCII label.
const INI: &str = "[Settings]\r\naccountId=1\r\nsingleMode=1\r\nringingSound=\r\nvolumeRing=100\r\nenableLog=0\r\n; written by MicroSIP\r\ncmdCallRing=\r\nportKnockerHost=\r\nautoAnswer=button\r\ndenyIncoming=\r\n\r\n[Account1]\r\nlabel=Empfang \u{00c4}rzte \u{4e2d}\r\nserver=pbx.example.com\r\nproxy=\r\ndomain=pbx.example.com\r\nusername=101\r\npassword=c2VjcmV0\r\ndisplayName=Front Desk\r\n\r\n[Calls]\r\n0=5552001;Alice Example;1;1764580000;12;\r\n1=5552002;Bob;2;1764580100;0;Missed Call\r\n";

fn utf16(text: &str) -> Vec<u8> {
    [0xff, 0xfe]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect()
}

/// section → key → value, read as Windows' profile functions would.
fn parse(bytes: &[u8]) -> BTreeMap<String, BTreeMap<String, String>> {
    assert_eq!(&bytes[..2], [0xff, 0xfe], "BOM kept");
    let units: Vec<u16> = bytes[2..]
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    let text = String::from_utf16(&units).expect("valid UTF-16");
    assert!(!text.replace("\r\n", "").contains('\n'), "CRLF only");
    let mut sections = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            sections
                .entry(current.clone())
                .or_insert_with(BTreeMap::new)
                .insert(key.to_owned(), value.to_owned());
        }
    }
    sections
}

fn setup(ini: &Path, args: &[&str], program: &Path) -> String {
    let output = Command::new(program)
        .args(["setup", "microsip", "--ini"])
        .arg(ini)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "setup {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn setup_then_undo_round_trips_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    // a copy of the program, so the hook links are made in the temporary folder
    let program = dir.path().join("callhook");
    std::fs::copy(env!("CARGO_BIN_EXE_callhook"), &program).unwrap();
    let ini = dir.path().join("microsip.ini");
    let original = utf16(INI);
    std::fs::write(&ini, &original).unwrap();

    let said = setup(&ini, &["--hooks"], &program);
    assert!(said.contains("enableLog=1 (was 0)"), "{said}");
    let edited = std::fs::read(&ini).unwrap();
    let (before, after) = (parse(&original), parse(&edited));
    assert_eq!(after["Settings"]["enableLog"], "1");
    for (key, event) in callhook::setup::HOOK_SETTINGS {
        let link = callhook::setup::hook_link(&program, event);
        assert_eq!(after["Settings"][key], link.display().to_string());
        assert!(link.is_file(), "{} made", link.display());
    }
    for (section, keys) in &before {
        for (key, value) in keys {
            if section == "Settings" && (key == "enableLog" || key.starts_with("cmd")) {
                continue;
            }
            assert_eq!(&after[section][key], value, "[{section}] {key} kept");
        }
    }
    assert_eq!(
        after.values().map(BTreeMap::len).sum::<usize>(),
        before.values().map(BTreeMap::len).sum::<usize>() + 6
    );
    let backup = callhook::setup::backup_path(&ini);
    assert_eq!(std::fs::read(&backup).unwrap(), original, "backup is the original");

    let said = setup(&ini, &["--hooks"], &program);
    assert!(said.contains("nothing to change"), "{said}");
    assert_eq!(std::fs::read(&ini).unwrap(), edited, "idempotent");
    assert_eq!(std::fs::read(&backup).unwrap(), original, "backup not overwritten");

    setup(&ini, &["--undo"], &program);
    assert_eq!(std::fs::read(&ini).unwrap(), original, "undo restores byte for byte");
    assert!(!backup.exists(), "backup removed after undo");
    assert!(!callhook::setup::hook_link(&program, "ring").exists(), "links removed");

    // the log only, then undo
    setup(&ini, &[], &program);
    let edited = parse(&std::fs::read(&ini).unwrap());
    assert_eq!(edited["Settings"]["enableLog"], "1");
    assert_eq!(edited["Settings"]["cmdCallRing"], "", "hooks untouched without --hooks");
    setup(&ini, &["--undo"], &program);
    assert_eq!(std::fs::read(&ini).unwrap(), original);
}

#[test]
fn undo_without_setup_and_a_foreign_file_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("microsip.ini");
    std::fs::write(&ini, utf16(INI)).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(["setup", "microsip", "--ini"])
            .arg(&ini)
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&["--undo"]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("no backup") && message.contains("microsip.ini"),
        "{message}"
    );
    std::fs::write(&ini, [0xff, 0xfe, 0x41]).unwrap();
    let output = run(&[]);
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && message.contains("not UTF-16LE"),
        "{message}"
    );
}
