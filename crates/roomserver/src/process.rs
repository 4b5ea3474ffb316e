//! Processing one input inside one transaction: build local events on the
//! room's latest events (or take a complete PDU), authorize them against the
//! state before them with ruma-state-res, and store them with the state
//! after them. Nothing is written unless every event of the input is accepted.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use neurite_storage::StorageError;
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::{RoomIdFormatVersion, RoomVersionRules};
use ruma::signatures::Ed25519KeyPair;
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::state_res::{self, StateMap as RumaStateMap};
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, UserId};
use serde_json::Value as JsonValue;

use crate::api::{BuildEvents, InvalidCode, OutputRoomEvent, PduInput, ProtoEvent, Target, TxnKey, Verdict};
use crate::event::Pdu;
use crate::limits::{PDU_BYTES_MAX, PREV_EVENTS_COUNT_MAX, ROOM_ID_RETRIES_MAX};
use crate::state::{self, BlockRef, StateKeyTuple, StateMap};
use crate::storage::{EventRow, Res, RoomRow, RoomTables};

/// The server's identity for signing the events it builds.
pub struct Signer {
    /// Our server name.
    pub server_name: OwnedServerName,
    /// Our signing key.
    pub key: Ed25519KeyPair,
}

impl Signer {
    /// Adds the content hash and our signature to a PDU object and returns
    /// its event ID (the reference hash, for room versions 3 and later).
    ///
    /// # Errors
    /// The PDU is over 65,536 bytes ([`InvalidCode::TooLarge`]) or cannot be hashed.
    pub fn sign(
        &self,
        rules: &RoomVersionRules,
        object: &mut CanonicalJsonObject,
    ) -> Result<OwnedEventId, (InvalidCode, String)> {
        match ruma::signatures::hash_and_sign_event(self.server_name.as_str(), &self.key, object, &rules.redaction) {
            Ok(()) => {}
            Err(ruma::signatures::JsonError::PduTooLarge) => {
                return Err((InvalidCode::TooLarge, format!("the event would be over {PDU_BYTES_MAX} bytes")));
            }
            Err(e) => return Err((InvalidCode::BadEvent, format!("signing: {e}"))),
        }
        let hash =
            ruma::signatures::reference_hash(object, rules).map_err(|e| (InvalidCode::BadEvent, e.to_string()))?;
        EventId::parse(format!("${hash}")).map_err(|e| (InvalidCode::BadEvent, e.to_string()))
    }
}

/// What processing produced: the verdict and the output records to publish.
pub(crate) struct Processed {
    pub verdict: Verdict,
    pub outputs: Vec<(String, OutputRoomEvent)>,
}

fn invalid(code: InvalidCode, reason: impl Into<String>) -> Verdict {
    Verdict::Invalid { reason: reason.into(), code }
}

/// The rules of a room version, if Neurite supports it.
pub fn rules_for(version: &RoomVersionId) -> Option<RoomVersionRules> {
    if !crate::SUPPORTED_ROOM_VERSIONS.contains(version) {
        return None;
    }
    version.rules()
}

// ---------------------------------------------------------------- state

/// The state map of a snapshot.
pub(crate) fn load_state<T: RoomTables>(t: &T, snapshot: i64) -> Res<StateMap> {
    let refs = t.snapshot(snapshot)?;
    let blocks = refs.iter().map(|b| t.block(b.nid)).collect::<Res<Vec<_>>>()?;
    Ok(state::fold(blocks.iter(), false))
}

/// Stores `new_state` as a snapshot derived from `parent` (whose state is
/// `parent_state`).
pub(crate) fn store_state<T: RoomTables>(
    t: &T,
    room_nid: i64,
    parent: i64,
    parent_state: &StateMap,
    new_state: &StateMap,
) -> Res<i64> {
    store_state_delta(t, room_nid, parent, &state::delta(parent_state, new_state))
}

/// Stores the snapshot `parent` + `delta`: one block with the difference,
/// then size-tiered merges. Costs what changed, not the size of the state.
pub(crate) fn store_state_delta<T: RoomTables>(
    t: &T,
    room_nid: i64,
    parent: i64,
    delta: &BTreeMap<StateKeyTuple, i64>,
) -> Res<i64> {
    if delta.is_empty() {
        return Ok(parent);
    }
    let mut list = t.snapshot(parent)?;
    let nid = t.insert_block(delta)?;
    list.push(BlockRef { nid, level: state::level_for(delta.len()) });
    while let Some(start) = state::merge_start(&list) {
        let blocks = list[start..].iter().map(|b| t.block(b.nid)).collect::<Res<Vec<_>>>()?;
        // Removals must keep overriding older blocks, unless nothing is older.
        let merged = state::fold(blocks.iter(), start > 0);
        let level = list[start].level + 1;
        let nid = t.insert_block(&merged)?;
        list.truncate(start);
        list.push(BlockRef { nid, level });
    }
    t.insert_snapshot(room_nid, &list)
}

// ---------------------------------------------------------------- events

