//! The command-line contract, driven through the real `cinder` binary: registration, scripting
//! with `send`/`recv --json`/`history`, admin invites, exit codes, passphrase handling, and
//! crash recovery with real processes (a SIGKILLed relay, a SIGKILLed client).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_cinder");

struct Env {
    root: PathBuf,
}

impl Env {
    fn cmd(&self, profile: &str) -> Command {
        let mut c = Command::new(BIN);
        c.env("XDG_CONFIG_HOME", self.root.join("xdg-config"))
            .env("XDG_DATA_HOME", self.root.join("xdg-data"))
            .env("CINDER_PASSPHRASE", std::str::from_utf8(PASS).unwrap())
            .env_remove("CINDER_PROFILE")
            .arg("--profile")
            .arg(self.root.join(profile))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, profile: &str, args: &[&str]) -> Output {
        self.cmd(profile).args(args).output().unwrap()
    }

    fn ok(&self, profile: &str, args: &[&str]) -> String {
        let out = self.run(profile, args);
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
}

fn last_line(s: &str) -> &str {
    s.trim_end().lines().last().unwrap_or("")
}

/// An admin, alice and bob registered through the binary.
fn setup(env: &Env, url: &str, admin_invite: &str) {
    env.register(url, admin_invite, "admin");
    for u in ["alice", "bob"] {
        let out = env.ok(
            "admin",
            &["admin", "invite", "--email", &format!("{u}@example.com")],
        );
        let code = last_line(&out).to_owned();
        assert!(
            !code.contains(' '),
            "the code is alone on the last line: {out:?}"
        );
        env.register(url, &code, u);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripting_with_send_recv_json_and_history() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let env = Env {
        root: tmp.path().to_path_buf(),
    };
    let url = relay.url();
    let invite = relay.admin_invite.clone();
    tokio::task::spawn_blocking(move || {
        setup(&env, &url, &invite);
        env.ok("alice", &["send", "--to", "bob", "hello bob"]);
        let mut child = env
            .cmd("alice")
            .args(["send", "--to", "bob", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all("line one\nline two ✓\n".as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        let out = env.ok("bob", &["recv", "--json"]);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["type"], "message");
        assert_eq!(lines[0]["from"], "alice");
        assert_eq!(lines[0]["conversation"], "dm:alice:bob");
        assert_eq!(lines[0]["text"], "hello bob");
        assert_eq!(lines[0]["id"].as_str().unwrap().len(), 32);
        assert!(humantime::parse_rfc3339(lines[0]["sent_at"].as_str().unwrap()).is_ok());
        assert_eq!(lines[1]["text"], "line one\nline two ✓\n");
        // Nothing twice.
        assert_eq!(env.ok("bob", &["recv", "--json"]), "");
        env.ok("bob", &["send", "--to", "alice", "hi alice"]);
        let hist = env.ok("alice", &["history", "--with", "bob", "--json"]);
        let h: Vec<serde_json::Value> = hist
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(h.len(), 2, "{hist}");
        assert_eq!(h[0]["outgoing"], true);
        assert_eq!(h[0]["state"], "sent");
        let plain = env.ok("bob", &["history", "--with", "alice"]);
        assert!(plain.contains("alice: hello bob"), "{plain}");
    })
    .await
    .unwrap();
}

/// A peer's text cannot drive the reader's terminal: escape sequences (an OSC 52 clipboard
/// write, a line erase) and a carriage return that would draw a fake line from another sender
/// come out of `recv` and `history` as visible symbols, and a newline in the body starts an
/// indented continuation line, never a line that passes for a new sender. `--json` keeps the
/// exact text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_text_cannot_inject_terminal_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let env = Env {
        root: tmp.path().to_path_buf(),
    };
    let (url, invite) = (relay.url(), relay.admin_invite.clone());
    tokio::task::spawn_blocking(move || {
        setup(&env, &url, &invite);
        let evil = "hi\x1b]52;c;SGVsbG8=\x07\r\x1b[2Kmallory: fake\u{202e}\u{9b}\nadmin: also fake";
        env.ok("alice", &["send", "--to", "bob", evil]);
        let check = |out: &str| {
            assert!(
                !out.contains(['\x1b', '\r', '\x07', '\u{202e}', '\u{9b}']),
                "{out:?}"
            );
            assert!(
                out.contains("␛]52;c;SGVsbG8=␇␍␛[2Kmallory: fake"),
                "{out:?}"
            );
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 2, "{out:?}");
            assert!(
                lines[0].starts_with('[') && lines[0].contains("] alice: hi"),
                "{out:?}"
            );
            assert_eq!(lines[1], "    admin: also fake", "{out:?}");
        };
        check(&env.ok("bob", &["recv"]));
        check(&env.ok("bob", &["history", "--with", "alice"]));
        let json = env.ok("bob", &["history", "--with", "alice", "--json"]);
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["text"], evil);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start(tmp.path()).await;
    let env = Env {
        root: tmp.path().to_path_buf(),
    };
    let url = relay.url();
    let invite = relay.admin_invite.clone();
    let env = tokio::task::spawn_blocking(move || {
        setup(&env, &url, &invite);
        // 2: bad usage.
        let o = env.run("bob", &["recv", "--timeout", "soon"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("not a duration"));
        assert_eq!(env.run("bob", &["send"]).status.code(), Some(2));
        // 3: wrong passphrase, and nothing in the profile changes.
        let before = all_bytes(&env.root.join("bob"));
        let o = env
            .cmd("bob")
            .env("CINDER_PASSPHRASE", "wrong")
            .args(["recv"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&o.stderr).contains("wrong passphrase"));
        assert_eq!(before, all_bytes(&env.root.join("bob")));
        // 5: refused by the relay (a bad invite), and no profile is left behind.
        let o = env.run(
            "erin",
            &[
                "register",
                "--server",
                &url,
                "--invite",
                "AAAA-BBBB-CCCC-DDDD",
                "--username",
                "erin",
                "--insecure-fast-kdf",
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(5),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("invite"));
        assert!(
            !env.root.join("erin").exists(),
            "a refused registration leaves no profile"
        );
        // 4: nothing listens there.
        let o = env.run(
            "carol",
            &[
                "register",
                "--server",
                &format!("ws://127.0.0.1:{}", 1),
                "--invite",
                "X",
                "--username",
                "carol",
                "--insecure-fast-kdf",
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !env.root.join("carol").join("cache.header").exists(),
            "a failed registration leaves no profile"
        );
        let o = env.run("alice", &["send", "--to", "nobody", "hi"]);
        assert_eq!(
            o.status.code(),
            Some(5),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("unknown user"));
        let o = env.run("bob", &["admin", "invite", "--email", "x@y"]);
        assert_eq!(o.status.code(), Some(5));
        assert!(String::from_utf8_lossy(&o.stderr).contains("permission denied"));
        // Plain ws:// to a remote host is refused before anything is sent.
        let o = env.run(
            "dave",
            &[
                "register",
                "--server",
                "ws://relay.example.com:80",
                "--invite",
                "X",
                "--username",
                "dave",
                "--insecure-fast-kdf",
            ],
        );
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("--insecure-ws"));
        env
    })
    .await
    .unwrap();
    // 4: relay unreachable; the message stays queued and goes out later.
    relay.stop().await;
    let env = tokio::task::spawn_blocking(move || {
        let o = env.run("alice", &["send", "--to", "bob", "while down"]);
        assert_eq!(o.status.code(), Some(4));
        assert!(String::from_utf8_lossy(&o.stderr).contains("queued"));
        env
    })
    .await
    .unwrap();
    relay.restart().await;
    tokio::task::spawn_blocking(move || {
        env.ok("alice", &["recv"]);
        let out = env.ok("bob", &["recv", "--json"]);
        assert!(out.contains("while down"), "{out}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_change_and_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let env = Env {
        root: tmp.path().to_path_buf(),
    };
    let (url, invite) = (relay.url(), relay.admin_invite.clone());
    tokio::task::spawn_blocking(move || {
        env.register(&url, &invite, "admin");
        let file = env.root.join("newpass");
        std::fs::write(&file, "a much better passphrase\n").unwrap();
        env.ok(
            "admin",
            &[
                "passphrase",
                "change",
                "--new-passphrase-file",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(
            env.run("admin", &["history", "--with", "bob"])
                .status
                .code(),
            Some(3)
        );
        let ok = env
            .cmd("admin")
            .env_remove("CINDER_PASSPHRASE")
            .args([
                "--passphrase-file",
                file.to_str().unwrap(),
                "history",
                "--with",
                "bob",
            ])
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let cmd = env
            .cmd("admin")
            .env_remove("CINDER_PASSPHRASE")
            .args([
                "--passphrase-command",
                &format!("cat {}", file.display()),
                "history",
                "--with",
                "bob",
            ])
            .output()
            .unwrap();
        assert!(cmd.status.success());
        // The command does not inherit CINDER_PASSPHRASE (nor CINDER_NEW_PASSPHRASE): it
        // prints the passphrase only when neither is in its environment.
        let clean = env
            .cmd("admin")
            .env("CINDER_NEW_PASSPHRASE", "leak")
            .args([
                "--passphrase-command",
                &format!(
                    "test -z \"$CINDER_PASSPHRASE$CINDER_NEW_PASSPHRASE\" && cat {}",
                    file.display()
                ),
                "history",
                "--with",
                "bob",
            ])
            .output()
            .unwrap();
        assert!(
            clean.status.success(),
            "the passphrase command saw CINDER_PASSPHRASE: {}",
            String::from_utf8_lossy(&clean.stderr)
        );
        let none = env
            .cmd("admin")
            .env_remove("CINDER_PASSPHRASE")
            .args(["history", "--with", "bob"])
            .output()
            .unwrap();
        assert_eq!(none.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&none.stderr).contains("no passphrase"));
    })
    .await
    .unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_relay(data: &Path, port: u16) -> Child {
    Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_port(port: u16) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "relay did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_the_admin_invite_and_survives_sigkill_mid_burst() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("relay-data");
    let port = free_port();
    let mut child = spawn_relay(&data, port);
    // First start: the invite is alone on the last line of stdout and of admin-invite.txt.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = Vec::new();
    let t0 = Instant::now();
    let invite_file = data.join("admin-invite.txt");
    // Read stdout up to the invite code; the relay prints nothing after it on stdout.
    let code = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "relay exited early: {printed:?}"
        );
        printed.push(line.trim_end().to_owned());
        if let Ok(file) = std::fs::read_to_string(&invite_file)
            && printed.last().map(String::as_str) == Some(last_line(&file))
        {
            break last_line(&file).to_owned();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{printed:?}");
    };
    wait_port(port);
    assert!(
        printed.len() >= 2,
        "an explanation precedes the code: {printed:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&invite_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(printed.last().unwrap(), &code);
    let url = format!("ws://127.0.0.1:{port}");
    register_user(&url, &code, "admin", &tmp.path().join("admin")).await;
    let admin = engine(&tmp.path().join("admin"));
    for u in ["alice", "bob"] {
        let c = admin.create_invite(u, false).await.unwrap();
        register_user(&url, &c, u, &tmp.path().join(u)).await;
    }
    admin.shutdown().await;
    let alice = engine(&tmp.path().join("alice"));
    const N: usize = 200;
    for i in 0..N {
        alice.send_text("bob", &format!("kill {i}")).await.unwrap();
    }
    let flusher = {
        let a = alice.clone();
        tokio::spawn(async move { a.flush().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _ = flusher.await.unwrap();
    let mut child = spawn_relay(&data, port);
    wait_port(port);
    alice.flush().await.unwrap();
    let bob = engine(&tmp.path().join("bob"));
    let got: Vec<String> = bob
        .sync()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|i| match i {
            cinder::session::Inbound::Message(m) => Some(m.text),
            cinder::session::Inbound::Undecryptable { .. } => None,
        })
        .collect();
    assert_eq!(got, (0..N).map(|i| format!("kill {i}")).collect::<Vec<_>>());
    alice.shutdown().await;
    bob.shutdown().await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_after_queuing_delivers_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start(tmp.path()).await;
    let env = Env {
        root: tmp.path().to_path_buf(),
    };
    let (url, invite) = (relay.url(), relay.admin_invite.clone());
    let env = tokio::task::spawn_blocking(move || {
        setup(&env, &url, &invite);
        env
    })
    .await
    .unwrap();
    relay.stop().await;
    // A listener that accepts and never answers: `send` queues, then hangs connecting.
    let hole = TcpListener::bind(relay.addr).unwrap();
    let env = tokio::task::spawn_blocking(move || {
        let mut child = env
            .cmd("alice")
            .args(["send", "--to", "bob", "survives a kill -9"])
            .spawn()
            .unwrap();
        let (_conn, _) = hole.accept().unwrap();
        // The outbox write happens before connecting, so it is durable by now.
        child.kill().unwrap();
        child.wait().unwrap();
        drop(hole);
        env
    })
    .await
    .unwrap();
    relay.restart().await;
    tokio::task::spawn_blocking(move || {
        // Any later command flushes the outbox first.
        env.ok("alice", &["recv"]);
        let out = env.ok("bob", &["recv", "--json"]);
        assert!(out.contains("survives a kill -9"), "{out}");
    })
    .await
    .unwrap();
}

/// Every duration flag takes the one grammar (humantime's, a bare number being seconds):
/// `recv --timeout 1h30m` was refused while `send --expire 1h30m` worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_flags_share_one_grammar() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let env = Env {
        root: tmp.path().to_path_buf(),
    };
    let (url, invite) = (relay.url(), relay.admin_invite.clone());
    tokio::task::spawn_blocking(move || {
        setup(&env, &url, &invite);
        env.ok(
            "alice",
            &["send", "--to", "bob", "--expire", "1h30m", "timed hello"],
        );
        // A message is waiting, so `recv --timeout` returns as soon as it has printed it.
        let out = env.ok("bob", &["recv", "--json", "--timeout", "1h30m"]);
        assert!(out.contains("timed hello"), "{out}");
        assert!(out.contains("\"expire_after\":5400"), "{out}");
        env.ok("alice", &["send", "--to", "bob", "second"]);
        let out = env.ok("bob", &["recv", "--timeout", "2days"]);
        assert!(out.contains("second"), "{out}");
        env.ok("alice", &["send", "--to", "bob", "third"]);
        let out = env.ok("bob", &["recv", "--timeout", "90"]);
        assert!(out.contains("third"), "{out}");
        for args in [
            &["recv", "--timeout", "1h30x"][..],
            &["recv", "--timeout", "soon"],
            &["send", "--to", "bob", "--expire", "soon", "x"],
            &["bench", "dm", "--duration", "1m30x"],
        ] {
            let o = env.run("bob", args);
            assert_eq!(o.status.code(), Some(2), "{args:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("not a duration"), "{args:?}: {err}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_timeout_and_follow_see_live_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let env = Env {
        root: tmp.path().to_path_buf(),
    };
    let (url, invite) = (relay.url(), relay.admin_invite.clone());
    tokio::task::spawn_blocking(move || {
        setup(&env, &url, &invite);
        // Establish the session so later messages travel as plain pushes.
        env.ok("alice", &["send", "--to", "bob", "first"]);
        env.ok("bob", &["recv"]);
        let waiting = env
            .cmd("bob")
            .args(["recv", "--json", "--timeout", "20s"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        env.ok("alice", &["send", "--to", "bob", "during the wait"]);
        let out = waiting.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("during the wait"));
        let mut follow = env
            .cmd("bob")
            .args(["recv", "--json", "--follow"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..3 {
            env.ok("alice", &["send", "--to", "bob", &format!("live {i}")]);
        }
        for i in 0..3 {
            let l = lines.next().unwrap().unwrap();
            assert!(l.contains(&format!("live {i}")), "{l}");
        }
        follow.kill().unwrap();
        follow.wait().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_timers_and_policy_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let env = Env {
        root: tmp.path().to_path_buf(),
    };
    let url = relay.url();
    let invite = relay.admin_invite.clone();
    tokio::task::spawn_blocking(move || {
        setup(&env, &url, &invite);
        let out = env.ok(
            "alice",
            &[
                "room",
                "create",
                "Ops",
                "--description",
                "on call",
                "--members",
                "bob",
            ],
        );
        let id = last_line(&out).to_owned();
        assert!(id.starts_with("room:"), "{out}");
        env.ok("bob", &["send", "--room", "Ops", "hello room"]);
        let got = env.ok("alice", &["recv", "--json"]);
        let line: serde_json::Value = got
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["text"] == "hello room")
            .unwrap_or_else(|| panic!("no room message in {got}"));
        assert_eq!(line["room"]["id"], id.as_str());
        assert_eq!(line["room"]["title"], "Ops");
        assert_eq!(line["conversation"], id.as_str());
        assert_eq!(line["from"], "bob");

        // A non-moderator cannot remove: refused (exit 5) with the reason.
        let out = env.run("bob", &["room", "remove", "Ops", "alice"]);
        assert_eq!(out.status.code(), Some(5));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("only moderators"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let members = env.ok("bob", &["room", "members", "Ops"]);
        assert!(
            members.contains("alice") && members.contains("moderator"),
            "{members}"
        );
        let list = env.ok("bob", &["room", "list", "--json"]);
        let rooms: Vec<serde_json::Value> = list
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rooms.len(), 1, "{list}");
        assert_eq!(rooms[0]["role"], "member");

        // An ambiguous title is an error listing the candidates.
        let out2 = env.ok("alice", &["room", "create", "Ops", "--members", "bob"]);
        let id2 = last_line(&out2).to_owned();
        let out = env.run("bob", &["send", "--room", "ops", "which one?"]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("ambiguous") && err.contains(&id) && err.contains(&id2),
            "{err}"
        );
        env.ok("bob", &["history", "--room", &id]);

        // Timers: per message, and conversation defaults. That they fire (gone from the
        // caches and the relay) is `tests/ephemeral.rs`, on virtual time; these processes run
        // on the system clock, so here the command line must set the deadlines, and `recv`
        // must count as the first display, without waiting for them.
        let timed = |out: &str, text: &str| -> serde_json::Value {
            out.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|v| v["text"] == text)
                .unwrap_or_else(|| panic!("no {text:?} in {out}"))["timers"]
                .clone()
        };
        env.ok(
            "alice",
            &["send", "--to", "bob", "--expire", "1h", "short-lived"],
        );
        let got = env.ok("bob", &["recv", "--json"]);
        let t = timed(&got, "short-lived");
        assert_eq!(t["expire_after"], 3600);
        assert!(t["expires_at"].is_string(), "{t}");
        // Burn-on-read: `recv` printing it is the first display, which starts the countdown
        // on bob's side and, through the receipt, on alice's.
        env.ok(
            "alice",
            &["send", "--to", "bob", "--burn", "1h", "burn-after-recv"],
        );
        let got = env.ok("bob", &["recv", "--json"]);
        assert!(got.contains("burn-after-recv"), "{got}");
        let hist = env.ok("bob", &["history", "--with", "alice", "--json"]);
        assert!(
            timed(&hist, "burn-after-recv")["burns_at"].is_string(),
            "recv did not start the burn countdown: {hist}"
        );
        env.ok("alice", &["recv"]);
        let hist = env.ok("alice", &["history", "--with", "bob", "--json"]);
        assert!(
            timed(&hist, "burn-after-recv")["burns_at"].is_string(),
            "the sender's copy did not learn the burn time: {hist}"
        );
        let out = env.ok("alice", &["timer", "--with", "bob", "--expire", "1h"]);
        assert!(
            out.contains("expire 1h") && out.contains("burn off"),
            "{out}"
        );
        let out = env.run("alice", &["send", "--to", "bob", "--burn", "forever", "x"]);
        assert_eq!(out.status.code(), Some(2));

        // The read-receipt policy: admins only.
        let out = env.ok("admin", &["admin", "policy"]);
        assert!(out.contains("read receipts: on"), "{out}");
        let out = env.run("alice", &["admin", "policy", "read-receipts", "off"]);
        assert_eq!(out.status.code(), Some(5));
        let out = env.ok("admin", &["admin", "policy", "read-receipts", "off"]);
        assert!(out.contains("read receipts: off"), "{out}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_fails_with_its_size_and_locks_no_one_out() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let env = Env {
        root: tmp.path().to_path_buf(),
    };
    let url = relay.url();
    let invite = relay.admin_invite.clone();
    tokio::task::spawn_blocking(move || {
        setup(&env, &url, &invite);
        let send_stdin = |text: &str| {
            use std::io::Write;
            let mut child = env
                .cmd("alice")
                .args(["send", "--to", "bob", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        };
        // The newcomer's case: 1,040,000 bytes pass the text limit but not the frame limit.
        let out = send_stdin(&"x".repeat(1_040_000));
        assert_eq!(out.status.code(), Some(2), "bad input exits 2");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("message too large (") && err.contains("the limit is 1048576)"),
            "{err}"
        );
        let hist = env.ok("alice", &["history", "--with", "bob"]);
        assert!(hist.contains("(FAILED: message too large ("), "{hist}");
        let hist = env.ok("alice", &["history", "--with", "bob", "--json"]);
        assert!(hist.contains("\"failure\":\"message too large ("), "{hist}");
        // One byte over the text limit: refused at once, nothing queued.
        let out = send_stdin(&"y".repeat(1_047_553));
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("message too large (1047553 bytes; the limit is 1047552)"),
            "{err}"
        );
        // Both keep sending and receiving everything else.
        env.ok("alice", &["send", "--to", "bob", "small one"]);
        let got = env.ok("bob", &["recv", "--json"]);
        assert!(got.contains("small one") && !got.contains("xxxx"), "{got}");
        env.ok("bob", &["send", "--to", "alice", "got it"]);
        let got = env.ok("alice", &["recv", "--json"]);
        assert!(got.contains("got it"), "{got}");
    })
    .await
    .unwrap();
}
