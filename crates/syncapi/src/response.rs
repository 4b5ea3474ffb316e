//! The `/sync` and `/messages` response bodies, as typed trees around the
//! stored event JSON.
//!
//! Events are the stored text itself (`Box<RawValue>`), never parsed into a
//! `serde_json::Value`: serializing a response writes each event's text as
//! is, so the only full copy of a response is its serialized bytes.
//! Fields are declared in alphabetical order, the order a
//! `serde_json::Value` object serializes in, so the bytes are those the
//! `Value`-built responses had.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as JsonValue;
use serde_json::value::RawValue;

/// An event as served: its stored client-format JSON text.
pub(crate) type RawEvent = Box<RawValue>;

/// `{"events": [...]}`.
#[derive(Debug, Serialize)]
pub(crate) struct Events<T = RawEvent> {
    /// The events.
    pub events: Vec<T>,
}

impl<T> Default for Events<T> {
    fn default() -> Self {
        Self { events: Vec::new() }
    }
}

/// `device_lists`: nothing changes yet.
#[derive(Debug, Default, Serialize)]
pub(crate) struct DeviceLists {
    /// Users whose devices changed.
    pub changed: Vec<String>,
    /// Users no longer sharing a room.
    pub left: Vec<String>,
}

/// A `/sync` response body (`GET /_matrix/client/v3/sync`).
#[derive(Debug, Serialize)]
pub struct SyncResponse {
    /// Global account data (none yet).
    pub(crate) account_data: Events,
    /// Device list changes (none yet).
    pub(crate) device_lists: DeviceLists,
    /// One-time key counts (none yet).
    pub(crate) device_one_time_keys_count: BTreeMap<String, u64>,
    /// The token of this response.
    pub(crate) next_batch: String,
    /// Presence (none yet).
    pub(crate) presence: Events,
    /// The rooms, by membership.
    pub(crate) rooms: Rooms,
    /// To-device messages (none yet).
    pub(crate) to_device: Events,
}

impl SyncResponse {
    /// The `next_batch` token of this response.
    pub fn next_batch(&self) -> &str {
        &self.next_batch
    }

    /// The serialized body, written into one buffer sized up front.
    ///
    /// A 500-room initial sync is megabytes; grown by doubling, the buffer
    /// would hold the old and the new allocation at once on its last step
    /// (peak resident memory +50%). The estimate is the stored events' text
    /// plus room and field overhead; a little too much costs only address
    /// space, since untouched pages of a large allocation are never resident.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.json_size_hint());
        // Serializing these types cannot fail: string keys, no floats, and
        // `RawValue`s that were valid JSON when stored.
        serde_json::to_writer(&mut body, self).expect("a sync response always serializes");
        body
    }

    /// Bytes the serialized body is expected to take, slightly over.
    fn json_size_hint(&self) -> usize {
        const ROOM_OVERHEAD: usize = 256;
        const EVENT_OVERHEAD: usize = 1;
        let events = |events: &[RawEvent]| events.iter().map(|e| e.get().len() + EVENT_OVERHEAD).sum::<usize>();
        let room = |(id, room): (&String, &SyncRoom)| {
            id.len()
                + ROOM_OVERHEAD
                + room.timeline.prev_batch.len()
                + events(&room.timeline.events)
                + room.state.as_ref().map_or(0, |s| events(&s.events))
                + room.state_after.as_ref().map_or(0, |s| events(&s.events))
        };
        let invited =
            self.rooms.invite.iter().map(|(id, r)| id.len() + ROOM_OVERHEAD + r.invite_state.events.len() * 512);
        let estimate = 1024
            + self.rooms.join.iter().map(room).sum::<usize>()
            + self.rooms.leave.iter().map(room).sum::<usize>()
            + invited.sum::<usize>();
        estimate + estimate / 16
    }
}

/// `rooms` of a sync, each map by room ID (sorted, as a `Value` object).
#[derive(Debug, Default, Serialize)]
pub(crate) struct Rooms {
    /// Rooms the user is invited to.
    pub invite: BTreeMap<String, InvitedRoom>,
    /// Rooms the user is joined to.
    pub join: BTreeMap<String, SyncRoom>,
    /// Rooms the user knocked on (none yet).
    pub knock: BTreeMap<String, JsonValue>,
    /// Rooms the user left or was banned from since `since`.
    pub leave: BTreeMap<String, SyncRoom>,
}

/// An invited room: its stripped state.
#[derive(Debug, Serialize)]
pub(crate) struct InvitedRoom {
    /// The stripped state events.
    pub invite_state: Events<JsonValue>,
}

/// A joined or left room's timeline and state.
#[derive(Debug, Serialize)]
pub(crate) struct SyncRoom {
    /// Room account data (none yet).
    pub account_data: Events,
    /// Ephemeral events (none yet).
    pub ephemeral: Events,
    /// The state at the timeline's start, unless `state_after` is asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Events>,
    /// The state at the timeline's end (MSC4222), if asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_after: Option<Events>,
    /// The timeline.
    pub timeline: Timeline,
}

