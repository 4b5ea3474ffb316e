//! A real client against the production build: matrix-sdk 0.18 (no
//! end-to-end encryption, in-memory stores) drives the `neurite` binary over
//! HTTP. Two users register (user-interactive auth, `m.login.dummy`), log in,
//! create a private room, invite and join, chat through the SDK's own sync
//! loop, and page back through the history with `/messages` and with the
//! SDK's event cache.
//!
//! The binary is `$NEURITE_BIN`, by default
//! `$HOME/.cache/neurite-target/debug/neurite`; build it first with
//! `CARGO_TARGET_DIR=$HOME/.cache/neurite-target cargo build -p neurite`.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset};
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::api::client::uiaa::{AuthData, AuthType, Dummy};
use matrix_sdk::ruma::events::room::member::{MembershipState, OriginalSyncRoomMemberEvent, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use matrix_sdk::{Client, LoopCtrl, Room, RoomMemberships, RoomState};
use serde_json::Value;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;

/// How long any one awaited thing may take (a request, an event arriving
/// through sync). Generous: the machine running CI is small and shared.
const WAIT: Duration = Duration::from_secs(30);
/// The long-poll timeout the SDK's sync loop asks for.
const LONG_POLL: Duration = Duration::from_secs(10);
const PASSWORD: &str = "a-long-enough-password";

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

fn neurite_bin() -> PathBuf {
    let path = match std::env::var_os("NEURITE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME").expect("HOME or NEURITE_BIN must be set");
            PathBuf::from(home).join(".cache/neurite-target/debug/neurite")
        }
    };
    assert!(
        path.is_file(),
        "no neurite binary at {}: build it with `CARGO_TARGET_DIR=$HOME/.cache/neurite-target cargo build -p neurite` \
         in the repository root, or point NEURITE_BIN at one",
        path.display()
    );
    path
}