fn parse_row(row: &EventRow) -> Res<Pdu> {
    let object: CanonicalJsonObject =
        serde_json::from_str(&row.json).map_err(|e| StorageError::Corrupt(format!("event JSON: {e}")))?;
    let event_id = EventId::parse(&row.event_id).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let mut pdu = Pdu::parse(event_id, object).map_err(StorageError::Corrupt)?;
    pdu.rejected = row.rejected;
    Ok(pdu)
}

/// Loads a stored event as a PDU.
pub(crate) fn load_pdu<T: RoomTables>(t: &T, event_nid: i64) -> Res<Option<Pdu>> {
    t.event_by_nid(event_nid)?.map(|row| parse_row(&row)).transpose()
}

/// Loads a stored event of the room `room_nid` as a PDU, by ID.
pub(crate) fn load_pdu_by_id<T: RoomTables>(t: &T, room_nid: i64, event_id: &str) -> Res<Option<(EventRow, Pdu)>> {
    t.event_by_id(room_nid, event_id)?.map(|row| parse_row(&row).map(|p| (row, p))).transpose()
}

/// The state events the auth rules consult for one event.
type AuthState = HashMap<(StateEventType, String), Arc<Pdu>>;

/// The state of a room as the auth rules see it: (type, state key) -> event,
/// loaded lazily from a state map, with events added during this input on top.
///
/// One input asks for the same few events several times (building an event
/// names its auth events, the rules then fetch them by ID and look up the
/// state again), so what it read is kept for the input's lifetime: each
/// stored event is read and parsed once. Nothing outlives the input, whose
/// savepoint may still be undone. Events are shared (`Arc`): the auth rules
/// ask for each several times, and copying a parsed event cost the writer
/// ~27 us per send.
struct StateView<'a, T: RoomTables> {
    t: &'a T,
    /// The room, `None` while it is being created (nothing of it is stored).
    room_nid: Option<i64>,
    nids: StateMap,
    overlay: HashMap<(String, String), Arc<Pdu>>,
    /// State lookups answered from `nids` so far, by (type, state key): the
    /// event's ID (the event itself is in `read_by_id`), `None` for no event.
    read_by_key: RefCell<HashMap<(String, String), Option<OwnedEventId>>>,
    /// Every stored event read so far, by ID.
    read_by_id: RefCell<HashMap<OwnedEventId, Arc<Pdu>>>,
}

impl<'a, T: RoomTables> StateView<'a, T> {
    fn new(t: &'a T, room_nid: Option<i64>, nids: StateMap) -> Self {
        StateView {
            t,
            room_nid,
            nids,
            overlay: HashMap::new(),
            read_by_key: RefCell::default(),
            read_by_id: RefCell::default(),
        }
    }

    fn get(&self, event_type: &str, state_key: &str) -> Res<Option<Arc<Pdu>>> {
        let key = (event_type.to_owned(), state_key.to_owned());
        if let Some(pdu) = self.overlay.get(&key) {
            return Ok(Some(pdu.clone()));
        }
        if let Some(read) = self.read_by_key.borrow().get(&key) {
            return Ok(read.as_ref().and_then(|id| self.read_by_id.borrow().get(id).cloned()));
        }
        let read = match (self.t.event_type_nid(event_type)?, self.t.state_key_nid(state_key)?) {
            (Some(type_nid), Some(key_nid)) => match self.nids.get(&(type_nid, key_nid)) {
                Some(nid) => load_pdu(self.t, *nid)?.map(Arc::new),
                None => None,
            },
            _ => None,
        };
        if let Some(pdu) = &read {
            self.read_by_id.borrow_mut().insert(pdu.event_id.clone(), pdu.clone());
        }
        self.read_by_key.borrow_mut().insert(key, read.as_ref().map(|pdu| pdu.event_id.clone()));
        Ok(read)
    }

    /// A stored event by ID (a storage fault reads as absent, as the auth
    /// rules' fetch closure wants it).
    fn event(&self, event_id: &EventId) -> Option<Arc<Pdu>> {
        if let Some(pdu) = self.read_by_id.borrow().get(event_id) {
            return Some(pdu.clone());
        }
        let (_, pdu) = load_pdu_by_id(self.t, self.room_nid?, event_id.as_str()).ok().flatten()?;
        let pdu = Arc::new(pdu);
        self.read_by_id.borrow_mut().insert(pdu.event_id.clone(), pdu.clone());
        Some(pdu)
    }

    /// The events the auth rules need for `pdu`, keyed for ruma's fetch closure.
    fn auth_state(&self, pdu: &Pdu, rules: &RoomVersionRules) -> Res<Result<AuthState, String>> {
        let mut keys = match state_res::auth_types_for_event(
            &pdu.event_type,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        ) {
            Ok(keys) => keys,
            Err(e) => return Ok(Err(e)),
        };
        keys.push((StateEventType::RoomCreate, String::new()));
        let mut map = HashMap::new();
        for (event_type, state_key) in keys {
            if let Some(event) = self.get(&event_type.to_string(), &state_key)? {
                map.insert((event_type, state_key), event);
            }
        }
        Ok(Ok(map))
    }
}

