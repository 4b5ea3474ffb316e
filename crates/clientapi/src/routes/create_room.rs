//! `POST /createRoom`.

use axum::extract::State;
use neurite_core::http::RumaResponse;
use neurite_core::{ErrorKind, MatrixError, MatrixResult};
use neurite_roomserver::{BuildEvents, DEFAULT_ROOM_VERSION, Input, ProtoEvent, SUPPORTED_ROOM_VERSIONS, Target};
use ruma::api::client::room::Visibility;
use ruma::api::client::room::create_room;
use ruma::api::client::room::create_room::v3::RoomPreset;
use ruma::room_version_rules::RoomIdFormatVersion;
use ruma::{OwnedRoomAliasId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde_json::{Map, Value as JsonValue, json};

use super::rooms::{accepted, fault, send_one, state_event};
use crate::{ClientApi, Ruma};

/// Length of the random part of room IDs (versions before 12).
const ROOM_ID_LOCALPART_CHARS: usize = 18;

/// The default power levels of a new room (Synapse's, which clients expect).
fn power_levels(creator: &UserId, v12: bool, preset: &RoomPreset, invitees: &[OwnedUserId]) -> JsonValue {
    let mut users = Map::new();
    // From room version 12 creators have unlimited power and are not listed.
    if !v12 {
        users.insert(creator.to_string(), json!(100));
    }
    if *preset == RoomPreset::TrustedPrivateChat {
        for invitee in invitees {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if *preset == RoomPreset::PublicChat { 50 } else { 0 },
        "notifications": {"room": 50},
    })
}

/// The alias `room_alias_name` asks for: `#<name>:<our server>`, 400
/// `M_INVALID_PARAM` if that is not a valid alias, 400 `M_ROOM_IN_USE` if it is taken.
async fn requested_alias(api: &ClientApi, name: &str) -> MatrixResult<OwnedRoomAliasId> {
    // A colon would make part of the name read as the server name.
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err(MatrixError::invalid_param("room_alias_name may not be empty or hold ':' or whitespace"));
    }
    let alias = RoomAliasId::parse(format!("#{name}:{}", api.config().server_name))
        .map_err(|e| MatrixError::invalid_param(format!("room_alias_name does not make a valid alias: {e}")))?;
    if api.directory().resolve_alias(&alias).await.map_err(fault)?.is_some() {
        return Err(MatrixError::new(ErrorKind::RoomInUse, format!("Room alias {alias} already exists")));
    }
    Ok(alias)
}

