//! The fleet with real brokers: desks (real `callhook run` processes, each following a
//! trace of its own) publish through `nats-server -js` or `mosquitto` (started here on
//! free loopback ports, data in a temporary folder) to a central `callhook run`, whose
//! webhook rule posts every event to a real HTTP receiver on 127.0.0.1. Whatever is
//! killed or restarted meanwhile (the broker, the central callhook with kill -9, a desk
//! with kill -9), every event of every desk reaches the receiver (each webhook-id, one
//! per event, is there; none is missing, none is foreign) and the central store holds
//! each event once. Without a kill of the central callhook no webhook comes twice.
//! Skipped (with a note) when the brokers are not installed; `scripts/test` installs
//! them. `FLEET_DEBUG_LOG=debug` gives the callhooks that log level (on stderr) and
//! makes mosquitto log every packet.
#![cfg(unix)]

#[path = "common/mod.rs"]
mod common;
#[path = "support/fleet.rs"]
mod fleet;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Child, Receiver, append};
use fleet::{Broker, Kind, central_config, desk_config, desk_trace};

const BINARY: &str = env!("CARGO_BIN_EXE_callhook");
const CASES: [&str; 4] = ["basic", "burst", "forking-early", "hold-reinvite"];

/// One desk: its trace (written in pieces), configuration and process.
struct Desk {
    trace_path: std::path::PathBuf,
    trace: Vec<u8>,
    written: usize,
    config: std::path::PathBuf,
    process: Option<Child>,
}

impl Desk {
    fn new(dir: &Path, name: &str, broker: &Broker, copies: usize) -> Desk {
        let trace_path = dir.join(format!("{name}.log"));
        append(&trace_path, b"");
        Desk {
            config: desk_config(dir, name, &trace_path, broker.kind, &broker.url()),
            trace: desk_trace(name, &CASES, copies),
            trace_path,
            written: 0,
            process: None,
        }
    }

    fn start(&mut self) {
        self.process = Some(Child::run(
            Path::new(BINARY),
            &self.trace_path,
            Path::new(""),
            Some(&self.config),
        ));
    }

    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// Appends the next `fraction` of its trace (cut anywhere: the reader waits for
    /// whole entries).
    fn write(&mut self, fraction: f64) {
        let end = ((self.trace.len() as f64 * fraction) as usize + self.written).min(self.trace.len());
        append(&self.trace_path, &self.trace[self.written..end]);
        self.written = end;
    }

    fn expected(&self) -> Vec<String> {
        common::replay(&self.trace).0.into_iter().map(|e| e.id).collect()
    }
}

/// The central callhook and what reached its receiver.
struct Central {
    config: std::path::PathBuf,
    state: std::path::PathBuf,
    receiver: Receiver,
    process: Option<Child>,
}

impl Central {
    fn new(dir: &Path, broker: &Broker) -> Central {
        let receiver = Receiver::start();
        Central {
            config: central_config(dir, broker.kind, &broker.url(), &receiver.url),
            state: dir.join("central-state"),
            receiver,
            process: None,
        }
    }

    fn start(&mut self) {
        self.process = Some(Child::run(
            Path::new(BINARY),
            Path::new(""),
            &self.state,
            Some(&self.config),
        ));
    }

    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// webhook-id → how many times it came.
    fn received(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for request in self.receiver.requests.lock().unwrap().iter() {
            if let Some(id) = request.header("webhook-id") {
                *counts.entry(id.to_owned()).or_default() += 1;
            }
        }
        counts
    }