/// Checks `pdu` against the auth rules: its own auth events, then the state before it.
fn authorize<T: RoomTables>(
    view: &StateView<'_, T>,
    pdu: &Pdu,
    rules: &RoomVersionRules,
    built: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> Res<Result<(), String>> {
    // Any event the rules ask for by ID: its auth events, and from room
    // version 12 the create event (whose ID is the room's). Events built in
    // this input come first, then stored ones; a storage fault reads as absent.
    let fetch = |id: &EventId| built.get(id).cloned().or_else(|| view.event(id));
    if let Err(e) = state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch) {
        return Ok(Err(e));
    }
    let state = match view.auth_state(pdu, rules)? {
        Ok(state) => state,
        Err(e) => return Ok(Err(e)),
    };
    Ok(state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |event_type, state_key| {
        state.get(&(event_type.clone(), state_key.to_owned())).cloned()
    }))
}

fn canonical(value: JsonValue) -> Result<CanonicalJsonValue, String> {
    CanonicalJsonValue::try_from(value).map_err(|e| format!("not canonical JSON: {e}"))
}

/// Where a new event goes: after `prev` (whose greatest depth is `depth`), at time `now`.
struct Position<'a> {
    prev: &'a [OwnedEventId],
    depth: u64,
    now: u64,
}

