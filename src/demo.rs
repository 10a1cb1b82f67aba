//! `callhook demo`: the live pipeline on a built-in trace, no set-up needed.
//!
//! Writes a real PJSIP trace (four calls: answered, missed, outgoing, busy; bundled into
//! the binary) line by line into a fresh log file in a temporary folder, at the pace
//! its timestamps give, while the same daemon `callhook run` uses tails that file and
//! prints each event the moment it can be known. Then stops and cleans up.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::daemon::{self, DaemonError, Output};
use crate::parse::log_time::parse_timestamp;
use crate::source::config::{Source, StartAt};

/// The bundled trace (tests/fixtures/pjsip/basic, recorded from PJSIP 2.15).
const TRACE: &[u8] = include_bytes!("../tests/fixtures/pjsip/basic/phone.log");

/// Longest pause between two lines, whatever the timestamps say.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Runs the demo; `speed` multiplies the trace's own pace (2.0: twice as fast).
pub async fn run(speed: f64) -> Result<(), DaemonError> {
    let folder = std::env::temp_dir().join(format!("callhook-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    let trace = folder.join("MicroSIP_log.txt");
    std::fs::create_dir_all(&folder).map_err(|source| DaemonError::CreateDir {
        path: folder.clone(),
        source,
    })?;
    let mut source = Source::sip_trace(&trace);
    source.start_at = StartAt::Beginning;
    source.poll_interval = Duration::from_millis(100);
    let config = Config::with_sources(folder.join("state"), vec![source]);
    eprintln!(
        "callhook demo: writing a recorded MicroSIP trace to {}",
        trace.display()
    );
    eprintln!("callhook demo: events appear below as the calls happen\n");
    let writer_trace = trace.clone();
    let writer = tokio::task::spawn_blocking(move || write_trace(&writer_trace, speed));
    let result = daemon::run(config, Output::Stdout, async {
        let _ = writer.await;
        // Give the last lines time to be read.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let _ = std::fs::remove_dir_all(&folder);
    result
}

/// Appends the bundled trace line by line, sleeping as its timestamps say.
fn write_trace(path: &Path, speed: f64) {
    let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) else {
        return;
    };
    let mut last_millis = None;
    for line in TRACE.split_inclusive(|&b| b == b'\n') {
        if let Some((time, _)) = parse_timestamp(line) {
            if let Some(last) = last_millis {
                let pause = Duration::from_millis(u64::from(time.millis.saturating_sub(last)));
                std::thread::sleep(pause.div_f64(speed.max(0.01)).min(MAX_PAUSE));
            }
            last_millis = Some(time.millis);
        }
        if file.write_all(line).is_err() {
            return;
        }
    }
}