    /// Waits (at most `seconds`) until every expected event's webhook came; returns
    /// (missing, foreign, repeated).
    fn wait_for(&self, expected: &BTreeSet<String>, seconds: u64) -> (usize, usize, usize) {
        let wanted: BTreeSet<String> = expected
            .iter()
            .map(|id| callhook::dispatch::signing::message_id(&format!("{id}.hook")))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let received = self.received();
            let got: BTreeSet<String> = received.keys().cloned().collect();
            if got.is_superset(&wanted) || Instant::now() > deadline {
                // A moment for anything that should not come.
                std::thread::sleep(Duration::from_millis(500));
                let received = self.received();
                let got: BTreeSet<String> = received.keys().cloned().collect();
                let repeated = received.values().map(|n| n - 1).sum();
                return (
                    wanted.difference(&got).count(),
                    got.difference(&wanted).count(),
                    repeated,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The central store's event ids: (all, distinct).
    fn stored(&self) -> (usize, usize) {
        let ids = common::stored_ids(&self.state);
        let distinct: BTreeSet<&String> = ids.iter().collect();
        (ids.len(), distinct.len())
    }
}

fn expected(desks: &[Desk]) -> BTreeSet<String> {
    desks.iter().flat_map(Desk::expected).collect()
}

#[test]
fn nats_broker_down_when_the_desk_starts_then_restarted_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start(Kind::Nats, &dir.path().join("broker")) else {
        return;
    };
    broker.down();
    let mut central = Central::new(dir.path(), &broker);
    let mut desk = Desk::new(dir.path(), "d1", &broker, 2);
    desk.write(0.4);
    desk.start();
    // The desk's jobs wait for the broker.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(central.received().is_empty());
    broker.up();
    central.start();
    for step in 0..6 {
        desk.write(0.1);
        std::thread::sleep(Duration::from_millis(300));
        if step == 2 {
            // Restarted mid-stream: the desk's and the central's clients reconnect.
            broker.down();
            std::thread::sleep(Duration::from_millis(700));
            broker.up();
        }
    }
    desk.write(1.0);
    let expected = expected(std::slice::from_ref(&desk));
    let (missing, foreign, repeated) = central.wait_for(&expected, 60);
    desk.kill();
    central.kill();
    assert_eq!((missing, foreign, repeated), (0, 0, 0), "of {} events", expected.len());
    assert_eq!(central.stored(), (expected.len(), expected.len()));
}

#[test]
fn nats_central_and_a_desk_killed_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(Kind::Nats, &dir.path().join("broker")) else {
        return;
    };
    let mut central = Central::new(dir.path(), &broker);
    let mut desks = vec![
        Desk::new(dir.path(), "d1", &broker, 2),
        Desk::new(dir.path(), "d2", &broker, 2),
    ];
    for desk in &mut desks {
        desk.start();
    }
    central.start();
    for step in 0..10 {
        for desk in &mut desks {
            desk.write(0.1);
        }
        std::thread::sleep(Duration::from_millis(250));
        match step {
            2 | 6 => {
                central.kill();
                std::thread::sleep(Duration::from_millis(300));
                central.start();
            }
            4 => {
                desks[0].kill();
                std::thread::sleep(Duration::from_millis(300));
                desks[0].start();
            }
            _ => {}
        }
    }
    for desk in &mut desks {
        desk.write(1.0);
    }
    let expected = expected(&desks);
    let (missing, foreign, repeated) = central.wait_for(&expected, 60);
    for desk in &mut desks {
        desk.kill();
    }
    central.kill();
    eprintln!(
        "{} events from 2 desks; central killed twice, a desk once: {repeated} webhooks came again (at-least-once, same webhook-id)",
        expected.len()
    );
    assert_eq!((missing, foreign), (0, 0), "of {} events", expected.len());
    assert_eq!(central.stored(), (expected.len(), expected.len()));
}

#[test]
fn nats_garbage_is_refused_once_and_not_offered_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(Kind::Nats, &dir.path().join("broker")) else {
        return;
    };
    let mut central = Central::new(dir.path(), &broker);
    central.start();
    let good = common::replay(&desk_trace("g", &["basic"], 1)).0.remove(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = broker.url();
    runtime.block_on(async {
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        // The central callhook makes the stream when it starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while jetstream.get_stream("CALLHOOK").await.is_err() {
            assert!(Instant::now() < deadline, "the central callhook made no stream");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for payload in ["online".to_owned(), "{\"v\":1}".to_owned(), good.to_json()] {
            jetstream
                .publish("callhook.x.junk", payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let (missing, foreign, repeated) = central.wait_for(&[good.id.clone()].into(), 20);
    assert_eq!((missing, foreign, repeated), (0, 0, 0));
    // Restarted: the refused messages are not offered again.
    central.kill();
    central.start();
    std::thread::sleep(Duration::from_secs(2));
    let info = runtime.block_on(async {
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let stream = async_nats::jetstream::new(client).get_stream("CALLHOOK").await.unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("central").await.unwrap();
        consumer.info().await.unwrap().clone()
    });
    central.kill();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, 3);
    assert_eq!(central.stored(), (1, 1));
}

/// The retained message on `topic`, if one comes within `seconds`.
fn retained(port: u16, topic: &str, seconds: u64) -> Option<String> {
    let mut options = rumqttc::MqttOptions::new(
        format!("probe-{}", common::Random(port as u64).below(1 << 30)),
        "127.0.0.1",
        port,
    );
    options.set_clean_session(true);
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    client.subscribe(topic, rumqttc::QoS::AtLeastOnce).unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) =
            connection.recv_timeout(Duration::from_millis(200))
            && p.topic == topic
        {
            return Some(String::from_utf8_lossy(&p.payload).into_owned());
        }
    }
    None
}

#[test]
fn mqtt_desks_to_central_with_a_central_kill_and_the_desk_status() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(Kind::Mqtt, &dir.path().join("broker")) else {
        return;
    };
    let mut central = Central::new(dir.path(), &broker);
    // First, so its persistent session holds what comes while it is away.
    central.start();
    std::thread::sleep(Duration::from_millis(500));
    let mut desks = vec![
        Desk::new(dir.path(), "d1", &broker, 2),
        Desk::new(dir.path(), "d2", &broker, 2),
    ];
    for desk in &mut desks {
        desk.start();
    }
    for step in 0..8 {
        for desk in &mut desks {
            desk.write(0.12);
        }
        std::thread::sleep(Duration::from_millis(250));
        if step == 3 {
            central.kill();
            std::thread::sleep(Duration::from_millis(500));
            central.start();
        }
    }
    for desk in &mut desks {
        desk.write(1.0);
    }
    let expected = expected(&desks);
    let (missing, foreign, _repeated) = central.wait_for(&expected, 60);
    assert_eq!((missing, foreign), (0, 0), "of {} events", expected.len());
    assert_eq!(central.stored(), (expected.len(), expected.len()));
    // The desk's retained status, and its last will when it dies.
    assert_eq!(
        retained(broker.port, "callhook/d1/status", 5).as_deref(),
        Some("online")
    );
    desks[0].kill();
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut status = None;
    while Instant::now() < deadline && status.as_deref() != Some("offline") {
        status = retained(broker.port, "callhook/d1/status", 2);
    }
    desks[1].kill();
    central.kill();
    assert_eq!(status.as_deref(), Some("offline"));
}

/// Writes every desk's trace in `steps` equal parts, `pause_ms` apart, calling `between`
/// after each part (with the step's number), then the rest.
fn stream(desks: &mut [Desk], steps: usize, pause_ms: u64, mut between: impl FnMut(usize, &mut [Desk])) {
    for step in 0..steps {
        for desk in desks.iter_mut() {
            desk.write(1.0 / (steps + 1) as f64);
        }
        std::thread::sleep(Duration::from_millis(pause_ms));
        between(step, desks);
    }
    for desk in desks.iter_mut() {
        desk.write(1.0);
    }
}

#[test]
fn nats_broker_killed_mid_stream_twice() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start(Kind::Nats, &dir.path().join("broker")) else {
        return;
    };
    let mut central = Central::new(dir.path(), &broker);
    let mut desks = vec![
        Desk::new(dir.path(), "d1", &broker, 2),
        Desk::new(dir.path(), "d2", &broker, 2),
    ];
    for desk in &mut desks {
        desk.start();
    }
    central.start();
    stream(&mut desks, 9, 250, |step, _| {
        if step == 2 || step == 6 {
            // JetStream keeps what it acknowledged in its store folder, written before
            // the acknowledgement: a kill -9 loses none of it.
            broker.kill();
            std::thread::sleep(Duration::from_millis(500));
            broker.up();
        }
    });
    let expected = expected(&desks);
    let (missing, foreign, repeated) = central.wait_for(&expected, 60);
    for desk in &mut desks {
        desk.kill();
    }
    central.kill();
    assert_eq!((missing, foreign, repeated), (0, 0, 0), "of {} events", expected.len());
    assert_eq!(central.stored(), (expected.len(), expected.len()));
}