/// Builds, hashes and signs a local event.
fn build_pdu<T: RoomTables>(
    view: &StateView<'_, T>,
    signer: &Signer,
    rules: &RoomVersionRules,
    room_id: Option<&RoomId>,
    proto: &ProtoEvent,
    at: Position<'_>,
) -> Res<Result<Pdu, Verdict>> {
    let Position { prev, depth: prev_depth, now } = at;
    let bad = |reason: String| Ok(Err(invalid(InvalidCode::BadEvent, reason)));
    let content_raw = match serde_json::value::to_raw_value(&proto.content) {
        Ok(raw) => raw,
        Err(e) => return bad(format!("content: {e}")),
    };
    let event_type = TimelineEventType::from(proto.event_type.as_str());
    let auth_keys = match state_res::auth_types_for_event(
        &event_type,
        &proto.sender,
        proto.state_key.as_deref(),
        &content_raw,
        &rules.authorization,
    ) {
        Ok(keys) => keys,
        Err(e) => return bad(e),
    };
    let mut auth_events = Vec::new();
    for (auth_type, auth_key) in &auth_keys {
        if let Some(event) = view.get(&auth_type.to_string(), auth_key)? {
            auth_events.push(JsonValue::String(event.event_id.to_string()));
        }
    }

    let mut object = CanonicalJsonObject::new();
    let mut content = proto.content.clone();
    if let Some(redacts) = &proto.redacts {
        if rules.redaction.content_field_redacts {
            if let Some(c) = content.as_object_mut() {
                c.insert("redacts".into(), JsonValue::String(redacts.to_string()));
            }
        } else {
            object.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
    }
    let fields = [
        ("auth_events", JsonValue::Array(auth_events)),
        ("content", content),
        ("depth", JsonValue::from(prev_depth + 1)),
        ("origin_server_ts", JsonValue::from(now)),
        ("prev_events", JsonValue::Array(prev.iter().map(|p| JsonValue::String(p.to_string())).collect())),
        ("sender", JsonValue::String(proto.sender.to_string())),
        ("type", JsonValue::String(proto.event_type.clone())),
    ];
    for (key, value) in fields {
        match canonical(value) {
            Ok(v) => object.insert(key.into(), v),
            Err(e) => return bad(e),
        };
    }
    if let Some(room_id) = room_id {
        object.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
    }
    if let Some(state_key) = &proto.state_key {
        object.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
    }
    let event_id = match signer.sign(rules, &mut object) {
        Ok(id) => id,
        Err((code, reason)) => return Ok(Err(invalid(code, reason))),
    };
    match Pdu::parse(event_id, object) {
        Ok(pdu) => Ok(Ok(pdu)),
        Err(e) => bad(e),
    }
}

/// The room row, version rules and current state of an existing room.
struct RoomContext {
    row: RoomRow,
    version: RoomVersionId,
    rules: RoomVersionRules,
    state: StateMap,
    latest: Vec<(OwnedEventId, u64)>,
}

fn room_context<T: RoomTables>(t: &T, room_id: &str) -> Res<Option<RoomContext>> {
    let Some(row) = t.room(room_id)? else { return Ok(None) };
    let version = RoomVersionId::try_from(row.version.as_str()).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let rules = version.rules().ok_or_else(|| StorageError::Corrupt(format!("unknown room version {version}")))?;
    let state = load_state(t, row.snapshot)?;
    let mut latest = Vec::new();
    for nid in &row.latest {
        let event = t.event_by_nid(*nid)?.ok_or_else(|| StorageError::Corrupt("missing latest event".into()))?;
        let id = EventId::parse(&event.event_id).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        latest.push((id, event.depth as u64));
    }
    Ok(Some(RoomContext { row, version, rules, state, latest }))
}

/// A change of one state key: (key, event before, event after; 0 = none).
type StateChange = (StateKeyTuple, i64, i64);

/// Stores an accepted event with the state before it (`state_before_nid`,
/// whose map is `state`); turns `state` into the state after it and returns
/// the event's NID, the snapshot after it, and the change it made.
fn store_event<T: RoomTables>(
    t: &T,
    room_nid: i64,
    pdu: &Pdu,
    state_before_nid: i64,
    state: &mut StateMap,
) -> Res<(i64, i64, Option<StateChange>)> {
    let type_nid = t.assign_event_type_nid(&pdu.event_type.to_string())?;
    let key_nid = match &pdu.state_key {
        Some(k) => t.assign_state_key_nid(k)?,
        None => 0,
    };
    let json = serde_json::to_string(&pdu.object).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let nid = t.insert_event(&EventRow {
        nid: 0,
        room_nid,
        event_id: pdu.event_id.to_string(),
        type_nid,
        state_key_nid: key_nid,
        depth: pdu.depth as i64,
        snapshot: state_before_nid,
        rejected: false,
        json,
        redacted_by: None,
    })?;
    if pdu.state_key.is_none() {
        return Ok((nid, state_before_nid, None));
    }
    let key = (type_nid, key_nid);
    let before = state.insert(key, nid).unwrap_or(0);
    let after_nid = store_state_delta(t, room_nid, state_before_nid, &BTreeMap::from([(key, nid)]))?;
    Ok((nid, after_nid, Some((key, before, nid))))
}

/// Records an event that failed the authorization rules: stored (so it is
/// known and never processed again) but in no state and served to nobody.
fn store_rejected<T: RoomTables>(t: &T, room_nid: i64, pdu: &Pdu, state_before_nid: i64) -> Res<()> {
    let type_nid = t.assign_event_type_nid(&pdu.event_type.to_string())?;
    let json = serde_json::to_string(&pdu.object).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    t.insert_event(&EventRow {
        nid: 0,
        room_nid,
        event_id: pdu.event_id.to_string(),
        type_nid,
        state_key_nid: 0,
        depth: pdu.depth as i64,
        snapshot: state_before_nid,
        rejected: true,
        json,
        redacted_by: None,
    })?;
    Ok(())
}

/// The changes that turn state `before` into `after`.
fn changes(before: &StateMap, after: &StateMap) -> Vec<StateChange> {
    state::delta(before, after)
        .into_iter()
        .map(|(key, nid)| (key, before.get(&key).copied().unwrap_or(0), nid))
        .collect()
}

/// Brings the derived current-state tables (memberships) in line with
/// changes of current state, and names the events that entered and left it.
fn current_state_changed<T: RoomTables>(
    t: &T,
    room_nid: i64,
    changes: &[StateChange],
) -> Res<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
    let member_nid = t.event_type_nid("m.room.member")?.unwrap_or(0);
    let (mut adds, mut removes) = (Vec::new(), Vec::new());
    for (key, old, new) in changes {
        if *old != 0
            && let Some(row) = t.event_by_nid(*old)?
        {
            removes.push(EventId::parse(row.event_id).map_err(|e| StorageError::Corrupt(e.to_string()))?);
        }
        if *new == 0 {
            continue;
        }
        let row = t.event_by_nid(*new)?.ok_or_else(|| StorageError::Corrupt("missing state event".into()))?;
        adds.push(EventId::parse(&row.event_id).map_err(|e| StorageError::Corrupt(e.to_string()))?);
        if key.0 == member_nid {
            let pdu = parse_row(&row)?;
            let content: JsonValue = serde_json::from_str(pdu.content.get()).unwrap_or_default();
            let membership = content.get("membership").and_then(|m| m.as_str()).unwrap_or("leave");
            t.set_membership(room_nid, &t.state_key(key.1)?, membership, *new)?;
        }
    }
    Ok((adds, removes))
}

fn output_for(
    pdu: &Pdu,
    version: &RoomVersionId,
    adds: Vec<OwnedEventId>,
    removes: Vec<OwnedEventId>,
    txn: Option<TxnKey>,
) -> OutputRoomEvent {
    OutputRoomEvent::NewRoomEvent {
        event: pdu.to_client_format(),
        room_version: version.clone(),
        adds_state_event_ids: adds,
        removes_state_event_ids: removes,
        txn,
    }
}

/// Checks that a local redaction may redact its target: same room, and the
/// sender either sent the target or has the power to redact others.
fn check_redaction<T: RoomTables>(
    t: &T,
    view: &StateView<'_, T>,
    room_nid: i64,
    proto: &ProtoEvent,
) -> Res<Option<Verdict>> {
    let Some(target) = &proto.redacts else { return Ok(None) };
    let Some(row) = t.event_by_id(room_nid, target.as_str())? else {
        return Ok(Some(invalid(InvalidCode::NotFound, "the event to redact is not in this room")));
    };
    if row.rejected {
        return Ok(Some(invalid(InvalidCode::NotFound, "the event to redact is not in this room")));
    }
    let target = parse_row(&row)?;
    if target.sender == proto.sender {
        return Ok(None);
    }
    let power = view.get("m.room.power_levels", "")?;
    let levels: JsonValue = power.as_ref().and_then(|p| serde_json::from_str(p.content.get()).ok()).unwrap_or_default();
    let level_of = |user: &UserId| {
        levels["users"][user.as_str()].as_i64().or_else(|| levels["users_default"].as_i64()).unwrap_or(0)
    };
    let redact = levels["redact"].as_i64().unwrap_or(50);
    if level_of(&proto.sender) < redact {
        return Ok(Some(Verdict::Rejected { reason: "you may only redact your own events".into() }));
    }
    Ok(None)
}

