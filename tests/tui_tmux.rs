//! The real `cinder` binary driving a real terminal: the UI runs in a tmux pane (an isolated
//! tmux server per test, 100x30, `TERM=xterm-256color`), keys go in with `send-keys`, and the
//! screen comes back with `capture-pane`. The relay is a `cinder serve` child process; the
//! accounts are registered through the binary with the test-only cheap key derivation.
//!
//! Only one assertion here is about time, because the issue asks for it: a reply sent with
//! `cinder send` is on alice's screen within 2 seconds of the command returning. Every other
//! wait is a generous liveness bound that only fails when something never happens.
//!
//! Needs `tmux` (CI installs it through `CINDER_APT_PACKAGES` in `scripts/lib.sh`); without it
//! the tests print why they are skipped, except under `CI`, where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cinder");
const PASS: &str = "correct horse battery staple";
/// How long anything that should happen is given before the test gives up on it.
const PATIENCE: Duration = Duration::from_secs(30);
/// The issue's bound: a reply sent from the command line shows in the UI within 2 seconds.
const REPLY_ON_SCREEN: Duration = Duration::from_secs(2);

/// Whether tmux can run here; `false` means skip (after printing why). Under `CI` a missing
/// tmux is a failure, not a skip.
fn tmux_available(test: &str) -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is not installed; CI must install it (scripts/lib.sh CINDER_APT_PACKAGES)"
        );
        eprintln!("skipping {test}: tmux is not installed (apt-get install tmux)");
    }
    ok
}

/// A per-test unique name.
fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{n}-{t:08x}", std::process::id())
}

/// Quotes a string for `sh`.
fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < PATIENCE, "the relay did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An isolated tmux server (`tmux -L NAME`), killed on drop, also when a test panics.
struct Tmux {
    socket: String,
    conf: PathBuf,
}