/// The production binary with a temporary data directory, stopped with
/// SIGTERM on drop. Its log (debug level) is printed when the test fails.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let bin = neurite_bin();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("neurite.toml");
        std::fs::write(
            &config,
            format!(
                "server_name = \"localhost\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\
                 registration = \"open\"\nrate_limits = \"off\"\nmetrics = true\nlog_level = \"info,neurite=debug\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("neurite.log");
        let mut command = Command::new(&bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("NEURITE_") {
                command.env_remove(key);
            }
        }
        command
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("neurite.out")).unwrap())
            .stderr(File::create(&log).unwrap());
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Server { child, base: format!("http://127.0.0.1:{port}"), log, _dir: dir };
        server.wait_until_up().await;
        server
    }

    async fn wait_until_up(&mut self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = http.get(format!("{}/_matrix/client/versions", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited during start-up ({status}):\n{}", self.log_tail(100));
            }
            assert!(Instant::now() < deadline, "the server did not answer /versions within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Requests per (method, endpoint, status) from `/metrics`, for the
    /// report at the end: which endpoints the SDK used.
    async fn requests_served(&self) -> Vec<String> {
        let Ok(response) = reqwest::get(format!("{}/metrics", self.base)).await else { return vec![] };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains("endpoint=") && l.contains("_total"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- the last lines of the server's log ----\n{}\n----", self.log_tail(150));
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Accounts and clients
// ---------------------------------------------------------------------------

async fn timed<T>(what: &str, future: impl IntoFuture<Output = T>) -> T {
    tokio::time::timeout(WAIT, future.into_future())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

async fn new_client(server: &Server) -> Client {
    // The defaults: in-memory state and event-cache stores (no sqlite
    // feature), no end-to-end encryption (no e2e-encryption feature).
    timed("building a client", Client::builder().homeserver_url(&server.base).build())
        .await
        .expect("the SDK builds a client for the homeserver URL")
}

/// Registration the way a client does it: a first request without `auth`
/// answers 401 with the flows and a session; the second completes the
/// `m.login.dummy` stage in that session. No login here (`inhibit_login`).
async fn register(server: &Server, username: &str) {
    let client = new_client(server).await;
    let mut request = register::v3::Request::new();
    request.username = Some(username.to_owned());
    request.password = Some(PASSWORD.to_owned());
    request.inhibit_login = true;

    let error = timed("registration's first step", client.matrix_auth().register(request.clone()))
        .await
        .expect_err("registration without auth must ask for user-interactive auth");
    let uiaa = error
        .as_uiaa_response()
        .unwrap_or_else(|| panic!("registration without auth: expected a 401 UIA answer, got {error:?}"));
    assert!(
        uiaa.flows.iter().any(|flow| flow.stages == [AuthType::Dummy]),
        "open registration offers an m.login.dummy flow: {:?}",
        uiaa.flows
    );

    let mut dummy = Dummy::new();
    dummy.session = uiaa.session.clone();
    request.auth = Some(AuthData::Dummy(dummy));
    let response = timed("registration's second step", client.matrix_auth().register(request))
        .await
        .unwrap_or_else(|e| panic!("registering {username} with m.login.dummy: {e:?}"));
    assert_eq!(response.user_id.as_str(), format!("@{username}:localhost"));
    assert!(response.access_token.is_none(), "inhibit_login: no access token");
}

async fn login(server: &Server, username: &str, device: &str) -> Client {
    let client = new_client(server).await;
    let response = timed(
        "login",
        client.matrix_auth().login_username(username, PASSWORD).initial_device_display_name(device).send(),
    )
    .await
    .unwrap_or_else(|e| panic!("logging {username} in: {e:?}"));
    assert_eq!(response.user_id.as_str(), format!("@{username}:localhost"));
    assert_eq!(client.user_id(), Some(&*response.user_id));
    client
}

// ---------------------------------------------------------------------------
// The SDK's sync loop, observed through event handlers
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum Seen {
    /// Our own user was invited to a room (stripped state from `rooms.invite`).
    Invited {
        room: OwnedRoomId,
        sender: OwnedUserId,
    },
    /// Someone's membership changed in a joined room.
    Member {
        room: OwnedRoomId,
        user: String,
        membership: MembershipState,
    },
    Message {
        room: OwnedRoomId,
        sender: OwnedUserId,
        body: String,
    },
    /// The sync loop failed and stopped.
    SyncFailed(String),
}

/// A logged-in client whose `Client::sync` loop runs in a task, with what
/// its event handlers saw.
struct Syncing {
    client: Client,
    seen: UnboundedReceiver<Seen>,
    /// Seen but not yet taken by a `wait_for`.
    pending: VecDeque<Seen>,
    task: JoinHandle<()>,
}

impl Syncing {
    async fn start(client: Client) -> Syncing {
        // A filter uploaded to `/user/{userId}/filter` and used by ID. Its
        // timeline limit keeps a burst of messages out of a `limited`
        // timeline (the default limit is 10), so the handlers see them all.
        let mut definition = FilterDefinition::default();
        definition.room.timeline.limit = Some(UInt::from(50u32));
        let filter_id = timed("uploading a filter", client.get_or_upload_filter("live", definition))
            .await
            .expect("the SDK uploads its sync filter");
        let (tx, seen) = unbounded_channel();

        let own = client.user_id().expect("logged in").to_owned();
        let sender = tx.clone();
        client.add_event_handler(move |event: StrippedRoomMemberEvent, room: Room| {
            let (sender, own) = (sender.clone(), own.clone());
            async move {
                if event.state_key == own && event.content.membership == MembershipState::Invite {
                    let _ = sender.send(Seen::Invited { room: room.room_id().to_owned(), sender: event.sender });
                }
            }
        });
        let sender = tx.clone();
        client.add_event_handler(move |event: OriginalSyncRoomMemberEvent, room: Room| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(Seen::Member {
                    room: room.room_id().to_owned(),
                    user: event.state_key.to_string(),
                    membership: event.content.membership,
                });
            }
        });
        let sender = tx.clone();
        client.add_event_handler(move |event: OriginalSyncRoomMessageEvent, room: Room| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(Seen::Message {
                    room: room.room_id().to_owned(),
                    sender: event.sender,
                    body: event.content.body().to_owned(),
                });
            }
        });

        let syncing = client.clone();
        let task = tokio::spawn(async move {
            let settings = SyncSettings::default().timeout(LONG_POLL).filter(Filter::FilterId(filter_id));
            let result = syncing
                .sync_with_result_callback(settings, |response| {
                    let tx = tx.clone();
                    async move {
                        if let Err(e) = &response {
                            let _ = tx.send(Seen::SyncFailed(format!("{e:?}")));
                        }
                        response.map(|_| LoopCtrl::Continue)
                    }
                })
                .await;
            if let Err(e) = result {
                let _ = tx.send(Seen::SyncFailed(format!("the sync loop ended: {e:?}")));
            }
        });
        Syncing { client, seen, pending: VecDeque::new(), task }
    }

    fn user_id(&self) -> &UserId {
        self.client.user_id().expect("logged in")
    }

    /// The first thing the handlers saw, in order, for which `pick` returns
    /// `Some`; it is consumed, everything else stays for later waits. Fails
    /// on a sync error or after `WAIT`, listing what was seen.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Seen) -> Option<T>) -> T {
        if let Some((i, found)) = self.pending.iter().enumerate().find_map(|(i, s)| pick(s).map(|f| (i, f))) {
            self.pending.remove(i);
            return found;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(Seen::SyncFailed(error))) => {
                    panic!("{}: waiting for {what}, the SDK's sync failed: {error}", self.user_id())
                }
                Ok(Some(seen)) => match pick(&seen) {
                    Some(found) => return found,
                    None => self.pending.push_back(seen),
                },
                Ok(None) => panic!("{}: waiting for {what}, the event handlers are gone", self.user_id()),
                Err(_) => panic!(
                    "{}: {what} did not arrive through the SDK's sync within {WAIT:?}; seen and not yet taken: {:#?}",
                    self.user_id(),
                    self.pending
                ),
            }
        }
    }

    /// Waits for these messages from `from` in `room`, in this order (other
    /// senders' messages and other rooms are ignored).
    async fn wait_for_messages(&mut self, room: &RoomId, from: &UserId, bodies: &[String]) {
        let mut expected: VecDeque<&String> = bodies.iter().collect();
        while let Some(next) = expected.front() {
            let what = format!("{from}'s message {next:?} in {room}");
            let body = self
                .wait_for(&what, |seen| match seen {
                    Seen::Message { room: r, sender, body } if r == room && sender == from => Some(body.clone()),
                    _ => None,
                })
                .await;
            assert_eq!(&&body, next, "{}: {from}'s messages arrive in order", self.user_id());
            expected.pop_front();
        }
    }
}

