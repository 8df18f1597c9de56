//! `stockd-load --watch` through the real binary against an embedded stockd on 127.0.0.1:
//! the stream beside the load sees every event the load caused, with no gap.

use std::process::Command;

#[test]
fn a_watch_beside_the_load_receives_every_event_with_no_gap() {
    let out = Command::new(env!("CARGO_BIN_EXE_stockd-load"))
        .args([
            "reserve",
            "--embedded",
            "--shards",
            "2",
            "--products",
            "50",
            "-n",
            "300",
            "-c",
            "4",
            "--watch",
            "-O",
            "json",
        ])
        .output()
        .expect("run stockd-load");
    assert!(
        out.status.success(),
        "stockd-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["statusCodeDistribution"]["OK"], 300, "{report}");
    let watch = &report["watch"];
    // 300 holds created, after the seeding's channel and 50 stock counts.
    let events = watch["events"].as_u64().expect("events");
    assert!(events >= 350, "the watch saw {events} events: {watch}");
    assert_eq!(watch["gaps"], 0, "{watch}");
    assert!(watch["ended"].is_null(), "the stream ended early: {watch}");
    let first = watch["firstSequence"].as_u64().expect("first");
    let last = watch["lastSequence"].as_u64().expect("last");
    assert_eq!(last - first + 1, events, "{watch}");
}