/// Publishes `event` to `topic` (QoS 1) until the central's webhook for it came: the
/// central's session is then subscribed on the broker.
fn until_subscribed(port: u16, central: &Central, event: &callhook::event::Event) {
    let mut options = rumqttc::MqttOptions::new("probe-sentinel", "127.0.0.1", port);
    options.set_clean_session(true);
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    let wanted = [event.id.clone()].into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client
            .publish("callhook/s0/ringing", rumqttc::QoS::AtLeastOnce, false, event.to_json())
            .unwrap();
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            let _ = connection.recv_timeout(Duration::from_millis(50));
        }
        if central.wait_for(&wanted, 0).0 == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the central callhook never subscribed");
    }
}

/// Jobs still pending in the state database in `state`.
fn pending_jobs(state: &Path) -> i64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(state.join(callhook::store::DATABASE_FILE), flags)
        .and_then(|db| db.query_row("SELECT count(*) FROM jobs WHERE status = 'pending'", [], |r| r.get(0)))
        .unwrap_or(-1)
}

/// Waits (at most 30 s) until every event the desks stored is stored centrally and no
/// job is pending anywhere: nothing is then in flight through the broker.
fn until_settled(dir: &Path, desks: &[Desk], central: &Central) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored: usize = (1..=desks.len())
            .map(|n| common::stored_ids(&dir.join(format!("d{n}-state"))).len())
            .sum();
        let pending: i64 = (1..=desks.len())
            .map(|n| pending_jobs(&dir.join(format!("d{n}-state"))))
            .chain([pending_jobs(&central.state)])
            .sum();
        // The sentinel is stored centrally only.
        if pending == 0 && central.stored().1 == stored + 1 {
            return;
        }
        assert!(Instant::now() < deadline, "not settled: {pending} jobs pending");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mqtt_broker_down_when_desks_start_restarted_and_killed_and_a_desk_killed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start_saving_each_change(Kind::Mqtt, &dir.path().join("broker")) else {
        return;
    };
    // The central's persistent session is made first: MQTT keeps messages only for
    // sessions that subscribed before they were published.
    let mut central = Central::new(dir.path(), &broker);
    central.start();
    let sentinel = common::replay(&desk_trace("s0", &["basic"], 1)).0.remove(0);
    until_subscribed(broker.port, &central, &sentinel);
    broker.down();
    let mut desks = vec![
        Desk::new(dir.path(), "d1", &broker, 2),
        Desk::new(dir.path(), "d2", &broker, 2),
    ];
    for desk in &mut desks {
        desk.write(0.2);
        desk.start();
    }
    // The desks' jobs wait in their outboxes for the broker.
    std::thread::sleep(Duration::from_millis(1500));
    broker.up();
    stream(&mut desks, 9, 250, |step, desks| match step {
        2 => {
            // Stopped mid-stream, publishes in flight: mosquitto saves its sessions and
            // queues as it stops.
            broker.down();
            std::thread::sleep(Duration::from_millis(500));
            broker.up();
        }
        4 => {
            desks[0].kill();
            std::thread::sleep(Duration::from_millis(300));
            desks[0].start();
        }
        6 => {
            // Killed -9 with nothing in flight: the central's session survives in the
            // data file (written after each change); what the desks make while it is
            // away waits in their outboxes and is published once it is back. (Killed
            // while publishing, mosquitto loses what it acknowledged after its last
            // save: it acknowledges before it writes. See README, the fleet.)
            until_settled(dir.path(), desks, &central);
            broker.kill();
            for desk in desks.iter_mut() {
                desk.write(0.05);
            }
            std::thread::sleep(Duration::from_millis(700));
            broker.up();
        }
        _ => {}
    });
    let mut expected = expected(&desks);
    expected.insert(sentinel.id.clone());
    let (missing, foreign, repeated) = central.wait_for(&expected, 60);
    for desk in &mut desks {
        desk.kill();
    }
    central.kill();
    assert_eq!((missing, foreign, repeated), (0, 0, 0), "of {} events", expected.len());
    assert_eq!(central.stored(), (expected.len(), expected.len()));
}
