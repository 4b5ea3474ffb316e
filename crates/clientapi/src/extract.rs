//! The [`Ruma`] extractor: one place that reads the body within the size
//! limit, applies rate limits, authenticates the access token as the
//! endpoint's metadata requires, and parses the ruma request type.

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRef, FromRequest, FromRequestParts, RawPathParams, Request};
use neurite_core::http::{parse_request, read_body};
use neurite_core::{ErrorKind, MatrixError, MatrixResult};
use neurite_userapi::Session;
use ruma::api::IncomingRequest;
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken, NoAuthentication,
};

use crate::ClientApi;

/// Whether an endpoint needs an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRule {
    /// 401 `M_MISSING_TOKEN` without one.
    Required,
    /// Used if given (and then it must be valid).
    Optional,
    /// Ignored.
    Ignored,
}

/// Maps ruma's authentication schemes to what the client API enforces.
pub trait AuthRequirement {
    /// The rule for this scheme.
    const RULE: TokenRule;
}

impl AuthRequirement for AccessToken {
    const RULE: TokenRule = TokenRule::Required;
}
impl AuthRequirement for AccessTokenOptional {
    const RULE: TokenRule = TokenRule::Optional;
}
impl AuthRequirement for NoAccessToken {
    const RULE: TokenRule = TokenRule::Ignored;
}
impl AuthRequirement for NoAuthentication {
    const RULE: TokenRule = TokenRule::Ignored;
}
impl AuthRequirement for AppserviceToken {
    const RULE: TokenRule = TokenRule::Required;
}
// Application services are not supported yet: their optional token on
// /register and /login is ignored, as for any other client.
impl AuthRequirement for AppserviceTokenOptional {
    const RULE: TokenRule = TokenRule::Ignored;
}

/// A parsed ruma request with the session of its access token.
pub struct Ruma<T> {
    /// The request.
    pub body: T,
    /// The session, when the endpoint took a token and one was given.
    pub session: Option<Session>,
}

impl<T> Ruma<T> {
    /// The session of an endpoint whose token is required.
    ///
    /// # Panics
    /// If called for an endpoint whose token is not required (a programming error).
    pub fn session(&self) -> &Session {
        self.session.as_ref().expect("the extractor requires a token for this endpoint")
    }
}

/// The access token of a request: `Authorization: Bearer` or `?access_token=`.
fn access_token(parts: &http::request::Parts) -> MatrixResult<Option<String>> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        return match value {
            Some(token) if !token.is_empty() => Ok(Some(token.to_owned())),
            _ => Err(MatrixError::new(
                ErrorKind::UnknownToken { soft_logout: false },
                "Authorization header is not 'Bearer <token>'",
            )),
        };
    }
    let query = parts.uri.query().unwrap_or("");
    Ok(form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned()))
}

impl<T, S> FromRequest<S> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: AuthRequirement,
    ClientApi: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let api = ClientApi::from_ref(state);
        let (mut parts, body) = request.into_parts();
        let path = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| MatrixError::invalid_param(format!("bad path parameter: {e}")))?;
        let token = access_token(&parts)?;

        if T::RATE_LIMITED
            && let Some(limiter) = api.limiter()
        {
            let key = match &token {
                Some(token) => format!("t:{token}"),
                None => match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
                    Some(ConnectInfo(addr)) => format!("a:{}", addr.ip()),
                    None => "a:unknown".to_owned(),
                },
            };
            limiter.check(&key)?;
        }

        let session = match (<T::Authentication as AuthRequirement>::RULE, token) {
            (TokenRule::Required, None) => {
                return Err(MatrixError::new(ErrorKind::MissingToken, "Missing access token"));
            }
            (TokenRule::Required | TokenRule::Optional, Some(token)) => Some(api.users().authenticate(&token).await?),
            _ => None,
        };
        if let Some(session) = &session {
            tracing::Span::current()
                .record("user_id", tracing::field::display(&session.user_id))
                .record("device_id", tracing::field::display(&session.device_id));
        }

        let body = read_body(body, api.config().max_request_bytes).await?;
        let args: Vec<&str> = path.iter().map(|(_, value)| value).collect();
        let body = parse_request::<T>(&parts.method, &parts.uri, &parts.headers, &body, &args)?;
        Ok(Self { body, session })
    }
}