impl Drop for Syncing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(body: &str) -> RoomMessageEventContent {
    RoomMessageEventContent::text_plain(body)
}

async fn send(room: &Room, body: &str) -> OwnedEventId {
    timed(&format!("sending {body:?}"), room.send(text(body)))
        .await
        .unwrap_or_else(|e| panic!("sending {body:?} to {}: {e:?}", room.room_id()))
        .response
        .event_id
}

// ---------------------------------------------------------------------------
// Timeline events, summarised
// ---------------------------------------------------------------------------

/// An event of the history as a short line: `msg <sender> <body>`,
/// `member <state_key> <membership>`, or its type (state and others).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    id: String,
    summary: String,
}

fn line(event: &TimelineEvent) -> Line {
    let json: Value = serde_json::from_str(event.raw().json().get()).expect("events are JSON");
    let kind = json["type"].as_str().unwrap_or("?");
    let summary = match kind {
        "m.room.message" => format!(
            "msg {} {}",
            json["sender"].as_str().unwrap_or("?"),
            json["content"]["body"].as_str().unwrap_or("?")
        ),
        "m.room.member" => format!(
            "member {} {}",
            json["state_key"].as_str().unwrap_or("?"),
            json["content"]["membership"].as_str().unwrap_or("?")
        ),
        other => other.to_owned(),
    };
    let id = json["event_id"].as_str().unwrap_or_else(|| panic!("an event without event_id: {json}")).to_owned();
    Line { id, summary }
}

fn assert_no_duplicates(lines: &[Line], how: &str) {
    let mut ids = HashSet::new();
    for l in lines {
        assert!(ids.insert(&l.id), "{how}: {} ({}) appears twice in {lines:#?}", l.id, l.summary);
    }
}

