//! Sessions: `/login`, `/refresh`, `/logout`, `/logout/all`.

use axum::extract::State;
use neurite_core::http::RumaResponse;
use neurite_core::{ErrorKind, MatrixError, MatrixResult};
use ruma::api::client::session::get_login_types::v3::{LoginType, PasswordLoginType};
use ruma::api::client::session::login::v3::{DiscoveryInfo, HomeserverInfo, LoginInfo};
use ruma::api::client::session::{get_login_types, login, logout, logout_all, refresh_token};
use ruma::api::client::uiaa::UserIdentifier;
use std::time::Duration;

use crate::{ClientApi, Ruma};

/// # `GET /_matrix/client/v3/login`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3login)
pub(crate) async fn login_types(_: Ruma<get_login_types::v3::Request>) -> RumaResponse<get_login_types::v3::Response> {
    RumaResponse(get_login_types::v3::Response::new(vec![LoginType::Password(PasswordLoginType::new())]))
}

/// # `POST /_matrix/client/v3/login`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3login)
pub(crate) async fn login(
    State(api): State<ClientApi>,
    req: Ruma<login::v3::Request>,
) -> MatrixResult<RumaResponse<login::v3::Response>> {
    let client_ip = req.client_ip;
    let login::v3::Request { login_info, device_id, initial_device_display_name, refresh_token, .. } = req.body;
    let LoginInfo::Password(password) = login_info else {
        return Err(MatrixError::new(ErrorKind::BadRequest, "unsupported login type"));
    };
    #[allow(deprecated)] // `user` is the legacy field clients still send.
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (Some(_), _) => return Err(MatrixError::forbidden("no account is bound to this third-party identifier")),
        (None, Some(user)) => user.clone(),
        (None, None) => return Err(MatrixError::missing_param("identifier is required")),
    };
    let user_id =
        api.users().resolve_user(&user).ok_or_else(|| MatrixError::forbidden("Invalid username or password"))?;
    api.users().check_password(&user_id, &password.password).await?;
    let tokens =
        api.users().open_session(&user_id, device_id, initial_device_display_name, refresh_token, client_ip).await?;
    tracing::info!(user_id = %tokens.user_id, device_id = %tokens.device_id, "logged in");

    let mut response = login::v3::Response::new(tokens.user_id, tokens.access_token, tokens.device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in_ms.map(Duration::from_millis);
    response.well_known = Some(DiscoveryInfo::new(HomeserverInfo::new(api.config().client_base_url())));
    Ok(RumaResponse(response))
}

/// # `POST /_matrix/client/v3/refresh`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3refresh)
pub(crate) async fn refresh(
    State(api): State<ClientApi>,
    req: Ruma<refresh_token::v3::Request>,
) -> MatrixResult<RumaResponse<refresh_token::v3::Response>> {
    let tokens = api.users().refresh(&req.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(tokens.access_token);
    response.refresh_token = tokens.refresh_token;
    response.expires_in_ms = tokens.expires_in_ms.map(Duration::from_millis);
    Ok(RumaResponse(response))
}

/// # `POST /_matrix/client/v3/logout`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3logout)
pub(crate) async fn logout(
    State(api): State<ClientApi>,
    req: Ruma<logout::v3::Request>,
) -> MatrixResult<RumaResponse<logout::v3::Response>> {
    api.users().logout(req.session()).await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

/// # `POST /_matrix/client/v3/logout/all`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3logoutall)
pub(crate) async fn logout_all(
    State(api): State<ClientApi>,
    req: Ruma<logout_all::v3::Request>,
) -> MatrixResult<RumaResponse<logout_all::v3::Response>> {
    api.users().logout_all(&req.session().user_id).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}