/// Processes a [`BuildEvents`] input. Nothing is stored unless every event is accepted.
pub(crate) fn process_build<T: RoomTables>(t: &T, signer: &Signer, build: &BuildEvents, now: u64) -> Res<Processed> {
    let (requested_now, mut now) = (now, now);
    let no_outputs = |verdict| Ok(Processed { verdict, outputs: Vec::new() });
    if let Some(txn) = &build.txn
        && let Some(event_nid) = t.txn_event(txn)?
    {
        // A retried transaction: answer with the event it made.
        let pdu = load_pdu(t, event_nid)?.ok_or_else(|| StorageError::Corrupt("txn event missing".into()))?;
        return no_outputs(Verdict::Accepted { room_id: pdu.room_id_or_own(), event_ids: vec![pdu.event_id] });
    }

    // The room (or the one about to be created) and its current state.
    let (mut ctx, mut room_id): (Option<RoomContext>, Option<OwnedRoomId>) = match &build.target {
        Target::Room { room_id } => match room_context(t, room_id.as_str())? {
            Some(ctx) => (Some(ctx), Some(room_id.clone())),
            None => return no_outputs(invalid(InvalidCode::NotFound, "unknown room")),
        },
        Target::NewRoom { room_version, room_id } => {
            if rules_for(room_version).is_none() {
                return no_outputs(invalid(
                    InvalidCode::UnsupportedRoomVersion,
                    format!("room version {room_version} is not supported"),
                ));
            }
            if build.events.first().map(|e| e.event_type.as_str()) != Some("m.room.create") {
                return no_outputs(invalid(InvalidCode::BadEvent, "a new room starts with m.room.create"));
            }
            (None, room_id.clone())
        }
    };
    let (version, rules) = match (&ctx, &build.target) {
        (Some(c), _) => (c.version.clone(), c.rules.clone()),
        (None, Target::NewRoom { room_version, .. }) => {
            (room_version.clone(), rules_for(room_version).expect("checked above"))
        }
        (None, Target::Room { .. }) => unreachable!("an existing room has a context"),
    };
    if ctx.is_none() && rules.room_id_format == RoomIdFormatVersion::V1 && room_id.is_none() {
        return no_outputs(invalid(InvalidCode::BadEvent, "this room version needs a room ID from the writer"));
    }
    if let (None, Some(id)) = (&ctx, &room_id)
        && t.room(id.as_str())?.is_some()
    {
        return no_outputs(invalid(InvalidCode::BadEvent, "the room already exists"));
    }

    // Phase 1: build and authorize every event against the state before it,
    // in memory. Phase 2 stores them only if all were accepted.
    let mut view =
        StateView::new(t, ctx.as_ref().map(|c| c.row.nid), ctx.as_ref().map(|c| c.state.clone()).unwrap_or_default());
    let mut prev: Vec<OwnedEventId> =
        ctx.as_ref().map(|c| c.latest.iter().map(|(id, _)| id.clone()).collect()).unwrap_or_default();
    prev.truncate(PREV_EVENTS_COUNT_MAX);
    let mut depth = ctx.as_ref().and_then(|c| c.latest.iter().map(|(_, d)| *d).max()).unwrap_or(0);
    let mut built: Vec<Pdu> = Vec::new();
    let mut built_by_id = HashMap::new();
    for (index, proto) in build.events.iter().enumerate() {
        if index > 0 || ctx.is_some() {
            let room_nid = ctx.as_ref().map(|c| c.row.nid).unwrap_or(-1);
            if let Some(verdict) = check_redaction(t, &view, room_nid, proto)? {
                return no_outputs(verdict);
            }
        }
        let is_v12_create = index == 0 && ctx.is_none() && rules.room_id_format == RoomIdFormatVersion::V2;
        let pdu_room = if is_v12_create { None } else { room_id.as_deref() };
        let pdu = loop {
            let pdu = match build_pdu(&view, signer, &rules, pdu_room, proto, Position { prev: &prev, depth, now })? {
                Ok(pdu) => pdu,
                Err(verdict) => return no_outputs(verdict),
            };
            // A v12 room's ID is its create event's reference hash, so one
            // sender creating identical rooms within a millisecond would get
            // one ID twice: a later timestamp gives a fresh one.
            if is_v12_create && t.room(pdu.room_id_or_own().as_str())?.is_some() {
                if now >= requested_now + ROOM_ID_RETRIES_MAX {
                    return no_outputs(invalid(InvalidCode::BadEvent, "the room already exists"));
                }
                now += 1;
                continue;
            }
            break pdu;
        };
        if is_v12_create {
            room_id = Some(pdu.room_id_or_own());
        }
        if let Err(reason) = authorize(&view, &pdu, &rules, &built_by_id)? {
            tracing::debug!(event_id = %pdu.event_id, %reason, "local event rejected");
            // Recorded as rejected when it stands on stored events (the
            // input's only event); it never enters any state.
            if let (Some(ctx), 0) = (&ctx, index) {
                store_rejected(t, ctx.row.nid, &pdu, ctx.row.snapshot)?;
            }
            return no_outputs(Verdict::Rejected { reason });
        }
        let shared = Arc::new(pdu.clone());
        if let Some(key) = &pdu.state_key {
            view.overlay.insert((pdu.event_type.to_string(), key.clone()), shared.clone());
        }
        prev = vec![pdu.event_id.clone()];
        depth = pdu.depth;
        built_by_id.insert(pdu.event_id.clone(), shared);
        built.push(pdu);
    }
    let room_id = room_id.expect("set for an existing room or by the create event");

    // Phase 2: store.
    if ctx.is_none() {
        let nid = t.insert_room(room_id.as_str(), version.as_str())?;
        ctx = Some(RoomContext {
            row: RoomRow { nid, version: version.to_string(), snapshot: 0, latest: vec![] },
            version: version.clone(),
            rules: rules.clone(),
            state: StateMap::new(),
            latest: vec![],
        });
    }
    let ctx = ctx.expect("set above");
    let room_nid = ctx.row.nid;
    let (mut snapshot, mut current) = (ctx.row.snapshot, ctx.state);
    let mut outputs = Vec::new();
    let mut event_ids = Vec::new();
    let (mut first_nid, mut last_nid) = (None, 0);
    for pdu in &built {
        let (nid, after_nid, change) = store_event(t, room_nid, pdu, snapshot, &mut current)?;
        let (adds, removes) = current_state_changed(t, room_nid, change.as_slice())?;
        if let Some(target) = &pdu.redacts
            && pdu.event_type == TimelineEventType::RoomRedaction
            && let Some(row) = t.event_by_id(room_nid, target.as_str())?
        {
            t.set_redacted_by(row.nid, pdu.event_id.as_str())?;
        }
        let txn = if built.len() == 1 { build.txn.clone() } else { None };
        outputs.push((room_id.to_string(), output_for(pdu, &version, adds, removes, txn)));
        event_ids.push(pdu.event_id.clone());
        (snapshot, last_nid) = (after_nid, nid);
        first_nid.get_or_insert(nid);
    }
    t.update_room(room_nid, snapshot, &[last_nid])?;
    if let Some(txn) = &build.txn
        && let Some(first) = first_nid
    {
        t.insert_txn(txn, first)?;
    }
    Ok(Processed { verdict: Verdict::Accepted { room_id, event_ids }, outputs })
}