/// The interesting part of the history: messages and bob's membership.
fn story(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.summary.starts_with("msg ") || l.summary.starts_with("member @bob:localhost "))
        .map(|l| l.summary.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sdk_clients_chat_and_page_back_through_the_history() {
    // The SDK's own warnings (RUST_LOG to see more), shown when the test fails.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();

    let server = Server::start().await;

    // 1. Two accounts, through the user-interactive registration flow.
    register(&server, "alice").await;
    register(&server, "bob").await;

    // 2. Logged in with the SDK, each running the SDK's sync loop.
    let mut alice = Syncing::start(login(&server, "alice", "alice's laptop").await).await;
    let mut bob = Syncing::start(login(&server, "bob", "bob's phone").await).await;
    let alice_id = alice.user_id().to_owned();
    let bob_id = bob.user_id().to_owned();

    // 3. Alice creates a private room and invites Bob; Bob sees the invite
    // through his sync and joins.
    let mut request = CreateRoomRequest::new();
    request.name = Some("Neurite SDK test".to_owned());
    request.preset = Some(RoomPreset::PrivateChat);
    let room = timed("createRoom", alice.client.create_room(request)).await.expect("alice creates a room");
    let room_id = room.room_id().to_owned();
    timed("invite", room.invite_user_by_id(&bob_id)).await.expect("alice invites bob");

    let inviter = bob
        .wait_for("the invite", |seen| match seen {
            Seen::Invited { room, sender } if *room == room_id => Some(sender.clone()),
            _ => None,
        })
        .await;
    assert_eq!(inviter, alice_id, "the invite is from alice");
    let bob_room = bob.client.get_room(&room_id).expect("bob's client knows the room it is invited to");
    assert_eq!(bob_room.state(), RoomState::Invited);
    let invite = timed("invite details", bob_room.invite_details()).await.expect("the SDK reads the invite");
    assert_eq!(invite.inviter_id, alice_id);
    assert!(invite.inviter.is_some(), "the inviter's membership is in the invite's stripped state");
    assert_eq!(
        bob_room.name().as_deref(),
        Some("Neurite SDK test"),
        "the room's name is in the invite's stripped state"
    );

    timed("join", bob_room.join()).await.expect("bob joins through the SDK");
    assert_eq!(bob_room.state(), RoomState::Joined);
    // Alice's sync shows Bob's join.
    alice
        .wait_for("bob's join", |seen| match seen {
            Seen::Member { room, user, membership: MembershipState::Join }
                if *room == room_id && user == bob_id.as_str() =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    // Bob's sync catches up on the room he joined: its state, with both members.
    bob.wait_for("his own join", |seen| match seen {
        Seen::Member { room, user, membership: MembershipState::Join }
            if *room == room_id && user == bob_id.as_str() =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    let members = timed("members", bob_room.members(RoomMemberships::JOIN)).await.expect("bob lists the members");
    let mut names: Vec<String> = members.iter().map(|m| m.user_id().to_string()).collect();
    names.sort();
    assert_eq!(names, ["@alice:localhost", "@bob:localhost"], "the joined members, as bob's client sees them");

    // 4. A conversation: each sees the other's messages through the sync loop.
    let conversation = [
        (&alice_id, "Hi Bob, it's Alice."),
        (&bob_id, "Hello Alice! Nice room."),
        (&alice_id, "Neurite served this over /sync."),
        (&bob_id, "And mine too."),
    ];
    for (who, body) in conversation {
        let (speaker_room, listener) = if *who == alice_id { (&room, &mut bob) } else { (&bob_room, &mut alice) };
        send(speaker_room, body).await;
        listener.wait_for_messages(&room_id, who, &[body.to_owned()]).await;
    }
    // Each also sees their own messages come back, in order.
    let own = |who: &UserId| -> Vec<String> {
        conversation.iter().filter(|(w, _)| *w == who).map(|(_, b)| (*b).to_owned()).collect()
    };
    alice.wait_for_messages(&room_id, &alice_id, &own(&alice_id)).await;
    bob.wait_for_messages(&room_id, &bob_id, &own(&bob_id)).await;

    // 5. Fifteen more messages, seen by Bob in order.
    let history: Vec<String> = (1..=15).map(|i| format!("history {i:02}")).collect();
    for body in &history {
        send(&room, body).await;
    }
    bob.wait_for_messages(&room_id, &alice_id, &history).await;

    // What the whole history must tell, oldest first.
    let mut expected = vec![format!("member {bob_id} invite"), format!("member {bob_id} join")];
    expected.extend(conversation.iter().map(|(who, body)| format!("msg {who} {body}")));
    expected.extend(history.iter().map(|body| format!("msg {alice_id} {body}")));

    // 5a. Bob on a new device: a first sync with a small timeline limit, so
    // the room comes with `prev_batch`, then `Room::messages` backwards from
    // it, a few events at a time, until the start of the room.
    let tablet = login(&server, "bob", "bob's tablet").await;
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(UInt::from(5u32));
    let sync = timed(
        "the tablet's first sync",
        tablet.sync_once(SyncSettings::default().filter(Filter::FilterDefinition(filter.clone()))),
    )
    .await
    .expect("the tablet's first sync");
    let joined = sync.rooms.joined.get(&room_id).expect("the room is in the tablet's first sync");
    assert!(joined.timeline.limited, "5 of 26 events: the timeline is limited");
    let prev_batch = joined.timeline.prev_batch.clone().expect("a limited timeline has prev_batch");
    let latest: Vec<Line> = joined.timeline.events.iter().rev().map(line).collect();
    assert_eq!(latest.len(), 5, "the timeline limit is honoured: {latest:#?}");

    let tablet_room = tablet.get_room(&room_id).expect("the tablet knows the room");
    let mut backwards = latest.clone();
    let mut from = prev_batch.clone();
    let mut pages = 0;
    loop {
        let mut options = MessagesOptions::backward().from(from.as_str());
        options.limit = UInt::from(4u32);
        let page = timed("/messages backwards", tablet_room.messages(options))
            .await
            .unwrap_or_else(|e| panic!("/messages backwards from {from:?}: {e:?}"));
        pages += 1;
        assert!(pages < 50, "backward pagination does not end: {backwards:#?}");
        assert!(page.chunk.len() <= 4, "the limit is honoured: {} events", page.chunk.len());
        assert_eq!(page.start, from, "a page starts where it was asked to");
        backwards.extend(page.chunk.iter().map(line));
        match page.end {
            Some(end) => {
                assert!(!page.chunk.is_empty() || end != from, "an empty page must end the pagination");
                from = end;
            }
            None => break,
        }
    }
    assert_no_duplicates(&backwards, "sync's latest events plus /messages backwards");
    assert_eq!(
        backwards.last().map(|l| l.summary.as_str()),
        Some("m.room.create"),
        "backward pagination ends at the room's creation: {backwards:#?}"
    );
    let mut told: Vec<String> = story(&backwards);
    told.reverse();
    assert_eq!(told, expected, "sync + /messages backwards, newest first, tell the whole history");

    // The same history forwards, from the start of the room (no `from`),
    // is exactly the reverse.
    let mut forwards: Vec<Line> = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut options = MessagesOptions::forward().from(from.as_deref());
        options.limit = UInt::from(7u32);
        let page = timed("/messages forwards", tablet_room.messages(options))
            .await
            .unwrap_or_else(|e| panic!("/messages forwards from {from:?}: {e:?}"));
        pages += 1;
        assert!(pages < 50, "forward pagination does not end: {forwards:#?}");
        forwards.extend(page.chunk.iter().map(line));
        match page.end {
            Some(end) if !page.chunk.is_empty() => from = Some(end),
            _ => break,
        }
    }
    let mut reversed = backwards.clone();
    reversed.reverse();
    assert_eq!(forwards, reversed, "/messages forwards from the start is backward pagination reversed");

    // 5b. Bob on yet another device, the way current clients read history:
    // the SDK's event cache, filled by sync, back-paginated until the start.
    let laptop = login(&server, "bob", "bob's laptop").await;
    laptop.event_cache().subscribe().expect("the event cache starts");
    timed(
        "the laptop's first sync",
        laptop.sync_once(SyncSettings::default().filter(Filter::FilterDefinition(filter))),
    )
    .await
    .expect("the laptop's first sync");
    let laptop_room = laptop.get_room(&room_id).expect("the laptop knows the room");
    let (cache, _drop_handles) =
        timed("the room's event cache", laptop_room.event_cache()).await.expect("the room's event cache");
    let pagination = cache.pagination();
    let mut rounds = 0;
    loop {
        let outcome = timed("event cache back-pagination", pagination.run_backwards_once(6))
            .await
            .expect("the event cache back-paginates");
        rounds += 1;
        assert!(rounds < 50, "the event cache never reaches the start of the room");
        if outcome.reached_start {
            break;
        }
    }
    let cached: Vec<Line> =
        timed("the cached events", cache.events()).await.expect("the cached events").iter().map(line).collect();
    assert_no_duplicates(&cached, "the event cache");
    assert_eq!(cached, reversed, "the event cache holds the whole history, oldest first, as /messages does");

    // Everything the SDK asked for is served: no unknown endpoint (this SDK
    // configuration avoids push rules, account data, keys, receipts, ...),
    // no server error. Shown with `cargo test -- --nocapture`.
    let served = server.requests_served().await;
    println!("requests served:\n{}", served.join("\n"));
    assert!(!served.is_empty(), "the server reports its requests at /metrics");
    let unexpected: Vec<&String> =
        served.iter().filter(|l| l.contains("endpoint=\"unmatched\"") || l.contains("status=\"5")).collect();
    assert!(unexpected.is_empty(), "the SDK hit unknown endpoints or server errors: {unexpected:#?}");
}
