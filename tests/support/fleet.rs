//! Helpers for the fleet tests and bench: real brokers (`nats-server -js`, `mosquitto`)
//! on free loopback ports, desk traces with Call-IDs of their own, configurations of a
//! desk and of the central callhook. Included by path (`tests/fleet.rs`,
//! `benches/fleet.rs`) next to `tests/common`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where a program is, when it is installed (`/usr/sbin` is not always on PATH).
pub fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nats,
    Mqtt,
}

/// A broker process on a loopback port, its data in a folder of its own; killed when
/// dropped.
pub struct Broker {
    pub kind: Kind,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// mosquitto writes its data after every change (not only when stopped), so that a
    /// kill -9 loses no session and no queued message it acknowledged before the last
    /// write. Costly (a file written and synced per change): for the kill tests only.
    save_each_change: bool,
}

impl Broker {
    /// Starts `kind` on a free port with its data in `dir`; `None` (with a note) when
    /// the program is not installed.
    pub fn start(kind: Kind, dir: &Path) -> Option<Broker> {
        Broker::start_with(kind, dir, false)
    }

    /// [`Broker::start`], mosquitto saving after each change (see `save_each_change`).
    pub fn start_saving_each_change(kind: Kind, dir: &Path) -> Option<Broker> {
        Broker::start_with(kind, dir, true)
    }

    fn start_with(kind: Kind, dir: &Path, save_each_change: bool) -> Option<Broker> {
        let name = match kind {
            Kind::Nats => "nats-server",
            Kind::Mqtt => "mosquitto",
        };
        if program(name).is_none() {
            eprintln!(
                "skipped: {name} is not installed (scripts/test installs it: apt-get install nats-server mosquitto)"
            );
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let mut broker = Broker {
            kind,
            port: free_port(),
            dir: dir.to_owned(),
            child: None,
            save_each_change,
        };
        broker.up();
        Some(broker)
    }

    /// The URL a callhook configuration names.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            Kind::Mqtt => format!("mqtt://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the process (again), on the same port and data, and waits until it takes
    /// connections. With `FLEET_DEBUG_LOG` set, mosquitto logs every packet into
    /// `broker.log`.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "broker runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        let mut command = match self.kind {
            Kind::Nats => {
                let mut c = Command::new(program("nats-server").unwrap());
                c.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
                    .arg(self.dir.join("js"));
                c
            }
            Kind::Mqtt => {
                let config = self.dir.join("mosquitto.conf");
                // `user root`: started as root, mosquitto would otherwise run as the
                // `mosquitto` user, which cannot write its data into our private folder
                // (every save failed, so a restart lost every session and queued
                // message). Not root, it stays who it is anyway.
                let mut text = format!(
                    "listener {} 127.0.0.1\nuser root\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\nmax_inflight_messages 100\n",
                    self.port,
                    self.dir.display()
                );
                if std::env::var_os("FLEET_DEBUG_LOG").is_some() {
                    text.push_str("log_dest stderr\nlog_type all\n");
                }
                if self.save_each_change {
                    text.push_str("autosave_on_changes true\nautosave_interval 1\n");
                }
                std::fs::write(&config, text).unwrap();
                let mut c = Command::new(program("mosquitto").unwrap());
                c.arg("-c").arg(config);
                c
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("broker starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "broker not up on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process: SIGTERM (it saves its data), waiting for it to end.
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            #[cfg(unix)]
            // SAFETY: kill only sends a signal to our own child process.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Broker {
    /// Kills the process with SIGKILL: it saves nothing more.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fixture trace with every Call-ID made this desk's own (`-<desk>-<copy>` added),
/// `copies` times the cases over.
pub fn desk_trace(desk: &str, cases: &[&str], copies: usize) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pjsip");
    let mut out = Vec::new();
    for copy in 0..copies {
        for case in cases {
            let text = std::fs::read_to_string(root.join(case).join("phone.log")).unwrap();
            let mut ids: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("Call-ID: "))
                .map(|id| id.trim().to_owned())
                .collect();
            ids.sort_by_key(|id| std::cmp::Reverse(id.len()));
            ids.dedup();
            let mut text = text.clone();
            for id in &ids {
                text = text.replace(id.as_str(), &format!("{id}-{desk}-{copy}"));
            }
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

/// A desk's configuration: its trace, read from the start, every event published.
pub fn desk_config(dir: &Path, desk: &str, trace: &Path, broker: Kind, url: &str) -> PathBuf {
    let action = match broker {
        Kind::Nats => format!(
            "nats: {{ url: \"{url}\", timeout: 2s, retry: {{ attempts: 1000, first: 100ms, factor: 1.5, max_delay: 1s }} }}"
        ),
        Kind::Mqtt => format!(
            "mqtt: {{ url: \"{url}\", timeout: 2s, retry: {{ attempts: 1000, first: 100ms, factor: 1.5, max_delay: 1s }} }}"
        ),
    };
    let path = dir.join(format!("{desk}.yaml"));
    std::fs::write(
        &path,
        format!(
            "version: 1\nstate_dir: {desk}-state\ndesk: {desk}\nsources:\n  - {{ kind: sip_trace, path: {}, start_at: beginning, poll_interval: 20ms, time_zone: UTC }}\nrules:\n  - name: to-central\n    {action}\n",
            trace.display()
        ),
    )
    .unwrap();
    path
}

/// The central configuration: the broker as its source, a webhook rule `hook` to
/// `receiver`.
pub fn central_config(dir: &Path, broker: Kind, url: &str, receiver: &str) -> PathBuf {
    let source = match broker {
        Kind::Nats => format!("kind: nats\n    nats: {{ url: \"{url}\", durable: central }}"),
        Kind::Mqtt => format!("kind: mqtt\n    mqtt: {{ url: \"{url}\", client_id: central }}"),
    };
    let path = dir.join("central.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\nstate_dir: central-state\nsources:\n  - {source}\nrules:\n  - name: hook\n    webhook: {{ url: \"{receiver}/calls\", retry: {{ first: 100ms, factor: 1 }} }}\n"
        ),
    )
    .unwrap();
    path
}