// ---------------------------------------------------------------- PDUs

/// The state before an event whose prev events are `prevs`: the state after
/// the single prev, or state resolution v2 over the states after each.
fn state_before_prevs<T: RoomTables>(
    t: &T,
    rules: &RoomVersionRules,
    prevs: &[EventRow],
) -> Res<Result<StateMap, String>> {
    let after = |row: &EventRow| -> Res<StateMap> {
        let mut state = load_state(t, row.snapshot)?;
        if row.state_key_nid != 0 && !row.rejected {
            state.insert((row.type_nid, row.state_key_nid), row.nid);
        }
        Ok(state)
    };
    if prevs.len() == 1 {
        return Ok(Ok(after(&prevs[0])?));
    }
    let states = prevs.iter().map(after).collect::<Res<Vec<_>>>()?;
    resolve(t, prevs[0].room_nid, rules, &states)
}

/// State resolution v2 (ruma-state-res) over state maps of NIDs of the room `room_nid`.
pub(crate) fn resolve<T: RoomTables>(
    t: &T,
    room_nid: i64,
    rules: &RoomVersionRules,
    states: &[StateMap],
) -> Res<Result<StateMap, String>> {
    let Some(state_res_rules) = rules.state_res.v2_rules() else {
        return Ok(Err("this room version has no state resolution v2".into()));
    };
    // Translate NID maps to ruma's (type, key) -> event ID maps, and load
    // every event the algorithm may fetch: the states' events and their auth chains.
    let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
    let mut id_to_key: HashMap<OwnedEventId, StateKeyTuple> = HashMap::new();
    let mut id_to_nid: HashMap<OwnedEventId, i64> = HashMap::new();
    let mut ruma_maps = Vec::new();
    let mut auth_chains = Vec::new();
    for state in states {
        let mut map = RumaStateMap::new();
        let mut chain = HashSet::new();
        for (key, nid) in state {
            let Some(pdu) = load_pdu(t, *nid)? else { continue };
            let event_type = StateEventType::from(t.event_type(key.0)?);
            map.insert((event_type, t.state_key(key.1)?), pdu.event_id.clone());
            id_to_key.insert(pdu.event_id.clone(), *key);
            id_to_nid.insert(pdu.event_id.clone(), *nid);
            // The full auth chain of the state.
            let mut stack: Vec<OwnedEventId> = pdu.auth_events.clone();
            events.insert(pdu.event_id.clone(), pdu);
            while let Some(id) = stack.pop() {
                if !chain.insert(id.clone()) {
                    continue;
                }
                if !events.contains_key(&id)
                    && let Some((row, p)) = load_pdu_by_id(t, room_nid, id.as_str())?
                {
                    id_to_nid.insert(id.clone(), row.nid);
                    if row.state_key_nid != 0 {
                        id_to_key.insert(id.clone(), (row.type_nid, row.state_key_nid));
                    }
                    events.insert(id.clone(), p);
                }
                if let Some(p) = events.get(&id) {
                    stack.extend(p.auth_events.iter().cloned());
                }
            }
        }
        ruma_maps.push(map);
        auth_chains.push(chain);
    }
    let auth_chains: Vec<EventIdSet<OwnedEventId>> = auth_chains.into_iter().map(|c| c.into_iter().collect()).collect();
    let resolved = state_res::resolve(
        &rules.authorization,
        state_res_rules,
        &ruma_maps,
        auth_chains,
        |id: &EventId| events.get(id).cloned(),
        |conflicted| Some(conflicted_subgraph(&events, conflicted.values().flatten())),
    );
    let resolved = match resolved {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut out = StateMap::new();
    for id in resolved.values() {
        if let (Some(key), Some(nid)) = (id_to_key.get(id), id_to_nid.get(id)) {
            out.insert(*key, *nid);
        }
    }
    Ok(Ok(out))
}

/// The conflicted state subgraph (state resolution v2.1, room version 12):
/// the events on an auth-chain path from one conflicted event to another,
/// i.e. ancestors of a conflicted event that themselves descend from one.
fn conflicted_subgraph<'a>(
    events: &HashMap<OwnedEventId, Pdu>,
    conflicted: impl Iterator<Item = &'a OwnedEventId>,
) -> EventIdSet<OwnedEventId> {
    let conflicted: HashSet<&OwnedEventId> = conflicted.collect();
    // Ancestors of the conflicted events through auth_events.
    let mut ancestors = HashSet::new();
    let mut stack: Vec<&OwnedEventId> = conflicted.iter().copied().collect();
    while let Some(id) = stack.pop() {
        if let Some(event) = events.get(id) {
            for auth in &event.auth_events {
                if ancestors.insert(auth) {
                    stack.push(auth);
                }
            }
        }
    }
    // Which of those reach a conflicted event through their own auth chain.
    fn reaches<'a>(
        id: &'a OwnedEventId,
        events: &'a HashMap<OwnedEventId, Pdu>,
        conflicted: &HashSet<&OwnedEventId>,
        memo: &mut HashMap<&'a OwnedEventId, bool>,
    ) -> bool {
        if let Some(known) = memo.get(id) {
            return *known;
        }
        memo.insert(id, false);
        let result = events.get(id).is_some_and(|e| {
            e.auth_events.iter().any(|a| conflicted.contains(a) || reaches(a, events, conflicted, memo))
        });
        memo.insert(id, result);
        result
    }
    let mut memo = HashMap::new();
    let mut subgraph: EventIdSet<OwnedEventId> = ancestors
        .into_iter()
        .filter(|id| conflicted.contains(id) || reaches(id, events, &conflicted, &mut memo))
        .cloned()
        .collect();
    subgraph.extend(conflicted.into_iter().cloned());
    subgraph
}

