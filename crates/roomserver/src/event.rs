//! PDUs as the room server handles them: parsed once from canonical JSON,
//! usable by ruma-state-res, turned into client format for readers.

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::events::TimelineEventType;
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use serde_json::value::RawValue as RawJsonValue;
use serde_json::{Value as JsonValue, json};

/// A PDU with the fields the room server reads, plus the original object.
#[derive(Debug, Clone)]
pub struct Pdu {
    /// The event ID (computed for v3+ rooms; not a field of the PDU).
    pub event_id: OwnedEventId,
    /// The room, `None` only for a v12 create event (its ID is the room's).
    pub room_id: Option<OwnedRoomId>,
    /// The sender.
    pub sender: OwnedUserId,
    /// When the origin server made it.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// The type.
    pub event_type: TimelineEventType,
    /// The content.
    pub content: Box<RawJsonValue>,
    /// The state key, for state events.
    pub state_key: Option<String>,
    /// The events it follows.
    pub prev_events: Vec<OwnedEventId>,
    /// The events that authorize it.
    pub auth_events: Vec<OwnedEventId>,
    /// The event a redaction redacts.
    pub redacts: Option<OwnedEventId>,
    /// Its depth.
    pub depth: u64,
    /// Whether it was rejected.
    pub rejected: bool,
    /// The PDU as canonical JSON.
    pub object: CanonicalJsonObject,
}

/// Why a PDU object does not parse.
pub type ParseError = String;

fn string(object: &CanonicalJsonObject, key: &str) -> Result<String, ParseError> {
    match object.get(key) {
        Some(CanonicalJsonValue::String(s)) => Ok(s.clone()),
        _ => Err(format!("missing or non-string `{key}`")),
    }
}

fn event_ids(object: &CanonicalJsonObject, key: &str) -> Result<Vec<OwnedEventId>, ParseError> {
    match object.get(key) {
        Some(CanonicalJsonValue::Array(items)) => items
            .iter()
            .map(|v| match v {
                CanonicalJsonValue::String(s) => EventId::parse(s).map_err(|e| format!("bad event ID in `{key}`: {e}")),
                _ => Err(format!("`{key}` must hold event ID strings")),
            })
            .collect(),
        _ => Err(format!("missing `{key}`")),
    }
}

impl Pdu {
    /// Parses a v3+ PDU object whose event ID is `event_id`.
    ///
    /// # Errors
    /// A required field is missing or has the wrong type.
    pub fn parse(event_id: OwnedEventId, object: CanonicalJsonObject) -> Result<Self, ParseError> {
        let room_id = match object.get("room_id") {
            Some(CanonicalJsonValue::String(s)) => Some(RoomId::parse(s).map_err(|e| format!("bad room_id: {e}"))?),
            None => None,
            _ => return Err("non-string `room_id`".into()),
        };
        let sender = UserId::parse(string(&object, "sender")?).map_err(|e| format!("bad sender: {e}"))?;
        let ts = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(i)) => UInt::try_from(i64::from(*i)).unwrap_or_default(),
            _ => return Err("missing `origin_server_ts`".into()),
        };
        let depth = match object.get("depth") {
            Some(CanonicalJsonValue::Integer(i)) => u64::try_from(i64::from(*i)).map_err(|_| "negative depth")?,
            _ => return Err("missing `depth`".into()),
        };
        let content = match object.get("content") {
            Some(v @ CanonicalJsonValue::Object(_)) => {
                serde_json::value::to_raw_value(v).map_err(|e| format!("content: {e}"))?
            }
            _ => return Err("missing or non-object `content`".into()),
        };
        let state_key = match object.get("state_key") {
            Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
            None => None,
            _ => return Err("non-string `state_key`".into()),
        };
        let event_type = TimelineEventType::from(string(&object, "type")?);
        let content_redacts = serde_json::from_str::<JsonValue>(content.get())
            .ok()
            .and_then(|c| c.get("redacts").and_then(|r| r.as_str()).map(str::to_owned));
        let redacts = match object.get("redacts") {
            Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
            _ => content_redacts,
        }
        .map(|r| EventId::parse(&r))
        .transpose()
        .map_err(|e| format!("bad redacts: {e}"))?;
        Ok(Self {
            event_id,
            room_id,
            sender,
            origin_server_ts: MilliSecondsSinceUnixEpoch(ts),
            event_type,
            content,
            state_key,
            prev_events: event_ids(&object, "prev_events")?,
            auth_events: event_ids(&object, "auth_events")?,
            redacts,
            depth,
            rejected: false,
            object,
        })
    }

    /// The room this event is in (for a v12 create event, the one it creates).
    pub fn room_id_or_own(&self) -> OwnedRoomId {
        self.room_id.clone().unwrap_or_else(|| {
            RoomId::parse(format!("!{}", &self.event_id.as_str()[1..])).expect("an event ID makes a valid v12 room ID")
        })
    }

    /// The event in the client-server format readers serve.
    pub fn to_client_format(&self) -> JsonValue {
        let mut event = json!({
            "event_id": self.event_id,
            "room_id": self.room_id_or_own(),
            "sender": self.sender,
            "type": self.event_type.to_string(),
            "origin_server_ts": self.origin_server_ts,
            "content": serde_json::from_str::<JsonValue>(self.content.get()).unwrap_or(JsonValue::Null),
        });
        if let Some(state_key) = &self.state_key {
            event["state_key"] = json!(state_key);
        }
        if let Some(CanonicalJsonValue::String(redacts)) = self.object.get("redacts") {
            event["redacts"] = json!(redacts);
        }
        if let Some(unsigned) = self.object.get("unsigned") {
            event["unsigned"] = serde_json::to_value(unsigned).unwrap_or(JsonValue::Null);
        }
        event
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.event_type
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}