impl Tmux {
    fn new(root: &Path) -> Self {
        let conf = root.join("tmux.conf");
        // No status line (the pane is the whole 100x30), a known TERM inside the pane, and no
        // user configuration.
        std::fs::write(
            &conf,
            "set -g status off\nset -g default-terminal xterm-256color\nset -g history-limit 2000\n",
        )
        .unwrap();
        Self {
            socket: unique("cinder-tmux"),
            conf,
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-u")
            .arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg(&self.conf)
            .env_remove("TMUX")
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts `command` (run by `sh -c`) in a new detached 100x30 session named `name`, with
    /// `env` set for the pane.
    fn start(&self, name: &str, env: &[(String, String)], command: &str) {
        let mut c = self.cmd();
        c.args(["new-session", "-d", "-s", name, "-x", "100", "-y", "30"]);
        for (k, v) in env {
            c.arg("-e").arg(format!("{k}={v}"));
        }
        c.arg(command);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Types `text` literally (no key names).
    fn type_text(&self, target: &str, text: &str) {
        self.run(&["send-keys", "-t", target, "-l", text]);
    }

    /// Presses one key (`Enter`, `C-c`, ...).
    fn key(&self, target: &str, key: &str) {
        self.run(&["send-keys", "-t", target, key]);
    }

    fn screen(&self, target: &str) -> String {
        let out = self.run(&["capture-pane", "-p", "-J", "-t", target]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tmux format value for the pane, e.g. `#{alternate_on}`.
    fn pane_format(&self, target: &str, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", target, format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Polls the screen every 100 ms until `pred` holds; panics with the screen after `limit`.
    fn wait_for(
        &self,
        target: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen(target);
            if pred(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "waited {limit:?} for {what}; the screen shows:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `cinder serve` as a child process; killed on drop.
struct Relay {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
}

impl Relay {
    fn start(data: &Path) -> Self {
        let mut r = Self {
            child: None,
            port: free_port(),
            data: data.to_path_buf(),
        };
        r.restart();
        r
    }

    /// Starts (again) on the same port and data directory.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_port(self.port);
    }

    /// Simulates a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The one-time admin invite the first start wrote (the code is the file's last line).
    fn admin_invite(&self) -> String {
        let file = self.data.join("admin-invite.txt");
        let t0 = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(&file)
                && let Some(code) = s.trim_end().lines().last()
                && !code.trim().is_empty()
            {
                return code.trim().to_owned();
            }
            assert!(t0.elapsed() < PATIENCE, "no admin invite in {file:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's world: a temporary root with XDG directories, a relay, and registered users.
struct World {
    root: tempfile::TempDir,
    relay: Relay,
    tmux: Tmux,
}

impl World {
    /// A relay with admin, alice and bob registered through the binary.
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let relay = Relay::start(&root.path().join("relay-data"));
        let tmux = Tmux::new(root.path());
        let w = Self { root, relay, tmux };
        // A short reconnect backoff cap keeps the reconnect test quick; it asserts no timing.
        let cfg = w.root.path().join("xdg-config/cinder");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(
            cfg.join("config.toml"),
            "[network]\nreconnect_max_seconds = 2\n",
        )
        .unwrap();
        let url = w.relay.url();
        w.register(&url, &w.relay.admin_invite(), "admin");
        for u in ["alice", "bob"] {
            let out = w.ok(
                "admin",
                &["admin", "invite", "--email", &format!("{u}@example.com")],
            );
            let code = out.trim_end().lines().last().unwrap().to_owned();
            w.register(&url, &code, u);
        }
        w
    }

    fn profile(&self, name: &str) -> PathBuf {
        self.root.path().join("profiles").join(name)
    }

    /// The environment of every `cinder` this test runs, in the pane or not.
    fn env(&self) -> Vec<(String, String)> {
        let r = self.root.path();
        let d = |p: &str| r.join(p).to_string_lossy().into_owned();
        vec![
            ("XDG_CONFIG_HOME".into(), d("xdg-config")),
            ("XDG_DATA_HOME".into(), d("xdg-data")),
            ("XDG_STATE_HOME".into(), d("xdg-state")),
            ("XDG_CACHE_HOME".into(), d("xdg-cache")),
            ("TMPDIR".into(), d("tmp")),
            ("CINDER_PASSPHRASE".into(), PASS.into()),
            ("TERM".into(), "xterm-256color".into()),
            ("LC_ALL".into(), "C.UTF-8".into()),
        ]
    }

    fn cmd(&self, profile: &str) -> Command {
        std::fs::create_dir_all(self.root.path().join("tmp")).unwrap();
        let mut c = Command::new(BIN);
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c.env_remove("CINDER_PROFILE")
            .arg("--profile")
            .arg(self.profile(profile))
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, profile: &str, args: &[&str]) -> String {
        let out = self.cmd(profile).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "cinder {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn register(&self, url: &str, invite: &str, name: &str) {
        self.ok(
            name,
            &[
                "register",
                "--server",
                url,
                "--invite",
                invite,
                "--username",
                name,
                "--insecure-fast-kdf",
            ],
        );
    }

    /// Runs `cinder --profile P chat` in a tmux session named `session`; when the UI exits,
    /// the pane prints `EXIT=<status>` and the terminal mode, and stays open.
    fn start_chat(&self, session: &str, profile: &str) {
        std::fs::create_dir_all(self.root.path().join("tmp")).unwrap();
        let script = format!(
            "{} --profile {} chat; echo EXIT=$?; \
             if stty -a | grep -q -- -icanon; then echo TTY=raw; else echo TTY=cooked; fi; \
             sleep 600",
            shq(BIN),
            shq(&self.profile(profile).to_string_lossy())
        );
        self.tmux
            .start(session, &self.env(), &format!("sh -c {}", shq(&script)));
    }

    /// bob's next message, via `cinder recv --json --timeout 10s`.
    fn bob_receives(&self) -> Vec<serde_json::Value> {
        let out = self.ok("bob", &["recv", "--json", "--timeout", "10s"]);
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until bob has received `text` from alice (several recv calls if needed).
    fn bob_gets(&self, text: &str) {
        self.bob_finds(text, &["--with", "alice"]);
    }

    /// bob's copy of alice's message `text`, as JSON: from `cinder recv --json`, or from
    /// `cinder history HISTORY_ARGS --json`, which proves it is in bob's cache even when
    /// `recv` did not print it. (`recv` drops a message that is pushed live while its first
    /// sync runs: the loop that prints room membership lines after the sync discards every
    /// other event. Reported; until it is fixed, the history keeps these tests about the UI.)
    fn bob_finds(&self, text: &str, history_args: &[&str]) -> serde_json::Value {
        let is_it = |m: &serde_json::Value| {
            m["type"] == "message" && m["from"] == "alice" && m["text"] == text
        };
        let t0 = Instant::now();
        let mut seen = Vec::new();
        loop {
            for m in self.bob_receives() {
                if is_it(&m) {
                    return m;
                }
                seen.push(m);
            }
            let mut args = vec!["history", "--json"];
            args.extend_from_slice(history_args);
            for line in self.ok("bob", &args).lines() {
                let m: serde_json::Value = serde_json::from_str(line).unwrap();
                if is_it(&m) {
                    eprintln!("note: `cinder recv` did not print {text:?}; bob's history has it");
                    return m;
                }
            }
            assert!(
                t0.elapsed() < PATIENCE,
                "bob never received {text:?}; got {seen:?}; alice's screen:\n{}",
                self.tmux.screen("alice")
            );
        }
    }
}

/// The status bar says connected (not "connecting", not "reconnecting").
fn connected(screen: &str) -> bool {
    screen.contains(" connected")
}

fn reconnecting(screen: &str) -> bool {
    screen.contains("reconnecting")
}

#[test]
fn a_message_typed_in_the_ui_reaches_bob_and_his_reply_shows_within_two_seconds() {
    if !tmux_available("a_message_typed_in_the_ui_reaches_bob...") {
        return;
    }
    let w = World::new();
    let t = &w.tmux;
    w.start_chat("alice", "alice");
    t.wait_for("alice", "the UI to connect", PATIENCE, connected);

    t.type_text("alice", "/dm bob");
    t.key("alice", "Enter");
    let text = format!("hello bob from the UI {}", std::process::id());
    t.type_text("alice", &text);
    t.key("alice", "Enter");
    w.bob_gets(&text);
    // The sent message is on alice's screen too.
    t.wait_for("alice", "alice's own message", PATIENCE, |s| {
        s.contains(&text)
    });

    let reply = format!("pong {}", unique("r"));
    w.ok("bob", &["send", "--to", "alice", &reply]);
    let sent = Instant::now();
    t.wait_for("alice", "bob's reply", REPLY_ON_SCREEN, |s| {
        s.contains(&reply)
    });
    let took = sent.elapsed();
    assert!(
        took <= REPLY_ON_SCREEN,
        "the reply took {took:?} to show (at most {REPLY_ON_SCREEN:?})"
    );
}

#[test]
fn a_room_created_in_the_ui_reaches_bob_with_its_title_and_timed_messages_count_down() {
    if !tmux_available("a_room_created_in_the_ui_reaches_bob...") {
        return;
    }
    let w = World::new();
    let t = &w.tmux;
    w.start_chat("alice", "alice");
    t.wait_for("alice", "the UI to connect", PATIENCE, connected);

    t.type_text("alice", "/room create Ops bob");
    t.key("alice", "Enter");
    t.wait_for("alice", "the room in the sidebar", PATIENCE, |s| {
        s.contains(" Rooms") && s.contains("▸ Ops") && s.contains("* alice created the room")
    });
    t.type_text("alice", "/members");
    t.key("alice", "Enter");
    t.wait_for("alice", "the member list", PATIENCE, |s| {
        s.contains("Moderators") && s.contains("@alice (you)") && s.contains("  bob")
    });
    t.key("alice", "Escape");

    let text = format!("hello ops from the UI {}", std::process::id());
    t.type_text("alice", &text);
    t.key("alice", "Enter");
    // Once the relay has it (the sent mark), bob's `recv --json` has the message with the
    // room's id, kind and title. (Waiting for the mark keeps this test about the UI: a room
    // message that the relay fans out while bob's `recv` is connecting can be lost, which is
    // reported separately.)
    t.wait_for("alice", "the sent mark", PATIENCE, |s| {
        s.lines().any(|l| l.contains(&text) && l.contains('✓'))
    });
    let m = w.bob_finds(&text, &["--room", "Ops"]);
    assert_eq!(m["room"]["title"], "Ops", "{m}");
    assert_eq!(m["room"]["kind"], "room", "{m}");
    assert!(
        m["conversation"]
            .as_str()
            .is_some_and(|c| c.starts_with("room:")),
        "{m}"
    );

    // bob answers in the room from the command line; alice sees it there.
    let reply = format!("ops reply {}", unique("r"));
    w.ok("bob", &["send", "--room", "Ops", &reply]);
    t.wait_for("alice", "bob's reply in the room", PATIENCE, |s| {
        s.contains(&reply)
    });

    // A message for the next send only: the composer says so, the message counts down.
    t.type_text("alice", "/expire 1h");
    t.key("alice", "Enter");
    t.wait_for("alice", "the composer's timer note", PATIENCE, |s| {
        s.contains("next message expires 1h")
    });
    t.type_text("alice", "short-lived note");
    t.key("alice", "Enter");
    t.wait_for("alice", "the countdown badge", PATIENCE, |s| {
        s.lines()
            .any(|l| l.contains("short-lived note") && l.contains("\u{23f3} 59m"))
            && !s.contains("next message expires")
    });
}

#[test]
fn the_ui_keeps_taking_input_while_the_relay_is_down_and_sends_after_reconnecting() {
    if !tmux_available("the_ui_keeps_taking_input_while_the_relay_is_down...") {
        return;
    }
    let mut w = World::new();
    w.start_chat("alice", "alice");
    w.tmux
        .wait_for("alice", "the UI to connect", PATIENCE, connected);
    w.tmux.type_text("alice", "/dm bob");
    w.tmux.key("alice", "Enter");
    w.tmux
        .wait_for("alice", "the conversation with bob", PATIENCE, |s| {
            s.contains("bob")
        });

    w.relay.kill();
    w.tmux.wait_for(
        "alice",
        "the status bar to show reconnecting",
        PATIENCE,
        reconnecting,
    );
    let text = format!("typed while offline {}", std::process::id());
    w.tmux.type_text("alice", &text);
    let s = w
        .tmux
        .wait_for("alice", "the typed text", PATIENCE, |s| s.contains(&text));
    assert!(
        !connected(&s),
        "still offline while typing (relay is down):\n{s}"
    );

    w.relay.restart();
    w.tmux.wait_for(
        "alice",
        "the status bar to return to connected",
        PATIENCE,
        connected,
    );
    w.tmux.key("alice", "Enter");
    w.bob_gets(&text);
}

#[test]
fn ctrl_c_quits_with_status_0_and_restores_the_terminal() {
    if !tmux_available("ctrl_c_quits_with_status_0_and_restores_the_terminal") {
        return;
    }
    let w = World::new();
    let t = &w.tmux;
    w.start_chat("alice", "alice");
    t.wait_for("alice", "the UI to connect", PATIENCE, connected);
    assert_eq!(
        t.pane_format("alice", "#{alternate_on}"),
        "1",
        "the UI uses the alternate screen"
    );
    t.key("alice", "C-c");
    let s = t.wait_for("alice", "the UI to exit", PATIENCE, |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=0"), "exit status 0:\n{s}");
    let s = t.wait_for("alice", "the terminal mode", PATIENCE, |s| {
        s.contains("TTY=")
    });
    assert!(
        s.contains("TTY=cooked"),
        "raw mode is switched off again:\n{s}"
    );
    assert_eq!(
        t.pane_format("alice", "#{alternate_on}"),
        "0",
        "back on the main screen"
    );
    assert_eq!(
        t.pane_format("alice", "#{mouse_any_flag}"),
        "0",
        "mouse capture off"
    );
    assert_eq!(
        t.pane_format("alice", "#{cursor_flag}"),
        "1",
        "cursor visible"
    );
}

#[test]
fn the_demo_opens_a_filled_conversation_whose_bots_answer_and_cleans_up() {
    if !tmux_available("the_demo_opens_a_filled_conversation...") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let tmp = root.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let t = Tmux::new(root.path());
    let d = |p: &str| root.path().join(p).to_string_lossy().into_owned();
    let env = vec![
        ("XDG_CONFIG_HOME".to_owned(), d("xdg-config")),
        ("XDG_DATA_HOME".to_owned(), d("xdg-data")),
        ("TMPDIR".to_owned(), d("tmp")),
        ("USER".to_owned(), "dana".to_owned()),
        ("TERM".to_owned(), "xterm-256color".to_owned()),
        ("LC_ALL".to_owned(), "C.UTF-8".to_owned()),
    ];
    let script = format!("{} demo; echo EXIT=$?; sleep 600", shq(BIN));
    t.start("demo", &env, &format!("sh -c {}", shq(&script)));
    // The UI opens signed in as $USER on the demo network, with alice's conversation filled.
    let s = t.wait_for("demo", "the demo UI", Duration::from_secs(120), |s| {
        connected(s) && s.contains("dana") && s.contains("say 'help' to me")
    });
    assert!(s.contains("Cinder demo"), "{s}");
    // Ask alice for help: the answer arrives through the relay.
    t.type_text("demo", "help");
    t.key("demo", "Enter");
    t.wait_for("demo", "alice's answer", PATIENCE, |s| {
        s.contains("/search WORDS")
    });
    // The busy room: open it with the quick switcher; its burn-after-reading message starts
    // burning once shown, and the member list shows you as a moderator.
    t.key("demo", "C-k");
    t.type_text("demo", "ops");
    t.key("demo", "Enter");
    t.wait_for("demo", "the room with a burning message", PATIENCE, |s| {
        s.contains("▸ ops")
            && s.contains(" Rooms")
            && s.lines()
                .any(|l| l.contains("burn after reading") && l.contains("\u{1f525} "))
    });
    t.key("demo", "F2");
    t.wait_for("demo", "the member list", PATIENCE, |s| {
        s.contains("Moderators") && s.contains("@dana (you)")
    });
    t.key("demo", "C-c");
    let s = t.wait_for("demo", "the demo to exit", PATIENCE, |s| {
        s.contains("EXIT=")
    });
    assert!(s.contains("EXIT=0"), "{s}");
    // The temporary directory (relay data, profiles) is gone.
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("cinder-demo-"))
        .collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}