/// Processes a complete PDU: it goes where its `prev_events` say; the
/// room's current state becomes the resolution of its forward extremities.
pub(crate) fn process_pdu<T: RoomTables>(t: &T, input: &PduInput) -> Res<Processed> {
    let no_outputs = |verdict| Ok(Processed { verdict, outputs: Vec::new() });
    let Some(rules) = rules_for(&input.room_version) else {
        return no_outputs(invalid(InvalidCode::UnsupportedRoomVersion, "unsupported room version"));
    };
    let object: CanonicalJsonObject = match serde_json::from_value(input.pdu.clone()) {
        Ok(o) => o,
        Err(e) => return no_outputs(invalid(InvalidCode::BadEvent, format!("not a PDU: {e}"))),
    };
    if let Err(e) = state_res::check_pdu_format(&object, &rules.event_format) {
        return no_outputs(invalid(InvalidCode::BadEvent, e));
    }
    let event_id = match ruma::signatures::reference_hash(&object, &rules).map(|h| EventId::parse(format!("${h}"))) {
        Ok(Ok(id)) => id,
        _ => return no_outputs(invalid(InvalidCode::BadEvent, "cannot compute the event ID")),
    };
    let pdu = match Pdu::parse(event_id.clone(), object) {
        Ok(p) => p,
        Err(e) => return no_outputs(invalid(InvalidCode::BadEvent, e)),
    };
    let room_id = pdu.room_id_or_own();
    let Some(ctx) = room_context(t, room_id.as_str())? else {
        return no_outputs(invalid(
            InvalidCode::NotFound,
            "unknown room (creating rooms from PDUs is not supported yet)",
        ));
    };
    // Already stored: the same answer again. (The event ID hashes the room
    // ID too, so the event can only be in this room.)
    if t.event_by_id(ctx.row.nid, event_id.as_str())?.is_some() {
        return no_outputs(Verdict::Accepted { room_id, event_ids: vec![event_id] });
    }
    let mut prev_rows = Vec::new();
    for prev in &pdu.prev_events {
        match t.event_by_id(ctx.row.nid, prev.as_str())? {
            Some(row) => prev_rows.push(row),
            None => return no_outputs(invalid(InvalidCode::NotFound, format!("missing prev event {prev}"))),
        }
    }
    if prev_rows.is_empty() {
        return no_outputs(invalid(InvalidCode::BadEvent, "a PDU other than m.room.create needs prev_events"));
    }
    let before = match state_before_prevs(t, &rules, &prev_rows)? {
        Ok(state) => state,
        Err(e) => return no_outputs(Verdict::Rejected { reason: e }),
    };
    let before_nid =
        store_state(t, ctx.row.nid, prev_rows[0].snapshot, &load_state(t, prev_rows[0].snapshot)?, &before)?;
    let view = StateView::new(t, Some(ctx.row.nid), before.clone());
    if let Err(reason) = authorize(&view, &pdu, &rules, &HashMap::new())? {
        // Recorded as rejected: it never enters any state.
        store_rejected(t, ctx.row.nid, &pdu, before_nid)?;
        return no_outputs(Verdict::Rejected { reason });
    }
    let mut after = before;
    let (nid, after_nid, _) = store_event(t, ctx.row.nid, &pdu, before_nid, &mut after)?;

    // Forward extremities: the new event replaces the ones it references.
    let prev_nids: HashSet<i64> = prev_rows.iter().map(|r| r.nid).collect();
    let mut latest: Vec<i64> = ctx.row.latest.iter().copied().filter(|n| !prev_nids.contains(n)).collect();
    latest.push(nid);
    let (current_nid, current) = if latest.len() == 1 {
        (after_nid, after)
    } else {
        let mut states = Vec::new();
        for n in &latest {
            let row = t.event_by_nid(*n)?.ok_or_else(|| StorageError::Corrupt("missing extremity".into()))?;
            let mut s = load_state(t, row.snapshot)?;
            if row.state_key_nid != 0 {
                s.insert((row.type_nid, row.state_key_nid), row.nid);
            }
            states.push(s);
        }
        match resolve(t, ctx.row.nid, &rules, &states)? {
            Ok(resolved) => (store_state(t, ctx.row.nid, ctx.row.snapshot, &ctx.state, &resolved)?, resolved),
            Err(e) => return Err(StorageError::Corrupt(format!("resolving extremities: {e}"))),
        }
    };
    let (adds, removes) = current_state_changed(t, ctx.row.nid, &changes(&ctx.state, &current))?;
    t.update_room(ctx.row.nid, current_nid, &latest)?;
    let output = output_for(&pdu, &ctx.version, adds, removes, None);
    Ok(Processed {
        verdict: Verdict::Accepted { room_id: room_id.clone(), event_ids: vec![event_id] },
        outputs: vec![(room_id.to_string(), output)],
    })
}

