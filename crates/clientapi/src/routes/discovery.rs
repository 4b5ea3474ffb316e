//! Discovery: `/versions`, `/.well-known/matrix/client`, `/capabilities`.

use axum::Json;
use axum::extract::State;
use neurite_core::MatrixResult;
use neurite_core::http::RumaResponse;
use neurite_roomserver::{DEFAULT_ROOM_VERSION, SUPPORTED_ROOM_VERSIONS};
use ruma::api::client::discovery::{discover_homeserver, get_capabilities, get_supported_versions};
use serde_json::{Value, json};

use crate::{ClientApi, Ruma};

/// The spec versions whose endpoints Neurite serves follow that version.
/// Clients detect features by looking for an exact version string, so the
/// list is cumulative; endpoints not yet served answer 404 `M_UNRECOGNIZED`.
pub const SPEC_VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13",
    "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
];

/// # `GET /_matrix/client/versions`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientversions)
pub(crate) async fn versions(
    _: Ruma<get_supported_versions::Request>,
) -> RumaResponse<get_supported_versions::Response> {
    let versions = SPEC_VERSIONS.iter().map(|v| (*v).to_owned()).collect();
    RumaResponse(get_supported_versions::Response::new(versions))
}

/// # `GET /.well-known/matrix/client`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#getwell-knownmatrixclient)
pub(crate) async fn well_known(State(api): State<ClientApi>, _: Ruma<discover_homeserver::Request>) -> Json<Value> {
    Json(json!({"m.homeserver": {"base_url": api.config().client_base_url()}}))
}

/// # `GET /_matrix/client/v3/capabilities`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3capabilities)
///
/// Every capability is listed explicitly, defaults included, so clients need
/// not know the defaults.
pub(crate) async fn capabilities(_: Ruma<get_capabilities::v3::Request>) -> MatrixResult<Json<Value>> {
    let available: serde_json::Map<String, Value> =
        SUPPORTED_ROOM_VERSIONS.iter().map(|v| (v.to_string(), json!("stable"))).collect();
    Ok(Json(json!({
        "capabilities": {
            "m.room_versions": {"default": DEFAULT_ROOM_VERSION.as_str(), "available": available},
            "m.change_password": {"enabled": true},
            "m.set_displayname": {"enabled": true},
            "m.set_avatar_url": {"enabled": true},
            "m.profile_fields": {"enabled": true},
            "m.3pid_changes": {"enabled": false},
            "m.get_login_token": {"enabled": false},
        }
    })))
}
