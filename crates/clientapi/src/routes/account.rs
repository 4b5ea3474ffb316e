//! Accounts: `/register` and its helpers, `/account/whoami`,
//! `/account/password`, `/account/deactivate`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use neurite_core::config::Registration;
use neurite_core::http::RumaResponse;
use neurite_core::{ErrorKind, MatrixError, MatrixResult};
use neurite_userapi::UiaRequest;
use ruma::api::client::account::register::RegistrationKind;
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, change_password, check_registration_token_validity, deactivate,
    get_username_availability, register, whoami,
};
use ruma::api::client::uiaa::AuthType;
use serde_json::json;

use super::confirm_password;
use crate::{ClientApi, Ruma};

fn registration_disabled() -> MatrixError {
    MatrixError::forbidden("Registration is disabled on this server")
}

/// # `POST /_matrix/client/v3/register`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3register)
///
/// The user name and password are checked before user-interactive
/// authentication starts, so a client learns early that they will not do.
pub(crate) async fn register(State(api): State<ClientApi>, req: Ruma<register::v3::Request>) -> MatrixResult<Response> {
    let (body, client_ip) = (req.body, req.client_ip);
    if body.kind == RegistrationKind::Guest {
        return Err(MatrixError::new(ErrorKind::GuestAccessForbidden, "Guest access is disabled"));
    }
    let stage = match api.config().registration {
        Registration::Closed => return Err(registration_disabled()),
        Registration::Open => AuthType::Dummy,
        Registration::Token => AuthType::RegistrationToken,
    };
    let users = api.users();
    let localpart = body.username.map(|u| u.to_lowercase());
    if let Some(localpart) = &localpart {
        users.check_username(localpart).await?;
    }
    let password = body.password.ok_or_else(|| MatrixError::missing_param("password is required"))?;
    users.check_password_policy(&password)?;

    let outcome = users
        .user_interactive_auth(UiaRequest {
            purpose: "register".into(),
            flows: vec![vec![stage]],
            auth: body.auth.as_ref(),
            user_id: None,
        })
        .await?;

    let localpart = match localpart {
        Some(localpart) => localpart,
        None => users.generate_localpart().await?,
    };
    let user_id = users.create_account(&localpart, &password, false, outcome.registration_token.as_deref()).await?;
    if body.inhibit_login {
        // ruma would serialize `"device_id": null`; the spec's answer has no device at all.
        return Ok(Json(json!({"user_id": user_id})).into_response());
    }
    let tokens = users
        .open_session(&user_id, body.device_id, body.initial_device_display_name, body.refresh_token, client_ip)
        .await?;
    let mut response = register::v3::Response::new(tokens.user_id);
    response.access_token = Some(tokens.access_token);
    response.device_id = Some(tokens.device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in_ms.map(Duration::from_millis);
    Ok(RumaResponse(response).into_response())
}

/// # `GET /_matrix/client/v3/register/available`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3registeravailable)
///
/// Refused while registration is closed, so it cannot list the server's users.
pub(crate) async fn username_available(
    State(api): State<ClientApi>,
    req: Ruma<get_username_availability::v3::Request>,
) -> MatrixResult<RumaResponse<get_username_availability::v3::Response>> {
    if api.config().registration == Registration::Closed {
        return Err(registration_disabled());
    }
    api.users().check_username(&req.body.username.to_lowercase()).await?;
    Ok(RumaResponse(get_username_availability::v3::Response::new(true)))
}

/// # `GET /_matrix/client/v1/register/m.login.registration_token/validity`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1registermloginregistration_tokenvalidity)
pub(crate) async fn registration_token_validity(
    State(api): State<ClientApi>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> MatrixResult<RumaResponse<check_registration_token_validity::v1::Response>> {
    if api.config().registration != Registration::Token {
        return Err(registration_disabled());
    }
    let valid = api.users().registration_token_valid(&req.body.token).await?;
    Ok(RumaResponse(check_registration_token_validity::v1::Response::new(valid)))
}

/// # `GET /_matrix/client/v3/account/whoami`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3accountwhoami)
pub(crate) async fn whoami(req: Ruma<whoami::v3::Request>) -> RumaResponse<whoami::v3::Response> {
    let session = req.session();
    let mut response = whoami::v3::Response::new(session.user_id.clone(), false);
    response.device_id = Some(session.device_id.clone());
    RumaResponse(response)
}

fn require_token<T>(req: &Ruma<T>) -> MatrixResult<&neurite_userapi::Session> {
    req.session.as_ref().ok_or_else(|| MatrixError::new(ErrorKind::MissingToken, "Missing access token"))
}

/// # `POST /_matrix/client/v3/account/password`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountpassword)
///
/// Needs an access token (password reset by e-mail is not offered) and the
/// current password through user-interactive authentication.
pub(crate) async fn change_password(
    State(api): State<ClientApi>,
    req: Ruma<change_password::v3::Request>,
) -> MatrixResult<RumaResponse<change_password::v3::Response>> {
    let session = require_token(&req)?;
    api.users().check_password_policy(&req.body.new_password)?;
    confirm_password(&api, session, "password", req.body.auth.as_ref()).await?;
    let keep_device = req.body.logout_devices.then_some(&*session.device_id);
    api.users().set_password(&session.user_id, &req.body.new_password, keep_device).await?;
    Ok(RumaResponse(change_password::v3::Response::new()))
}

/// # `POST /_matrix/client/v3/account/deactivate`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountdeactivate)
pub(crate) async fn deactivate(
    State(api): State<ClientApi>,
    req: Ruma<deactivate::v3::Request>,
) -> MatrixResult<RumaResponse<deactivate::v3::Response>> {
    let session = require_token(&req)?;
    confirm_password(&api, session, "deactivate", req.body.auth.as_ref()).await?;
    api.users().deactivate(&session.user_id).await?;
    Ok(RumaResponse(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport)))
}
