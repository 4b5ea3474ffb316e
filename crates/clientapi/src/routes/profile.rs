//! Profiles: `/profile/{userId}` and its fields (`displayname`,
//! `avatar_url`, and the extended profile fields of v1.16). A change of
//! `displayname` or `avatar_url` goes to the user's member event in every
//! room they are joined to.

use axum::extract::State;
use neurite_core::http::RumaResponse;
use neurite_core::{MatrixError, MatrixResult};
use ruma::UserId;
use ruma::api::client::profile::{
    ProfileFieldValue, delete_profile_field, get_profile, get_profile_field, set_profile_field,
};

use super::rooms::{send_one, state_event};
use crate::{ClientApi, Ruma};

/// The profile fields that member events carry.
const MEMBER_FIELDS: [&str; 2] = ["displayname", "avatar_url"];

/// Sends a new join event, carrying the user's current `displayname` and
/// `avatar_url`, to every room they are joined to. Best effort: the profile
/// is already changed, so a failure in one room is logged and the rest go on.
async fn propagate_profile(api: &ClientApi, user_id: &UserId) {
    let profile = match api.users().profile(user_id).await {
        Ok(profile) => profile.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "reading the profile to propagate failed");
            return;
        }
    };
    let rooms = match api.rooms().joined_rooms(user_id).await {
        Ok(rooms) => rooms,
        Err(e) => {
            tracing::warn!(error = %e, "listing the rooms to propagate a profile to failed");
            return;
        }
    };
    for room_id in rooms {
        let current = match api.rooms().current_state_event(&room_id, "m.room.member", user_id.as_str()).await {
            Ok(Some(event)) if event["content"]["membership"] == "join" => event["content"].clone(),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, %room_id, "reading the member event to update failed");
                continue;
            }
        };
        let mut content = current.clone();
        let Some(fields) = content.as_object_mut() else { continue };
        // The reason belonged to the join itself, not to this update.
        fields.remove("reason");
        for field in MEMBER_FIELDS {
            // An empty avatar URL is a cleared avatar.
            match profile.get(field).filter(|v| !v.is_null() && *v != "") {
                Some(value) => fields.insert(field.to_owned(), value.clone()),
                None => fields.remove(field),
            };
        }
        if content == current {
            continue;
        }
        let event = state_event(user_id, "m.room.member", user_id.as_str(), content);
        if let Err(e) = send_one(api, &room_id, event, None).await {
            tracing::warn!(error = %e, %room_id, "propagating a profile change to a room failed");
        }
    }
}

fn is_member_field(field: &str) -> bool {
    MEMBER_FIELDS.contains(&field)
}

fn not_found() -> MatrixError {
    MatrixError::not_found("Profile not found")
}

/// # `GET /_matrix/client/v3/profile/{userId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3profileuserid)
pub(crate) async fn get_all(
    State(api): State<ClientApi>,
    req: Ruma<get_profile::v3::Request>,
) -> MatrixResult<RumaResponse<get_profile::v3::Response>> {
    let profile = api.users().profile(&req.body.user_id).await?.ok_or_else(not_found)?;
    Ok(RumaResponse(get_profile::v3::Response::from_iter(profile)))
}

/// # `GET /_matrix/client/v3/profile/{userId}/{keyName}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3profileuseridkeyname)
pub(crate) async fn get_field(
    State(api): State<ClientApi>,
    req: Ruma<get_profile_field::v3::Request>,
) -> MatrixResult<RumaResponse<get_profile_field::v3::Response>> {
    let profile = api.users().profile(&req.body.user_id).await?.ok_or_else(not_found)?;
    let field = req.body.field.as_str();
    let value = profile.get(field).cloned().ok_or_else(|| MatrixError::not_found("Profile field not set"))?;
    let value = ProfileFieldValue::new(field, value).map_err(MatrixError::internal)?;
    Ok(RumaResponse(get_profile_field::v3::Response::new(value)))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/{keyName}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3profileuseridkeyname)
pub(crate) async fn set_field(
    State(api): State<ClientApi>,
    req: Ruma<set_profile_field::v3::Request>,
) -> MatrixResult<RumaResponse<set_profile_field::v3::Response>> {
    req.require_owner(&req.body.user_id, "profile")?;
    let value = &req.body.value;
    // An empty avatar URL clears the avatar; anything else must be an MXC URI.
    if let ProfileFieldValue::AvatarUrl(uri) = value
        && !uri.as_str().is_empty()
        && uri.validate().is_err()
    {
        return Err(MatrixError::invalid_param("avatar_url must be an mxc:// URI"));
    }
    let field = value.field_name();
    api.users().set_profile_field(&req.body.user_id, field.as_str(), Some(value.value().into_owned())).await?;
    if is_member_field(field.as_str()) {
        propagate_profile(&api, &req.body.user_id).await;
    }
    Ok(RumaResponse(set_profile_field::v3::Response::new()))
}

/// # `DELETE /_matrix/client/v3/profile/{userId}/{keyName}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3profileuseridkeyname)
pub(crate) async fn delete_field(
    State(api): State<ClientApi>,
    req: Ruma<delete_profile_field::v3::Request>,
) -> MatrixResult<RumaResponse<delete_profile_field::v3::Response>> {
    req.require_owner(&req.body.user_id, "profile")?;
    api.users().set_profile_field(&req.body.user_id, req.body.field.as_str(), None).await?;
    if is_member_field(req.body.field.as_str()) {
        propagate_profile(&api, &req.body.user_id).await;
    }
    Ok(RumaResponse(delete_profile_field::v3::Response::new()))
}
