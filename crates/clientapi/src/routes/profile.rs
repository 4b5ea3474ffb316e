//! Profiles: `/profile/{userId}` and its fields (`displayname`,
//! `avatar_url`, and the extended profile fields of v1.16).

use axum::extract::State;
use neurite_core::http::RumaResponse;
use neurite_core::{MatrixError, MatrixResult};
use ruma::api::client::profile::{
    ProfileFieldValue, delete_profile_field, get_profile, get_profile_field, set_profile_field,
};

use crate::{ClientApi, Ruma};

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
    Ok(RumaResponse(delete_profile_field::v3::Response::new()))
}
