//! `cinder bench render` and `cinder bench startup`: the UI's frame time over a huge
//! conversation, and start-to-first-frame over a huge cache.
//!
//! Both draw into ratatui's `TestBackend`, which runs the same layout and widget code as a real
//! terminal minus the final write of changed cells (a few kilobytes at most per frame).

use std::path::Path;
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde::Serialize;

use super::BenchError;
use crate::crypto::identity::{DeviceId, DeviceKeys, DeviceRole, UserRootKey};
use crate::crypto::passphrase::{CacheHeader, KdfParams, derive_kek};
use crate::session::{self, EngineOptions};
use crate::store::{AccountRecord, MessageKind, MessageRecord, MessageState, MessageTimers, Store};
use crate::tui::action::Action;
use crate::tui::app::{App, PAGE, Settings, UiEvent};
use crate::tui::keymap::Keymap;
use crate::tui::theme::Theme;
use crate::tui::view;

fn settings() -> Settings {
    Settings {
        bell: false,
        desktop_notifications: false,
        theme_dir: None,
        keymap_file: None,
        no_color: false,
        utc_offset_secs: 0,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Frame-time figures for one terminal size.
#[derive(Serialize, Debug)]
pub struct SizeFigures {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
    /// Frames drawn.
    pub frames: usize,
    /// Median frame time, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest frame, ms.
    pub max_ms: f64,
    /// Median thread CPU time per frame, ms (unaffected by other processes).
    pub cpu_p50_ms: f64,
    /// 99th percentile thread CPU time per frame, ms.
    pub cpu_p99_ms: f64,
}

/// `cinder bench render` results.
#[derive(Serialize, Debug)]
pub struct RenderReport {
    /// Always "render".
    pub scenario: &'static str,
    /// Messages in the conversation.
    pub messages: usize,
    /// Per size.
    pub sizes: Vec<SizeFigures>,
    /// Whether every p99 is within 2 ms.
    pub meets_target: bool,
}

/// Draws a conversation of `messages` messages at 80x24, 200x50 and 300x80, `frames` times each,
/// following the newest message and while scrolled back.
///
/// # Errors
/// Terminal backend errors (which `TestBackend` does not produce).
pub fn render(messages: usize, frames: usize) -> Result<RenderReport, BenchError> {
    let mut app = App::new(
        Theme::default_theme(),
        Keymap::builtin("default").map_err(|e| BenchError::Usage(e.to_string()))?,
        settings(),
    );
    app.unlocked("alice", "Bench");
    let conv = "dm:alice:bob";
    let t0 = 1_764_000_000_000u64;
    let words = [
        "deploy",
        "green",
        "rollback",
        "日本語",
        "ünïcødé",
        "🎉",
        "the",
        "build",
        "is",
        "ok",
    ];
    let msgs: Vec<MessageRecord> = (0..messages)
        .map(|i| {
            let n = 3 + i % 25;
            let text = (0..n)
                .map(|k| words[(i * 7 + k) % words.len()])
                .collect::<Vec<_>>()
                .join(" ");
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            MessageRecord {
                message_id: id,
                conversation: conv.into(),
                outgoing: i % 3 == 0,
                sender: if i % 3 == 0 {
                    "alice".into()
                } else {
                    "bob".into()
                },
                sender_device: [0; 16],
                sent_at_ms: t0 + i as u64 * 45_000,
                received_at_ms: t0 + i as u64 * 45_000,
                text,
                state: MessageState::Delivered,
                kind: MessageKind::Text,
                timers: MessageTimers::default(),
            }
        })
        .collect();
    app.on_event(UiEvent::Conversations(vec![
        crate::store::ConversationSummary {
            conversation: conv.into(),
            last_activity_ms: t0,
            messages: messages as u64,
            unread: 0,
        },
    ]));
    app.on_event(UiEvent::History {
        conversation: conv.into(),
        older: false,
        messages: msgs,
    });
    let mut sizes = Vec::new();
    for (w, h) in [(80u16, 24u16), (200, 50), (300, 80)] {
        let mut term =
            Terminal::new(TestBackend::new(w, h)).map_err(|e| BenchError::Usage(e.to_string()))?;
        let mut times = Vec::with_capacity(frames);
        let mut cpu = Vec::with_capacity(frames);
        for f in 0..frames {
            // Alternate between following the newest message and scrolling back a few pages.
            let scroll_target = if f % 2 == 0 { 0 } else { (f % 10) * 40 };
            app.update(Action::ScrollBottom);
            for _ in 0..scroll_target / 20 {
                app.update(Action::PageUp);
            }
            let now = Instant::now();
            let c0 = super::thread_cpu_ns();
            let t = Instant::now();
            term.draw(|fr| {
                view::draw(fr, &app, now);
            })
            .map_err(|e| BenchError::Usage(e.to_string()))?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if let (Some(a), Some(b)) = (c0, super::thread_cpu_ns()) {
                cpu.push(b.saturating_sub(a) as f64 / 1e6);
            }
        }
        times.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        sizes.push(SizeFigures {
            width: w,
            height: h,
            frames,
            p50_ms: percentile(&times, 0.5),
            p99_ms: percentile(&times, 0.99),
            max_ms: times.last().copied().unwrap_or(0.0),
            cpu_p50_ms: percentile(&cpu, 0.5),
            cpu_p99_ms: percentile(&cpu, 0.99),
        });
    }
    let meets_target = sizes.iter().all(|s| s.p99_ms <= 2.0);
    Ok(RenderReport {
        scenario: "render",
        messages,
        sizes,
        meets_target,
    })
}

/// `cinder bench startup` results.
#[derive(Serialize, Debug)]
pub struct StartupReport {
    /// Always "startup".
    pub scenario: &'static str,
    /// Messages in the cache.
    pub messages: u64,
    /// Time to fill the cache (not part of start-up).
    pub fill_s: f64,
    /// Argon2id key derivation alone (default parameters), ms.
    pub key_derivation_ms: f64,
    /// Opening the cache, loading the conversation list and the newest page, building the UI
    /// and drawing the first frame, excluding key derivation, ms.
    pub to_first_frame_ms: f64,
    /// Whether `to_first_frame_ms` is within 200 ms.
    pub meets_target: bool,
}

/// Fills (or reuses) a cache of `messages` messages protected with the default Argon2id
/// parameters, then measures start-up to the first drawn frame.
///
/// # Errors
/// Cache or session errors.
pub async fn startup(messages: u64, cache: Option<&Path>) -> Result<StartupReport, BenchError> {
    let tmp = tempfile::tempdir()?;
    let dir = cache.map_or_else(|| tmp.path().join("profile"), Path::to_path_buf);
    let pass: &[u8] = b"bench startup passphrase";
    let mut fill_s = 0.0;
    if !Store::exists(&dir) {
        let t = Instant::now();
        let d = dir.clone();
        let n = messages;
        tokio::task::spawn_blocking(move || -> Result<(), BenchError> {
            super::fixtures::fill_cache(&d, pass, 50, n as usize)
                .map_err(|e| BenchError::Usage(e.to_string()))?;
            // A real profile: an account (pointing nowhere; start-up does not need the relay)
            // and the default Argon2id cost.
            let mut store = Store::open(&d, pass).map_err(|e| BenchError::Usage(e.to_string()))?;
            let root = UserRootKey::generate()?;
            let dev = DeviceKeys::generate()?;
            let id = DeviceId::random()?;
            let cert = root.certify("alice", id, &dev, 1, DeviceRole::User)?;
            store
                .transaction(|db| {
                    db.put_account(&AccountRecord {
                        server_url: "ws://127.0.0.1:9".into(),
                        username: "alice".into(),
                        display_name: "alice".into(),
                        device_id: id.0,
                        network_id: "bench".into(),
                        network_name: "Bench".into(),
                        relay_id: vec![1; 32],
                        is_admin: false,
                        root_public: root.public().0,
                        root_secret: Some(root.secret_bytes()),
                        device_signing_secret: dev.signing.secret_bytes(),
                        device_identity_secret: dev.identity.secret_bytes(),
                        device_cert: cert.encode()?,
                        created_at: 1,
                        allow_insecure_ws: false,
                    })
                })
                .map_err(|e| BenchError::Usage(e.to_string()))?;
            drop(store);
            Store::change_passphrase(&d, pass, pass, KdfParams::DEFAULT)
                .map_err(|e| BenchError::Usage(e.to_string()))?;
            Ok(())
        })
        .await
        .map_err(|_| BenchError::Usage("fill crashed".into()))??;
        fill_s = t.elapsed().as_secs_f64();
    }
    // Key derivation alone, with the header's parameters.
    let header = CacheHeader::decode(&std::fs::read(dir.join("cache.header"))?)?;
    let t = Instant::now();
    derive_kek(pass, &header.salt, header.params)?;
    let kdf = t.elapsed();

    let t = Instant::now();
    let d = dir.clone();
    let store = tokio::task::spawn_blocking(move || session::unlock(&d, pass))
        .await
        .map_err(|_| BenchError::Usage("unlock crashed".into()))?
        .map_err(|e| BenchError::Usage(e.to_string()))?;
    let handle = session::spawn(store, EngineOptions::default())
        .map_err(|e| BenchError::Usage(e.to_string()))?;
    let convs = handle
        .conversations()
        .await
        .map_err(|e| BenchError::Usage(e.to_string()))?;
    let first = convs.first().map(|c| c.conversation.clone());
    let page = match &first {
        Some(c) => handle
            .history_before(c, None, PAGE)
            .await
            .map_err(|e| BenchError::Usage(e.to_string()))?,
        None => Vec::new(),
    };
    let mut app = App::new(
        Theme::default_theme(),
        Keymap::builtin("default").map_err(|e| BenchError::Usage(e.to_string()))?,
        settings(),
    );
    app.unlocked("alice", "Bench");
    app.on_event(UiEvent::Conversations(convs));
    if let Some(c) = first {
        app.on_event(UiEvent::History {
            conversation: c,
            older: false,
            messages: page,
        });
    }
    let mut term =
        Terminal::new(TestBackend::new(200, 50)).map_err(|e| BenchError::Usage(e.to_string()))?;
    let now = Instant::now();
    term.draw(|f| {
        view::draw(f, &app, now);
    })
    .map_err(|e| BenchError::Usage(e.to_string()))?;
    let total = t.elapsed();
    handle.shutdown().await;
    let excl = total.saturating_sub(kdf);
    Ok(StartupReport {
        scenario: "startup",
        messages,
        fill_s,
        key_derivation_ms: kdf.as_secs_f64() * 1000.0,
        to_first_frame_ms: excl.as_secs_f64() * 1000.0,
        meets_target: excl <= Duration::from_millis(200),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_report_covers_every_size() {
        let r = render(2_000, 6).unwrap();
        assert_eq!(r.sizes.len(), 3);
        assert!(r.sizes.iter().all(|s| s.frames == 6 && s.max_ms > 0.0));
    }
}
