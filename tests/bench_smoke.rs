//! Smoke tests of the load scenarios: `cinder bench dm`, `cinder bench idle` and
//! `cinder bench room` with tiny parameters, against a real relay process (the `cinder` binary
//! this package builds).
//!
//! They check that the reports are consistent (everything sent on loopback is delivered and
//! decrypted, latencies are positive, process figures are read, the JSON has its keys), never
//! how fast anything is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use cinder::bench::client::RelayTarget;
use cinder::bench::{dm, idle, room};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_counts_every_delivery_and_rotation() {
    let mut o = room::Options::new(spawn_target());
    o.members = 6;
    o.rotating_senders = 2;
    o.window = 4;
    o.saturate_duration = Duration::from_millis(500);
    o.duration = Duration::from_secs(1);
    o.warmup = Duration::from_millis(200);
    o.rate = 20.0;
    o.drain = Duration::from_secs(20);
    let r = room::run(&o).await.unwrap();
    assert_eq!(r.scenario, "room");
    assert_eq!(r.relay, "spawned");
    assert_eq!(r.members, 6);
    assert!(r.first_error.is_none(), "{r:?}");

    // Client send cost in both rooms.
    assert_eq!(r.send_cpu.small_members, 2);
    assert_eq!(r.send_cpu.large_members, 6);
    assert!(
        r.send_cpu.small_us > 0.0 && r.send_cpu.large_us > 0.0,
        "{r:?}"
    );
    assert!(r.send_cpu.frame_bytes > 0);

    // Both saturation runs delivered to all 5 recipients and left nothing behind.
    for f in [&r.fanout_counting, &r.fanout_decrypting] {
        assert!(f.deliveries > 0, "{f:?}");
        assert!(f.deliveries_per_sec > 0.0, "{f:?}");
        assert!(f.sent > 0, "{f:?}");
        assert_eq!(f.incomplete, 0, "{f:?}");
        assert_eq!(f.send_errors, 0, "{f:?}");
        assert_eq!(f.decrypt_errors, 0, "{f:?}");
        assert!(f.relay_cpu_us_per_delivery.is_some(), "{f:?}");
    }
    assert_eq!(r.fanout_counting.members_do, "counting");
    assert_eq!(r.fanout_decrypting.members_do, "decrypting");

    // Open loop at 20 msgs/s for 1 s: every message reached (and was decrypted by) everyone.
    let l = &r.latency;
    assert!((18..=22).contains(&l.sent), "{l:?}");
    assert_eq!(l.delivered_to_all, l.sent, "{l:?}");
    assert_eq!(l.incomplete, 0);
    assert_eq!(l.decrypt_errors, 0);
    assert!(l.last_member_p50_ms > 0.0);
    assert!(l.first_member_p50_ms <= l.last_member_p50_ms, "{l:?}");
    assert!(l.last_member_p50_ms <= l.last_member_p99_ms);
    assert!(l.last_member_p99_ms <= l.last_member_max_ms);

    // One member removed; two of the five remaining rotated, each reaching the other four.
    let t = &r.rotation;
    assert_eq!(t.remaining_members, 5);
    assert_eq!(t.rotating_senders, 2);
    assert_eq!(t.entries_per_rotation, 4);
    assert_eq!(t.frames_per_rotation, 1);
    assert_eq!(t.installed, t.expected_installs);
    assert_eq!(t.expected_installs, 8);
    assert!(t.bytes_mean > 4.0 * 100.0, "{t:?}");
    assert!(t.cpu_ms_mean > 0.0);
    assert!(t.all_senders_bytes >= t.bytes_mean * 5.0 - 1.0);

    let json = serde_json::to_value(&r).unwrap();
    has_keys(
        &json,
        &[
            "members",
            "send_cpu",
            "fanout_counting",
            "fanout_decrypting",
            "latency",
            "rotation",
            "relay_rss_mib",
        ],
    );
    has_keys(
        &json["send_cpu"],
        &["small_us", "large_us", "ratio", "target_met"],
    );
    for run in ["fanout_counting", "fanout_decrypting"] {
        has_keys(
            &json[run],
            &[
                "deliveries",
                "deliveries_per_sec",
                "msgs_per_sec",
                "relay_cpu_us_per_delivery",
                "client_cpu_us_per_delivery",
            ],
        );
    }
    has_keys(
        &json["latency"],
        &[
            "last_member_p50_ms",
            "last_member_p99_ms",
            "delivered_to_all",
        ],
    );
    has_keys(
        &json["rotation"],
        &[
            "cpu_ms_mean",
            "bytes_mean",
            "entries_per_rotation",
            "all_senders_cpu_s",
            "all_senders_bytes",
        ],
    );
    let mut text = Vec::new();
    room::print(&r, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("members counting frames"), "{text}");
    assert!(text.contains("rotation after a removal"), "{text}");
}

#[tokio::test]
async fn room_refuses_bad_options() {
    let mut o = room::Options::new(RelayTarget::External {
        url: "ws://192.0.2.1:7000".into(),
        invite: "X".into(),
        pid: None,
    });
    let e = room::run(&o).await.unwrap_err();
    assert!(e.to_string().contains("loopback"), "{e}");
    o.members = 2;
    let e = room::run(&o).await.unwrap_err();
    assert!(e.to_string().contains("--members"), "{e}");
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