/// A room's timeline in a sync.
#[derive(Debug, Serialize)]
pub(crate) struct Timeline {
    /// The events, oldest first.
    pub events: Vec<RawEvent>,
    /// Whether earlier events were left out.
    pub limited: bool,
    /// A token just before the first event, for `/messages`.
    pub prev_batch: String,
}

/// A `/rooms/{roomId}/messages` response body.
#[derive(Debug, Serialize)]
pub struct MessagesResponse {
    /// The events, in the direction asked.
    pub(crate) chunk: Vec<RawEvent>,
    /// Where the next page starts, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) end: Option<String>,
    /// Where this page started.
    pub(crate) start: String,
    /// State for the chunk (none sent yet: `[]`).
    pub(crate) state: Vec<JsonValue>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(json: &str) -> RawEvent {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    /// The typed bodies serialize to the bytes the `Value`-built ones had:
    /// the same keys, in `Value`'s (sorted) order, events verbatim.
    /// A response whose only content is `rooms`, with `next_batch` "s2".
    fn response_with(rooms: Rooms) -> SyncResponse {
        SyncResponse {
            account_data: Events::default(),
            device_lists: DeviceLists::default(),
            device_one_time_keys_count: BTreeMap::new(),
            next_batch: "s2".into(),
            presence: Events::default(),
            rooms,
            to_device: Events::default(),
        }
    }

    #[test]
    fn bodies_serialize_as_the_value_built_ones_did() {
        let event = r#"{"event_id":"$e","type":"m.room.message"}"#;
        let room = |state_after: bool| {
            let state = || Some(Events { events: vec![raw(event)] });
            SyncRoom {
                account_data: Events::default(),
                ephemeral: Events::default(),
                state: if state_after { None } else { state() },
                state_after: if state_after { state() } else { None },
                timeline: Timeline { events: vec![raw(event)], limited: true, prev_batch: "s1".into() },
            }
        };
        let mut rooms = Rooms::default();
        rooms.join.insert("!b:x".into(), room(false));
        rooms.join.insert("!a:x".into(), room(true));
        rooms.leave.insert("!c:x".into(), room(false));
        let stripped = json!({"content": {}, "sender": "@u:x", "state_key": "", "type": "m.room.create"});
        rooms.invite.insert("!d:x".into(), InvitedRoom { invite_state: Events { events: vec![stripped.clone()] } });
        let body = response_with(rooms);
        let e: JsonValue = serde_json::from_str(event).unwrap();
        let room = |key: &str| {
            json!({"timeline": {"events": [e], "limited": true, "prev_batch": "s1"}, "account_data": {"events": []},
                   "ephemeral": {"events": []}, key: {"events": [e]}})
        };
        let old = json!({
            "next_batch": "s2",
            "account_data": {"events": []},
            "presence": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            "rooms": {
                "join": {"!b:x": room("state"), "!a:x": room("state_after")},
                "invite": {"!d:x": {"invite_state": {"events": [stripped]}}},
                "leave": {"!c:x": room("state")},
                "knock": {},
            },
        });
        assert_eq!(serde_json::to_string(&body).unwrap(), old.to_string());
        assert_eq!(body.to_json_bytes(), old.to_string().into_bytes());

        for end in [None, Some("s3".to_owned())] {
            let page =
                MessagesResponse { chunk: vec![raw(event)], end: end.clone(), start: "s9".into(), state: vec![] };
            let mut old = json!({"start": "s9", "state": [], "chunk": [e]});
            if let Some(end) = end {
                old["end"] = json!(end);
            }
            assert_eq!(serde_json::to_string(&page).unwrap(), old.to_string());
        }
    }

    #[test]
    fn the_body_buffer_is_sized_once_for_many_rooms() {
        let mut rooms = Rooms::default();
        for r in 0..500 {
            let events = (0..20)
                .map(|i| raw(&format!(r#"{{"content":{{"body":"message {i}","msgtype":"m.text"}},"event_id":"$e{r}_{i}","origin_server_ts":1795501621364,"sender":"@user{r}:localhost","type":"m.room.message"}}"#)))
                .collect();
            let timeline = Timeline { events, limited: true, prev_batch: format!("s{r}") };
            let room = SyncRoom {
                account_data: Events::default(),
                ephemeral: Events::default(),
                state: Some(Events { events: vec![raw(r#"{"type":"m.room.create","state_key":""}"#)] }),
                state_after: None,
                timeline,
            };
            rooms.join.insert(format!("!room{r}:localhost"), room);
        }
        let body = response_with(rooms);
        let bytes = body.to_json_bytes();
        assert_eq!(bytes, serde_json::to_vec(&body).unwrap());
        // Never grown: the first allocation held it all, and not wastefully.
        assert_eq!(bytes.capacity(), body.json_size_hint());
        assert!(
            bytes.len() <= bytes.capacity() && bytes.capacity() < bytes.len() * 5 / 4,
            "{} of {}",
            bytes.len(),
            bytes.capacity()
        );
    }
}
