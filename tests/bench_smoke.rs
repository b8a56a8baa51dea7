//! Smoke tests of the load scenarios: `cinder bench dm` and `cinder bench idle` with tiny
//! parameters, against a real relay process (the `cinder` binary this package builds).
//!
//! They check that the reports are consistent (everything sent on loopback is delivered and
//! decrypted, latencies are positive, process figures are read, the JSON has its keys), never
//! how fast anything is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use cinder::bench::client::RelayTarget;
use cinder::bench::{dm, idle};

fn spawn_target() -> RelayTarget {
    RelayTarget::Spawn {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_cinder")),
    }
}

fn has_keys(json: &serde_json::Value, keys: &[&str]) {
    for k in keys {
        assert!(json.get(*k).is_some(), "JSON report lacks {k}: {json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_open_loop_delivers_everything_it_sends() {
    let mut o = dm::Options::new(spawn_target());
    o.pairs = 2;
    o.rate = 50.0;
    o.duration = Duration::from_secs(2);
    o.warmup = Duration::from_millis(500);
    o.drain = Duration::from_secs(20);
    let r = dm::run(&o).await.unwrap();
    assert_eq!(r.scenario, "dm");
    assert_eq!(r.mode, "open-loop");
    assert_eq!(r.relay, "spawned");
    // 50 msgs/s for 2 s, give or take the boundary of the window.
    assert!((95..=105).contains(&r.sent), "{r:?}");
    assert_eq!(r.delivered, r.sent, "{r:?}");
    assert_eq!(r.lost, 0);
    assert_eq!(r.not_sent, 0);
    assert_eq!(r.send_errors, 0);
    assert_eq!(r.decrypt_errors, 0, "{r:?}");
    assert!(r.first_error.is_none(), "{r:?}");
    assert!(r.achieved_msgs_per_sec > 0.0);
    assert!(r.latency_p50_ms > 0.0);
    assert!(r.latency_p50_ms <= r.latency_p99_ms);
    assert!(r.latency_p99_ms <= r.latency_p999_ms);
    assert!(r.latency_p999_ms <= r.latency_max_ms);
    assert!(r.relay_rss_mib.unwrap() > 0.0);
    assert!(r.relay_peak_rss_mib.unwrap() >= r.relay_rss_mib.unwrap());
    assert!(r.relay_cpu_us_per_msg.is_some());
    assert!(r.saturation_target_met.is_none());

    let json = serde_json::to_value(&r).unwrap();
    has_keys(
        &json,
        &[
            "pairs",
            "offered_msgs_per_sec",
            "achieved_msgs_per_sec",
            "sent",
            "delivered",
            "lost",
            "latency_p50_ms",
            "latency_p99_ms",
            "latency_p999_ms",
            "latency_max_ms",
            "relay_cpu_us_per_msg",
            "relay_rss_mib",
            "relay_peak_rss_mib",
            "p99_target_met",
        ],
    );
    let mut text = Vec::new();
    dm::print(&r, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("latency p50"), "{text}");
    assert!(text.contains("relay RSS"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_saturate_keeps_every_message() {
    let mut o = dm::Options::new(spawn_target());
    o.pairs = 2;
    o.saturate = true;
    o.window = 4;
    o.duration = Duration::from_secs(1);
    o.warmup = Duration::from_millis(200);
    o.drain = Duration::from_secs(20);
    let r = dm::run(&o).await.unwrap();
    assert_eq!(r.mode, "saturate");
    assert!(r.sent > 0, "{r:?}");
    assert_eq!(r.delivered, r.sent, "{r:?}");
    assert_eq!(r.decrypt_errors, 0, "{r:?}");
    assert!(r.saturation_target_met.is_some());
    let json = serde_json::to_value(&r).unwrap();
    has_keys(&json, &["saturation_target_met", "achieved_msgs_per_sec"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_measured() {
    let mut o = idle::Options::new(spawn_target());
    o.connections = 50;
    o.warmup_connections = 5;
    o.users = 2;
    o.settle = Duration::from_millis(300);
    let r = idle::run(&o).await.unwrap();
    assert_eq!(r.scenario, "idle");
    assert_eq!(r.connections_open, 50, "{r:?}");
    assert_eq!(r.failures, 0, "{r:?}");
    assert!(r.relay_rss_before_kib.unwrap() > 0);
    assert!(r.relay_rss_after_kib.unwrap() > 0);
    assert!(r.bytes_per_connection.is_some());
    assert!(r.target_met.is_some());
    assert!(r.relay_open_files_limit.unwrap() > 0);
    let json = serde_json::to_value(&r).unwrap();
    has_keys(
        &json,
        &[
            "connections_open",
            "bytes_per_connection",
            "kb_per_connection",
            "relay_rss_before_kib",
            "relay_rss_after_kib",
            "target_met",
        ],
    );
    let mut text = Vec::new();
    idle::print(&r, &mut text).unwrap();
    assert!(String::from_utf8(text).unwrap().contains("per connection"));
}

#[tokio::test]
async fn benchmarks_refuse_non_loopback_relays() {
    let o = dm::Options::new(RelayTarget::External {
        url: "ws://192.0.2.1:7000".into(),
        invite: "X".into(),
        pid: None,
    });
    let e = dm::run(&o).await.unwrap_err();
    assert!(e.to_string().contains("loopback"), "{e}");
}