/// The state map (type, key strings) -> event ID of a NID state map.
pub(crate) fn named_state<T: RoomTables>(t: &T, state: &StateMap) -> Res<BTreeMap<(String, String), i64>> {
    let mut out = BTreeMap::new();
    for ((type_nid, key_nid), nid) in state {
        out.insert((t.event_type(*type_nid)?, t.state_key(*key_nid)?), *nid);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_v12_rooms_created_in_one_millisecond_get_distinct_ids() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        for (_, sql) in crate::storage::sqlite::MIGRATIONS {
            conn.execute_batch(sql).unwrap();
        }
        let tx = conn.transaction().unwrap();
        let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "test".into()).unwrap();
        let signer = Signer { server_name: "test.local".try_into().unwrap(), key };
        let create = ProtoEvent {
            event_type: "m.room.create".into(),
            state_key: Some(String::new()),
            sender: UserId::parse("@alice:test.local").unwrap(),
            content: serde_json::json!({"room_version": "12"}),
            redacts: None,
        };
        let build = BuildEvents {
            target: Target::NewRoom { room_version: RoomVersionId::V12, room_id: None },
            events: vec![create],
            txn: None,
        };
        let now = 1_700_000_000_000;
        let room = |processed: Processed| match processed.verdict {
            Verdict::Accepted { room_id, .. } => room_id,
            other => panic!("expected acceptance, got {other:?}"),
        };
        let first = room(process_build(&tx, &signer, &build, now).unwrap());
        let second = room(process_build(&tx, &signer, &build, now).unwrap());
        let third = room(process_build(&tx, &signer, &build, now).unwrap());
        assert_ne!(first, second);
        assert_ne!(second, third);
        assert_ne!(first, third);
    }
}
