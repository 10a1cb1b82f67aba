//! Call-log CSV parse throughput: `cargo bench --bench csv` (`MB=n` to change the size,
//! default 100). Writes a MicroSIP-export CSV (record rows) and a state-row CSV of about
//! that size to a temp dir, reads each back through `CallLogReader` in 64 KiB chunks,
//! as the tailer would, and prints MB/s (bytes in → events out, ids and all).

use std::io::Write as _;
use std::time::Instant;

use callhook::source::call_log::{CallLogOptions, CallLogReader};
use jiff::tz::TimeZone;

fn record_rows(target: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(target + 256);
    out.extend_from_slice(b"Type,Name,Number,Time,Duration,Info\r\n");
    let mut i: u64 = 0;
    while out.len() < target {
        let (kind, info) = match i % 4 {
            0 => ("outgoing", "200 OK"),
            1 => ("incoming", "200 Normal call clearing"),
            2 => ("missed", ""),
            _ => ("outgoing", "486 Busy Here"),
        };
        let duration = if i % 4 < 2 { i % 300 } else { 0 };
        writeln!(
            out,
            "{kind},\"Müller, Jörg {i}\",+49301{:07},{},{duration},{info}\r",
            i % 10_000_000,
            1_795_000_000 + i
        )
        .unwrap();
        i += 1;
    }
    out
}

fn state_rows(target: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(target + 256);
    out.extend_from_slice(b"time,event,call_id,direction,number,name,status_code,outcome\n");
    let mut i: u64 = 0;
    while out.len() < target {
        let call = format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let t = 1_795_000_000 + i * 3;
        let number = format!("+49301{:07}", i % 10_000_000);
        writeln!(out, "{t},ringing,{call},inbound,{number},\"Caller {i}\",,").unwrap();
        writeln!(out, "{},answered,{call},inbound,{number},\"Caller {i}\",,", t + 1).unwrap();
        writeln!(
            out,
            "{},ended,{call},inbound,{number},\"Caller {i}\",200,completed",
            t + 2
        )
        .unwrap();
        i += 1;
    }
    out
}

fn measure(name: &str, path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap();
    let options = CallLogOptions {
        time_zone: TimeZone::UTC,
        ..CallLogOptions::new(path.display().to_string())
    };
    let mut best = f64::MAX;
    let mut events = 0u64;
    for _ in 0..3 {
        let mut reader = CallLogReader::new(options.clone());
        let mut count = 0u64;
        let mut errors = 0u64;
        let started = Instant::now();
        for chunk in bytes.chunks(64 * 1024) {
            reader.push(chunk, |_| count += 1, |_| errors += 1);
        }
        reader.finish(|_| count += 1, |_| errors += 1);
        best = best.min(started.elapsed().as_secs_f64());
        assert_eq!(errors, 0);
        events = count;
    }
    let mb = bytes.len() as f64 / 1e6;
    println!(
        "{name:<22} {mb:7.1} MB  {events:>9} events  {best:6.3} s  {:7.1} MB/s  {:9.0} events/s",
        mb / best,
        events as f64 / best
    );
}

fn main() {
    let mb: usize = std::env::var("MB").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("export.csv");
    std::fs::write(&records, record_rows(mb * 1_000_000)).unwrap();
    let states = dir.path().join("states.csv");
    std::fs::write(&states, state_rows(mb * 1_000_000)).unwrap();
    println!("call-log CSV parse (best of 3, 64 KiB chunks, bytes → events):");
    measure("record rows (export)", &records);
    measure("state rows", &states);
}