/// # `POST /_matrix/client/v3/createRoom`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3createroom)
///
/// The events go to the room server as one input, in the spec's order:
/// create, the creator's join, power levels, the canonical alias of
/// `room_alias_name`, the preset's join rules, history visibility and guest
/// access, `initial_state`, name, topic, invites. Then the alias is mapped
/// and, for `visibility: public`, the room is published.
pub(crate) async fn create_room(
    State(api): State<ClientApi>,
    req: Ruma<create_room::v3::Request>,
) -> MatrixResult<RumaResponse<create_room::v3::Response>> {
    let session = req.session().clone();
    let body = req.body;
    let creator = session.user_id.clone();
    let version = body.room_version.clone().unwrap_or(DEFAULT_ROOM_VERSION);
    if !SUPPORTED_ROOM_VERSIONS.contains(&version) {
        return Err(MatrixError::new(
            ErrorKind::UnsupportedRoomVersion,
            format!("room version {version} is not supported"),
        ));
    }
    let rules = version.rules().expect("supported versions have rules");
    let v12 = rules.room_id_format == RoomIdFormatVersion::V2;
    let alias = match &body.room_alias_name {
        Some(name) => Some(requested_alias(&api, name).await?),
        None => None,
    };
    for invitee in &body.invite {
        if api.users().profile(invitee).await?.is_none() {
            return Err(MatrixError::not_found(format!(
                "unknown user {invitee} (only local users can be invited yet)"
            )));
        }
    }
    let preset = body.preset.clone().unwrap_or(match body.visibility {
        Visibility::Public => RoomPreset::PublicChat,
        _ => RoomPreset::PrivateChat,
    });

    let mut events = Vec::new();
    let mut create_content = match &body.creation_content {
        Some(raw) => match serde_json::from_str::<JsonValue>(raw.json().get()) {
            Ok(JsonValue::Object(map)) => map,
            _ => return Err(MatrixError::bad_json("creation_content must be an object")),
        },
        None => Map::new(),
    };
    create_content.insert("room_version".into(), json!(version));
    if rules.authorization.use_room_create_sender {
        create_content.remove("creator");
    } else {
        create_content.insert("creator".into(), json!(creator));
    }
    events.push(state_event(&creator, "m.room.create", "", JsonValue::Object(create_content)));

    let profile = api.users().profile(&creator).await?.unwrap_or_default();
    let mut member = json!({"membership": "join"});
    for field in ["displayname", "avatar_url"] {
        if let Some(value) = profile.get(field) {
            member[field] = value.clone();
        }
    }
    events.push(state_event(&creator, "m.room.member", creator.as_str(), member));

    let mut levels = power_levels(&creator, v12, &preset, &body.invite);
    if let Some(raw) = &body.power_level_content_override {
        match serde_json::from_str::<JsonValue>(raw.json().get()) {
            Ok(JsonValue::Object(overrides)) => {
                for (key, value) in overrides {
                    levels[key] = value;
                }
            }
            _ => return Err(MatrixError::bad_json("power_level_content_override must be an object")),
        }
    }
    events.push(state_event(&creator, "m.room.power_levels", "", levels));
    let mut initial = Vec::new();
    for raw in &body.initial_state {
        let event: JsonValue =
            serde_json::from_str(raw.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))?;
        let event_type = event["type"].as_str().unwrap_or_default().to_owned();
        if matches!(event_type.as_str(), "m.room.create" | "m.room.member") {
            return Err(MatrixError::new(
                ErrorKind::InvalidRoomState,
                format!("initial_state may not hold {event_type}"),
            ));
        }
        let state_key = event["state_key"].as_str().unwrap_or_default().to_owned();
        initial.push(state_event(&creator, &event_type, &state_key, event["content"].clone()));
    }
    // initial_state takes precedence over the preset's and the alias's events.
    let overridden =
        |e: &ProtoEvent| initial.iter().any(|i| i.event_type == e.event_type && i.state_key == e.state_key);
    if let Some(alias) = &alias {
        let canonical = state_event(&creator, "m.room.canonical_alias", "", json!({"alias": alias}));
        if !overridden(&canonical) {
            events.push(canonical);
        }
    }

    let (join_rule, guest_access) = match preset {
        RoomPreset::PublicChat => ("public", "forbidden"),
        _ => ("invite", "can_join"),
    };
    let mut preset_events = vec![
        state_event(&creator, "m.room.join_rules", "", json!({"join_rule": join_rule})),
        state_event(&creator, "m.room.history_visibility", "", json!({"history_visibility": "shared"})),
        state_event(&creator, "m.room.guest_access", "", json!({"guest_access": guest_access})),
    ];
    preset_events.retain(|e| !overridden(e));
    events.extend(preset_events);
    events.extend(initial);
    if let Some(name) = &body.name {
        events.push(state_event(&creator, "m.room.name", "", json!({"name": name})));
    }
    if let Some(topic) = &body.topic {
        let content = json!({"topic": topic, "m.topic": {"m.text": [{"mimetype": "text/plain", "body": topic}]}});
        events.push(state_event(&creator, "m.room.topic", "", content));
    }
    for invitee in &body.invite {
        let mut content = json!({"membership": "invite"});
        if body.is_direct {
            content["is_direct"] = json!(true);
        }
        events.push(state_event(&creator, "m.room.member", invitee.as_str(), content));
    }

    let room_id = if v12 {
        None
    } else {
        let localpart: String = rand::Rng::sample_iter(rand::thread_rng(), &rand::distributions::Alphanumeric)
            .take(ROOM_ID_LOCALPART_CHARS)
            .map(char::from)
            .collect();
        Some(RoomId::parse(format!("!{localpart}:{}", api.config().server_name)).map_err(MatrixError::internal)?)
    };
    let build = BuildEvents { target: Target::NewRoom { room_version: version, room_id }, events, txn: None };
    let verdict = api.room_input().submit(Input::Build(build)).await.map_err(fault)?;
    let (room_id, _) = accepted(verdict).map_err(|e| match e.kind {
        // A rejected createRoom means the client's overrides made invalid state.
        ErrorKind::Forbidden => MatrixError::new(ErrorKind::InvalidRoomState, e.message),
        _ => e,
    })?;
    tracing::info!(%room_id, "room created");
    if let Some(alias) = &alias {
        // The alias was free before the room was built; only a concurrent
        // request for the same alias can have taken it since. The room exists
        // and the creator is in it, so it is answered, without the alias; its
        // canonical alias event, which now names another room's alias, is cleared.
        if !api.directory().set_alias(alias, &room_id, &creator).await.map_err(fault)? {
            tracing::warn!(%room_id, %alias, "the room's alias was taken while the room was created");
            let cleared = state_event(&creator, "m.room.canonical_alias", "", json!({}));
            if let Err(e) = send_one(&api, &room_id, cleared, None).await {
                tracing::warn!(error = %e, %room_id, "clearing the canonical alias failed");
            }
        }
    }
    if body.visibility == Visibility::Public {
        api.directory().set_published(&room_id, true).await.map_err(fault)?;
    }
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}
